"""Vision Transformer (Dosovitskiy et al.): patch embedding, prefix tokens, position embeddings, pre-LN blocks,
pooling, head — and the conversion of timm/JAX-style and Hugging Face checkpoints into it.

One class covers the ViT family the paper uses: ViT-B/L (class token), MAE fine-tuned classifiers (mean of the
patch tokens, then ``fc_norm``), DeiT (class and distillation tokens, two heads averaged) and DINO with its
linear head (class token concatenated with the mean patch token). Our parameter names are timm's, except that
blocks live in the shared encoder (``encoder.blocks.N``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .layers import Block, BlockRecord, Encoder
from .loading import StateDict, load_strict
from .lrp import CHEFER_RULES, LRPRules, add_relprop, conv_zb_relprop, linear_relprop, safe_divide

VIT_B_DEPTH = 12
# First included block (0-based) of each method in the original's ViT-B/16 scripts (DESIGN §4), scaled by
# depth for other models: round(start * depth / 12), so that the same fraction of the depth is left out
# (ViT-L/16, 24 blocks: Ours-H from block 6, Ours-T from 12, rollout and the Chefer methods from 2).
VIT_B_START_LAYERS = {
    "ours-h": 3,
    "ours-t": 6,
    "rollout": 1,
    "generic-attribution": 1,
    "transformer-attribution": 1,
    "lrp-rollout": 1,
}
# How the classifier reads the last block's normalised tokens; ``pooled_row`` (methods/common.py) reads
# relevance off the same rows.
POOLINGS = {
    "cls": "the class token",
    "mean": "the mean of the patch tokens, then fc_norm (MAE)",
    "cls+dist": "the mean of a class-token head and a distillation-token head (DeiT)",
    "cls+mean": "the class token concatenated with the mean of the patch tokens (DINO's linear head)",
}
ORIGINAL_MEAN_STD = (0.5, 0.5, 0.5)  # the JAX ViT's normalisation, which the original uses for every ViT
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what MAE, DeiT and DINO were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    pooling: str = "cls"  # a key of POOLINGS
    distillation_token: bool = False  # DeiT: a second prefix token after the class token
    image_mean: tuple[float, float, float] = ORIGINAL_MEAN_STD  # what inputs are normalised with (not the model)
    image_std: tuple[float, float, float] = ORIGINAL_MEAN_STD
    class_names: list[str] | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.pooling == "cls+dist" and not self.distillation_token:
            raise ValueError("pooling 'cls+dist' needs distillation_token=True")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")


class PatchGrid:
    """The square patch grid of a model whose ``config`` has ``image_size`` and ``patch_size`` (ViT, CLIP's image
    tower)."""

    @property
    def patch_grid(self) -> tuple[int, int]:
        side = self.config.image_size // self.config.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        rows, cols = self.patch_grid
        return rows * cols


class VisionTransformer(PatchGrid, nn.Module):
    """A ViT classifier whose forward returns logits ``[B, num_classes]``.

    ``input_scale`` (``[B]``) multiplies the normalised pixels before the patch embedding: the straight path
    from the all-zero input that reasoning feedback integrates along (spec §3.1).
    """

    family = "vit"
    main_input_name = "pixel_values"

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(config.in_chans, dim, config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.distillation_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + self.num_patches, dim))
        self.encoder = Encoder(
            Block(dim, config.num_heads, config.mlp_dim, qkv_bias=config.qkv_bias, eps=config.layer_norm_eps)
            for _ in range(config.depth)
        )
        pooled_by_mean = config.pooling == "mean"
        self.norm = nn.Identity() if pooled_by_mean else nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.fc_norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if pooled_by_mean else nn.Identity()
        head_features = 2 * dim if config.pooling == "cls+mean" else dim
        self.head = nn.Linear(head_features, config.num_classes)
        self.head_dist = nn.Linear(dim, config.num_classes) if config.pooling == "cls+dist" else None

    @property
    def pooling(self) -> str:
        return self.config.pooling

    @property
    def num_prefix_tokens(self) -> int:
        """The class token, and DeiT's distillation token."""
        return 2 if self.config.distillation_token else 1

    @property
    def depth(self) -> int:
        return self.config.depth

    def method_defaults(self, method: str) -> dict:
        """Per-family keyword defaults of a method (DESIGN §4): ViT-B's start blocks scaled by depth; |R| in Ours-T."""
        defaults = {}
        if method in VIT_B_START_LAYERS:
            scaled = round(VIT_B_START_LAYERS[method] * self.depth / VIT_B_DEPTH)
            defaults["start_layer"] = min(scaled, self.depth - 1)
        if method == "ours-t":
            defaults["abs_rollout"] = True
        return defaults

    def _check_pixels(self, pixel_values: Tensor) -> None:
        expected = (self.config.in_chans, self.config.image_size, self.config.image_size)
        if not isinstance(pixel_values, Tensor) or pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            got = tuple(pixel_values.shape) if isinstance(pixel_values, Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a tensor [B, {', '.join(map(str, expected))}], got {got}")

    def forward(self, pixel_values: Tensor, input_scale: Tensor | None = None) -> Tensor:
        self._check_pixels(pixel_values)
        if input_scale is not None:
            pixel_values = pixel_values * input_scale.to(pixel_values).view(-1, 1, 1, 1)
        hidden = self._tokens(pixel_values) + self.pos_embed  # [B, N, D]
        return self._classify(self.norm(self.encoder(hidden)))

    def logits_from_block(self, hidden: Tensor, first_block: int, inputs: Mapping[str, Tensor]) -> Tensor:
        """Logits ``[B, C]`` from ``hidden`` ``[B, N, D]``, the input of block ``first_block``: the rest of the
        forward pass. ``inputs`` are the model's inputs (unused here: a ViT has no attention mask)."""
        return self._classify(self.norm(self.encoder(hidden, None, first_block)))

    def _tokens(self, pixel_values: Tensor) -> Tensor:
        """The prefix tokens followed by the patch embeddings, before position embeddings: ``[B, N, D]``."""
        patches = self.patch_embed.proj(pixel_values).flatten(2).transpose(1, 2)  # [B, N_patches, D]
        prefix = [token for token in (self.cls_token, self.dist_token) if token is not None]
        return torch.cat([token.expand(patches.shape[0], -1, -1) for token in prefix] + [patches], dim=1)

    def _head_input(self, normed: Tensor) -> Tensor:
        """The features of the (class-token) head, ``[B, D]`` (``[B, 2D]`` for ``cls+mean``)."""
        pooling = self.config.pooling
        if pooling in ("cls", "cls+dist"):
            return normed[:, 0]
        patch_mean = normed[:, self.num_prefix_tokens :].mean(dim=1)
        if pooling == "mean":
            return self.fc_norm(patch_mean)
        return torch.cat([normed[:, 0], patch_mean], dim=-1)  # concatenated, not interleaved (spec §9.16)

    def _classify(self, normed: Tensor) -> Tensor:
        """Logits ``[B, C]`` from the last block's normalised tokens ``[B, N, D]``."""
        logits = self.head(self._head_input(normed))
        if self.head_dist is None:
            return logits
        return (logits + self.head_dist(normed[:, 1])) / 2  # DeiT's inference: the average of its two heads

    @torch.no_grad()
    def relprop(
        self,
        inputs: Mapping[str, Tensor],
        records: Mapping[int, BlockRecord],
        relevance: Tensor,
        rules: LRPRules = CHEFER_RULES,
        to_input: bool = False,
    ) -> tuple[Tensor | None, list[Tensor]]:
        """Propagate ``relevance`` of the logits ``[B, C]`` back through the model (spec §4.1).

        ``records`` must hold every block's input (a recording of all blocks of the same forward). Returns the
        pixel relevance ``[B, C_in, H, W]`` (only with ``to_input``) and each block's attention relevance
        ``R^A`` ``[B, H, N, N]``, first block first. Norms pass relevance through unchanged; DeiT's average of two
        heads gives each head half of the logit relevance (LRP-0 through the average).
        """
        normed = self.norm(self.encoder.output_from_records(records))
        token_relevance = torch.zeros_like(normed)
        prefix, dim = self.num_prefix_tokens, normed.shape[-1]
        if self.head_dist is not None:
            relevance = relevance / 2
            token_relevance[:, 1] = linear_relprop(normed[:, 1], self.head_dist.weight, relevance, rules)
        feature_relevance = linear_relprop(self._head_input(normed), self.head.weight, relevance, rules)
        if self.config.pooling in ("cls", "cls+dist"):
            token_relevance[:, 0] = feature_relevance
        else:
            if self.config.pooling == "cls+mean":
                token_relevance[:, 0], feature_relevance = feature_relevance.split(dim, dim=-1)
            # LRP-0 through the mean; fc_norm passes relevance through
            patches = normed[:, prefix:]
            share = safe_divide(feature_relevance, patches.sum(dim=1))
            token_relevance[:, prefix:] = patches * share[:, None]
        token_relevance, attn_relevances = self.encoder.relprop(records, token_relevance, None, rules)
        if not to_input:
            return None, attn_relevances
        pixel_values = inputs["pixel_values"]
        tokens = self._tokens(pixel_values)
        token_relevance, _ = add_relprop(tokens, self.pos_embed.expand_as(tokens), token_relevance, rules)
        rows, cols = self.patch_grid
        patch_relevance = (
            token_relevance[:, self.num_prefix_tokens :].transpose(1, 2).reshape(-1, tokens.shape[-1], rows, cols)
        )
        proj = self.patch_embed.proj
        return conv_zb_relprop(pixel_values, proj.weight, proj.stride, patch_relevance), attn_relevances


# --- checkpoints -----------------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def is_timm_vit(state: Mapping[str, Tensor]) -> bool:
    return "patch_embed.proj.weight" in state and "cls_token" in state


def is_hf_vit(state: Mapping[str, Tensor]) -> bool:
    """Hugging Face ViT or DeiT names."""
    return any(f"{backbone}.embeddings.patch_embeddings.projection.weight" in state for backbone in ("vit", "deit"))


def layout_from_timm(state: Mapping[str, Tensor]) -> dict:
    """Pooling, prefix tokens and input normalisation of a timm-named state dict, read from its keys and head
    shape: ``head_dist`` is DeiT's second head; ``fc_norm`` without a final ``norm`` is an MAE classifier; a
    head of twice the width is DINO's linear head."""
    dim = state["patch_embed.proj.weight"].shape[0]
    if "head_dist.weight" in state:
        pooling = "cls+dist"
    elif "fc_norm.weight" in state and "norm.weight" not in state:
        pooling = "mean"
    elif "head.weight" in state and state["head.weight"].shape[1] == 2 * dim:
        pooling = "cls+mean"
    else:
        pooling = "cls"
    distilled = "dist_token" in state
    # The JAX ViTs were trained on inputs normalised with 0.5/0.5; MAE, DeiT, DINO and MoCo v3 with ImageNet's.
    imagenet = pooling != "cls" or distilled or has_moco_v3_position_embedding(state)
    return dict(
        pooling=pooling,
        distillation_token=distilled,
        image_mean=IMAGENET_MEAN if imagenet else ORIGINAL_MEAN_STD,
        image_std=IMAGENET_STD if imagenet else ORIGINAL_MEAN_STD,
    )


def sincos_position_embedding(grid: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """MoCo v3's fixed 2-D sine-cosine position embedding of a ``grid × grid`` patch grid, ``[grid², dim]``:
    ``[sin(x ω), cos(x ω), sin(y ω), cos(y ω)]`` with ``ω_k = temperature^(-k / (dim / 4))``; the patch at row
    ``i``, column ``j`` of the grid has ``x = i``, ``y = j`` (its meshgrid's order)."""
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    coords = torch.arange(grid, dtype=torch.float32)
    x, y = torch.meshgrid(coords, coords, indexing="ij")
    angles_x, angles_y = x.flatten()[:, None] * omega, y.flatten()[:, None] * omega  # [grid², dim / 4]
    return torch.cat([angles_x.sin(), angles_x.cos(), angles_y.sin(), angles_y.cos()], dim=1)


def has_moco_v3_position_embedding(state: Mapping[str, Tensor]) -> bool:
    """Whether the position embedding is MoCo v3's fixed one (a zero class-token row, then the sine-cosine table,
    never trained): the mark of a MoCo v3 ViT (``linear-vit-b-300ep.pth.tar``), whose keys are timm's."""
    pos_embed = state["pos_embed"][0]  # [1 + N_patches, D]
    grid, dim = math.isqrt(pos_embed.shape[0] - 1), pos_embed.shape[1]
    if grid * grid != pos_embed.shape[0] - 1 or dim % 4 or pos_embed[0].any():
        return False
    return torch.allclose(pos_embed[1:].float(), sincos_position_embedding(grid, dim), atol=1e-5)


def config_from_timm(state: Mapping[str, Tensor], num_heads: int | None = None) -> ViTConfig:
    """Read the architecture of a timm/JAX-style ViT state dict from its keys and shapes."""
    patch_weight = state["patch_embed.proj.weight"]  # [D, C, P, P]
    dim, in_chans, patch_size = patch_weight.shape[0], patch_weight.shape[1], patch_weight.shape[-1]
    layout = layout_from_timm(state)
    num_patches = state["pos_embed"].shape[1] - (2 if layout["distillation_token"] else 1)
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"pos_embed holds {num_patches} patch positions, not a square grid")
    depth = 1 + max((int(m.group(1)) for key in state if (m := _BLOCK_KEY.match(key))), default=-1)
    if depth == 0:
        raise ValueError("the state dict has no blocks.N.* keys")
    if num_heads is None:
        num_heads = max(dim // 64, 1)
    return ViTConfig(
        image_size=side * patch_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=state["head.weight"].shape[0] if "head.weight" in state else 1000,
        embed_dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=state["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        **layout,
    )


def timm_to_ours(state: Mapping[str, Tensor]) -> StateDict:
    return {_BLOCK_KEY.sub(r"encoder.blocks.\1.", key): value for key, value in state.items()}


def ours_to_timm(state: Mapping[str, Tensor]) -> StateDict:
    return {re.sub(r"^encoder\.blocks\.", "blocks.", key): value for key, value in state.items()}


def with_dino_linear_head(backbone: Mapping[str, Tensor], linear: Mapping[str, Tensor]) -> StateDict:
    """A DINO backbone (timm names, no head) joined with the classifier of DINO's ``eval_linear.py``.

    ``linear`` is that script's checkpoint unwrapped (``linear.weight`` ``[C, 2D]``, ``linear.bias``). For
    ViT-B/16 it was trained with ``n_last_blocks=1, avgpool_patchtokens=True``: on the class token of the last
    block's normalised output concatenated with the mean of its patch tokens (``pooling="cls+mean"``).
    """
    names = {"linear.weight": "head.weight", "linear.bias": "head.bias"}
    if set(linear) != set(names):
        raise ValueError(f"a DINO linear head holds linear.weight and linear.bias, got {sorted(linear)[:5]}")
    if not is_timm_vit(backbone):
        raise ValueError(
            f"a DINO backbone has timm ViT keys (cls_token, patch_embed.proj.weight, ...), got {sorted(backbone)[:5]}"
        )
    dim, in_features = backbone["patch_embed.proj.weight"].shape[0], linear["linear.weight"].shape[1]
    if in_features != 2 * dim:
        raise ValueError(
            f"the linear head takes {in_features} features; only n_last_blocks=1 with avgpool_patchtokens "
            f"(2 x {dim}) is supported"
        )
    return {**backbone, **{names[key]: value for key, value in linear.items()}}


# Hugging Face name -> timm name, per block and global. Checkpoint files use the first spelling of each block
# name; transformers >= 5 uses the second in memory. q/k/v are fused into qkv separately.
_HF_BLOCK_NAMES = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "mlp.fc1": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc2": "mlp.fc2",
}
_HF_QKV_NAMES = {
    "attention.attention.query": "query",
    "attention.attention.key": "key",
    "attention.attention.value": "value",
    "attention.q_proj": "query",
    "attention.k_proj": "key",
    "attention.v_proj": "value",
}
# Backbone names after the "vit." or "deit." prefix; heads, which have no prefix, separately (ViT's first).
_HF_GLOBAL_NAMES = {
    "embeddings.cls_token": "cls_token",
    "embeddings.distillation_token": "dist_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_HEAD_NAMES = {"classifier": "head", "cls_classifier": "head", "distillation_classifier": "head_dist"}
_HF_BACKBONE_KEY = re.compile(r"^(?:vit|deit)\.(.+)$")
_HF_HEAD_KEY = re.compile(r"^(classifier|cls_classifier|distillation_classifier)\.(weight|bias)$")
_HF_LAYER_KEY = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")


def hf_to_timm(state: Mapping[str, Tensor]) -> StateDict:
    """Rename a Hugging Face ``ViTForImageClassification``, ``DeiTForImageClassification`` or
    ``DeiTForImageClassificationWithTeacher`` state dict into timm names (q, k, v fused into qkv)."""
    out: StateDict = {}
    qkv_parts: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        if head := _HF_HEAD_KEY.match(key):
            out[f"{_HF_HEAD_NAMES[head.group(1)]}.{head.group(2)}"] = value
            continue
        backbone = _HF_BACKBONE_KEY.match(key)
        name = backbone.group(1) if backbone else None
        if name in _HF_GLOBAL_NAMES:
            out[_HF_GLOBAL_NAMES[name]] = value
            continue
        match = _HF_LAYER_KEY.match(name) if name else None
        if match is None:
            out[key] = value  # left for the strict load to report
            continue
        index, name, kind = int(match.group(1)), match.group(2), match.group(3)
        if name in _HF_QKV_NAMES:
            qkv_parts.setdefault((index, kind), {})[_HF_QKV_NAMES[name]] = value
        elif name in _HF_BLOCK_NAMES:
            out[f"blocks.{index}.{_HF_BLOCK_NAMES[name]}.{kind}"] = value
        else:
            out[key] = value
    for (index, kind), parts in qkv_parts.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"layer {index} has attention {kind} for {sorted(parts)}, expected query, key and value")
        out[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def timm_to_hf(state: Mapping[str, Tensor], backbone: str = "vit") -> StateDict:
    """The inverse of :func:`hf_to_timm`: timm names into the names of Hugging Face checkpoint files
    (``backbone="deit"`` for DeiT, whose heads are then ``cls_classifier`` and ``distillation_classifier``)."""
    global_names = {timm: f"{backbone}.{hf}" for hf, timm in _HF_GLOBAL_NAMES.items()}
    heads = {
        "head": "cls_classifier" if "head_dist.weight" in state else "classifier",
        "head_dist": "distillation_classifier",
    }
    global_names.update({f"{timm}.{kind}": f"{hf}.{kind}" for timm, hf in heads.items() for kind in ("weight", "bias")})
    block_names = {timm: hf for hf, timm in reversed(_HF_BLOCK_NAMES.items())}  # the checkpoint-file spelling
    out: StateDict = {}
    for key, value in state.items():
        if key in global_names:
            out[global_names[key]] = value
            continue
        match = re.match(r"^blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if match is None:
            raise ValueError(f"no Hugging Face name for {key!r}")
        index, name, kind = match.groups()
        prefix = f"{backbone}.encoder.layer.{index}."
        if name == "attn.qkv":
            for part, chunk in zip(("query", "key", "value"), value.chunk(3)):
                out[f"{prefix}attention.attention.{part}.{kind}"] = chunk.clone()
        else:
            out[f"{prefix}{block_names[name]}.{kind}"] = value
    return out


def config_from_hf(hf_config: Mapping, state: Mapping[str, Tensor], num_heads: int | None = None) -> ViTConfig:
    """Read a Hugging Face ViT or DeiT ``config.json``; pooling and prefix tokens come from the (timm-named)
    weights ``state``, as for timm checkpoints."""
    if hf_config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"unsupported ViT activation {hf_config['hidden_act']!r}; only exact 'gelu' is implemented")
    id2label = hf_config.get("id2label") or {}
    class_names = [id2label[key] for key in sorted(id2label, key=int)] if id2label else None
    return ViTConfig(
        image_size=hf_config.get("image_size", 224),
        patch_size=hf_config.get("patch_size", 16),
        in_chans=hf_config.get("num_channels", 3),
        num_classes=len(class_names) if class_names else hf_config.get("num_labels", 2),
        embed_dim=hf_config["hidden_size"],
        depth=hf_config["num_hidden_layers"],
        num_heads=num_heads or hf_config["num_attention_heads"],
        mlp_dim=hf_config["intermediate_size"],
        qkv_bias=hf_config.get("qkv_bias", True),
        layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
        class_names=class_names,
        **layout_from_timm(state),
    )


def build(
    state: Mapping[str, Tensor], hf_config: Mapping | None, num_heads: int | None, num_labels: int | None
) -> VisionTransformer:
    """A :class:`VisionTransformer` with the checkpoint's weights, in timm or Hugging Face names. A ViT
    checkpoint brings its own head, so ``num_labels`` (the builders' common signature) is not used."""
    if is_hf_vit(state):
        state = hf_to_timm(state)
    if not is_timm_vit(state):
        raise ValueError(
            "not a ViT checkpoint: expected timm keys (cls_token, patch_embed.proj.weight, ...) "
            "or Hugging Face ViT/DeiT keys"
        )
    config = (
        config_from_hf(hf_config, state, num_heads) if hf_config is not None else config_from_timm(state, num_heads)
    )
    model = VisionTransformer(config)
    load_strict(model, timm_to_ours(state), source="the ViT checkpoint")
    return model
