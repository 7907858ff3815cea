"""Stage 1 of the ViT perturbation test (spec §5.2): the maps of one method over ImageNet validation images.

    python ViT/generate_visualizations.py --method ours --vis-class top --imagenet-validation-path val/ \\
        --pert-index ../shared/data/pert_index.npy --checkpoint jx_vit_base_p16_224-80ecf9dd.pth --device cuda

Writes ``OUT/{method}/{vis_class}/results.hdf5`` (see :mod:`tokenattr.results_file`): the [0, 1] images, their
min-max maps and labels, a batch at a time. An interrupted run resumes where it stopped when started again
with the same flags; a finished file is left as it is. Stage 2 is ``ViT/perturbation_eval_from_hdf5.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import tokenattr
from tokenattr.data import ImageNetValidation, normalize
from tokenattr.protocols import VIS_CLASSES
from tokenattr.results_file import ResultsFile, checkpoint_identity, indices_hash


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--method",
        required=True,
        help=f"attribution method: {', '.join(tokenattr.METHODS)} (the original's spellings are accepted too)",
    )
    parser.add_argument(
        "--imagenet-validation-path", type=Path, required=True, help="ImageNet val folder, one folder per class"
    )
    parser.add_argument("--pert-index", type=Path, help="pert_index.npy: the subset of images (default: all)")
    parser.add_argument(
        "--vis-class", choices=VIS_CLASSES, default="top", help="explain the predicted class or the label (top)"
    )
    parser.add_argument("--checkpoint", required=True, help="ViT weights (any file or folder load_model reads)")
    parser.add_argument("--num-heads", type=int, help="attention heads (default: width / 64)")
    parser.add_argument(
        "--start-layer", type=int, help="0-based first block the method includes (default: the method's for this model)"
    )
    parser.add_argument("--steps", type=int, help="reasoning-feedback steps of Ours (default: 20)")
    parser.add_argument("--image-size", type=int, help="image and map size (default: the model's input size, 224)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    parser.add_argument("--limit", type=int, help="only the first N images of the subset (quick runs)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--out", type=Path, default=Path("visualizations"), help="output folder (default: visualizations)"
    )
    args = parser.parse_args(argv)

    try:
        method = tokenattr.get_method(args.method)
    except ValueError as error:
        parser.error(str(error))
    args.method = method.name
    args.method_options = {
        name: value for name, value in (("start_layer", args.start_layer), ("steps", args.steps)) if value is not None
    }
    for name in args.method_options:
        if name not in method.options:
            options = ", ".join(method.options) or "none"
            parser.error(f"--{name.replace('_', '-')} does not apply to {method.name}; its options: {options}")
    for flag in ("batch_size", "limit", "steps", "image_size"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.num_workers < 0:
        parser.error(f"--num-workers must be >= 0, got {args.num_workers}")
    if not args.imagenet_validation_path.is_dir():
        parser.error(f"--imagenet-validation-path {args.imagenet_validation_path} is not a folder")
    if args.pert_index is not None and not args.pert_index.is_file():
        parser.error(f"--pert-index {args.pert_index} does not exist (expected pert_index.npy)")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    """Generate (or complete) the results file; returns its path."""
    args = parse_args(argv)
    model = tokenattr.load_model(args.checkpoint, num_heads=args.num_heads, device=args.device)
    config = model.config
    image_size = args.image_size or config.image_size
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
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
        # The batch and the device change the floats a little; a resumed run must reproduce them exactly.
        "batch_size": args.batch_size,
        "device": str(args.device),
        "tokenattr": tokenattr.__version__,
    }
    path = args.out / args.method / args.vis_class / "results.hdf5"
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


def generate(model: torch.nn.Module, loader, results: ResultsFile, args: argparse.Namespace, count: int) -> None:
    """Explain every batch of ``loader`` and append the images, maps and labels to ``results``."""
    from tqdm.auto import tqdm

    config = model.config
    with tqdm(total=count, initial=results.completed, desc=f"{args.method} {args.vis_class}", unit="image") as bar:
        for images01, labels in loader:
            inputs = normalize(images01.to(args.device), config.image_mean, config.image_std)
            target = labels.to(args.device) if args.vis_class == "target" else None
            relevance = tokenattr.explain(model, inputs, args.method, target=target, **args.method_options)
            maps = tokenattr.to_image_map(relevance, tuple(images01.shape[-2:]))
            results.append(images01.numpy(), maps[:, None].cpu().numpy(), labels.numpy().astype(np.int32))
            bar.update(len(labels))


if __name__ == "__main__":
    main(sys.argv[1:])
