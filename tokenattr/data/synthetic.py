"""Synthetic shape images whose class evidence is known pixel by pixel.

Each image holds one object (a square, disc, triangle or cross) on a cluttered
background, together with the object's exact pixel mask. The demo trains a tiny
Vision Transformer on it, and the evaluations check that attribution maps fall
inside the mask. Colour is drawn independently of the class, so only the shape
identifies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = ("square", "disc", "triangle", "cross")

_SIZE_RANGE = (0.30, 0.45)  # object side as a fraction of the image side
_CROSS_HALF_ARM = 0.25  # arm half-width relative to the object's half side
_CONTRAST_MARGIN = 0.4  # min RGB distance between object and local background
_COLOUR_TRIES = 8
_NOISE_AMPLITUDE = 0.05  # per-pixel noise is uniform in +-this
_BORDER_PX = 1.0  # objects keep this gap to the image edge

# Fully saturated primaries and secondaries: every point of the RGB cube is at
# least sqrt(3)/2 from the farthest of them, so that one always beats the margin.
_CORNER_COLOURS = np.array(
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 0]],
    dtype=np.float64,
)


@dataclass(frozen=True)
class ShapesDataset:
    """Images, object masks and labels of a synthetic shapes dataset.

    images: float32 [n, 3, S, S] in [0, 1].
    masks: uint8 [n, S, S], 1 exactly on the object's pixels.
    labels: int64 [n], indices into SHAPE_CLASSES.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def make_shapes(n: int, image_size: int = 64, seed: int = 0) -> ShapesDataset:
    """Generate ``n`` images of ``image_size`` x ``image_size`` pixels.

    Classes are balanced (counts differ by at most one) and shuffled. Each
    object's side is 30-45% of the image side and it lies fully inside the
    image. The same arguments always give identical arrays.
    """
    _check_int("n", n, minimum=1)
    _check_int("image_size", image_size, minimum=16)
    size = int(image_size)
    rng = np.random.default_rng(seed)

    labels = rng.permutation(np.arange(n, dtype=np.int64) % len(SHAPE_CLASSES))
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    upsamplers: dict[int, np.ndarray] = {}

    for i in range(n):
        image = _background(rng, size, upsamplers)
        _draw_distractors(rng, image, xs, ys)
        mask, window = _object_mask(rng, int(labels[i]), xs, ys)
        local_mean = image[:, window[0], window[1]].reshape(3, -1).mean(axis=1)
        # The object goes last so that its mask is exactly its visible pixels.
        image[:, mask] = _object_colour(rng, local_mean)[:, None]
        # Uniform rather than Gaussian noise: it is several times cheaper to draw.
        image += rng.uniform(-_NOISE_AMPLITUDE, _NOISE_AMPLITUDE, size=image.shape)
        np.clip(image, 0.0, 1.0, out=images[i], casting="unsafe")
        masks[i] = mask
    return ShapesDataset(images=images, masks=masks, labels=labels)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _background(rng: np.random.Generator, size: int, upsamplers: dict[int, np.ndarray]) -> np.ndarray:
    """Smooth colour texture, float64 [3, size, size]: a coarse grid upsampled bilinearly."""
    grid = int(rng.integers(3, 7))
    if grid not in upsamplers:
        upsamplers[grid] = _linear_upsampler(grid, size)
    up = upsamplers[grid]
    # Muted around a mid grey so saturated object colours can always stand out.
    coarse = rng.uniform(0.3, 0.7) + rng.uniform(-0.2, 0.2, size=(3, grid, grid))
    return up @ coarse @ up.T


def _linear_upsampler(grid: int, size: int) -> np.ndarray:
    """Matrix [size, grid] that linearly interpolates ``grid`` samples onto ``size`` points."""
    pos = np.linspace(0.0, grid - 1, size)
    low = np.minimum(np.floor(pos).astype(int), grid - 2)
    frac = pos - low
    rows = np.arange(size)
    weights = np.zeros((size, grid))
    weights[rows, low] = 1.0 - frac
    weights[rows, low + 1] = frac
    return weights


def _saturated_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` random saturated RGB colours, float64 [count, 3]."""
    hue = rng.uniform(0.0, 1.0, count)
    sat = rng.uniform(0.75, 1.0, count)
    val = rng.uniform(0.6, 1.0, count)
    # HSV -> RGB, vectorised over the standard piecewise formula.
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6.0) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return val[:, None] * (1.0 - sat[:, None] * ramp)


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
    """Paint a few thin line segments and small dots, none of them one of the shape classes."""
    size = image.shape[-1]
    count = int(rng.integers(3, 7))
    colours = _saturated_colours(rng, count)
    for colour in colours:
        x0, y0 = rng.uniform(0, size - 1, 2)
        is_line = rng.random() < 0.5
        if is_line:
            length = rng.uniform(0.2, 0.5) * size
            angle = rng.uniform(0.0, np.pi)
            dx, dy = length * np.cos(angle), length * np.sin(angle)
            reach = max(0.5, rng.uniform(0.006, 0.015) * size)
        else:
            dx = dy = 0.0
            reach = max(0.75, rng.uniform(0.015, 0.035) * size)
        # Only the pixels of the stroke's bounding box can be reached.
        rows = slice(max(0, int(min(y0, y0 + dy) - reach)), int(max(y0, y0 + dy) + reach) + 1)
        cols = slice(max(0, int(min(x0, x0 + dx) - reach)), int(max(x0, x0 + dx) + reach) + 1)
        px, py = xs[rows, cols] - x0, ys[rows, cols] - y0
        if is_line:
            t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy), 0.0, 1.0)
            px, py = px - t * dx, py - t * dy
        image[:, rows, cols][:, px * px + py * py <= reach * reach] = colour[:, None]


def _object_mask(
    rng: np.random.Generator, label: int, xs: np.ndarray, ys: np.ndarray
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Boolean mask [S, S] of one object of class ``label``, and a window around it."""
    size = xs.shape[0]
    side = rng.uniform(*_SIZE_RANGE) * size
    half = side / 2.0
    cx, cy = rng.uniform(half + _BORDER_PX, size - 1 - _BORDER_PX - half, 2)
    u = (xs - cx) / half
    v = (ys - cy) / half
    # A quarter turn changes only the triangle; the other shapes are symmetric.
    for _ in range(int(rng.integers(4))):
        u, v = v, -u
    box = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    name = SHAPE_CLASSES[label]
    if name == "square":
        mask = box
    elif name == "disc":
        mask = u * u + v * v <= 1.0
    elif name == "triangle":
        mask = box & (np.abs(u) <= (v + 1.0) / 2.0)
    else:
        mask = box & ((np.abs(u) <= _CROSS_HALF_ARM) | (np.abs(v) <= _CROSS_HALF_ARM))
    pad = half + 2.0
    window = (
        slice(max(0, int(cy - pad)), int(np.ceil(cy + pad)) + 1),
        slice(max(0, int(cx - pad)), int(np.ceil(cx + pad)) + 1),
    )
    return mask, window


def _object_colour(rng: np.random.Generator, local_mean: np.ndarray) -> np.ndarray:
    """A saturated colour at least the contrast margin away from ``local_mean``, float64 [3]."""
    candidates = _saturated_colours(rng, _COLOUR_TRIES)
    dist = np.linalg.norm(candidates - local_mean, axis=1)
    ok = np.flatnonzero(dist >= _CONTRAST_MARGIN)
    if ok.size:
        return candidates[ok[0]]
    corner_dist = np.linalg.norm(_CORNER_COLOURS - local_mean, axis=1)
    return _CORNER_COLOURS[np.argmax(corner_dist)]


# --- captioned shapes (the demo CLIP) ----------------------------------------------------------------------------

# Named object colours: far from each other and from the muted background, so a caption's colour word is decided
# by the object's pixels alone.
COLOUR_NAMES: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.7, 0.15),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.9, 0.1),
}
_COLOUR_JITTER = 0.08  # each channel of an object's colour moves by up to this
CAPTIONS: tuple[str, ...] = tuple(f"a {colour} {shape}" for colour in COLOUR_NAMES for shape in SHAPE_CLASSES)


@dataclass(frozen=True)
class CaptionedShapes:
    """Images of one coloured shape each, their object masks and their captions (``"a red square"``).

    images: float32 [n, 3, S, S] in [0, 1].
    masks: uint8 [n, S, S], 1 exactly on the object's pixels.
    labels: int64 [n], indices into CAPTIONS: ``colour * len(SHAPE_CLASSES) + shape``.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def captions(self) -> list[str]:
        return [CAPTIONS[label] for label in self.labels]


def make_captioned_shapes(n: int, image_size: int = 64, seed: int = 0) -> CaptionedShapes:
    """Generate ``n`` captioned images of ``image_size`` x ``image_size`` pixels.

    Each holds one object of a shape of ``SHAPE_CLASSES`` (side 30-45% of the image) in a colour of
    ``COLOUR_NAMES`` on the smooth background of :func:`make_shapes`, without its distractors: the colour and
    the shape words of the caption are both visible only on the object. Captions are balanced over ``CAPTIONS``
    (counts differ by at most one) and shuffled. The same arguments always give identical arrays.
    """
    _check_int("n", n, minimum=1)
    _check_int("image_size", image_size, minimum=16)
    size = int(image_size)
    rng = np.random.default_rng(seed)

    labels = rng.permutation(np.arange(n, dtype=np.int64) % len(CAPTIONS))
    palette = np.array(list(COLOUR_NAMES.values()), dtype=np.float64)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    upsamplers: dict[int, np.ndarray] = {}

    for i, label in enumerate(labels):
        colour, shape = divmod(int(label), len(SHAPE_CLASSES))
        image = _background(rng, size, upsamplers)
        mask, _ = _object_mask(rng, shape, xs, ys)
        image[:, mask] = (palette[colour] + rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, size=3))[:, None]
        image += rng.uniform(-_NOISE_AMPLITUDE, _NOISE_AMPLITUDE, size=image.shape)
        np.clip(image, 0.0, 1.0, out=images[i], casting="unsafe")
        masks[i] = mask
    return CaptionedShapes(images=images, masks=masks, labels=labels)
