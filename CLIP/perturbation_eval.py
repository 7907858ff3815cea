"""The CLIP zero-shot perturbation test (spec §5.6): ImageNet zero-shot accuracy as the pixels a method ranks first
are replaced by the mean colour.

    python CLIP/perturbation_eval.py --method ours --checkpoint ViT-B-32.pt --imagenet-path val/ --device cuda
    python CLIP/perturbation_eval.py --method ours --neg ...        # negative: least relevant first
    python CLIP/perturbation_eval.py --method ours --target ...     # explain the ground-truth class's prompt

Each image of the ImageNet validation subset (``pert_index.npy``) is explained for the prompt
"a photo of a {class name}" that matches it best (``--target``: its label's), and zero-shot accuracy over the 1,000
prompts is measured after removing 0, 10, ..., 100 % of its pixels; see
:func:`tokenattr.protocols.clip_perturbation_test`. Prints a table and writes the accuracies and the AUC (the
original's, on a 0-100 scale) to ``OUT`` (default ``results/clip_perturbation/{method}_{predicted|target}_
{positive|negative}.json``). The counts are saved beside it after every batch (``OUT.partial``): an interrupted
run started again with the same flags resumes where it stopped, and a finished file is not recomputed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import tokenattr
from tokenattr import cli
from tokenattr.data import ImageNetValidation, load_rgb, normalize
from tokenattr.data.imagenet import imagenet_class_names, zero_shot_prompts
from tokenattr.data.transforms import clip_image_to_tensor
from tokenattr.evaluation import PerturbationCurve
from tokenattr.io import write_json
from tokenattr.models.clip import CLIPModel
from tokenattr.models.clip_tokenizer import load_clip_tokenizer, tokenize_prompts
from tokenattr.protocols import CLIP_PERTURBATION_FRACTIONS, clip_perturbation_test, versions
from tokenattr.results_file import checkpoint_identity, indices_hash

SCRIPT = "CLIP/perturbation_eval.py"
PERT_INDEX = cli.SHARED_DATA / "pert_index.npy"


def clip_methods() -> list[str]:
    """The registered methods that explain CLIP's image tokens (none of the LRP family: CLIP has no relprop)."""
    return [name for name, method in tokenattr.METHODS.items() if method.applies_to(CLIPModel)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--method",
        required=True,
        help=f"attribution method: {', '.join(clip_methods())} (the original's spellings are accepted too)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="CLIP weights: OpenAI's ViT-B-32.pt or a Hugging Face folder"
    )
    parser.add_argument(
        "--tokenizer", type=Path, help="a Hugging Face CLIP folder or a BPE merges file (default: OpenAI's vocabulary)"
    )
    parser.add_argument(
        "--imagenet-path", type=Path, required=True, help="ImageNet val folder, one folder per class (1,000)"
    )
    present = PERT_INDEX.is_file()
    parser.add_argument(
        "--pert-index",
        type=Path,
        default=PERT_INDEX if present else None,
        required=not present,
        help=f"pert_index.npy, the subset of images (default {PERT_INDEX}, the original's 5,000)",
    )
    parser.add_argument(
        "--neg", action="store_true", help="negative test: remove the least relevant pixels first (default: most)"
    )
    parser.add_argument(
        "--target", action="store_true", help="explain the ground-truth class's prompt (default: the best match)"
    )
    parser.add_argument(
        "--start-layer",
        type=int,
        help="0-based first block the method includes (default: CLIP's, the original's choice: the last block for "
        "Ours and generic attribution, the first for rollout)",
    )
    parser.add_argument("--steps", type=int, help="reasoning-feedback steps of Ours (default: 20)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    parser.add_argument("--limit", type=int, help="only the first N images of the subset (quick runs)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", type=Path, help="the JSON results file")
    args = parser.parse_args(argv)

    cli.check_explanation_arguments(parser, args)
    if args.method not in clip_methods():
        parser.error(f"--method {args.method} does not apply to CLIP; choose one of {', '.join(clip_methods())}")
    if not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} does not exist (expected OpenAI's .pt or a Hugging Face folder)")
    if not args.imagenet_path.is_dir():
        parser.error(f"--imagenet-path {args.imagenet_path} is not a folder (expected ImageNet val, one per class)")
    if not args.pert_index.is_file():
        parser.error(f"--pert-index {args.pert_index} does not exist (expected pert_index.npy)")
    args.vis_class = "target" if args.target else "top"
    kind = "negative" if args.neg else "positive"
    explained = "target" if args.target else "predicted"
    args.out = args.out or Path("results/clip_perturbation") / f"{args.method}_{explained}_{kind}.json"
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; expected the path of the JSON results file")
    return args


class CLIPImages(torch.utils.data.Dataset):
    """The samples of an :class:`ImageNetValidation` (its files, labels and subset) through CLIP's preprocessing:
    ``(image01 [3, S, S] in [0, 1], label)``."""

    def __init__(self, images: ImageNetValidation, size: int) -> None:
        self.images = images
        self.size = size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        sample = self.images.indices[position]
        return clip_image_to_tensor(load_rgb(self.images.paths[sample]), self.size), self.images.labels[sample]


def main(argv: Sequence[str] | None = None) -> dict:
    """Run (or resume, or read back a finished) test; returns what the JSON file holds."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    model = tokenattr.load_model(args.checkpoint, device=args.device)
    if model.family != "clip":
        raise ValueError(f"--checkpoint {args.checkpoint} holds a {model.family} model; expected CLIP")
    config = model.config
    class_names = imagenet_class_names()
    indices = np.load(args.pert_index)
    images = ImageNetValidation(args.imagenet_path, indices=indices)
    if len(images.classes) != len(class_names):
        raise ValueError(
            f"--imagenet-path {args.imagenet_path} has {len(images.classes)} class folders; expected the "
            f"{len(class_names)} ImageNet classes (sorted WordNet ids, torchvision's val layout) the prompts name"
        )
    dataset = CLIPImages(images, config.image_size)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    tokenizer = load_clip_tokenizer(args.tokenizer)
    input_ids = tokenize_prompts(tokenizer, zero_shot_prompts(class_names), config.context_length)
    fingerprint = {
        "method": args.method,
        "method_options": args.method_options,  # the rest are the model's defaults: checkpoint and version
        "vis_class": args.vis_class,
        "positive": not args.neg,
        "checkpoint": checkpoint_identity(args.checkpoint),
        "prompts": hashlib.sha256(input_ids.numpy().tobytes()).hexdigest(),
        "imagenet_path": str(args.imagenet_path.resolve()),
        "indices": indices_hash(indices),
        "count": count,
        "image_size": config.image_size,
        "image_mean": list(config.image_mean),
        "image_std": list(config.image_std),
        # The batch and the device change the floats a little; a resumed run must reproduce them exactly.
        "batch_size": args.batch_size,
        "device": str(args.device),
        "tokenattr": tokenattr.__version__,
    }
    partial = args.out.with_name(args.out.name + ".partial")
    finished = _finished(args.out, fingerprint)
    if finished is not None:
        partial.unlink(missing_ok=True)  # left if a run stopped between writing the results and removing it
        print(f"{args.out} is finished ({count} images); nothing to do")
        print(table(finished))
        return finished
    curve = _resumed_curve(partial, fingerprint)
    if curve.count:
        print(f"resuming after {curve.count} of {count} images (from {partial})")
    remaining = torch.utils.data.Subset(dataset, range(curve.count, count))
    loader = torch.utils.data.DataLoader(remaining, batch_size=args.batch_size, num_workers=args.num_workers)

    def save(curve: PerturbationCurve) -> None:
        write_json(partial, {"fingerprint": fingerprint, "curve": curve.state_dict()})

    result = clip_perturbation_test(
        model,
        loader,
        args.method,
        input_ids=input_ids,
        normalize=lambda images01: normalize(images01, config.image_mean, config.image_std),
        vis_class=args.vis_class,
        positive=not args.neg,
        curve=curve,
        after_batch=save,
        **args.method_options,
    )
    output = {
        "test": f"CLIP zero-shot {'negative' if args.neg else 'positive'} perturbation",
        **result,
        "accuracy_percent": [100 * accuracy for accuracy in result["accuracy"]],
        "settings": {
            "checkpoint": str(args.checkpoint),
            "tokenizer": str(args.tokenizer or "OpenAI's bpe_simple_vocab_16e6"),
            "imagenet_path": str(args.imagenet_path),
            "pert_index": str(args.pert_index),
            "batch_size": args.batch_size,
            "device": str(args.device),
        },
        "fingerprint": fingerprint,
        "command": cli.command_line(SCRIPT, argv),
        "versions": versions(),
    }
    write_json(args.out, output)
    partial.unlink()
    print(table(output))
    print(f"wrote {args.out}")
    return output


def table(output: dict) -> str:
    """The results as text: zero-shot accuracy (×100) per level and the AUC (×100)."""
    better = "higher" if not output["positive"] else "lower"
    explained = "ground-truth" if output["vis_class"] == "target" else "predicted"
    lines = [
        f"{output['test']}, {output['method']} on the {explained} prompt, {output['count']} images "
        f"({better} is better):",
        "removed   accuracy",
    ]
    lines += [f"{level:>6.0%}   {100 * accuracy:8.2f}" for level, accuracy in zip(output["levels"], output["accuracy"])]
    lines.append(f"AUC      {output['auc_percent']:8.2f}")
    return "\n".join(lines)


def _finished(path: Path, fingerprint: dict) -> dict | None:
    """The results in ``path`` if it holds a finished run with ``fingerprint``, else ``None`` (it is replaced)."""
    if not path.is_file():
        return None
    try:
        output = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return output if isinstance(output, dict) and output.get("fingerprint") == _as_json(fingerprint) else None


def _resumed_curve(partial: Path, fingerprint: dict) -> PerturbationCurve:
    """The counts saved in ``partial`` by an interrupted run with ``fingerprint``, or a new curve if there is none.
    A run with another fingerprint is refused, naming what differs."""
    if not partial.exists():
        return PerturbationCurve(CLIP_PERTURBATION_FRACTIONS)
    try:
        state = json.loads(partial.read_text())
        stored, curve = state["fingerprint"], PerturbationCurve.from_state_dict(state["curve"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{partial} is not a saved CLIP perturbation run ({error}); delete it") from error
    expected = _as_json(fingerprint)
    differences = [
        f"{key} {stored.get(key)!r} vs {expected.get(key)!r}"
        for key in sorted(set(stored) | set(expected))
        if stored.get(key) != expected.get(key)
    ]
    if differences:
        raise ValueError(
            f"{partial} holds an interrupted run with other settings: {'; '.join(differences)} (the saved run's vs "
            "this one's); rerun with its flags to finish it, or delete it, or choose another --out"
        )
    return curve


def _as_json(value):
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


if __name__ == "__main__":
    main(sys.argv[1:])
