"""Reasoning feedback: both paths (the original's scaled input, and the cheap scaled last attention map) against
direct computations, batch and chunk invariance against batch 1 unchunked, ``logits_from_block``, and errors.

Every test runs on the CPU and, where one is present, on CUDA (``benchmarks/gpu_check.sh`` runs this file there).
"""

from __future__ import annotations

import pytest
import torch
from conftest import random_vit
from torch import Tensor, nn

import tokenattr
from tokenattr.methods.ours import FEEDBACK_PATHS, reasoning_feedback
from tokenattr.models import BertClassifier, BertConfig
from tokenattr.models.layers import record

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    if request.param == "cuda":
        # cuDNN convolutions default to TF32, whose rounding differs between batch sizes; compare in float32.
        previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        yield torch.device("cuda")
        torch.backends.cudnn.allow_tf32 = previous
    else:
        yield torch.device("cpu")


def random_bert(seed: int = 0) -> BertClassifier:
    """A tiny post-LN BERT (3 blocks, 4 heads, width 32) with weights spread enough for peaked attention."""
    config = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_layers=3,
        num_heads=4,
        intermediate_size=48,
        max_position_embeddings=24,
        num_labels=3,
    )
    model = BertClassifier(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                continue
            std = (2 / param.shape[-1]) ** 0.5 if param.dim() > 1 else 0.05
            param.copy_(std * torch.randn(param.shape, generator=generator))
    return model.eval()


def padded_text(batch: int = 3, tokens: int = 12) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(4)
    input_ids = torch.randint(5, 50, (batch, tokens), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row in range(1, batch):
        attention_mask[row, tokens - 3 * row :] = 0
    input_ids[attention_mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def vit_case(device: torch.device) -> tuple[nn.Module, dict[str, Tensor]]:
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return random_vit().to(device), {"pixel_values": images.to(device)}


def bert_case(device: torch.device) -> tuple[nn.Module, dict[str, Tensor]]:
    return random_bert().to(device), {name: value.to(device) for name, value in padded_text().items()}


CASES = {"vit": vit_case, "bert": bert_case}


def single(inputs: dict[str, Tensor], index: int) -> dict[str, Tensor]:
    """Sample ``index`` alone, its padding cut off (a text sample alone is not padded)."""
    sample = {name: value[index : index + 1] for name, value in inputs.items()}
    if "attention_mask" in sample:
        length = int(sample["attention_mask"].sum())
        sample = {name: value[:, :length] for name, value in sample.items()}
    return sample


def scaled_last_block_gradient(model: nn.Module, inputs: dict[str, Tensor], target: int, alpha: float) -> Tensor:
    """``∂y_target/∂S`` at ``S = α A_L`` for one sample, ``[H, N, N]``, written out without the recording: the
    blocks before the last called one by one, then the last block's attention and the head by hand."""
    blocks = model.encoder.blocks
    with torch.no_grad():
        if "pixel_values" in inputs:
            hidden = model._tokens(inputs["pixel_values"]) + model.pos_embed
            bias = None
        else:
            hidden = model.embeddings(inputs["input_ids"], torch.zeros_like(inputs["input_ids"]))
            bias = model.attention_bias(inputs["attention_mask"], hidden.dtype)
        for block in blocks[:-1]:
            hidden = block(hidden, bias)
    block = blocks[-1]
    attn = block.attn
    attn_input = block.norm1(hidden) if block.norm_first else hidden
    batch, tokens, dim = attn_input.shape
    qkv = attn.qkv(attn_input).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    query, key, value = qkv.unbind(0)  # [1, H, N, d]
    scores = query @ key.transpose(-1, -2) / attn.head_dim**0.5
    if bias is not None:
        scores = scores + bias
    scaled = (alpha * scores.softmax(dim=-1)).detach().requires_grad_()
    attn_out = attn.proj((scaled @ value).transpose(1, 2).reshape(batch, tokens, dim))
    if block.norm_first:
        mid = hidden + attn_out
        out = mid + block.mlp(block.norm2(mid))
        logits = model.head(model.norm(out)[:, 0])
    else:
        mid = block.norm1(hidden + attn_out)
        out = block.norm2(mid + block.mlp(mid))
        logits = model.classifier(torch.tanh(model.pooler(out[:, 0])))
    return torch.autograd.grad(logits[0, target], scaled)[0][0]


@pytest.mark.parametrize("family", CASES)
def test_last_attention_feedback_follows_its_equation(family, device):
    """W = mean_h max(0, (1/K) Σ_k ∂y/∂S |_(S = α_k A_L)), each term computed by hand, one sample at a time."""
    model, inputs = CASES[family](device)
    steps, targets = 4, [0, 2, 1]
    with torch.enable_grad():
        ours = reasoning_feedback(
            model, inputs, torch.tensor(targets, device=device), steps, feedback_path="last-attention"
        )
        for index, target in enumerate(targets):
            sample = single(inputs, index)
            grads = [scaled_last_block_gradient(model, sample, target, alpha) for alpha in torch.linspace(0, 1, steps)]
            expected = torch.stack(grads).mean(dim=0).clamp(min=0).mean(dim=0)
            tokens = expected.shape[-1]
            torch.testing.assert_close(ours[index, :tokens, :tokens], expected, **TOLERANCE)


def test_last_attention_feedback_at_alpha_one_is_the_plain_gradient(device):
    """With two steps (α = 0, 1) the α = 1 term is ∂y/∂A_L of the plain forward: the paths share their end."""
    model, inputs = vit_case(device)
    target = torch.tensor([1, 0, 3], device=device)
    with record(model, [-1], differentiable=True) as records:
        logits = model(**inputs)
    plain = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), records[model.depth - 1].attn_probs)[0]
    last_block_input = records_input(model, inputs)
    with record(model, [-1], differentiable=True, attn_scale=torch.zeros(3, device=device)) as records:
        logits = model.logits_from_block(last_block_input, model.depth - 1, inputs)
    at_zero = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), records[model.depth - 1].attn_probs)[0]
    with torch.enable_grad():
        ours = reasoning_feedback(model, inputs, target, steps=2, feedback_path="last-attention")
    torch.testing.assert_close(ours, ((plain + at_zero) / 2).clamp(min=0).mean(dim=1), **TOLERANCE)


def records_input(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """The last block's input in a plain forward of ``inputs``."""
    with torch.no_grad(), record(model, [-1]) as records:
        model(**inputs)
    return records[model.depth - 1].block_input


@pytest.mark.parametrize("family", CASES)
def test_logits_from_block_finish_the_forward(family, device):
    model, inputs = CASES[family](device)
    with torch.no_grad(), record(model) as records:
        logits = model(**inputs)
    for block in range(model.depth):
        with torch.no_grad():
            resumed = model.logits_from_block(records[block].block_input, block, inputs)
        torch.testing.assert_close(resumed, logits, **TOLERANCE)


@pytest.mark.parametrize("family", CASES)
def test_unit_attention_scale_changes_nothing(family, device):
    model, inputs = CASES[family](device)
    batch = next(iter(inputs.values())).shape[0]
    with torch.no_grad():
        plain = model(**inputs)
        with record(model, [0, -1], attn_scale=torch.ones(batch, device=device)):
            scaled = model(**inputs)
    torch.testing.assert_close(scaled, plain, **TOLERANCE)


@pytest.mark.parametrize("feedback_path", FEEDBACK_PATHS)
@pytest.mark.parametrize("method", ["ours-h", "ours-t"])
@pytest.mark.parametrize("family", CASES)
def test_batching_and_chunking_change_nothing(family, method, feedback_path, device):
    """A batch in chunks that straddle samples gives what each sample gives alone, unchunked."""
    model, inputs = CASES[family](device)
    options = dict(steps=5, feedback_path=feedback_path, start_layer=0)
    batched = tokenattr.explain(model, inputs, method, target=1, internal_batch_size=3, **options)
    for index in range(batched.shape[0]):
        alone = tokenattr.explain(model, single(inputs, index), method, target=1, internal_batch_size=1000, **options)
        tokens = alone.shape[1]
        # 1e-5 of the map's scale: a padded text batch sums its attention in another order (float64: 1e-15)
        scale = alone.abs().max().item()
        torch.testing.assert_close(batched[index, :tokens], alone[0], rtol=1e-5, atol=1e-5 * scale)
        assert not batched[index, tokens:].any()


def test_feedback_paths_give_different_maps(device):
    """The cheap path is a different path, not the original under another name."""
    model, inputs = vit_case(device)
    original, cheap = (
        tokenattr.explain(model, inputs, "ours-h", steps=5, feedback_path=path) for path in ("input", "last-attention")
    )
    assert not torch.allclose(original, cheap)


def test_recorded_block_input_is_reused(device):
    """The methods pass their own recording's last-block input; the feedback is the one computed from scratch."""
    model, inputs = vit_case(device)
    target = torch.tensor([0, 1, 2], device=device)
    with torch.enable_grad():
        given = reasoning_feedback(
            model, inputs, target, 3, feedback_path="last-attention", last_block_input=records_input(model, inputs)
        )
        computed = reasoning_feedback(model, inputs, target, 3, feedback_path="last-attention")
    torch.testing.assert_close(given, computed, **TOLERANCE)


def test_bad_options_raise_clear_errors():
    model, inputs = vit_case(torch.device("cpu"))
    target = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="feedback_path must be one of 'input', 'last-attention'; got 'pixels'"):
        tokenattr.explain(model, inputs, "ours-h", steps=2, feedback_path="pixels")
    for bad in (0, -4, True, 2.0):
        with pytest.raises(ValueError, match="internal_batch_size must be a positive int"):
            tokenattr.explain(model, inputs, "ours-t", steps=2, internal_batch_size=bad)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        tokenattr.explain(model, inputs, "ours-h", steps=0, feedback_path="last-attention")
    with torch.enable_grad(), pytest.raises(ValueError, match="last_block_input is read only by"):
        reasoning_feedback(model, inputs, target, 2, last_block_input=records_input(model, inputs))
    with pytest.raises(ValueError, match=r"attn_scale must be a tensor \[B\].*got \(3, 1\)"):
        with record(model, attn_scale=torch.ones(3, 1)):
            pass
    assert model.encoder.recording is None
    with pytest.raises(ValueError, match=r"first_block must be a block index in 0\.\.1, got 2"):
        model.logits_from_block(records_input(model, inputs), 2, inputs)
