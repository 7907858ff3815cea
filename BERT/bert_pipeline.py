"""The ERASER Movie Reviews rationale test (spec §5.3): token-F1 of each method's top-k words against the human
rationales, for k = 5, 10, ..., 80.

    python BERT/bert_pipeline.py --checkpoint models/movies_minilm --method all --out BERT/results/minilm

For every document of the split the ground-truth class is explained, word-piece relevance is clamped at 0 and
mapped to whitespace words (max over a word's pieces), and the top-k words are the predicted rationale. Writes, in
``OUT``: ``{method}.json`` (the summary of :func:`tokenattr.protocols.rationale_test`, with the command, versions
and date), ERASER results files ``{method}/identifier_results_{k}.json`` that ERASER's own
``rationale_benchmark/metrics.py --split test --results FILE`` scores, and the table
``token_f1.json`` + ``token_f1.md`` (instance-macro F1 ×100, the paper's number), with a random ranking of the
words the model reads (the first 512 word-pieces) as the floor. A rerun of the same command skips the methods it
finished.

Unlike the original pipeline, this script never trains: train the classifier first
(``BERT/train_movies_classifier.py``). Documents are explained in padded batches (``--batch-size``); every method
gives a padded sequence what it gets alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import tokenattr
from tokenattr import cli
from tokenattr.data import MOVIE_LABELS, load_annotations, load_documents, word_scores_from_pieces, words_to_text
from tokenattr.evaluation import RATIONALE_TOP_K, eraser_record, random_ranking_table, write_eraser_results
from tokenattr.io import atomic_path, write_json
from tokenattr.models import encode_texts, load_tokenizer
from tokenattr.protocols import rationale_test, versions

DEFAULT_DATA = cli.ERASER_MOVIES_DIR


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the movie classifier (folder or state dict)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder or vocab.txt (default: the checkpoint folder)")
    parser.add_argument(
        "--method", default="all", help=f"a method, a comma-separated list, or 'all' ({', '.join(cli.text_methods())})"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help=f"ERASER movies folder (default {DEFAULT_DATA})"
    )
    parser.add_argument("--split", default="test", help="ERASER split (default: test)")
    parser.add_argument("--limit", type=int, help="explain only the first N documents of the split (quick runs)")
    parser.add_argument("--steps", type=int, help="reasoning-feedback steps of Ours (default: 20)")
    parser.add_argument("--batch-size", type=int, default=4, help="documents per batch (default: 4)")
    parser.add_argument("--max-length", type=int, default=512, help="word-pieces per document (default: 512)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--out", type=Path, default=Path("results/bert_rationale"), help="output folder")
    args = parser.parse_args(argv)
    names = cli.text_methods() if args.method == "all" else [name.strip() for name in args.method.split(",")]
    try:
        args.methods = [tokenattr.get_method(name).name for name in names]
    except ValueError as error:
        parser.error(str(error))
    pixel_methods = [name for name in args.methods if tokenattr.METHODS[name].pixels]
    if pixel_methods:
        parser.error(
            f"{', '.join(pixel_methods)} explains image pixels, not text; text methods: {', '.join(cli.text_methods())}"
        )
    for flag in ("limit", "steps", "batch_size", "max_length"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")
    try:
        args.tokenizer = cli.tokenizer_source(args.checkpoint, args.tokenizer)
    except FileNotFoundError as error:
        parser.error(str(error))
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} does not exist (expected ERASER's movies folder: *.jsonl + docs/)")
    return args


RANDOM_ROW = "random ranking"  # the floor: the words the model reads, scored uniformly at random (seed 0)


def markdown_table(summaries: dict[str, dict], random: dict, ks: Sequence[int]) -> str:
    """Methods × k, instance-macro token F1 ×100, the best method of each column in bold, the random ranking last."""
    best = {k: max(summary["token_f1"][k]["instance_macro"]["f1"] for summary in summaries.values()) for k in ks}
    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for name, table in [*((name, summary["token_f1"]) for name, summary in summaries.items()), (RANDOM_ROW, random)]:
        cells = []
        for k in ks:
            f1 = table[k]["instance_macro"]["f1"]
            bold = name != RANDOM_ROW and f1 == best[k]
            cells.append(f"**{100 * f1:.2f}**" if bold else f"{100 * f1:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def finished_summary(path: Path, command: str) -> dict | None:
    """The summary a run of the same command already wrote to ``path``, or ``None`` (then the method runs)."""
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    if summary.get("command") != command:
        return None
    summary["token_f1"] = {int(k): value for k, value in summary["token_f1"].items()}  # JSON keys are strings
    return summary


def words_seen(tokenizer, documents: dict[str, list[str]], max_length: int) -> dict[str, int]:
    """Per document, how many of its first words the model reads within ``max_length`` word-pieces."""
    seen = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation is the point here
        for docid, words in documents.items():
            offsets = encode_texts(tokenizer, words_to_text(words), max_length, offsets=True)["offset_mapping"][0]
            reached = ~np.isnan(word_scores_from_pieces(words, offsets.numpy(), np.zeros(len(offsets))))
            seen[docid] = int(reached.sum())
    return seen


def run_method(args, model, tokenizer, annotations, documents, method: str, command: str) -> dict:
    """The rationale test of one method: its summary, written with its ERASER results files."""
    started = time.time()
    options = {"steps": args.steps} if args.steps is not None and "steps" in tokenattr.METHODS[method].options else {}
    result = rationale_test(
        model,
        tokenizer,
        annotations,
        documents,
        method,
        label_index=MOVIE_LABELS,
        batch_size=args.batch_size,
        max_length=args.max_length,
        **options,
    )
    summary = {
        **result.summary,
        "seconds": round(time.time() - started, 1),
        "split": args.split,
        "command": command,
        "checkpoint": str(args.checkpoint),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    for k in RATIONALE_TOP_K:
        records = [eraser_record(ann_id, docid, ranked[:k]) for ann_id, (docid, ranked) in result.ranked_words.items()]
        write_eraser_results(args.out / method / f"identifier_results_{k}.json", records)
    write_json(args.out / f"{method}.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, dict]:
    """Run the test for each method; returns ``{method: summary}`` as written to ``OUT/{method}.json``.

    A method whose ``OUT/{method}.json`` was written by the same command is not run again: an interrupted run
    resumes at the first unfinished method.
    """
    args = parse_args(argv)
    command = cli.command_line("BERT/bert_pipeline.py", argv if argv is not None else sys.argv[1:])
    model = tokenattr.load_model(args.checkpoint, family="bert", device=args.device)
    tokenizer = load_tokenizer(args.tokenizer)
    annotations = load_annotations(args.data_dir, args.split)[: args.limit]
    documents = load_documents(args.data_dir, [annotation.docids[0] for annotation in annotations])
    summaries = {}
    for method in args.methods:
        summary = finished_summary(args.out / f"{method}.json", command)
        if summary is None:
            summary = run_method(args, model, tokenizer, annotations, documents, method, command)
        else:
            print(f"{method}: finished by an earlier run of this command ({args.out / f'{method}.json'})")
        summaries[method] = summary
        f1 = {k: 100 * summary["token_f1"][k]["instance_macro"]["f1"] for k in (5, 10, 20, 40, 80)}
        print(
            f"{method}: accuracy {100 * summary['accuracy']:.1f}%, token F1 ×100 "
            + ", ".join(f"k={k} {v:.2f}" for k, v in f1.items())
        )
    seen = words_seen(tokenizer, documents, args.max_length)
    random = random_ranking_table(annotations, documents, RATIONALE_TOP_K, seen=seen)
    write_json(args.out / "token_f1.json", {"command": command, "results": summaries, RANDOM_ROW: random})
    with atomic_path(args.out / "token_f1.md") as temporary:
        temporary.write_text(markdown_table(summaries, random, RATIONALE_TOP_K))
    return summaries


if __name__ == "__main__":
    main()
