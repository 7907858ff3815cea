"""Multi-process evaluation (tokenattr.distributed, spec §7): 2 CPU processes under torchrun give the metrics of 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import load_script, one_torch_thread, random_vit, run_torchrun

from tokenattr.data import write_gtsegs_like
from tokenattr.distributed import all_reduce_sums, init_from_env, is_main, shard_indices
from tokenattr.evaluation import SegmentationMetrics
from tokenattr.models.vit import ours_to_timm


@pytest.mark.parametrize("n", [0, 1, 5, 7, 16])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("block", [1, 2, 4])
def test_shard_indices_cover_every_item_exactly_once(n, world_size, block):
    shards = [shard_indices(n, rank, world_size, block=block) for rank in range(world_size)]
    assert sorted(index for shard in shards for index in shard) == list(range(n))
    for shard in shards:
        assert shard == sorted(shard)
        # Whole blocks of the single-process order: batch b of size `block` is on rank b % world_size.
        batches = [shard[start : start + block] for start in range(0, len(shard), block)]
        for batch in batches:
            assert batch[0] % block == 0 and batch == list(range(batch[0], min(batch[0] + block, n)))
    if block == 1:
        assert shards == [list(range(rank, n, world_size)) for rank in range(world_size)]


def test_shard_indices_rejects_bad_ranks():
    with pytest.raises(ValueError, match="rank"):
        shard_indices(5, 2, 2)
    with pytest.raises(ValueError, match="block"):
        shard_indices(5, 0, 2, block=0)


def test_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_from_env("cpu") == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_from_env("cpu") == (0, 1)
    assert not torch.distributed.is_initialized() and is_main()

    metrics = SegmentationMetrics()
    metrics.update(torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0)), torch.ones(2, 8, 8, dtype=int))
    state = metrics.state_dict()
    assert all_reduce_sums(state) == state  # identity without a process group
    assert SegmentationMetrics.from_state_dict(all_reduce_sums(state)).compute() == metrics.compute()


def test_two_cpu_processes_give_the_metrics_of_one(tmp_path):
    rng = np.random.default_rng(1)
    sizes = [(40, 50), (32, 32), (45, 30), (36, 40), (30, 44)]  # 5 images: shards of 3 and 2 batches of 1 ...
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    masks = [np.zeros((h, w), dtype=np.uint8) for h, w in sizes]
    for index, mask in enumerate(masks):
        mask[3 + index : 22 + index, 6:24] = 1
    mat = tmp_path / "gtsegs_ijcv.mat"
    write_gtsegs_like(mat, images, masks)
    checkpoint = tmp_path / "vit.pth"
    torch.save(ours_to_timm(random_vit().state_dict()), checkpoint)
    # ... and with 2 images a batch, ranks get batches {0, 1}, {4} and {2, 3}: uneven, the last one short.
    flags = ["--method", "ours", "--imagenet-seg-path", str(mat), "--checkpoint", str(checkpoint)]
    flags += ["--num-heads", "4", "--steps", "4", "--batch-size", "2", "--num-workers", "0"]

    # The order of near-tied pixels in the AP follows float rounding, which depends on the thread count.
    with one_torch_thread():
        single = load_script("imagenet_seg_eval").main([*flags, "--out", str(tmp_path / "single")])

    result = run_torchrun("imagenet_seg_eval", [*flags, "--out", str(tmp_path / "multi")], tmp_path)
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == ["ours-h.json"]  # rank 0 alone writes
    assert result.stdout.count("wrote ") == 1 and "mIoU" in result.stdout

    multi = json.loads((tmp_path / "multi" / "ours-h.json").read_text())
    assert multi["count"] == single["count"] == 5
    assert multi["settings"]["world_size"] == 2 and single["settings"]["world_size"] == 1
    for key in ("pixel_accuracy", "iou_background", "iou_foreground", "mean_iou"):
        assert multi["metrics"][key] == single["metrics"][key], key
    assert multi["metrics"]["mean_ap"] == pytest.approx(single["metrics"]["mean_ap"], abs=1e-12)
    assert {key: value for key, value in multi["settings"].items() if key != "world_size"} == {
        key: value for key, value in single["settings"].items() if key != "world_size"
    }
