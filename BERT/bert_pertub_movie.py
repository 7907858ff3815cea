"""BERT perturbation test on ERASER Movie Reviews (spec §5.4): accuracy as the most (or least) relevant tokens of
each review are replaced by [PAD].

    python BERT/bert_pertub_movie.py --method ours --checkpoint bert_models/movies --device cuda
    python BERT/bert_pertub_movie.py --method ours --checkpoint bert_models/movies --neg --device cuda

Each review (the whitespace words of ``docs/{docid}`` joined by spaces, truncated to 512 tokens as the original)
is explained for its ground-truth class (NEG = 0, POS = 1), the relevance clamped at 0 (negated with ``--neg``),
and for each step s of 0.52, 0.54, ..., 0.68 the k = int(len(tokens)·s) most relevant tokens ([CLS] and [SEP]
counted) become [PAD] with attention mask 0; the accuracy against the labels is recorded. Differences from the
original: documents go in padded batches (padding is never removed and every method is padding-invariant), equal
scores are removed in position order (a stable sort, not ``torch.topk``'s unspecified order), ``--neg`` is a plain
flag, an AUC is added beside the per-step accuracy, and the results are written to a JSON file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import tokenattr
from tokenattr import cli
from tokenattr.data.eraser import ERASER_SPLITS, MOVIE_LABELS, load_annotations, load_documents, words_to_text
from tokenattr.evaluation import MOVIES_STEPS

DEFAULT_DATA_DIR = cli.ERASER_MOVIES_DIR


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_text_perturbation_arguments(
        parser,
        limit_help="only the first N documents of the splits (quick runs)",
        steps=MOVIES_STEPS,
        steps_help="fractions of each document's tokens to remove (default: np.arange(0.52, 0.68, 0.02), 9 values)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None,
        help=f"the ERASER movies folder ({{train,val,test}}.jsonl and docs/; default {DEFAULT_DATA_DIR} if present)",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        choices=ERASER_SPLITS,
        default=["test", "train", "val"],
        help="the splits whose documents are perturbed, in this order (default: test train val, the original's "
        "1,999 documents)",
    )
    args = parser.parse_args(argv)

    cli.check_text_perturbation_arguments(parser, args)
    if args.data_dir is None:
        parser.error(f"--data-dir is required: {DEFAULT_DATA_DIR} does not exist")
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder (expected ERASER's movies folder with docs/)")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the test for each chosen method; returns what it writes to the JSON file."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    annotations = [annotation for split in args.splits for annotation in load_annotations(args.data_dir, split)]
    annotations = annotations[: args.limit]
    unknown = sorted({annotation.label for annotation in annotations} - set(MOVIE_LABELS))
    if unknown:
        raise ValueError(f"{args.data_dir}: labels {unknown} are not movie-review labels {sorted(MOVIE_LABELS)}")
    documents = load_documents(args.data_dir, [annotation.docids[0] for annotation in annotations])
    texts = [words_to_text(documents[annotation.docids[0]]) for annotation in annotations]
    labels = [MOVIE_LABELS[annotation.label] for annotation in annotations]

    model = tokenattr.load_model(args.checkpoint, family="bert", num_labels=len(MOVIE_LABELS), device=args.device)
    batches, truncated = cli.perturbation_batches(model, args, texts, labels)
    return cli.run_text_perturbation_test(
        model,
        batches,
        args,
        ("movie reviews", "movies"),
        "BERT/bert_pertub_movie.py",
        argv,
        data_dir=str(args.data_dir),
        splits=args.splits,
        count=len(texts),
        truncated_documents=truncated,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
