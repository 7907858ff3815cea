"""CLIP (Radford et al. 2021) with a Vision-Transformer image tower: both towers on the shared transformer core,
the similarity logits, and the conversion of OpenAI ``.pt`` and Hugging Face ``CLIPModel`` checkpoints into it.

* image tower: patch embedding (no bias), class embedding, position embedding, ``ln_pre``, pre-LN blocks with
  QuickGELU, ``ln_post`` of the class token, projection;
* text tower: token and position embeddings, pre-LN blocks under a causal mask, ``ln_final``, the end-of-text
  token's features, projection;
* ``logits_per_image = exp(logit_scale) · cos(image, text)`` ``[B_images, B_texts]``.

Explaining a similarity (spec §3.6): :meth:`CLIPModel.explained_tower` turns one tower into a classifier over the
other tower's batch (:class:`TowerSimilarity`), so every method runs on it unchanged — the image tower's "classes"
are the prompts, the text tower's are the images. Our parameter names follow OpenAI's, except that blocks live in
the shared encoder (``visual.encoder.blocks.N``, ``text.encoder.blocks.N``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Block, Encoder
from .loading import CheckpointMismatchError, StateDict, load_strict
from .vit import PatchGrid

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # what OpenAI's preprocess normalises with
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TOWERS = ("image", "text")
# The original explains with the last block only (``--start_layer 10`` skips blocks i <= 10 of 12; spec §3.6,
# §4.3) and rolls attention out from the first; we keep those choices for the text tower too.
LAST_BLOCK_METHODS = ("ours-h", "ours-t", "generic-attribution")
# Keys of OpenAI's archives that are not weights (``clip.build_model`` drops them too).
_OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")


@dataclass
class CLIPConfig:
    embed_dim: int = 512  # the joint embedding (projection) width
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # Which token pools the text: ``None`` is OpenAI's rule (the highest id, which is end-of-text); an id pools
    # its first occurrence (Hugging Face checkpoints whose tokenizers add tokens after end-of-text).
    eos_token_id: int | None = None
    image_mean: tuple[float, float, float] = CLIP_MEAN  # what inputs are normalised with (not the model)
    image_std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")


def _blocks(config: CLIPConfig, width: int, layers: int, heads: int) -> Encoder:
    return Encoder(
        Block(width, heads, 4 * width, eps=config.layer_norm_eps, activation=config.activation) for _ in range(layers)
    )


class CLIPVisionTower(PatchGrid, nn.Module):
    """The image encoder: ``pixel_values [B, 3, H, W]`` (CLIP-normalised) → image features ``[B, embed_dim]``."""

    main_input_name = "pixel_values"
    num_prefix_tokens = 1  # the class token
    pooling = "cls"

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        width = config.vision_width
        self.conv1 = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(1 + self.num_patches, width))
        self.ln_pre = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.encoder = _blocks(config, width, config.vision_layers, config.vision_heads)
        self.ln_post = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.proj = nn.Parameter(torch.zeros(width, config.embed_dim))

    @property
    def depth(self) -> int:
        return self.config.vision_layers

    def check_inputs(self, pixel_values: Tensor) -> None:
        side = self.config.image_size
        if not isinstance(pixel_values, Tensor) or pixel_values.dim() != 4 or pixel_values.shape[1:] != (3, side, side):
            got = tuple(pixel_values.shape) if isinstance(pixel_values, Tensor) else type(pixel_values).__name__
            raise ValueError(
                f"pixel_values must be a tensor [B, 3, {side}, {side}] (CLIP's preprocess: resize the short side, "
                f"centre crop, normalise), got {got}"
            )

    def embed(self, pixel_values: Tensor, input_scale: Tensor | None = None) -> Tensor:
        """The input of the first block ``[B, 1 + patches, D]``; ``input_scale`` ``[B]`` scales the normalised
        pixels (the path from the mean colour that reasoning feedback follows)."""
        self.check_inputs(pixel_values)
        if input_scale is not None:
            pixel_values = pixel_values * input_scale.to(pixel_values).view(-1, 1, 1, 1)
        patches = self.conv1(pixel_values).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1).to(patches.dtype)
        return self.ln_pre(torch.cat([cls, patches], dim=1) + self.positional_embedding)

    def features_from_block(self, hidden: Tensor, first_block: int = 0) -> Tensor:
        """Image features ``[B, embed_dim]`` from the input of block ``first_block``."""
        hidden = self.encoder(hidden, first_block=first_block)
        return self.ln_post(hidden[:, 0]) @ self.proj

    def forward(self, pixel_values: Tensor, input_scale: Tensor | None = None) -> Tensor:
        return self.features_from_block(self.embed(pixel_values, input_scale))


class CLIPTextTower(nn.Module):
    """The text encoder: ``input_ids [B, T]`` (T ≤ context length) → text features ``[B, embed_dim]``."""

    main_input_name = "input_ids"
    num_prefix_tokens = 1  # the start-of-text token
    pooling = "eot"
    keeps_prefix_positions = True  # relevance over every position, start-of-text and padding zeroed (as BERT)

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        width = config.text_width
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(config.context_length, width))
        self.encoder = _blocks(config, width, config.text_layers, config.text_heads)
        self.ln_final = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.proj = nn.Parameter(torch.zeros(width, config.embed_dim))

    @property
    def depth(self) -> int:
        return self.config.text_layers

    def check_inputs(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> None:
        limit = self.config.context_length
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
            got = f"{input_ids.dtype} {tuple(input_ids.shape)}" if isinstance(input_ids, Tensor) else type(input_ids)
            raise ValueError(f"input_ids must be a LongTensor [B, T], got {got}")
        if input_ids.shape[1] > limit:
            raise ValueError(
                f"the prompts are {input_ids.shape[1]} tokens long; this CLIP's context holds {limit} "
                "(shorten them, or tokenise with truncation)"
            )
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}), got {input_ids.min()}…")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                f"{tuple(input_ids.shape)}"
            )

    def end_positions(self, input_ids: Tensor) -> Tensor:
        """``[B]`` the position of the end-of-text token whose features are the text's (spec: EOT pooling)."""
        eos = self.config.eos_token_id
        if eos is None:
            return input_ids.argmax(dim=-1)
        return (input_ids == eos).int().argmax(dim=-1)

    def real_tokens(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_) -> Tensor:
        """``[B, T]`` 1 up to each text's end-of-text token (and where ``attention_mask`` is 1), 0 after it.

        Under the causal mask nothing after the end-of-text token reaches the features, so this is the padding
        mask methods use, with or without a tokenizer's mask: a padded prompt gets what it gets alone.
        """
        self.check_inputs(input_ids, attention_mask)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        real = positions[None] <= self.end_positions(input_ids)[:, None]
        return (real if attention_mask is None else real & attention_mask.bool()).long()

    def attention_bias(self, tokens: int, attention_mask: Tensor | None, dtype: torch.dtype) -> Tensor:
        """Additive ``[1 or B, 1, T, T]`` mask: causal, and padded keys masked when ``attention_mask`` is given."""
        device = self.positional_embedding.device
        blocked = torch.ones(tokens, tokens, dtype=torch.bool, device=device).triu(1)[None, None]
        if attention_mask is not None:
            blocked = blocked | ~attention_mask.to(device=device, dtype=torch.bool)[:, None, None, :]
        bias = torch.zeros(blocked.shape, dtype=dtype, device=device)
        return bias.masked_fill(blocked, torch.finfo(dtype).min)

    def embed(self, input_ids: Tensor, attention_mask: Tensor | None = None, input_scale: Tensor | None = None):
        """The input of the first block ``[B, T, D]``; ``input_scale`` ``[B]`` scales it (the path from the zero
        embedding that reasoning feedback follows, as BERT's)."""
        self.check_inputs(input_ids, attention_mask)
        hidden = self.token_embedding(input_ids) + self.positional_embedding[: input_ids.shape[1]]
        if input_scale is not None:
            hidden = hidden * input_scale.to(hidden).view(-1, 1, 1)
        return hidden

    def features_from_block(
        self, hidden: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None, first_block: int = 0
    ) -> Tensor:
        """Text features ``[B, embed_dim]`` from the input of block ``first_block``."""
        bias = self.attention_bias(hidden.shape[1], attention_mask, hidden.dtype)
        hidden = self.ln_final(self.encoder(hidden, bias, first_block=first_block))
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), self.end_positions(input_ids)]
        return pooled @ self.proj

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, input_scale: Tensor | None = None
    ) -> Tensor:
        hidden = self.embed(input_ids, attention_mask, input_scale)
        return self.features_from_block(hidden, input_ids, attention_mask)


def method_defaults(method: str, depth: int) -> dict:
    """The original CLIP code's choices (DESIGN §4) for a tower of ``depth`` blocks: the last block for Ours-H,
    Ours-T and generic attribution, rollout from the first block, no |R| in Ours-T."""
    if method in LAST_BLOCK_METHODS:
        return {"start_layer": depth - 1}
    if method == "rollout":
        return {"start_layer": 0}
    return {}


class CLIPModel(nn.Module):
    """CLIP: ``forward(pixel_values, input_ids, attention_mask=None)`` returns ``logits_per_image``
    ``[B_images, B_texts]`` (``logits_per_text`` is its transpose)."""

    family = "clip"
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPConfig):
        super().__init__()
        self.config = config
        self.visual = CLIPVisionTower(config)
        self.text = CLIPTextTower(config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """L2-normalised image features ``[B, embed_dim]``."""
        return F.normalize(self.visual(pixel_values), dim=-1)

    def text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """L2-normalised text features ``[B, embed_dim]``."""
        return F.normalize(self.text(input_ids, attention_mask), dim=-1)

    def similarity(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """``exp(logit_scale) · image_features @ text_features.T`` for normalised features."""
        return self.logit_scale.exp() * image_features @ text_features.T

    def forward(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.similarity(self.image_features(pixel_values), self.text_features(input_ids, attention_mask))

    def method_defaults(self, method: str, tower: str = "image") -> dict:
        """What :func:`tokenattr.explain` uses for options not given, when it explains ``tower``."""
        _check_tower(tower)
        return method_defaults(method, (self.visual if tower == "image" else self.text).depth)

    def explained_tower(self, inputs: Mapping[str, Tensor], tower: str | None = None):
        """One tower as a classifier over the other tower's batch, and that tower's inputs.

        ``tower="image"`` (default) explains the image tokens of ``logits_per_image`` (a "class" is a prompt);
        ``"text"`` explains the prompt tokens of ``logits_per_text`` (a "class" is an image). The other tower's
        features are computed once, without gradients.
        """
        tower = tower or "image"
        _check_tower(tower)
        missing = [name for name in ("pixel_values", "input_ids") if name not in inputs]
        if missing:
            raise ValueError(
                f"explaining CLIP needs both pixel_values and input_ids (the images and the prompts they are "
                f"compared with); missing: {', '.join(missing)}"
            )
        unknown = sorted(set(inputs) - {"pixel_values", "input_ids", "attention_mask"})
        if unknown:
            raise ValueError(f"unexpected CLIP inputs {unknown}; expected pixel_values, input_ids, attention_mask")
        text_inputs = {"input_ids": inputs["input_ids"], "attention_mask": self.text.real_tokens(**inputs)}
        with torch.no_grad():
            if tower == "image":
                return TowerSimilarity(self, self.visual, self.text_features(**text_inputs)), {
                    "pixel_values": inputs["pixel_values"]
                }
            return TowerSimilarity(self, self.text, self.image_features(inputs["pixel_values"])), text_inputs


def _check_tower(tower: str) -> None:
    if tower not in TOWERS:
        raise ValueError(f"tower must be one of {', '.join(TOWERS)}, got {tower!r}")


class TowerSimilarity(nn.Module):
    """One CLIP tower seen as a classifier: its inputs ``[B, ...]`` → ``exp(logit_scale) · cos`` with each of the
    other tower's ``C`` fixed, normalised features ``[B, C]``. It carries what methods read of a model (encoder,
    depth, prefix tokens, pooling, defaults), so explaining CLIP needs no special case in any method."""

    family = "clip"

    def __init__(self, clip: CLIPModel, tower: CLIPVisionTower | CLIPTextTower, other_features: Tensor):
        super().__init__()
        self.clip = clip
        self.tower = tower
        self.encoder = tower.encoder
        self.register_buffer("other_features", other_features.detach(), persistent=False)

    main_input_name = property(lambda self: self.tower.main_input_name)
    num_prefix_tokens = property(lambda self: self.tower.num_prefix_tokens)
    pooling = property(lambda self: self.tower.pooling)
    keeps_prefix_positions = property(lambda self: getattr(self.tower, "keeps_prefix_positions", False))
    depth = property(lambda self: self.tower.depth)

    def end_positions(self, inputs: Mapping[str, Tensor]) -> Tensor:
        """``[B]`` the pooled (end-of-text) position of each prompt; text tower only."""
        return self.tower.end_positions(inputs["input_ids"])

    def method_defaults(self, method: str) -> dict:
        return method_defaults(method, self.depth)

    def _logits(self, features: Tensor) -> Tensor:
        return self.clip.similarity(F.normalize(features, dim=-1), self.other_features)

    def forward(self, input_scale: Tensor | None = None, **inputs: Tensor) -> Tensor:
        return self._logits(self.tower(**inputs, input_scale=input_scale))

    def logits_from_block(self, hidden: Tensor, first_block: int, inputs: Mapping[str, Tensor]) -> Tensor:
        """The logits from the input ``hidden`` of block ``first_block`` (the rest of the forward)."""
        if isinstance(self.tower, CLIPTextTower):
            features = self.tower.features_from_block(
                hidden, inputs["input_ids"], inputs.get("attention_mask"), first_block
            )
        else:
            features = self.tower.features_from_block(hidden, first_block)
        return self._logits(features)


# --- checkpoints -------------------------------------------------------------------------------------------------

_OPENAI_BLOCK_KEY = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_OPENAI_BLOCK_NAMES = {
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight",
    "attn.out_proj.bias": "attn.proj.bias",
    "ln_1.weight": "norm1.weight",
    "ln_1.bias": "norm1.bias",
    "ln_2.weight": "norm2.weight",
    "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_OPENAI_TEXT_NAMES = {  # OpenAI's top-level text names -> ours (under ``text.``)
    "token_embedding.weight": "text.token_embedding.weight",
    "positional_embedding": "text.positional_embedding",
    "ln_final.weight": "text.ln_final.weight",
    "ln_final.bias": "text.ln_final.bias",
    "text_projection": "text.proj",
    "logit_scale": "logit_scale",
}


def is_openai_clip(state: Mapping[str, Tensor]) -> bool:
    return "visual.class_embedding" in state or "visual.conv1.weight" in state


def is_hf_clip(state: Mapping[str, Tensor]) -> bool:
    return (
        "vision_model.embeddings.class_embedding" in state and "text_model.embeddings.token_embedding.weight" in state
    )


def openai_to_ours(state: Mapping[str, Tensor]) -> StateDict:
    """OpenAI's names (``clip.model.CLIP``) -> ours; every tensor as float32 (OpenAI ships fp16 weights)."""
    if "visual.layer1.0.conv1.weight" in state:
        raise ValueError("this is a ResNet CLIP (RN50, RN101, ...); only Vision-Transformer CLIPs are supported")
    ours = {}
    for name, value in state.items():
        if name in _OPENAI_METADATA:
            continue
        block = _OPENAI_BLOCK_KEY.match(name)
        if block:
            tower = "visual" if block.group(1) else "text"
            part = _OPENAI_BLOCK_NAMES.get(block.group(3))
            if part is None:
                raise CheckpointMismatchError(f"unexpected key in the CLIP checkpoint: {name}")
            ours[f"{tower}.encoder.blocks.{block.group(2)}.{part}"] = value
        elif name in _OPENAI_TEXT_NAMES:
            ours[_OPENAI_TEXT_NAMES[name]] = value
        else:
            ours[name] = value  # visual.conv1/class_embedding/positional_embedding/ln_pre/ln_post/proj keep theirs
    return {name: value.float() if value.is_floating_point() else value for name, value in ours.items()}


def ours_to_openai(state: Mapping[str, Tensor]) -> StateDict:
    """Our names -> OpenAI's (the inverse of :func:`openai_to_ours`)."""
    text_names = {ours: theirs for theirs, ours in _OPENAI_TEXT_NAMES.items()}
    block_names = {ours: theirs for theirs, ours in _OPENAI_BLOCK_NAMES.items()}
    converted = {}
    for name, value in state.items():
        block = re.match(r"^(visual|text)\.encoder\.blocks\.(\d+)\.(.+)$", name)
        if block:
            prefix = "visual." if block.group(1) == "visual" else ""
            converted[f"{prefix}transformer.resblocks.{block.group(2)}.{block_names[block.group(3)]}"] = value
        else:
            converted[text_names.get(name, name)] = value
    return converted


def config_from_state(state: Mapping[str, Tensor]) -> CLIPConfig:
    """The architecture of a state dict in our names, read from the shapes as OpenAI's ``clip.build_model``
    does: heads = width / 64 in both towers (OpenAI's rule)."""

    def count(prefix: str) -> int:
        pattern = re.compile(rf"^{prefix}\.encoder\.blocks\.(\d+)\.attn\.qkv\.weight$")
        return len([name for name in state if pattern.match(name)])

    vision_width, _, patch_size, _ = state["visual.conv1.weight"].shape
    grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
    text_width = state["text.ln_final.weight"].shape[0]
    for tower, width in (("vision", vision_width), ("text", text_width)):
        if width % 64:
            raise CheckpointMismatchError(
                f"the {tower} width {width} is not a multiple of 64, so OpenAI's rule (heads = width / 64) gives no "
                "head count; load it from a Hugging Face folder, whose config.json names it"
            )
    return CLIPConfig(
        embed_dim=state["text.proj"].shape[1],
        image_size=grid * patch_size,
        patch_size=patch_size,
        vision_width=vision_width,
        vision_layers=count("visual"),
        vision_heads=vision_width // 64,
        context_length=state["text.positional_embedding"].shape[0],
        vocab_size=state["text.token_embedding.weight"].shape[0],
        text_width=text_width,
        text_layers=count("text"),
        text_heads=text_width // 64,
    )


_HF_LAYER_KEY = re.compile(r"^(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_HF_LAYER_NAMES = {
    "self_attn.out_proj": "attn.proj",
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_GLOBAL_NAMES = {
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "text.token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "text.positional_embedding",
    "text_model.final_layer_norm.weight": "text.ln_final.weight",
    "text_model.final_layer_norm.bias": "text.ln_final.bias",
    "logit_scale": "logit_scale",
}
_HF_PROJECTIONS = {"visual_projection.weight": "visual.proj", "text_projection.weight": "text.proj"}


def hf_to_ours(state: Mapping[str, Tensor]) -> StateDict:
    """Hugging Face ``CLIPModel`` names -> ours: separate q/k/v joined into ``qkv``, projections transposed."""
    ours: StateDict = {}
    qkv: dict[tuple[str, str, str], dict[str, Tensor]] = {}
    for name, value in state.items():
        if name.endswith("position_ids"):  # a buffer older transformers versions saved
            continue
        layer = _HF_LAYER_KEY.match(name)
        if name in _HF_GLOBAL_NAMES:
            ours[_HF_GLOBAL_NAMES[name]] = value
        elif name in _HF_PROJECTIONS:
            ours[_HF_PROJECTIONS[name]] = value.T.contiguous()
        elif layer and layer.group(3) in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            tower, index, part, kind = layer.groups()
            qkv.setdefault((tower, index, kind), {})[part[-6]] = value
        elif layer and layer.group(3) in _HF_LAYER_NAMES:
            tower, index, part, kind = layer.groups()
            prefix = "visual" if tower == "vision" else "text"
            ours[f"{prefix}.encoder.blocks.{index}.{_HF_LAYER_NAMES[part]}.{kind}"] = value
        else:
            raise CheckpointMismatchError(f"unexpected key in the Hugging Face CLIP checkpoint: {name}")
    for (tower, index, kind), parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise CheckpointMismatchError(f"{tower} layer {index} lacks some of q_proj/k_proj/v_proj.{kind}")
        prefix = "visual" if tower == "vision" else "text"
        ours[f"{prefix}.encoder.blocks.{index}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return {name: value.float() if value.is_floating_point() else value for name, value in ours.items()}


def ours_to_hf(state: Mapping[str, Tensor]) -> StateDict:
    """Our names -> Hugging Face ``CLIPModel``'s (the inverse of :func:`hf_to_ours`)."""
    global_names = {ours: theirs for theirs, ours in _HF_GLOBAL_NAMES.items()}
    projections = {ours: theirs for theirs, ours in _HF_PROJECTIONS.items()}
    layer_names = {ours: theirs for theirs, ours in _HF_LAYER_NAMES.items()}
    converted = {}
    for name, value in state.items():
        block = re.match(r"^(visual|text)\.encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)$", name)
        if name in global_names:
            converted[global_names[name]] = value
        elif name in projections:
            converted[projections[name]] = value.T.contiguous()
        elif block:
            tower, index, part, kind = block.groups()
            prefix = f"{'vision' if tower == 'visual' else 'text'}_model.encoder.layers.{index}"
            if part == "attn.qkv":
                for letter, piece in zip("qkv", value.chunk(3)):
                    converted[f"{prefix}.self_attn.{letter}_proj.{kind}"] = piece
            else:
                converted[f"{prefix}.{layer_names[part]}.{kind}"] = value
    return converted


def config_from_hf(hf_config: Mapping, state: Mapping[str, Tensor]) -> CLIPConfig:
    """The architecture named by a Hugging Face ``CLIPModel`` ``config.json`` (sizes checked against the weights
    when the model is loaded)."""
    vision, text = hf_config.get("vision_config", {}), hf_config.get("text_config", {})
    activations = {vision.get("hidden_act", "quick_gelu"), text.get("hidden_act", "quick_gelu")}
    if len(activations) != 1:
        raise ValueError(f"the towers use different activations {sorted(activations)}; expected one")
    eos = text.get("eos_token_id", 49407)
    return CLIPConfig(
        embed_dim=hf_config.get("projection_dim", state["visual.proj"].shape[1]),
        image_size=vision.get("image_size", 224),
        patch_size=vision.get("patch_size", 32),
        vision_width=vision.get("hidden_size", 768),
        vision_layers=vision.get("num_hidden_layers", 12),
        vision_heads=vision.get("num_attention_heads", 12),
        context_length=text.get("max_position_embeddings", 77),
        vocab_size=text.get("vocab_size", 49408),
        text_width=text.get("hidden_size", 512),
        text_layers=text.get("num_hidden_layers", 12),
        text_heads=text.get("num_attention_heads", 8),
        activation=activations.pop(),
        layer_norm_eps=vision.get("layer_norm_eps", 1e-5),
        # transformers pools the highest id when eos_token_id is 2 (configs made before it was fixed)
        eos_token_id=None if eos == 2 else eos,
    )


def build(state: Mapping[str, Tensor], hf_config: Mapping | None, num_heads: int | None, num_labels: int | None):
    """A :class:`CLIPModel` from an OpenAI or Hugging Face state dict (``config.json`` when from a folder)."""
    if num_labels is not None:
        raise ValueError("num_labels does not apply to CLIP: its classes are the prompts it is given")
    if num_heads is not None:
        raise ValueError("num_heads does not apply to CLIP: heads come from config.json, or are width / 64 (OpenAI)")
    if is_hf_clip(state):
        ours = hf_to_ours(state)
        config = config_from_hf(hf_config, ours) if hf_config is not None else config_from_state(ours)
    else:
        ours = openai_to_ours(state)
        config = config_from_state(ours)
    model = CLIPModel(config)
    load_strict(model, ours, source="the CLIP checkpoint")
    return model
