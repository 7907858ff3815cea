"""Synthetic film reviews whose rationales are known word by word, written as an ERASER dataset.

Each review is 20-40 words of neutral film vocabulary in short sentences, with a few planted sentiment cue
words: 2-4 of the label's polarity and fewer (0-2) of the other, so the majority of the cues decides the
label (``NEG``/``POS``, as Movie Reviews). The minority cues and a few intensifiers ("very", "utterly"),
placed anywhere, are distractors: a model has to weigh the cues of both polarities, and a map that merely
finds sentiment words is not rewarded for them. The evidence spans are exactly the cues of the label's
polarity, one word each, so the rationale test (:func:`tokenattr.protocols.rationale_test`) scores an
attribution method against the words that decide the label.

:func:`synthetic_vocabulary` is a WordPiece vocabulary for these reviews. A few words (e.g. "delightful",
"cinematography") exist in it only as two pieces ("delight", "##ful"), so the word-piece -> word mapping of the
rationale test is exercised; every other word is one piece.
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np

from .eraser import ERASER_SPLITS
from .synthetic import _check_int

__all__ = [
    "NEGATIVE_CUES",
    "POSITIVE_CUES",
    "SENTIMENT_LABELS",
    "SPECIAL_TOKENS",
    "synthetic_vocabulary",
    "write_synthetic_eraser",
]

SENTIMENT_LABELS: tuple[str, ...] = ("NEG", "POS")  # the class index of each label, as Movie Reviews
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
POSITIVE_CUES: tuple[str, ...] = ("superb", "delightful", "brilliant", "charming", "gripping", "wonderful")
NEGATIVE_CUES: tuple[str, ...] = ("dreadful", "tedious", "clumsy", "dull", "awful", "bland")
QUERY = "What is the sentiment of this review?"

# Neutral film vocabulary: no word here leans positive or negative.
_NEUTRAL_WORDS: tuple[str, ...] = (
    "the", "a", "this", "that", "its", "their", "his", "her", "it", "they",
    "film", "movie", "story", "plot", "actor", "actress", "director", "scene", "camera", "music",
    "script", "character", "ending", "audience", "cast", "role", "dialogue", "screen", "sequel", "score",
    "city", "night", "family", "house", "war", "journey", "year", "minutes", "hero", "villain",
    "is", "was", "has", "shows", "follows", "plays", "opens", "ends", "moves", "feels",
    "and", "of", "in", "on", "to", "with", "after", "during", "about", "while",
    "first", "second", "final", "new", "old", "young", "small", "large", "another", "every",
    "cinematography", "soundtrack", "screenplay", "performance",
)  # fmt: skip
_INTENSIFIERS: tuple[str, ...] = ("very", "truly", "rather", "quite", "utterly", "really")
# Words the vocabulary holds only as pieces; WordPiece's longest match splits them so.
_PIECES: dict[str, tuple[str, ...]] = {
    "delightful": ("delight", "##ful"),
    "wonderful": ("wonder", "##ful"),
    "dreadful": ("dread", "##ful"),
    "cinematography": ("cinema", "##tography"),
    "soundtrack": ("sound", "##track"),
}
_LENGTH_RANGE = (20, 40)  # words per review, the sentence-ending "." included
_SENTENCE_RANGE = (5, 10)  # words per sentence before its "."
_MAJORITY_RANGE = (2, 4)  # cues of the label's polarity
_MAX_MINORITY = 2  # cues of the other polarity: at most this, and fewer than the majority
_INTENSIFIER_RANGE = (1, 3)


def synthetic_vocabulary() -> list[str]:
    """The WordPiece vocabulary (``vocab.txt`` lines) of the synthetic reviews: the special tokens first
    (``[PAD]`` is id 0), then "." and every word, the words of ``_PIECES`` as their pieces only."""
    words = (".", *_NEUTRAL_WORDS, *_INTENSIFIERS, *POSITIVE_CUES, *NEGATIVE_CUES)
    pieces = (piece for word in words for piece in _PIECES.get(word, (word,)))
    return list(dict.fromkeys((*SPECIAL_TOKENS, *pieces)))


def write_synthetic_eraser(
    folder: str | PathLike, num_train: int = 2000, num_val: int = 200, num_test: int = 200, seed: int = 0
) -> Path:
    """Write a synthetic ERASER dataset (``{train,val,test}.jsonl`` and ``docs/``) into ``folder``; returns it.

    The layout is Movie Reviews': one annotation per review, its document named like it (``{split}_{i:05d}``),
    one sentence per line, and one evidence group per cue word, ``[start_token, end_token)`` over the document's
    whitespace tokens. Labels are balanced (counts differ by at most one) and shuffled.
    Each split is drawn from its own stream of ``seed``, so the same arguments give identical files and one
    split's size does not change another's reviews. Existing files of the same names are overwritten.
    """
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    for split, size in sizes.items():
        _check_int(f"num_{split}", size, minimum=1)
    _check_int("seed", seed, minimum=0)
    folder = Path(folder)
    (folder / "docs").mkdir(parents=True, exist_ok=True)
    for index, split in enumerate(ERASER_SPLITS):
        rng = np.random.default_rng([seed, index])
        labels = rng.permutation(np.arange(sizes[split]) % len(SENTIMENT_LABELS))
        lines = []
        for number, label in enumerate(labels):
            docid = f"{split}_{number:05d}"
            sentences, evidence = _review(rng, int(label))
            (folder / "docs" / docid).write_text("".join(" ".join(words) + "\n" for words in sentences))
            tokens = [word for words in sentences for word in words]
            lines.append(json.dumps(_annotation(docid, SENTIMENT_LABELS[label], tokens, evidence)) + "\n")
        (folder / f"{split}.jsonl").write_text("".join(lines))
    return folder


def _review(rng: np.random.Generator, label: int) -> tuple[list[list[str]], list[int]]:
    """One review of class ``label``: its sentences (word lists, each ending in ".") and the flat token indices
    of its cues of the label's polarity, ascending."""
    length = int(rng.integers(_LENGTH_RANGE[0], _LENGTH_RANGE[1] + 1))
    sentences = []
    remaining = length
    while remaining > 0:
        size = int(rng.integers(_SENTENCE_RANGE[0], _SENTENCE_RANGE[1] + 1)) + 1
        if remaining - size < _SENTENCE_RANGE[0] + 1:
            size = remaining  # a rest too short for a sentence of its own joins this one
        sentences.append([*(str(word) for word in rng.choice(_NEUTRAL_WORDS, size - 1)), "."])
        remaining -= size
    flat = [(s, w) for s, words in enumerate(sentences) for w in range(len(words) - 1)]  # every non-"." slot

    majority = int(rng.integers(_MAJORITY_RANGE[0], _MAJORITY_RANGE[1] + 1))
    minority = int(rng.integers(0, min(_MAX_MINORITY, majority - 1) + 1))
    intensifiers = int(rng.integers(_INTENSIFIER_RANGE[0], _INTENSIFIER_RANGE[1] + 1))
    own, other = (POSITIVE_CUES, NEGATIVE_CUES) if SENTIMENT_LABELS[label] == "POS" else (NEGATIVE_CUES, POSITIVE_CUES)
    planted = [
        *rng.choice(own, majority),
        *rng.choice(other, minority),
        *rng.choice(_INTENSIFIERS, intensifiers),
    ]
    slots = rng.choice(len(flat), len(planted), replace=False)
    for slot, word in zip(slots, planted):
        s, w = flat[slot]
        sentences[s][w] = str(word)
    starts = np.cumsum([0] + [len(words) for words in sentences])
    evidence = sorted(int(starts[flat[slot][0]] + flat[slot][1]) for slot in slots[:majority])
    return sentences, evidence


def _annotation(docid: str, label: str, tokens: list[str], evidence: list[int]) -> dict:
    """The ERASER jsonl record of one review: one evidence group per cue token; sentence indices -1, as Movie
    Reviews' token-level spans."""
    groups = [
        [
            {
                "docid": docid,
                "end_sentence": -1,
                "end_token": token + 1,
                "start_sentence": -1,
                "start_token": token,
                "text": tokens[token],
            }
        ]
        for token in evidence
    ]
    return {
        "annotation_id": docid,
        "classification": label,
        "docids": [docid],
        "evidences": groups,
        "query": QUERY,
        "query_type": None,
    }
