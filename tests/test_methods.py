"""The method registry and call shape, batching, and each method's behaviour on tiny random models."""

from __future__ import annotations

import pytest
import torch
from conftest import random_vit

import tokenattr
from tokenattr.methods.ours import reasoning_feedback
from tokenattr.models import VisionTransformer, ViTConfig, record

ALL_METHODS = sorted(tokenattr.METHODS)
FAST = {"steps": 4}  # keeps reasoning feedback cheap; the reference tests use the paper's 20


def options_for(method: str) -> dict:
    return dict(FAST) if "steps" in tokenattr.METHODS[method].options else {}


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_a_batch_gives_each_sample_what_it_gets_alone(method, pooling, tiny_images):
    model = random_vit(pooling=pooling)
    targets = torch.tensor([0, 3, 1])
    batched = tokenattr.explain(model, tiny_images, method, target=targets, **options_for(method))
    expected_shape = (3, 32, 32) if tokenattr.METHODS[method].pixels else (3, 16)
    assert batched.shape == expected_shape and torch.isfinite(batched).all()
    for row in range(3):
        alone = tokenattr.explain(
            model, tiny_images[row : row + 1], method, target=int(targets[row]), **options_for(method)
        )
        torch.testing.assert_close(batched[row : row + 1], alone, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_default_target_is_the_predicted_class(method, tiny_vit, tiny_images):
    predicted = tiny_vit(tiny_images).argmax(dim=-1)
    by_default = tokenattr.explain(tiny_vit, tiny_images, method, **options_for(method))
    explicit = tokenattr.explain(tiny_vit, tiny_images, method, target=predicted, **options_for(method))
    torch.testing.assert_close(by_default, explicit, rtol=0, atol=0)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_explain_is_deterministic_and_leaves_the_model_untouched(method, tiny_vit, tiny_images):
    first = tokenattr.explain(tiny_vit, tiny_images, method, **options_for(method))
    with torch.no_grad():  # explain enables gradients itself where a method needs them
        second = tokenattr.explain(tiny_vit, tiny_images, method, **options_for(method))
    assert torch.equal(first, second)
    assert tiny_vit.encoder.recording is None
    assert all(param.grad is None for param in tiny_vit.parameters())


def test_reasoning_feedback_chunks_give_the_same_result(tiny_vit, tiny_images):
    target = torch.tensor([0, 1, 2])
    inputs = {"pixel_values": tiny_images}
    with torch.enable_grad():
        whole = reasoning_feedback(tiny_vit, inputs, target, steps=5, internal_batch_size=1000)
        chunked = reasoning_feedback(tiny_vit, inputs, target, steps=5, internal_batch_size=2)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-8)


def test_reasoning_feedback_matches_one_pass_per_step(tiny_vit, tiny_images):
    """W = mean_h max(0, (1/K) Σ_k ∂y_c/∂A_L(α_k x)), written the original's way: one pass per α."""
    image, target, steps = tiny_images[:1], 2, 6
    grads = []
    for alpha in torch.linspace(0, 1, steps).tolist():
        with record(tiny_vit, [-1], differentiable=True) as records:
            logits = tiny_vit(image * alpha)
        grads.append(torch.autograd.grad(logits[0, target], records[1].attn_probs)[0])
    expected = torch.stack(grads).mean(dim=0).clamp(min=0).mean(dim=1)
    with torch.enable_grad():
        ours = reasoning_feedback(tiny_vit, {"pixel_values": image}, torch.tensor([target]), steps=steps)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-8)


def test_ours_head_wise_follows_its_equation(tiny_vit, tiny_images):
    """Ours-H written out with einsum for one image: (W ⊙ Π_l(I + Σ_h w̃_lh A_lh))[CLS, patches]."""
    image, target = tiny_images[1:2], 4
    with record(tiny_vit, differentiable=True) as records:
        logits = tiny_vit(image)
    attns = [records[layer].attn_probs for layer in (0, 1)]
    grads = torch.autograd.grad(logits[0, target], attns)
    rollout = torch.eye(17)
    for attn, grad in zip(attns, grads):
        attn = attn[0].detach()
        weights = torch.einsum("hji,hjk->hik", attn, grad[0]).abs().mean(dim=(1, 2))
        rollout = rollout + torch.einsum("h,hij->ij", weights / weights.sum(), attn) @ rollout
    with torch.enable_grad():
        feedback = reasoning_feedback(tiny_vit, {"pixel_values": image}, torch.tensor([target]), steps=3)[0]
    expected = (feedback * rollout)[0, 1:]
    ours = tokenattr.explain(tiny_vit, image, "ours-h", target=target, start_layer=0, steps=3)
    torch.testing.assert_close(ours[0], expected, rtol=1e-5, atol=1e-8)


def test_ours_token_wise_abs_option(tiny_vit, tiny_images):
    plain = tokenattr.explain(tiny_vit, tiny_images, "ours-t", start_layer=0, abs_rollout=False, **FAST)
    absolute = tokenattr.explain(tiny_vit, tiny_images, "ours-t", start_layer=0, abs_rollout=True, **FAST)
    assert (absolute >= 0).all()
    assert not torch.equal(plain, absolute) or (plain >= 0).all()


def test_generic_attribution_clamp_order_matters(tiny_vit, tiny_images):
    clamp_first = tokenattr.explain(tiny_vit, tiny_images, "generic-attribution", start_layer=0)
    mean_first = tokenattr.explain(tiny_vit, tiny_images, "generic-attribution", start_layer=0, clamp_first=False)
    assert (clamp_first >= mean_first - 1e-7).all()  # clamping each head first can only add mass
    assert not torch.allclose(clamp_first, mean_first)


def test_start_layer_selects_blocks(tiny_vit, tiny_images):
    everything = tokenattr.explain(tiny_vit, tiny_images, "rollout", start_layer=0)
    last_only = tokenattr.explain(tiny_vit, tiny_images, "rollout", start_layer=1)
    assert not torch.allclose(everything, last_only)
    with pytest.raises(ValueError, match=r"start_layer must be a block index in 0\.\.1 \(0-based\), got 2"):
        tokenattr.explain(tiny_vit, tiny_images, "rollout", start_layer=2)


@pytest.mark.parametrize(("depth", "ours_h", "ours_t"), [(12, 3, 6), (24, 6, 12), (4, 1, 2)])
def test_family_defaults_scale_vit_b_start_blocks(depth, ours_h, ours_t):
    model = VisionTransformer(ViTConfig(depth=depth, embed_dim=64, num_heads=1, mlp_dim=64, image_size=32))
    assert model.method_defaults("ours-h") == {"start_layer": ours_h}
    assert model.method_defaults("ours-t") == {"start_layer": ours_t, "abs_rollout": True}
    assert model.method_defaults("attn-gradcam") == {}


def test_aliases_of_the_original_reach_the_same_method(tiny_vit, tiny_images):
    assert tokenattr.get_method("ours") is tokenattr.METHODS["ours-h"]
    assert tokenattr.get_method("ours_c") is tokenattr.METHODS["ours-t"]
    assert tokenattr.get_method("attn_last_layer") is tokenattr.METHODS["raw-attention"]
    torch.testing.assert_close(
        tokenattr.explain(tiny_vit, tiny_images, "attn_gradcam"),
        tokenattr.explain(tiny_vit, tiny_images, "attn-gradcam"),
    )


def test_unknown_method_lists_the_valid_ones(tiny_vit, tiny_images):
    with pytest.raises(ValueError, match=r"unknown method 'gradcam\+\+'; valid methods: ours-h, ours-t, raw-attention"):
        tokenattr.explain(tiny_vit, tiny_images, "gradcam++")


def test_unknown_option_lists_the_method_options(tiny_vit, tiny_images):
    with pytest.raises(TypeError, match=r"method 'rollout' has no option\(s\) steps; its options: start_layer"):
        tokenattr.explain(tiny_vit, tiny_images, "rollout", steps=3)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (True, TypeError, "target must be None, an int or a LongTensor"),
        (1.0, TypeError, "target must be None, an int or a LongTensor"),
        (torch.tensor([0, 1]), ValueError, r"LongTensor of shape \[3\]"),
        (torch.tensor([0.0, 1.0, 2.0]), ValueError, r"LongTensor of shape \[3\]"),
        (5, ValueError, "out of range: the model has 5 classes"),
        (-1, ValueError, "out of range"),
    ],
)
def test_bad_targets_are_refused(tiny_vit, tiny_images, target, error, message):
    with pytest.raises(error, match=message):
        tokenattr.explain(tiny_vit, tiny_images, "raw-attention", target=target)


def test_bad_step_options_are_refused(tiny_vit, tiny_images):
    with pytest.raises(ValueError, match="steps must be a positive int, got 0"):
        tokenattr.explain(tiny_vit, tiny_images, "ours-h", steps=0)
    with pytest.raises(ValueError, match="internal_batch_size must be a positive int"):
        tokenattr.explain(tiny_vit, tiny_images, "ours-t", internal_batch_size=0)


def test_bad_inputs_are_refused(tiny_vit):
    with pytest.raises(ValueError, match=r"pixel_values must be a tensor \[B, 3, 32, 32\]"):
        tokenattr.explain(tiny_vit, torch.zeros(3, 32, 32), "rollout")
    with pytest.raises(TypeError, match="inputs must be a tensor or a mapping"):
        tokenattr.explain(tiny_vit, [torch.zeros(1, 3, 32, 32)], "rollout")


class TestImageMaps:
    def test_maps_are_min_max_normalised_per_image(self):
        relevance = torch.stack([torch.arange(16.0), 5 * torch.arange(16.0) - 3])
        maps = tokenattr.to_image_map(relevance, image_size=32)
        assert maps.shape == (2, 32, 32)
        for image_map in maps:
            assert image_map.min() == 0 and image_map.max() == 1
        torch.testing.assert_close(maps[0], maps[1])

    def test_constant_map_is_zero_not_nan(self):
        maps = tokenattr.to_image_map(torch.full((1, 16), 0.3), image_size=32)
        assert torch.equal(maps, torch.zeros(1, 32, 32))

    def test_up_sampling_is_bilinear_from_the_patch_grid(self):
        relevance = torch.zeros(1, 4)
        relevance[0, 1] = 1  # top-right patch of a 2x2 grid
        image_map = tokenattr.to_image_map(relevance, image_size=8)[0]
        assert image_map[0, 7] == 1 and image_map[7, 0] == 0
        assert 0 < image_map[3, 4] < 1  # interpolated near the patch border

    def test_rectangular_images_and_pixel_maps(self):
        assert tokenattr.to_image_map(torch.rand(2, 8), image_size=(16, 32)).shape == (2, 16, 32)
        pixels = torch.rand(2, 16, 16)
        torch.testing.assert_close(tokenattr.to_image_map(pixels, image_size=16).amax(dim=(1, 2)), torch.ones(2))

    def test_tokens_that_do_not_fit_the_grid_are_refused(self):
        with pytest.raises(ValueError, match="15 tokens do not form a patch grid"):
            tokenattr.to_image_map(torch.rand(1, 15), image_size=32)
