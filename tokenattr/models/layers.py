"""The transformer core every family is built from, and the recording that attribution methods read.

One attention, one MLP and one block serve ViT, BERT and CLIP; the differences between families are
constructor options (pre- or post-LayerNorm, activation, epsilon), never copies (DESIGN §3).

Recording (DESIGN §3, "capture, don't fork"): inside ``with record(model, ...) as records:`` each chosen
block stores a :class:`BlockRecord` — its attention probabilities, its input and, on request, its value
projection. Outside that context nothing is stored and attention takes PyTorch's fused kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lrp import CHEFER_RULES, LRPRules, add_relprop, linear_relprop, matmul_relprop


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"unknown activation {name!r}; expected one of 'gelu', 'quick_gelu'")


VALUE_PROJ_SOURCES = ("block-input", "after-attention")


@dataclass
class BlockRecord:
    """What one block recorded in a forward pass. Tensors are the ones the forward computed (no copies).

    Attributes:
        keep_value_proj, differentiable: what the encoder asks of this block (see :func:`record`).
        attn_probs: ``[B, H, N, N]`` softmax attention, rows are queries and sum to 1. When the recording is
            ``differentiable`` it is part of the autograd graph, so ``torch.autograd.grad(score, attn_probs)``
            gives the gradient a method reads.
        block_input: ``[B, N, D]`` the residual stream entering the block (pre-LN: before the first norm;
            post-LN: the previous block's normalised output).
        value_proj: ``[B, N, D]`` ``v W_o^T`` — each token's value vector (heads concatenated, value bias
            included) through the output projection, without the output bias; ``None`` unless requested.
        value_proj_from: the state the value projection is computed from: ``"block-input"`` (the attention's own
            input) or ``"after-attention"`` (the attention's input recomputed from the state after the attention
            residual — what the original CLIP code does by mistake, spec §9.13; kept to reproduce it).
        attn_scale: ``[B]`` or ``None``: when set, the block uses ``attn_scale · A`` in place of its softmax
            attention ``A``, and ``attn_probs`` is that scaled map (see :func:`record`).
    """

    keep_value_proj: bool = False
    differentiable: bool = False
    attn_scale: Tensor | None = None
    value_proj_from: str = "block-input"
    attn_probs: Tensor | None = None
    block_input: Tensor | None = None
    value_proj: Tensor | None = None


@dataclass
class Recording:
    """Which blocks an :class:`Encoder` records, and the records it made (keyed by 0-based block index)."""

    layers: frozenset[int]
    keep_value_proj: bool = False
    differentiable: bool = False
    attn_scale: Tensor | None = None
    value_proj_from: str = "block-input"
    records: dict[int, BlockRecord] = field(default_factory=dict)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection split as ``(qkv, heads, head_dim)``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Query, key and value, each ``[B, H, N, d]``."""
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def _probs(self, query: Tensor, key: Tensor, attn_mask: Tensor | None) -> Tensor:
        """The explicit softmax attention ``[B, H, N, N]``."""
        scores = (query @ key.transpose(-2, -1)) * self.scale
        if attn_mask is not None:
            scores = scores + attn_mask
        return scores.softmax(dim=-1)

    def _project_values(self, value: Tensor) -> Tensor:
        """``v W_o^T`` ``[B, N, D]`` from the values ``[B, H, N, d]``."""
        return self._merge_heads(value) @ self.proj.weight.T

    def value_projection(self, x: Tensor) -> Tensor:
        """``v W_o^T`` ``[B, N, D]`` of the attention input ``x``."""
        return self._project_values(self._heads(x)[2])

    @staticmethod
    def _merge_heads(per_head: Tensor) -> Tensor:
        """``[B, H, N, d]`` -> ``[B, N, H*d]``."""
        batch, heads, tokens, head_dim = per_head.shape
        return per_head.transpose(1, 2).reshape(batch, tokens, heads * head_dim)

    def _split_heads(self, merged: Tensor) -> Tensor:
        """``[B, N, H*d]`` -> ``[B, H, N, d]``."""
        batch, tokens, _ = merged.shape
        return merged.reshape(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, record: BlockRecord | None = None) -> Tensor:
        """``x`` ``[B, N, D]``; ``attn_mask`` additive, broadcastable to ``[B, H, N, N]``."""
        query, key, value = self._heads(x)
        if record is None:
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        else:
            attn_probs = self._probs(query, key, attn_mask)  # [B, H, N, N]
            if record.attn_scale is not None:
                attn_probs = attn_probs * record.attn_scale.to(attn_probs).view(-1, 1, 1, 1)
            if record.differentiable and not attn_probs.requires_grad:
                attn_probs.requires_grad_()  # frozen weights: make the map itself a leaf to differentiate
            record.attn_probs = attn_probs
            context = attn_probs @ value
            if record.keep_value_proj and record.value_proj_from == "block-input":
                record.value_proj = self._project_values(value)
        return self.proj(self._merge_heads(context))

    @torch.no_grad()
    def relprop(
        self, x: Tensor, relevance: Tensor, attn_mask: Tensor | None = None, rules: LRPRules = CHEFER_RULES
    ) -> tuple[Tensor, Tensor]:
        """Relevance of the input ``[B, N, D]`` and of the attention map ``R^A`` ``[B, H, N, N]`` (spec §4.1):
        proj → (A·V, halved) → softmax (identity) → (q·kᵀ, halved) → qkv."""
        query, key, value = self._heads(x)
        attn_probs = self._probs(query, key, attn_mask)
        context = self._merge_heads(attn_probs @ value)
        relevance = self._split_heads(linear_relprop(context, self.proj.weight, relevance, rules))
        attn_relevance, value_relevance = matmul_relprop(attn_probs, value, relevance)
        query_relevance, key_relevance = matmul_relprop(query, key.transpose(-2, -1), attn_relevance)
        per_part = (query_relevance, key_relevance.transpose(-2, -1), value_relevance)
        qkv_relevance = torch.cat([self._merge_heads(part) for part in per_part], dim=-1)
        return linear_relprop(x, self.qkv.weight, qkv_relevance, rules), attn_relevance


class MLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    @torch.no_grad()
    def relprop(self, x: Tensor, relevance: Tensor, rules: LRPRules = CHEFER_RULES) -> Tensor:
        """fc2 → activation (identity) → fc1."""
        hidden = self.fc1(x)
        relevance = linear_relprop(self.act(hidden), self.fc2.weight, relevance, rules)
        return linear_relprop(x, self.fc1.weight, relevance, rules)


class Block(nn.Module):
    """One transformer block, pre-LN (ViT, CLIP) or post-LN (BERT).

    pre-LN:  ``y = x + attn(norm1(x));  out = y + mlp(norm2(y))``
    post-LN: ``y = norm1(x + attn(x));  out = norm2(y + mlp(y))``
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        qkv_bias: bool = True,
        norm_first: bool = True,
        eps: float = 1e-6,
        activation: str = "gelu",
    ):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_dim, activation)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, record: BlockRecord | None = None) -> Tensor:
        if record is not None:
            record.block_input = x
        if self.norm_first:
            x = x + self.attn(self.norm1(x), attn_mask, record)
        else:
            x = self.norm1(x + self.attn(x, attn_mask, record))
        if record is not None and record.keep_value_proj and record.value_proj_from == "after-attention":
            record.value_proj = self.attn.value_projection(self.norm1(x) if self.norm_first else x)
        if self.norm_first:
            return x + self.mlp(self.norm2(x))
        return self.norm2(x + self.mlp(x))

    @torch.no_grad()
    def relprop(
        self, x: Tensor, relevance: Tensor, attn_mask: Tensor | None = None, rules: LRPRules = CHEFER_RULES
    ) -> tuple[Tensor, Tensor]:
        """Relevance of the block input ``[B, N, D]`` from that of its output, and ``R^A`` ``[B, H, N, N]``.

        The forward is recomputed from ``x``. LayerNorms pass relevance through unchanged; where the residual
        stream forks, the relevance of both branches is summed.
        """
        attn_input = self.norm1(x) if self.norm_first else x
        # A throwaway record selects the explicit softmax path, whose arithmetic the rules below follow.
        attn_out = self.attn(attn_input, attn_mask, BlockRecord())
        mid = x + attn_out if self.norm_first else self.norm1(x + attn_out)
        mlp_input = self.norm2(mid) if self.norm_first else mid
        skip, branch = add_relprop(mid, self.mlp(mlp_input), relevance, rules)
        relevance = skip + self.mlp.relprop(mlp_input, branch, rules)
        skip, branch = add_relprop(x, attn_out, relevance, rules)
        branch, attn_relevance = self.attn.relprop(attn_input, branch, attn_mask, rules)
        return skip + branch, attn_relevance


class Encoder(nn.Module):
    """A stack of blocks; the one place where recording happens."""

    def __init__(self, blocks: Iterable[Block]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.recording: Recording | None = None

    def forward(self, hidden: Tensor, attn_mask: Tensor | None = None, first_block: int = 0) -> Tensor:
        """Run blocks ``first_block..L-1`` on ``hidden`` (the input of block ``first_block``)."""
        if not isinstance(first_block, int) or not 0 <= first_block < len(self.blocks):
            raise ValueError(f"first_block must be a block index in 0..{len(self.blocks) - 1}, got {first_block!r}")
        recording = self.recording
        for index, block in enumerate(self.blocks):
            if index < first_block:
                continue
            if recording is None:
                hidden = block(hidden, attn_mask)
                continue
            record = None
            if index in recording.layers:
                record = BlockRecord(
                    recording.keep_value_proj,
                    recording.differentiable,
                    recording.attn_scale,
                    value_proj_from=recording.value_proj_from,
                )
                recording.records[index] = record
            # Gradients are only taken w.r.t. recorded maps, so earlier blocks need no autograd graph.
            grad_mode = index >= min(recording.layers) if recording.differentiable else torch.is_grad_enabled()
            with torch.set_grad_enabled(grad_mode):
                hidden = block(hidden, attn_mask, record)
        return hidden

    def _check_complete(self, records: Mapping[int, BlockRecord]) -> None:
        missing = [index for index in range(len(self.blocks)) if index not in records]
        if missing:
            raise ValueError(f"relprop needs the input of every block; blocks {missing} were not recorded")

    @torch.no_grad()
    def output_from_records(self, records: Mapping[int, BlockRecord], attn_mask: Tensor | None = None) -> Tensor:
        """The encoder's output, recomputed from the last block's recorded input on the explicit-softmax path
        that relevance propagation follows."""
        self._check_complete(records)
        last = len(self.blocks) - 1
        return self.blocks[last](records[last].block_input, attn_mask, BlockRecord())

    @torch.no_grad()
    def relprop(
        self,
        records: Mapping[int, BlockRecord],
        relevance: Tensor,
        attn_mask: Tensor | None = None,
        rules: LRPRules = CHEFER_RULES,
    ) -> tuple[Tensor, list[Tensor]]:
        """Relevance of the encoder input ``[B, N, D]`` from that of its output, and every block's ``R^A``
        ``[B, H, N, N]``, first block first. ``records`` must hold every block's input of the same forward."""
        self._check_complete(records)
        attn_relevances = []
        for index in reversed(range(len(self.blocks))):
            block_input = records[index].block_input
            relevance, attn_relevance = self.blocks[index].relprop(block_input, relevance, attn_mask, rules)
            attn_relevances.insert(0, attn_relevance)
        return relevance, attn_relevances


def _encoder_of(model: nn.Module) -> Encoder:
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, Encoder):
        raise TypeError(
            f"{type(model).__name__} has no tokenattr Encoder at `.encoder`; load models with tokenattr.load_model()"
        )
    return encoder


@contextmanager
def record(
    model: nn.Module,
    layers: Iterable[int] | None = None,
    *,
    value_proj: bool = False,
    differentiable: bool = False,
    attn_scale: Tensor | None = None,
    value_proj_from: str = "block-input",
) -> Iterator[dict[int, BlockRecord]]:
    """Record the given blocks (0-based, negative counts from the end; default all) during forward passes.

    Yields a dict ``{block index: BlockRecord}`` that fills as the model runs. With ``differentiable=True``
    the recorded attention maps are in the autograd graph and blocks before the first recorded one run
    without autograd: only gradients w.r.t. the recorded maps are meant to be taken. ``attn_scale`` ``[B]``
    multiplies each sample's attention maps in the recorded blocks, ``A -> attn_scale · A``, before the block
    uses them (and before they are recorded): the path along which the cheap reasoning feedback integrates.
    ``value_proj_from`` says which state the recorded value projection comes from (see :class:`BlockRecord`).
    The model is left exactly as it was on exit, also after an error.
    """
    encoder = _encoder_of(model)
    depth = len(encoder.blocks)
    chosen = range(depth) if layers is None else list(layers)
    normalised = set()
    for layer in chosen:
        if not -depth <= layer < depth:
            raise ValueError(f"layer {layer} does not exist: the model has {depth} blocks (0..{depth - 1})")
        normalised.add(layer % depth)
    if not normalised:
        raise ValueError("record() needs at least one layer")
    if differentiable and not torch.is_grad_enabled():
        raise RuntimeError("a differentiable recording needs grad mode; it was called under torch.no_grad()")
    if encoder.recording is not None:
        raise RuntimeError("this model is already recording; recordings do not nest")
    if attn_scale is not None and (not isinstance(attn_scale, Tensor) or attn_scale.dim() != 1):
        got = tuple(attn_scale.shape) if isinstance(attn_scale, Tensor) else type(attn_scale).__name__
        raise ValueError(f"attn_scale must be a tensor [B] (one factor per sample), got {got}")
    if value_proj_from not in VALUE_PROJ_SOURCES:
        raise ValueError(f"value_proj_from must be one of {', '.join(VALUE_PROJ_SOURCES)}, got {value_proj_from!r}")
    encoder.recording = Recording(frozenset(normalised), value_proj, differentiable, attn_scale, value_proj_from)
    try:
        yield encoder.recording.records
    finally:
        encoder.recording = None
