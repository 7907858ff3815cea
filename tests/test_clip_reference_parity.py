"""Method parity with the original CLIP code on ../shared/reference/clip (DESIGN §5.2).

The tiny random CLIP there has 3 image blocks and 3 heads; maps are compared after min-max to 1e-4 absolute
(observed ≤ 3e-6: float32 summation order, nothing else). The original's ``num_layers`` skips blocks
``i <= num_layers``, so its NL = 1, 0, -1 are our ``start_layer`` 2, 1, 0. Its Ours-T computes the value
projection from the state after the attention residual (spec §9.13); ``value_proj_from="after-attention"``
reproduces it, and the default (the attention's own input) is checked against the intermediates the reference
stores for that case.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import minmax, reference_dir

import tokenattr
from tokenattr.models import record

TOLERANCE = 1e-4
START_LAYERS = {"1": 2, "0": 1, "-1": 0}  # the original's num_layers -> our first included block
BUG = {"value_proj_from": "after-attention"}
# reference key -> (method, options); "{nl}" keys expand over START_LAYERS
CASES = {
    "ours_nl{nl}": ("ours-h", {}),
    "ours_c_nl{nl}": ("ours-t", BUG),
    "generic_attribution_nl{nl}": ("generic-attribution", {}),
    "ours_nl0_steps5": ("ours-h", {"start_layer": 1, "steps": 5}),
    "rollout": ("rollout", {}),
    "rollout_sl1": ("rollout", {"start_layer": 1}),
    "attn_last_layer": ("raw-attention", {}),
    "attn_gradcam": ("attn-gradcam", {}),
}


def _expanded_cases():
    for key, (method, options) in CASES.items():
        if "{nl}" not in key:
            yield key, method, options
            continue
        for nl, start in START_LAYERS.items():
            yield key.format(nl=nl), method, {"start_layer": start, **options}


@pytest.fixture(scope="module")
def reference():
    folder = reference_dir("clip")
    outputs = dict(np.load(folder / "outputs.npz"))
    model = tokenattr.load_model(folder / "tiny_clip_state_dict.npz")
    pixels = torch.from_numpy(outputs["input_normalized"])
    prompts = torch.from_numpy(outputs["text_tokens"])
    return model, pixels, prompts, outputs, dict(np.load(folder / "p0_intermediates.npz"))


def test_logits_match_the_original(reference):
    model, pixels, prompts, outputs, _ = reference
    with torch.no_grad():
        logits = model(pixels, prompts)
    np.testing.assert_allclose(logits.numpy(), outputs["logits_per_image"], rtol=1e-5)


@pytest.mark.parametrize("prompt", range(3))
@pytest.mark.parametrize(("key", "method", "options"), list(_expanded_cases()), ids=lambda v: str(v))
def test_method_matches_the_original(reference, prompt, key, method, options):
    model, pixels, prompts, outputs, _ = reference
    inputs = {"pixel_values": pixels, "input_ids": prompts[prompt : prompt + 1]}
    ours = tokenattr.explain(model, inputs, method, **options)
    assert ours.shape == (1, 49)
    expected = outputs[f"p{prompt}/{key}"].reshape(1, 49)  # Grad-CAM's is stored as its 7x7 map
    np.testing.assert_allclose(minmax(ours), minmax(expected), atol=TOLERANCE)


def test_defaults_are_the_original_clis_last_block(reference):
    """Our defaults are what the original's ``--start_layer 10`` means on ViT-B/32: the last block only. On this
    3-block model the same flag leaves no block at all and the original returns all zeros (then NaN maps)."""
    model, pixels, prompts, outputs, _ = reference
    inputs = {"pixel_values": pixels, "input_ids": prompts[:1]}
    for method, key in (
        ("ours-h", "ours_nl1"),
        ("ours-t", "ours_c_nl1"),
        ("generic-attribution", "generic_attribution_nl1"),
    ):
        options = BUG if method == "ours-t" else {}
        np.testing.assert_allclose(
            minmax(tokenattr.explain(model, inputs, method, **options)), minmax(outputs[f"p0/{key}"]), atol=TOLERANCE
        )
    assert not outputs["p0/generic_attribution_default"].any() and not outputs["p0/ours_nl10"].any()


def test_a_batch_of_prompts_gives_each_prompt_its_own_map(reference):
    """One image against three prompts, each explained for its own prompt: the original's batched calls (where
    they are right) and its single-prompt calls. Its batched Grad-CAM min-maxes over the whole batch, so prompts
    1 and 2 are compared with their single calls."""
    model, pixels, prompts, outputs, _ = reference
    inputs = {"pixel_values": pixels.expand(3, -1, -1, -1), "input_ids": prompts}
    which = torch.arange(3)
    batched = {
        "ours_c_nl0": ("ours-t", {"start_layer": 1, **BUG}),
        "generic_attribution_nl0": ("generic-attribution", {"start_layer": 1}),
        "rollout": ("rollout", {}),
        "attn_last_layer": ("raw-attention", {}),
    }
    for key, (method, options) in batched.items():
        ours = tokenattr.explain(model, inputs, method, target=which, **options)
        for prompt in range(3):
            np.testing.assert_allclose(minmax(ours[prompt]), minmax(outputs[f"batched3/{key}"][prompt]), atol=TOLERANCE)
    gradcam = tokenattr.explain(model, inputs, "attn-gradcam", target=which)
    for prompt in range(3):
        expected = outputs[f"p{prompt}/attn_gradcam"].reshape(49)
        np.testing.assert_allclose(minmax(gradcam[prompt]), minmax(expected), atol=TOLERANCE)


def test_default_target_is_the_best_matching_prompt(reference):
    """The original's batched Ours-H explains the argmax over the prompts (prompt 1, "dog")."""
    model, pixels, prompts, outputs, _ = reference
    ours = tokenattr.explain(model, {"pixel_values": pixels, "input_ids": prompts}, "ours-h", start_layer=1)
    np.testing.assert_allclose(minmax(ours), minmax(outputs["batched3/ours_nl0"]), atol=TOLERANCE)
    np.testing.assert_allclose(minmax(ours), minmax(outputs["p1/ours_nl0"]), atol=TOLERANCE)


def test_intermediates(reference):
    """Attention, its gradient and the token ratios of Ours-T, for prompt 0 over all blocks; the default value
    projection is the one the reference computes from the block input (``vproj_norm_from_block_input``)."""
    model, pixels, prompts, _, stored = reference
    similarity, inputs = model.explained_tower({"pixel_values": pixels, "input_ids": prompts[:1]}, "image")
    for source, key in (("block-input", "vproj_norm_from_block_input"), ("after-attention", "vproj_norm_as_stored")):
        with record(similarity, value_proj=True, differentiable=True, value_proj_from=source) as records:
            logits = similarity(**inputs)
        grads = torch.autograd.grad(logits[0, 0], [records[layer].attn_probs for layer in range(3)])
        value_norms = torch.stack([records[layer].value_proj[0].norm(dim=-1) for layer in range(3)])
        np.testing.assert_allclose(value_norms.detach().numpy(), stored[key], rtol=1e-4)
    input_norms = torch.stack([records[layer].block_input[0].norm(dim=-1) for layer in range(3)])
    np.testing.assert_allclose(input_norms.detach().numpy(), stored["block_input_norm"], rtol=1e-4)
    attn = torch.stack([records[layer].attn_probs[0] for layer in range(3)]).detach().numpy()
    np.testing.assert_allclose(attn, stored["attn"], atol=1e-5)  # float32 softmax of scores up to ~10
    scale = np.abs(stored["attn_grad"]).max()
    np.testing.assert_allclose(torch.stack([g[0] for g in grads]).numpy(), stored["attn_grad"], atol=1e-4 * scale)
