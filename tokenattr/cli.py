"""Command-line pieces the experiment scripts share: the flags that choose a model, a method and a data run,
and their checks, written once so every script spells and validates them alike (STYLE §12)."""

from __future__ import annotations

import argparse
import datetime
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

import tokenattr
import tokenattr.protocols
from tokenattr.io import write_json
from tokenattr.models.vit import ORIGINAL_MEAN_STD

# --normalisation: what the ViT scripts normalise [0, 1] images with before the model sees them.
NORMALISATIONS = {
    "model": "the model's own mean/std (MAE, DeiT, DINO, MoCo v3: ImageNet's; the JAX ViTs: 0.5/0.5)",
    "original": "0.5/0.5 for every model, as the original scripts do (for reproduction)",
}


def add_explanation_arguments(parser: argparse.ArgumentParser, limit_help: str) -> None:
    """``--method --checkpoint --num-heads --start-layer --steps --normalisation --batch-size --num-workers --limit
    --device``."""
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
    parser.add_argument(
        "--normalisation",
        choices=NORMALISATIONS,
        default="model",
        help="input normalisation: " + "; ".join(f"{name}: {text}" for name, text in NORMALISATIONS.items()),
    )
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


def image_normalisation(args: argparse.Namespace, config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel that ``--normalisation`` chooses for a ViT with ``config`` (a ``ViTConfig``)."""
    if args.normalisation == "original":
        return ORIGINAL_MEAN_STD, ORIGINAL_MEAN_STD
    return tuple(config.image_mean), tuple(config.image_std)


# --- text classifiers (BERT/) ------------------------------------------------------------------------------

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
# The data beside a checkout of the repository (../shared/data), the scripts' defaults where it exists.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ERASER_MOVIES_DIR = SHARED_DATA / "eraser_movies"
NEWSGROUPS_ARCHIVE = SHARED_DATA / "20news-bydate.tar.gz"


def add_text_perturbation_arguments(
    parser: argparse.ArgumentParser, limit_help: str, steps: Sequence[float], steps_help: str
) -> None:
    """The flags the BERT perturbation scripts share: ``--method --checkpoint --tokenizer --neg --vis-class
    --start-layer --ig-steps --batch-size --max-length --limit --device --out``, and ``--steps`` (the fractions
    removed) with the script's default."""
    parser.add_argument("--steps", type=float, nargs="+", default=list(steps), help=steps_help)
    parser.add_argument(
        "--method",
        required=True,
        help=f"attribution method, or 'all' for every token method: {', '.join(text_methods())} "
        "(the original's spellings are accepted too)",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="the classifier: a Hugging Face folder or a state dict file (any checkpoint load_model reads)",
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        help="a folder with tokenizer files or a vocab.txt (default: the checkpoint's folder)",
    )
    parser.add_argument(
        "--neg", action="store_true", help="negative test: remove the least relevant tokens first (default: most)"
    )
    parser.add_argument(
        "--vis-class",
        choices=tokenattr.protocols.VIS_CLASSES,
        default="target",
        help="explain the ground-truth class (target, the original) or the predicted one (top)",
    )
    parser.add_argument(
        "--start-layer", type=int, help="0-based first block the method includes (default: the method's for BERT)"
    )
    parser.add_argument("--ig-steps", type=int, help="reasoning-feedback steps of Ours (default: 20)")
    parser.add_argument("--batch-size", type=int, default=8, help="documents per batch (default: 8)")
    parser.add_argument(
        "--max-length", type=int, default=512, help="tokens per document, [CLS] and [SEP] included (default: 512)"
    )
    parser.add_argument("--limit", type=int, help=limit_help)
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", type=Path, help="the JSON results file")


def check_text_perturbation_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Resolve ``args.methods`` (canonical names; ``all`` = every token method), ``args.method_options`` (the
    given ``--start-layer`` and ``--ig-steps``) and ``args.tokenizer`` (:func:`tokenizer_source`), and check the
    counts and that the checkpoint exists."""
    if args.method == "all":
        args.methods = text_methods()
    else:
        try:
            method = tokenattr.get_method(args.method)
        except ValueError as error:
            parser.error(str(error))
        if method.pixels:
            parser.error(
                f"--method {method.name} explains pixels, not tokens; choose one of {', '.join(text_methods())}"
            )
        args.methods = [method.name]
    args.method_options = {
        name: value
        for name, value in (("start_layer", args.start_layer), ("steps", args.ig_steps))
        if value is not None
    }
    flags = {"start_layer": "--start-layer", "steps": "--ig-steps"}
    for name in args.method_options:
        refusing = [m for m in args.methods if name not in tokenattr.METHODS[m].options]
        if refusing:
            parser.error(f"{flags[name]} does not apply to {', '.join(refusing)}")
    for flag in ("batch_size", "limit", "ig_steps", "max_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} does not exist (expected a Hugging Face folder or a state dict)")
    if args.max_length > 512:
        parser.error(f"--max-length must be <= 512 (BERT's positions), got {args.max_length}")
    if args.out is not None and args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; expected the path of the JSON results file")
    try:
        args.tokenizer = tokenizer_source(args.checkpoint, args.tokenizer)
    except FileNotFoundError as error:
        parser.error(str(error))


def text_methods() -> list[str]:
    """The registered methods that explain tokens (every one but the pixel-level full LRP)."""
    return [name for name, method in tokenattr.METHODS.items() if not method.pixels]


def tokenizer_source(checkpoint: Path, tokenizer: Path | None) -> Path:
    """Where the tokenizer comes from: ``tokenizer`` if given, else the checkpoint folder, else the folder of a
    checkpoint file when it holds tokenizer files. Raises ``FileNotFoundError`` saying what to pass otherwise."""
    if tokenizer is not None:
        if not tokenizer.exists():
            raise FileNotFoundError(f"--tokenizer {tokenizer} does not exist (expected a folder or a vocab.txt)")
        return tokenizer
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        return folder
    raise FileNotFoundError(
        f"no tokenizer for --checkpoint {checkpoint}: {folder} holds none of {', '.join(TOKENIZER_FILES)}; "
        "pass --tokenizer (a folder with tokenizer files, e.g. the pretrained model's, or a vocab.txt)"
    )


def encode_batches(
    tokenizer, texts: Sequence[str], labels: Sequence[int], batch_size: int, max_length: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], int]:
    """``texts`` as ``(input_ids, attention_mask, labels)`` batches in order, each padded to its longest sequence
    and truncated at ``max_length`` tokens, and the number of truncated texts (one warning for them all)."""
    from tokenattr.models import encode_texts

    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]]
    truncated = sum(length > max_length for length in lengths)
    if truncated:
        warnings.warn(
            f"{truncated} of {len(texts)} documents exceed {max_length} tokens and are truncated, as in the original",
            stacklevel=2,
        )
    batches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # counted above, once
        for start in range(0, len(texts), batch_size):
            encoded = encode_texts(tokenizer, texts[start : start + batch_size], max_length)
            batch_labels = torch.as_tensor(list(labels[start : start + batch_size]), dtype=torch.long)
            batches.append((encoded["input_ids"], encoded["attention_mask"], batch_labels))
    return batches, truncated


def add_newsgroups_data_argument(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the 20news-bydate archive or folder, default ``../shared/data``'s when present."""
    present = NEWSGROUPS_ARCHIVE.is_file()
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=NEWSGROUPS_ARCHIVE if present else None,
        help=f"20news-bydate.tar.gz or a folder of its extracted split folders (default {NEWSGROUPS_ARCHIVE} if "
        "present, else scikit-learn's fetcher, which needs the network or its cache)",
    )


def run_text_perturbation_test(
    model,
    batches: list,
    args: argparse.Namespace,
    name: tuple[str, str],
    script: str,
    argv: Sequence[str],
    **settings,
) -> dict:
    """Run ``text_perturbation_test`` for every method of ``args``, print the table, write the JSON results
    (``--out``, default ``results/bert_perturbation/{stem}_{method}_{positive|negative}.json``) and return them.

    ``name`` is ``(title, file stem)`` of the test, e.g. ``("movie reviews", "movies")``.

    ``settings`` are the script's own (data, count, ...); the shared flags are recorded beside them. With
    ``settings["length"]`` the count of k = int(count·s) is fixed (20 Newsgroups), else per sequence.
    """
    length = settings.pop("length", None)
    results = {
        method: tokenattr.protocols.text_perturbation_test(
            model,
            batches,
            method,
            fractions=args.steps,
            length=length,
            positive=not args.neg,
            vis_class=args.vis_class,
            **args.method_options,
        )
        for method in args.methods
    }
    title, stem = name
    kind = "negative" if args.neg else "positive"
    output = {
        "test": f"{title} {kind} perturbation",
        "positive": not args.neg,
        "vis_class": args.vis_class,
        "results": results,
        "settings": {
            **settings,
            "checkpoint": str(args.checkpoint),
            "tokenizer": str(args.tokenizer),
            "max_length": args.max_length,
            "steps": args.steps,
            "method_options": args.method_options,
            "batch_size": args.batch_size,
            "device": str(args.device),
        },
        "command": command_line(script, argv),
        "versions": tokenattr.protocols.versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    out = args.out or Path("results/bert_perturbation") / f"{stem}_{methods_label(args.methods)}_{kind}.json"
    write_json(out, output)
    better = "higher" if args.neg else "lower"
    print(f"{title}, {kind} perturbation, {settings.get('count')} texts, accuracy x100 ({better} is better):")
    print(text_perturbation_table(results))
    print(f"wrote {out}")
    return output


def perturbation_batches(
    model, args: argparse.Namespace, texts: Sequence[str], labels: Sequence[int]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], int]:
    """The perturbation scripts' batches: ``--max-length`` checked against the model, the tokenizer of
    ``args.tokenizer``, then :func:`encode_batches`."""
    from tokenattr.models import load_tokenizer

    if args.max_length > model.max_length:
        raise ValueError(f"--max-length {args.max_length} exceeds the model's {model.max_length} positions")
    return encode_batches(load_tokenizer(args.tokenizer), texts, labels, args.batch_size, args.max_length)


def text_perturbation_table(results: dict[str, dict]) -> str:
    """``{method: text_perturbation_test result}`` as a table: accuracy (×100) per step, and both AUCs (×100)."""
    first = next(iter(results.values()))
    names = list(results)
    width = max(12, *(len(name) + 2 for name in names))
    lines = ["step".ljust(8) + "".join(name.rjust(width) for name in names)]
    lines.append("clean".ljust(8) + "".join(f"{100 * r['clean_accuracy']:{width}.2f}" for r in results.values()))
    for index, step in enumerate(first["steps"]):
        lines.append(f"{step:<8.2f}" + "".join(f"{100 * r['accuracy'][index]:{width}.2f}" for r in results.values()))
    for key, label in (("auc_original", "AUC"), ("auc_chefer", "AUC-Ch")):
        lines.append(label.ljust(8) + "".join(f"{100 * r[key]:{width}.2f}" for r in results.values()))
    return "\n".join(lines)


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that ran ``script`` with ``argv``, quoted for a shell (recorded beside the results)."""
    return shlex.join(["python", script, *argv])


def methods_label(methods: Sequence[str]) -> str:
    """The name of a run of ``methods`` in file names: the method's name, or ``all`` for every token method."""
    return methods[0] if len(methods) == 1 else "all"
