"""The evaluation protocols (tokenattr.protocols) and the ViT segmentation script built on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import load_script, random_vit

import tokenattr
from tokenattr import demo
from tokenattr.data import write_gtsegs_like
from tokenattr.data.synthetic import make_shapes
from tokenattr.evaluation import PERTURBATION_FRACTIONS
from tokenattr.models.vit import ours_to_timm
from tokenattr.protocols import perturbation_test, segmentation_test

FRESH_SEED = 7  # neither the demo model's training, validation nor test data
assert FRESH_SEED not in (demo.TRAIN_DATA_SEED, demo.VALIDATION_DATA_SEED, demo.DEMO_TEST_SEED)


def vit_input(images01: torch.Tensor) -> torch.Tensor:
    return (images01 - 0.5) / 0.5


def test_segmentation_test_matches_scores_computed_by_hand():
    model = random_vit()
    images01 = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(5, 32, 32, dtype=torch.int64)
    masks[:, 4:20, 8:28] = 1
    masks[3, :, :] = 0
    masks[3, 24:, :10] = 1
    batches = list(zip(images01.split(2), masks.split(2)))  # 2 + 2 + 1 images

    result = segmentation_test(model, batches, "ours", normalize=vit_input, image_size=32, progress=False, steps=5)

    # One image at a time, the predicted class named explicitly, the metrics written out (spec §5.1).
    correct = labeled = 0
    intersection, union = np.zeros(2), np.zeros(2)
    for image01, mask in zip(images01, masks.numpy()):
        inputs = vit_input(image01[None])
        with torch.no_grad():
            predicted = int(model(inputs).argmax())
        relevance = tokenattr.explain(model, inputs, "ours-h", target=predicted, steps=5)
        image_map = tokenattr.to_image_map(relevance, 32)[0].numpy()
        foreground = image_map > image_map.mean()
        correct += int((foreground == mask.astype(bool)).sum())
        labeled += mask.size
        for label, predicted_region in ((0, ~foreground), (1, foreground)):
            intersection[label] += (predicted_region & (mask == label)).sum()
            union[label] += (predicted_region | (mask == label)).sum()
    assert result["method"] == "ours-h" and result["count"] == 5
    assert result["pixel_accuracy"] == pytest.approx(correct / labeled, abs=1e-12)
    assert result["mean_iou"] == pytest.approx(np.mean(intersection / union), abs=1e-12)
    assert 0 < result["mean_ap"] <= 1


def test_segmentation_test_rejects_bad_input():
    model = random_vit()
    batch = [(torch.rand(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.int64))]
    with pytest.raises(ValueError, match="unknown method 'nope'; valid methods: ours-h"):
        segmentation_test(model, batch, "nope", normalize=vit_input, progress=False)
    with pytest.raises(ValueError, match="image_size 224 does not match"):
        segmentation_test(model, batch, "rollout", normalize=vit_input, image_size=224, progress=False)
    with pytest.raises(ValueError, match="vis_class must be one of top, target"):
        perturbation_test(model, batch, "rollout", normalize=vit_input, vis_class="pred", progress=False)


@pytest.fixture(scope="module")
def shapes_batches():
    data = make_shapes(24, demo.IMAGE_SIZE, seed=FRESH_SEED)
    images01 = torch.as_tensor(data.images, dtype=torch.float32)
    return list(zip(images01.split(12), torch.from_numpy(data.labels).split(12)))


@pytest.mark.parametrize("method", ["ours-h", "rollout"])
def test_perturbation_test_on_the_demo_model(method, shapes_batches):
    """Removing the most relevant pixels first must hurt more than removing the least relevant first."""
    model = demo.load_demo_model()
    curves = {
        positive: perturbation_test(
            model, shapes_batches, method, normalize=demo.pixel_values, positive=positive, progress=False
        )
        for positive in (True, False)
    }
    for positive, curve in curves.items():
        assert curve["positive"] is positive and curve["vis_class"] == "top" and curve["count"] == 24
        assert len(curve["step_accuracy"]) == len(PERTURBATION_FRACTIONS)
        assert all(0 <= accuracy <= 1 for accuracy in [curve["clean_accuracy"], *curve["step_accuracy"]])
        assert 0 <= curve["auc_chefer"] <= curve["auc_original"] <= 1
    assert curves[True]["clean_accuracy"] == curves[False]["clean_accuracy"] >= 0.75
    assert curves[True]["auc_original"] < curves[False]["auc_original"] - 0.2


def test_perturbation_test_target_class_equals_top_when_the_model_is_right(shapes_batches):
    model = demo.load_demo_model()
    images01, labels = shapes_batches[0]
    right = demo.predict(model, images01) == labels
    batch = [(images01[right], labels[right])]
    top, target = (
        perturbation_test(model, batch, "rollout", normalize=demo.pixel_values, vis_class=vis_class, progress=False)
        for vis_class in ("top", "target")
    )
    assert top == {**target, "vis_class": "top"}


@pytest.fixture
def seg_files(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(40, 50), (32, 32), (45, 30)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    masks = [np.zeros((h, w), dtype=np.uint8) for h, w in sizes]
    for mask in masks:
        mask[5:25, 8:24] = 1
    mat = tmp_path / "gtsegs_ijcv.mat"
    write_gtsegs_like(mat, images, masks)
    checkpoint = tmp_path / "vit.pth"
    torch.save(ours_to_timm(random_vit().state_dict()), checkpoint)
    return mat, checkpoint


def test_imagenet_seg_eval_script_end_to_end(seg_files, tmp_path, capsys):
    mat, checkpoint = seg_files
    out = tmp_path / "results"
    script = load_script("imagenet_seg_eval")
    common = ["--imagenet-seg-path", str(mat), "--checkpoint", str(checkpoint), "--num-heads", "4"]
    results = script.main(
        ["--method", "ours", *common, "--steps", "4", "--limit", "3", "--batch-size", "2", "--num-workers", "0"]
        + ["--out", str(out)]
    )
    assert sorted(p.name for p in out.iterdir()) == ["ours-h.json"]  # no temporary file left
    written = json.loads((out / "ours-h.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert written["method"] == "ours-h" and written["count"] == 3
    assert set(written["metrics"]) == {"pixel_accuracy", "iou_background", "iou_foreground", "mean_iou", "mean_ap"}
    for key, value in written["metrics"].items():
        assert 0 <= value <= 1
        assert written["metrics_x100"][key] == pytest.approx(100 * value)
    assert written["settings"]["method_options"] == {"start_layer": 0, "steps": 4}
    assert written["settings"]["image_mean"] == [0.5, 0.5, 0.5]
    assert {"tokenattr", "torch"} <= set(written["versions"]) and written["date"]
    assert "mIoU" in capsys.readouterr().out

    # The same batches through the protocol directly give the same numbers: the script adds no logic. (Same batch
    # size: batching changes maps by float rounding, which can reorder near-tied pixels and so move the AP.)
    dataset = tokenattr.data.ImagenetSegmentation(mat, image_size=32)
    model = tokenattr.load_model(checkpoint, num_heads=4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    direct = segmentation_test(model, loader, "ours-h", normalize=vit_input, steps=4, progress=False)
    assert {key: direct[key] for key in written["metrics"]} == written["metrics"]


def test_imagenet_seg_eval_script_rejects_bad_flags(seg_files, tmp_path, capsys):
    mat, checkpoint = seg_files
    script = load_script("imagenet_seg_eval")
    common = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "results")]
    with pytest.raises(SystemExit):
        script.main(["--method", "nope", "--imagenet-seg-path", str(mat), *common])
    assert "unknown method 'nope'; valid methods: ours-h" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--method", "rollout", "--imagenet-seg-path", str(tmp_path / "missing.mat"), *common])
    assert "missing.mat does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--method", "raw-attention", "--steps", "5", "--imagenet-seg-path", str(mat), *common])
    assert "--steps does not apply to raw-attention" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
