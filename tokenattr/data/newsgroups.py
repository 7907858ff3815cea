"""20 Newsgroups reader for the BERT perturbation test (spec §5.5), in scikit-learn's document order.

The original scripts read the test split with ``sklearn.datasets.fetch_20newsgroups(subset='test',
remove=('headers', 'footers', 'quotes'))`` and then explained ``random.seed(0); random.sample(range(7532), 3000)``
of its documents. Reproducing those 3,000 documents needs the fetcher's exact order, which is built in three steps
(scikit-learn 1.3-1.9, ``load_files`` and ``fetch_20newsgroups``):

1. per split folder (``20news-bydate-train`` or ``-test``): groups are the sorted sub-folder names (label = index),
   files within a group are sorted by name (as strings: ``"10000" < "9999"``), and the list is shuffled by
   ``np.random.RandomState(0)`` (``load_files``' default ``random_state``); bytes are decoded as Latin-1;
2. ``subset='all'`` concatenates the shuffled train and test lists;
3. the result is shuffled again by ``np.random.RandomState(42)`` (the fetcher's default), then cleaned with
   scikit-learn's ``strip_newsgroup_header`` / ``_footer`` / ``_quoting``, in that order.

:func:`load_20newsgroups` does the same from the "bydate" archive ``20news-bydate.tar.gz`` (read member by member,
nothing is extracted) or from a folder holding the two extracted split folders, so it needs no network and no
scikit-learn cache. :func:`perturbation_sample` gives the original's 3,000 indices into that order.
"""

from __future__ import annotations

import os
import random
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NEWSGROUPS_REMOVE", "NewsgroupsSplit", "load_20newsgroups", "perturbation_sample"]

# The cleaning the original scripts asked for; also the only kinds scikit-learn knows.
NEWSGROUPS_REMOVE: tuple[str, ...] = ("headers", "footers", "quotes")
SPLIT_FOLDERS = {"train": "20news-bydate-train", "test": "20news-bydate-test"}
SUBSETS = ("train", "test", "all")
# scikit-learn's seeds: load_files(random_state=0) per split, then fetch_20newsgroups(random_state=42).
LOAD_FILES_SEED = 0
FETCH_SEED = 42


@dataclass
class NewsgroupsSplit:
    """Documents of one subset in scikit-learn's order.

    Attributes:
        texts: the (cleaned) messages.
        labels: ``[N]`` int64, indices into ``label_names``.
        label_names: the sorted newsgroup names, e.g. ``"alt.atheism"``.
        filenames: ``"<split folder>/<group>/<id>"`` of each document, relative to the archive root.
    """

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    filenames: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def load_20newsgroups(
    subset: str, data_dir: str | os.PathLike | None = None, remove: Iterable[str] = NEWSGROUPS_REMOVE
) -> NewsgroupsSplit:
    """The 20 Newsgroups ``subset`` exactly as ``fetch_20newsgroups(subset=subset, remove=remove)`` returns it.

    Args:
        subset: ``"train"`` (11,314 documents), ``"test"`` (7,532) or ``"all"`` (both, 18,846).
        data_dir: the ``20news-bydate.tar.gz`` archive, or a folder holding its extracted ``20news-bydate-train``
            and ``20news-bydate-test`` folders. ``None`` calls scikit-learn's fetcher, which needs the network or
            its own cache (``~/scikit_learn_data``).
        remove: any of ``"headers"``, ``"footers"``, ``"quotes"``; ``()`` keeps the raw messages.

    Same documents, labels and order as scikit-learn, whichever source (see the module docstring).
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    remove = tuple(remove)
    unknown = [kind for kind in remove if kind not in NEWSGROUPS_REMOVE]
    if unknown:
        raise ValueError(f"remove may hold only {NEWSGROUPS_REMOVE}, got {unknown}")
    if data_dir is None:
        return _fetch_with_sklearn(subset, remove)

    splits = ("train", "test") if subset == "all" else (subset,)
    groups, read = _open_source(Path(data_dir), splits)
    shuffled = [_load_files_order(split, groups[split]) for split in splits]
    label_names = shuffled[-1][2]  # the fetcher keeps the test split's names for "all"
    if subset == "all" and shuffled[0][2] != label_names:
        raise ValueError(
            f"{data_dir}: the train and test folders hold different groups "
            f"({shuffled[0][2]} vs {label_names}); expected the same newsgroups in both"
        )
    filenames = [name for names, _, _ in shuffled for name in names]
    labels = np.concatenate([split_labels for _, split_labels, _ in shuffled])
    order = np.arange(len(filenames))
    np.random.RandomState(FETCH_SEED).shuffle(order)
    filenames = [filenames[i] for i in order]
    cleaners = _cleaners(remove)
    texts = []
    for name in filenames:
        text = read(name).decode("latin-1")
        for clean in cleaners:
            text = clean(text)
        texts.append(text)
    return NewsgroupsSplit(texts=texts, labels=labels[order], label_names=label_names, filenames=filenames)


def perturbation_sample(num_docs: int, size: int = 3000, seed: int = 0) -> list[int]:
    """The documents the original 20NG perturbation test explains: ``random.seed(seed); random.sample(...)``.

    ``random.Random(seed)`` draws what the module-level generator draws after ``random.seed(seed)``, without
    touching the global state. With the defaults and ``num_docs=7532`` (the test split) this is the original's
    3,000 indices into :func:`load_20newsgroups`'s order.
    """
    if not 0 <= size <= num_docs:
        raise ValueError(f"size must be in [0, num_docs={num_docs}], got {size}")
    return random.Random(seed).sample(range(num_docs), size)


def _fetch_with_sklearn(subset: str, remove: tuple[str, ...]) -> NewsgroupsSplit:
    from sklearn.datasets import fetch_20newsgroups

    try:
        bunch = fetch_20newsgroups(subset=subset, remove=remove)
    except Exception as error:  # URLError, HTTPError, OSError, ...: all mean "no data here"
        raise RuntimeError(
            "scikit-learn could not fetch 20 Newsgroups (it needs the network or its cache in ~/scikit_learn_data): "
            f"{type(error).__name__}: {error}. Pass the 20news-bydate.tar.gz archive instead (--data-dir / data_dir=)"
        ) from error
    filenames = ["/".join(Path(name).parts[-3:]) for name in bunch.filenames]
    return NewsgroupsSplit(
        texts=list(bunch.data),
        labels=np.asarray(bunch.target, dtype=np.int64),
        label_names=list(bunch.target_names),
        filenames=filenames,
    )


def _open_source(path: Path, splits: tuple[str, ...]) -> tuple[dict[str, dict[str, list[str]]], Callable]:
    """``(groups, read)``: per split, each group's file names; ``read("<split>/<group>/<id>")`` gives the bytes."""
    if not path.exists():
        raise FileNotFoundError(f"20 Newsgroups data {path} does not exist; expected 20news-bydate.tar.gz or a folder")
    if path.is_dir():
        groups = {split: _folder_groups(path, SPLIT_FOLDERS[split]) for split in splits}
        return groups, lambda name: (path / name).read_bytes()
    if not tarfile.is_tarfile(path):
        raise ValueError(f"{path} is neither a folder nor a tar archive; expected 20news-bydate.tar.gz")
    groups, contents = _archive_groups(path, splits)
    return groups, contents.__getitem__


def _folder_groups(root: Path, split_folder: str) -> dict[str, list[str]]:
    # load_files takes the sub-folders of the split folder as groups, and every entry of a group as a document.
    split_path = root / split_folder
    if not split_path.is_dir():
        raise ValueError(
            f"{root} has no {split_folder} folder; expected the extracted archive's layout "
            f"{root}/{split_folder}/<group>/<id>"
        )
    groups = {entry.name: sorted(os.listdir(entry.path)) for entry in os.scandir(split_path) if entry.is_dir()}
    for group, names in groups.items():
        nested = [name for name in names if (split_path / group / name).is_dir()]
        if nested:
            raise ValueError(f"{split_path / group} holds folders {nested[:3]}; expected only message files")
    return groups


def _archive_groups(archive: Path, splits: tuple[str, ...]) -> tuple[dict[str, dict[str, list[str]]], dict]:
    """One pass over the archive: the groups of each wanted split and the bytes of each of their files."""
    wanted = {SPLIT_FOLDERS[split]: split for split in splits}
    groups: dict[str, dict[str, list[str]]] = {split: {} for split in splits}
    contents: dict[str, bytes] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = Path(member.name).parts
            parts = parts[1:] if parts[:1] == (".",) else parts
            if len(parts) < 2 or parts[0] not in wanted:
                continue
            split_groups = groups[wanted[parts[0]]]
            if member.isdir():
                if len(parts) == 2:
                    split_groups.setdefault(parts[1], [])
                continue
            if len(parts) == 2:
                continue  # a file beside the groups: load_files takes only folders as groups
            if len(parts) != 3 or not member.isfile():
                raise ValueError(
                    f"{archive}: member {member.name} is not a message file <split>/<group>/<id>; "
                    "expected the 20news-bydate layout"
                )
            split_groups.setdefault(parts[1], []).append(parts[2])
            contents["/".join(parts)] = tar.extractfile(member).read()
    for split, split_groups in groups.items():
        if not split_groups:
            raise ValueError(
                f"{archive} holds no {SPLIT_FOLDERS[split]}/<group>/<id> files; expected the 20news-bydate archive"
            )
        for names in split_groups.values():
            names.sort()
    return groups, contents


def _load_files_order(split: str, groups: dict[str, list[str]]) -> tuple[list[str], np.ndarray, list[str]]:
    """``load_files``' order of one split: sorted groups, sorted files, shuffled by RandomState(0)."""
    label_names = sorted(groups)
    filenames = [f"{SPLIT_FOLDERS[split]}/{group}/{name}" for group in label_names for name in groups[group]]
    labels = np.array([label for label, group in enumerate(label_names) for _ in groups[group]], dtype=np.int64)
    order = np.arange(len(filenames))
    np.random.RandomState(LOAD_FILES_SEED).shuffle(order)
    return [filenames[i] for i in order], labels[order], label_names


def _cleaners(remove: tuple[str, ...]) -> list[Callable[[str], str]]:
    """scikit-learn's own cleaning heuristics, in the fetcher's order whatever the order of ``remove``."""
    # Imported here: scikit-learn's datasets package takes a second to import, and only this reader needs it.
    from sklearn.datasets._twenty_newsgroups import (
        strip_newsgroup_footer,
        strip_newsgroup_header,
        strip_newsgroup_quoting,
    )

    steps = {"headers": strip_newsgroup_header, "footers": strip_newsgroup_footer, "quotes": strip_newsgroup_quoting}
    return [steps[kind] for kind in NEWSGROUPS_REMOVE if kind in remove]
