"""The stage-1 results file of the perturbation test (spec §5.2), written incrementally and resumable.

Layout, as the original's ``results.hdf5``: gzip datasets that grow along axis 0,

* ``image`` float32 ``[N, 3, H, W]`` in [0, 1], the images before normalisation;
* ``vis`` float32 ``[N, 1, H, W]`` in [0, 1], the min-max maps;
* ``target`` int32 ``[N]``, the ground-truth labels;

plus file attributes: the run's *fingerprint* (``fingerprint_*``: method, options, checkpoint identity, data,
sizes; anything that changes the values), ``completed`` (items written and flushed) and ``finished``.

Each :meth:`ResultsFile.append` writes a batch, then raises ``completed`` and flushes, so after an interruption
(even ``kill -9`` between appends) the file holds ``completed`` whole items; rows beyond it, a batch cut off
mid-write, are dropped on reopening and written again. A run resumes only with the same fingerprint, so the
finished datasets equal those of an uninterrupted run. HDF5 has no journal: a kill during the flush itself can
leave a file h5py cannot open; :class:`ResultsFile` then says so and the file must be deleted.
"""

from __future__ import annotations

import hashlib
import json
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["ResultsFile", "checkpoint_identity", "indices_hash", "open_finished"]

_PREFIX = "fingerprint_"
_HASHED_BYTES = 4 << 20  # enough to tell checkpoints apart without reading 330 MB on every start


def checkpoint_identity(path: str | PathLike) -> str:
    """A cheap identity of a checkpoint file or folder: sizes and the sha256 of each file's first 4 MiB.

    Unlike the path or the modification time, it survives copying the checkpoint elsewhere.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path) if path.is_dir() else ''}:{file.stat().st_size}:".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(_HASHED_BYTES))
    return digest.hexdigest()


def indices_hash(indices: Any) -> str:
    """The sha256 of a subset's indices as int64 (``"all"`` for ``None``, the whole set)."""
    if indices is None:
        return "all"
    return hashlib.sha256(np.ascontiguousarray(np.asarray(indices, dtype=np.int64)).tobytes()).hexdigest()


class ResultsFile:
    """An open results file: created, or reopened to resume when its fingerprint equals ``fingerprint``.

    Args:
        path: the ``.hdf5`` file; its folder is created.
        fingerprint: what determines the values (JSON-serialisable); a file made with a different one is refused.
        image_size: ``(H, W)`` of the images and maps.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | PathLike, fingerprint: dict[str, Any], image_size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.fingerprint = {key: json.dumps(value, sort_keys=True) for key, value in fingerprint.items()}
        height, width = image_size
        if self.path.exists():
            self._file = _open(self.path, "r+")
            self._check_fingerprint()
            for name in ("image", "vis", "target"):
                self._file[name].resize(self.completed, axis=0)  # a batch cut off before `completed` was raised
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = h5py.File(self.path, "w")
            for name, shape, dtype in (
                ("image", (3, height, width), "float32"),
                ("vis", (1, height, width), "float32"),
                ("target", (), "int32"),
            ):
                self._file.create_dataset(
                    name, (0, *shape), dtype=dtype, maxshape=(None, *shape), chunks=(1, *shape), compression="gzip"
                )
            for key, value in self.fingerprint.items():
                self._file.attrs[_PREFIX + key] = value
            self._file.attrs["completed"] = 0
            self._file.attrs["finished"] = False
            self._file.flush()

    @property
    def completed(self) -> int:
        """How many items are written and flushed."""
        return int(self._file.attrs["completed"])

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` was called: every item of the run is in the file."""
        return bool(self._file.attrs["finished"])

    def append(self, images01: np.ndarray, vis: np.ndarray, targets: np.ndarray) -> None:
        """Add a batch: ``images01 [B, 3, H, W]``, ``vis [B, 1, H, W]`` (both in [0, 1]) and ``targets [B]``."""
        if self.finished:
            raise RuntimeError(f"results file {self.path} is finished; nothing more can be appended")
        batch = len(targets)
        if len(images01) != batch or len(vis) != batch:
            raise ValueError(
                f"a batch needs as many images, maps and targets, got {len(images01)}, {len(vis)}, {batch}"
            )
        start = self.completed
        for name, values in (("image", images01), ("vis", vis), ("target", targets)):
            dataset = self._file[name]
            dataset.resize(start + batch, axis=0)
            dataset[start:] = values
        self._file.flush()  # the data must be on disk before `completed` says it is
        self._file.attrs["completed"] = start + batch
        self._file.flush()

    def finish(self) -> None:
        """Mark the file complete; a later run with the same fingerprint then computes nothing."""
        self._file.attrs["finished"] = True
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_fingerprint(self) -> None:
        stored = {key[len(_PREFIX) :]: value for key, value in self._file.attrs.items() if key.startswith(_PREFIX)}
        differences = [
            f"{key} {_shown(stored.get(key))} vs {_shown(self.fingerprint.get(key))}"
            for key in sorted(set(stored) | set(self.fingerprint))
            if stored.get(key) != self.fingerprint.get(key)
        ]
        if differences:
            self._file.close()
            raise ValueError(
                f"results file {self.path} was made by a different run: {'; '.join(differences)} "
                "(the file's vs this run's); delete it or choose another --out"
            )


def open_finished(path: str | PathLike) -> h5py.File:
    """A finished results file, opened read-only; an absent or unfinished one raises with what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist; run ViT/generate_visualizations.py first")
    file = _open(path, "r")
    if not bool(file.attrs.get("finished", False)):
        completed = int(file.attrs.get("completed", 0))
        file.close()
        raise ValueError(
            f"results file {path} is unfinished ({completed} items written); "
            "rerun ViT/generate_visualizations.py with the same flags to complete it"
        )
    return file


def _open(path: Path, mode: str) -> h5py.File:
    try:
        file = h5py.File(path, mode)
    except OSError as error:
        raise OSError(
            f"results file {path} cannot be opened as HDF5 ({error}); it was probably cut off mid-write: delete it"
        ) from error
    missing = [key for key in ("image", "vis", "target") if key not in file] + (
        [] if "completed" in file.attrs else ["attribute completed"]
    )
    if missing:
        file.close()
        raise ValueError(
            f"results file {path} is not a tokenattr results file (missing {', '.join(missing)}); "
            "delete it or choose another --out"
        )
    return file


def _shown(value: str | None) -> str:
    return "(none)" if value is None else str(json.loads(value))
