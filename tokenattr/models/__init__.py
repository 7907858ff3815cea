"""Model families on one shared transformer core, and :func:`load_model`, which builds them from checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from . import bert, vit
from .bert import BertClassifier, BertConfig, encode_texts, load_tokenizer
from .layers import BlockRecord, record
from .loading import (
    CheckpointMismatchError,
    load_strict,
    read_hf_config,
    read_hf_weights,
    read_state_dict,
    unwrap_state_dict,
)
from .vit import VisionTransformer, ViTConfig

FAMILIES = ("vit", "bert")
HF_MODEL_TYPES = {"vit": "vit", "bert": "bert", "roberta": "bert"}  # config.json "model_type" -> family


def _family_of_hf_config(hf_config: Mapping) -> str:
    model_type = hf_config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(
            f"unsupported Hugging Face model_type {model_type!r}; supported: {', '.join(sorted(HF_MODEL_TYPES))}"
        )
    return HF_MODEL_TYPES[model_type]


def _family_of_state_dict(state: Mapping[str, Tensor]) -> str:
    if vit.is_timm_vit(state) or vit.is_hf_vit(state):
        return "vit"
    if bert.is_hf_bert(state):  # BERT or RoBERTa names: both run on the BERT code path
        return "bert"
    raise ValueError(
        f"could not recognise the architecture from the checkpoint's keys (first: {sorted(state)[:5]}); "
        f"supported families: {', '.join(FAMILIES)} — pass family= if it is one of them"
    )


def _build_vit(
    state: Mapping[str, Tensor], hf_config: Mapping | None, num_heads: int | None, num_labels: int | None
) -> VisionTransformer:
    if vit.is_hf_vit(state):
        state = vit.hf_to_timm(state)
    if not vit.is_timm_vit(state):
        raise ValueError(
            "not a ViT checkpoint: expected timm keys (cls_token, patch_embed.proj.weight, ...) "
            "or Hugging Face ViT keys"
        )
    config = (
        vit.config_from_hf(hf_config, num_heads) if hf_config is not None else vit.config_from_timm(state, num_heads)
    )
    model = VisionTransformer(config)
    load_strict(model, vit.timm_to_ours(state), source="the ViT checkpoint")
    return model


_BUILDERS = {"vit": _build_vit, "bert": bert.build}


def load_model(
    source: str | Path | Mapping[str, Tensor],
    family: str | None = None,
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
    num_labels: int | None = None,
) -> nn.Module:
    """Build a model from a checkpoint, reading the architecture from the weights (DESIGN §3).

    Args:
        source: a checkpoint file (``.pth``/``.pt``/``.bin``, ``.safetensors``, ``.npz``), a Hugging Face
            model folder (``config.json`` + weights), or an in-memory ``{name: tensor}`` mapping.
        family: one of ``FAMILIES`` (``"bert"`` also runs RoBERTa); detected from the checkpoint when ``None``.
        num_heads: attention heads, which a state dict does not record; default width/64 (Hugging Face
            folders give it in ``config.json``).
        device: where the model is put. It is returned in eval mode.
        num_labels: classes of the new classifier that an encoder-only checkpoint (``BertModel``,
            ``RobertaModel``) gets.
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
    hf_config = None
    if isinstance(source, Mapping):
        state = unwrap_state_dict(source, source="the given mapping")
    elif Path(source).is_dir():
        hf_config = read_hf_config(source)
        family = family or _family_of_hf_config(hf_config)
        state = read_hf_weights(source)
    else:
        state = read_state_dict(source)
    family = family or _family_of_state_dict(state)
    model = _BUILDERS[family](state, hf_config, num_heads, num_labels)
    return model.to(device).eval()


__all__ = [
    "FAMILIES",
    "BertClassifier",
    "BertConfig",
    "encode_texts",
    "load_tokenizer",
    "BlockRecord",
    "CheckpointMismatchError",
    "ViTConfig",
    "VisionTransformer",
    "load_model",
    "record",
]
