"""The text side of the demo: a tiny BERT trained on synthetic reviews with planted rationales, explained by
every token method and scored with the ERASER rationale test against a random ranking.

The reviews (:mod:`tokenattr.data.synthetic_text`) are labelled by the majority of a few planted cue words, and
their evidence spans are exactly the cues of the label's polarity, so the rationale test's token F1 says how
well a method finds the words that decide the label. The model is trained on the CPU at each run (~20 s);
:func:`run_text_demo` writes the dataset and its ``vocab.txt`` to ``{out_dir}/synthetic_reviews`` and returns
the results that ``python -m tokenattr.demo`` writes under ``"text"`` in ``demo_results.json``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tokenattr.data.eraser import Annotation, load_annotations, load_documents, words_to_text
from tokenattr.data.synthetic_text import SENTIMENT_LABELS, synthetic_vocabulary, write_synthetic_eraser
from tokenattr.evaluation import random_ranking_table
from tokenattr.methods import METHODS, get_method
from tokenattr.models import BertClassifier, BertConfig, encode_texts, load_tokenizer
from tokenattr.protocols import rationale_test

DATA_FOLDER = "synthetic_reviews"  # inside the demo's output folder: the ERASER dataset and its vocab.txt
LABEL_INDEX = {label: index for index, label in enumerate(SENTIMENT_LABELS)}
# A review has 2-4 rationale words among 20-40: small k show precision, k = 10 recall.
TEXT_KS: tuple[int, ...] = (1, 2, 3, 5, 10)
MAX_LENGTH = 64  # positions; the longest review is about 45 pieces with [CLS] and [SEP]
EXPLAIN_BATCH_SIZE = 50  # reviews per explanation batch in the rationale test
RANDOM_SEED = 0  # the random ranking's word scores


@dataclass(frozen=True)
class TextSettings:
    """How :func:`run_text_demo` makes its data and trains its model; recorded in the results.

    The defaults reach about 97% test accuracy in about 20 seconds on one CPU thread.
    """

    num_train: int = 2000
    num_val: int = 200
    num_test: int = 200
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3  # Adam, constant
    seed: int = 0  # initialisation and shuffling
    data_seed: int = 0


def text_model_config(vocab_size: int) -> BertConfig:
    """The demo BERT: 2 post-LN blocks of width 64 with 4 heads, a ``NEG``/``POS`` classifier."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        intermediate_size=128,
        max_position_embeddings=MAX_LENGTH,
        num_labels=len(SENTIMENT_LABELS),
        class_names=list(SENTIMENT_LABELS),
    )


def token_methods(methods: Sequence[str] | None = None) -> list[str]:
    """The canonical names of ``methods`` (default: every registered method) that explain tokens, in order;
    pixel methods (full LRP) cannot explain text and are left out."""
    names = dict.fromkeys(get_method(name).name for name in (METHODS if methods is None else methods))
    return [name for name in names if not METHODS[name].pixels]


def run_text_demo(
    out_dir: str | Path,
    methods: Sequence[str] | None = None,
    settings: TextSettings = TextSettings(),
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Write the synthetic reviews, train the demo BERT on them, and run the rationale test of every token method
    in ``methods`` (default: all) on the test split, next to a random ranking of the words. Training runs on the
    CPU, the explanations on ``device``; ``progress`` shows the training's progress bar.

    Returns ``{"accuracy", "val_accuracy", "methods": {name: {"token_f1", "seconds"}}, "random": {"token_f1"},
    ...}`` where each ``token_f1`` is :meth:`RationaleScores.compute` over ``TEXT_KS`` (ERASER's token F1, the
    table prints its instance-macro F1), plus the data's statistics, timings and settings.
    """
    names = token_methods(methods)
    if not names:
        raise ValueError(f"none of {list(methods or [])} explains tokens; the text demo needs at least one")
    started = time.perf_counter()
    folder = write_synthetic_eraser(
        Path(out_dir) / DATA_FOLDER, settings.num_train, settings.num_val, settings.num_test, seed=settings.data_seed
    )
    vocabulary = synthetic_vocabulary()
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(vocabulary) + "\n")
    tokenizer = load_tokenizer(vocab_path)
    if len(tokenizer) != len(vocabulary):  # a tokenizer that ignored the file would map every word to [UNK]
        raise RuntimeError(f"the tokenizer read {len(tokenizer)} tokens from {vocab_path}, expected {len(vocabulary)}")
    splits = {split: _read_split(folder, split) for split in ("train", "val", "test")}

    model, training = train_text_model(tokenizer, *splits["train"], settings, progress)
    model.to(device)
    annotations, documents = splits["test"]
    scores = {}
    for name in names:
        method_started = time.perf_counter()
        result = rationale_test(
            model,
            tokenizer,
            annotations,
            documents,
            name,
            label_index=LABEL_INDEX,
            ks=TEXT_KS,
            batch_size=EXPLAIN_BATCH_SIZE,
            max_length=MAX_LENGTH,
            progress=False,
        )
        scores[name] = {
            "token_f1": result.summary["token_f1"],
            "seconds": round(time.perf_counter() - method_started, 2),
        }
    return {
        "accuracy": text_accuracy(model, tokenizer, annotations, documents),
        "val_accuracy": text_accuracy(model, tokenizer, *splits["val"]),
        "test_documents": len(annotations),
        "mean_document_words": float(np.mean([len(documents[a.docids[0]]) for a in annotations])),
        "mean_rationale_words": float(np.mean([len(a.evidences) for a in annotations])),
        "methods": scores,
        "random": {"token_f1": random_ranking_table(annotations, documents, TEXT_KS, RANDOM_SEED)},
        "ks": list(TEXT_KS),
        "training": training,
        "seconds": round(time.perf_counter() - started, 1),
        "settings": {
            **asdict(settings),
            "config": {key: value for key, value in asdict(model.config).items() if key != "class_names"},
            "data": str(folder),
            "explained_class": "the true label; relevance clamped at 0 (the rationale test)",
            "method_options": "each method's defaults for BERT",
            "random_seed": RANDOM_SEED,
        },
    }


def _read_split(folder: Path, split: str) -> tuple[list[Annotation], dict[str, list[str]]]:
    annotations = load_annotations(folder, split)
    return annotations, load_documents(folder, (a.docids[0] for a in annotations))


def _encode(tokenizer, annotations: Sequence[Annotation], documents: dict[str, list[str]]) -> dict[str, Tensor]:
    texts = [words_to_text(documents[a.docids[0]]) for a in annotations]
    return encode_texts(tokenizer, texts, MAX_LENGTH)


def _labels(annotations: Sequence[Annotation]) -> Tensor:
    return torch.tensor([LABEL_INDEX[a.label] for a in annotations])


@torch.no_grad()
def text_accuracy(
    model: BertClassifier, tokenizer, annotations: Sequence[Annotation], documents: dict[str, list[str]]
) -> float:
    """Fraction of ``annotations`` whose review ``model`` classifies as labelled."""
    device = next(model.parameters()).device
    inputs = {name: value.to(device) for name, value in _encode(tokenizer, annotations, documents).items()}
    return (model(**inputs).argmax(-1).cpu() == _labels(annotations)).float().mean().item()


def train_text_model(
    tokenizer,
    annotations: Sequence[Annotation],
    documents: dict[str, list[str]],
    settings: TextSettings = TextSettings(),
    progress: bool = True,
) -> tuple[BertClassifier, dict]:
    """Train the demo BERT (:func:`text_model_config`) on ``annotations`` with Adam and cross-entropy on the CPU.

    The initialisation is PyTorch's default under ``settings.seed`` (drawn without touching the global random
    state), the shuffling too. Returns the model in eval mode and ``{"epoch_losses", "train_seconds"}``.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    encoded, labels = _encode(tokenizer, annotations, documents), _labels(annotations)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = BertClassifier(text_model_config(len(tokenizer))).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    steps = settings.epochs * -(-len(labels) // settings.batch_size)
    epoch_losses = []
    with tqdm(total=steps, desc="training the demo BERT", unit="step", disable=not progress) as bar:
        for _ in range(settings.epochs):
            loss_sum = 0.0
            for batch in torch.randperm(len(labels), generator=generator).split(settings.batch_size):
                logits = model(encoded["input_ids"][batch], encoded["attention_mask"][batch])
                loss = F.cross_entropy(logits, labels[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(batch)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            epoch_losses.append(loss_sum / len(labels))
    return model.eval(), {"epoch_losses": epoch_losses, "train_seconds": round(time.perf_counter() - started, 1)}


def print_text_table(results: dict) -> None:
    """Print each method's token F1 (instance macro, x100) per k, the random ranking last, and Ours-H's margin."""
    ks = results["ks"]
    print(
        f"demo BERT: accuracy {results['accuracy']:.1%} on {results['test_documents']} held-out synthetic reviews "
        f"(trained in {results['training']['train_seconds']:.0f} s)"
    )
    print(
        f"ERASER rationale test (token F1 x100, instance macro; true class explained): a review has "
        f"{results['mean_rationale_words']:.1f} rationale words among {results['mean_document_words']:.1f} on average"
    )
    rows = {**results["methods"], "random ranking": results["random"]}
    width = max(len("method"), *map(len, rows)) + 2
    print(f"  {'method':<{width}}" + "".join(f"{f'F1@{k}':>8}" for k in ks))
    for name, row in rows.items():
        print(f"  {name:<{width}}" + "".join(f"{100 * _f1(row, k):>8.1f}" for k in ks))
    if "ours-h" in results["methods"]:
        best = max(ks, key=lambda k: _f1(results["methods"]["ours-h"], k))
        print(
            f"  ours-h at k={best}: {100 * _f1(results['methods']['ours-h'], best):.1f} vs "
            f"{100 * _f1(results['random'], best):.1f} for the random ranking"
        )


def _f1(row: dict, k: int) -> float:
    return row["token_f1"][k]["instance_macro"]["f1"]
