"""The ERASER Movie Reviews rationale test (spec §5.3): token-level F1 of the top-k words against human rationales.

For each test review the explanation's word scores (:func:`tokenattr.data.eraser.word_scores_from_pieces`) give
the top-k words, k = 5, 10, ..., 80 (:data:`RATIONALE_TOP_K`); each word is a hard rationale ``[i, i + 1)``.
ERASER's scorer (``rationale_benchmark/metrics.py``, ``score_hard_rationale_predictions`` on token-level
rationales) then compares them with the human evidence spans, both expanded to single tokens
``(annotation_id, docid, token)``:

* ``instance_micro``: precision, recall and F1 over the pooled token sets of all annotations;
* ``instance_macro``: per *instance*, i.e. per ``(annotation_id, docid)`` that has a true or a predicted token,
  P = |pred ∩ true| / |pred| (0 without predictions), R = |pred ∩ true| / |true| (0 without truth) and
  F1 = 2PR / (P + R) (0 when P or R is 0); P, R and F1 are each averaged over the instances. An annotation with
  truth but no prediction counts with F1 = 0; a prediction for an annotation without truth counts too (P = R = 0);
  an annotation with neither is not an instance. The paper's number is ``instance_macro["f1"]`` (papers print
  ×100).

Truth comes from every annotation of the split, as ERASER's scorer reads the whole split file. ERASER divides by
zero when the pooled predictions or truth are empty; here those ratios are 0, and scoring nothing at all raises.

:func:`token_prf` is the scorer over token sets; :func:`rationale_table` scores a whole split for every k;
:class:`RationaleScores` accumulates the same numbers one annotation at a time, sharded across processes;
:func:`write_eraser_results` writes ERASER's results file, so that its own ``metrics.py`` can check the numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from tokenattr.data.eraser import Annotation, top_k_words
from tokenattr.io import atomic_path

__all__ = [
    "random_ranking_table",
    "RATIONALE_TOP_K",
    "RationaleScores",
    "eraser_record",
    "predictions_at_k",
    "predictions_from_results",
    "rationale_table",
    "read_eraser_results",
    "token_prf",
    "truth_from_annotations",
    "write_eraser_results",
]

RATIONALE_TOP_K: tuple[int, ...] = tuple(range(5, 85, 5))

# {annotation_id: {(docid, token index), ...}}
TokenRationales = Mapping[str, Iterable[tuple[str, int]]]
# {annotation_id: (docid, word scores [W])}
WordScores = Mapping[str, tuple[str, np.ndarray]]


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision == 0 or recall == 0 else 2 * precision * recall / (precision + recall)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _by_instance(rationales: TokenRationales) -> dict[tuple[str, str], set[int]]:
    """``{(annotation_id, docid): {token, ...}}``; instances without tokens do not appear (as in ERASER)."""
    instances: dict[tuple[str, str], set[int]] = {}
    for annotation_id, tokens in rationales.items():
        for docid, token in tokens:
            instances.setdefault((str(annotation_id), str(docid)), set()).add(int(token))
    return instances


def _instance_scores(true_tokens: set[int], predicted_tokens: set[int]) -> tuple[float, float, float]:
    hits = len(true_tokens & predicted_tokens)
    precision, recall = _ratio(hits, len(predicted_tokens)), _ratio(hits, len(true_tokens))
    return precision, recall, _f1(precision, recall)


def token_prf(truth: TokenRationales, predictions: TokenRationales) -> dict[str, dict[str, float]]:
    """ERASER's token-level hard-rationale scores (``token_prf`` of its ``metrics.py``).

    Args:
        truth: ``{annotation_id: {(docid, token), ...}}`` human rationale tokens (:func:`truth_from_annotations`).
        predictions: the same for predicted tokens (:func:`predictions_at_k`).

    Returns:
        ``{"instance_micro": {"p", "r", "f1"}, "instance_macro": {"p", "r", "f1"}}``, fractions in [0, 1].

    Raises:
        ValueError: neither ``truth`` nor ``predictions`` holds a token (there is no instance to average over).
    """
    true_by_instance, predicted_by_instance = _by_instance(truth), _by_instance(predictions)
    instances = sorted(true_by_instance.keys() | predicted_by_instance.keys())
    if not instances:
        raise ValueError("token_prf: neither truth nor predictions holds a token; there is nothing to score")
    scores = [
        _instance_scores(true_by_instance.get(key, set()), predicted_by_instance.get(key, set())) for key in instances
    ]
    hits = sum(len(true_by_instance.get(key, set()) & predicted_by_instance.get(key, set())) for key in instances)
    micro_p = _ratio(hits, sum(len(tokens) for tokens in predicted_by_instance.values()))
    micro_r = _ratio(hits, sum(len(tokens) for tokens in true_by_instance.values()))
    macro_p, macro_r, macro_f1 = (sum(column) / len(instances) for column in zip(*scores))
    return {
        "instance_micro": {"p": micro_p, "r": micro_r, "f1": _f1(micro_p, micro_r)},
        "instance_macro": {"p": macro_p, "r": macro_r, "f1": macro_f1},
    }


def _truth_tokens(annotation: Annotation) -> set[tuple[str, int]]:
    return {(ev.docid, token) for ev in annotation.evidences for token in range(ev.start_token, ev.end_token)}


def truth_from_annotations(annotations: Iterable[Annotation]) -> dict[str, set[tuple[str, int]]]:
    """``{annotation_id: {(docid, token), ...}}``: every evidence span expanded to its tokens (empty spans add none)."""
    truth: dict[str, set[tuple[str, int]]] = {}
    for annotation in annotations:
        truth.setdefault(annotation.annotation_id, set()).update(_truth_tokens(annotation))
    return truth


def predictions_at_k(word_scores_by_annotation: WordScores, k: int) -> dict[str, set[tuple[str, int]]]:
    """``{annotation_id: {(docid, word index), ...}}``: the top-k words of each annotation (:func:`top_k_words`)."""
    return {
        annotation_id: {(docid, int(index)) for index in top_k_words(scores, k)}
        for annotation_id, (docid, scores) in word_scores_by_annotation.items()
    }


def rationale_table(
    annotations: Iterable[Annotation], word_scores_by_annotation: WordScores, ks: Sequence[int] = RATIONALE_TOP_K
) -> dict[int, dict[str, dict[str, float]]]:
    """``{k: token_prf(...)}`` for each k: the split's truth against the top-k words of each scored annotation.

    ``annotations`` is the whole split (an annotation without scores counts as predicting nothing, as in ERASER's
    scorer); ``word_scores_by_annotation`` maps an annotation id to ``(docid, word scores [W])``, NaN where a word
    has no score.
    """
    truth = truth_from_annotations(annotations)
    return {int(k): token_prf(truth, predictions_at_k(word_scores_by_annotation, k)) for k in ks}


class RationaleScores:
    """Accumulates :func:`rationale_table` one annotation at a time; shards combine with :meth:`merge`.

    Feed every annotation of the split exactly once (with ``word_scores=None`` for one that has no scores). Per k
    the state is sums: the micro counts (hits, predicted and true tokens) and the macro sums of instance P, R and
    F1 with the instance count, so shards combine by adding them (``merge``, or an all-reduce with SUM over the
    values of :meth:`state_dict`). Counts merge exactly; the macro sums are float64 sums, equal to a single pass's
    to rounding.
    """

    _FIELDS = ("hits", "predicted", "true", "p_sum", "r_sum", "f1_sum", "instances")

    def __init__(self, ks: Sequence[int] = RATIONALE_TOP_K) -> None:
        if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0 for k in ks):
            raise ValueError(f"ks must be a non-empty sequence of non-negative integers, got {ks!r}")
        self.ks = tuple(int(k) for k in ks)
        self._state: dict[str, list[float | int]] = {
            field: [0.0 if field.endswith("_sum") else 0] * len(self.ks) for field in self._FIELDS
        }

    def update(self, annotation: Annotation, word_scores: np.ndarray | None, docid: str | None = None) -> None:
        """Add one annotation: its word scores ``[W]`` over document ``docid`` (default: its first document)."""
        docid = annotation.docids[0] if docid is None else docid
        truth = {annotation.annotation_id: _truth_tokens(annotation)}
        true_by_instance = _by_instance(truth)
        for column, k in enumerate(self.ks):
            predicted = [] if word_scores is None else [(docid, int(i)) for i in top_k_words(word_scores, k)]
            predicted_by_instance = _by_instance({annotation.annotation_id: predicted})
            for key in true_by_instance.keys() | predicted_by_instance.keys():
                true_tokens, predicted_tokens = true_by_instance.get(key, set()), predicted_by_instance.get(key, set())
                precision, recall, f1 = _instance_scores(true_tokens, predicted_tokens)
                for field, value in zip(
                    self._FIELDS,
                    (
                        len(true_tokens & predicted_tokens),
                        len(predicted_tokens),
                        len(true_tokens),
                        precision,
                        recall,
                        f1,
                        1,
                    ),
                ):
                    self._state[field][column] += value

    def merge(self, other: RationaleScores) -> RationaleScores:
        """Add ``other``'s state to this one, in place; returns ``self``."""
        if not isinstance(other, RationaleScores):
            raise TypeError(f"can only merge another RationaleScores, got {type(other).__name__}")
        if other.ks != self.ks:
            raise ValueError(f"cannot merge RationaleScores over ks {other.ks} into one over ks {self.ks}")
        self._add_state(other.state_dict())
        return self

    def state_dict(self) -> dict[str, Any]:
        """The state as plain Python numbers: per field, a list of sums over annotations, one per k."""
        return {field: list(values) for field, values in self._state.items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], ks: Sequence[int] = RATIONALE_TOP_K) -> RationaleScores:
        """The accumulator over ``ks`` whose :meth:`state_dict` is ``state`` (e.g. after an all-reduce)."""
        scores = cls(ks)
        scores._add_state(state)
        return scores

    def _add_state(self, state: dict[str, Any]) -> None:
        for field in self._FIELDS:
            values = state.get(field)
            if values is None or len(values) != len(self.ks):
                raise ValueError(f"state[{field!r}] must hold {len(self.ks)} values, one per k in {self.ks}")
            self._state[field] = [total + value for total, value in zip(self._state[field], values)]

    def compute(self) -> dict[int, dict[str, dict[str, float]]]:
        """``{k: {"instance_micro": {...}, "instance_macro": {...}}}``, as :func:`rationale_table`."""
        table = {}
        for column, k in enumerate(self.ks):
            state = {field: values[column] for field, values in self._state.items()}
            if state["instances"] == 0:
                raise RuntimeError("RationaleScores.compute(): no annotation with a true or predicted token was added")
            micro_p, micro_r = _ratio(state["hits"], state["predicted"]), _ratio(state["hits"], state["true"])
            table[k] = {
                "instance_micro": {"p": micro_p, "r": micro_r, "f1": _f1(micro_p, micro_r)},
                "instance_macro": {name: state[f"{name}_sum"] / state["instances"] for name in ("p", "r", "f1")},
            }
        return table


def random_ranking_table(
    annotations: Sequence[Annotation],
    documents: Mapping[str, Sequence[str]],
    ks: Sequence[int] = RATIONALE_TOP_K,
    seed: int = 0,
    seen: Mapping[str, int] | None = None,
) -> dict[int, dict[str, dict[str, float]]]:
    """The table of :meth:`RationaleScores.compute` for a ranking that scores words uniformly at random: the floor
    a method must clear to have found anything. ``documents`` maps each annotation's first docid to its words;
    ``seen`` (docid → count) restricts the draw to each document's first words, those a truncated model reads, so
    that the floor picks from the same words as the methods."""
    rng = np.random.default_rng(seed)
    scores = RationaleScores(ks)
    for annotation in annotations:
        docid = annotation.docids[0]
        word_scores = rng.random(len(documents[docid]))
        if seen is not None:
            word_scores[seen[docid] :] = np.nan
        scores.update(annotation, word_scores)
    return scores.compute()


def eraser_record(
    annotation_id: str,
    docid: str,
    token_indices: Iterable[int],
    classification: str | None = None,
    classification_scores: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One line of ERASER's results file: each token ``i`` becomes the hard rationale ``[i, i + 1)``.

    Duplicate tokens are dropped and the rest sorted, so spans never overlap (ERASER rejects overlapping spans).
    ``classification`` and ``classification_scores`` (a label -> probability map) go together or not at all.
    """
    if (classification is None) != (classification_scores is None):
        raise ValueError(
            f"annotation {annotation_id!r}: give both classification and classification_scores or neither "
            "(ERASER's scorer rejects one without the other)"
        )
    tokens = sorted({int(i) for i in token_indices})
    record: dict[str, Any] = {
        "annotation_id": str(annotation_id),
        "rationales": [
            {
                "docid": str(docid),
                "hard_rationale_predictions": [{"start_token": i, "end_token": i + 1} for i in tokens],
            }
        ],
    }
    if classification is not None:
        record["classification"] = str(classification)
        record["classification_scores"] = {str(label): float(score) for label, score in classification_scores.items()}
    return record


def _check_records(records: Sequence[Mapping[str, Any]]) -> None:
    """What ERASER's ``verify_instances`` and ``_has_hard_predictions`` would reject or silently skip."""
    seen: set[str] = set()
    for number, record in enumerate(records):
        where = f"results record {number}"
        if "annotation_id" not in record or not isinstance(record.get("rationales"), list):
            raise ValueError(f"{where}: needs 'annotation_id' and a list 'rationales', got keys {sorted(record)}")
        if record["annotation_id"] in seen:
            raise ValueError(f"{where}: annotation {record['annotation_id']!r} appears twice; ERASER allows it once")
        seen.add(record["annotation_id"])
        if ("classification" in record) != ("classification_scores" in record):
            raise ValueError(f"{where}: 'classification' and 'classification_scores' go together or not at all")
        if ("classification" in record) != ("classification" in records[0]):
            raise ValueError(f"{where}: ERASER needs 'classification' in every record or in none")
        for rationale in record["rationales"]:
            if "docid" not in rationale:
                raise ValueError(f"{where}: every rationale needs a 'docid'")
            covered: set[int] = set()
            for span in rationale.get("hard_rationale_predictions", []):
                tokens = set(range(span["start_token"], span["end_token"]))
                if tokens & covered:
                    raise ValueError(f"{where}: hard rationale {span} overlaps another one; ERASER rejects overlaps")
                covered |= tokens
    # ERASER looks at the first record only to decide whether there are hard predictions at all.
    first = records[0]["rationales"] if records else []
    if not first or not first[0].get("hard_rationale_predictions"):
        raise ValueError("the first results record has no hard rationale prediction; ERASER would skip token scoring")


def write_eraser_results(path: str | PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Write ``records`` (:func:`eraser_record`) as ERASER's results file: jsonl, one annotation per line.

    The file is the input of ERASER's ``metrics.py --results``; the records are checked against its rules first.
    It is written to a temporary file beside ``path`` and moved into place, so ``path`` is never half-written.
    """
    records = list(records)
    _check_records(records)
    with atomic_path(path) as temporary:
        temporary.write_text("".join(json.dumps(record, sort_keys=True) + "\n" for record in records), encoding="utf-8")


def read_eraser_results(path: str | PathLike) -> list[dict[str, Any]]:
    """The records of an ERASER results file (blank lines skipped); a malformed line names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ERASER results file {path} does not exist")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
    return records


def predictions_from_results(records: Iterable[Mapping[str, Any]]) -> dict[str, set[tuple[str, int]]]:
    """``{annotation_id: {(docid, token), ...}}`` from results records, spans expanded (for :func:`token_prf`)."""
    predictions: dict[str, set[tuple[str, int]]] = {}
    for record in records:
        tokens = predictions.setdefault(str(record["annotation_id"]), set())
        for rationale in record["rationales"]:
            for span in rationale.get("hard_rationale_predictions", []):
                tokens.update((str(rationale["docid"]), t) for t in range(span["start_token"], span["end_token"]))
    return predictions
