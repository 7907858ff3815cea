"""Command-line pieces the experiment scripts share: the flags that choose a model, a method and a data run,
and their checks, written once so every script spells and validates them alike (STYLE §12)."""

from __future__ import annotations

import argparse

import tokenattr


def add_explanation_arguments(parser: argparse.ArgumentParser, limit_help: str) -> None:
    """``--method --checkpoint --num-heads --start-layer --steps --batch-size --num-workers --limit --device``."""
    parser.add_argument(
        "--method",
        required=True,
        help=f"attribution method: {', '.join(tokenattr.METHODS)} (the original's spellings are accepted too)",
    )
    parser.add_argument("--checkpoint", required=True, help="ViT weights (any file or folder load_model reads)")
    parser.add_argument("--num-heads", type=int, help="attention heads (default: width / 64)")
    parser.add_argument(
        "--start-layer", type=int, help="0-based first block the method includes (default: the method's for this model)"
    )
    parser.add_argument("--steps", type=int, help="reasoning-feedback steps of Ours (default: 20)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    parser.add_argument("--limit", type=int, help=limit_help)
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def check_explanation_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, positive: tuple[str, ...] = ()
) -> None:
    """Resolve ``args.method`` to its canonical name, collect ``args.method_options`` (the given ``--start-layer``
    and ``--steps``, refused where the method has no such option), and check counts: ``--batch-size``,
    ``--limit``, ``--steps`` and the ``positive`` extra flags ≥ 1, ``--num-workers`` ≥ 0."""
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
    for flag in ("batch_size", "limit", "steps", *positive):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.num_workers < 0:
        parser.error(f"--num-workers must be >= 0, got {args.num_workers}")
