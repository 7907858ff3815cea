"""BERT (Devlin et al.) sequence classifiers: embeddings, post-LN blocks with padding masks, pooler and
classifier — and the conversion of Hugging Face checkpoints (``BertForSequenceClassification``, ``BertModel``)
into them, plus their WordPiece tokenizer.

RoBERTa (Liu et al.; ``RobertaForSequenceClassification``, ``RobertaModel``) runs on the same code path as the
variant ``"roberta"``: only its position ids differ (counted over non-padding tokens from ``pad_token_id + 1``).
Its head, ``out_proj(tanh(dense(h_<s>)))``, is BERT's ``classifier(tanh(pooler(h_[CLS])))`` under other names, so
its ``classifier.dense`` is loaded as our ``pooler`` and its ``classifier.out_proj`` as our ``classifier``.

Blocks live in the shared encoder (``encoder.blocks.N``, the names of :mod:`tokenattr.models.layers`); the
embeddings, pooler and classifier keep short names of their own.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .layers import Block, BlockRecord, Encoder
from .loading import StateDict, load_strict
from .lrp import CHEFER_RULES, LRPRules, linear_relprop

# Blocks counted from the end: the original's BERT pipelines explain with the last block (Ours-H, generic
# attribution, transformer attribution) or the last four (Ours-T), whatever the depth (spec §3.5, §4.2).
LAST_BLOCKS = {"ours-h": 1, "ours-t": 4, "generic-attribution": 1, "transformer-attribution": 1}

VARIANTS = ("bert", "roberta")  # also transformers' model_type and the key prefix of each
_DISPLAY_NAMES = {"bert": "BERT", "roberta": "RoBERTa"}
_HF_CLASS_PREFIXES = {"bert": "Bert", "roberta": "Roberta"}  # BertModel, RobertaForSequenceClassification, ...
# What a state dict without config.json does not record: the padding id and the LayerNorm eps every released
# checkpoint of the variant uses (RoBERTa's are fairseq's, not transformers' RobertaConfig defaults).
_STATE_DICT_DEFAULTS = {
    "bert": {"pad_token_id": 0, "layer_norm_eps": 1e-12},
    "roberta": {"pad_token_id": 1, "layer_norm_eps": 1e-5},
}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown BERT variant {variant!r}; supported: {', '.join(VARIANTS)}")


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    num_labels: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    variant: str = "bert"  # one of VARIANTS; "roberta": position ids from padding (module docstring)
    class_names: list[str] | None = field(default=None, compare=False)

    def __post_init__(self):
        _check_variant(self.variant)

    @property
    def first_position(self) -> int:
        """The position id of the first token: 0, or RoBERTa's ``pad_token_id + 1`` (fairseq's convention)."""
        return self.pad_token_id + 1 if self.variant == "roberta" else 0


class BertEmbeddings(nn.Module):
    """``LayerNorm(word + token type + position)`` embeddings, ``[B, N, D]``.

    BERT's position ids are ``0 .. N-1``. RoBERTa's count only non-padding tokens, from ``pad_token_id + 1``, and
    give padding ``pad_token_id``, as transformers computes them from ``input_ids``: a right-padded sequence gets
    the positions it has alone.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        dim = config.hidden_size
        self.positions_from_padding = config.variant == "roberta"
        self.pad_token_id = config.pad_token_id
        self.word = nn.Embedding(config.vocab_size, dim, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, dim)
        self.token_type = nn.Embedding(config.type_vocab_size, dim)
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def position_ids(self, input_ids: Tensor) -> Tensor:
        """Position ids ``[B, N]`` (BERT: ``[N]``, the same for every row)."""
        if not self.positions_from_padding:
            return torch.arange(input_ids.shape[1], device=input_ids.device)
        is_token = input_ids.ne(self.pad_token_id).long()  # [B, N]
        return torch.cumsum(is_token, dim=1) * is_token + self.pad_token_id

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = self.position_ids(input_ids)
        # transformers' order of the sums, so logits agree to float rounding
        summed = self.word(input_ids) + self.token_type(token_type_ids) + self.position(positions)
        return self.norm(summed)


class BertClassifier(nn.Module):
    """A BERT sequence classifier whose forward returns logits ``[B, num_labels]``.

    ``attention_mask`` ``[B, N]`` (1 = token, 0 = padding) keeps padded keys out of every attention row.
    ``input_scale`` (``[B]``) multiplies the embedding output: the straight path from the all-zero embedding
    that reasoning feedback integrates along (spec §3.5).

    ``config.variant`` ``"roberta"`` makes it a RoBERTa classifier (module docstring); the family stays ``"bert"``.
    """

    family = "bert"
    main_input_name = "input_ids"
    num_prefix_tokens = 1  # [CLS]
    pooling = "cls"
    keeps_prefix_positions = True  # relevance over all tokens, [CLS] zeroed (DESIGN §4)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.embeddings = BertEmbeddings(config)
        self.encoder = Encoder(
            Block(
                dim,
                config.num_heads,
                config.intermediate_size,
                norm_first=False,
                eps=config.layer_norm_eps,
            )
            for _ in range(config.num_layers)
        )
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, config.num_labels)

    @property
    def depth(self) -> int:
        return self.config.num_layers

    @property
    def max_length(self) -> int:
        """Tokens per sequence: the position table less the ids before the first position (RoBERTa: 514 → 512)."""
        return self.config.max_position_embeddings - self.config.first_position

    def method_defaults(self, method: str) -> dict:
        """The original BERT pipelines' settings (spec §4.2, DESIGN §4): blocks counted from the end, the
        "orig LRP" rules with row-normalised rollout for the LRP baselines, Grad-CAM weights over the whole map."""
        defaults = {}
        if method in LAST_BLOCKS:
            defaults["start_layer"] = max(self.depth - LAST_BLOCKS[method], 0)
        if method in ("rollout", "lrp-rollout"):
            defaults["start_layer"] = 0
        if method in ("transformer-attribution", "partial-lrp", "lrp-rollout"):
            defaults["rules"] = "original-lrp"
        if method == "transformer-attribution":
            defaults["normalise_rows"] = True
        if method == "attn-gradcam":
            defaults["gradient_pool"] = "all"
        return defaults

    def attention_bias(self, attention_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
        """The additive mask ``[B, 1, 1, N]``: 0 for tokens, the dtype's lowest value for padding, as transformers
        builds it, so padded keys get exactly zero attention."""
        if attention_mask is None:
            return None
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def _check_inputs(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor | None) -> None:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
            got = f"{input_ids.dtype} {tuple(input_ids.shape)}" if isinstance(input_ids, Tensor) else type(input_ids)
            raise ValueError(f"input_ids must be a LongTensor [B, N], got {got}")
        if input_ids.shape[1] > self.max_length:
            raise ValueError(
                f"sequences of {input_ids.shape[1]} tokens exceed the model's {self.max_length} positions; "
                "truncate them (encode_texts does, with a warning)"
            )
        for name, value in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if value is not None and tuple(value.shape) != tuple(input_ids.shape):
                expected = tuple(input_ids.shape)
                raise ValueError(f"{name} must have the shape of input_ids {expected}, got {tuple(value.shape)}")

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        input_scale: Tensor | None = None,
    ) -> Tensor:
        self._check_inputs(input_ids, attention_mask, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids)
        if input_scale is not None:
            hidden = hidden * input_scale.to(hidden).view(-1, 1, 1)
        return self.classify_hidden(hidden, attention_mask)

    def classify_hidden(self, hidden: Tensor, attention_mask: Tensor | None = None, first_block: int = 0) -> Tensor:
        """Logits from ``hidden`` ``[B, N, D]``, the input of block ``first_block`` (0: the embedding output).

        Training only the top blocks on cached lower-block features uses ``first_block > 0``.
        """
        hidden = self.encoder(hidden, self.attention_bias(attention_mask, hidden.dtype), first_block)
        return self.classifier(torch.tanh(self.pooler(hidden[:, 0])))

    def logits_from_block(self, hidden: Tensor, first_block: int, inputs: Mapping[str, Tensor]) -> Tensor:
        """Logits ``[B, C]`` from ``hidden`` ``[B, N, D]``, the input of block ``first_block``: the rest of the
        forward pass, masked by ``inputs["attention_mask"]`` when the inputs have one."""
        return self.classify_hidden(hidden, inputs.get("attention_mask"), first_block)

    @torch.no_grad()
    def relprop(
        self,
        inputs: Mapping[str, Tensor],
        records: Mapping[int, BlockRecord],
        relevance: Tensor,
        rules: LRPRules = CHEFER_RULES,
        to_input: bool = False,
    ) -> tuple[Tensor | None, list[Tensor]]:
        """Propagate ``relevance`` of the logits ``[B, C]`` back to every block's attention map (spec §4.2):
        classifier → tanh (identity) → pooler → [CLS] → blocks (RoBERTa: ``out_proj`` → tanh → ``dense`` → <s>).
        Returns ``(None, [R^A per block])``."""
        if to_input:
            raise NotImplementedError("relevance down to the input is implemented for images only (method 'lrp')")
        attn_mask = inputs.get("attention_mask")
        bias = self.attention_bias(attn_mask, relevance.dtype) if attn_mask is not None else None
        hidden = self.encoder.output_from_records(records, bias)
        pooled = torch.tanh(self.pooler(hidden[:, 0]))
        pooled_relevance = linear_relprop(pooled, self.classifier.weight, relevance, rules)
        token_relevance = torch.zeros_like(hidden)
        token_relevance[:, 0] = linear_relprop(hidden[:, 0], self.pooler.weight, pooled_relevance, rules)
        _, attn_relevances = self.encoder.relprop(records, token_relevance, bias, rules)
        return None, attn_relevances


# --- checkpoints -----------------------------------------------------------------------------------------

_HF_GLOBAL_NAMES = {  # inside the "bert." / "roberta." prefix
    "embeddings.word_embeddings": "embeddings.word",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.token_type",
    "embeddings.LayerNorm": "embeddings.norm",
}
_HF_HEAD_NAMES = {  # ours -> transformers' full module name, per variant
    "bert": {"pooler": "bert.pooler.dense", "classifier": "classifier"},
    "roberta": {"pooler": "classifier.dense", "classifier": "classifier.out_proj"},
}
_HF_BLOCK_NAMES = {
    "attention.output.dense": "attn.proj",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "output.LayerNorm": "norm2",
}
_HF_QKV_PARTS = ("query", "key", "value")
_HF_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_HF_GLOBAL_KEY = re.compile(r"^(.+)\.(weight|bias)$")
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")  # index buffers some versions save


def is_hf_bert(state: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` holds Hugging Face BERT or RoBERTa names."""
    return any(
        key.removeprefix("bert.").removeprefix("roberta.") == "embeddings.word_embeddings.weight" for key in state
    )


def variant_of_state_dict(state: Mapping[str, Tensor]) -> str:
    """``"roberta"`` for RoBERTa's key names (its prefix or head), else ``"bert"``. A bare ``RobertaModel`` state
    dict (no prefix, no head) has BERT's names exactly: load it from its folder, whose config.json tells."""
    is_roberta = "classifier.out_proj.weight" in state or any(key.startswith("roberta.") for key in state)
    return "roberta" if is_roberta else "bert"


def has_classifier(state: Mapping[str, Tensor]) -> bool:
    return "classifier.weight" in state or "classifier.out_proj.weight" in state


def hf_to_ours(state: Mapping[str, Tensor], variant: str = "bert") -> StateDict:
    """Rename a Hugging Face ``BertForSequenceClassification`` or ``BertModel`` state dict (``variant="roberta"``:
    ``RobertaForSequenceClassification`` or ``RobertaModel``) into ours (query, key and value fused into ``qkv``;
    index buffers dropped)."""
    _check_variant(variant)
    head_names = {hf.removeprefix(f"{variant}."): ours for ours, hf in _HF_HEAD_NAMES[variant].items()}
    out: StateDict = {}
    qkv_parts: dict[tuple[int, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        name = key.removeprefix(f"{variant}.")
        if name in _BUFFERS:
            continue
        if variant == "roberta" and name.startswith("pooler."):
            continue  # RobertaModel's pooler: RobertaForSequenceClassification has none (its head is separate)
        layer = _HF_LAYER_KEY.match(name)
        if layer is not None:
            index, part, kind = int(layer.group(1)), layer.group(2), layer.group(3)
            qkv_part = part.removeprefix("attention.self.")
            if qkv_part in _HF_QKV_PARTS:
                qkv_parts.setdefault((index, kind), {})[qkv_part] = value
            elif part in _HF_BLOCK_NAMES:
                out[f"encoder.blocks.{index}.{_HF_BLOCK_NAMES[part]}.{kind}"] = value
            else:
                out[key] = value  # left for the strict load to report
            continue
        module = _HF_GLOBAL_KEY.match(name)
        ours = (_HF_GLOBAL_NAMES | head_names).get(module.group(1)) if module is not None else None
        if ours is not None:
            out[f"{ours}.{module.group(2)}"] = value
        else:
            out[key] = value  # left for the strict load to report
    for (index, kind), parts in qkv_parts.items():
        if set(parts) != set(_HF_QKV_PARTS):
            raise ValueError(f"layer {index} has attention {kind} for {sorted(parts)}, expected query, key and value")
        out[f"encoder.blocks.{index}.attn.qkv.{kind}"] = torch.cat([parts[part] for part in _HF_QKV_PARTS])
    return out


def ours_to_hf(state: Mapping[str, Tensor], variant: str = "bert") -> StateDict:
    """The inverse of :func:`hf_to_ours`: names of a Hugging Face ``BertForSequenceClassification`` file
    (``variant="roberta"``: ``RobertaForSequenceClassification``)."""
    _check_variant(variant)
    global_names = {ours: f"{variant}.{hf}" for hf, ours in _HF_GLOBAL_NAMES.items()} | _HF_HEAD_NAMES[variant]
    block_names = {ours: hf for hf, ours in _HF_BLOCK_NAMES.items()}
    out: StateDict = {}
    for key, value in state.items():
        block = re.match(r"^encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if block is not None:
            index, name, kind = block.groups()
            prefix = f"{variant}.encoder.layer.{index}."
            if name == "attn.qkv":
                for part, chunk in zip(_HF_QKV_PARTS, value.chunk(3)):
                    out[f"{prefix}attention.self.{part}.{kind}"] = chunk.clone()
            else:
                out[f"{prefix}{block_names[name]}.{kind}"] = value
            continue
        module, kind = key.rsplit(".", 1)
        if module in global_names:
            out[f"{global_names[module]}.{kind}"] = value
        else:
            raise ValueError(f"no Hugging Face name for {key!r}")
    return out


def config_from_state(state: Mapping[str, Tensor], num_heads: int | None = None, variant: str = "bert") -> BertConfig:
    """Read the architecture from a state dict in our names (heads: width/64 unless given; padding id and
    LayerNorm eps: the variant's released checkpoints')."""
    vocab_size, dim = state["embeddings.word.weight"].shape
    blocks = {int(m.group(1)) for key in state if (m := re.match(r"^encoder\.blocks\.(\d+)\.", key))}
    if not blocks:
        raise ValueError("the checkpoint has no encoder layers (encoder.layer.N.*)")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=dim,
        num_layers=max(blocks) + 1,
        num_heads=num_heads or max(dim // 64, 1),
        intermediate_size=state["encoder.blocks.0.mlp.fc1.weight"].shape[0],
        max_position_embeddings=state["embeddings.position.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type.weight"].shape[0],
        num_labels=state["classifier.weight"].shape[0] if "classifier.weight" in state else 2,
        variant=variant,
        **_STATE_DICT_DEFAULTS[variant],
    )


def config_from_hf(hf_config: Mapping, num_heads: int | None = None) -> BertConfig:
    """Read a Hugging Face ``BertConfig`` or ``RobertaConfig`` dict (``config.json``)."""
    variant = "roberta" if hf_config.get("model_type") == "roberta" else "bert"
    activation = hf_config.get("hidden_act", "gelu")
    if activation != "gelu":
        raise ValueError(
            f"unsupported {_DISPLAY_NAMES[variant]} activation {activation!r}; only exact 'gelu' is implemented"
        )
    if hf_config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"unsupported position_embedding_type {hf_config['position_embedding_type']!r}; only 'absolute'"
        )
    id2label = hf_config.get("id2label") or {}
    class_names = [id2label[key] for key in sorted(id2label, key=int)] if id2label else None
    pad_token_id = hf_config.get("pad_token_id")
    return BertConfig(
        vocab_size=hf_config["vocab_size"],
        hidden_size=hf_config["hidden_size"],
        num_layers=hf_config["num_hidden_layers"],
        num_heads=num_heads or hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        max_position_embeddings=hf_config.get("max_position_embeddings", 512),
        type_vocab_size=hf_config.get("type_vocab_size", 2),
        num_labels=len(class_names) if class_names else hf_config.get("num_labels", 2),
        layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
        pad_token_id=_STATE_DICT_DEFAULTS[variant]["pad_token_id"] if pad_token_id is None else pad_token_id,
        variant=variant,
        class_names=class_names,
    )


def build(state: Mapping[str, Tensor], hf_config: Mapping | None, num_heads: int | None, num_labels: int | None):
    """A :class:`BertClassifier` with the checkpoint's weights; the variant comes from ``config.json``'s
    ``model_type``, else from the keys. A ``BertModel`` checkpoint (no classifier) gets a freshly initialised
    classifier of ``num_labels`` classes (default 2), with a warning; a ``RobertaModel`` one a fresh head
    (pooler and classifier), as transformers gives it."""
    if hf_config is not None:
        config = config_from_hf(hf_config, num_heads)
        ours = hf_to_ours(state, config.variant)
    else:
        variant = variant_of_state_dict(state)
        ours = hf_to_ours(state, variant)
        config = config_from_state(ours, num_heads, variant)
    if num_labels is not None:
        config.num_labels = num_labels
    model = BertClassifier(config)
    if not has_classifier(state):
        fresh = ("pooler", "classifier") if config.variant == "roberta" else ("classifier",)
        warnings.warn(
            f"the checkpoint is an encoder without a classifier ({_HF_CLASS_PREFIXES[config.variant]}Model); a new "
            f"{config.num_labels}-class head ({', '.join(fresh)}) is initialised at random — train it before "
            "explaining its predictions",
            stacklevel=3,
        )
        ours.update(
            {
                f"{module}.{name}": value
                for module in fresh
                for name, value in model.get_submodule(module).state_dict().items()
            }
        )
    load_strict(model, ours, source=f"the {_DISPLAY_NAMES[config.variant]} checkpoint")
    return model


def config_to_hf(config: BertConfig) -> dict:
    """A Hugging Face ``config.json`` for ``BertForSequenceClassification`` (or ``RobertaForSequenceClassification``)
    with our architecture."""
    class_names = config.class_names or [f"LABEL_{index}" for index in range(config.num_labels)]
    return {
        "architectures": [f"{_HF_CLASS_PREFIXES[config.variant]}ForSequenceClassification"],
        "model_type": config.variant,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": "gelu",
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id,
        "position_embedding_type": "absolute",
        "id2label": {str(index): name for index, name in enumerate(class_names)},
        "label2id": {name: index for index, name in enumerate(class_names)},
    }


def save_hf_folder(model: BertClassifier, folder: str | Path, tokenizer=None) -> Path:
    """Save ``model`` as a Hugging Face folder (``config.json`` + ``model.safetensors`` in transformers' names, and
    the tokenizer's files), written atomically: ``tokenattr.load_model(folder)`` and
    ``transformers.AutoModelForSequenceClassification.from_pretrained(folder)`` both read it."""
    from safetensors.torch import save_file

    from ..io import atomic_folder, write_json

    state = {
        name: value.detach().cpu().contiguous()
        for name, value in ours_to_hf(model.state_dict(), model.config.variant).items()
    }
    with atomic_folder(folder) as temporary:
        save_file(state, str(temporary / "model.safetensors"))
        write_json(temporary / "config.json", config_to_hf(model.config))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(temporary))
    return Path(folder)


# --- tokenizer -------------------------------------------------------------------------------------------


def load_tokenizer(source: str | Path):
    """The WordPiece tokenizer of a checkpoint folder (its tokenizer files or ``vocab.txt``), or of a
    ``vocab.txt`` file (lower-cased, as ``bert-base-uncased``)."""
    from transformers import AutoTokenizer, BertTokenizerFast

    path = Path(source)
    if path.is_file():
        if path.name != "vocab.txt":
            raise ValueError(f"expected a checkpoint folder or a vocab.txt file for the tokenizer, got {path}")
        return BertTokenizerFast(str(path), do_lower_case=True)
    if not path.is_dir():
        raise FileNotFoundError(f"no tokenizer at {path}: expected a checkpoint folder or a vocab.txt file")
    has_tokenizer_files = any((path / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
    if has_tokenizer_files:
        return AutoTokenizer.from_pretrained(str(path))
    if (path / "vocab.txt").exists():
        return BertTokenizerFast(str(path / "vocab.txt"), do_lower_case=True)
    raise FileNotFoundError(f"{path} has no tokenizer.json, tokenizer_config.json or vocab.txt")


def encode_texts(
    tokenizer, texts: str | Sequence[str], max_length: int = 512, *, offsets: bool = False
) -> dict[str, Tensor]:
    """Tokenise ``texts`` into a padded batch ``{"input_ids", "attention_mask"}`` of ``[B, N]`` tensors, plus
    ``"offset_mapping"`` ``[B, N, 2]`` (each piece's character span; ``(0, 0)`` for special tokens and padding)
    with ``offsets``.

    Texts longer than ``max_length`` tokens (special tokens included) are truncated, with a warning that
    says how many, as the original pipelines truncate at 512.
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    encoded = tokenizer(
        texts,
        add_special_tokens=True,
        truncation=True,
        max_length=max_length,
        padding=True,
        return_tensors="pt",
        return_offsets_mapping=offsets,
        return_overflowing_tokens=False,
        return_length=False,
    )
    full_lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
    too_long = sum(length > max_length for length in full_lengths)
    if too_long:
        warnings.warn(f"{too_long} of {len(texts)} texts exceed {max_length} tokens and are truncated", stacklevel=2)
    names = ("input_ids", "attention_mask", "offset_mapping") if offsets else ("input_ids", "attention_mask")
    return {name: encoded[name] for name in names}
