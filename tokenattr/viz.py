"""Turning relevance into pictures: image maps, overlays and method grids.

Matplotlib is imported inside the plotting functions, so that importing ``tokenattr`` stays cheap.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import atomic_path


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


def _as_hwc(image01) -> np.ndarray:
    """An RGB image ``[3, H, W]`` or ``[H, W, 3]`` (tensor or array, values in [0, 1]) as float ``[H, W, 3]``."""
    array = image01.detach().cpu().numpy() if isinstance(image01, Tensor) else np.asarray(image01)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image must be RGB [3, H, W] or [H, W, 3], got shape {tuple(array.shape)}")
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def overlay(image01, heatmap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped heatmap over an image: ``(1 - alpha) * image + alpha * cmap(heatmap)``.

    Args:
        image01: RGB image ``[3, H, W]`` or ``[H, W, 3]`` with values in [0, 1] (tensor or array).
        heatmap: ``[H, W]`` in [0, 1], e.g. one map of :func:`to_image_map`; values outside are clipped.
        alpha: weight of the heatmap colour, in [0, 1].
        cmap: a Matplotlib colormap name.

    Returns a float array ``[H, W, 3]`` in [0, 1].
    """
    import matplotlib

    image = _as_hwc(image01)
    heat = heatmap.detach().cpu().numpy() if isinstance(heatmap, Tensor) else np.asarray(heatmap)
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heatmap must be [H, W] = {list(image.shape[:2])} like the image, got {list(heat.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = matplotlib.colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3]
    return (1.0 - alpha) * image + alpha * colours


def plot_method_grid(
    images,
    maps_by_method: dict[str, Tensor],
    row_titles: list[str],
    masks=None,
    *,
    path: str | os.PathLike,
    alpha: float = 0.5,
    cmap: str = "jet",
    panel_inches: float = 1.7,
    dpi: int = 100,
) -> Path:
    """Save a PNG grid: one row per image, the image first, then its map by each method overlaid on it.

    Args:
        images: ``[B, 3, H, W]`` RGB in [0, 1] (tensor or array).
        maps_by_method: method name -> maps ``[B, H, W]`` in [0, 1] (see :func:`to_image_map`); the names are
            the column titles, in the dict's order.
        row_titles: ``B`` labels, written left of each row.
        masks: optional ``[B, H, W]`` object masks, outlined in white on every panel.
        path: the PNG written. It is written to a temporary file first and moved into place, so an
            interrupted run never leaves a partial image.
        alpha, cmap: the overlay (see :func:`overlay`).
        panel_inches, dpi: each panel is ``panel_inches`` square; the column titles add 0.3 inch on top.

    Returns the path written.
    """
    from matplotlib.figure import Figure

    batch = len(images)
    if len(row_titles) != batch:
        raise ValueError(f"row_titles has {len(row_titles)} entries for {batch} images")
    for name, maps in maps_by_method.items():
        if len(maps) != batch:
            raise ValueError(f"maps_by_method[{name!r}] has {len(maps)} maps for {batch} images")
    if masks is not None and len(masks) != batch:
        raise ValueError(f"masks has {len(masks)} entries for {batch} images")

    columns = ["image", *maps_by_method]
    figure = Figure(figsize=(panel_inches * len(columns), panel_inches * batch + 0.3), layout="constrained")
    axes = np.asarray(figure.subplots(batch, len(columns), squeeze=False))
    for row in range(batch):
        image = _as_hwc(images[row])
        mask = None
        if masks is not None:
            mask = masks[row].detach().cpu().numpy() if isinstance(masks[row], Tensor) else np.asarray(masks[row])
        panels = [image, *(overlay(image, maps[row], alpha, cmap) for maps in maps_by_method.values())]
        for col, panel in enumerate(panels):
            axis = axes[row, col]
            axis.imshow(panel, interpolation="nearest")
            if mask is not None and mask.any():
                axis.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[col], fontsize=9)
        axes[row, 0].set_ylabel(row_titles[row], fontsize=8)

    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return path
