"""Turning relevance into pictures: image maps now; overlays and grids build on them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def normalize_per_map(maps: Tensor) -> Tensor:
    """Min-max each map of ``[B, ...]`` to [0, 1]; a constant map becomes all zeros, never NaN.

    "Constant" allows for rounding: up-sampling a constant map leaves ulp-level ripples, whose min-max would
    be noise spread over [0, 1].
    """
    flat = maps.reshape(maps.shape[0], -1).float()
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    span = high - low
    rounding = 16 * torch.finfo(flat.dtype).eps * torch.maximum(low.abs(), high.abs())
    constant = span <= rounding
    scaled = torch.where(constant, torch.zeros_like(flat), (flat - low) / torch.where(constant, 1.0, span))
    return scaled.reshape(maps.shape)


def to_image_map(relevance: Tensor, image_size: int | tuple[int, int] = 224) -> Tensor:
    """Image maps ``[B, H, W]`` in [0, 1] from token relevance ``[B, N]`` (or pixel relevance ``[B, H, W]``).

    Tokens are laid out on their patch grid (square, or with the image's aspect ratio), up-sampled
    bilinearly (``align_corners=False``, as the original's ``F.interpolate(scale_factor=patch)``), then
    min-max normalised per image (DESIGN §4).
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if relevance.dim() == 3:
        if tuple(relevance.shape[1:]) != (height, width):
            raise ValueError(f"pixel relevance must be [B, {height}, {width}], got {tuple(relevance.shape)}")
        return normalize_per_map(relevance)
    if relevance.dim() != 2:
        raise ValueError(f"relevance must be [B, N] (tokens) or [B, H, W] (pixels), got {tuple(relevance.shape)}")
    tokens = relevance.shape[1]
    rows = math.isqrt(tokens * height // width)
    cols = tokens // max(rows, 1)
    if rows * cols != tokens or rows * width != cols * height:
        raise ValueError(f"{tokens} tokens do not form a patch grid with the aspect ratio of a {height}x{width} image")
    grid = relevance.reshape(-1, 1, rows, cols).float()
    return normalize_per_map(F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[:, 0])
