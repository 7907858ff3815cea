"""ImageNet validation readers for the perturbation tests (spec §5.2).

Two layouts are read:

* **class-per-folder** (torchvision's ``<root>/val``): ``root/n01440764/ILSVRC2012_val_00000293.JPEG``.
  Classes are the sorted folder names (WordNet ids), and samples come in torchvision ``ImageFolder``
  order: sorted classes, then sorted files within each class. ``pert_index.npy`` indexes this order.
* **flat** (the devkit's): every ``ILSVRC2012_val_*.JPEG`` in one folder, sorted by name, with labels
  given explicitly; :func:`devkit_labels` makes them from the devkit's ground-truth file.

Labels are indices into the sorted WordNet ids, the training label order of torchvision and timm.
:func:`imagenet_class_names` names them in that order, and :func:`zero_shot_prompts` makes CLIP's prompts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch

from tokenattr.data.transforms import load_rgb, resize_to_tensor

# torchvision's IMG_EXTENSIONS, matched case-insensitively as ImageFolder does.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CLASS_NAMES_PATH = Path(__file__).resolve().parent.parent / "assets" / "imagenet_class_names.json"
# The original's template (spec §5.6), without a full stop; it filled in torchvision's tuples of synonyms.
ZERO_SHOT_TEMPLATE = "a photo of a {}"


def imagenet_class_names(distinct: bool = True) -> list[str]:
    """The 1,000 clean ImageNet class names of CLIP's zero-shot evaluation; entry ``i`` names label ``i``.

    Args:
        distinct: CLIP's list calls classes 657 and 744 both "missile", and 836 and 837 both "sunglasses",
            so their prompts coincide and the second of each pair can never win an argmax. By default 744 is
            "projectile" and 836 "sunglass" (their WordNet names); ``False`` gives CLIP's list verbatim.

    The list and its source are in ``tokenattr/assets/imagenet_class_names.json``.
    """
    with open(CLASS_NAMES_PATH, encoding="utf-8") as file:
        asset = json.load(file)
    names = list(asset["class_names"])
    if distinct:
        for index, name in asset["distinct_names"].items():
            names[int(index)] = name
    return names


def zero_shot_prompts(class_names: Sequence[str] | None = None, template: str = ZERO_SHOT_TEMPLATE) -> list[str]:
    """One prompt per class: ``template`` with the class name in place of its ``{}``.

    Args:
        class_names: defaults to :func:`imagenet_class_names`.
        template: a string with exactly one ``{}``; the default is the original's "a photo of a {}" (CLIP's
            own evaluation uses "a photo of a {}." among others).
    """
    if template.count("{}") != 1:
        raise ValueError(f"template must hold exactly one '{{}}' for the class name, got {template!r}")
    if class_names is None:
        class_names = imagenet_class_names()
    return [template.replace("{}", name) for name in class_names]


def folder_samples(root: str | PathLike) -> tuple[list[Path], list[int], list[str]]:
    """Files, labels and class names of a class-per-folder tree, in ``ImageFolder`` order.

    Returns:
        ``(paths, labels, classes)``: ``labels[i]`` indexes ``classes`` (the sorted folder names).
        Files are found recursively under each class folder, as ``ImageFolder`` does.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet validation folder {root} does not exist")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise ValueError(
            f"{root} has no class folders; expected root/<wnid>/<image> (torchvision's val layout). "
            "For the flat devkit layout pass labels= (see devkit_labels)"
        )
    paths, labels = [], []
    for label, name in enumerate(classes):
        for folder, _, names in sorted(os.walk(root / name, followlinks=True)):
            for file_name in sorted(names):
                if file_name.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(Path(folder) / file_name)
                    labels.append(label)
    if not paths:
        raise ValueError(f"{root} has class folders but no image files with extensions {IMAGE_EXTENSIONS}")
    return paths, labels, classes


def flat_files(root: str | PathLike) -> list[Path]:
    """The ``ILSVRC2012_val_*.JPEG`` files directly in ``root``, sorted by name (devkit order)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet validation folder {root} does not exist")
    files = sorted(root.glob("ILSVRC2012_val_*.JPEG"))
    if not files:
        raise ValueError(f"{root} holds no ILSVRC2012_val_*.JPEG files; expected the flat devkit layout")
    return files


def devkit_labels(ground_truth: str | PathLike, id_wnids: str | PathLike) -> list[int]:
    """Labels of the flat validation set from the devkit, as indices into the sorted WordNet ids.

    Args:
        ground_truth: ``ILSVRC2012_validation_ground_truth.txt``: one 1-based ILSVRC2012_ID per line,
            in file-name order.
        id_wnids: a text file with one WordNet id per line in **ILSVRC2012_ID order** (line k is the
            class of ID k, as in the devkit's ``meta.mat``), the first word of each line being the id.
            This is not the sorted order of ``LOC_synset_mapping.txt``; the sorted order is derived here.
    """
    wnids = [line.split()[0] for line in Path(id_wnids).read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{id_wnids} lists a WordNet id twice; expected one distinct id per ILSVRC2012_ID")
    sorted_index = {wnid: index for index, wnid in enumerate(sorted(wnids))}
    labels = []
    for line_number, line in enumerate(Path(ground_truth).read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if not line.isdigit() or not 1 <= int(line) <= len(wnids):
            raise ValueError(
                f"{ground_truth} line {line_number}: {line!r} is not an ILSVRC2012_ID in 1..{len(wnids)} "
                f"(the number of ids in {id_wnids})"
            )
        labels.append(sorted_index[wnids[int(line) - 1]])
    return labels


class ImageNetValidation(torch.utils.data.Dataset):
    """ImageNet validation images as ``(image01, label)``: float32 ``[3, S, S]`` in [0, 1] and an int.

    Preprocessing is the ViT tests' Resize((S, S)) without crop, then ToTensor (spec §6); normalise
    before the model. Any PIL-readable file works, greyscale and CMYK JPEGs included.

    Args:
        root: the folder of WordNet-id class folders (torchvision's ``<root>/val``), or, with ``labels``,
            the flat folder of ``ILSVRC2012_val_*.JPEG`` files.
        indices: optional subset, indices into the full sorted sample list (e.g. ``np.load("pert_index.npy")``);
            the dataset then yields those samples in the given order.
        image_size: ``S``.
        labels: flat layout only: one label per sorted file (see :func:`devkit_labels`).
    """

    def __init__(
        self,
        root: str | PathLike,
        indices: Sequence[int] | np.ndarray | None = None,
        image_size: int = 224,
        labels: Sequence[int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.image_size = image_size
        if labels is None:
            self.paths, self.labels, self.classes = folder_samples(self.root)
        else:
            self.paths, self.labels, self.classes = flat_files(self.root), [int(label) for label in labels], None
            if len(self.labels) != len(self.paths):
                raise ValueError(
                    f"labels has {len(self.labels)} entries but {self.root} holds {len(self.paths)} "
                    "ILSVRC2012_val_*.JPEG files; expected one label per file"
                )
        total = len(self.paths)
        if indices is None:
            self.indices = list(range(total))
        else:
            index_array = np.asarray(indices)
            if index_array.ndim != 1 or (index_array.size and index_array.dtype.kind not in "iu"):
                raise ValueError(
                    "indices must be a 1-D sequence of integers, "
                    f"got shape {index_array.shape}, dtype {index_array.dtype}"
                )
            bad = index_array[(index_array < 0) | (index_array >= total)]
            if bad.size:
                raise IndexError(
                    f"indices must lie in [0, {total}) for the {total} images under {self.root}; "
                    f"{bad.size} do not, e.g. {bad[:5].tolist()}"
                )
            self.indices = index_array.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        sample = self.indices[position]
        image = load_rgb(self.paths[sample])
        return resize_to_tensor(image, (self.image_size, self.image_size)), self.labels[sample]
