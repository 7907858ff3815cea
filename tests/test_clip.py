"""The CLIP family: parity with transformers' CLIPModel, OpenAI and Hugging Face checkpoints, explanations of
either tower, and clear errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import tokenattr
from tokenattr.models import CheckpointMismatchError, CLIPConfig, CLIPModel
from tokenattr.models.clip import ours_to_hf, ours_to_openai

transformers = pytest.importorskip("transformers")

VOCAB = 1000
EOS = VOCAB - 1  # the highest id, as OpenAI's end-of-text


def tiny_config(**overrides) -> CLIPConfig:
    settings = dict(
        embed_dim=16,
        image_size=32,
        patch_size=8,
        vision_width=32,
        vision_layers=2,
        vision_heads=4,
        context_length=12,
        vocab_size=VOCAB,
        text_width=32,
        text_layers=2,
        text_heads=2,
    )
    return CLIPConfig(**{**settings, **overrides})


def spread(model: nn.Module, seed: int = 0) -> nn.Module:
    """Redraw every weight so that attention is peaked and features differ (default inits leave zeros)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name or "ln_" in name or "layrnorm" in name:
                param.copy_((1 + 0.1 * noise) if name.endswith("weight") else 0.05 * noise)
            elif name.endswith("logit_scale"):
                param.fill_(math.log(100.0))
            elif param.dim() > 1:
                param.copy_(1.5 * noise / math.sqrt(param.shape[-1]))
            else:
                param.copy_(0.3 * noise)
    return model.eval()


def random_clip(seed: int = 0, **overrides) -> CLIPModel:
    return spread(CLIPModel(tiny_config(**overrides)), seed)


def prompts(lengths=(5, 8, 3), context: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[P, context]`` (start id 1, random words, EOS, zero padding) and their attention mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), context, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 0] = 1
        ids[row, 1 : length - 1] = torch.randint(2, EOS, (length - 2,), generator=generator)
        ids[row, length - 1] = EOS
    lengths = torch.tensor(lengths)
    return ids, (torch.arange(context)[None] < lengths[:, None]).long()


def images(count: int = 2, seed: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def hf_clip(model: CLIPModel, eos_token_id: int = EOS):
    """transformers' CLIPModel with the same architecture and our weights."""
    config = model.config
    hf_config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=config.vocab_size,
            hidden_size=config.text_width,
            intermediate_size=4 * config.text_width,
            num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            max_position_embeddings=config.context_length,
            hidden_act="quick_gelu",
            eos_token_id=eos_token_id,
        ),
        vision_config=dict(
            hidden_size=config.vision_width,
            intermediate_size=4 * config.vision_width,
            num_hidden_layers=config.vision_layers,
            num_attention_heads=config.vision_heads,
            image_size=config.image_size,
            patch_size=config.patch_size,
            hidden_act="quick_gelu",
        ),
        projection_dim=config.embed_dim,
    )
    hf = transformers.CLIPModel(hf_config).eval()
    hf.load_state_dict(ours_to_hf(model.state_dict()), strict=True)
    return hf


@pytest.mark.parametrize("eos_token_id", [EOS, 2], ids=["first-eos", "legacy-argmax"])
def test_features_and_logits_equal_transformers(tmp_path, eos_token_id):
    """Also through a Hugging Face folder: config.json gives the architecture, incl. the pooling rule."""
    ids, mask = prompts()
    pixels = images()
    model = random_clip()
    hf = hf_clip(model, eos_token_id)
    hf.save_pretrained(tmp_path)
    loaded = tokenattr.load_model(tmp_path)
    assert loaded.config.eos_token_id == (None if eos_token_id == 2 else EOS)
    with torch.no_grad():
        expected = hf(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        for ours in (model, loaded):
            torch.testing.assert_close(ours.image_features(pixels), expected.image_embeds, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ours.text_features(ids, mask), expected.text_embeds, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ours(pixels, ids, mask), expected.logits_per_image, rtol=1e-5, atol=1e-5)
        # Causal attention: padding after the end-of-text token changes nothing, with or without the mask.
        torch.testing.assert_close(model(pixels, ids), expected.logits_per_image, rtol=1e-5, atol=1e-5)


def test_pooling_rules():
    """OpenAI's rule pools the highest id (its end-of-text); a Hugging Face config with an ``eos_token_id`` pools
    that id's first occurrence (tokenizers with ids added above end-of-text)."""
    ids = torch.tensor([[1, 5, 998, 7, 999, 0], [1, 998, 999, 0, 0, 0]])
    assert torch.equal(random_clip().text.end_positions(ids), torch.tensor([4, 2]))
    assert torch.equal(random_clip(eos_token_id=998).text.end_positions(ids), torch.tensor([2, 1]))


def write_openai_archive(path, state: dict[str, torch.Tensor]) -> None:
    """A TorchScript archive with OpenAI's parameter names, fp16 weights and metadata, as ``ViT-B-32.pt`` is."""

    class Archive(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Archive()
    for name, value in state.items():
        *parents, leaf = name.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, Archive())
            module = getattr(module, part)
        module.register_buffer(leaf, value)
    with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript, which OpenAI's archives are
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(root).save(str(path))


OPENAI_WIDTHS = dict(vision_width=128, vision_heads=2, text_width=64, text_heads=1)  # heads = width / 64


def test_openai_archive_loads_to_the_same_model(tmp_path):
    model = random_clip(**OPENAI_WIDTHS)
    openai = {
        name: value.half() if value.dim() > 1 else value for name, value in ours_to_openai(model.state_dict()).items()
    }
    metadata = {
        "input_resolution": torch.tensor(32),
        "context_length": torch.tensor(12),
        "vocab_size": torch.tensor(VOCAB),
    }
    write_openai_archive(tmp_path / "ViT-tiny.pt", {**openai, **metadata})
    loaded = tokenattr.load_model(tmp_path / "ViT-tiny.pt")
    assert isinstance(loaded, CLIPModel) and loaded.config == model.config
    rounded = {name: value.half().float() if value.dim() > 1 else value for name, value in model.state_dict().items()}
    model.load_state_dict(rounded)
    ids, _ = prompts()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images(), ids), model(images(), ids), rtol=0, atol=0)
    assert all(value.dtype == torch.float32 for value in loaded.state_dict().values())


def test_architecture_is_read_from_openai_weights():
    """OpenAI's rule: heads = width / 64 in both towers; depth, patch, grid, context and vocabulary from shapes."""
    config = tiny_config(**OPENAI_WIDTHS, embed_dim=24)
    state = ours_to_openai(CLIPModel(config).state_dict())
    loaded = tokenattr.load_model(state)
    assert loaded.config == config


def test_checkpoint_that_does_not_fit_names_the_keys():
    state = ours_to_openai(random_clip(**OPENAI_WIDTHS).state_dict())
    del state["visual.ln_post.weight"]
    with pytest.raises(CheckpointMismatchError, match="visual.ln_post.weight"):
        tokenattr.load_model(state)
    with pytest.raises(CheckpointMismatchError, match="heads = width / 64"):
        tokenattr.load_model(ours_to_openai(random_clip().state_dict()))  # widths 32: no OpenAI head count
    with pytest.raises(ValueError, match="ResNet CLIP"):
        tokenattr.load_model(
            {"visual.layer1.0.conv1.weight": torch.zeros(1), "visual.attnpool.c_proj.weight": torch.zeros(1)},
            family="clip",
        )


def test_inputs_that_do_not_fit_get_clear_errors():
    model = random_clip()
    ids, _ = prompts()
    with pytest.raises(ValueError, match=r"pixel_values must be a tensor \[B, 3, 32, 32\]"):
        model(torch.zeros(1, 3, 64, 64), ids)
    with pytest.raises(ValueError, match="13 tokens long; this CLIP's context holds 12"):
        model(images(), torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="needs both pixel_values and input_ids"):
        tokenattr.explain(model, images(), "rollout")
    with pytest.raises(ValueError, match="tower must be one of image, text"):
        tokenattr.explain(model, {"pixel_values": images(), "input_ids": ids}, "rollout", tower="audio")
    with pytest.raises(ValueError, match="does not apply to clip models"):
        tokenattr.explain(model, {"pixel_values": images(), "input_ids": ids}, "transformer-attribution")


def test_tower_is_only_for_two_tower_models(random_vit_model):
    with pytest.raises(ValueError, match="tower= applies to two-tower models"):
        tokenattr.explain(random_vit_model, torch.zeros(1, 3, 32, 32), "rollout", tower="image")


@pytest.fixture
def random_vit_model():
    from conftest import random_vit

    return random_vit()


TOKEN_METHODS = ["ours-h", "ours-t", "rollout", "raw-attention", "attn-gradcam", "generic-attribution"]


def few_steps(method: str) -> dict:
    """4 reasoning-feedback steps where the method has them: the same code path as 20, cheaper."""
    return {"steps": 4} if "steps" in tokenattr.get_method(method).options else {}


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_image_tower_batch_gives_each_pair_what_it_gets_alone(method):
    """Two images against three prompts, each image explained for its own prompt, = each pair alone."""
    model = random_clip()
    pixels, (ids, _) = images(), prompts()
    target = torch.tensor([2, 0])
    batched = tokenattr.explain(
        model, {"pixel_values": pixels, "input_ids": ids}, method, target=target, **few_steps(method)
    )
    assert batched.shape == (2, 16) and torch.isfinite(batched).all()
    for row in range(2):
        alone = tokenattr.explain(
            model,
            {"pixel_values": pixels[row : row + 1], "input_ids": ids[target[row]][None]},
            method,
            **few_steps(method),
        )
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_text_tower_explains_each_prompts_words(method):
    """Three prompts against two images: ``[P, T]`` over the prompt positions, start and end-of-text tokens and
    everything after the end at 0; a padded batch (with or without the mask) gives each prompt its own map."""
    model = random_clip()
    pixels, (ids, mask) = images(), prompts()
    target = torch.tensor([1, 0, 1])  # the image each prompt is compared with
    inputs = {"pixel_values": pixels, "input_ids": ids}
    relevance = tokenattr.explain(model, inputs, method, target=target, tower="text", **few_steps(method))
    masked = tokenattr.explain(
        model, {**inputs, "attention_mask": mask}, method, target=target, tower="text", **few_steps(method)
    )
    assert relevance.shape == (3, 12)
    torch.testing.assert_close(masked, relevance, rtol=1e-4, atol=1e-6)
    for row, length in enumerate((5, 8, 3)):
        assert relevance[row, 0] == 0 and not relevance[row, length - 1 :].any()
        alone = tokenattr.explain(
            model,
            {"pixel_values": pixels[target[row]][None], "input_ids": ids[row : row + 1, :length]},
            method,
            tower="text",
            **few_steps(method),
        )
        torch.testing.assert_close(relevance[row : row + 1, :length], alone, rtol=1e-4, atol=1e-6)
    assert relevance[:, 1:4].abs().sum() > 0


def test_default_target_is_the_best_match():
    model = random_clip()
    pixels, (ids, _) = images(), prompts()
    inputs = {"pixel_values": pixels, "input_ids": ids}
    with torch.no_grad():
        best_prompt = model(pixels, ids).argmax(dim=1)
        best_image = model(pixels, ids).argmax(dim=0)
    torch.testing.assert_close(
        tokenattr.explain(model, inputs, "generic-attribution"),
        tokenattr.explain(model, inputs, "generic-attribution", target=best_prompt),
    )
    torch.testing.assert_close(
        tokenattr.explain(model, inputs, "generic-attribution", tower="text"),
        tokenattr.explain(model, inputs, "generic-attribution", tower="text", target=best_image),
    )


def test_original_value_projection_differs_from_the_fixed_one():
    """The original CLIP Ours-T reads the value projection after the attention residual (spec §9.13)."""
    model = random_clip()
    inputs = {"pixel_values": images(1), "input_ids": prompts()[0][:1]}
    fixed = tokenattr.explain(model, inputs, "ours-t", start_layer=0, steps=4)
    original = tokenattr.explain(model, inputs, "ours-t", start_layer=0, steps=4, value_proj_from="after-attention")
    assert not torch.allclose(fixed, original, rtol=1e-3)
    with pytest.raises(ValueError, match="value_proj_from must be one of"):
        tokenattr.explain(model, inputs, "ours-t", value_proj_from="output")


@pytest.mark.parametrize("tower", ["image", "text"])
def test_cheap_feedback_path_runs_on_either_tower(tower):
    """``feedback_path="last-attention"`` re-runs only the last block of the explained tower: per sample as the
    batch, and a different map from the input path."""
    model = random_clip()
    pixels, (ids, _) = images(), prompts(lengths=(5, 5, 5))
    inputs = {"pixel_values": pixels, "input_ids": ids}
    target = torch.tensor([0, 1]) if tower == "image" else torch.tensor([1, 0, 1])
    options = dict(tower=tower, target=target, steps=4, start_layer=0)
    cheap = tokenattr.explain(model, inputs, "ours-h", feedback_path="last-attention", **options)
    assert torch.isfinite(cheap).all() and cheap.abs().sum() > 0
    assert not torch.allclose(cheap, tokenattr.explain(model, inputs, "ours-h", **options))
    first = {**inputs, "pixel_values": pixels[:1]} if tower == "image" else {**inputs, "input_ids": ids[:1]}
    alone = tokenattr.explain(
        model, first, "ours-h", feedback_path="last-attention", **{**options, "target": target[:1]}
    )
    torch.testing.assert_close(cheap[:1], alone, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh runs it on a GPU)")
@pytest.mark.parametrize("tower", ["image", "text"])
def test_cuda_gives_the_cpu_maps(tower):
    model = random_clip()
    inputs = {"pixel_values": images(), "input_ids": prompts()[0]}
    for method in TOKEN_METHODS:
        on_cpu = tokenattr.explain(model, inputs, method, tower=tower, **few_steps(method))
        on_cuda = tokenattr.explain(model.to("cuda"), inputs, method, tower=tower, **few_steps(method))
        model.to("cpu")
        torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-3, atol=1e-5 * on_cpu.abs().max().item())
