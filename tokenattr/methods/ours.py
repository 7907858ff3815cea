"""The paper's method (Chen et al., TMLR 2022): attention perception times reasoning feedback.

    M = W ⊙ R,   R = Π_l (I + Â_l)  (later blocks on the left),   relevance = read-off of M

* attention perception, head-wise (Ours-H):  Â_l = Σ_h w̃_lh A_lh,  w_lh = mean_ij |(A_lhᵀ G_lh)_ij|,
  w̃ = w / Σ_h w, with G_lh = ∂y_c/∂A_lh (spec §3.2);
* attention perception, token-wise (Ours-T): Â_l = mean_h(A_l) · diag(m_l),  m_lj = ‖v_j W_oᵀ‖ / ‖x_lj‖
  (spec §3.3), gradient-free;
* reasoning feedback: W = mean_h max(0, (1/K) Σ_k ∂y_c/∂A_L(α_k x)), α = linspace(0, 1, K) (spec §3.1).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.layers import record
from .common import (
    Inputs,
    attention_gradients,
    drop_padded_keys,
    included_layers,
    read_off,
    recorded_forward,
    residual_rollout,
    target_score,
)


def reasoning_feedback(
    model: nn.Module, inputs: Inputs, target: Tensor, steps: int = 20, internal_batch_size: int = 64
) -> Tensor:
    """The path-averaged, clamped, head-averaged gradient of the last attention map: ``W [B, N, N]``.

    The ``B × steps`` scaled inputs run as batched forwards of at most ``internal_batch_size`` items;
    autograd runs only through the last block, and back only to its attention map.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(internal_batch_size, int) or internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be a positive int, got {internal_batch_size!r}")
    last = model.depth - 1
    batch = target.shape[0]
    device = target.device
    alphas = torch.linspace(0, 1, steps, dtype=torch.float64, device=device).float()
    grad_sum = None
    for start in range(0, batch * steps, internal_batch_size):
        flat = torch.arange(start, min(start + internal_batch_size, batch * steps), device=device)
        sample, step = flat // steps, flat % steps
        chunk = {name: value[sample] for name, value in inputs.items()}
        with record(model, [last], differentiable=True) as records:
            logits = model(**chunk, input_scale=alphas[step])
        (grad,) = torch.autograd.grad(target_score(logits, target[sample]), records[last].attn_probs)
        if grad_sum is None:
            grad_sum = grad.new_zeros((batch, *grad.shape[1:]))
        grad_sum.index_add_(0, sample, grad)
    return (grad_sum / steps).clamp(min=0).mean(dim=1)


def head_weights(attn_probs: Tensor, attn_grad: Tensor) -> Tensor:
    """Ours-H head weights ``[B, H]``: mean |Aᵀ G| per head, normalised to sum to 1 over the heads."""
    weights = (attn_probs.transpose(-1, -2) @ attn_grad).abs().mean(dim=(-1, -2))
    # A layer whose gradient vanishes everywhere contributes nothing instead of 0/0.
    return weights / weights.sum(dim=1, keepdim=True).clamp(min=torch.finfo(weights.dtype).tiny)


def ours_head_wise(
    model: nn.Module,
    inputs: Inputs,
    target: int | Tensor | None = None,
    *,
    start_layer: int,
    steps: int = 20,
    internal_batch_size: int = 64,
    ignore_padding: bool = True,
) -> Tensor:
    """Ours-H: head-wise attention perception ⊙ reasoning feedback.

    ``ignore_padding`` leaves the gradient at padded keys out of the head weights, so that a padded sequence
    gets what it gets alone; ``False`` keeps it, as the original does.
    """
    layers = included_layers(model, start_layer)
    records, target, score, _ = recorded_forward(model, inputs, target, layers, differentiable=True)
    grads = attention_gradients(records, layers, score)
    transitions = []
    for layer, grad in zip(layers, grads):
        if ignore_padding:
            grad = drop_padded_keys(grad, inputs)
        attn_probs = records[layer].attn_probs.detach()
        weights = head_weights(attn_probs, grad)
        transitions.append(torch.einsum("bh,bhij->bij", weights, attn_probs))
    rollout = residual_rollout(transitions)
    feedback = reasoning_feedback(model, inputs, target, steps, internal_batch_size)
    return read_off(model, feedback * rollout, inputs)


def ours_token_wise(
    model: nn.Module,
    inputs: Inputs,
    target: int | Tensor | None = None,
    *,
    start_layer: int,
    steps: int = 20,
    internal_batch_size: int = 64,
    abs_rollout: bool = False,
) -> Tensor:
    """Ours-T: token-wise attention perception ⊙ reasoning feedback. ``abs_rollout`` uses |R| (ViT default)."""
    layers = included_layers(model, start_layer)
    records, target, _, _ = recorded_forward(model, inputs, target, layers, value_proj=True)
    transitions = []
    for layer in layers:
        rec = records[layer]
        token_ratio = rec.value_proj.norm(dim=-1) / rec.block_input.norm(dim=-1)  # [B, N]
        transitions.append(rec.attn_probs.mean(dim=1) * token_ratio[:, None, :])  # scales column j by m_j
    rollout = residual_rollout(transitions)
    if abs_rollout:
        rollout = rollout.abs()
    feedback = reasoning_feedback(model, inputs, target, steps, internal_batch_size)
    return read_off(model, feedback * rollout, inputs)
