"""The BERT experiment scripts end to end, in-process, on tiny files in the real formats: a random BERT saved as a
Hugging Face folder, an ERASER movies folder and a 20news-bydate folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from conftest import load_script

import tokenattr
from tokenattr.data.newsgroups import load_20newsgroups, perturbation_sample
from tokenattr.evaluation import MOVIES_STEPS, NEWSGROUPS_STEPS

WORDS = (
    "a gripping film the acting is superb truly dull utterly and far too long plot boring great fun movie "
    "my answer about question second paragraph said nothing space orbit rocket god belief faith image pixel "
    "graphics render sci comp alt atheism"
).split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *dict.fromkeys(WORDS)]
MAX_LENGTH = 48


def _bert_folder(folder: Path, num_labels: int, seed: int = 0, classifier: bool = True) -> Path:
    """A tiny random BERT (a classifier, or a bare encoder) with its WordPiece tokenizer, as a Hugging Face folder."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=MAX_LENGTH,
        num_labels=num_labels,
    )
    model_class = transformers.BertForSequenceClassification if classifier else transformers.BertModel
    model = model_class(config).eval()
    with torch.no_grad():  # spread the logits, so that removing tokens changes predictions
        for name, param in model.named_parameters():
            if param.dim() > 1:
                param.normal_(0, 0.3)
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


def _eraser_line(docid: str, label: str) -> str:
    content = {"annotation_id": docid, "classification": label, "evidences": [], "query": "sentiment?"}
    return json.dumps(content) + "\n"


@pytest.fixture(scope="module")
def movies(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("movies")
    data = root / "eraser"
    (data / "docs").mkdir(parents=True)
    docs = {
        "posR_000.txt": ("POS", "a gripping film .\nthe acting is superb , truly great fun .\n"),
        "negR_000.txt": ("NEG", "dull .\nutterly dull and far too long , boring plot .\n"),
        "posR_001.txt": ("POS", "great movie .\n" + "superb fun film . " * 20 + "\n"),  # longer than MAX_LENGTH
        "negR_001.txt": ("NEG", "boring , boring movie .\n"),
    }
    for docid, (_, text) in docs.items():
        (data / "docs" / docid).write_text(text)
    (data / "test.jsonl").write_text("".join(_eraser_line(d, label) for d, (label, _) in list(docs.items())[:2]))
    (data / "train.jsonl").write_text(_eraser_line("posR_001.txt", "POS"))
    (data / "val.jsonl").write_text(_eraser_line("negR_001.txt", "NEG"))
    return data, _bert_folder(root / "model", num_labels=2)


GROUPS = ("alt.atheism", "comp.graphics", "sci.space")
TOPICS = {"alt.atheism": "god belief faith", "comp.graphics": "image pixel graphics render", "sci.space": "space orbit"}


def _message(group: str, number: int) -> str:
    body = " ".join([TOPICS[group]] * (1 + number % 4))
    return f"From: user{number}@example.edu\nSubject: question {number}\n\nmy answer about {body} .\n"


@pytest.fixture(scope="module")
def newsgroups(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("20ng")
    for split, count in (("20news-bydate-train", 8), ("20news-bydate-test", 4)):
        for group in GROUPS:
            (root / split / group).mkdir(parents=True)
            for number in range(count):
                (root / split / group / str(100 + number)).write_text(_message(group, number))
    return root


def _reference_accuracy(folder: Path, texts: list[str], labels: list[int], max_length: int) -> float:
    """transformers' own model and tokenizer, one document at a time, unpadded: the clean accuracy."""
    model = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(folder)
    hits = 0
    with torch.no_grad():
        for text, label in zip(texts, labels):
            encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            hits += int(model(**encoded).logits.argmax(-1).item() == label)
    return hits / len(texts)


def _check_curve(result: dict, steps: tuple[float, ...]) -> None:
    assert result["steps"] == list(steps) and len(result["accuracy"]) == len(steps)
    assert all(0 <= value <= 1 for value in [result["clean_accuracy"], *result["accuracy"]])
    assert 0 <= result["auc_original"] <= 1 and 0 <= result["auc_chefer"] <= 1


def test_movie_perturbation_script(movies, tmp_path, capsys):
    data, model = movies
    script = load_script("bert_pertub_movie", folder="BERT")
    common = ["--data-dir", str(data), "--checkpoint", str(model), "--max-length", str(MAX_LENGTH)]
    common += ["--batch-size", "3", "--ig-steps", "2"]
    with pytest.warns(UserWarning, match="1 of 4 documents exceed 48 tokens"):
        positive = script.main(["--method", "ours", *common, "--out", str(tmp_path / "pos.json")])
    negative = script.main(["--method", "ours-h", "--neg", *common, "--out", str(tmp_path / "neg.json")])
    assert json.loads((tmp_path / "pos.json").read_text()) == json.loads(json.dumps(positive))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["neg.json", "pos.json"]  # no temporary file left
    assert "--neg" in negative["command"] and negative["settings"]["count"] == 4
    pos, neg = positive["results"]["ours-h"], negative["results"]["ours-h"]
    _check_curve(pos, MOVIES_STEPS)
    assert pos["positive"] and not neg["positive"] and pos["count"] == 4
    assert positive["settings"]["splits"] == ["test", "train", "val"]
    # the documents in split order, labels NEG = 0, POS = 1, judged by transformers' own model
    texts = [(data / "docs" / d).read_text().split() for d in ("posR_000.txt", "negR_000.txt")]
    texts += [(data / "docs" / d).read_text().split() for d in ("posR_001.txt", "negR_001.txt")]
    reference = _reference_accuracy(model, [" ".join(t) for t in texts], [1, 0, 1, 0], MAX_LENGTH)
    assert pos["clean_accuracy"] == neg["clean_accuracy"] == reference
    assert "AUC" in capsys.readouterr().out


def test_movie_perturbation_all_methods_and_limit(movies, tmp_path):
    data, model = movies
    script = load_script("bert_pertub_movie", folder="BERT")
    flags = ["--method", "all", "--data-dir", str(data), "--checkpoint", str(model), "--max-length", str(MAX_LENGTH)]
    flags += ["--limit", "2", "--splits", "test", "--steps", "0.5", "1.0", "--out", str(tmp_path / "a.json")]
    output = script.main(flags)
    assert list(output["results"]) == tokenattr.cli.text_methods()
    for result in output["results"].values():
        _check_curve(result, (0.5, 1.0))
        assert result["count"] == 2
        assert result["accuracy"][-1] == output["results"]["rollout"]["accuracy"][-1]  # all tokens gone: one answer


def test_newsgroups_perturbation_script(newsgroups, tmp_path):
    model = _bert_folder(tmp_path / "model", num_labels=3, seed=1)
    script = load_script("bert_pertub_20ng", folder="BERT")
    common = ["--data-dir", str(newsgroups), "--checkpoint", str(model), "--max-length", str(MAX_LENGTH)]
    common += ["--sample-size", "10", "--batch-size", "4"]
    results = {
        neg: script.main(["--method", "rollout", *common, *(["--neg"] if neg else []), "--out", str(tmp_path / "r")])
        for neg in (False, True)
    }
    test = load_20newsgroups("test", newsgroups)
    sample = perturbation_sample(len(test), 10, 0)
    reference = _reference_accuracy(model, [test.texts[i] for i in sample], [test.labels[i] for i in sample], 48)
    pos, neg = results[False]["results"]["rollout"], results[True]["results"]["rollout"]
    for result in (pos, neg):
        _check_curve(result, NEWSGROUPS_STEPS)
        assert result["accuracy"][0] == result["clean_accuracy"] == reference  # s = 0 removes nothing
        assert len(result["step_accuracy"]) == len(NEWSGROUPS_STEPS) - 1  # the curve keeps s = 0 out
    # k = int(48·1.0): every position is gone in both tests, so both see the same all-[PAD] inputs
    assert pos["accuracy"][-1] == neg["accuracy"][-1]
    assert results[True]["settings"]["sample_size"] == 10 and results[True]["settings"]["max_length"] == 48


def test_finetune_then_perturb(newsgroups, tmp_path, monkeypatch):
    encoder = _bert_folder(tmp_path / "encoder", num_labels=2, classifier=False)
    script = load_script("finetune_20ng", folder="BERT")
    saved = {}
    original_save = script.save_hf_folder

    def keep_model(model, folder, tokenizer=None):
        saved["logits"] = _logits(model, tokenizer)
        return original_save(model, folder, tokenizer)

    monkeypatch.setattr(script, "save_hf_folder", keep_model)
    out = tmp_path / "finetuned"
    flags = ["--data-dir", str(newsgroups), "--checkpoint", str(encoder), "--out", str(out), "--max-length", "32"]
    with pytest.warns(UserWarning, match="without a classifier"):
        record = script.main([*flags, "--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--eval-limit", "6"])
    assert record["epoch_losses"][-1] < record["epoch_losses"][0]
    assert record["settings"]["train_count"] == 24 and record["test_count"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder", "finetuned"]  # no temporary folder left
    assert json.loads((out / "training.json").read_text()) == json.loads(json.dumps(record))
    loaded = tokenattr.load_model(out)
    assert loaded.config.class_names == list(GROUPS)
    torch.testing.assert_close(_logits(loaded, tokenattr.models.load_tokenizer(out)), saved["logits"])

    # the same seed gives the same model; the perturbation script reads the folder as it is
    again = script.main([*flags, "--epochs", "3", "--batch-size", "8", "--lr", "1e-3", "--eval-limit", "6"])
    assert again["step_losses"] == record["step_losses"]
    perturb = load_script("bert_pertub_20ng", folder="BERT")
    output = perturb.main(
        ["--method", "ours-t", "--data-dir", str(newsgroups), "--checkpoint", str(out), "--max-length", "32"]
        + ["--sample-size", "4", "--ig-steps", "2", "--out", str(tmp_path / "ours.json")]
    )
    assert output["results"]["ours-t"]["count"] == 4


def _logits(model, tokenizer) -> torch.Tensor:
    batch = tokenattr.models.encode_texts(tokenizer, ["god belief .", "space orbit rocket and image"], 32)
    with torch.no_grad():
        return model(**batch)


def test_scripts_reject_bad_flags(movies, newsgroups, tmp_path, capsys):
    data, model = movies
    movie = load_script("bert_pertub_movie", folder="BERT")
    newsgroups_script = load_script("bert_pertub_20ng", folder="BERT")
    finetune = load_script("finetune_20ng", folder="BERT")
    movie_flags = ["--data-dir", str(data), "--checkpoint", str(model)]
    cases = [
        (movie, ["--method", "ours", "--data-dir", str(data), "--checkpoint", str(tmp_path / "absent")], "not exist"),
        (movie, ["--method", "ours", "--data-dir", str(tmp_path / "none"), "--checkpoint", str(model)], "not a folder"),
        (movie, ["--method", "bogus", *movie_flags], "valid methods"),
        (movie, ["--method", "lrp", *movie_flags], "explains pixels"),
        (movie, ["--method", "rollout", "--ig-steps", "2", *movie_flags], "--ig-steps does not apply to rollout"),
        (movie, ["--method", "rollout", "--batch-size", "0", *movie_flags], "--batch-size must be >= 1"),
        (movie, ["--method", "rollout", "--out", str(tmp_path), *movie_flags], "is a folder"),
        (
            newsgroups_script,
            ["--method", "ours", "--data-dir", str(tmp_path / "no.tar.gz"), "--checkpoint", str(model)],
            "does not exist",
        ),
        (finetune, ["--data-dir", str(newsgroups), "--checkpoint", str(tmp_path / "absent")], "not a folder"),
    ]
    for script, argv, message in cases:
        with pytest.raises(SystemExit):
            script.main(argv)
        assert message in capsys.readouterr().err, argv

    # a state dict file with no tokenizer beside it needs --tokenizer
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state = state_dir / "model.pth"
    torch.save(transformers.BertForSequenceClassification.from_pretrained(model).state_dict(), state)
    with pytest.raises(SystemExit):
        newsgroups_script.main(["--method", "ours", "--data-dir", str(newsgroups), "--checkpoint", str(state)])
    assert "pass --tokenizer" in capsys.readouterr().err
    # the 2-class movie model cannot be a 3-group classifier
    with pytest.raises(ValueError, match="classifier"):
        newsgroups_script.main(
            [
                "--method",
                "rollout",
                "--data-dir",
                str(newsgroups),
                "--checkpoint",
                str(state),
                "--tokenizer",
                str(model),
            ]
            + ["--sample-size", "2", "--max-length", "32", "--out", str(tmp_path / "x.json")]
        )


# --- the rationale test and the movie classifier's training, on synthetic reviews with planted rationales ------


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic ERASER folder (small) and a tiny random BERT over its vocabulary, as a Hugging Face folder."""
    from tokenattr.data.synthetic_text import synthetic_vocabulary, write_synthetic_eraser

    root = tmp_path_factory.mktemp("reviews")
    data = write_synthetic_eraser(root / "eraser", num_train=48, num_val=16, num_test=12, seed=3)
    vocab = synthetic_vocabulary()
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
        num_labels=2,
    )
    encoder = transformers.BertModel(config)  # a pretrained encoder has no classifier
    with torch.no_grad():  # spread the weights, so that tokens and cue words are told apart from the start
        for param in encoder.parameters():
            if param.dim() > 1:
                param.normal_(0, 0.3)
    encoder.save_pretrained(root / "encoder")
    (root / "encoder" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(str(root / "encoder" / "vocab.txt")).save_pretrained(root / "encoder")
    return data, root / "encoder"


def test_train_movies_classifier_keeps_the_best_epoch_and_saves_a_loadable_folder(reviews, tmp_path):
    data, encoder = reviews
    script = load_script("train_movies_classifier", folder="BERT")
    flags = ["--data-dir", str(data), "--checkpoint", str(encoder), "--out", str(tmp_path / "clf")]
    summary = script.main([*flags, "--epochs", "3", "--batch-size", "8", "--lr", "3e-3", "--train-blocks", "1"])
    losses = [epoch["train_loss"] for epoch in summary["history"]]
    assert losses[-1] < losses[0] and summary["trained_blocks"] == 1
    assert summary["val_accuracy"] == max(epoch["val_accuracy"] for epoch in summary["history"])
    model = tokenattr.load_model(tmp_path / "clf")
    assert model.config.class_names == ["NEG", "POS"]
    # only the top block, the pooler and the classifier were trained; the lower block is the pretrained one
    with pytest.warns(UserWarning, match="without a classifier"):
        start = tokenattr.load_model(encoder)
    for name, value in model.state_dict().items():
        if not name.startswith("classifier"):  # drawn afresh, so not comparable
            trained = name.startswith(("encoder.blocks.1.", "pooler"))
            assert torch.equal(value, start.state_dict()[name]) != trained, name
    # the recorded test accuracy is the saved model's
    from tokenattr.data import MOVIE_LABELS, load_annotations, load_documents, words_to_text
    from tokenattr.models import encode_texts, load_tokenizer

    annotations = load_annotations(data, "test")
    documents = load_documents(data, [a.docids[0] for a in annotations])
    batch = encode_texts(load_tokenizer(tmp_path / "clf"), [words_to_text(documents[a.docids[0]]) for a in annotations])
    with torch.no_grad():
        predicted = model(**batch).argmax(-1)
    labels = torch.tensor([MOVIE_LABELS[a.label] for a in annotations])
    assert summary["test_accuracy"] == pytest.approx((predicted == labels).float().mean().item())
    assert json.loads((tmp_path / "clf" / "training.json").read_text())["test_accuracy"] == summary["test_accuracy"]


def test_rationale_pipeline_writes_eraser_files_that_score_to_its_table(reviews, tmp_path):
    from tokenattr.data import load_annotations
    from tokenattr.evaluation import predictions_from_results, read_eraser_results, token_prf, truth_from_annotations

    data, encoder = reviews
    script = load_script("bert_pipeline", folder="BERT")
    flags = ["--checkpoint", str(encoder), "--data-dir", str(data), "--method", "ours,rollout", "--steps", "3"]
    flags += ["--batch-size", "5", "--out", str(tmp_path)]
    with pytest.warns(UserWarning, match="without a classifier"):
        summaries = script.main(flags)
    assert list(summaries) == ["ours-h", "rollout"]
    truth = truth_from_annotations(load_annotations(data, "test"))
    for method, summary in summaries.items():
        assert summary["count"] == 12 and summary["truncated_documents"] == 0
        for k in (5, 40):
            records = read_eraser_results(tmp_path / method / f"identifier_results_{k}.json")
            assert len(records) == 12
            rescored = token_prf(truth, predictions_from_results(records))
            for kind in ("instance_micro", "instance_macro"):
                assert rescored[kind] == pytest.approx(summary["token_f1"][k][kind], rel=1e-12)
        assert json.loads((tmp_path / f"{method}.json").read_text())["method"] == method
    table = (tmp_path / "token_f1.md").read_text()
    assert "| ours-h |" in table and "| rollout |" in table and "| random ranking |" in table and "k=80" in table
    # a rerun of the same command reuses what it finished: no method runs again, the numbers are the same
    (tmp_path / "rollout" / "identifier_results_5.json").unlink()
    again = script.main(flags)
    assert not (tmp_path / "rollout" / "identifier_results_5.json").exists()
    assert again["rollout"]["token_f1"] == summaries["rollout"]["token_f1"]


def test_rationale_pipeline_refuses_pixel_methods_and_missing_inputs(reviews, tmp_path):
    data, encoder = reviews
    script = load_script("bert_pipeline", folder="BERT")
    for flags, message in (
        (["--checkpoint", str(encoder), "--method", "lrp"], "explains image pixels"),
        (["--checkpoint", str(tmp_path / "nope")], "does not exist"),
        (["--checkpoint", str(encoder), "--data-dir", str(tmp_path / "nope")], "ERASER's movies folder"),
        (["--checkpoint", str(encoder), "--method", "best"], "unknown method 'best'"),
    ):
        with pytest.raises(SystemExit):
            script.main([*flags, "--data-dir", str(data)] if "--data-dir" not in flags else flags)
