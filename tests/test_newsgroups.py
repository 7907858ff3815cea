"""The 20 Newsgroups reader against scikit-learn's own fetcher, on a small archive in the real layout."""

from __future__ import annotations

import io
import random
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
import sklearn.datasets._twenty_newsgroups as sklearn_newsgroups
from conftest import SHARED

from tokenattr.data.newsgroups import NewsgroupsSplit, load_20newsgroups, perturbation_sample

REAL_ARCHIVE = SHARED / "data" / "20news-bydate.tar.gz"
REMOVES = [("headers", "footers", "quotes"), ()]


def _message(group: str, number: int) -> bytes:
    """A news message with headers, an attribution line, quoted lines and (for odd numbers) a signature."""
    lines = [
        f"From: user{number}@example.edu (User {number})",
        f"Subject: Re: question {number} for {group}",
        "Organization: Example University",
        f"Lines: {number % 7 + 5}",
        "",
        f"In article <{number}@example.edu>, other@example.com writes:",
        f"> quoted claim {number}",
        "| another quoted line",
        f"My answer {number} about {group}.",
        "",
        "Second paragraph, said: nothing." if number % 3 == 0 else "Second paragraph.",
    ]
    if number % 2:
        lines += ["", "--", f"User {number}  |  signature line", "Example University"]
    return ("\n".join(lines) + "\n").encode("ascii")


def _fake_corpus() -> dict[str, bytes]:
    """``{"<split folder>/<group>/<id>": bytes}``: three groups, ids whose string and numeric orders differ."""
    groups = {"sci.space": [9999, 10000, 60150, 101], "alt.atheism": [53068, 5307, 49960], "comp.graphics": [38758, 3]}
    corpus = {}
    for split, offset in (("20news-bydate-train", 0), ("20news-bydate-test", 1)):
        for group, numbers in groups.items():
            for number in numbers:
                corpus[f"{split}/{group}/{number + offset}"] = _message(group, number + offset)
    # One Latin-1 message, as 73 real ones are: 0xE9 is not valid UTF-8 here.
    corpus["20news-bydate-test/alt.atheism/53100"] = "Subject: caf\xe9\n\nna\xefve r\xe9sum\xe9\n".encode("latin-1")
    return corpus


@pytest.fixture(scope="module")
def fake_archive(tmp_path_factory) -> Path:
    """The fake corpus as a .tar.gz whose members come in a scrambled order (the reader must sort)."""
    path = tmp_path_factory.mktemp("newsgroups") / "20news-bydate.tar.gz"
    corpus = _fake_corpus()
    names = sorted(corpus)
    random.Random(5).shuffle(names)
    with tarfile.open(path, "w:gz") as tar:
        for folder in ("20news-bydate-train", "20news-bydate-test/alt.atheism"):
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(corpus[name])
            tar.addfile(info, io.BytesIO(corpus[name]))
    return path


@pytest.fixture(scope="module")
def fake_folder(fake_archive, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("extracted")
    with tarfile.open(fake_archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


@pytest.fixture
def sklearn_offline(monkeypatch, fake_archive, tmp_path):
    """scikit-learn's fetcher with its download replaced by a copy of ``fake_archive``; returns its data_home."""

    def copy_archive(remote, dirname=None, **_):
        # Copy, not move: the fetcher deletes the archive after extracting it.
        target = Path(dirname) / remote.filename
        shutil.copyfile(fake_archive, target)
        return target

    monkeypatch.setattr(sklearn_newsgroups, "_fetch_remote", copy_archive)
    return tmp_path / "scikit_learn_data"


def _assert_same_as_sklearn(ours: NewsgroupsSplit, bunch) -> None:
    assert ours.texts == list(bunch.data)
    assert ours.labels.dtype == np.int64
    np.testing.assert_array_equal(ours.labels, bunch.target)
    assert ours.label_names == list(bunch.target_names)
    assert ours.filenames == [str(Path(*Path(name).parts[-3:])) for name in bunch.filenames]


@pytest.mark.parametrize("remove", REMOVES)
@pytest.mark.parametrize("subset", ["train", "test", "all"])
@pytest.mark.parametrize("source", ["archive", "folder"])
def test_same_documents_and_order_as_sklearn(sklearn_offline, fake_archive, fake_folder, source, subset, remove):
    bunch = sklearn.datasets.fetch_20newsgroups(data_home=sklearn_offline, subset=subset, remove=remove)
    ours = load_20newsgroups(subset, fake_archive if source == "archive" else fake_folder, remove=remove)
    _assert_same_as_sklearn(ours, bunch)
    assert len(ours) == {"train": 9, "test": 10, "all": 19}[subset]


def test_fake_corpus_exercises_the_cleaning_and_the_order(fake_archive):
    raw = load_20newsgroups("test", fake_archive, remove=())
    clean = load_20newsgroups("test", fake_archive)
    assert raw.filenames == clean.filenames
    assert raw.label_names == ["alt.atheism", "comp.graphics", "sci.space"]
    # Not sorted: load_files' and the fetcher's shuffles both happened.
    assert raw.filenames != sorted(raw.filenames)
    latin = clean.texts[clean.filenames.index("20news-bydate-test/alt.atheism/53100")]
    assert latin == "na\xefve r\xe9sum\xe9\n"
    text = clean.texts[clean.filenames.index("20news-bydate-test/sci.space/10001")]
    assert "From:" not in text and "> quoted" not in text and "writes:" not in text and "signature" not in text
    assert "My answer 10001 about sci.space." in text


def test_fallback_to_sklearn_fetcher(sklearn_offline, fake_archive, monkeypatch):
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(sklearn_offline))
    assert load_20newsgroups("test").filenames == load_20newsgroups("test", fake_archive).filenames


def test_fallback_failure_says_to_pass_the_archive(monkeypatch):
    def offline(**_):
        raise OSError("no network")

    monkeypatch.setattr(sklearn.datasets, "fetch_20newsgroups", offline)
    with pytest.raises(RuntimeError, match="--data-dir.*20news-bydate.tar.gz|20news-bydate.tar.gz.*--data-dir"):
        load_20newsgroups("test")


def test_bad_inputs(tmp_path, fake_archive):
    with pytest.raises(ValueError, match="subset must be one of"):
        load_20newsgroups("training", fake_archive)
    with pytest.raises(ValueError, match="remove may hold only"):
        load_20newsgroups("test", fake_archive, remove=("signatures",))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_20newsgroups("test", tmp_path / "missing.tar.gz")
    with pytest.raises(ValueError, match="no 20news-bydate-test folder"):
        load_20newsgroups("test", tmp_path)
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello")
    with pytest.raises(ValueError, match="neither a folder nor a tar archive"):
        load_20newsgroups("test", not_tar)
    other_tar = tmp_path / "other.tar"
    with tarfile.open(other_tar, "w") as tar:
        tar.add(not_tar, arcname="notes.txt")
    with pytest.raises(ValueError, match="holds no 20news-bydate-train"):
        load_20newsgroups("train", other_tar)


def test_perturbation_sample_is_the_originals_global_random_sample():
    # The original: random.seed(0); random.sample(range(7532), 3000), on the module-level generator.
    state = random.getstate()
    try:
        random.seed(0)
        original = random.sample(range(7532), 3000)
        after = random.random()
        random.seed(0)
        random.sample(range(7532), 3000)
        ours = perturbation_sample(7532)
        assert random.random() == after  # ours left the global generator alone
    finally:
        random.setstate(state)
    assert ours == original
    assert len(set(ours)) == 3000 and min(ours) >= 0 and max(ours) < 7532
    with pytest.raises(ValueError, match="size must be in"):
        perturbation_sample(10, size=11)


def _real_archive() -> Path:
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"the real 20 Newsgroups archive {REAL_ARCHIVE} is absent (it lives beside the repository)")
    return REAL_ARCHIVE


def test_real_archive_test_split_in_sklearns_order():
    test = load_20newsgroups("test", _real_archive())
    assert len(test) == 7532 and len(test.labels) == 7532
    assert len(test.label_names) == 20 and test.label_names[0] == "alt.atheism"
    # Pinned from scikit-learn 1.9.1's fetch_20newsgroups(subset="test", remove=...) run on this archive.
    assert test.filenames[:3] == [
        "20news-bydate-test/rec.autos/103343",
        "20news-bydate-test/comp.windows.x/67445",
        "20news-bydate-test/alt.atheism/53603",
    ]
    assert test.labels[:3].tolist() == [7, 5, 0]
    first = perturbation_sample(len(test))[:3]
    assert [test.filenames[i] for i in first] == [
        "20news-bydate-test/comp.windows.x/67411",
        "20news-bydate-test/sci.electronics/54029",
        "20news-bydate-test/comp.windows.x/68081",
    ]


def test_real_archive_sizes():
    both = load_20newsgroups("all", _real_archive(), remove=())
    splits = [name.split("/")[0] for name in both.filenames]
    assert splits.count("20news-bydate-train") == 11314 and splits.count("20news-bydate-test") == 7532
    assert len(both.label_names) == 20 and sorted(set(both.labels.tolist())) == list(range(20))
