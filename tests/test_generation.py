"""Stage 1 and 2 of the perturbation test: the resumable results file and the two ViT scripts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import ROOT, load_script, random_vit
from PIL import Image

from tokenattr.models.vit import ours_to_timm
from tokenattr.results_file import ResultsFile

generation = load_script("generate_visualizations")
stage2 = load_script("perturbation_eval_from_hdf5")


@pytest.fixture
def setup(tmp_path: Path) -> dict:
    """A tiny ViT checkpoint and an ImageNet-style folder: 2 classes x 3 JPEGs of 32x32."""
    checkpoint = tmp_path / "vit.pth"
    torch.save(ours_to_timm(random_vit().state_dict()), checkpoint)
    rng = np.random.default_rng(0)
    root = tmp_path / "val"
    for wnid in ("n01440764", "n01443537"):
        (root / wnid).mkdir(parents=True)
        for index in range(3):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"ILSVRC2012_val_{index:08d}.JPEG")
    flags = [
        "--checkpoint",
        str(checkpoint),
        "--imagenet-validation-path",
        str(root),
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--num-heads",
        "4",
        "--vis-class",
        "target",
    ]
    return {"checkpoint": checkpoint, "flags": flags, "tmp": tmp_path}


def stage2_flags(setup: dict, folder: str) -> list[str]:
    """Flags of the perturbation script for the rollout/target results under ``folder``."""
    return [
        *("--method", "rollout", "--vis-class", "target", "--checkpoint", str(setup["checkpoint"])),
        *("--visualizations", str(setup["tmp"] / folder), "--out", str(setup["tmp"] / "json")),
    ]


def generate(setup: dict, out: str, method: str = "rollout") -> Path:
    return generation.main(["--method", method, "--out", str(setup["tmp"] / out), *setup["flags"]])


def datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as file:
        assert file.attrs["finished"] and file.attrs["completed"] == 6
        return {name: file[name][()] for name in ("image", "vis", "target")}


def assert_same(a: dict, b: dict) -> None:
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name


def test_generation_layout_and_resume_after_interrupt(setup, monkeypatch):
    reference = datasets(generate(setup, "a"))
    assert reference["image"].shape == (6, 3, 32, 32) and reference["vis"].shape == (6, 1, 32, 32)
    assert reference["target"].tolist() == [0, 0, 0, 1, 1, 1]
    assert 0 <= reference["vis"].min() and reference["vis"].max() <= 1

    original_append = ResultsFile.append

    def append_then_stop(self, *batch):
        original_append(self, *batch)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultsFile, "append", append_then_stop)
    with pytest.raises(KeyboardInterrupt):
        generate(setup, "b")
    monkeypatch.undo()
    path = setup["tmp"] / "b" / "rollout" / "target" / "results.hdf5"
    with h5py.File(path, "r") as file:
        assert file.attrs["completed"] == 2 and not file.attrs["finished"]
    with pytest.raises(ValueError, match="unfinished"):
        stage2.main(stage2_flags(setup, "b"))

    explained = []
    original_explain = generation.tokenattr.explain
    monkeypatch.setattr(
        generation.tokenattr, "explain", lambda *a, **k: explained.append(1) or original_explain(*a, **k)
    )
    generate(setup, "b")
    assert len(explained) == 2  # the 4 images left, in batches of 2
    assert_same(reference, datasets(path))


def test_resume_after_sigkill(setup):
    reference = datasets(generate(setup, "a"))
    path = setup["tmp"] / "b" / "rollout" / "target" / "results.hdf5"
    # The child appends slowly so that the kill lands mid-run.
    child_code = (
        "import sys, time; sys.path[:0] = [sys.argv[1]];"
        "from tokenattr.results_file import ResultsFile; append = ResultsFile.append;"
        "ResultsFile.append = lambda self, *b: (append(self, *b), time.sleep(30));"
        "import runpy; sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    command = [
        sys.executable,
        "-c",
        child_code,
        str(ROOT),
        str(ROOT / "ViT" / "generate_visualizations.py"),
        "--method",
        "rollout",
        "--out",
        str(setup["tmp"] / "b"),
        *setup["flags"],
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            try:
                with h5py.File(path, "r", locking=False) as file:  # the child holds the write lock
                    if file.attrs.get("completed", 0) >= 1:
                        break
            except (OSError, KeyError):  # not created yet, or locked mid-write
                pass
            time.sleep(0.1)
        assert child.poll() is None, child.stderr.read().decode()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    with h5py.File(path, "r") as file:
        assert 1 <= file.attrs["completed"] < 6 and not file.attrs["finished"]
    assert_same(reference, datasets(generate(setup, "b")))


def test_foreign_file_refused_and_finished_file_not_recomputed(setup, monkeypatch):
    generate(setup, "a")
    path = setup["tmp"] / "a" / "rollout" / "target" / "results.hdf5"
    foreign = setup["tmp"] / "a" / "ours-h" / "target" / "results.hdf5"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"was made by a different run: method rollout vs ours-h.*delete it"):
        generate(setup, "a", method="ours-h")

    before = path.read_bytes()
    monkeypatch.setattr(generation.tokenattr, "explain", lambda *a, **k: pytest.fail("explain called"))
    assert generate(setup, "a") == path
    assert path.read_bytes() == before


def test_perturbation_script_writes_both_aucs(setup, capsys):
    generate(setup, "a")
    flags = [*stage2_flags(setup, "a"), "--batch-size", "4"]
    positive = stage2.main(flags)
    negative = stage2.main([*flags, "--neg"])
    assert positive["test"] == "positive" and negative["test"] == "negative"
    for results in (positive, negative):
        assert results["count"] == 6 and len(results["step_accuracy"]) == 9
        assert 0 <= results["auc_original"] <= 1 and 0 <= results["auc_chefer"] <= 1
    written = json.loads((setup["tmp"] / "json" / "rollout_target_negative.json").read_text())
    assert written["auc_original"] == negative["auc_original"]
    output = capsys.readouterr().out
    assert "original grid" in output and "Chefer grid" in output
    with pytest.raises(SystemExit):
        stage2.parse_args([*flags, "--neg", "False"])  # a flag, not type=bool: "False" is an error, not true
