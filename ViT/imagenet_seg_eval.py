"""The ImageNet-segmentation test (spec §5.1) of one attribution method on a ViT, with the original's flags.

    python ViT/imagenet_seg_eval.py --method ours --imagenet-seg-path gtsegs_ijcv.mat \\
        --checkpoint jx_vit_base_p16_224-80ecf9dd.pth --device cuda

Prints pixel accuracy, mIoU and mAP (x100) and writes them, as fractions and x100, with the settings, versions
and date, to ``OUT/{method}.json``. The protocol itself is :func:`tokenattr.protocols.segmentation_test`.

On several GPUs or nodes, start it with ``torchrun`` (spec §7; NCCL on GPU, gloo on CPU):

    torchrun --nproc_per_node=8 ViT/imagenet_seg_eval.py --method ours ... --device cuda

Each process evaluates every ``world_size``-th batch of the single-process run, the metric sums are added
across processes, and rank 0 prints and writes the same results as one process would.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import tokenattr
from tokenattr import cli, distributed
from tokenattr.data import ImagenetSegmentation, normalize
from tokenattr.evaluation import SegmentationMetrics
from tokenattr.io import write_json
from tokenattr.protocols import segmentation_metrics, versions

METRICS = {"pixel_accuracy": "pixel acc", "mean_iou": "mIoU", "mean_ap": "mAP"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_explanation_arguments(parser, limit_help="evaluate only the first N images (quick runs)")
    parser.add_argument("--imagenet-seg-path", type=Path, required=True, help="gtsegs_ijcv.mat")
    parser.add_argument("--out", type=Path, default=Path("results/seg"), help="output folder (default: results/seg)")
    args = parser.parse_args(argv)

    cli.check_explanation_arguments(parser, args)
    if not args.imagenet_seg_path.is_file():
        parser.error(f"--imagenet-seg-path {args.imagenet_seg_path} does not exist (expected gtsegs_ijcv.mat)")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the test; returns what it writes to ``OUT/{method}.json``."""
    args = parse_args(argv)
    rank, world_size = distributed.init_from_env(args.device)  # (0, 1) unless started by torchrun
    try:
        return _evaluate(args, rank, world_size)
    finally:
        distributed.cleanup()


def _evaluate(args: argparse.Namespace, rank: int, world_size: int) -> dict:
    device = distributed.local_device(args.device)
    model = tokenattr.load_model(args.checkpoint, num_heads=args.num_heads, device=device)
    config = model.config
    dataset = ImagenetSegmentation(args.imagenet_seg_path, image_size=config.image_size)
    if args.limit is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(args.limit, len(dataset))))
    if world_size > 1:  # whole batches of the single-process run, so that the maps are the same too
        shard = distributed.shard_indices(len(dataset), rank, world_size, block=args.batch_size)
        dataset = torch.utils.data.Subset(dataset, shard)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers)

    mean, std = cli.image_normalisation(args, config)

    def to_input(images01: torch.Tensor) -> torch.Tensor:
        return normalize(images01, mean, std)

    accumulator = segmentation_metrics(
        model, loader, args.method, normalize=to_input, progress=rank == 0, **args.method_options
    )
    accumulator = SegmentationMetrics.from_state_dict(distributed.all_reduce_sums(accumulator.state_dict()))
    if accumulator.count == 0:
        raise ValueError(f"{args.imagenet_seg_path} gave no images to evaluate")
    scores = accumulator.compute()
    metrics = {key: value for key, value in scores.items() if key != "count"}
    results = {
        "method": args.method,
        "count": scores["count"],
        "metrics": metrics,
        "metrics_x100": {key: 100 * value for key, value in metrics.items()},
        "settings": {
            "imagenet_seg_path": str(args.imagenet_seg_path),
            "checkpoint": str(args.checkpoint),
            "num_heads": config.num_heads,
            "image_size": config.image_size,
            "image_mean": list(mean),
            "image_std": list(std),
            "method_options": {**model.method_defaults(args.method), **args.method_options},
            "target": "predicted class",
            "batch_size": args.batch_size,
            "limit": args.limit,
            "device": str(args.device),
            "world_size": world_size,
        },
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if rank != 0:
        return results
    path = args.out / f"{args.method}.json"
    write_json(path, results)

    print(f"{args.method} on {scores['count']} images of {args.imagenet_seg_path.name} (x100):")
    for key, label in METRICS.items():
        print(f"  {label:<10}{100 * scores[key]:>7.2f}")
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
