"""What every method shares: targets, included blocks, one recorded forward pass, and the read-off.

Conventions (DESIGN §4), written once here:
* ``target`` — ``None`` (the predicted class of the unscaled input), an ``int`` for the whole batch, or a
  ``LongTensor [B]``. The explained score is the raw logit of that class.
* ``start_layer`` — 0-based index of the first block a method includes; blocks ``start_layer..L-1`` are used.
* output — raw token relevance ``[B, N_tokens - prefix]``, read off a token matrix at the pooled row(s).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..models.layers import BlockRecord, record

Inputs = Mapping[str, Tensor]


def resolve_target(target: int | Tensor | None, logits: Tensor) -> Tensor:
    """The explained class per sample as a ``LongTensor [B]``."""
    batch, num_classes = logits.shape
    if target is None:
        return logits.detach().argmax(dim=-1)
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise TypeError(f"target must be None, an int or a LongTensor [B], got {type(target).__name__}")
    if isinstance(target, int):
        target = torch.full((batch,), target, dtype=torch.long, device=logits.device)
    elif target.dtype != torch.long or target.shape != (batch,):
        raise ValueError(
            f"a target tensor must be a LongTensor of shape [{batch}], got {target.dtype} {tuple(target.shape)}"
        )
    target = target.to(logits.device)
    if target.min() < 0 or target.max() >= num_classes:
        raise ValueError(f"target {target.tolist()} out of range: the model has {num_classes} classes")
    return target


def target_score(logits: Tensor, target: Tensor) -> Tensor:
    """Sum over the batch of each sample's target logit: one backward pass gives every sample's gradient."""
    return logits.gather(1, target[:, None]).sum()


def included_layers(model: nn.Module, start_layer: int) -> list[int]:
    depth = model.depth
    if not isinstance(start_layer, int) or not 0 <= start_layer < depth:
        raise ValueError(f"start_layer must be a block index in 0..{depth - 1} (0-based), got {start_layer!r}")
    return list(range(start_layer, depth))


def recorded_forward(
    model: nn.Module,
    inputs: Inputs,
    target: int | Tensor | None,
    layers: list[int],
    *,
    differentiable: bool = False,
    value_proj: bool = False,
    value_proj_from: str = "block-input",
    input_scale: Tensor | None = None,
) -> tuple[dict[int, BlockRecord], Tensor, Tensor, Tensor]:
    """Run the model once, recording ``layers``. Returns ``(records, target [B], score, logits)``.

    ``score`` is the summed target logit, differentiable w.r.t. the recorded maps when ``differentiable``;
    otherwise the pass runs without autograd.
    """
    with (
        torch.set_grad_enabled(differentiable),
        record(
            model, layers, differentiable=differentiable, value_proj=value_proj, value_proj_from=value_proj_from
        ) as records,
    ):
        logits = model(**inputs, input_scale=input_scale)
    target = resolve_target(target, logits)
    return records, target, target_score(logits, target), logits


def attention_gradients(records: dict[int, BlockRecord], layers: list[int], score: Tensor) -> list[Tensor]:
    """``∂score/∂A_l`` ``[B, H, N, N]`` for each layer, in one backward pass."""
    return list(torch.autograd.grad(score, [records[layer].attn_probs for layer in layers]))


def identity_like(matrices: Tensor) -> Tensor:
    """``I_N`` repeated over the batch, ``[B, N, N]``, for matrices ``[B, ..., N, N]``."""
    batch, tokens = matrices.shape[0], matrices.shape[-1]
    eye = torch.eye(tokens, dtype=matrices.dtype, device=matrices.device)
    return eye.expand(batch, tokens, tokens).clone()


def padding_mask(inputs: Inputs) -> Tensor | None:
    """``[B, N]`` 1 for real tokens and 0 for padding, or ``None`` when the inputs have no padding mask."""
    mask = inputs.get("attention_mask")
    return None if mask is None else mask.to(torch.bool)


def drop_padded_keys(attn_grad: Tensor, inputs: Inputs) -> Tensor:
    """``∂y/∂A`` ``[B, H, N, N]`` with the columns of padded keys zeroed.

    Their attention is forced to 0 by the mask, yet its gradient is not 0: left in, it makes a padded
    sequence's head weights differ from those of the same sequence alone (the original does this).
    """
    mask = padding_mask(inputs)
    return attn_grad if mask is None else attn_grad * mask[:, None, None, :]


@torch.no_grad()
def residual_rollout(transitions: list[Tensor], normalise_rows: bool = False) -> Tensor:
    """``R = Π_l (I + T_l)`` over per-block ``[B, N, N]`` matrices, later blocks on the left.

    The identity stands for the residual connection; no row normalisation (spec §3.1 step 2) unless
    ``normalise_rows``, which divides each ``I + T_l`` by its row sums (attention rollout; the original's BERT
    transformer attribution).
    """
    rollout = identity_like(transitions[0])
    for transition in transitions:
        if normalise_rows:
            step = transition + identity_like(transition)
            rollout = (step / step.sum(dim=-1, keepdim=True)) @ rollout
        else:
            rollout = rollout + transition @ rollout
    return rollout


def pooled_row(model: nn.Module, matrix: Tensor, inputs: Inputs) -> Tensor:
    """The row ``[..., N]`` of a ``[..., N, N]`` matrix at the token(s) the prediction is made from, combined as
    the classifier combines them (``model.pooling``; spec §3.4):

    * ``"cls"``: the class token's row;
    * ``"mean"``: the mean of the patch rows (MAE pools all of them);
    * ``"cls+dist"``: the mean of the class- and distillation-token rows (DeiT averages the logits of their heads);
    * ``"cls+mean"``: the class row plus the mean of the patch rows (DINO's linear head adds a term from each);
    * ``"eot"``: each sequence's end-of-text row (CLIP's text tower; ``model.end_positions(inputs)``).
    """
    pooling = model.pooling
    if pooling == "cls":
        return matrix[..., 0, :]
    if pooling == "eot":
        rows = model.end_positions(inputs).view(-1, *[1] * (matrix.dim() - 2))  # [B, 1, (1)]
        index = rows.expand(*matrix.shape[:-2], 1)[..., None].expand(*matrix.shape[:-2], 1, matrix.shape[-1])
        return matrix.gather(-2, index).squeeze(-2)
    if pooling == "cls+dist":
        return matrix[..., :2, :].mean(dim=-2)
    patch_mean = matrix[..., model.num_prefix_tokens :, :].mean(dim=-2)
    if pooling == "mean":
        return patch_mean
    if pooling == "cls+mean":
        return matrix[..., 0, :] + patch_mean
    raise ValueError(
        f"unknown pooling {pooling!r} of {type(model).__name__}; expected cls, mean, cls+dist, cls+mean or eot"
    )


def read_off(model: nn.Module, token_matrix: Tensor, inputs: Inputs) -> Tensor:
    """Token relevance from a ``[B, N, N]`` matrix (rows: queries, columns: keys), read at the pooled row
    (DESIGN §4, read-off).

    Image models return the non-prefix tokens ``[B, N - prefix]``; text models (``keeps_prefix_positions``)
    return every position ``[B, N]`` with the prefix ([CLS]) and padding set to 0, so that positions line up
    with ``input_ids`` (a text pooled at its end-of-text token, CLIP's, has that token set to 0 too).
    """
    prefix = model.num_prefix_tokens
    row = pooled_row(model, token_matrix, inputs)
    if not getattr(model, "keeps_prefix_positions", False):
        return row[:, prefix:]
    row = row.clone()
    row[:, :prefix] = 0
    if model.pooling == "eot":  # the pooled token itself, as the class token of image models
        row[torch.arange(row.shape[0], device=row.device), model.end_positions(inputs)] = 0
    mask = padding_mask(inputs)
    return row if mask is None else row * mask
