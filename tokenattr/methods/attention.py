"""Baselines that read only attention maps and their gradients (spec §4.1)."""

from __future__ import annotations

from torch import Tensor, nn

from .common import (
    Inputs,
    attention_gradients,
    identity_like,
    included_layers,
    read_off,
    recorded_forward,
    residual_rollout,
)


def raw_attention(model: nn.Module, inputs: Inputs, target: int | Tensor | None = None) -> Tensor:
    """Last-block attention averaged over heads, read off at the pooled row(s). ``target`` is unused by design."""
    last = model.depth - 1
    records, _, _, _ = recorded_forward(model, inputs, target, [last])
    return read_off(model, records[last].attn_probs.mean(dim=1)).clamp(min=0)


def rollout(model: nn.Module, inputs: Inputs, target: int | Tensor | None = None, *, start_layer: int) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``J = Π_l rownorm(mean_h A_l + I)`` from ``start_layer`` on."""
    layers = included_layers(model, start_layer)
    records, _, _, _ = recorded_forward(model, inputs, target, layers)
    joint = None
    for layer in layers:
        attn = records[layer].attn_probs.mean(dim=1)  # [B, N, N]
        attn = attn + identity_like(attn)
        attn = attn / attn.sum(dim=-1, keepdim=True)
        joint = attn if joint is None else attn @ joint
    return read_off(model, joint)


def attention_gradcam(model: nn.Module, inputs: Inputs, target: int | Tensor | None = None) -> Tensor:
    """Grad-CAM on the last attention map: ``max(0, mean_h g_h · A_h)`` with ``g_h`` the mean gradient of head h
    over the read-off entries (Chefer et al. CVPR'21 baseline)."""
    last = model.depth - 1
    records, _, score, _ = recorded_forward(model, inputs, target, [last], differentiable=True)
    (grad,) = attention_gradients(records, [last], score)
    attn_probs = records[last].attn_probs.detach()
    batch, heads, tokens, _ = grad.shape
    head_grad = read_off(model, grad.reshape(batch * heads, tokens, tokens)).reshape(batch, heads, -1).mean(dim=-1)
    weighted = (attn_probs * head_grad[:, :, None, None]).mean(dim=1)
    return read_off(model, weighted).clamp(min=0)


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
    return read_off(model, residual_rollout(transitions))
