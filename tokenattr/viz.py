"""Turning relevance into pictures: image maps, overlays, method grids, perturbation curves, and highlighted text
as HTML and LaTeX.

Matplotlib is imported inside the plotting functions, so that importing ``tokenattr`` stays cheap.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import atomic_path


def normalize_per_map(maps: Tensor) -> Tensor:
    """Min-max each map of ``[B, ...]`` to [0, 1]; a constant map becomes all zeros, never NaN.

    "Constant" allows for rounding: up-sampling a constant map leaves ulp-level ripples, whose min-max would
    be noise spread over [0, 1].
    """
    flat = maps.reshape(maps.shape[0], -1).float()
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    span = high - low
    rounding = 16 * torch.finfo(flat.dtype).eps * torch.maximum(low.abs(), high.abs())
    constant = span <= rounding
    scaled = torch.where(constant, torch.zeros_like(flat), (flat - low) / torch.where(constant, 1.0, span))
    return scaled.reshape(maps.shape)


def to_image_map(relevance: Tensor, image_size: int | tuple[int, int] = 224) -> Tensor:
    """Image maps ``[B, H, W]`` in [0, 1] from token relevance ``[B, N]`` (or pixel relevance ``[B, H, W]``).

    Tokens are laid out on their patch grid (square, or with the image's aspect ratio), up-sampled
    bilinearly (``align_corners=False``, as the original's ``F.interpolate(scale_factor=patch)``), then
    min-max normalised per image (DESIGN §4).
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if relevance.dim() == 3:
        if tuple(relevance.shape[1:]) != (height, width):
            raise ValueError(f"pixel relevance must be [B, {height}, {width}], got {tuple(relevance.shape)}")
        return normalize_per_map(relevance)
    if relevance.dim() != 2:
        raise ValueError(f"relevance must be [B, N] (tokens) or [B, H, W] (pixels), got {tuple(relevance.shape)}")
    tokens = relevance.shape[1]
    rows = math.isqrt(tokens * height // width)
    cols = tokens // max(rows, 1)
    if rows * cols != tokens or rows * width != cols * height:
        raise ValueError(f"{tokens} tokens do not form a patch grid with the aspect ratio of a {height}x{width} image")
    grid = relevance.reshape(-1, 1, rows, cols).float()
    return normalize_per_map(F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[:, 0])


def _as_hwc(image01) -> np.ndarray:
    """An RGB image ``[3, H, W]`` or ``[H, W, 3]`` (tensor or array, values in [0, 1]) as float ``[H, W, 3]``."""
    array = image01.detach().cpu().numpy() if isinstance(image01, Tensor) else np.asarray(image01)
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"image must be RGB [3, H, W] or [H, W, 3], got shape {tuple(array.shape)}")
    return np.clip(array.astype(np.float64), 0.0, 1.0)


def overlay(image01, heatmap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a colour-mapped heatmap over an image: ``(1 - alpha) * image + alpha * cmap(heatmap)``.

    Args:
        image01: RGB image ``[3, H, W]`` or ``[H, W, 3]`` with values in [0, 1] (tensor or array).
        heatmap: ``[H, W]`` in [0, 1], e.g. one map of :func:`to_image_map`; values outside are clipped.
        alpha: weight of the heatmap colour, in [0, 1].
        cmap: a Matplotlib colormap name.

    Returns a float array ``[H, W, 3]`` in [0, 1].
    """
    import matplotlib

    image = _as_hwc(image01)
    heat = heatmap.detach().cpu().numpy() if isinstance(heatmap, Tensor) else np.asarray(heatmap)
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heatmap must be [H, W] = {list(image.shape[:2])} like the image, got {list(heat.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = matplotlib.colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3]
    return (1.0 - alpha) * image + alpha * colours


def plot_method_grid(
    images,
    maps_by_method: dict[str, Tensor],
    row_titles: list[str],
    masks=None,
    *,
    path: str | os.PathLike,
    alpha: float = 0.5,
    cmap: str = "jet",
    panel_inches: float = 1.7,
    dpi: int = 100,
) -> Path:
    """Save a PNG grid: one row per image, the image first, then its map by each method overlaid on it.

    Args:
        images: ``[B, 3, H, W]`` RGB in [0, 1] (tensor or array).
        maps_by_method: method name -> maps ``[B, H, W]`` in [0, 1] (see :func:`to_image_map`); the names are
            the column titles, in the dict's order.
        row_titles: ``B`` labels, written left of each row.
        masks: optional ``[B, H, W]`` object masks, outlined in white on every panel.
        path: the PNG written. It is written to a temporary file first and moved into place, so an
            interrupted run never leaves a partial image.
        alpha, cmap: the overlay (see :func:`overlay`).
        panel_inches, dpi: each panel is ``panel_inches`` square; the column titles add 0.3 inch on top.

    Returns the path written.
    """
    from matplotlib.figure import Figure

    batch = len(images)
    if len(row_titles) != batch:
        raise ValueError(f"row_titles has {len(row_titles)} entries for {batch} images")
    for name, maps in maps_by_method.items():
        if len(maps) != batch:
            raise ValueError(f"maps_by_method[{name!r}] has {len(maps)} maps for {batch} images")
    if masks is not None and len(masks) != batch:
        raise ValueError(f"masks has {len(masks)} entries for {batch} images")

    columns = ["image", *maps_by_method]
    figure = Figure(figsize=(panel_inches * len(columns), panel_inches * batch + 0.3), layout="constrained")
    axes = np.asarray(figure.subplots(batch, len(columns), squeeze=False))
    for row in range(batch):
        image = _as_hwc(images[row])
        mask = None
        if masks is not None:
            mask = masks[row].detach().cpu().numpy() if isinstance(masks[row], Tensor) else np.asarray(masks[row])
        panels = [image, *(overlay(image, maps[row], alpha, cmap) for maps in maps_by_method.values())]
        for col, panel in enumerate(panels):
            axis = axes[row, col]
            axis.imshow(panel, interpolation="nearest")
            if mask is not None and mask.any():
                axis.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[col], fontsize=9)
        axes[row, 0].set_ylabel(row_titles[row], fontsize=8)

    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return path


# --- perturbation curves -------------------------------------------------------------------------------------


def curve_points(result: dict) -> tuple[list[float], list[float]]:
    """The accuracy curve ``(fractions removed, accuracy)`` of a perturbation result, starting at the clean input.

    Reads both protocols' results: the image test's (:func:`tokenattr.protocols.perturbation_test`: ``fractions``,
    ``clean_accuracy``, ``step_accuracy``) and the text test's (``text_perturbation_test``: ``steps``, ``accuracy``,
    whose first step may already be the clean input).
    """
    if "steps" in result and "accuracy" in result:
        steps, accuracy = list(result["steps"]), list(result["accuracy"])
        if steps[0] != 0:
            steps, accuracy = [0.0, *steps], [result["clean_accuracy"], *accuracy]
        return [float(step) for step in steps], [float(value) for value in accuracy]
    if {"fractions", "clean_accuracy", "step_accuracy"} <= set(result):
        return [0.0, *map(float, result["fractions"])], [float(result["clean_accuracy"]), *result["step_accuracy"]]
    raise ValueError(
        "a perturbation result needs 'fractions', 'clean_accuracy' and 'step_accuracy' (image test) or 'steps' and "
        f"'accuracy' (text test); got keys {sorted(result)}"
    )


def plot_perturbation_curves(
    curves: dict[str, tuple],
    *,
    path: str | os.PathLike,
    title: str = "",
    ylabel: str = "top-1 accuracy",
    inches: tuple[float, float] = (5.0, 3.5),
    dpi: int = 100,
) -> Path:
    """Save a PNG of accuracy against the fraction of the input removed, one line per method.

    Args:
        curves: method name -> ``(fractions, accuracy)``, e.g. :func:`curve_points` of a protocol's result;
            fractions in [0, 1], accuracy as fractions (plotted ×100, as papers print).
        path: the PNG, written atomically (see :func:`plot_method_grid`).
        title: the plot title, e.g. "positive perturbation (lower is better)".
    """
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("curves is empty; expected at least one method's (fractions, accuracy)")
    figure = Figure(figsize=inches, layout="constrained")
    axis = figure.subplots()
    for name, (fractions, accuracy) in curves.items():
        if len(fractions) != len(accuracy):
            raise ValueError(f"curves[{name!r}] has {len(fractions)} fractions but {len(accuracy)} accuracies")
        axis.plot(
            100 * np.asarray(fractions, dtype=float),
            100 * np.asarray(accuracy, dtype=float),
            marker="o",
            ms=3,
            label=name,
        )
    axis.set_xlabel("% of the input removed")
    axis.set_ylabel(f"{ylabel} (%)")
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncols=2)
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)
    return path


# --- text highlighting ---------------------------------------------------------------------------------------

# White fades to these at the largest |relevance| of a row; both are light enough for black text.
POSITIVE_RGB = (232, 85, 76)
NEGATIVE_RGB = (76, 132, 232)
MISSING_RGB = (210, 210, 210)  # words the model did not read (truncated): NaN relevance


def relevance_colours(scores) -> np.ndarray:
    """Background colours ``[W, 3]`` (uint8 RGB) for the words of one text, from their relevance ``[W]``.

    Relevance is divided by the row's largest ``|score|``: 0 is white, the largest positive score is
    ``POSITIVE_RGB`` (red), the most negative ``NEGATIVE_RGB`` (blue), linearly in between; NaN (a word the
    model did not read) is grey. Both :func:`text_html` and :func:`text_latex` colour words with this.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be one relevance per word [W], got shape {scores.shape}")
    finite = np.isfinite(scores)
    if np.isinf(scores).any():
        raise ValueError("scores must be finite or NaN (a word not read); got inf")
    peak = np.abs(scores[finite]).max() if finite.any() else 0.0
    strength = np.where(finite, scores, 0.0) / peak if peak > 0 else np.zeros_like(scores)
    white = np.full(3, 255.0)
    toward = np.where(strength[:, None] >= 0, np.asarray(POSITIVE_RGB, float), np.asarray(NEGATIVE_RGB, float))
    colours = white + np.abs(strength)[:, None] * (toward - white)
    colours[~finite] = MISSING_RGB
    return np.rint(colours).astype(np.uint8)


def _check_rows(words, rows) -> list[str]:
    words = [str(word) for word in words]
    if not rows:
        raise ValueError("rows is empty; expected at least one name -> word scores")
    for name, scores in rows.items():
        if len(scores) != len(words):
            raise ValueError(f"rows[{name!r}] has {len(scores)} scores for {len(words)} words")
    return words


def text_html(words, rows: dict, title: str = "", caption: str = "") -> str:
    """A standalone HTML page (no scripts, no external files) with ``words`` highlighted once per row.

    Like Captum's ``visualize_text``, but self-contained so it opens anywhere: each word is a ``<span>`` with its
    background colour (:func:`relevance_colours`) and its relevance as a tooltip; text is HTML-escaped.

    Args:
        words: ``[W]`` words (or word-pieces) as displayed.
        rows: name (e.g. a method) -> relevance ``[W]`` per word, one highlighted line each, in order.
        title: the page's heading and ``<title>``.
        caption: a line under the heading, e.g. the prediction.
    """
    from html import escape

    words = _check_rows(words, rows)
    lines = []
    for name, scores in rows.items():
        spans = " ".join(
            f'<span class="w" style="background-color:#{r:02x}{g:02x}{b:02x}" title="{score:.4g}">{escape(word)}</span>'
            for word, score, (r, g, b) in zip(words, np.asarray(scores, dtype=float), relevance_colours(scores))
        )
        lines.append(f"<tr><th>{escape(str(name))}</th><td>{spans}</td></tr>")
    legend = (
        f'<p class="legend">colour: relevance divided by its largest magnitude in the row — '
        f'<span class="w" style="background-color:#{"".join(f"{c:02x}" for c in POSITIVE_RGB)}">positive</span> '
        f'<span class="w" style="background-color:#{"".join(f"{c:02x}" for c in NEGATIVE_RGB)}">negative</span> '
        f'<span class="w" style="background-color:#{"".join(f"{c:02x}" for c in MISSING_RGB)}">not read</span></p>'
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(title or 'token relevance')}</title>\n<style>"
        "body{font-family:sans-serif;margin:1.5em}"
        "table{border-collapse:collapse}th{text-align:right;vertical-align:baseline;padding:0.4em 0.8em;"
        "font-weight:600;white-space:nowrap}td{padding:0.4em;line-height:1.9;vertical-align:baseline}"
        ".w{padding:0.1em 0.15em;border-radius:3px;color:#000}.legend{color:#555;font-size:0.85em}"
        "</style></head><body>\n"
        + (f"<h3>{escape(title)}</h3>\n" if title else "")
        + (f"<p>{escape(caption)}</p>\n" if caption else "")
        + "<table>\n"
        + "\n".join(lines)
        + "\n</table>\n"
        + legend
        + "\n</body></html>\n"
    )


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, for use in running text."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in str(text))


def text_latex(words, rows: dict) -> str:
    """LaTeX for papers: per row, its name in bold, then every word in an ``\\colorbox`` of its colour
    (:func:`relevance_colours`, the same as :func:`text_html`). Needs ``\\usepackage{xcolor}``; words are escaped.

    Args:
        words: ``[W]`` words as displayed.
        rows: name (e.g. a method) -> relevance ``[W]`` per word, one paragraph each, in order.
    """
    words = _check_rows(words, rows)
    paragraphs = []
    for name, scores in rows.items():
        boxes = " ".join(
            rf"\colorbox[RGB]{{{r},{g},{b}}}{{\strut {latex_escape(word)}}}"
            for word, (r, g, b) in zip(words, relevance_colours(scores))
        )
        paragraphs.append(rf"\noindent\textbf{{{latex_escape(name)}}}: {boxes}\par")
    return "% needs \\usepackage{xcolor}\n{\\setlength{\\fboxsep}{1pt}\n" + "\n\n".join(paragraphs) + "\n}\n"
