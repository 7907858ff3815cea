"""The ImageNet-segmentation test (spec §5.1): how well a relevance map, read as a foreground mask, finds the object.

Each image map ``[H, W]`` (min-max normalised to [0, 1], see ``tokenattr.to_image_map``) is compared with the
object mask ``[H, W]`` (0 = background, 1 = object), exactly as the original ``imagenet_seg_eval.py`` with its
``utils/metrices.py`` does:

* **binarisation**: foreground iff ``map > mean(map)`` (the mean over the image's own pixels);
* **pixel accuracy**: Σ correct pixels / Σ labelled pixels, summed over the *whole dataset* before dividing;
* **IoU** per class (background, foreground): Σ intersection / Σ union, both summed over the dataset;
  mIoU is the mean of the two;
* **AP**: per image, one ``sklearn.metrics.average_precision_score`` over the flattened two-channel volume,
  scores ``[1 - map, map]`` against the one-hot targets ``[mask == 0, mask == 1]``; mAP is the mean over
  images. (The one-hot volume always holds H·W positives, so the AP is always defined; the original's
  NaN-to-0 only ever acted on NaN maps, which are rejected here.)

Pixel accuracy and mIoU are therefore dataset-cumulative, not means of per-image values (spec §9, item 22).
The original also prints an "mF1", which scores every image *row* as a separate sample; it is not a paper
metric and is omitted on purpose.

Usage (``maps`` [B, H, W] in [0, 1], ``masks`` [B, H, W] in {0, 1}; several processes merge their shards)::

    metrics = SegmentationMetrics()
    for maps, masks in batches:
        metrics.update(maps, masks)
    metrics.compute()   # {"pixel_accuracy": ..., "mean_iou": ..., "mean_ap": ..., ...}, fractions (papers: x100)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import Tensor

__all__ = ["ImageSegmentationScores", "SegmentationMetrics", "image_segmentation_scores"]


class ImageSegmentationScores(NamedTuple):
    """The segmentation counts of one image; index 0 of ``intersection``/``union`` is background, 1 foreground."""

    threshold: float
    correct: int
    labeled: int
    intersection: tuple[int, int]
    union: tuple[int, int]
    average_precision: float


def image_segmentation_scores(image_map: Tensor | np.ndarray, mask: Tensor | np.ndarray) -> ImageSegmentationScores:
    """Segmentation counts of one map ``[H, W]`` (float, in [0, 1]) against its mask ``[H, W]`` (integer, in {0, 1}).

    The threshold and the AP's ``1 - map`` are computed in the map's own dtype: the original's maps are float32,
    so float32 maps reproduce its numbers bit for bit (float64 maps give APs that differ at about 1e-8).
    A constant map has no pixel above its mean and so predicts all background, as the original does for the
    NaN maps its min-max makes of constant ones (its AP there, from all-zero scores, is 0.5; here the AP
    follows from the constant).
    """
    image_map, mask = _checked(_as_cpu_tensor(image_map), _as_cpu_tensor(mask), ("image_map", "mask"), "[H, W]")
    return _scores(image_map, mask)


class SegmentationMetrics:
    """Accumulates the segmentation test over batches; shards from several processes combine with :meth:`merge`.

    Every piece of state is a sum (pixel counts, per-class intersection and union, the sum of per-image APs and
    the image count), so shards combine by adding them key by key: ``merge`` here, or an all-reduce with SUM
    over the values of :meth:`state_dict`.
    """

    def __init__(self) -> None:
        self.correct = 0
        self.labeled = 0
        self.intersection = [0, 0]  # [background, foreground]
        self.union = [0, 0]
        self.ap_sum = 0.0
        self.count = 0

    def update(self, maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> list[ImageSegmentationScores]:
        """Add a batch: maps ``[B, H, W]`` (float, in [0, 1]) and masks ``[B, H, W]`` (integer or bool, in {0, 1}).

        Returns the per-image scores, in batch order.
        """
        maps, masks = _checked(_as_cpu_tensor(maps), _as_cpu_tensor(masks), ("maps", "masks"), "[B, H, W]")
        scores = [_scores(image_map, mask) for image_map, mask in zip(maps, masks)]
        for image in scores:
            self.correct += image.correct
            self.labeled += image.labeled
            self.intersection = [total + part for total, part in zip(self.intersection, image.intersection)]
            self.union = [total + part for total, part in zip(self.union, image.union)]
            self.ap_sum += image.average_precision
            self.count += 1
        return scores

    def merge(self, other: SegmentationMetrics) -> SegmentationMetrics:
        """Add ``other``'s state to this one, in place; returns ``self``.

        Counts merge exactly; the AP sum is a float64 sum, so a merged mean AP equals a single pass's to rounding.
        """
        if not isinstance(other, SegmentationMetrics):
            raise TypeError(f"can only merge another SegmentationMetrics, got {type(other).__name__}")
        self._add_state(other.state_dict())
        return self

    def state_dict(self) -> dict[str, Any]:
        """The state as plain Python numbers; every value is a sum over images (lists element-wise)."""
        return {
            "correct": self.correct,
            "labeled": self.labeled,
            "intersection": list(self.intersection),
            "union": list(self.union),
            "ap_sum": self.ap_sum,
            "count": self.count,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SegmentationMetrics:
        """The accumulator whose :meth:`state_dict` is ``state`` (e.g. after an all-reduce)."""
        metrics = cls()
        metrics._add_state(state)
        return metrics

    def compute(self) -> dict[str, float | int]:
        """Pixel accuracy, per-class and mean IoU, and mean AP, as fractions in [0, 1] (papers print x100).

        A class that is never labelled nor predicted has IoU 0, as in the original (which divides by
        ``union + eps``).
        """
        if self.count == 0:
            raise RuntimeError("SegmentationMetrics.compute() called before any image was added (update or merge)")
        iou = [_ratio(inter, union) for inter, union in zip(self.intersection, self.union)]
        return {
            "pixel_accuracy": _ratio(self.correct, self.labeled),
            "iou_background": iou[0],
            "iou_foreground": iou[1],
            "mean_iou": (iou[0] + iou[1]) / 2,
            "mean_ap": self.ap_sum / self.count,
            "count": self.count,
        }

    def _add_state(self, state: dict[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(f"segmentation state must have the keys {sorted(expected)}, got {sorted(state)}")
        for key in ("intersection", "union"):
            if len(state[key]) != 2:
                raise ValueError(f"state[{key!r}] must hold 2 values (background, foreground), got {state[key]!r}")
        self.correct += int(state["correct"])
        self.labeled += int(state["labeled"])
        self.intersection = [total + int(part) for total, part in zip(self.intersection, state["intersection"])]
        self.union = [total + int(part) for total, part in zip(self.union, state["union"])]
        self.ap_sum += float(state["ap_sum"])
        self.count += int(state["count"])


def _scores(image_map: Tensor, mask: Tensor) -> ImageSegmentationScores:
    """Counts for one checked map and mask ``[H, W]`` (CPU tensors)."""
    # torch's mean, as the original takes it, so the threshold matches it to the last bit.
    threshold = image_map.mean()
    foreground = image_map > threshold
    is_object = mask.bool()
    hits_object = int((foreground & is_object).sum())
    hits_background = int((~foreground & ~is_object).sum())
    predicted_object = int(foreground.sum())
    labeled_object = int(is_object.sum())
    pixels = mask.numel()
    predicted_background = pixels - predicted_object
    labeled_background = pixels - labeled_object

    scores = torch.stack([1 - image_map, image_map]).numpy().reshape(-1)  # [2 * H * W], channel-major
    targets = torch.stack([~is_object, is_object]).numpy().reshape(-1).astype(np.uint8)
    average_precision = float(average_precision_score(targets, scores))

    return ImageSegmentationScores(
        threshold=float(threshold),
        correct=hits_object + hits_background,
        labeled=pixels,
        intersection=(hits_background, hits_object),
        union=(
            predicted_background + labeled_background - hits_background,
            predicted_object + labeled_object - hits_object,
        ),
        average_precision=average_precision,
    )


def _as_cpu_tensor(values: Tensor | np.ndarray) -> Tensor:
    return values.detach().cpu() if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))


def _checked(maps: Tensor, masks: Tensor, names: tuple[str, str], layout: str) -> tuple[Tensor, Tensor]:
    """Maps and masks of one ``layout`` ("[H, W]" or "[B, H, W]"), checked for shape, type and values."""
    maps_name, masks_name = names
    if maps.dim() != len(layout.split(",")):
        raise ValueError(f"{maps_name} must be {layout}, got shape {tuple(maps.shape)}")
    if maps.shape != masks.shape:
        raise ValueError(
            f"{maps_name} and {masks_name} must have the same shape, got {tuple(maps.shape)} and {tuple(masks.shape)}"
        )
    if maps.shape[-2] * maps.shape[-1] == 0:
        raise ValueError(f"{maps_name} must have at least one pixel, got shape {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise ValueError(f"{maps_name} must be floating point (min-max normalised maps in [0, 1]), got {maps.dtype}")
    if maps.numel() and not (torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1):
        raise ValueError(
            f"{maps_name} must hold finite values in [0, 1] (min-max normalised, e.g. by tokenattr.to_image_map), "
            f"got values in [{float(maps.min())}, {float(maps.max())}]"
        )
    if masks.is_floating_point() or masks.is_complex():
        raise ValueError(f"{masks_name} must be integer or bool (0 = background, 1 = object), got {masks.dtype}")
    if masks.numel() and not ((masks == 0) | (masks == 1)).all():
        raise ValueError(
            f"{masks_name} must hold only 0 (background) and 1 (object), got values {masks.unique().tolist()[:10]}"
        )
    return maps, masks


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0
