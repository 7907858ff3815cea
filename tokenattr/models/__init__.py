"""Model families on one shared transformer core, and :func:`load_model`, which builds them from checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from . import bert, clip, vit
from .bert import BertClassifier, BertConfig, encode_texts, load_tokenizer
from .clip import CLIPConfig, CLIPModel
from .layers import BlockRecord, record
from .loading import (
    CheckpointMismatchError,
    read_hf_config,
    read_hf_weights,
    read_state_dict,
    unwrap_state_dict,
)
from .vit import VisionTransformer, ViTConfig

FAMILIES = ("vit", "bert", "clip")
# config.json "model_type" -> family
HF_MODEL_TYPES = {"vit": "vit", "deit": "vit", "bert": "bert", "roberta": "bert", "clip": "clip"}


def _family_of_hf_config(hf_config: Mapping) -> str:
    model_type = hf_config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(
            f"unsupported Hugging Face model_type {model_type!r}; supported: {', '.join(sorted(HF_MODEL_TYPES))}"
        )
    return HF_MODEL_TYPES[model_type]


def _family_of_state_dict(state: Mapping[str, Tensor]) -> str:
    if vit.is_timm_vit(state) or vit.is_hf_vit(state):  # ViT, MAE, DINO with its head, DeiT
        return "vit"
    if bert.is_hf_bert(state):  # BERT or RoBERTa names: both run on the BERT code path
        return "bert"
    if clip.is_openai_clip(state) or clip.is_hf_clip(state):
        return "clip"
    raise ValueError(
        f"could not recognise the architecture from the checkpoint's keys (first: {sorted(state)[:5]}); "
        f"supported families: {', '.join(FAMILIES)} — pass family= if it is one of them"
    )


_BUILDERS = {"vit": vit.build, "bert": bert.build, "clip": clip.build}


def load_model(
    source: str | Path | Mapping[str, Tensor],
    family: str | None = None,
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
    num_labels: int | None = None,
) -> nn.Module:
    """Build a model from a checkpoint, reading the architecture from the weights (DESIGN §3).

    Args:
        source: a checkpoint file (``.pth``/``.pt``/``.bin``, ``.safetensors``, ``.npz``; OpenAI CLIP's TorchScript
            ``.pt`` archives too), a Hugging Face model folder (``config.json`` + weights), or an in-memory
            ``{name: tensor}`` mapping.
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


def load_dino(
    backbone: str | Path | Mapping[str, Tensor],
    linear: str | Path | Mapping[str, Tensor],
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
) -> VisionTransformer:
    """DINO ViT with the linear classifier of its ``eval_linear.py`` (spec §6): the class token of the last
    block's normalised output concatenated with the mean of its patch tokens, into one linear layer.

    Args:
        backbone: the backbone weights (``dino_vitbase16_pretrain.pth``: timm names, no head), a file or mapping.
        linear: the linear head (``dino_vitbase16_linearweights.pth``: ``{"state_dict": {"module.linear.*"}}``).
        num_heads, device: as for :func:`load_model`.
    """
    states = [
        unwrap_state_dict(part, source="the given mapping") if isinstance(part, Mapping) else read_state_dict(part)
        for part in (backbone, linear)
    ]
    return load_model(vit.with_dino_linear_head(*states), family="vit", num_heads=num_heads, device=device)


__all__ = [
    "FAMILIES",
    "BertClassifier",
    "BertConfig",
    "CLIPConfig",
    "CLIPModel",
    "encode_texts",
    "load_tokenizer",
    "BlockRecord",
    "CheckpointMismatchError",
    "ViTConfig",
    "VisionTransformer",
    "load_dino",
    "load_model",
    "record",
]
