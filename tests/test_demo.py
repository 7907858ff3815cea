"""The demo: its bundled model, sanity checks of the maps on known evidence (DESIGN §5.5), training, the command,
and the text side (a tiny BERT on synthetic reviews, the rationale test against a random ranking).

The bundled model is the committed ``tokenattr/assets/demo_vit.safetensors``; every check on it uses images
drawn with a seed that neither its training, its validation nor the demo's own test set used.
"""

from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import spearmanr

import tokenattr
from tokenattr import demo, demo_text
from tokenattr.data.synthetic import SHAPE_CLASSES, make_shapes
from tokenattr.models import VisionTransformer
from tokenattr.viz import overlay

FRESH_SEED = 7
assert FRESH_SEED not in (demo.TRAIN_DATA_SEED, demo.VALIDATION_DATA_SEED, demo.DEMO_TEST_SEED)


@pytest.fixture(scope="module")
def model():
    return demo.load_demo_model()


@pytest.fixture(scope="module")
def fresh():
    return make_shapes(200, demo.IMAGE_SIZE, seed=FRESH_SEED)


def test_bundled_weights_are_small_timm_named_and_documented():
    assert demo.ASSET_PATH.stat().st_size < 2 * 1024 * 1024
    from safetensors.torch import load_file

    state = load_file(str(demo.ASSET_PATH))
    assert "blocks.0.attn.qkv.weight" in state and not any(name.startswith("encoder.") for name in state)
    assert all(value.dtype == torch.float32 for value in state.values())
    metadata = demo.demo_metadata()
    assert metadata["val_accuracy"] >= 0.9
    assert metadata["settings"]["seed"] == demo.TrainSettings().seed
    assert metadata["class_names"] == list(SHAPE_CLASSES)


def test_bundled_model_classifies_fresh_images(model, fresh):
    assert model.config.num_heads == demo.DEMO_NUM_HEADS
    assert demo.accuracy(model, fresh.images, fresh.labels) >= 0.85


def _mean_inside_and_outside(maps: torch.Tensor, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    inside = torch.from_numpy(masks).bool()
    mean_in = (maps * inside).sum(dim=(1, 2)) / inside.sum(dim=(1, 2))
    mean_out = (maps * ~inside).sum(dim=(1, 2)) / (~inside).sum(dim=(1, 2))
    return mean_in, mean_out


def test_ours_h_puts_relevance_on_the_object(model, fresh):
    """DESIGN §5.5: the class evidence is exactly the object, so the trained model's map must sit on it."""
    count = 24
    relevance = tokenattr.explain(model, demo.pixel_values(fresh.images[:count]), "ours-h")
    maps = tokenattr.to_image_map(relevance, demo.IMAGE_SIZE)
    mean_in, mean_out = _mean_inside_and_outside(maps, fresh.masks[:count])
    assert (mean_in > mean_out).float().mean().item() >= 0.7
    # The mask covers about a tenth of the image; a map blind to it would put about that share there.
    assert (maps * torch.from_numpy(fresh.masks[:count])).sum() / maps.sum() > 0.25


def test_model_randomisation_changes_ours_h(model, fresh):
    """Adebayo et al. (2018): maps that survive randomising the weights do not explain the model."""
    count = 16
    inputs = demo.pixel_values(fresh.images[:count])
    target = torch.from_numpy(fresh.labels[:count])  # the same logit in both models
    randomised = demo.init_weights(copy.deepcopy(model), seed=123).eval()
    trained_rel = tokenattr.explain(model, inputs, "ours-h", target=target)
    random_rel = tokenattr.explain(randomised, inputs, "ours-h", target=target)
    assert trained_rel.shape == random_rel.shape == (count, model.num_patches)
    correlations = [spearmanr(a, b).statistic for a, b in zip(trained_rel.numpy(), random_rel.numpy())]
    assert not np.isnan(correlations).any()
    assert np.mean(correlations) < 0.5


def _loss(model, data) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(demo.pixel_values(data.images)), torch.from_numpy(data.labels)).item()


def test_short_training_lowers_loss_and_repeats_exactly():
    settings = demo.TrainSettings(n_train=64, n_val=16, epochs=3, batch_size=16)
    trained, summary = demo.train_demo_model(settings, progress=False)
    again, _ = demo.train_demo_model(settings, progress=False)
    for (name, value), other in zip(trained.state_dict().items(), again.state_dict().values()):
        assert torch.equal(value, other), name
    data = make_shapes(settings.n_train, demo.IMAGE_SIZE, seed=settings.data_seed)
    assert _loss(trained, data) < _loss(demo.initial_demo_model(settings, data.images), data) - 0.02
    assert len(summary["epoch_losses"]) == settings.epochs and 0 <= summary["val_accuracy"] <= 1


def test_saved_model_loads_back_with_its_metadata(tmp_path):
    model = demo.init_weights(VisionTransformer(demo.DEMO_CONFIG), seed=3).eval()
    path = demo.save_demo_model(model, {"note": "test"}, tmp_path / "weights.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]  # no temporary file left
    loaded = demo.load_demo_model(path)
    inputs = demo.pixel_values(make_shapes(2, demo.IMAGE_SIZE, seed=0).images)
    with torch.no_grad():
        torch.testing.assert_close(loaded(inputs), model(inputs), rtol=0, atol=0)
    assert demo.demo_metadata(path) == {"note": "test"}
    with pytest.raises(FileNotFoundError, match="--retrain"):
        demo.load_demo_model(tmp_path / "missing.safetensors")


def test_mask_scores_on_known_maps():
    masks = torch.zeros(3, 4, 4, dtype=torch.uint8)
    masks[:, :2, :2] = 1
    maps = torch.stack([masks.float()[0], torch.ones(4, 4), torch.zeros(4, 4)])
    mass_inside, inside_beats_outside = demo.mask_scores(maps, masks)
    torch.testing.assert_close(mass_inside, torch.tensor([1.0, 0.25, 0.0], dtype=torch.float64))
    assert inside_beats_outside.tolist() == [True, False, False]


def test_overlay_blends_the_heatmap_into_the_image():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    heatmap = torch.linspace(0, 1, 256).reshape(16, 16)
    blended = overlay(image, heatmap, alpha=0.5)
    plain = image.permute(1, 2, 0).numpy()
    assert blended.shape == (16, 16, 3) and blended.min() >= 0 and blended.max() <= 1
    assert np.abs(blended - plain).mean() > 0.1
    np.testing.assert_allclose(overlay(plain, heatmap.numpy(), alpha=0.0), plain, atol=1e-6)
    with pytest.raises(ValueError, match="heatmap"):
        overlay(image, heatmap[:8])


def test_main_writes_the_grid_and_the_results(tmp_path, capsys):
    out = tmp_path / "demo"
    results = demo.main(
        ["--out", str(out), "--num-images", "2", "--eval-images", "8", "--methods", "ours-h", "rollout", "--skip-text"]
    )
    assert sorted(p.name for p in out.iterdir()) == ["demo_grid.png", "demo_results.json"]

    with Image.open(out / "demo_grid.png") as png:
        assert png.format == "PNG"
        # 2 rows x (image + 2 methods) panels of 1.7 inch at 100 dpi, plus the title strip.
        assert png.size == (510, 370)
        pixels = np.asarray(png.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20

    written = json.loads((out / "demo_results.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert written["accuracy"] >= 0.85
    assert list(written["methods"]) == ["ours-h", "rollout"]
    for scores in written["methods"].values():
        assert 0 <= scores["mass_inside_mask"] <= 1 and 0 <= scores["inside_beats_outside"] <= 1
        assert scores["segmentation"]["count"] == 8 and 0 <= scores["segmentation"]["mean_iou"] <= 1
        for kind in ("positive", "negative"):
            assert scores["perturbation"][kind]["count"] == 8 and 0 <= scores["perturbation"][kind]["auc_original"] <= 1
    assert written["settings"]["protocols"]["auc_printed"] == "auc_original"
    assert written["settings"]["training"]["val_accuracy"] >= 0.9
    assert {"torch", "tokenattr"} <= set(written["versions"])
    printed = capsys.readouterr().out
    assert "ours-h" in printed and "rollout" in printed and "accuracy" in printed
    assert "mIoU" in printed and "AUC = auc_original" in printed and "segmentation: ours-h beats rollout on" in printed
    assert "text" not in written


# Small enough for seconds on one thread, still about 90% test accuracy.
SMALL_TEXT = demo_text.TextSettings(num_train=600, num_val=50, num_test=100, epochs=4, lr=2e-3)


def test_text_demo_ranks_the_planted_rationales_far_above_random(tmp_path, capsys, monkeypatch):
    """DESIGN §5.5 for text: the words that decide each review's label are known, Ours-H must find them."""
    monkeypatch.setattr(demo, "run_text_demo", functools.partial(demo_text.run_text_demo, settings=SMALL_TEXT))
    out = tmp_path / "demo"
    results = demo.main(["--out", str(out), "--skip-images"])
    assert sorted(p.name for p in out.iterdir()) == ["demo_results.json", demo_text.DATA_FOLDER]
    written = json.loads((out / "demo_results.json").read_text())
    assert written == json.loads(json.dumps(results)) and set(written) == {"text", "versions"}

    text = written["text"]
    expected = [name for name, method in tokenattr.METHODS.items() if not method.pixels]
    assert list(text["methods"]) == expected and "lrp" not in expected
    assert text["accuracy"] >= 0.85 and text["settings"]["num_train"] == SMALL_TEXT.num_train
    ks = [str(k) for k in demo_text.TEXT_KS]
    for scores in [*text["methods"].values(), text["random"]]:
        assert list(scores["token_f1"]) == ks
        assert all(0 <= scores["token_f1"][k]["instance_macro"]["f1"] <= 1 for k in ks)

    def f1(scores: dict, k: int) -> float:
        return scores["token_f1"][str(k)]["instance_macro"]["f1"]

    # A review has about 3 rationale words among 30: a random ranking's F1 at k = 3 is about 0.1.
    assert f1(text["methods"]["ours-h"], 3) > f1(text["random"], 3) + 0.4
    assert f1(text["random"], 3) < 0.2

    printed = capsys.readouterr().out
    assert "random ranking" in printed and "F1@3" in printed and "demo BERT: accuracy" in printed
    assert all(f"  {name} " in printed for name in expected)


def test_text_side_needs_a_token_method(tmp_path, capsys):
    demo.main(["--out", str(tmp_path), "--skip-images", "--methods", "lrp"])
    assert "text side skipped" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "demo_results.json").read_text())) == {"versions"}
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), "--skip-images", "--skip-text"])
    assert "leave nothing to run" in capsys.readouterr().err


def test_main_rejects_an_unknown_method(tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), "--methods", "nope"])
    assert "valid methods: ours-h" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
