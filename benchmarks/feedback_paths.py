"""Does the cheap reasoning feedback change the results? Ours-H and Ours-T on the demo benchmark (the bundled
tiny ViT on held-out synthetic shapes, :mod:`tokenattr.demo`) with ``feedback_path="input"`` (the original) and
``"last-attention"`` (scale the last attention map; see :func:`tokenattr.methods.ours.reasoning_feedback`).

For each method it reports how far apart the two paths' maps are (per image: Pearson correlation of the
token relevances, Spearman correlation of their ranks, the overlap of the top 25% tokens, and the largest
difference over the largest value), the demo's mask scores, and the segmentation and perturbation tests the
demo runs, with each path, and the seconds each took.

    PYTHONPATH=. python benchmarks/feedback_paths.py --eval-images 100 --out benchmarks/results/feedback_paths_demo.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor

import tokenattr
from tokenattr.data.synthetic import make_shapes
from tokenattr.demo import (
    DEMO_TEST_SEED,
    DEMO_THREADS,
    IMAGE_SIZE,
    PROTOCOL_AUC,
    PROTOCOL_BATCH_SIZE,
    load_demo_model,
    mask_scores,
    pixel_values,
)
from tokenattr.methods.ours import FEEDBACK_PATHS
from tokenattr.protocols import perturbation_test, segmentation_test, versions

METHODS = ("ours-h", "ours-t")
TOP_FRACTION = 0.25


def ranks(values: Tensor) -> Tensor:
    """Ranks along the last dimension (ties broken by position)."""
    return values.argsort(dim=-1).argsort(dim=-1).double()


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Per-row Pearson correlation of ``[B, N]`` tensors."""
    a, b = a.double() - a.double().mean(dim=-1, keepdim=True), b.double() - b.double().mean(dim=-1, keepdim=True)
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-300)


def top_overlap(a: Tensor, b: Tensor, fraction: float) -> Tensor:
    """Per row, the fraction of ``a``'s top tokens that are also among ``b``'s."""
    k = max(1, round(fraction * a.shape[-1]))
    top_a = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, a.topk(k, dim=-1).indices, True)
    top_b = torch.zeros_like(b, dtype=torch.bool).scatter_(-1, b.topk(k, dim=-1).indices, True)
    return (top_a & top_b).sum(dim=-1).double() / k


def map_agreement(original: Tensor, cheap: Tensor) -> dict:
    """Means over the images of how close the cheap path's token relevances ``[B, N]`` are to the original's."""
    largest = original.abs().amax(dim=-1).clamp(min=torch.finfo(original.dtype).tiny)
    return {
        "pearson": pearson(original, cheap).mean().item(),
        "spearman": pearson(ranks(original), ranks(cheap)).mean().item(),
        f"top_{int(TOP_FRACTION * 100)}pct_overlap": top_overlap(original, cheap, TOP_FRACTION).mean().item(),
        "max_abs_difference_over_max": ((original - cheap).abs().amax(dim=-1) / largest).mean().item(),
    }


def protocol_scores(model, images01: Tensor, masks: Tensor, labels: Tensor, method: str, options: dict) -> dict:
    """The demo's segmentation and positive/negative perturbation tests (predicted class) with ``options``."""

    def to_input(batch01: Tensor) -> Tensor:
        return pixel_values(batch01, model.config)

    images, masks, labels = (t.split(PROTOCOL_BATCH_SIZE) for t in (images01, masks, labels))
    segmentation = segmentation_test(
        model, zip(images, masks), method, normalize=to_input, image_size=IMAGE_SIZE, progress=False, **options
    )
    perturbation = {
        kind: perturbation_test(
            model, zip(images, labels), method, normalize=to_input, positive=positive, progress=False, **options
        )[PROTOCOL_AUC]
        for kind, positive in (("positive", True), ("negative", False))
    }
    keys = ("pixel_accuracy", "mean_iou", "mean_ap")
    return {**{key: segmentation[key] for key in keys}, **{f"{kind}_auc": auc for kind, auc in perturbation.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-images", type=int, default=100, help="held-out images (default: 100, the demo's)")
    parser.add_argument("--steps", type=int, default=20, help="reasoning-feedback steps (default: 20)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results/feedback_paths_demo.json"
    )
    args = parser.parse_args(argv)
    if args.eval_images < 1 or args.steps < 1:
        parser.error("--eval-images and --steps must be at least 1")
    torch.set_num_threads(DEMO_THREADS)

    model = load_demo_model()
    data = make_shapes(args.eval_images, IMAGE_SIZE, seed=DEMO_TEST_SEED)
    images01 = torch.as_tensor(data.images, dtype=torch.float32)
    masks, labels = torch.from_numpy(data.masks), torch.from_numpy(data.labels)
    inputs = pixel_values(images01, model.config)
    results = {}
    for method in METHODS:
        relevance, per_path = {}, {}
        for path in FEEDBACK_PATHS:
            options = {"steps": args.steps, "feedback_path": path}
            started = time.perf_counter()
            relevance[path] = tokenattr.explain(model, inputs, method, **options)
            seconds = time.perf_counter() - started
            maps = tokenattr.to_image_map(relevance[path], IMAGE_SIZE)
            mass_inside, inside_beats_outside = mask_scores(maps, masks)
            per_path[path] = {
                "explain_seconds": round(seconds, 3),
                "mass_inside_mask": mass_inside.mean().item(),
                "inside_beats_outside": inside_beats_outside.double().mean().item(),
                **protocol_scores(model, images01, masks, labels, method, options),
            }
        results[method] = {
            "paths": per_path,
            "map_agreement": map_agreement(relevance["input"], relevance["last-attention"]),
        }
    output = {
        "benchmark": "feedback paths on the demo (benchmarks/feedback_paths.py)",
        "command": "python benchmarks/feedback_paths.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "eval_images": args.eval_images,
            "steps": args.steps,
            "test_seed": DEMO_TEST_SEED,
            "perturbation_auc": PROTOCOL_AUC,
            "explained_class": "predicted",
            "paths": FEEDBACK_PATHS,
        },
        "versions": versions(),
        "methods": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=2) + "\n")

    columns = ("mass_inside_mask", "pixel_accuracy", "mean_iou", "mean_ap", "positive_auc", "negative_auc")
    print("| method | feedback path | mass inside | pixel acc | mIoU | mAP | pos AUC ↓ | neg AUC ↑ | explain s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for method, result in results.items():
        for path, scores in result["paths"].items():
            cells = [f"{100 * scores[key]:.1f}" for key in columns] + [f"{scores['explain_seconds']:.2f}"]
            print(f"| {method} | {path} | " + " | ".join(cells) + " |")
    for method, result in results.items():
        agreement = ", ".join(f"{key} {value:.3f}" for key, value in result["map_agreement"].items())
        print(f"{method}, last-attention vs input maps (mean over images): {agreement}")
    print(f"written to {args.out}", file=sys.stderr)
    return output


if __name__ == "__main__":
    main()
