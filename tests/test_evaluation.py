"""The segmentation and perturbation metrics (DESIGN §5.3): reference parity with the original's evaluation code,
hand-computed values, shard merging and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import reference_dir

import tokenattr
from tokenattr.evaluation import (
    PERTURBATION_FRACTIONS,
    PerturbationCurve,
    SegmentationMetrics,
    image_segmentation_scores,
    perturb,
    run_perturbation,
    top1_hits,
)

IMAGES = ("img0", "img1")


@pytest.fixture(scope="module")
def reference():
    folder = reference_dir("vit_a")
    outputs = {image: dict(np.load(folder / f"{image}_outputs.npz")) for image in IMAGES}
    state = {name: torch.from_numpy(array) for name, array in np.load(folder / "tiny_vit_state_dict.npz").items()}
    return outputs, tokenattr.load_model(state, num_heads=3)


def _blob_masks(batch: int, size: int, seed: int) -> np.ndarray:
    """Masks ``[B, size, size]`` with one random rectangle of 1s each (both classes always present)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((batch, size, size), dtype=np.uint8)
    for mask in masks:
        top, left = rng.integers(0, size // 2, size=2)
        height, width = rng.integers(2, size // 2, size=2)
        mask[top : top + height, left : left + width] = 1
    return masks


def _random_maps(batch: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, size, size, generator=torch.Generator().manual_seed(seed))


# --- segmentation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image", IMAGES)
def test_segmentation_matches_original(reference, image):
    outputs = reference[0][image]
    scores = image_segmentation_scores(outputs["top/vis224/ours_sl1"], outputs["gt_mask"])
    assert scores.threshold == outputs["top/ours_sl1/seg_threshold_mean"]
    assert scores.correct == outputs["top/ours_sl1/seg_correct"]
    assert scores.labeled == outputs["top/ours_sl1/seg_labeled"]
    assert list(scores.intersection) == outputs["top/ours_sl1/seg_inter"].tolist()
    assert list(scores.union) == outputs["top/ours_sl1/seg_union"].tolist()
    assert scores.average_precision == pytest.approx(outputs["top/ours_sl1/seg_ap"][0], abs=1e-12, rel=0)


def test_segmentation_dataset_totals_match_original(reference):
    outputs = reference[0]
    metrics = SegmentationMetrics()
    metrics.update(
        np.stack([outputs[image]["top/vis224/ours_sl1"] for image in IMAGES]),
        np.stack([outputs[image]["gt_mask"] for image in IMAGES]),
    )
    key = "top/ours_sl1/seg_"
    inter = sum(outputs[image][key + "inter"] for image in IMAGES)
    union = sum(outputs[image][key + "union"] for image in IMAGES)
    result = metrics.compute()
    # dataset-cumulative: one ratio of summed counts, not a mean of per-image ratios
    correct = sum(outputs[image][key + "correct"] for image in IMAGES)
    assert result["pixel_accuracy"] == pytest.approx(correct / (2 * 224 * 224), rel=1e-15)
    assert result["mean_iou"] == pytest.approx((inter[0] / union[0] + inter[1] / union[1]) / 2, rel=1e-15)
    assert result["mean_ap"] == pytest.approx(np.mean([outputs[image][key + "ap"][0] for image in IMAGES]), abs=1e-12)
    assert result["count"] == 2


def test_perfect_map_scores_one():
    masks = _blob_masks(4, 16, seed=0)
    metrics = SegmentationMetrics()
    metrics.update(masks.astype(np.float32), masks)
    result = metrics.compute()
    assert result["pixel_accuracy"] == 1.0
    assert result["iou_background"] == result["iou_foreground"] == result["mean_iou"] == 1.0
    assert result["mean_ap"] == 1.0


def test_inverted_map_scores_zero():
    masks = _blob_masks(4, 16, seed=1)
    metrics = SegmentationMetrics()
    metrics.update(1 - masks.astype(np.float32), masks)
    result = metrics.compute()
    assert result["pixel_accuracy"] == 0.0
    assert result["mean_iou"] == 0.0
    # Every positive scores 0 and every negative 1: recall is only reached at the last threshold, at precision 1/2.
    assert result["mean_ap"] == 0.5


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_map_predicts_all_background(value):
    mask = np.zeros((10, 10), dtype=np.int64)
    mask[:3, :] = 1  # 30 object pixels, 70 background
    scores = image_segmentation_scores(np.full((10, 10), value, dtype=np.float32), mask)
    assert scores.threshold == value
    assert scores.correct == 70
    assert scores.intersection == (70, 0)
    assert scores.union == (100, 30)
    # The background channel scores 1 - value at all 100 pixels (70 positives), the foreground channel value
    # (30 positives). AP = sum over thresholds of recall gained x precision; the total is 100 positives in 200.
    if value == 0.5:
        expected_ap = 1.0 * (100 / 200)
    else:
        first_positives = 70 if value == 0.0 else 30
        expected_ap = (first_positives / 100) * (first_positives / 100) + (1 - first_positives / 100) * (100 / 200)
    assert scores.average_precision == pytest.approx(expected_ap, abs=1e-15)


def test_segmentation_merge_equals_single_pass():
    maps, masks = _random_maps(6, 12, seed=2), _blob_masks(6, 12, seed=2)
    whole = SegmentationMetrics()
    whole.update(maps, masks)
    first, second = SegmentationMetrics(), SegmentationMetrics()
    first.update(maps[:4], masks[:4])
    second.update(maps[4:], masks[4:])
    merged = first.merge(second).compute()
    expected = whole.compute()
    assert set(merged) == set(expected)
    for key in ("pixel_accuracy", "iou_background", "iou_foreground", "mean_iou", "count"):
        assert merged[key] == expected[key], key
    assert merged["mean_ap"] == pytest.approx(expected["mean_ap"], rel=1e-15)
    # the state is plain numbers and round-trips (the form an all-reduce would carry)
    restored = SegmentationMetrics.from_state_dict(whole.state_dict())
    assert restored.compute() == expected


def test_segmentation_batch_equals_singles():
    maps, masks = _random_maps(3, 12, seed=3), _blob_masks(3, 12, seed=3)
    batch_scores = SegmentationMetrics().update(maps, masks)
    assert batch_scores == [image_segmentation_scores(maps[i], masks[i]) for i in range(3)]


@pytest.mark.parametrize(
    ("maps", "masks", "message"),
    [
        (np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 5), np.uint8), "same shape"),
        (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), r"\[B, H, W\]"),
        (np.full((1, 4, 4), 1.5, np.float32), np.zeros((1, 4, 4), np.uint8), r"in \[0, 1\]"),
        (np.full((1, 4, 4), np.nan, np.float32), np.zeros((1, 4, 4), np.uint8), "finite"),
        (np.zeros((1, 4, 4), np.int64), np.zeros((1, 4, 4), np.uint8), "floating point"),
        (np.zeros((1, 4, 4), np.float32), np.full((1, 4, 4), 2, np.uint8), "only 0"),
        (np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.float32), "integer or bool"),
    ],
)
def test_segmentation_rejects_bad_input(maps, masks, message):
    with pytest.raises(ValueError, match=message):
        SegmentationMetrics().update(maps, masks)


def test_segmentation_state_errors():
    with pytest.raises(RuntimeError, match="before any image"):
        SegmentationMetrics().compute()
    with pytest.raises(TypeError, match="SegmentationMetrics"):
        SegmentationMetrics().merge(PerturbationCurve())
    with pytest.raises(ValueError, match="keys"):
        SegmentationMetrics.from_state_dict({"correct": 1})


# --- perturbation ---------------------------------------------------------------------------------------------


def test_perturbation_matches_original(reference):
    """Both reference images as one batch: the original's predictions and max probabilities at every step."""
    outputs, model = reference
    images01 = torch.from_numpy(np.stack([outputs[image]["image01"] for image in IMAGES]))
    maps = torch.from_numpy(np.stack([outputs[image]["top/vis224/ours_sl1"] for image in IMAGES]))
    for test, positive in (("pos", True), ("neg", False)):
        logits = run_perturbation(images01, maps, lambda x01: model((x01 - 0.5) / 0.5), positive=positive)
        for row, image in enumerate(IMAGES):
            key = f"top/ours_sl1/pert_{test}/"
            assert logits.clean[row].argmax().item() == outputs[image][key + "orig_pred"]
            steps = logits.steps[:, row]  # [S, K]
            assert steps.argmax(dim=-1).tolist() == outputs[image][key + "step_pred"].tolist(), (image, test)
            torch.testing.assert_close(
                steps.softmax(dim=-1).amax(dim=-1),
                torch.from_numpy(outputs[image][key + "step_maxprob"]),
                rtol=0,
                atol=1e-5,
            )


def test_perturb_removes_exactly_the_top_k(reference):
    """On the reference map (flat borders, so ties): k pixels go, and none kept is more (less) relevant."""
    image_map = torch.from_numpy(reference[0]["img0"]["top/vis224/ours_sl1"])[None]
    for positive in (True, False):
        for fraction in PERTURBATION_FRACTIONS:
            removed = perturb(torch.ones(1, 3, 224, 224), image_map, fraction, positive=positive)[0] == 0  # [3, H, W]
            assert (removed == removed[0]).all()  # all channels of a pixel together
            removed = removed[0]
            assert int(removed.sum()) == int(224 * 224 * fraction)
            if positive:
                assert image_map[0][removed].min() >= image_map[0][~removed].max()
            else:
                assert image_map[0][removed].max() <= image_map[0][~removed].min()


def test_perturb_by_hand():
    images = torch.arange(2 * 3 * 25, dtype=torch.float32).reshape(2, 3, 5, 5) + 1
    maps = torch.stack([torch.arange(25.0).reshape(5, 5), -torch.arange(25.0).reshape(5, 5)])
    kept = images.clone()
    out = perturb(images, maps, 0.3, fill=-7.0)  # k = int(25 * 0.3) = 7
    assert torch.equal(images, kept), "the input must not be modified"
    expected = images.clone().reshape(2, 3, 25)
    expected[0, :, 18:] = -7.0  # image 0: relevance grows with the pixel index
    expected[1, :, :7] = -7.0  # image 1: it falls
    assert torch.equal(out, expected.reshape(2, 3, 5, 5))
    negative = perturb(images, maps, 0.3, positive=False).reshape(2, 3, 25)
    assert (negative[0, :, :7] == 0).all() and (negative[0, :, 7:] != 0).all()
    assert torch.equal(perturb(images, maps, 0.0), images)
    assert (perturb(images, maps, 1.0) == 0).all()


def test_perturb_batch_equals_singles():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    maps = _random_maps(4, 8, seed=5)
    batched = perturb(images, maps, 0.4, positive=False)
    singles = torch.cat([perturb(images[i : i + 1], maps[i : i + 1], 0.4, positive=False) for i in range(4)])
    assert torch.equal(batched, singles)


def test_run_perturbation_calls_predict_fn_per_step():
    images = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    maps = _random_maps(3, 6, seed=7)
    weights = torch.randn(3 * 6 * 6, 4, generator=torch.Generator().manual_seed(8))
    grad_enabled = []

    def predict_fn(batch):
        grad_enabled.append(torch.is_grad_enabled())
        return batch.reshape(batch.shape[0], -1) @ weights

    logits = run_perturbation(images, maps, predict_fn, fractions=(0.25, 0.5), positive=False)
    assert logits.clean.shape == (3, 4) and logits.steps.shape == (2, 3, 4)
    torch.testing.assert_close(logits.clean, predict_fn(images))
    for step, fraction in enumerate((0.25, 0.5)):
        torch.testing.assert_close(logits.steps[step], predict_fn(perturb(images, maps, fraction, positive=False)))
    assert grad_enabled[:3] == [False, False, False]

    with pytest.raises(ValueError, match="predict_fn must return logits"):
        run_perturbation(images, maps, lambda batch: batch.mean())


def test_top1_hits():
    logits = torch.tensor([[[0.1, 0.9], [0.8, 0.2]], [[0.7, 0.3], [0.6, 0.4]]])  # [S=2, B=2, K=2]
    assert top1_hits(logits, torch.tensor([1, 1])).tolist() == [[True, False], [False, False]]
    with pytest.raises(ValueError, match="labels"):
        top1_hits(logits, torch.tensor([1, 1, 0]))


def _curve(clean: list[int], steps: list[list[int]]) -> PerturbationCurve:
    curve = PerturbationCurve()
    curve.update(np.array(clean, dtype=bool), np.array(steps, dtype=bool))
    return curve


def test_curve_aucs_by_hand():
    # 10 images; hits per step: clean 8, then 7, 6, 6, 5, 4, 3, 2, 2, 1
    counts = [8, 7, 6, 6, 5, 4, 3, 2, 2, 1]
    hits = [[1] * n + [0] * (10 - n) for n in counts]
    result = _curve(hits[0], hits[1:]).compute()
    assert result["clean_accuracy"] == 0.8
    assert result["step_accuracy"] == [0.7, 0.6, 0.6, 0.5, 0.4, 0.3, 0.2, 0.2, 0.1]
    # trapezoids of width 0.1 over x = 0, 0.1, ..., 0.9
    chefer = 0.1 * (0.8 / 2 + (0.7 + 0.6 + 0.6 + 0.5 + 0.4 + 0.3 + 0.2 + 0.2) + 0.1 / 2)
    assert result["auc_chefer"] == pytest.approx(chefer, abs=1e-12)
    # ... plus the last segment down to accuracy 0 at x = 1
    assert result["auc_original"] == pytest.approx(chefer + 0.1 * (0.1 + 0) / 2, abs=1e-12)
    assert result["count"] == 10


def test_curve_linear_decay():
    # accuracy 1.0 clean, then 0.9, ..., 0.1: a straight line from (0, 1) to (1, 0)
    hits = [[1] * n + [0] * (10 - n) for n in range(10, 0, -1)]
    result = _curve(hits[0], hits[1:]).compute()
    assert result["auc_original"] == pytest.approx(1 / 2, abs=1e-12)
    assert result["auc_chefer"] == pytest.approx(0.9 * (1.0 + 0.1) / 2, abs=1e-12)


def test_curve_ending_at_one_has_equal_aucs():
    curve = PerturbationCurve(fractions=(0.5, 1.0))
    curve.update(torch.tensor([True, True]), torch.tensor([[True, False], [True, False]]))
    result = curve.compute()
    assert result["auc_chefer"] == pytest.approx(0.5 * (1.0 + 0.5) / 2 + 0.5 * (0.5 + 0.5) / 2, abs=1e-12)
    assert result["auc_original"] == result["auc_chefer"]


def test_curve_merge_equals_single_pass():
    rng = np.random.default_rng(9)
    clean, steps = rng.random(12) < 0.7, rng.random((9, 12)) < 0.5
    whole = PerturbationCurve()
    whole.update(clean, steps)
    first, second = PerturbationCurve(), PerturbationCurve()
    first.update(clean[:5], steps[:, :5])
    second.update(clean[5:], steps[:, 5:])
    assert first.merge(second).compute() == whole.compute()
    assert PerturbationCurve.from_state_dict(whole.state_dict()).compute() == whole.compute()
    with pytest.raises(ValueError, match="fractions"):
        whole.merge(PerturbationCurve(fractions=(0.2, 0.4)))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: perturb(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), 1.5), r"fraction must be in \[0, 1\]"),
        (lambda: perturb(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4), -0.1), r"fraction must be in \[0, 1\]"),
        (lambda: perturb(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4), 0.5), r"maps must be \[B, H, W\]"),
        (lambda: perturb(torch.zeros(3, 4, 4), torch.zeros(1, 4, 4), 0.5), r"images01 must be a float tensor"),
        (lambda: perturb(torch.zeros(1, 3, 2, 2), torch.tensor([[[0.0, float("nan")], [0, 0]]]), 0.5), "finite"),
        (lambda: PerturbationCurve(fractions=(0.5, 0.2)), "increase strictly"),
        (lambda: PerturbationCurve(fractions=(0.0, 0.5)), "increase strictly"),
        (lambda: PerturbationCurve().update(np.ones(3, bool), np.ones((8, 3), bool)), r"\[S=9, B\]"),
        (lambda: PerturbationCurve().update(np.full(3, 2), np.ones((9, 3), bool)), "clean_hits must be bool"),
    ],
)
def test_perturbation_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_curve_compute_needs_data():
    with pytest.raises(RuntimeError, match="before any image"):
        PerturbationCurve().compute()
