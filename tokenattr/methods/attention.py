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

MAE_READ_OFFS = ("pooled", "row-mean")


def _check_mae_read_off(model: nn.Module, mae_read_off: str) -> bool:
    """Whether to use the original's read-off on a mean-pooled model (``mae_read_off="row-mean"``)."""
    if mae_read_off not in MAE_READ_OFFS:
        raise ValueError(f"mae_read_off must be one of {', '.join(MAE_READ_OFFS)}, got {mae_read_off!r}")
    if mae_read_off == "row-mean" and model.pooling != "mean":
        raise ValueError(
            f"mae_read_off='row-mean' reads mean-pooled (MAE) models; this {type(model).__name__} pools by "
            f"{model.pooling!r}"
        )
    return mae_read_off == "row-mean"


def _patch_row_means(model: nn.Module, per_head: Tensor) -> Tensor:
    """``[B, H, N, N] -> [B, N - prefix]``: each patch query row averaged over the heads and the patch keys (the
    original's MAE read-off, indexed by the query)."""
    prefix = model.num_prefix_tokens
    return per_head[:, :, prefix:, prefix:].mean(dim=(1, 3))


def raw_attention(
    model: nn.Module, inputs: Inputs, target: int | Tensor | None = None, *, mae_read_off: str = "pooled"
) -> Tensor:
    """Last-block attention averaged over heads, read off at the pooled row(s). ``target`` is unused by design.

    ``mae_read_off="row-mean"`` (mean-pooled models only) gives patch i the mean of its own query row over the
    patch keys instead, as the original does for MAE (``generate_attn(mae=True)``, DESIGN §4 read-off): a
    near-constant map, kept for reproduction.
    """
    row_mean = _check_mae_read_off(model, mae_read_off)
    last = model.depth - 1
    records, _, _, _ = recorded_forward(model, inputs, target, [last])
    attn_probs = records[last].attn_probs  # [B, H, N, N]
    if row_mean:
        return _patch_row_means(model, attn_probs).clamp(min=0)
    return read_off(model, attn_probs.mean(dim=1), inputs).clamp(min=0)


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
    mae_read_off: str = "pooled",
) -> Tensor:
    """Grad-CAM on the last attention map (Chefer et al. CVPR'21 baseline): ``max(0, mean_h g_h · A_h)`` with
    ``g_h`` the mean gradient of head h.

    ``gradient_pool`` says over which entries ``g_h`` is averaged: ``"read-off"``, the pooled row's non-prefix
    keys (the original's ViT code), or ``"all"``, the whole map (its BERT code). ``ignore_padding`` leaves
    padded positions out of that mean, so a padded sequence gets what it gets alone; ``False`` keeps them, as
    the original does.

    ``mae_read_off="row-mean"`` (mean-pooled models, ``gradient_pool="read-off"``) follows the original's MAE
    branch (``generate_cam_attn(mae=True)``): over the patch block, the gradient is averaged per query row
    (over heads and keys), ``g_i = mean_{h,j} G_{hij}``, and patch i gets ``max(0, g_i · mean_{h,j} A_{hij})``.
    Where every value is ≤ 0 the map is all zeros (the original divides 0 by 0 there, spec §9.22).
    """
    if gradient_pool not in GRADIENT_POOLS:
        raise ValueError(f"gradient_pool must be one of {', '.join(GRADIENT_POOLS)}, got {gradient_pool!r}")
    row_mean = _check_mae_read_off(model, mae_read_off)
    if row_mean and gradient_pool != "read-off":
        raise ValueError("mae_read_off='row-mean' pools the gradient per query row; it takes gradient_pool='read-off'")
    last = model.depth - 1
    records, _, score, _ = recorded_forward(model, inputs, target, [last], differentiable=True)
    (grad,) = attention_gradients(records, [last], score)
    attn_probs = records[last].attn_probs.detach()
    if row_mean:
        return (_patch_row_means(model, grad) * _patch_row_means(model, attn_probs)).clamp(min=0)
    batch, _, tokens, _ = grad.shape
    real = padding_mask(inputs) if ignore_padding else None
    real = torch.ones(batch, tokens, dtype=grad.dtype, device=grad.device) if real is None else real.to(grad.dtype)
    if gradient_pool == "read-off":
        keys = real.clone()
        keys[:, : model.num_prefix_tokens] = 0
        head_grad = (pooled_row(model, grad, inputs) * keys[:, None]).sum(dim=-1) / keys.sum(dim=-1, keepdim=True)
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
