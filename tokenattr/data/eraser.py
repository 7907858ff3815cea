"""ERASER datasets (DeYoung et al. 2020), read for the Movie Reviews rationale test (spec §5.3).

An ERASER folder holds ``{train,val,test}.jsonl`` and ``docs/``:

* each jsonl line is one annotation: ``annotation_id``, ``classification`` (the label, e.g. ``NEG``/``POS``),
  ``evidences`` (a list of evidence *groups*, each a list of ``{docid, start_token, end_token, text, ...}``;
  spans are ``[start_token, end_token)`` over the whitespace tokens of the flattened document) and ``docids``
  (absent or ``null`` where the documents are those the evidences name; Movie Reviews: the annotation id);
* ``docs/{docid}`` is tokenised text, one sentence per line, tokens separated by single spaces. ERASER flattens
  a document by dropping empty lines and empty tokens; :func:`load_document` does the same, so evidence token
  indices point into the list it returns (on Movie Reviews this equals ``text.split()``, as the original uses).

The rationale test scores word-piece relevance on whitespace words: :func:`word_scores_from_pieces` maps the
scores back with the character offsets of a Hugging Face fast tokenizer, and :func:`top_k_words` picks the top-k
words that become hard rationale predictions (see :mod:`tokenattr.evaluation.rationale`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MOVIE_LABELS",
    "ERASER_SPLITS",
    "Annotation",
    "Evidence",
    "load_annotations",
    "load_document",
    "load_documents",
    "top_k_words",
    "word_scores_from_pieces",
    "words_to_text",
]

ERASER_SPLITS: tuple[str, ...] = ("train", "val", "test")
# The classes of a Movie Reviews classifier, in the index order of the original's (BERT_params/movies_bert.json).
MOVIE_LABELS = {"NEG": 0, "POS": 1}


@dataclass(frozen=True)
class Evidence:
    """One human rationale span: tokens ``[start_token, end_token)`` of document ``docid``, and their text."""

    docid: str
    start_token: int
    end_token: int
    text: str


@dataclass(frozen=True)
class Annotation:
    """One ERASER instance: its id, label, every evidence span (groups flattened) and the documents it reads."""

    annotation_id: str
    label: str
    evidences: list[Evidence]
    docids: list[str]


def _check_folder(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"ERASER folder {data_dir} does not exist (expected a folder with {{train,val,test}}.jsonl and docs/)"
        )


def _evidence(raw: Any, where: str) -> Evidence:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: an evidence must be an object, got {type(raw).__name__}")
    missing = [key for key in ("docid", "start_token", "end_token") if key not in raw]
    if missing:
        raise ValueError(f"{where}: evidence {raw} lacks {missing}")
    start, end = raw["start_token"], raw["end_token"]
    # bool is an int subclass; a span of True/False is a malformed file, not token 1/0.
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in (start, end)) or not 0 <= start <= end:
        raise ValueError(f"{where}: evidence token span must be integers 0 <= start_token <= end_token, got {raw}")
    return Evidence(docid=str(raw["docid"]), start_token=start, end_token=end, text=str(raw.get("text", "")))


def _annotation(content: Any, where: str) -> Annotation:
    if not isinstance(content, dict):
        raise ValueError(f"{where}: expected a JSON object per line, got {type(content).__name__}")
    missing = [key for key in ("annotation_id", "classification", "evidences") if key not in content]
    if missing:
        raise ValueError(f"{where}: annotation lacks {missing} (expected annotation_id, classification, evidences)")
    groups = content["evidences"]
    if not isinstance(groups, list) or not all(isinstance(group, list) for group in groups):
        raise ValueError(f"{where}: 'evidences' must be a list of lists of evidence objects")
    evidences = [_evidence(raw, where) for group in groups for raw in group]
    annotation_id = str(content["annotation_id"])
    docids = content.get("docids")
    if docids is None:
        # ERASER's convention: the documents are those the evidences name; an annotation without evidence (one
        # Movie Reviews training review) reads the document named like the annotation.
        docids = list(dict.fromkeys(ev.docid for ev in evidences)) or [annotation_id]
    elif not isinstance(docids, list):
        raise ValueError(f"{where}: 'docids' must be a list or null, got {docids!r}")
    return Annotation(
        annotation_id=annotation_id,
        label=str(content["classification"]),
        evidences=evidences,
        docids=[str(d) for d in docids],
    )


def load_annotations(data_dir: str | PathLike, split: str) -> list[Annotation]:
    """The annotations of ``{data_dir}/{split}.jsonl``, in file order (Movie Reviews: 1,600 / 200 / 199).

    Raises:
        ValueError: ``split`` is not one of ``train``, ``val``, ``test``, or a line is malformed (the message gives
            the file and line number).
        FileNotFoundError: the folder or the split's file is missing.
    """
    if split not in ERASER_SPLITS:
        raise ValueError(f"unknown ERASER split {split!r}; expected one of {list(ERASER_SPLITS)}")
    data_dir = Path(data_dir)
    _check_folder(data_dir)
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"ERASER annotations {path} do not exist (expected {split}.jsonl in {data_dir})")
    annotations = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                content = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg})") from error
            annotations.append(_annotation(content, where))
    return annotations


def load_document(data_dir: str | PathLike, docid: str) -> list[str]:
    """The flattened whitespace tokens of ``{data_dir}/docs/{docid}``, as ERASER indexes them.

    Lines are stripped and empty ones dropped, each line is split on single spaces, empty tokens are dropped,
    and the lines are concatenated: evidence ``start_token``/``end_token`` index this list.
    """
    data_dir = Path(data_dir)
    _check_folder(data_dir)
    if not docid or Path(docid).name != docid:
        raise ValueError(f"document id {docid!r} must be a plain file name inside {data_dir / 'docs'}")
    path = data_dir / "docs" / docid
    if not path.is_file():
        raise FileNotFoundError(f"ERASER document {path} does not exist (expected docs/{docid} in {data_dir})")
    text = path.read_text(encoding="utf-8")
    return [token for line in text.split("\n") for token in line.strip().split(" ") if token]


def load_documents(data_dir: str | PathLike, docids: Iterable[str]) -> dict[str, list[str]]:
    """``{docid: tokens}`` for each distinct id of ``docids``, in first-seen order (see :func:`load_document`)."""
    return {docid: load_document(data_dir, docid) for docid in dict.fromkeys(docids)}


def words_to_text(words: Sequence[str]) -> str:
    """The text to tokenise for :func:`word_scores_from_pieces`: the words joined by single spaces."""
    return " ".join(words)


def word_scores_from_pieces(
    words: Sequence[str], offsets: Sequence[tuple[int, int]] | np.ndarray, piece_scores: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Word-piece relevance ``[T]`` mapped onto whitespace words ``[W]``: per word, the max over its pieces.

    The original (spec §5.3) gives each non-special word-piece's score to each of its characters (``##``
    stripped) and takes, per whitespace word, the max over the word's characters; it walks the characters by
    length, which drifts when a piece is ``[UNK]`` or the tokenizer drops characters. Here the pieces are placed by
    the character offsets a Hugging Face fast tokenizer returns for ``words_to_text(words)``
    (``return_offsets_mapping=True``), which gives the same max wherever the original stays aligned:

    * a piece with an empty span (special tokens ``[CLS]``/``[SEP]``/padding, offsets ``(0, 0)``) is skipped;
    * a word's score is the max over the pieces whose span ``[start, end)`` overlaps the word's characters;
    * a word no piece reaches (cut off by truncation) is NaN, so :func:`top_k_words` never picks it.

    Args:
        words: ``[W]`` whitespace words (e.g. :func:`load_document`).
        offsets: ``[T, 2]`` character offsets into ``words_to_text(words)``, one row per piece of the encoding.
        piece_scores: ``[T]`` finite relevance per piece (the rationale test clamps it at 0 first).

    Returns:
        float64 ``[W]``: each word's score, NaN for words without a piece.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.size == 0:
        offsets = offsets.reshape(0, 2)
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise ValueError(f"offsets must be [T, 2] (start, end) character offsets of one text, got {offsets.shape}")
    piece_scores = np.asarray(piece_scores, dtype=np.float64)
    if piece_scores.ndim != 1:
        raise ValueError(f"piece_scores must be [T], one score per piece, got shape {piece_scores.shape}")
    if len(piece_scores) != len(offsets):
        raise ValueError(f"piece_scores has {len(piece_scores)} entries but offsets has {len(offsets)} rows")
    if not np.all(np.isfinite(piece_scores)):
        raise ValueError("piece_scores must be finite; got NaN or inf")
    lengths = np.array([len(word) for word in words], dtype=np.int64)
    word_ends = np.cumsum(lengths + 1) - 1  # one separating space after each word
    word_starts = word_ends - lengths
    text_length = int(word_ends[-1]) if len(words) else 0
    if len(offsets) and (offsets.min() < 0 or offsets.max() > text_length):
        raise ValueError(
            f"offsets reach outside the {text_length} characters of words_to_text(words); expected the offsets of "
            "that very text"
        )
    scores = np.full(len(words), np.nan)
    for (start, end), score in zip(offsets, piece_scores):
        if end <= start:
            continue
        # Words overlapping [start, end): those ending after `start` and starting before `end`.
        first = np.searchsorted(word_ends, start, side="right")
        last = np.searchsorted(word_starts, end, side="left")
        span = scores[first:last]
        scores[first:last] = np.where(np.isnan(span) | (span < score), score, span)
    return scores


def top_k_words(word_scores: Sequence[float] | np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest-scored words, highest first; ties go to the earlier word; NaN is never chosen.

    With fewer than ``k`` scored words, all of them are returned (in the same order).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    word_scores = np.asarray(word_scores, dtype=np.float64).reshape(-1)
    scored = np.flatnonzero(~np.isnan(word_scores))
    order = np.argsort(-word_scores[scored], kind="stable")  # stable: equal scores keep position order
    return scored[order[:k]]
