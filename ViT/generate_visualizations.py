"""Stage 1 of the ViT perturbation test (spec §5.2): the maps of one method over ImageNet validation images.

    python ViT/generate_visualizations.py --method ours --vis-class top --imagenet-validation-path val/ \\
        --pert-index ../shared/data/pert_index.npy --checkpoint jx_vit_base_p16_224-80ecf9dd.pth --device cuda

Writes ``OUT/{method}/{vis_class}/results.hdf5`` (see :mod:`tokenattr.results_file`): the [0, 1] images, their
min-max maps and labels, a batch at a time. An interrupted run resumes where it stopped when started again
with the same flags; a finished file is left as it is. Stage 2 is ``ViT/perturbation_eval_from_hdf5.py``.

On several GPUs or nodes, start it with ``torchrun`` (spec §7; NCCL on GPU, gloo on CPU):

    torchrun --nproc_per_node=8 ViT/generate_visualizations.py --method ours ... --device cuda

Process ``r`` of ``N`` explains batches ``r, r + N, ...`` of the single-process run into its own resumable part
file beside the target, ``results.hdf5.part{r}of{N}``; once all are finished, rank 0 assembles ``results.hdf5``
in the single-process order (atomically: a temporary file, then ``os.replace``), with the single-process
fingerprint, and removes the parts. Rerun with the same flags (and ``N``) to resume the parts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import tokenattr
from tokenattr import cli, distributed
from tokenattr.data import ImageNetValidation, normalize
from tokenattr.protocols import VIS_CLASSES
from tokenattr.results_file import ResultsFile, checkpoint_identity, indices_hash, open_finished


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_explanation_arguments(parser, limit_help="only the first N images of the subset (quick runs)")
    parser.add_argument(
        "--imagenet-validation-path", type=Path, required=True, help="ImageNet val folder, one folder per class"
    )
    parser.add_argument("--pert-index", type=Path, help="pert_index.npy: the subset of images (default: all)")
    parser.add_argument(
        "--vis-class", choices=VIS_CLASSES, default="top", help="explain the predicted class or the label (top)"
    )
    parser.add_argument("--image-size", type=int, help="image and map size (default: the model's input size, 224)")
    parser.add_argument(
        "--out", type=Path, default=Path("visualizations"), help="output folder (default: visualizations)"
    )
    args = parser.parse_args(argv)

    cli.check_explanation_arguments(parser, args, positive=("image_size",))
    if not args.imagenet_validation_path.is_dir():
        parser.error(f"--imagenet-validation-path {args.imagenet_validation_path} is not a folder")
    if args.pert_index is not None and not args.pert_index.is_file():
        parser.error(f"--pert-index {args.pert_index} does not exist (expected pert_index.npy)")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    """Generate (or complete) the results file; returns its path (under ``torchrun``, rank 0 writes it)."""
    args = parse_args(argv)
    rank, world_size = distributed.init_from_env(args.device)  # (0, 1) unless started by torchrun
    try:
        return _main(args, rank, world_size)
    finally:
        distributed.cleanup()


def _main(args: argparse.Namespace, rank: int, world_size: int) -> Path:
    device = distributed.local_device(args.device) if world_size > 1 else args.device
    model = tokenattr.load_model(args.checkpoint, num_heads=args.num_heads, device=device)
    config = model.config
    image_size = args.image_size or config.image_size
    mean, std = cli.image_normalisation(args, config)  # what generate() normalises with; stage 2 reads it back
    indices = None if args.pert_index is None else np.load(args.pert_index)
    dataset = ImageNetValidation(args.imagenet_validation_path, indices=indices, image_size=image_size)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    fingerprint = {
        "method": args.method,
        "method_options": {**model.method_defaults(args.method), **args.method_options},
        "vis_class": args.vis_class,
        "checkpoint": checkpoint_identity(args.checkpoint),
        "num_heads": config.num_heads,
        "imagenet_validation_path": str(args.imagenet_validation_path.resolve()),
        "indices": indices_hash(indices),
        "count": count,
        "image_size": image_size,
        "image_mean": list(mean),
        "image_std": list(std),
        # The batch and the device change the floats a little; a resumed run must reproduce them exactly.
        "batch_size": args.batch_size,
        "device": str(args.device),
        "tokenattr": tokenattr.__version__,
    }
    path = args.out / args.method / args.vis_class / "results.hdf5"
    if world_size > 1:
        return _generate_sharded(model, dataset, path, fingerprint, args, count, image_size, rank, world_size, device)
    with ResultsFile(path, fingerprint, (image_size, image_size)) as results:
        if results.finished:
            print(f"{path} is finished ({results.completed} images); nothing to do")
            return path
        if results.completed:
            print(f"resuming {path} after {results.completed} of {count} images")
        remaining = torch.utils.data.Subset(dataset, range(results.completed, count))
        loader = torch.utils.data.DataLoader(remaining, batch_size=args.batch_size, num_workers=args.num_workers)
        generate(model, loader, results, args, count)
        results.finish()
    print(f"wrote {path} ({count} images)")
    return path


def generate(
    model: torch.nn.Module,
    loader,
    results: ResultsFile,
    args: argparse.Namespace,
    count: int,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> None:
    """Explain every batch of ``loader`` and append the images, maps and labels to ``results``.

    ``device`` defaults to ``args.device``; ``progress=False`` hides the progress bar (ranks other than 0).
    """
    from tqdm.auto import tqdm

    mean, std = cli.image_normalisation(args, model.config)
    device = args.device if device is None else device
    description = f"{args.method} {args.vis_class}"
    with tqdm(total=count, initial=results.completed, desc=description, unit="image", disable=not progress) as bar:
        for images01, labels in loader:
            inputs = normalize(images01.to(device), mean, std)
            target = labels.to(device) if args.vis_class == "target" else None
            relevance = tokenattr.explain(model, inputs, args.method, target=target, **args.method_options)
            maps = tokenattr.to_image_map(relevance, tuple(images01.shape[-2:]))
            results.append(images01.numpy(), maps[:, None].cpu().numpy(), labels.numpy().astype(np.int32))
            bar.update(len(labels))


def part_path(path: Path, rank: int, world_size: int) -> Path:
    """Rank ``rank``'s part file of ``path`` under ``torchrun`` with ``world_size`` processes."""
    return path.with_name(f"{path.name}.part{rank}of{world_size}")


def _generate_sharded(
    model: torch.nn.Module,
    dataset,
    path: Path,
    fingerprint: dict,
    args: argparse.Namespace,
    count: int,
    image_size: int,
    rank: int,
    world_size: int,
    device: torch.device,
) -> Path:
    """The ``torchrun`` path: this rank's part file, then (rank 0) the assembled ``path``."""
    # Rank 0 alone opens an existing target (HDF5 allows one writer) and tells the others what it found.
    status = [_target_status(path, fingerprint, (image_size, image_size)) if rank == 0 else None]
    torch.distributed.broadcast_object_list(status, src=0)
    if status[0] == "finished":
        if rank == 0:
            print(f"{path} is finished; nothing to do")
        return path
    if status[0] != "absent":
        raise ValueError(status[0])

    shards = [distributed.shard_indices(count, r, world_size, block=args.batch_size) for r in range(world_size)]
    shard = shards[rank]
    part = part_path(path, rank, world_size)
    part_fingerprint = {**fingerprint, "rank": rank, "world_size": world_size}
    with ResultsFile(part, part_fingerprint, (image_size, image_size)) as results:
        if not results.finished:
            if results.completed:
                print(f"rank {rank}: resuming {part} after {results.completed} of {len(shard)} images")
            # `completed` is a whole number of batches, so the rest starts at a batch of the single-process run.
            remaining = torch.utils.data.Subset(dataset, shard[results.completed :])
            loader = torch.utils.data.DataLoader(remaining, batch_size=args.batch_size, num_workers=args.num_workers)
            generate(model, loader, results, args, len(shard), device=device, progress=rank == 0)
            results.finish()
    torch.distributed.barrier()  # every part is finished
    if rank == 0:
        _assemble(path, fingerprint, (image_size, image_size), shards, args.batch_size)
        print(f"wrote {path} ({count} images from {world_size} processes)")
    return path


def _target_status(path: Path, fingerprint: dict, image_size: tuple[int, int]) -> str:
    """``"finished"``, ``"absent"`` or why the existing ``path`` cannot be used (a sharded run never writes it
    unfinished)."""
    if not path.exists():
        return "absent"
    try:
        with ResultsFile(path, fingerprint, image_size) as results:
            if results.finished:
                return "finished"
            return (
                f"results file {path} is an unfinished single-process run ({results.completed} images); "
                "complete it with one process and the same flags, or delete it"
            )
    except (OSError, ValueError) as error:
        return str(error)


def _assemble(
    path: Path, fingerprint: dict, image_size: tuple[int, int], shards: list[list[int]], batch_size: int
) -> None:
    """Write ``path`` from the finished part files, item ``i`` at row ``i``; atomically, then remove the parts."""
    world_size = len(shards)
    parts = [open_finished(part_path(path, rank, world_size)) for rank in range(world_size)]
    temporary = path.with_name(f".{path.name}.assembling")
    try:
        for rank, (part, shard) in enumerate(zip(parts, shards)):
            if int(part.attrs["completed"]) != len(shard):
                raise ValueError(
                    f"{part.filename} holds {int(part.attrs['completed'])} images, expected {len(shard)}; delete it"
                )
        temporary.unlink(missing_ok=True)  # left by an assembly that was cut off
        with ResultsFile(temporary, fingerprint, image_size) as results:
            # Block b of the single-process order is block b // world_size of rank b % world_size's part.
            count = sum(len(shard) for shard in shards)
            for block in range((count + batch_size - 1) // batch_size):
                part = parts[block % world_size]
                rows = slice(block // world_size * batch_size, (block // world_size + 1) * batch_size)
                results.append(part["image"][rows], part["vis"][rows], part["target"][rows])
            results.finish()
        os.replace(temporary, path)
    finally:
        for part in parts:
            part.close()
        temporary.unlink(missing_ok=True)
    for rank in range(world_size):
        part_path(path, rank, world_size).unlink()


if __name__ == "__main__":
    main(sys.argv[1:])
