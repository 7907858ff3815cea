"""The notebooks run top to bottom (offline, CPU, the demo models) and are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tokenattr

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _outputs(notebook, kind: str) -> list[str]:
    """Every output of ``kind`` ("text/plain" streams are "stream"; else a MIME type) as text."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "stream" and output.get("output_type") == "stream":
                found.append(output["text"])
            elif kind in output.get("data", {}):
                found.append(output["data"][kind])
    return found


@pytest.mark.parametrize("name", ["ViT", "BERT", "CLIP"])
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.parametrize("name", ["ViT", "BERT", "CLIP"])
def test_notebook_runs_on_the_demo_model(name, tmp_path, monkeypatch):
    for variable in (
        "TOKENATTR_VIT_CHECKPOINT",
        "TOKENATTR_VIT_NUM_HEADS",
        "TOKENATTR_BERT_CHECKPOINT",
        "TOKENATTR_CLIP_CHECKPOINT",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks write under tempfile.gettempdir()
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    printed = "".join(_outputs(notebook, "stream"))
    assert "notebook ran in" in printed
    rows = [line.split() for line in printed.splitlines() if line.startswith(("ours-h ", "rollout "))]
    assert len(rows) == 2 and all(len(row) > 2 for row in rows)  # the evaluation table has both methods' numbers
    # ViT and CLIP: the maps and the perturbation curves; BERT: the curves (its maps are HTML)
    assert len(_outputs(notebook, "image/png")) == {"ViT": 2, "BERT": 1, "CLIP": 2}[name]
    if name == "CLIP":
        assert (tmp_path / "tokenattr_notebooks" / "clip_methods.png").is_file()
        assert "energy in mask" in printed  # the maps scored against the demo's object masks
        clip_methods = [method for method in tokenattr.METHODS.values() if not method.needs_relprop]
        pages = _outputs(notebook, "text/html")
        assert len(pages) == 4  # the best prompt of each of the four images, its words coloured by every method
        for page in pages:
            assert page.count("<tr><th>") == len(clip_methods) and page.count('<span class="w"') > 3 * len(clip_methods)
    elif name == "ViT":
        assert (tmp_path / "tokenattr_notebooks" / "vit_methods.png").is_file()
        assert "mIoU" in printed  # the demo model's segmentation test
    else:
        pages = _outputs(notebook, "text/html")
        assert len(pages) == 3 and all(page.count('<span class="w"') > 20 for page in pages)
        assert "random ranking" in printed and "\\colorbox[RGB]" in printed
        token_methods = [method for method in tokenattr.METHODS.values() if not method.pixels]
        latex = (tmp_path / "tokenattr_notebooks" / "bert_text0.tex").read_text()
        assert latex.count("\\textbf{") == len(token_methods)  # one paragraph per method
