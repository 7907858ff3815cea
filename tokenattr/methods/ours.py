"""The paper's method (Chen et al., TMLR 2022): attention perception times reasoning feedback.

    M = W ⊙ R,   R = Π_l (I + Â_l)  (later blocks on the left),   relevance = read-off of M

* attention perception, head-wise (Ours-H):  Â_l = Σ_h w̃_lh A_lh,  w_lh = mean_ij |(A_lhᵀ G_lh)_ij|,
  w̃ = w / Σ_h w, with G_lh = ∂y_c/∂A_lh (spec §3.2);
* attention perception, token-wise (Ours-T): Â_l = mean_h(A_l) · diag(m_l),  m_lj = ‖v_j W_oᵀ‖ / ‖x_lj‖
  (spec §3.3), gradient-free;
* reasoning feedback: W = mean_h max(0, (1/K) Σ_k ∂y_c/∂A_L(α_k x)), α = linspace(0, 1, K) (spec §3.1); or,
  cheaper (``feedback_path="last-attention"``, not the paper's), the same average along A_L -> α_k A_L.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.layers import BlockRecord, record
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

FEEDBACK_PATHS = {
    "input": "the original (spec §3.1): scale the input, x -> α x; the whole model runs for every step",
    "last-attention": (
        "scale the last attention map, A_L -> α A_L; only the last block and the head run for every step, "
        "from the last block's recorded input"
    ),
}


def reasoning_feedback(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor,
    steps: int = 20,
    internal_batch_size: int = 64,
    feedback_path: str = "input",
    last_block_input: Tensor | None = None,
) -> Tensor:
    """The path-averaged, clamped, head-averaged gradient of the last attention map: ``W [B, N, N]``.

    ``W = mean_h max(0, (1/K) Σ_k ∂y_c/∂A_L |_(path point α_k))``, ``α = linspace(0, 1, K)``, ``K = steps``.
    ``feedback_path`` (:data:`FEEDBACK_PATHS`) chooses the path: ``"input"`` scales the input (the original);
    ``"last-attention"`` keeps the input and scales the last block's attention map itself, so that each step
    re-runs only the last block and the head, from ``last_block_input`` ``[B, N, D]`` (the input of the last
    block in a forward pass of ``inputs``; computed here when ``None``).

    Memory bound: the ``B × steps`` path points run in chunks of at most ``internal_batch_size`` items, whatever
    ``B`` and ``steps`` are. On the input path blocks before the last run without autograd, so a chunk holds
    the autograd graph of the last block and the head for ``internal_batch_size`` items plus one block's
    transient activations: with the default 64, less than one plain forward+backward of a batch of 16
    (``benchmarks/`` measures it). Chunking does not change the result.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(internal_batch_size, int) or isinstance(internal_batch_size, bool) or internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be a positive int, got {internal_batch_size!r}")
    if feedback_path not in FEEDBACK_PATHS:
        raise ValueError(f"feedback_path must be one of {', '.join(map(repr, FEEDBACK_PATHS))}; got {feedback_path!r}")
    last = model.depth - 1
    if feedback_path == "input" and last_block_input is not None:
        raise ValueError("last_block_input is read only by feedback_path='last-attention'")
    if feedback_path == "last-attention" and last_block_input is None:
        records, _, _, _ = recorded_forward(model, inputs, target, [last])
        last_block_input = records[last].block_input
    batch = target.shape[0]
    device = target.device
    alphas = torch.linspace(0, 1, steps, dtype=torch.float64, device=device).float()
    grad_sum = None
    for start in range(0, batch * steps, internal_batch_size):
        flat = torch.arange(start, min(start + internal_batch_size, batch * steps), device=device)
        sample, step = flat // steps, flat % steps
        chunk = {name: value[sample] for name, value in inputs.items()}
        if feedback_path == "input":
            with record(model, [last], differentiable=True) as records:
                logits = model(**chunk, input_scale=alphas[step])
        else:
            with record(model, [last], differentiable=True, attn_scale=alphas[step]) as records:
                logits = model.logits_from_block(last_block_input[sample].detach(), last, chunk)
        (grad,) = torch.autograd.grad(target_score(logits, target[sample]), records[last].attn_probs)
        if grad_sum is None:
            grad_sum = grad.new_zeros((batch, *grad.shape[1:]))
        grad_sum.index_add_(0, sample, grad)
    return (grad_sum / steps).clamp(min=0).mean(dim=1)


def _feedback_from_records(
    model: nn.Module,
    inputs: Inputs,
    target: Tensor,
    records: dict[int, BlockRecord],
    steps: int,
    internal_batch_size: int,
    feedback_path: str,
) -> Tensor:
    """:func:`reasoning_feedback`, reusing the last block's input from the method's own recorded forward."""
    last_block_input = records[model.depth - 1].block_input if feedback_path == "last-attention" else None
    return reasoning_feedback(model, inputs, target, steps, internal_batch_size, feedback_path, last_block_input)


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
    feedback_path: str = "input",
    ignore_padding: bool = True,
) -> Tensor:
    """Ours-H: head-wise attention perception ⊙ reasoning feedback.

    ``steps``, ``internal_batch_size`` and ``feedback_path``: see :func:`reasoning_feedback`.
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
    feedback = _feedback_from_records(model, inputs, target, records, steps, internal_batch_size, feedback_path)
    return read_off(model, feedback * rollout, inputs)


def ours_token_wise(
    model: nn.Module,
    inputs: Inputs,
    target: int | Tensor | None = None,
    *,
    start_layer: int,
    steps: int = 20,
    internal_batch_size: int = 64,
    feedback_path: str = "input",
    abs_rollout: bool = False,
    value_proj_from: str = "block-input",
) -> Tensor:
    """Ours-T: token-wise attention perception ⊙ reasoning feedback. ``abs_rollout`` uses |R| (ViT default);
    ``steps``, ``internal_batch_size`` and ``feedback_path``: see :func:`reasoning_feedback`.
    ``value_proj_from="after-attention"`` reproduces the original CLIP code, which computes ``m_l`` from the
    state after the attention residual (spec §9.13); the default uses the attention's own input."""
    layers = included_layers(model, start_layer)
    records, target, _, _ = recorded_forward(
        model, inputs, target, layers, value_proj=True, value_proj_from=value_proj_from
    )
    transitions = []
    for layer in layers:
        rec = records[layer]
        token_ratio = rec.value_proj.norm(dim=-1) / rec.block_input.norm(dim=-1)  # [B, N]
        transitions.append(rec.attn_probs.mean(dim=1) * token_ratio[:, None, :])  # scales column j by m_j
    rollout = residual_rollout(transitions)
    if abs_rollout:
        rollout = rollout.abs()
    feedback = _feedback_from_records(model, inputs, target, records, steps, internal_batch_size, feedback_path)
    return read_off(model, feedback * rollout, inputs)
