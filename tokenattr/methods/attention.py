"""Baselines that read only attention maps and their gradients (spec §4.1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .common import (
    Inputs,
    attention_gradients,
    included_layers,
    padding_mask,
    pooled_row,
    read_off,
    recorded_forward,
    residual_rollout,
)


def raw_attention(model: nn.Module, inputs: Inputs, target: int | Tensor | None = None) -> Tensor:
    """Last-block attention averaged over heads, read off at the pooled row(s). ``target`` is unused by design."""
    last = model.depth - 1
    records, _, _, _ = recorded_forward(model, inputs, target, [last])
    return read_off(model, records[last].attn_probs.mean(dim=1), inputs).clamp(min=0)


def rollout(model: nn.Module, inputs: Inputs, target: int | Tensor | None = None, *, start_layer: int) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``J = Π_l rownorm(mean_h A_l + I)`` from ``start_layer`` on."""
    layers = included_layers(model, start_layer)
    records, _, _, _ = recorded_forward(model, inputs, target, layers)
    transitions = [records[layer].attn_probs.mean(dim=1) for layer in layers]
    return read_off(model, residual_rollout(transitions, normalise_rows=True), inputs)


GRADIENT_POOLS = ("read-off", "all")


def attention_gradcam(
    model: nn.Module,
    inputs: Inputs,
    target: int | Tensor | None = None,
    *,
    gradient_pool: str = "read-off",
    ignore_padding: bool = True,
) -> Tensor:
    """Grad-CAM on the last attention map (Chefer et al. CVPR'21 baseline): ``max(0, mean_h g_h · A_h)`` with
    ``g_h`` the mean gradient of head h.

    ``gradient_pool`` says over which entries ``g_h`` is averaged: ``"read-off"``, the pooled row's non-prefix
    keys (the original's ViT code), or ``"all"``, the whole map (its BERT code). ``ignore_padding`` leaves
    padded positions out of that mean, so a padded sequence gets what it gets alone; ``False`` keeps them, as
    the original does.
    """
    if gradient_pool not in GRADIENT_POOLS:
        raise ValueError(f"gradient_pool must be one of {', '.join(GRADIENT_POOLS)}, got {gradient_pool!r}")
    last = model.depth - 1
    records, _, score, _ = recorded_forward(model, inputs, target, [last], differentiable=True)
    (grad,) = attention_gradients(records, [last], score)
    attn_probs = records[last].attn_probs.detach()
    batch, _, tokens, _ = grad.shape
    real = padding_mask(inputs) if ignore_padding else None
    real = torch.ones(batch, tokens, dtype=grad.dtype, device=grad.device) if real is None else real.to(grad.dtype)
    if gradient_pool == "read-off":
        keys = real.clone()
        keys[:, : model.num_prefix_tokens] = 0
        head_grad = (pooled_row(model, grad) * keys[:, None]).sum(dim=-1) / keys.sum(dim=-1, keepdim=True)
    else:
        entries = real[:, :, None] * real[:, None, :]  # [B, N, N]
        head_grad = (grad * entries[:, None]).sum(dim=(-1, -2)) / entries.sum(dim=(-1, -2))[:, None]
    weighted = (attn_probs * head_grad[:, :, None, None]).mean(dim=1)
    return read_off(model, weighted, inputs).clamp(min=0)


def generic_attribution(
    model: nn.Module,
    inputs: Inputs,
    target: int | Tensor | None = None,
    *,
    start_layer: int,
    clamp_first: bool = True,
) -> Tensor:
    """Generic attention-model explainability (Chefer et al. ICCV'21): ``R = Π_l (I + Ē_l)``,
    ``Ē_l = mean_h max(0, G_l ⊙ A_l)``.

    ``clamp_first=False`` averages over heads before clamping, as the original's ViT code does (spec §9.18);
    its BERT and CLIP code, and Chefer's paper, clamp first.
    """
    layers = included_layers(model, start_layer)
    records, _, score, _ = recorded_forward(model, inputs, target, layers, differentiable=True)
    grads = attention_gradients(records, layers, score)
    transitions = []
    for layer, grad in zip(layers, grads):
        weighted = grad * records[layer].attn_probs.detach()
        transitions.append(weighted.clamp(min=0).mean(dim=1) if clamp_first else weighted.mean(dim=1).clamp(min=0))
    return read_off(model, residual_rollout(transitions), inputs)
