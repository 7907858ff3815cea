"""The ``tokenattr`` command: explain (image and text), methods, report, and its errors."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tokenattr
from tokenattr.app import FAMILY_COMMANDS, main
from tokenattr.data.synthetic import CAPTIONS, SHAPE_CLASSES, make_captioned_shapes
from tokenattr.data.synthetic_text import synthetic_vocabulary
from tokenattr.demo import ASSET_PATH
from tokenattr.models import BertClassifier, BertConfig, load_tokenizer
from tokenattr.models.bert import save_hf_folder
from tokenattr.models.clip import CLIPConfig, CLIPModel, ours_to_openai
from tokenattr.report import results_table, to_latex, to_markdown
from tokenattr.viz import POSITIVE_RGB

ROOT = Path(__file__).resolve().parents[1]
REVIEW = "the film was superb and gripping but the ending felt dull"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """scikit-image's bundled photo of Chelsea the cat (451 x 300), saved as a PNG."""
    skimage_data = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("photo") / "chelsea.png"
    Image.fromarray(skimage_data.chelsea()).save(path)
    return path


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A tiny random BERT sentiment classifier saved as a Hugging Face folder with its WordPiece tokenizer."""
    folder = tmp_path_factory.mktemp("bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(synthetic_vocabulary()) + "\n")
    tokenizer = load_tokenizer(vocab)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        class_names=["NEG", "POS"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertClassifier(config)
        with torch.no_grad():
            # spread weights (as conftest.spread_hf_weights): the default init makes every word look alike
            for name, param in model.named_parameters():
                if "norm" in name and name.endswith("weight"):
                    param.copy_(1 + 0.1 * torch.randn_like(param))
                else:
                    param.normal_(0, 0.3 if param.dim() > 1 else 0.05)
    return save_hf_folder(model.eval(), folder / "model", tokenizer)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --- explain: images ---------------------------------------------------------------------------------------------


def test_explain_photo_with_demo_model_writes_an_overlay_of_the_photo(photo, tmp_path, capsys):
    out = tmp_path / "cat.png"
    status, stdout, _ = run(capsys, "explain", photo, "--method", "ours-h", "--out", out)
    assert status == 0
    assert "bundled demo ViT" in stdout and "top classes:" in stdout
    assert sum(f"{rank}. " in stdout for rank in range(1, 5)) == 4
    assert all(name in stdout for name in SHAPE_CLASSES)
    with Image.open(out) as written, Image.open(photo) as original:
        assert written.size == original.size == (451, 300)
        written, original = np.asarray(written.convert("RGB"), float), np.asarray(original.convert("RGB"), float)
    assert written.std() > 20  # not blank
    difference = np.abs(written - original).sum(axis=-1)
    assert difference.mean() > 30  # the heatmap covers the whole photo at alpha 0.5
    # jet is red where the map is high: the most relevant region is redder than the photo there, blue elsewhere
    reddest = np.unravel_index(np.argmax(written[..., 0] - written[..., 2]), difference.shape)
    assert written[reddest][0] - written[reddest][2] > original[reddest][0] - original[reddest][2] + 50


def test_explain_all_writes_one_panel_per_method_and_explains_the_asked_class(photo, tmp_path, capsys):
    out = tmp_path / "grid.png"
    status, stdout, _ = run(capsys, "explain", photo, "--method", "all", "--target", "square", "--out", out)
    assert status == 0
    assert "explaining class 0 (square), not the predicted one" in stdout
    with Image.open(out) as grid:
        width, height = grid.size
        pixels = np.asarray(grid.convert("RGB"), float)
    columns = 1 + len(tokenattr.METHODS)  # the photo, then every method (the pixel method lrp too for ViT)
    assert width == round(columns * 2.2 * 100) and height == round(2.2 * 100 + 30)
    panels = [pixels[60:200, round(c * 220) + 20 : round((c + 1) * 220) - 20] for c in range(columns)]
    assert all(panel.std() > 10 for panel in panels)
    for left, right in zip(panels, panels[1:]):
        assert np.abs(left - right).mean() > 1  # no two neighbouring panels alike


def test_explain_with_a_checkpoint_file_and_options(photo, tmp_path, capsys):
    out = tmp_path / "rollout.png"
    status, _, _ = run(
        capsys, "explain", photo, "--checkpoint", ASSET_PATH, "--num-heads", "4", "--method", "rollout",
        "--start-layer", "1", "--alpha", "0.3", "--out", out,
    )  # fmt: skip
    assert status == 0 and out.is_file()
    status, _, stderr = run(capsys, "explain", photo, "--method", "rollout", "--steps", "5", "--out", out)
    assert status == 1 and "--steps does not apply to rollout" in stderr


# --- explain: text -----------------------------------------------------------------------------------------------


def test_explain_text_writes_html_with_every_word_coloured(bert_folder, tmp_path, capsys):
    out = tmp_path / "review.html"
    text = REVIEW + " <b>&"
    status, stdout, _ = run(capsys, "explain", "--text", text, "--checkpoint", bert_folder, "--method", "all",
                            "--out", out)  # fmt: skip
    assert status == 0 and "1. " in stdout and "NEG" in stdout and "POS" in stdout
    page = out.read_text()
    spans = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", page)
    token_methods = [name for name, method in tokenattr.METHODS.items() if not method.pixels]
    assert [name for name, _ in spans] == token_methods
    for _, row in spans:
        coloured = re.findall(r'style="background-color:#([0-9a-f]{6})"[^>]*>(.*?)</span>', row)
        assert [word for _, word in coloured] == [html.escape(word) for word in text.split()]
        assert len({colour for colour, _ in coloured}) > 1  # relevance differs between words
    ours = dict(spans)["ours-h"]
    assert "#" + "".join(f"{c:02x}" for c in POSITIVE_RGB) in ours  # the most relevant word gets the full colour
    assert "&lt;b&gt;" in page and "<b>" not in page


def test_explain_text_as_latex(bert_folder, tmp_path, capsys):
    out = tmp_path / "review.tex"
    status, _, _ = run(capsys, "explain", "--text", "a dull_film 100%", "--checkpoint", bert_folder, "--out", out)
    assert status == 0
    latex = out.read_text()
    assert latex.count("\\colorbox[RGB]") == 3 and "dull\\_film" in latex and "100\\%" in latex


# --- explain: image and prompts (CLIP) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def red_square(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A generated 64 x 64 red square (held out: the demo CLIP trained on seed 0) as a PNG, and its object mask."""
    shapes = make_captioned_shapes(len(CAPTIONS), seed=11)  # one image per caption
    index = int(np.flatnonzero(shapes.labels == CAPTIONS.index("a red square"))[0])
    path = tmp_path_factory.mktemp("shape") / "red_square.png"
    Image.fromarray(np.rint(255 * shapes.images[index].transpose(1, 2, 0)).astype(np.uint8)).save(path)
    return path, shapes.masks[index].astype(bool)


def test_explain_with_prompts_uses_the_demo_clip_and_overlays_the_object(red_square, tmp_path, capsys):
    image, mask = red_square
    out = tmp_path / "square.png"
    status, stdout, _ = run(capsys, "explain", image, "--prompt", "a blue disc", "--prompt", "a red square",
                            "--out", out)  # fmt: skip
    assert status == 0 and "bundled demo CLIP" in stdout
    assert "1. a red square" in stdout and "2. a blue disc" in stdout  # the best match is explained
    with Image.open(out) as written, Image.open(image) as original:
        assert written.size == original.size == (64, 64)  # the demo CLIP's input: the crop is the whole image
        written, original = np.asarray(written.convert("RGB"), float), np.asarray(original.convert("RGB"), float)
    assert written.std() > 20  # not blank
    assert np.abs(written - original).sum(axis=-1).mean() > 30  # the heatmap covers the image at alpha 0.5
    # undo the blend (written = (original + jet(map)) / 2): jet is red where the map is high, blue where it is low
    heat = 2 * written - original
    redness = heat[..., 0] - heat[..., 2]
    assert redness[mask].mean() > redness[~mask].mean() + 50


def test_explain_with_prompts_writes_the_prompt_words_coloured(red_square, tmp_path, capsys):
    image, _ = red_square
    out = tmp_path / "prompt.html"
    status, _, _ = run(capsys, "explain", image, "--prompt", "a blue disc", "--prompt", "a red square",
                       "--method", "all", "--out", out)  # fmt: skip
    assert status == 0
    rows = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", out.read_text()))
    clip = CLIPModel(CLIPConfig())
    assert list(rows) == [name for name, method in tokenattr.METHODS.items() if method.applies_to(clip)]
    colours = {}
    for name, row in rows.items():
        coloured = re.findall(r'style="background-color:#([0-9a-f]{6})"[^>]*>(.*?)</span>', row)
        assert [word for _, word in coloured] == ["a", "red", "square"], (name, row)  # the explained prompt
        colours[name] = {word: colour for colour, word in coloured}
    strongest = "".join(f"{c:02x}" for c in POSITIVE_RGB)
    for name in ("ours-h", "ours-t"):  # the most relevant word tells the captions apart; "a" is in every caption
        words = colours[name]
        assert strongest in (words["red"], words["square"]) and words["a"] != strongest, (name, words)


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory) -> Path:
    """A tiny random CLIP in OpenAI's names, as safetensors."""
    from safetensors.torch import save_file

    config = CLIPConfig(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1, vision_heads=1,
                        context_length=8, vocab_size=64, text_width=64, text_layers=1, text_heads=1)  # fmt: skip
    path = tmp_path_factory.mktemp("clip") / "clip.safetensors"
    save_file({name: value.contiguous() for name, value in ours_to_openai(CLIPModel(config).state_dict()).items()},
              str(path))  # fmt: skip
    return path


def test_prompts_need_a_clip_and_a_clip_needs_prompts(red_square, clip_checkpoint, tmp_path, capsys):
    image, _ = red_square
    out = tmp_path / "x.png"
    status, _, stderr = run(capsys, "explain", image, "--checkpoint", ASSET_PATH, "--num-heads", "4",
                            "--prompt", "a red square", "--out", out)  # fmt: skip
    assert status == 1 and "--prompt applies to CLIP checkpoints" in stderr and "is a vit model" in stderr
    status, _, stderr = run(capsys, "explain", image, "--checkpoint", clip_checkpoint, "--out", out)
    assert status == 1 and "a CLIP checkpoint explains an image against prompts: give one or more --prompt" in stderr
    assert not out.exists()


# --- explain: errors -------------------------------------------------------------------------------------------


def test_unreadable_and_missing_images_are_named(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    status, _, stderr = run(capsys, "explain", broken, "--out", tmp_path / "x.png")
    assert status == 1 and "cannot decode image file" in stderr and str(broken) in stderr
    status, _, stderr = run(capsys, "explain", tmp_path / "absent.jpg", "--out", tmp_path / "x.png")
    assert status == 1 and "absent.jpg does not exist" in stderr
    assert not (tmp_path / "x.png").exists()


def test_a_checkpoint_of_the_wrong_family_is_refused(photo, bert_folder, tmp_path, capsys):
    status, _, stderr = run(capsys, "explain", photo, "--checkpoint", bert_folder, "--out", tmp_path / "x.png")
    assert status == 1 and "is a bert model, which explains texts" in stderr and "vit" in stderr
    status, _, stderr = run(capsys, "explain", "--text", "a dull film", "--checkpoint", ASSET_PATH, "--num-heads", "4",
                            "--out", tmp_path / "x.html")  # fmt: skip
    assert status == 1 and "is a vit model, which explains images" in stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.html").exists()


def test_a_method_that_does_not_apply_or_does_not_exist_is_refused(photo, bert_folder, tmp_path, capsys):
    out = tmp_path / "x.html"
    status, _, stderr = run(capsys, "explain", "--text", "a dull film", "--checkpoint", bert_folder, "--method",
                            "full", "--out", out)  # fmt: skip
    assert status == 1 and "--method lrp explains image pixels and does not apply to bert models" in stderr
    assert "ours-h" in stderr
    status, _, stderr = run(capsys, "explain", photo, "--method", "magic", "--out", tmp_path / "x.png")
    assert status == 1 and "unknown method 'magic'" in stderr and "transformer-attribution" in stderr


def test_other_explain_input_errors(photo, bert_folder, tmp_path, capsys):
    cases = [
        (["explain", photo, "--out", tmp_path / "x.jpg"], "an image explanation is written as .png"),
        (["explain", "--text", "dull", "--out", tmp_path / "x.html"], "--text needs --checkpoint"),
        (["explain", photo, "--text", "dull", "--out", tmp_path / "x.png"], "either an IMAGE path or --text"),
        (["explain", photo, "--target", "7", "--out", tmp_path / "x.png"], "--target 7 is out of range"),
        (["explain", photo, "--target", "dog", "--out", tmp_path / "x.png"], "square, disc, triangle, cross"),
        (["explain", photo, "--checkpoint", tmp_path / "no.pth", "--out", tmp_path / "x.png"], "no.pth does not exist"),
        (["explain", "--text", " ", "--checkpoint", bert_folder, "--out", tmp_path / "x.html"], "--text is empty"),
    ]
    for argv, message in cases:
        status, _, stderr = run(capsys, *argv)
        assert status == 1 and message in stderr, (argv, stderr)


def test_every_family_names_its_input_kind():
    assert set(FAMILY_COMMANDS) >= {"vit", "bert", "clip"}
    assert {command.input_kind for command in FAMILY_COMMANDS.values()} <= {"image", "text"}


# --- methods ---------------------------------------------------------------------------------------------------


def test_methods_lists_every_method_with_its_description(capsys):
    status, stdout, _ = run(capsys, "methods")
    lines = stdout.strip().splitlines()
    assert status == 0 and len(lines) == len(tokenattr.METHODS)
    for line, (name, method) in zip(lines, tokenattr.METHODS.items()):
        assert line.startswith(name + " ") and method.description in line
        assert all(alias in line for alias in method.aliases)
    assert "images only" in lines[list(tokenattr.METHODS).index("lrp")]


def test_python_dash_m_runs_the_command():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "tokenattr", "methods"], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("ours-h")


# --- report ----------------------------------------------------------------------------------------------------


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def results_files(tmp_path) -> list[Path]:
    """Results in the layouts the evaluation scripts write (only the keys the report reads, plus some noise)."""
    files = []
    for method, (accuracy, iou, ap) in {"rollout": (0.70, 0.6543, 0.80), "ours-h": (0.8012, 0.60, 0.85)}.items():
        metrics = {"pixel_accuracy": accuracy, "mean_iou": iou, "mean_ap": ap}
        files.append(_write(tmp_path / f"seg_{method}.json", {"method": method, "count": 5, "metrics": metrics}))
    for method, positive, negative in (("ours-h", 0.20, 0.50), ("rollout", 0.30, 0.55)):
        for test, auc in (("positive", positive), ("negative", negative)):
            data = {"method": method, "vis_class": "top", "test": test, "auc_original": auc, "auc_chefer": 0.9}
            files.append(_write(tmp_path / f"{method}_top_{test}.json", data))
    token_f1 = {
        "results": {
            "ours-h": {"method": "ours-h", "token_f1": {"5": {"instance_macro": {"f1": 0.25}}}},
            "rollout": {"method": "rollout", "token_f1": {"5": {"instance_macro": {"f1": 0.125}}}},
        },
        "random ranking": {"5": {"instance_macro": {"f1": 0.5}}},  # a floor, however high: never bold
    }
    files.append(_write(tmp_path / "token_f1.json", token_f1))
    return files


def test_report_tables_bold_the_best_of_each_column_times_100(results_files):
    table = results_table(results_files)
    markdown = to_markdown(table).splitlines()
    assert markdown[0] == (
        "| method | pixel acc. ↑ | mIoU ↑ | mAP ↑ | pos. AUC (predicted) ↓ | neg. AUC (predicted) ↑ | F1@5 ↑ |"
    )
    assert markdown[2] == "| ours-h | **80.12** | 60.00 | **85.00** | **20.00** | 50.00 | **25.00** |"
    assert markdown[3] == "| rollout | 70.00 | **65.43** | 80.00 | 30.00 | **55.00** | 12.50 |"
    assert markdown[4] == "| random ranking | – | – | – | – | – | 50.00 |"
    latex = to_latex(table, digits=1)
    assert "\\begin{tabular}{lrrrrrr}" in latex and "\\end{tabular}" in latex
    assert "ours-h & \\textbf{80.1} & 60.0 & \\textbf{85.0} & \\textbf{20.0} & 50.0 & \\textbf{25.0} \\\\" in latex
    assert "\\midrule\nrandom ranking & -- & -- & -- & -- & -- & 50.0 \\\\" in latex
    assert "pos. AUC (predicted) $\\downarrow$" in latex


def test_report_command_writes_markdown_and_latex(results_files, tmp_path, capsys):
    status, stdout, _ = run(capsys, "report", *results_files, "--auc", "chefer", "--digits", "1",
                            "--out", tmp_path / "table")  # fmt: skip
    assert status == 0
    markdown, latex = (tmp_path / "table.md").read_text(), (tmp_path / "table.tex").read_text()
    assert markdown in stdout and latex in stdout
    assert "| ours-h | **80.1** | 60.0 | **85.0** | **90.0** | **90.0** | **25.0** |" in markdown  # Chefer AUCs tie


def test_report_errors_name_the_file(results_files, tmp_path, capsys):
    unknown = _write(tmp_path / "bench.json", {"benchmark": "speed"})
    status, _, stderr = run(capsys, "report", unknown)
    assert status == 1 and "bench.json is not a results file this report knows" in stderr
    conflicting = _write(tmp_path / "again.json", {"method": "ours-h", "metrics": {"pixel_accuracy": 0.1,
                                                   "mean_iou": 0.6, "mean_ap": 0.85}})  # fmt: skip
    status, _, stderr = run(capsys, "report", *results_files, conflicting)
    assert status == 1 and "again.json gives ours-h / pixel acc. = 0.1" in stderr
    status, _, stderr = run(capsys, "report", tmp_path / "absent.json")
    assert status == 1 and "absent.json does not exist" in stderr
    (tmp_path / "bad.json").write_text("{not json")
    status, _, stderr = run(capsys, "report", tmp_path / "bad.json")
    assert status == 1 and "bad.json is not valid JSON" in stderr
