"""Baselines built on layer-wise relevance propagation (spec §4.1): transformer attribution (Chefer et al.
CVPR'21), partial LRP (Voita et al. 2019), LRP rollout and full LRP.

Each one seeds the relevance with the one-hot vector of the target class at the logits and propagates it
with ``model.relprop`` (the rules live in ``tokenattr/models/lrp.py``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..models.lrp import CHEFER_RULES, ORIGINAL_LRP_RULES, LRPRules
from .common import Inputs, attention_gradients, included_layers, read_off, recorded_forward, residual_rollout

RULE_SETS = {"chefer": CHEFER_RULES, "original-lrp": ORIGINAL_LRP_RULES}


def _rules(name: str) -> LRPRules:
    if name not in RULE_SETS:
        raise ValueError(f"unknown LRP rule set {name!r}; expected one of {', '.join(RULE_SETS)}")
    return RULE_SETS[name]


def _propagate(
    model: nn.Module,
    inputs: Inputs,
    target: int | Tensor | None,
    rules: str,
    *,
    gradients: bool = False,
    to_input: bool = False,
) -> tuple[Tensor | None, list[Tensor], list[Tensor] | None]:
    """One recorded forward, then relevance propagation from the target's one-hot logits.

    Returns ``(input relevance or None, R^A per block, ∂y_c/∂A per block or None)``.
    """
    relprop = getattr(model, "relprop", None)
    if relprop is None:
        raise NotImplementedError(f"{type(model).__name__} does not implement relevance propagation yet")
    layers = list(range(model.depth))
    records, target, score, logits = recorded_forward(model, inputs, target, layers, differentiable=gradients)
    grads = attention_gradients(records, layers, score) if gradients else None
    seed = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
    input_relevance, attn_relevances = relprop(inputs, records, seed, rules=_rules(rules), to_input=to_input)
    return input_relevance, attn_relevances, grads


def transformer_attribution(
    model: nn.Module,
    inputs: Inputs,
    target: int | Tensor | None = None,
    *,
    start_layer: int,
    rules: str = "chefer",
    normalise_rows: bool = False,
) -> Tensor:
    """``R = Π_l (I + mean_h max(0, ∂y_c/∂A_l ⊙ R^A_l))`` from ``start_layer`` on. ``normalise_rows`` divides each
    factor by its row sums, as the original's BERT code does; its ViT code does not (spec §4.1, §4.2)."""
    layers = included_layers(model, start_layer)
    _, attn_relevances, grads = _propagate(model, inputs, target, rules, gradients=True)
    transitions = [(grads[layer] * attn_relevances[layer]).clamp(min=0).mean(dim=1) for layer in layers]
    return read_off(model, residual_rollout(transitions, normalise_rows), inputs)


def lrp_rollout(
    model: nn.Module, inputs: Inputs, target: int | Tensor | None = None, *, start_layer: int, rules: str = "chefer"
) -> Tensor:
    """``R = Π_l (I + mean_h max(0, R^A_l))`` from ``start_layer`` on: rollout of the LRP attention relevances."""
    layers = included_layers(model, start_layer)
    _, attn_relevances, _ = _propagate(model, inputs, target, rules)
    transitions = [attn_relevances[layer].clamp(min=0).mean(dim=1) for layer in layers]
    return read_off(model, residual_rollout(transitions), inputs)


def partial_lrp(
    model: nn.Module, inputs: Inputs, target: int | Tensor | None = None, *, rules: str = "chefer"
) -> Tensor:
    """``mean_h max(0, R^A_L)``: the LRP relevance of the last attention map (Voita et al. 2019)."""
    _, attn_relevances, _ = _propagate(model, inputs, target, rules)
    return read_off(model, attn_relevances[-1].clamp(min=0).mean(dim=1), inputs)


def full_lrp(model: nn.Module, inputs: Inputs, target: int | Tensor | None = None, *, rules: str = "chefer") -> Tensor:
    """LRP down to the input pixels, summed over colour channels: ``[B, H, W]`` (not tokens)."""
    input_relevance, _, _ = _propagate(model, inputs, target, rules, to_input=True)
    return input_relevance.sum(dim=1)


__all__ = ["RULE_SETS", "full_lrp", "lrp_rollout", "partial_lrp", "transformer_attribution"]
