"""The ViT family and the shared core: parity with transformers, checkpoint formats, recording."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tokenattr
from tokenattr.models import CheckpointMismatchError, record
from tokenattr.models.vit import hf_to_timm, ours_to_timm, timm_to_hf

transformers = pytest.importorskip("transformers")


def hf_config(**overrides):
    settings = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=5,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    settings.update(overrides)
    return transformers.ViTConfig(**settings)


def randomised_hf_vit(config, seed=0):
    """An HF ViT whose weights are spread wider than its init, so attention and logits are not near-uniform."""
    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model


def assert_logits_close(ours, reference):
    # DESIGN §5.1: 1e-5 relative in float32; atol covers logits that are near zero.
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)


def test_hugging_face_folder_loads_with_the_same_logits(tmp_path, tiny_images):
    hf_model = randomised_hf_vit(hf_config(layer_norm_eps=1e-12))
    hf_model.save_pretrained(tmp_path)
    ours = tokenattr.load_model(tmp_path)
    assert ours.config.num_heads == 4 and ours.config.depth == 2 and ours.config.layer_norm_eps == 1e-12
    with torch.no_grad():
        assert_logits_close(ours(tiny_images), hf_model(pixel_values=tiny_images).logits)


def test_our_weights_converted_to_hugging_face_give_the_same_logits(tmp_path, tiny_vit, tiny_images):
    from safetensors.torch import save_file

    hf_config().save_pretrained(tmp_path)
    save_file(timm_to_hf(ours_to_timm(tiny_vit.state_dict())), str(tmp_path / "model.safetensors"))
    hf_model = transformers.ViTForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert_logits_close(tiny_vit(tiny_images), hf_model(pixel_values=tiny_images).logits)


def test_in_memory_hugging_face_state_dict_loads(tiny_images):
    hf_model = randomised_hf_vit(hf_config(), seed=1)
    ours = tokenattr.load_model(hf_model.state_dict(), num_heads=4)
    with torch.no_grad():
        assert_logits_close(ours(tiny_images), hf_model(pixel_values=tiny_images).logits)


def test_name_conversion_round_trips(tiny_vit):
    timm_state = ours_to_timm(tiny_vit.state_dict())
    back = hf_to_timm(timm_to_hf(timm_state))
    assert set(back) == set(timm_state)
    assert all(torch.equal(back[name], timm_state[name]) for name in timm_state)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz"])
def test_state_dict_files_in_every_format(tmp_path, tiny_vit, tiny_images, suffix):
    state = ours_to_timm(tiny_vit.state_dict())
    path = tmp_path / f"vit{suffix}"
    if suffix == ".pth":
        torch.save({"model": state}, path)  # nested, as training checkpoints (MAE) store it
    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({name: value.contiguous() for name, value in state.items()}, str(path))
    else:
        np.savez(path, **{name: value.numpy() for name, value in state.items()})
    loaded = tokenattr.load_model(path, num_heads=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tiny_images), tiny_vit(tiny_images), rtol=0, atol=0)


def test_architecture_is_read_from_the_weights(tiny_vit):
    state = ours_to_timm(tiny_vit.state_dict())
    config = tokenattr.load_model(state, num_heads=2).config
    assert (
        config.image_size,
        config.patch_size,
        config.embed_dim,
        config.depth,
        config.num_classes,
        config.mlp_dim,
    ) == (32, 8, 32, 2, 5, 64)
    assert config.num_heads == 2
    assert tokenattr.load_model(state).config.num_heads == 1  # width 32 / 64 rounds up to one head


def test_data_parallel_prefix_is_stripped(tiny_vit, tiny_images):
    state = {f"module.{name}": value for name, value in ours_to_timm(tiny_vit.state_dict()).items()}
    with torch.no_grad():
        torch.testing.assert_close(tokenattr.load_model(state, num_heads=4)(tiny_images), tiny_vit(tiny_images))


def test_checkpoint_that_does_not_fit_names_the_keys(tiny_vit):
    state = ours_to_timm(tiny_vit.state_dict())
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointMismatchError, match=r"missing keys: .*blocks\.1\.mlp\.fc2\.bias.*unexpected keys: .*extra"
    ):
        tokenattr.load_model(state, num_heads=4)
    state = ours_to_timm(tiny_vit.state_dict())
    state["blocks.0.attn.proj.weight"] = torch.zeros(32, 16)
    with pytest.raises(CheckpointMismatchError, match=r"attn\.proj\.weight: checkpoint \(32, 16\), model \(32, 32\)"):
        tokenattr.load_model(state, num_heads=4)


def test_unrecognised_sources_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="supported families: vit"):
        tokenattr.load_model({"encoder.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="unknown family 'resnet'"):
        tokenattr.load_model({"cls_token": torch.zeros(1)}, family="resnet")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        tokenattr.load_model(tmp_path / "missing.pth")
    (tmp_path / "weights.txt").write_text("not weights")
    with pytest.raises(ValueError, match="unsupported checkpoint file 'weights.txt'"):
        tokenattr.load_model(tmp_path / "weights.txt")
    (tmp_path / "config.json").write_text('{"model_type": "swin"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported Hugging Face model_type 'swin'"):
        tokenattr.load_model(tmp_path)


def test_wrong_input_shape_says_what_was_expected(tiny_vit):
    with pytest.raises(ValueError, match=r"pixel_values must be a tensor \[B, 3, 32, 32\], got \(1, 3, 64, 64\)"):
        tiny_vit(torch.zeros(1, 3, 64, 64))


def test_recording_leaves_the_logits_unchanged(tiny_vit, tiny_images):
    with torch.no_grad():
        plain = tiny_vit(tiny_images)
        with record(tiny_vit, value_proj=True) as records:
            recorded = tiny_vit(tiny_images)
    torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-6)
    assert sorted(records) == [0, 1]
    first = records[0]
    assert first.attn_probs.shape == (3, 4, 17, 17)
    torch.testing.assert_close(first.attn_probs.sum(-1), torch.ones(3, 4, 17))
    assert first.block_input.shape == first.value_proj.shape == (3, 17, 32)


def test_value_projection_is_values_through_the_output_weight(tiny_vit, tiny_images):
    block = tiny_vit.encoder.blocks[1]
    with torch.no_grad(), record(tiny_vit, [1], value_proj=True) as records:
        tiny_vit(tiny_images)
    values = block.attn.qkv(block.norm1(records[1].block_input))[..., 64:]  # v with its bias, heads concatenated
    torch.testing.assert_close(records[1].value_proj, values @ block.attn.proj.weight.T)


def test_recording_is_removed_after_an_error(tiny_vit):
    with pytest.raises(ValueError), record(tiny_vit):
        tiny_vit(torch.zeros(1, 3, 8, 8))
    assert tiny_vit.encoder.recording is None
    with pytest.raises(ValueError, match="layer 5 does not exist"):
        with record(tiny_vit, [5]):
            pass
    assert tiny_vit.encoder.recording is None


def test_plain_inference_works_under_no_grad(tiny_vit, tiny_images):
    with torch.no_grad():
        assert not tiny_vit(tiny_images).requires_grad


def test_differentiable_recording_needs_grad_mode(tiny_vit):
    with torch.no_grad(), pytest.raises(RuntimeError, match="grad mode"):
        with record(tiny_vit, differentiable=True):
            pass


def test_gradients_reach_attention_of_a_frozen_model(tiny_vit, tiny_images):
    tiny_vit.requires_grad_(False)
    with record(tiny_vit, [1], differentiable=True) as records:
        logits = tiny_vit(tiny_images)
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), records[1].attn_probs)
    assert grad.shape == (3, 4, 17, 17) and grad.abs().sum() > 0
