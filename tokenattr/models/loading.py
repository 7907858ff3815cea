"""Reading checkpoints from disk without running code from them, and loading them strictly (DESIGN §7).

Family files (``vit.py`` ...) turn a state dict in a known layout into ours; this module only reads files
and checks that a converted state dict fits a model exactly.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

StateDict = dict[str, Tensor]

# ".pth.tar": torch.save files named as PyTorch's ImageNet example names them (MoCo v3's linear-vit-b-300ep.pth.tar)
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pth.tar", ".safetensors", ".npz")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Training checkpoints nest the weights; MAE uses "model", many others "state_dict".
NESTING_KEYS = ("model", "state_dict", "module")


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model: missing or unexpected keys, or tensors of the wrong shape."""


def read_state_dict(path: str | Path) -> StateDict:
    """Read a ``.pth``/``.pt``/``.bin``, ``.safetensors`` or ``.npz`` file into ``{name: tensor}``.

    Pickles are read with ``weights_only=True``; a TorchScript archive (OpenAI CLIP's ``.pt``) is read for its
    tensors (its TorchScript code is never run); nested training checkpoints (``{"model": ...}``) and the
    ``module.`` prefix of DistributedDataParallel are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    suffix = ".pth.tar" if path.name.lower().endswith(".pth.tar") else path.suffix.lower()
    if suffix not in STATE_DICT_SUFFIXES:
        raise ValueError(f"unsupported checkpoint file {path.name!r}; expected one of {', '.join(STATE_DICT_SUFFIXES)}")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif suffix == ".npz":
            with np.load(path) as arrays:
                state = {name: torch.from_numpy(np.array(arrays[name])) for name in arrays.files}
        elif _is_torchscript_archive(path):
            with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; its archives still load
                warnings.simplefilter("ignore", DeprecationWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the readers' own messages do not name the file
        raise ValueError(f"could not read {path} as a {suffix} checkpoint: {error}") from error
    return unwrap_state_dict(state, source=str(path))


def _is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives are zip files holding ``<name>/constants.pkl`` and compiled code, unlike
    ``torch.save`` files."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def unwrap_state_dict(state: Mapping, source: str = "the checkpoint") -> StateDict:
    """Return the flat ``{name: tensor}`` inside a possibly nested training checkpoint."""
    while isinstance(state, Mapping) and not any(isinstance(v, Tensor) for v in state.values()):
        nested = next((key for key in NESTING_KEYS if isinstance(state.get(key), Mapping)), None)
        if nested is None:
            raise ValueError(f"{source} holds no tensors; top-level keys: {sorted(state)[:10]}")
        state = state[nested]
    if not isinstance(state, Mapping):
        raise ValueError(f"{source} is not a state dict (got {type(state).__name__})")
    tensors = {name: value for name, value in state.items() if isinstance(value, Tensor)}
    if all(name.startswith("module.") for name in tensors):
        tensors = {name[len("module.") :]: value for name, value in tensors.items()}
    return tensors


def read_hf_config(folder: str | Path) -> dict:
    """The ``config.json`` of a Hugging Face model folder."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    return json.loads(config_file.read_text())


def read_hf_weights(folder: str | Path) -> StateDict:
    """The weights of a Hugging Face model folder, single-file or sharded."""
    folder = Path(folder)
    for name in HF_WEIGHT_FILES:
        if (folder / name).is_file():
            return read_state_dict(folder / name)
        index_file = folder / f"{name}.index.json"
        if index_file.is_file():
            shards = sorted(set(json.loads(index_file.read_text())["weight_map"].values()))
            state: StateDict = {}
            for shard in shards:
                state.update(read_state_dict(folder / shard))
            return state
    raise FileNotFoundError(f"{folder} has a config.json but no weights; expected one of {', '.join(HF_WEIGHT_FILES)}")


def load_strict(model: nn.Module, state: StateDict, source: str = "the checkpoint") -> None:
    """Copy ``state`` into ``model``; raise :class:`CheckpointMismatchError` naming every key that doesn't fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name}: checkpoint {tuple(state[name].shape)}, model {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(state))
        if state[name].shape != expected[name].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if items:
                shown = ", ".join(items[:8]) + (f", … ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointMismatchError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
