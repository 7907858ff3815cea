"""Stage 2 of the ViT perturbation test (spec §5.2): accuracy as pixels are removed in the order of stored maps.

    python ViT/perturbation_eval_from_hdf5.py --method ours --vis-class top \\
        --checkpoint jx_vit_base_p16_224-80ecf9dd.pth --device cuda          # positive: lower AUC is better
    python ViT/perturbation_eval_from_hdf5.py --method ours --vis-class top --neg ...   # negative: higher is better

Reads ``VISUALIZATIONS/{method}/{vis_class}/results.hdf5`` from ``ViT/generate_visualizations.py``, prints the
clean and per-step accuracy against the stored labels and both AUCs (see
:class:`tokenattr.evaluation.PerturbationCurve`), and writes them with the settings, versions and date to
``OUT/{method}_{vis_class}_{positive|negative}.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

import tokenattr
from tokenattr.data import normalize
from tokenattr.evaluation import PerturbationCurve, run_perturbation, top1_hits
from tokenattr.io import write_json
from tokenattr.protocols import VIS_CLASSES, versions
from tokenattr.results_file import checkpoint_identity, open_finished


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, help="the method whose maps to read (as given to stage 1)")
    parser.add_argument("--vis-class", choices=VIS_CLASSES, default="top", help="which maps to read (top)")
    parser.add_argument(
        "--neg", action="store_true", help="negative test: remove the least relevant pixels first (default: most)"
    )
    parser.add_argument("--checkpoint", required=True, help="ViT weights, the ones stage 1 used")
    parser.add_argument("--num-heads", type=int, help="attention heads (default: width / 64)")
    parser.add_argument(
        "--visualizations", type=Path, default=Path("visualizations"), help="stage 1's --out (default: visualizations)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--out", type=Path, default=Path("results/perturbation"), help="output folder (default: results/perturbation)"
    )
    args = parser.parse_args(argv)

    try:
        args.method = tokenattr.get_method(args.method).name
    except ValueError as error:
        parser.error(str(error))
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run stage 2; returns what it writes to the JSON file."""
    from tqdm.auto import tqdm

    args = parse_args(argv)
    source = args.visualizations / args.method / args.vis_class / "results.hdf5"
    kind = "negative" if args.neg else "positive"
    with open_finished(source) as results:
        stored_checkpoint = json.loads(results.attrs["fingerprint_checkpoint"])
        if checkpoint_identity(args.checkpoint) != stored_checkpoint:
            raise ValueError(
                f"--checkpoint {args.checkpoint} is not the checkpoint {source} was made with; "
                "pass the one stage 1 used"
            )
        model = tokenattr.load_model(args.checkpoint, num_heads=args.num_heads, device=args.device)
        config = model.config
        # classify with stage 1's normalisation (its --normalisation), recorded in the file
        mean, std = (json.loads(results.attrs[f"fingerprint_image_{name}"]) for name in ("mean", "std"))

        def predict_fn(images01: torch.Tensor) -> torch.Tensor:
            return model(normalize(images01, mean, std))

        curve = PerturbationCurve()
        count = int(results.attrs["completed"])
        for start in tqdm(range(0, count, args.batch_size), desc=f"{kind} perturbation {args.method}", unit="batch"):
            stop = min(start + args.batch_size, count)
            images01 = torch.from_numpy(results["image"][start:stop]).to(args.device)
            maps = torch.from_numpy(results["vis"][start:stop, 0]).to(args.device)
            labels = torch.from_numpy(results["target"][start:stop]).long().to(args.device)
            logits = run_perturbation(images01, maps, predict_fn, positive=not args.neg)
            curve.update(top1_hits(logits.clean, labels), top1_hits(logits.steps, labels))
    scores = curve.compute()
    results = {
        "method": args.method,
        "vis_class": args.vis_class,
        "test": kind,
        **scores,
        "settings": {
            "visualizations": str(source),
            "checkpoint": str(args.checkpoint),
            "num_heads": config.num_heads,
            "image_mean": mean,
            "image_std": std,
            "batch_size": args.batch_size,
            "device": str(args.device),
        },
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = args.out / f"{args.method}_{args.vis_class}_{kind}.json"
    write_json(path, results)

    better = "higher" if args.neg else "lower"
    print(f"{args.method}, {kind} perturbation, vis-class {args.vis_class}, {scores['count']} images:")
    print(f"  clean accuracy   {100 * scores['clean_accuracy']:6.2f}")
    for fraction, accuracy in zip(scores["fractions"], scores["step_accuracy"]):
        print(f"  {fraction:.0%} removed      {100 * accuracy:6.2f}")
    print(f"  AUC (x100, {better} is better):")
    print(f"    original grid, 0..0.9 and 1 at accuracy 0   {100 * scores['auc_original']:6.2f}")
    print(f"    Chefer grid, 0..0.9 only                    {100 * scores['auc_chefer']:6.2f}")
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
