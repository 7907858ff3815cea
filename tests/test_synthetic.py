import numpy as np
import pytest

from tokenattr.data.synthetic import SHAPE_CLASSES, ShapesDataset, make_shapes

SIZE = 64


@pytest.fixture(scope="module")
def data() -> ShapesDataset:
    return make_shapes(200, image_size=SIZE, seed=0)


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Binary dilation with a 3x3 cross, repeated ``steps`` times."""
    out = mask.astype(bool)
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows[0], rows[-1], cols[0], cols[-1]


def test_shapes_dtypes_and_ranges(data):
    assert len(data) == 200
    assert data.images.shape == (200, 3, SIZE, SIZE) and data.images.dtype == np.float32
    assert data.masks.shape == (200, SIZE, SIZE) and data.masks.dtype == np.uint8
    assert data.labels.shape == (200,) and data.labels.dtype == np.int64
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert set(np.unique(data.masks)) == {0, 1}
    assert set(np.unique(data.labels)) == set(range(len(SHAPE_CLASSES)))


def test_same_seed_same_data_and_other_seed_other_data():
    a = make_shapes(12, image_size=32, seed=3)
    b = make_shapes(12, image_size=32, seed=3)
    c = make_shapes(12, image_size=32, seed=4)
    for name in ("images", "masks", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.masks, c.masks)


def test_classes_balanced():
    counts = np.bincount(make_shapes(40, image_size=16, seed=1).labels, minlength=4)
    np.testing.assert_array_equal(counts, [10, 10, 10, 10])
    counts = np.bincount(make_shapes(10, image_size=16, seed=1).labels, minlength=4)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 10


def test_object_size_and_placement(data):
    for mask in data.masks:
        assert mask.any()
        top, bottom, left, right = _bbox(mask)
        side = max(bottom - top, right - left) + 1
        assert 0.30 * SIZE - 1.5 <= side <= 0.45 * SIZE + 1.5
        # Fully inside: the object never touches the image border.
        assert top > 0 and left > 0 and bottom < SIZE - 1 and right < SIZE - 1
        assert 0.3 * (0.30 * SIZE - 1.5) ** 2 <= mask.sum() <= (0.45 * SIZE + 1.5) ** 2


def test_mask_is_exactly_the_uniformly_coloured_object(data):
    for image, mask in zip(data.images, data.masks.astype(bool)):
        inside = image[:, mask]
        # One flat colour plus noise of at most +-0.05: no distractor drawn over it.
        spread = np.abs(inside - np.median(inside, axis=1, keepdims=True)).max()
        assert spread <= 0.1 + 1e-6
        ring = _dilate(mask, 2) & ~mask
        contrast = np.linalg.norm(inside.mean(axis=1) - image[:, ring].mean(axis=1))
        assert contrast > 0.25


def test_object_colour_does_not_reveal_class():
    data = make_shapes(800, image_size=16, seed=5)
    colours = np.stack([img[:, m.astype(bool)].mean(axis=1) for img, m in zip(data.images, data.masks)])
    per_class = np.stack([colours[data.labels == c].mean(axis=0) for c in range(len(SHAPE_CLASSES))])
    assert np.abs(per_class - colours.mean(axis=0)).max() < 0.1


def _fill_ratio(mask: np.ndarray) -> float:
    top, bottom, left, right = _bbox(mask)
    return mask.sum() / ((bottom - top + 1) * (right - left + 1))


def test_classes_differ_in_bounding_box_fill(data):
    fill = np.array([_fill_ratio(m) for m in data.masks])
    mean_fill = {name: fill[data.labels == c].mean() for c, name in enumerate(SHAPE_CLASSES)}
    assert mean_fill["square"] > 0.97
    assert 0.74 < mean_fill["disc"] < 0.83  # pi / 4 = 0.785
    assert 0.47 < mean_fill["triangle"] < 0.57
    assert 0.36 < mean_fill["cross"] < 0.50
    assert mean_fill["square"] > mean_fill["disc"] > mean_fill["triangle"] > mean_fill["cross"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": -3}, "n"),
        ({"n": 2.0}, "n"),
        ({"n": True}, "n"),
        ({"n": 4, "image_size": 15}, "image_size"),
        ({"n": 4, "image_size": 32.0}, "image_size"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        make_shapes(**kwargs)
