"""The synthetic ERASER reviews: real format, planted rationales, labels by cue majority, determinism, vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenattr.data.eraser import load_annotations, load_documents
from tokenattr.data.synthetic_text import (
    NEGATIVE_CUES,
    POSITIVE_CUES,
    SENTIMENT_LABELS,
    SPECIAL_TOKENS,
    synthetic_vocabulary,
    write_synthetic_eraser,
)
from tokenattr.models import load_tokenizer

SIZES = {"train": 60, "val": 20, "test": 40}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_synthetic_eraser(tmp_path_factory.mktemp("reviews"), *SIZES.values(), seed=3)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_reads_back_as_an_eraser_dataset(folder):
    for split, size in SIZES.items():
        annotations = load_annotations(folder, split)
        assert len(annotations) == size
        documents = load_documents(folder, (a.docids[0] for a in annotations))
        assert all(a.docids == [a.annotation_id] for a in annotations)
        assert all(20 <= len(documents[a.annotation_id]) <= 40 for a in annotations)
        labels = [a.label for a in annotations]
        assert abs(labels.count("POS") - labels.count("NEG")) <= 1 and set(labels) == set(SENTIMENT_LABELS)
    assert len(list((folder / "docs").iterdir())) == sum(SIZES.values())
    record = json.loads((folder / "test.jsonl").read_text().splitlines()[0])  # Movie Reviews' layout
    assert set(record) == {"annotation_id", "classification", "docids", "evidences", "query", "query_type"}
    assert all(len(group) == 1 and group[0]["start_sentence"] == -1 for group in record["evidences"])


def test_evidence_is_exactly_the_cues_that_decide_the_label(folder):
    annotations = load_annotations(folder, "train") + load_annotations(folder, "test")
    documents = load_documents(folder, (a.docids[0] for a in annotations))
    for annotation in annotations:
        words = documents[annotation.docids[0]]
        positive = [i for i, word in enumerate(words) if word in POSITIVE_CUES]
        negative = [i for i, word in enumerate(words) if word in NEGATIVE_CUES]
        own, other = (positive, negative) if annotation.label == "POS" else (negative, positive)
        assert 2 <= len(own) <= 4 and len(other) < len(own) and len(other) <= 2  # the majority decides
        assert all(ev.end_token == ev.start_token + 1 for ev in annotation.evidences)
        assert all(ev.text == words[ev.start_token] for ev in annotation.evidences)
        assert [ev.start_token for ev in annotation.evidences] == own


def test_the_same_seed_gives_the_same_files_and_splits_are_independent(folder, tmp_path):
    again = write_synthetic_eraser(tmp_path / "again", *SIZES.values(), seed=3)
    assert _files(again) == _files(folder)
    bigger_train = write_synthetic_eraser(tmp_path / "bigger", 80, SIZES["val"], SIZES["test"], seed=3)
    assert (bigger_train / "test.jsonl").read_bytes() == (folder / "test.jsonl").read_bytes()
    other_seed = write_synthetic_eraser(tmp_path / "other", *SIZES.values(), seed=4)
    assert (other_seed / "test.jsonl").read_bytes() != (folder / "test.jsonl").read_bytes()


def test_vocabulary_tokenises_every_word_some_in_pieces(folder, tmp_path):
    vocabulary = synthetic_vocabulary()
    assert tuple(vocabulary[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS and len(set(vocabulary)) == len(vocabulary)
    (tmp_path / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    tokenizer = load_tokenizer(tmp_path / "vocab.txt")
    assert len(tokenizer) == len(vocabulary)
    annotations = load_annotations(folder, "train")
    words = {word for doc in load_documents(folder, (a.docids[0] for a in annotations)).values() for word in doc}
    pieces = {word: tokenizer.tokenize(word) for word in words}
    assert all(tokenizer.unk_token not in word_pieces for word_pieces in pieces.values())
    assert sum(len(word_pieces) > 1 for word_pieces in pieces.values()) >= 3
    assert tokenizer.tokenize("delightful superb .") == ["delight", "##ful", "superb", "."]


@pytest.mark.parametrize("sizes", [(0, 1, 1), (1, 1, -2), (1.5, 1, 1)])
def test_rejects_bad_sizes(tmp_path, sizes):
    with pytest.raises(ValueError, match="num_"):
        write_synthetic_eraser(tmp_path, *sizes)
