"""The BERT perturbation tests (spec §5.4 movie reviews, §5.5 20 Newsgroups): accuracy as relevant tokens are removed.

For each step fraction s, the k = int(count·s) tokens with the highest relevance are removed: their ``input_ids``
become ``pad_id`` ([PAD]) and their ``attention_mask`` 0. The sequence is re-classified and the top-1 hit against
the ground-truth label recorded. ``count`` is

* per sequence (``length=None``, movie reviews): the number of real tokens, [CLS] and [SEP] included, i.e. the
  original's ``len(tokens)`` of an unpadded sequence. Padding positions of a batch are never removed;
* fixed (``length=512``, 20 Newsgroups): the padded length, so k = int(512·s) counts padding, and padding positions
  compete with the real tokens at score 0 (what the original's ``topk`` over all 512 positions did).

The caller passes relevance already as the test wants it: clamped at 0 (positive test, spec: ``cam.clamp(min=0)``)
or that negated (negative test, where zero-relevance tokens such as [CLS] go first). The original computed no AUC
for BERT, only per-step accuracy; :class:`~tokenattr.evaluation.perturbation.PerturbationCurve` gives both::

    curve = PerturbationCurve(MOVIES_STEPS)
    for input_ids, attention_mask, relevance, labels in batches:     # [B, T] each, labels [B]
        logits = run_text_perturbation(input_ids, attention_mask, relevance, predict_fn, MOVIES_STEPS)
        curve.update(top1_hits(logits.clean, labels), top1_hits(logits.steps, labels))

A curve's fractions exclude 0 (its clean point sits there), so for 20 Newsgroups, whose steps start at 0 (nothing
removed: the clean logits), use ``PerturbationCurve(NEWSGROUPS_STEPS[1:])`` and ``logits.steps[1:]``.

Ties. The original ranked with ``torch.topk``, whose order among equal scores is an implementation detail (CPU and
CUDA differ) and need not be nested across k. Here tokens are ranked by a *stable* descending sort: equal scores go
in position order. The removed sets are then nested across steps by construction, which makes the original's
cumulative in-place masking and masking each step afresh identical, and a sequence gives the same result alone or
in a padded batch. Ties are common: zero-clamped tokens and [CLS] (zeroed by every BERT method), and in the fixed
count mode every padding position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .perturbation import PerturbationLogits, _checked_fractions

__all__ = ["MOVIES_STEPS", "NEWSGROUPS_STEPS", "mask_top_tokens", "run_text_perturbation"]

# np.arange(0.52, 0.68, 0.02) and np.arange(0, 1.1, 0.1) as numpy gives them, written out: int(count·s) must see
# these exact floats (int(100·0.5800000000000001) = 58 but int(100·0.58) = 57). The 0.68 is rounding's gift.
MOVIES_STEPS: tuple[float, ...] = (
    0.52,
    0.54,
    0.56,
    0.5800000000000001,
    0.6000000000000001,
    0.6200000000000001,
    0.6400000000000001,
    0.6600000000000001,
    0.6800000000000002,
)
NEWSGROUPS_STEPS: tuple[float, ...] = (
    0.0,
    0.1,
    0.2,
    0.30000000000000004,
    0.4,
    0.5,
    0.6000000000000001,
    0.7000000000000001,
    0.8,
    0.9,
    1.0,
)


def mask_top_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    relevance: Tensor | np.ndarray,
    fraction: float,
    *,
    pad_id: int = 0,
    length: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` with the k = int(count·fraction) most relevant tokens of each sequence removed.

    Args:
        input_ids: ``[B, T]`` token ids.
        attention_mask: ``[B, T]``, 1 (or ``True``) at real tokens, 0 at padding.
        relevance: ``[B, T]`` finite token relevance (clamped or negated by the caller, see the module docstring).
        fraction: share of ``count`` to remove, in [0, 1].
        pad_id: the id written into removed positions (BERT's [PAD] is 0).
        length: ``None``: count = the sequence's real tokens, and padding is never removed. An int >= T: count =
            ``length``, every position competes and padding scores 0, as if each sequence were padded to ``length``
            (positions beyond T are padding that is not there to remove).

    Ranking is a stable descending sort of the relevance (ties in position order). The inputs are not modified.
    """
    input_ids, attention_mask, relevance = _checked_inputs(input_ids, attention_mask, relevance, length)
    (fraction,) = _checked_fractions([fraction], for_curve=False)
    order, counts = _removal_order(attention_mask, relevance, length)
    return _removed(input_ids, attention_mask, order, counts, fraction, pad_id)


def run_text_perturbation(
    input_ids: Tensor,
    attention_mask: Tensor,
    relevance: Tensor | np.ndarray,
    predict_fn: Callable[[Tensor, Tensor], Tensor],
    steps: Sequence[float],
    *,
    pad_id: int = 0,
    length: int | None = None,
) -> PerturbationLogits:
    """Classify a batch unperturbed and with the top ``int(count·s)`` tokens removed, for each step s.

    Args:
        input_ids, attention_mask, relevance, pad_id, length: as in :func:`mask_top_tokens`.
        predict_fn: ``(input_ids [B, T], attention_mask [B, T]) -> [B, K]`` logits, called under
            ``torch.no_grad()``, once for the clean batch and once per step that removes any token.
        steps: fractions in [0, 1], e.g. :data:`MOVIES_STEPS` or :data:`NEWSGROUPS_STEPS`.

    Returns:
        :class:`~tokenattr.evaluation.perturbation.PerturbationLogits`: ``clean`` ``[B, K]`` and ``steps``
        ``[S, B, K]``. A step that removes nothing from any sequence (s = 0) reuses the clean logits.
    """
    input_ids, attention_mask, relevance = _checked_inputs(input_ids, attention_mask, relevance, length)
    steps = _checked_fractions(steps, for_curve=False)
    order, counts = _removal_order(attention_mask, relevance, length)
    with torch.no_grad():
        clean = _logits(predict_fn, input_ids, attention_mask)
        step_logits = []
        for step in steps:
            ids, mask = _removed(input_ids, attention_mask, order, counts, step, pad_id)
            unchanged = torch.equal(ids, input_ids) and torch.equal(mask, attention_mask)
            step_logits.append(clean if unchanged else _logits(predict_fn, ids, mask))
    return PerturbationLogits(clean=clean, steps=torch.stack(step_logits))


def _removal_order(attention_mask: Tensor, relevance: Tensor, length: int | None) -> tuple[Tensor, list[int]]:
    """Positions ``[B, L]`` from most to least relevant, and each sequence's count for k = int(count·s)."""
    real = attention_mask.bool()
    if length is None:
        # The original saw unpadded sequences: a batch's padding must never be chosen (k <= count keeps it out).
        scores = relevance.masked_fill(~real, float("-inf"))
        counts = [int(count) for count in real.sum(dim=1)]
    else:
        # Padded to `length`, padding scores 0; positions T..length-1 are padding this batch does not hold.
        scores = relevance.masked_fill(~real, 0.0)
        missing = length - scores.shape[1]
        scores = torch.cat([scores, scores.new_zeros(scores.shape[0], missing)], dim=1)
        counts = [length] * scores.shape[0]
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order, counts


def _removed(
    input_ids: Tensor, attention_mask: Tensor, order: Tensor, counts: list[int], fraction: float, pad_id: int
) -> tuple[Tensor, Tensor]:
    batch, tokens = input_ids.shape
    # Python floats, as the original's int(len(tokens) * step): a tensor product could round differently.
    ks = torch.tensor([int(count * fraction) for count in counts], device=order.device)
    chosen = torch.arange(order.shape[1], device=order.device)[None, :] < ks[:, None]  # [B, L] by rank
    removed = torch.zeros(order.shape, dtype=torch.bool, device=order.device).scatter(1, order, chosen)
    removed = removed[:, :tokens]  # drop the fixed length's absent padding
    ids = input_ids.masked_fill(removed, pad_id)
    mask = attention_mask.masked_fill(removed, 0)
    return ids, mask


def _checked_inputs(
    input_ids: Tensor, attention_mask: Tensor, relevance: Tensor | np.ndarray, length: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be an integer tensor [B, T], got {shape}")
    attention_mask = torch.as_tensor(attention_mask, device=input_ids.device)
    relevance = torch.as_tensor(relevance, device=input_ids.device)
    for name, value in (("attention_mask", attention_mask), ("relevance", relevance)):
        if value.shape != input_ids.shape:
            raise ValueError(
                f"{name} must be [B, T] = {tuple(input_ids.shape)} like input_ids, got {tuple(value.shape)}"
            )
    if attention_mask.is_floating_point() or not ((attention_mask == 0) | (attention_mask == 1)).all():
        raise ValueError(f"attention_mask must hold 0/1 (or bool), got dtype {attention_mask.dtype}")
    if not relevance.is_floating_point() or not torch.isfinite(relevance).all():
        raise ValueError(f"relevance must be finite floating point, got dtype {relevance.dtype} or NaN/inf values")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < input_ids.shape[1]):
        raise ValueError(
            f"length must be None (count each sequence's real tokens) or an int >= T = {input_ids.shape[1]}, "
            f"the padded length counted by k = int(length·s); got {length!r}"
        )
    return input_ids, attention_mask, relevance


def _logits(predict_fn: Callable[[Tensor, Tensor], Tensor], input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    logits = predict_fn(input_ids, attention_mask)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != input_ids.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"predict_fn must return logits [B={input_ids.shape[0]}, K], got {shape}")
    return logits
