"""The ViT perturbation test (spec §5.2): how fast accuracy falls as the most (or least) relevant pixels are removed.

For each fraction p in 0.1, ..., 0.9 the k = int(H·W·p) pixels with the highest map value (positive test) or
the lowest (negative test) are set to black in every colour channel, and the top-1 accuracy against the
ground-truth label is recorded. Positive: a lower curve (AUC) is better; negative: a higher one is.

The pieces know nothing about models: :func:`perturb` edits images, :func:`run_perturbation` classifies every
perturbed batch through a function it is handed, and :class:`PerturbationCurve` accumulates hits over batches
(and across processes, with :meth:`PerturbationCurve.merge`)::

    predict_fn = lambda images01: model((images01 - 0.5) / 0.5)   # the model's own normalisation
    curve = PerturbationCurve()
    for images01, maps, labels in batches:                         # [B, 3, H, W] in [0, 1], [B, H, W], [B]
        logits = run_perturbation(images01, maps, predict_fn, positive=True)
        curve.update(top1_hits(logits.clean, labels), top1_hits(logits.steps, labels))
    curve.compute()   # per-step accuracy, auc_original, auc_chefer (fractions; papers print x100)

Normalisation is left to ``predict_fn``: pixels are removed in the space the images come in (ViT: [0, 1], so
black is 0 there and -1 after the original's 0.5/0.5 normalisation), and the model's preprocessing is the
model's business, which keeps this module free of per-model constants. (The CLIP script instead fills with 0
*after* normalising, i.e. the mean colour, and measures 0.1, ..., 1.0: there, pass normalised images with
``fill=0`` and a ``predict_fn`` that does not normalise again, and read ``auc_chefer`` ×100.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.metrics import auc
from torch import Tensor

__all__ = [
    "PERTURBATION_FRACTIONS",
    "PerturbationCurve",
    "PerturbationLogits",
    "perturb",
    "run_perturbation",
    "top1_hits",
]

# Literals, not a range: int(H·W·p) must see the same floats as the original's list.
PERTURBATION_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def perturb(
    images01: Tensor, maps: Tensor | np.ndarray, fraction: float, *, positive: bool = True, fill: float = 0.0
) -> Tensor:
    """Images ``[B, C, H, W]`` with the k = int(H·W·fraction) most relevant pixels of each set to ``fill``.

    Args:
        images01: ``[B, C, H, W]`` float images (ViT: in [0, 1], before normalisation).
        maps: ``[B, H, W]`` relevance maps, one per image; any finite scale (the test uses min-max maps).
        fraction: share of the pixels to remove, in [0, 1].
        positive: remove the most relevant pixels (``True``) or the least relevant (``False``).
        fill: the value written into every channel of a removed pixel (ViT: 0, black in [0, 1] space).

    Pixels are chosen with ``torch.topk`` over the flattened map ``[B, H·W]`` (negative test: over ``-map``),
    as in the original, so tied values are broken the way ``torch.topk`` breaks them. That choice is torch's
    implementation detail and may differ between CPU and CUDA; it matters for flat regions of a map (e.g. the
    replicated borders of a bilinearly up-sampled one). The input images are not modified.
    """
    maps = _checked_maps(images01, maps)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    batch, channels, height, width = images01.shape
    k = int(height * width * fraction)
    scores = maps.reshape(batch, height * width)
    removed = torch.topk(scores if positive else -scores, k, dim=-1).indices  # [B, k]
    flat = images01.reshape(batch, channels, height * width).clone()
    flat.scatter_(-1, removed[:, None, :].expand(batch, channels, k), fill)
    return flat.reshape(images01.shape)


class PerturbationLogits(NamedTuple):
    """Logits of one batch: ``clean`` ``[B, K]`` for the unperturbed images, ``steps`` ``[S, B, K]`` per fraction."""

    clean: Tensor
    steps: Tensor


def run_perturbation(
    images01: Tensor,
    maps: Tensor | np.ndarray,
    predict_fn: Callable[[Tensor], Tensor],
    fractions: Sequence[float] = PERTURBATION_FRACTIONS,
    *,
    positive: bool = True,
    fill: float = 0.0,
) -> PerturbationLogits:
    """Classify a batch unperturbed and at each perturbation fraction.

    Args:
        images01: ``[B, C, H, W]`` images in the space ``fill`` refers to (ViT: [0, 1]).
        maps: ``[B, H, W]`` relevance maps.
        predict_fn: ``[B, C, H, W] -> [B, K]`` logits; it receives images in ``images01``'s space and applies
            the model's normalisation itself. It is called once for the clean batch and once per fraction,
            under ``torch.no_grad()``.
        fractions: shares of pixels to remove, each in [0, 1] (default 0.1, ..., 0.9).
        positive, fill: as in :func:`perturb`.

    Returns:
        :class:`PerturbationLogits` with ``clean`` ``[B, K]`` and ``steps`` ``[S, B, K]``, S = ``len(fractions)``.
    """
    maps = _checked_maps(images01, maps)
    fractions = _checked_fractions(fractions, for_curve=False)
    with torch.no_grad():
        clean = _logits(predict_fn, images01)
        steps = [_logits(predict_fn, perturb(images01, maps, p, positive=positive, fill=fill)) for p in fractions]
    return PerturbationLogits(clean=clean, steps=torch.stack(steps))


def top1_hits(logits: Tensor, labels: Tensor | np.ndarray) -> Tensor:
    """Whether the arg-max class equals the label: logits ``[..., B, K]``, labels ``[B]`` -> bool ``[..., B]``."""
    labels = torch.as_tensor(labels, device=logits.device)
    if logits.dim() < 2 or labels.shape != logits.shape[-2:-1]:
        raise ValueError(
            f"logits must be [..., B, K] and labels [B], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return logits.argmax(dim=-1) == labels


class PerturbationCurve:
    """Accumulates the perturbation test's hits over batches and reports accuracy per step and two AUCs.

    The two AUCs differ only in their x-grid (both use ``sklearn.metrics.auc``, the trapezoid rule), and the
    clean accuracy (unperturbed images) is the value at x = 0 in both:

    * ``auc_original``: x = [0, *fractions, 1], y = [clean, *step_accuracy, 0], i.e. accuracy assumed 0 once
      every pixel is gone. This is what the paper's repository (transformerinterp,
      ``pertubation_eval_from_hdf5.py``) prints.
    * ``auc_chefer``: x = [0, *fractions], y = [clean, *step_accuracy], i.e. the area over the measured steps
      only, with no assumed end point: the reading of Chefer et al.'s reported AUC. Their script printed only
      the per-step accuracies, so this grid comes from their paper's description, not from code.

    They differ by the last segment, (1 - fractions[-1]) · acc(fractions[-1]) / 2: 0.05 · acc(0.9) by default,
    nothing when the last fraction is 1 (then ``auc_chefer`` is the CLIP script's AUC, there printed ×100).

    Every count is a sum over images, so shards combine by adding: :meth:`merge`, or an all-reduce with SUM over
    the counts in :meth:`state_dict` (all keys but ``fractions``).
    """

    def __init__(self, fractions: Sequence[float] = PERTURBATION_FRACTIONS) -> None:
        self.fractions = _checked_fractions(fractions, for_curve=True)
        self.count = 0
        self.clean_hits = 0
        self.step_hits = [0] * len(self.fractions)

    def update(self, clean_hits: Tensor | np.ndarray, step_hits: Tensor | np.ndarray) -> None:
        """Add a batch: ``clean_hits`` ``[B]`` and ``step_hits`` ``[S, B]``, bool (or 0/1) top-1 hits.

        ``step_hits[i]`` belongs to ``fractions[i]``; see :func:`top1_hits` and :func:`run_perturbation`.
        """
        clean_hits = _checked_hits(clean_hits, "clean_hits")
        step_hits = _checked_hits(step_hits, "step_hits")
        if clean_hits.dim() != 1 or tuple(step_hits.shape) != (len(self.fractions), clean_hits.shape[0]):
            raise ValueError(
                f"clean_hits must be [B] and step_hits [S={len(self.fractions)}, B], "
                f"got {tuple(clean_hits.shape)} and {tuple(step_hits.shape)}"
            )
        self.count += clean_hits.shape[0]
        self.clean_hits += int(clean_hits.sum())
        self.step_hits = [total + int(hits) for total, hits in zip(self.step_hits, step_hits.sum(dim=1))]

    def merge(self, other: PerturbationCurve) -> PerturbationCurve:
        """Add ``other``'s counts to this curve, in place; returns ``self``. Both must use the same fractions."""
        if not isinstance(other, PerturbationCurve):
            raise TypeError(f"can only merge another PerturbationCurve, got {type(other).__name__}")
        self._add_state(other.state_dict())
        return self

    def state_dict(self) -> dict[str, Any]:
        """The state as plain Python numbers: ``fractions`` and the summed counts."""
        return {
            "fractions": list(self.fractions),
            "count": self.count,
            "clean_hits": self.clean_hits,
            "step_hits": list(self.step_hits),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PerturbationCurve:
        """The curve whose :meth:`state_dict` is ``state`` (e.g. after an all-reduce of its counts)."""
        if "fractions" not in state:
            raise ValueError(f"perturbation state must hold 'fractions', got keys {sorted(state)}")
        curve = cls(state["fractions"])
        curve._add_state(state)
        return curve

    def compute(self) -> dict[str, Any]:
        """Clean and per-step accuracy and both AUCs (see the class docstring), as fractions in [0, 1]."""
        if self.count == 0:
            raise RuntimeError("PerturbationCurve.compute() called before any image was added (update or merge)")
        clean_accuracy = self.clean_hits / self.count
        step_accuracy = [hits / self.count for hits in self.step_hits]
        return {
            "fractions": list(self.fractions),
            "clean_accuracy": clean_accuracy,
            "step_accuracy": step_accuracy,
            "auc_original": float(auc([0.0, *self.fractions, 1.0], [clean_accuracy, *step_accuracy, 0.0])),
            "auc_chefer": float(auc([0.0, *self.fractions], [clean_accuracy, *step_accuracy])),
            "count": self.count,
        }

    def _add_state(self, state: dict[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(f"perturbation state must have the keys {sorted(expected)}, got {sorted(state)}")
        if tuple(float(p) for p in state["fractions"]) != self.fractions:
            raise ValueError(f"cannot combine curves over fractions {self.fractions} and {tuple(state['fractions'])}")
        if len(state["step_hits"]) != len(self.fractions):
            raise ValueError(
                f"state['step_hits'] must hold {len(self.fractions)} counts, one per fraction, "
                f"got {state['step_hits']!r}"
            )
        self.count += int(state["count"])
        self.clean_hits += int(state["clean_hits"])
        self.step_hits = [total + int(hits) for total, hits in zip(self.step_hits, state["step_hits"])]


def _checked_maps(images01: Tensor, maps: Tensor | np.ndarray) -> Tensor:
    """``maps`` as a tensor on ``images01``'s device, after checking both shapes and the maps' values."""
    if not isinstance(images01, Tensor) or images01.dim() != 4 or not images01.is_floating_point():
        shape = tuple(images01.shape) if isinstance(images01, Tensor) else type(images01).__name__
        raise ValueError(f"images01 must be a float tensor [B, C, H, W], got {shape}")
    maps = torch.as_tensor(maps, device=images01.device)
    batch, _, height, width = images01.shape
    if tuple(maps.shape) != (batch, height, width):
        raise ValueError(
            f"maps must be [B, H, W] = {(batch, height, width)} to match images01 {tuple(images01.shape)}, "
            f"got {tuple(maps.shape)}"
        )
    if not maps.is_floating_point():
        raise ValueError(f"maps must be floating point relevance, got dtype {maps.dtype}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps must be finite, got NaN or infinite values (e.g. a min-max of a constant map)")
    return maps


def _checked_fractions(fractions: Sequence[float], for_curve: bool) -> tuple[float, ...]:
    """Fractions as floats in [0, 1]; a curve's must increase strictly and exclude 0 (its AUCs put the clean point
    there)."""
    fractions = tuple(float(p) for p in fractions)
    if not fractions:
        raise ValueError("fractions must not be empty")
    if not all(0 <= p <= 1 for p in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {fractions}")
    if for_curve and not (fractions[0] > 0 and all(a < b for a, b in pairwise(fractions))):
        raise ValueError(f"a curve's fractions must increase strictly within (0, 1], got {fractions}")
    return fractions


def _checked_hits(hits: Tensor | np.ndarray, name: str) -> Tensor:
    hits = torch.as_tensor(hits).cpu()
    if hits.is_floating_point() or not ((hits == 0) | (hits == 1)).all():
        raise ValueError(f"{name} must be bool (or integer 0/1) hits, got dtype {hits.dtype}")
    return hits.long()


def _logits(predict_fn: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    logits = predict_fn(images)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != images.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"predict_fn must return logits [B={images.shape[0]}, K], got {shape}")
    return logits
