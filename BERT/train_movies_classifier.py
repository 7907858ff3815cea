"""Train the Movie Reviews sentiment classifier that the rationale and perturbation tests explain.

    python BERT/train_movies_classifier.py --checkpoint MINILM_OR_BERT_FOLDER --out models/movies_minilm

The original pipeline fine-tunes all of ``bert-base-uncased`` on the ERASER train split (Adam, lr 1e-5, batch 10,
up to 10 epochs; spec §5.3) before it explains. That takes GPU hours; on a CPU this script trains only the
**top blocks** (``--train-blocks``, default 1), the pooler and the classifier, on the frozen encoder's features:
the input of the first trained block is computed once per document and cached, so an epoch costs one pass through
the trained blocks only. ``--train-blocks all`` fine-tunes everything (as the original; slow on a CPU).

Documents are truncated to ``--max-length`` word-pieces (512, as the original). The epoch with the best
validation accuracy is kept. The output is a Hugging Face folder (``config.json``, ``model.safetensors``, the
tokenizer) that ``tokenattr.load_model`` and ``transformers`` read, with ``training.json`` beside the weights:
settings, per-epoch loss and validation accuracy, and the test accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import tokenattr
from tokenattr import cli
from tokenattr.data import MOVIE_LABELS, load_annotations, load_documents, words_to_text
from tokenattr.io import write_json
from tokenattr.models import encode_texts, load_tokenizer, record
from tokenattr.models.bert import save_hf_folder
from tokenattr.protocols import versions

LABELS = tuple(MOVIE_LABELS)
DEFAULT_DATA = cli.ERASER_MOVIES_DIR


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help=f"ERASER movies folder (default {DEFAULT_DATA})"
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="pretrained BERT-family folder to start from")
    parser.add_argument("--out", type=Path, required=True, help="output folder (a Hugging Face model folder)")
    parser.add_argument("--train-blocks", default="1", help="top blocks trained, or 'all' (default: 1)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs (default: 4)")
    parser.add_argument("--batch-size", type=int, default=16, help="documents per step (default: 16)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4)")
    parser.add_argument("--max-length", type=int, default=512, help="word-pieces per document (default: 512)")
    parser.add_argument("--limit", type=int, help="use only the first N documents of each split (quick runs)")
    parser.add_argument("--seed", type=int, default=10111213, help="torch seed (default: the original's 10111213)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args(argv)
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} does not exist (expected ERASER's movies folder: *.jsonl + docs/)")
    if not args.checkpoint.exists():
        parser.error(f"--checkpoint {args.checkpoint} does not exist")
    for flag in ("epochs", "batch_size", "max_length", "limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.train_blocks != "all" and not (args.train_blocks.isdigit()):
        parser.error(f"--train-blocks must be a number of blocks or 'all', got {args.train_blocks!r}")
    return args


def _split(data_dir: Path, split: str, limit: int | None) -> tuple[list[str], torch.Tensor]:
    annotations = load_annotations(data_dir, split)[:limit]
    documents = load_documents(data_dir, [annotation.docids[0] for annotation in annotations])
    texts = [words_to_text(documents[annotation.docids[0]]) for annotation in annotations]
    return texts, torch.tensor([MOVIE_LABELS[annotation.label] for annotation in annotations])


@torch.no_grad()
def cached_features(model, tokenizer, texts, first_block: int, max_length: int, desc: str) -> list[tuple]:
    """Per document, ``(input of block first_block [1, N, D], attention mask [1, N])`` on the CPU."""
    device = next(model.parameters()).device
    features = []
    for text in tqdm(texts, desc=desc, unit="doc"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # most reviews exceed 512 pieces; truncation is the protocol
            encoded = encode_texts(tokenizer, text, max_length)
        encoded = {name: value.to(device) for name, value in encoded.items()}
        if first_block == 0:
            features.append((encoded, None))
            continue
        with record(model, [first_block]) as records:
            model(**encoded)
        features.append((records[first_block].block_input.cpu(), encoded["attention_mask"].cpu()))
    return features


def _batch_logits(model, features: list[tuple], first_block: int) -> torch.Tensor:
    """Logits of a batch of cached documents, padded to the longest."""
    device = next(model.parameters()).device
    if first_block == 0:
        length = max(encoded["input_ids"].shape[1] for encoded, _ in features)
        padded = {
            name: torch.cat([F.pad(encoded[name], (0, length - encoded[name].shape[1])) for encoded, _ in features])
            for name in ("input_ids", "attention_mask")
        }
        return model(**padded)
    length = max(hidden.shape[1] for hidden, _ in features)
    hidden = torch.cat([F.pad(h, (0, 0, 0, length - h.shape[1])) for h, _ in features]).to(device)
    mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in features]).to(device)
    return model.classify_hidden(hidden, mask, first_block)


@torch.no_grad()
def accuracy(model, features: list[tuple], labels: torch.Tensor, first_block: int, batch_size: int) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(features), batch_size):
        logits = _batch_logits(model, features[start : start + batch_size], first_block)
        correct += int((logits.argmax(-1).cpu() == labels[start : start + batch_size]).sum())
    return correct / len(features)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.time()
    torch.manual_seed(args.seed)  # before the new classifier is drawn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an encoder-only checkpoint gets a new classifier: that is the point
        model = tokenattr.load_model(args.checkpoint, family="bert", num_labels=len(LABELS), device=args.device)
    model.config.class_names = list(LABELS)
    tokenizer = load_tokenizer(args.checkpoint)
    depth = model.depth
    trained = depth if args.train_blocks == "all" else min(int(args.train_blocks), depth)
    first_block = depth - trained
    for name, parameter in model.named_parameters():
        block = name.split(".")[2] if name.startswith("encoder.blocks.") else None
        parameter.requires_grad_(
            name.startswith(("pooler", "classifier")) or (block is not None and int(block) >= first_block)
        )
    splits = {split: _split(args.data_dir, split, args.limit) for split in ("train", "val", "test")}
    features = {
        split: cached_features(model, tokenizer, texts, first_block, args.max_length, f"features {split}")
        for split, (texts, _) in splits.items()
    }
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    history, best_state, best_accuracy = [], None, -1.0
    train_labels = splits["train"][1]
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(features["train"]), generator=generator)
        losses = []
        for start in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}", unit="batch"):
            index = order[start : start + args.batch_size]
            logits = _batch_logits(model, [features["train"][i] for i in index], first_block)
            loss = F.cross_entropy(logits, train_labels[index].to(logits.device))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the original
            optimizer.step()
            losses.append(loss.item())
        val_accuracy = accuracy(model, features["val"], splits["val"][1], first_block, args.batch_size)
        history.append({"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), "val_accuracy": val_accuracy})
        print(f"epoch {epoch + 1}: train loss {history[-1]['train_loss']:.4f}, val accuracy {val_accuracy:.3f}")
        if val_accuracy > best_accuracy:
            best_accuracy = val_accuracy
            best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    model.load_state_dict(best_state)
    test_accuracy = accuracy(model, features["test"], splits["test"][1], first_block, args.batch_size)
    print(f"best val accuracy {best_accuracy:.3f}; test accuracy {test_accuracy:.3f}")
    model.eval()
    save_hf_folder(model, args.out, tokenizer)
    summary = {
        "command": cli.command_line("BERT/train_movies_classifier.py", argv if argv is not None else sys.argv[1:]),
        "checkpoint": str(args.checkpoint),
        "trained_blocks": trained,
        "settings": {k: v for k, v in vars(args).items() if k in ("epochs", "batch_size", "lr", "max_length", "seed")},
        "documents": {split: len(texts) for split, (texts, _) in splits.items()},
        "history": history,
        "val_accuracy": best_accuracy,
        "test_accuracy": test_accuracy,
        "seconds": round(time.time() - started, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
    }
    write_json(args.out / "training.json", summary)
    return summary


if __name__ == "__main__":
    main()
