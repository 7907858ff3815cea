"""BERT perturbation test on 20 Newsgroups (spec §5.5): accuracy as the most (or least) relevant tokens of each
test message are replaced by [PAD], the count fixed by the padded length.

    python BERT/finetune_20ng.py --checkpoint bert-base-uncased/ --out bert_models/20ng --device cuda
    python BERT/bert_pertub_20ng.py --method ours --checkpoint bert_models/20ng --device cuda
    python BERT/bert_pertub_20ng.py --method ours --checkpoint bert_models/20ng --neg --device cuda

The original's 3,000 test messages (``random.seed(0); random.sample(range(7532), 3000)`` over scikit-learn's
``fetch_20newsgroups(subset='test', remove=('headers', 'footers', 'quotes'))`` order, read here from the
``20news-bydate.tar.gz`` archive) are explained for their ground-truth class, the relevance clamped at 0 (negated
with ``--neg``). For each step s of 0, 0.1, ..., 1.0 the k = int(512·s) most relevant positions become [PAD] with
attention mask 0: the count is the padded length ``--max-length``, so padding positions are counted and compete
with the real tokens at score 0, as in the original's ``topk`` over 512 positions.

The original padded every message to 512 tokens. Here a batch is padded only to its longest message and the
count stays fixed at ``--max-length``: the missing padding is counted virtually
(:func:`tokenattr.evaluation.run_text_perturbation` with ``length=max_length``). Padded keys get exactly zero
attention, so the predictions are those of full padding up to float rounding, at a fraction of the cost. Other
differences: batches, ties removed in position order (a stable sort, not ``torch.topk``'s unspecified order),
``--neg`` a plain flag, a clear error when the checkpoint is missing (the original silently did nothing), an AUC
beside the per-step accuracy, and a JSON results file.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import tokenattr
from tokenattr import cli
from tokenattr.data.newsgroups import load_20newsgroups, perturbation_sample
from tokenattr.evaluation import NEWSGROUPS_STEPS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_text_perturbation_arguments(
        parser,
        limit_help="only the first N messages of the sample (quick runs)",
        steps=NEWSGROUPS_STEPS,
        steps_help="fractions of --max-length positions to remove (default: np.arange(0, 1.1, 0.1), 11 values)",
    )
    cli.add_newsgroups_data_argument(parser)
    parser.add_argument(
        "--sample-size", type=int, default=3000, help="test messages drawn by random.sample (default: 3000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random.seed of the sample (default: 0)")
    args = parser.parse_args(argv)

    cli.check_text_perturbation_arguments(parser, args)
    if args.data_dir is not None and not args.data_dir.exists():
        parser.error(f"--data-dir {args.data_dir} does not exist (expected 20news-bydate.tar.gz or its folder)")
    if args.sample_size < 1:
        parser.error(f"--sample-size must be >= 1, got {args.sample_size}")
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the test for each chosen method; returns what it writes to the JSON file."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    test = load_20newsgroups("test", args.data_dir)
    if args.sample_size > len(test):
        raise ValueError(f"--sample-size {args.sample_size} exceeds the {len(test)} test messages")
    sample = perturbation_sample(len(test), args.sample_size, args.seed)[: args.limit]
    texts = [test.texts[index] for index in sample]
    labels = [int(test.labels[index]) for index in sample]

    num_labels = len(test.label_names)
    model = tokenattr.load_model(args.checkpoint, family="bert", num_labels=num_labels, device=args.device)
    _check_class_names(model.config.class_names, test.label_names, args.checkpoint)
    batches, truncated = cli.perturbation_batches(model, args, texts, labels)
    return cli.run_text_perturbation_test(
        model,
        batches,
        args,
        ("20 Newsgroups", "20ng"),
        "BERT/bert_pertub_20ng.py",
        argv,
        length=args.max_length,
        data_dir=None if args.data_dir is None else str(args.data_dir),
        sample_size=args.sample_size,
        seed=args.seed,
        count=len(texts),
        truncated_documents=truncated,
    )


def _check_class_names(class_names: list[str] | None, label_names: list[str], checkpoint: Path) -> None:
    """A checkpoint that names its classes (``finetune_20ng.py`` writes the newsgroups) must name these, in order;
    transformers' placeholders ``LABEL_i`` say nothing and pass."""
    if not class_names or all(re.fullmatch(r"LABEL_\d+", name) for name in class_names):
        return
    if list(class_names) != list(label_names):
        raise ValueError(
            f"--checkpoint {checkpoint} names its classes {class_names}, "
            f"expected the newsgroups in order: {label_names}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
