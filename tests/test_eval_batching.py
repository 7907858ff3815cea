"""Evaluation throughput (issue 8): the segmentation test and the generation stage explain whole batches and load
data in worker processes, and a batch with workers gives what batch 1 without workers gives, for every method."""

from __future__ import annotations

import h5py
import pytest
import torch
from conftest import random_vit
from test_generation import generation, setup  # noqa: F401 - the fixture of the generation tests

import tokenattr
from tokenattr.protocols import segmentation_metrics


def loader(dataset, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)


@pytest.mark.parametrize("method", tokenattr.METHODS)
def test_segmentation_batches_with_workers_match_batch_one(method):
    model = random_vit()
    generator = torch.Generator().manual_seed(5)
    images01 = torch.rand(6, 3, 32, 32, generator=generator)
    masks = (torch.rand(6, 32, 32, generator=generator) > 0.6).long()
    dataset = torch.utils.data.TensorDataset(images01, masks)
    options = {"steps": 3} if "steps" in tokenattr.METHODS[method].options else {}

    def scores(batch_size: int, num_workers: int) -> dict:
        metrics = segmentation_metrics(
            model,
            loader(dataset, batch_size, num_workers),
            method,
            normalize=lambda x: (x - 0.5) / 0.5,
            progress=False,
            **options,
        )
        return metrics.compute()

    batched, single = scores(4, 2), scores(1, 0)
    assert batched["count"] == single["count"] == 6
    # Maps agree to float rounding (tests/test_methods.py); the AP's ranking of near-equal pixels may flip with it.
    for key, value in single.items():
        assert batched[key] == pytest.approx(value, rel=1e-4, abs=1e-9), key


@pytest.mark.parametrize("method", ["ours-h", "transformer-attribution"])
def test_generation_batches_with_workers_match_batch_one(setup, method):  # noqa: F811 - the fixture
    def maps(batch_size: int, num_workers: int):
        out = setup["tmp"] / f"b{batch_size}w{num_workers}"
        flags = [*setup["flags"], "--batch-size", str(batch_size), "--num-workers", str(num_workers)]
        if "steps" in tokenattr.METHODS[method].options:
            flags += ["--steps", "3"]
        path = generation.main(["--method", method, "--out", str(out), *flags])
        with h5py.File(path, "r") as file:
            return {name: file[name][()] for name in ("image", "vis", "target")}

    batched, single = maps(4, 2), maps(1, 0)
    assert (batched["image"] == single["image"]).all() and (batched["target"] == single["target"]).all()
    torch.testing.assert_close(torch.from_numpy(batched["vis"]), torch.from_numpy(single["vis"]), rtol=1e-5, atol=1e-6)
