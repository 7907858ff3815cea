"""Every registered method on every model family and variant it applies to (DESIGN §3, STYLE §11).

For each (family, method): the output has the method's shape (tokens: ``[B, N - prefix]`` for images,
``[B, N]`` for text with [CLS] and padding 0; pixels: ``[B, H, W]``), is finite and not all zero, and a batch
gives each sample what it gets alone (text: the sample alone without its padding). Where a method does not
apply, it raises an error that says so.

To add a family, add one entry to ``FAMILIES``: a builder of a tiny random model, a builder of a batch of two
inputs, the methods it refuses with the error they raise and, where a sample alone is not simply its row of
every input, how to take it alone (CLIP: an image with every prompt, a prompt with the image).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

import tokenattr
from tokenattr.models import BertClassifier, BertConfig, CLIPConfig, CLIPModel, VisionTransformer, ViTConfig

BATCH = 2
IMAGE, PATCH = 32, 8  # 16 patches
TEXT_LENGTHS = (9, 6)  # the second sequence is right-padded to the first's length
VOCAB = 50
# Options that keep the test fast: reasoning feedback with 4 steps instead of 20 (the reference tests use 20).
FAST = {"steps": 4}
# Batch vs alone, relative to the map's largest value: the same arithmetic in other shapes moves float32 values
# by ~1e-6 of that scale, which LRP's divisions by near-zero sums amplify to ~1e-4 (lrp-rollout on BERT). Mixing
# samples, or padding that leaks into real tokens, moves maps by a sizeable fraction of their scale.
TOLERANCE = 1e-3


def assert_same_map(batch_row: Tensor, single: Tensor) -> None:
    scale = max(batch_row.abs().max().item(), single.abs().max().item())
    torch.testing.assert_close(batch_row, single, rtol=0, atol=TOLERANCE * scale)


def spread(model: nn.Module, seed: int) -> nn.Module:
    """Redraw the weights so that attention is peaked and logits spread (default inits make tokens look alike)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() == 1 and "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.1 * noise)
            elif param.dim() > 1:
                param.copy_(noise * (2 / param[0].numel()) ** 0.5)
            else:
                param.copy_(0.05 * noise)
    return model.eval()


def vit(seed: int, embed_dim: int = 32, depth: int = 2, num_heads: int = 4, **layout) -> Callable[[], nn.Module]:
    config = ViTConfig(
        image_size=IMAGE,
        patch_size=PATCH,
        num_classes=5,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_dim=2 * embed_dim,
        **layout,
    )
    return lambda: spread(VisionTransformer(config), seed)


def bert(seed: int, variant: str) -> Callable[[], nn.Module]:
    pad = 1 if variant == "roberta" else 0
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=48,
        max_position_embeddings=16,
        type_vocab_size=1 if variant == "roberta" else 2,
        num_labels=3,
        pad_token_id=pad,
        variant=variant,
    )
    return lambda: spread(BertClassifier(config), seed)


def clip(seed: int) -> Callable[[], nn.Module]:
    config = CLIPConfig(
        embed_dim=16,
        image_size=IMAGE,
        patch_size=PATCH,
        vision_width=32,
        vision_layers=2,
        vision_heads=4,
        context_length=max(TEXT_LENGTHS),
        vocab_size=VOCAB,
        text_width=32,
        text_layers=2,
        text_heads=2,
    )
    return lambda: spread(CLIPModel(config), seed)


def images() -> dict[str, Tensor]:
    return {"pixel_values": torch.randn(BATCH, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))}


def texts(pad: int) -> Callable[[], dict[str, Tensor]]:
    def make() -> dict[str, Tensor]:
        length = max(TEXT_LENGTHS)
        ids = torch.randint(3, VOCAB, (BATCH, length), generator=torch.Generator().manual_seed(2))
        mask = (torch.arange(length) < torch.tensor(TEXT_LENGTHS)[:, None]).long()
        return {"input_ids": ids.masked_fill(mask == 0, pad), "attention_mask": mask}

    return make


def clip_inputs() -> dict[str, Tensor]:
    """Two images and two prompts (start id 1, end-of-text = the highest id, zero padding after it)."""
    prompts = texts(pad=0)()
    ids = prompts["input_ids"].clamp(max=VOCAB - 2)
    ids[:, 0] = 1
    ids[torch.arange(BATCH), torch.tensor(TEXT_LENGTHS) - 1] = VOCAB - 1
    return {**images(), "input_ids": ids * prompts["attention_mask"]}


def clip_image_alone(inputs: Mapping[str, Tensor], row: int) -> tuple[dict[str, Tensor], None]:
    """Image ``row`` against every prompt: its best-matching prompt, the default target, is the same."""
    return {**inputs, "pixel_values": inputs["pixel_values"][row : row + 1]}, None


def clip_text_alone(inputs: Mapping[str, Tensor], row: int) -> tuple[dict[str, Tensor], int]:
    """Prompt ``row`` (cut to its tokens) against every image."""
    return {**inputs, "input_ids": inputs["input_ids"][row : row + 1, : TEXT_LENGTHS[row]]}, TEXT_LENGTHS[row]


def alone(inputs: Mapping[str, Tensor], row: int) -> tuple[dict[str, Tensor], int | None]:
    """Sample ``row`` by itself (text: cut to its real tokens) and its number of real tokens (images: None)."""
    mask = inputs.get("attention_mask")
    length = None if mask is None else int(mask[row].sum())
    return {name: value[row : row + 1, :length] for name, value in inputs.items()}, length


NO_PIXELS = (NotImplementedError, "images only")
NO_LRP = {
    name: (ValueError, "does not apply to clip models")
    for name, method in tokenattr.METHODS.items()
    if method.needs_relprop
}


@dataclass(frozen=True)
class Family:
    model: Callable[[], nn.Module]
    inputs: Callable[[], dict[str, Tensor]]
    refused: Mapping[str, tuple[type[Exception], str]] = field(default_factory=dict)  # method -> (error, message)
    alone: Callable[[Mapping[str, Tensor], int], tuple[dict[str, Tensor], int | None]] = alone
    options: Mapping[str, str] = field(default_factory=dict)  # explain()'s own keywords (CLIP's tower)


FAMILIES = {
    "vit-cls": Family(vit(seed=0), images),
    "mae-mean": Family(vit(seed=1, pooling="mean"), images),
    "deit-cls+dist": Family(vit(seed=2, distillation_token=True, pooling="cls+dist"), images),
    "dino-cls+mean": Family(vit(seed=3, pooling="cls+mean"), images),
    "vit-l-layout": Family(vit(seed=4, embed_dim=128, depth=4, num_heads=2), images),  # heads of width 64
    "bert": Family(bert(seed=5, variant="bert"), texts(pad=0), {"lrp": NO_PIXELS}),
    "roberta": Family(bert(seed=6, variant="roberta"), texts(pad=1), {"lrp": NO_PIXELS}),
    "clip-image": Family(clip(seed=9), clip_inputs, NO_LRP, clip_image_alone),
    "clip-text": Family(clip(seed=8), clip_inputs, NO_LRP, clip_text_alone, {"tower": "text"}),
}


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[nn.Module, dict[str, Tensor]]]:
    return {name: (family.model(), family.inputs()) for name, family in FAMILIES.items()}


def options_for(method: str) -> dict:
    return {k: v for k, v in FAST.items() if k in tokenattr.METHODS[method].options}


@pytest.mark.parametrize("method", list(tokenattr.METHODS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_method_on_family(family, method, built):
    model, inputs = built[family]
    spec = FAMILIES[family]
    options = {**spec.options, **options_for(method)}
    refused = spec.refused.get(method)
    if refused is not None:
        error, message = refused
        with pytest.raises(error, match=message):
            tokenattr.explain(model, inputs, method, **options)
        return

    relevance = tokenattr.explain(model, inputs, method, **options)
    if tokenattr.METHODS[method].pixels:
        expected = (BATCH, IMAGE, IMAGE)
    elif "attention_mask" in inputs or spec.options.get("tower") == "text":
        expected = (BATCH, max(TEXT_LENGTHS))
    else:
        expected = (BATCH, (IMAGE // PATCH) ** 2)
    assert relevance.shape == expected
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    for row in range(BATCH):
        single, length = spec.alone(inputs, row)
        by_itself = tokenattr.explain(model, single, method, **options)
        assert_same_map(relevance[row : row + 1, :length], by_itself)
        if length is not None:
            assert (relevance[row, 0] == 0) and (relevance[row, length:] == 0).all()  # [CLS] and padding


@pytest.mark.parametrize("method", ["raw-attention", "attn-gradcam"])
def test_the_originals_mae_read_off_is_per_sample(method, built):
    model, inputs = built["mae-mean"]
    relevance = tokenattr.explain(model, inputs, method, mae_read_off="row-mean")
    assert relevance.shape == (BATCH, (IMAGE // PATCH) ** 2) and torch.isfinite(relevance).all()
    for row in range(BATCH):
        by_itself = tokenattr.explain(model, alone(inputs, row)[0], method, mae_read_off="row-mean")
        assert_same_map(relevance[row : row + 1], by_itself)


@pytest.mark.parametrize("method", ["raw-attention", "attn-gradcam"])
@pytest.mark.parametrize("family", [name for name in FAMILIES if name != "mae-mean"])
def test_the_originals_mae_read_off_is_refused_elsewhere(family, method, built):
    model, inputs = built[family]
    with pytest.raises(ValueError, match="mean-pooled"):
        tokenattr.explain(model, inputs, method, mae_read_off="row-mean")


def test_bad_mae_read_off_options_are_refused(built):
    model, inputs = built["mae-mean"]
    with pytest.raises(ValueError, match="pooled, row-mean"):
        tokenattr.explain(model, inputs, "raw-attention", mae_read_off="query")
    with pytest.raises(ValueError, match="gradient_pool='read-off'"):
        tokenattr.explain(model, inputs, "attn-gradcam", mae_read_off="row-mean", gradient_pool="all")
