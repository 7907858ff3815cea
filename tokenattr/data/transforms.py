"""The original's image preprocessing in PIL and torch, without torchvision.

The ViT tests (spec §5.1, §5.2, §6) resize to 224×224 with no crop and no aspect preservation,
convert to [0, 1], and normalise with mean = std = 0.5 just before the model. Segmentation labels are
resized with nearest neighbour. CLIP (spec §5.6) resizes the short side with bicubic, centre-crops,
and normalises with the model's ``config.image_mean`` / ``image_std`` (``tokenattr.models.clip.CLIP_MEAN``).
These functions reproduce torchvision's ``Resize`` (on PIL images, where bilinear and bicubic are PIL's
antialiased filters), ``CenterCrop``, ``ToTensor`` and ``Normalize``.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

BILINEAR = Image.Resampling.BILINEAR
BICUBIC = Image.Resampling.BICUBIC
NEAREST = Image.Resampling.NEAREST


def load_rgb(path: str | PathLike) -> Image.Image:
    """Decode any image PIL can read (greyscale, CMYK or palette JPEG/PNG, alpha) into an RGB image.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file exists but cannot be decoded as an image; the message names it.
    """
    try:
        with Image.open(path) as image:
            # convert() forces the full decode here, so a truncated file fails now and names itself.
            return image.convert("RGB")
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot decode image file {path}: expected an image PIL can read ({error})") from error


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise ValueError(f"size must be an int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def resize_to_tensor(
    image: Image.Image, size: int | Sequence[int] = (224, 224), resample: Image.Resampling = BILINEAR
) -> torch.Tensor:
    """``Resize(size)`` then ``ToTensor``: an RGB PIL image to a float32 tensor ``[3, H, W]`` in [0, 1].

    Args:
        image: an RGB PIL image (see :func:`load_rgb`).
        size: ``(H, W)`` of the output, or one int for a square; the aspect ratio is not kept.
        resample: PIL filter; the default ``BILINEAR`` is torchvision's antialiased bilinear on PIL images.
    """
    _check_rgb(image, "resize_to_tensor")
    height, width = _size_hw(size)
    return _to_tensor(image.resize((width, height), resample=resample))  # PIL takes (width, height)


def clip_image_to_tensor(image: Image.Image, size: int = 224, resample: Image.Resampling = BICUBIC) -> torch.Tensor:
    """CLIP's ``Resize(size, BICUBIC)``, ``CenterCrop(size)``, ``ToTensor``: float32 ``[3, size, size]`` in [0, 1].

    The short side becomes ``size`` and the long side ``int(size * long / short)`` (torchvision's rule); the
    crop starts at ``round((W - size) / 2)``, ``round((H - size) / 2)``. Normalise with the model's
    ``config.image_mean`` and ``image_std`` before the model.

    Args:
        image: an RGB PIL image (see :func:`load_rgb`).
        size: the crop side, CLIP's input resolution.
        resample: PIL filter of the resize; the default is OpenAI's bicubic.
    """
    _check_rgb(image, "clip_image_to_tensor")
    width, height = image.size
    short, long = sorted((width, height))
    scaled = int(size * long / short)
    new_width, new_height = (size, scaled) if width <= height else (scaled, size)
    image = image.resize((new_width, new_height), resample=resample)  # a copy when the size is already right
    left, top = round((new_width - size) / 2), round((new_height - size) / 2)
    return _to_tensor(image.crop((left, top, left + size, top + size)))


def _check_rgb(image: Image.Image, caller: str) -> None:
    if image.mode != "RGB":
        raise ValueError(f"{caller} expects an RGB image, got mode {image.mode!r}; decode with load_rgb")


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """``ToTensor`` of an RGB image: uint8 ``[H, W, 3]`` to float32 ``[3, H, W]`` divided by 255."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # [H, W, 3]
    return pixels.permute(2, 0, 1).to(torch.float32).div(255.0)


def normalize(images01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for ``[3, H, W]`` or ``[B, 3, H, W]``; the ViT tests use 0.5 / 0.5."""
    if images01.dim() not in (3, 4) or images01.shape[-3] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"normalize expects [C, H, W] or [B, C, H, W] with C = len(mean) = len(std), "
            f"got shape {tuple(images01.shape)}, {len(mean)} means and {len(std)} stds"
        )
    mean_t = torch.as_tensor(mean, dtype=images01.dtype, device=images01.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images01.dtype, device=images01.device).view(-1, 1, 1)
    return (images01 - mean_t) / std_t


def mask_to_tensor(mask: np.ndarray, size: int | Sequence[int] = (224, 224)) -> torch.Tensor:
    """``Resize(size, NEAREST)`` of an integer label map ``[h, w]``, returned as int64 ``[H, W]``.

    Float maps are accepted when every value is a whole number (MATLAB files often store labels as
    double); labels must lie in [0, 2**31).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D label map [H, W], got shape {mask.shape}")
    if mask.dtype.kind == "f" and not np.all(np.mod(mask, 1) == 0):
        raise ValueError("mask holds non-integer values; expected class labels such as {0, 1}")
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"mask must hold integer labels, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() >= 2**31):
        raise ValueError(f"mask labels must lie in [0, 2**31), got range [{mask.min()}, {mask.max()}]")
    height, width = _size_hw(size)
    # Mode "I" (int32) holds any label and PIL resizes it with the same NEAREST rule as uint8 masks.
    resized = Image.fromarray(mask.astype(np.int32)).resize((width, height), resample=NEAREST)
    return torch.from_numpy(np.asarray(resized, dtype=np.int64).copy())
