"""Stage 1 of the perturbation test under torchrun: 2 CPU processes write the results file of 1, and resume."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch
from conftest import load_script, one_torch_thread, random_vit, run_torchrun
from PIL import Image

from tokenattr.models.vit import ours_to_timm
from tokenattr.results_file import ResultsFile


def _datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as file:
        assert file.attrs["finished"] and file.attrs["completed"] == 7
        return {name: file[name][()] for name in ("image", "vis", "target")}


def test_two_cpu_processes_write_the_file_of_one_and_resume(tmp_path):
    checkpoint = tmp_path / "vit.pth"
    torch.save(ours_to_timm(random_vit().state_dict()), checkpoint)
    rng = np.random.default_rng(0)
    root = tmp_path / "val"
    for wnid, images in (("n01440764", 4), ("n01443537", 4)):
        (root / wnid).mkdir(parents=True)
        for index in range(images):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"ILSVRC2012_val_{index:08d}.JPEG")
    # A shuffled subset of 7: batches of 2 are {0, 1}, {2, 3}, {4, 5}, {6}; rank 0 gets the 1st and 3rd, rank 1
    # the 2nd and the short last one.
    pert_index = tmp_path / "pert_index.npy"
    np.save(pert_index, np.array([5, 0, 7, 2, 3, 1, 6]))
    flags = ["--method", "rollout", "--vis-class", "target", "--checkpoint", str(checkpoint)]
    flags += ["--imagenet-validation-path", str(root), "--pert-index", str(pert_index), "--num-heads", "4"]
    flags += ["--batch-size", "2", "--num-workers", "0"]

    with one_torch_thread():
        single_path = load_script("generate_visualizations").main([*flags, "--out", str(tmp_path / "single")])
    single = _datasets(single_path)
    assert single["target"].tolist() == [1, 0, 1, 0, 0, 0, 1]

    # An interrupted sharded run: rank 0 wrote its first batch and part of its second (cut off before
    # `completed` was raised), rank 1 its first batch; an assembly was cut off too.
    folder = tmp_path / "multi" / "rollout" / "target"
    with h5py.File(single_path, "r") as file:
        fingerprint = {
            key[len("fingerprint_") :]: json.loads(value)
            for key, value in file.attrs.items()
            if key.startswith("fingerprint_")
        }
    for rank, rows in ((0, [0, 1]), (1, [2, 3])):
        part_fingerprint = {**fingerprint, "rank": rank, "world_size": 2}
        with ResultsFile(folder / f"results.hdf5.part{rank}of2", part_fingerprint, (32, 32)) as part:
            part.append(*(single[name][rows] for name in ("image", "vis", "target")))
            if rank == 0:
                for name in ("image", "vis", "target"):
                    part._file[name].resize(3, axis=0)
                    part._file[name][2] = single[name][4] + 1
    (folder / ".results.hdf5.assembling").write_bytes(b"cut off")

    output = run_torchrun("generate_visualizations", [*flags, "--out", str(tmp_path / "multi")], tmp_path).stdout
    assert "rank 0: resuming" in output and "rank 1: resuming" in output
    assert output.count("wrote ") == 1  # rank 0 alone assembles
    assert sorted(p.name for p in folder.iterdir()) == ["results.hdf5"]  # parts and temporary file removed
    multi = _datasets(folder / "results.hdf5")
    # Each rank's batches are batches of the single-process run, so even the maps are equal bit for bit.
    for name in ("image", "vis", "target"):
        assert multi[name].dtype == single[name].dtype and multi[name].tobytes() == single[name].tobytes(), name
    with h5py.File(folder / "results.hdf5", "r") as multi_file, h5py.File(single_path, "r") as single_file:
        assert dict(multi_file.attrs) == dict(single_file.attrs)  # the single-process fingerprint

    before = (folder / "results.hdf5").read_bytes()
    output = run_torchrun("generate_visualizations", [*flags, "--out", str(tmp_path / "multi")], tmp_path).stdout
    assert "nothing to do" in output and "wrote " not in output
    assert (folder / "results.hdf5").read_bytes() == before
