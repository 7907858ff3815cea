"""The figure and page writers of tokenattr.viz: perturbation curves, and text highlighted as HTML and LaTeX."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from tokenattr.viz import (
    MISSING_RGB,
    NEGATIVE_RGB,
    POSITIVE_RGB,
    curve_points,
    latex_escape,
    plot_perturbation_curves,
    relevance_colours,
    text_html,
    text_latex,
)

SPAN = re.compile(r'<span class="w" style="background-color:#([0-9a-f]{6})" title="[^"]*">(.*?)</span>')
BOX = re.compile(r"\\colorbox\[RGB\]\{(\d+),(\d+),(\d+)\}\{\\strut (.*?)\}(?= |\\par)")


def test_relevance_colours_run_from_white_to_red_and_blue():
    colours = relevance_colours([0.0, 2.0, 1.0, -2.0, -1.0, np.nan])
    white = np.array([255, 255, 255])
    assert colours[0].tolist() == white.tolist()
    assert colours[1].tolist() == list(POSITIVE_RGB)  # the row's largest |score|
    assert colours[3].tolist() == list(NEGATIVE_RGB)
    assert colours[2].tolist() == np.rint((white + np.array(POSITIVE_RGB)) / 2).astype(int).tolist()
    assert colours[4].tolist() == np.rint((white + np.array(NEGATIVE_RGB)) / 2).astype(int).tolist()
    assert colours[5].tolist() == list(MISSING_RGB)
    assert colours.dtype == np.uint8


def test_relevance_colours_of_an_all_zero_row_are_white_and_inf_is_refused():
    assert (relevance_colours([0.0, 0.0]) == 255).all()
    assert (relevance_colours([np.nan]) == np.array(MISSING_RGB)).all()
    with pytest.raises(ValueError, match="finite or NaN"):
        relevance_colours([1.0, np.inf])
    with pytest.raises(ValueError, match=r"\[W\]"):
        relevance_colours(np.zeros((2, 2)))


def test_text_html_colours_every_word_escaped_and_standalone():
    words = ["a", "<script>alert(1)</script>", "fun&games", "film"]
    rows = {"ours-h": [0.1, 0.0, -0.5, 1.0], "<b>rollout</b>": [1.0, 0.5, 0.25, 0.0]}
    page = text_html(words, rows, title="review <1>", caption="predicted: POS & more")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "src=" not in page and "http" not in page  # nothing runs, nothing is fetched
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "fun&amp;games" in page
    assert "review &lt;1&gt;" in page and "POS &amp; more" in page and "&lt;b&gt;rollout&lt;/b&gt;" in page
    spans = SPAN.findall(page)
    words_escaped = ["a", "&lt;script&gt;alert(1)&lt;/script&gt;", "fun&amp;games", "film"]
    assert [text for _, text in spans[:8]] == words_escaped * 2  # the legend's spans follow
    for row, scores in enumerate(rows.values()):
        expected = ["".join(f"{c:02x}" for c in colour) for colour in relevance_colours(scores)]
        assert [colour for colour, _ in spans[4 * row : 4 * row + 4]] == expected


def test_text_html_and_latex_refuse_rows_of_the_wrong_length():
    with pytest.raises(ValueError, match="2 scores for 3 words"):
        text_html(["a", "b", "c"], {"ours-h": [1.0, 2.0]})
    with pytest.raises(ValueError, match="rows is empty"):
        text_latex(["a"], {})


def test_text_latex_boxes_every_word_in_the_html_colour_and_escapes():
    words = ["50%", "of", "R&D", "is", "a_b", "{x}", "~", "\\cmd"]
    scores = [0.0, 0.2, 1.0, -0.3, 0.5, -1.0, 0.1, np.nan]
    latex = text_latex(words, {"ours_t": scores})
    assert "\\textbf{ours\\_t}" in latex and "xcolor" in latex
    boxes = BOX.findall(latex)
    assert [text for *_, text in boxes] == [latex_escape(word) for word in words]
    assert [text for *_, text in boxes][:3] == ["50\\%", "of", "R\\&D"]
    assert [tuple(map(int, rgb)) for *rgb, _ in boxes] == [tuple(c) for c in relevance_colours(scores).tolist()]
    unescaped = latex.replace("\\{", "").replace("\\}", "")
    assert unescaped.count("{") == unescaped.count("}")  # escaped braces in words leave the groups balanced


def test_curve_points_read_both_perturbation_results():
    image = {"fractions": [0.1, 0.5], "clean_accuracy": 0.9, "step_accuracy": [0.6, 0.2]}
    assert curve_points(image) == ([0.0, 0.1, 0.5], [0.9, 0.6, 0.2])
    text_from_zero = {"steps": [0.0, 0.1], "accuracy": [0.8, 0.5], "clean_accuracy": 0.8}
    assert curve_points(text_from_zero) == ([0.0, 0.1], [0.8, 0.5])
    text = {"steps": [0.1, 0.2], "accuracy": [0.5, 0.3], "clean_accuracy": 0.8}
    assert curve_points(text) == ([0.0, 0.1, 0.2], [0.8, 0.5, 0.3])
    with pytest.raises(ValueError, match="step_accuracy"):
        curve_points({"auc_original": 0.3})


def test_perturbation_curves_png_has_its_size_and_one_colour_per_method(tmp_path):
    curves = {"ours-h": ([0.0, 0.5, 1.0], [0.9, 0.3, 0.1]), "rollout": ([0.0, 0.5, 1.0], [0.9, 0.7, 0.4])}
    path = plot_perturbation_curves(curves, path=tmp_path / "curves.png", title="positive", inches=(4, 3), dpi=50)
    with Image.open(path) as image:
        assert image.size == (200, 150)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    # matplotlib's first two cycle colours draw the two lines
    for colour in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(pixels.astype(int) - colour).sum(axis=1) < 30).sum() > 20
    with pytest.raises(ValueError, match="2 fractions but 3"):
        plot_perturbation_curves({"x": ([0, 1], [1, 0.5, 0.2])}, path=tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
