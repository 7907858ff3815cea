"""ImageNet-segmentation (Guillaumin et al. 2014): the reader of ``gtsegs_ijcv.mat`` and a fixture writer.

The file is MATLAB v7.3, i.e. HDF5, and holds 4,276 images with a binary object mask each
(spec §5.1). MATLAB stores cell arrays as datasets of object references and writes arrays
column-major, so their axes appear reversed in HDF5:

* ``/value/img``: ``[N, 1]`` references; ``f[ref]`` is ``[3, W, H]`` uint8, transposed (2, 1, 0) to ``[H, W, 3]``.
* ``/value/gt``: ``[N, 1]`` references to 1×1 cells; ``f[f[ref][0, 0]]`` is ``[W, H]``, transposed to ``[H, W]``
  with 0 = background, 1 = object.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

from tokenattr.data.transforms import mask_to_tensor, resize_to_tensor

_IMAGES = "/value/img"
_MASKS = "/value/gt"


def _open_gtsegs(path: Path) -> h5py.File:
    """Open and check the layout; errors name the file and what was expected."""
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet-segmentation file {path} does not exist (expected gtsegs_ijcv.mat)")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file; expected gtsegs_ijcv.mat saved as MATLAB v7.3 (HDF5)")
    file = h5py.File(path, "r")
    for name in (_IMAGES, _MASKS):
        if name not in file or not isinstance(file[name], h5py.Dataset):
            file.close()
            raise ValueError(f"{path} has no dataset {name}; expected the gtsegs_ijcv.mat layout ({_IMAGES}, {_MASKS})")
    num_images, num_masks = file[_IMAGES].shape[0], file[_MASKS].shape[0]
    if num_images != num_masks:
        file.close()
        raise ValueError(
            f"{path}: {_IMAGES} has {num_images} entries but {_MASKS} has {num_masks}; expected one mask per image"
        )
    return file


def read_image(file: h5py.File, index: int) -> np.ndarray:
    """Image ``index`` as ``[H, W, 3]`` uint8 (spec §5.1: ``f[f['/value/img'][i, 0]]`` transposed (2, 1, 0))."""
    return np.asarray(file[file[_IMAGES][index, 0]]).transpose(2, 1, 0)


def read_mask(file: h5py.File, index: int) -> np.ndarray:
    """Mask ``index`` as ``[H, W]`` in {0, 1} (spec §5.1: ``f[f[f['/value/gt'][i, 0]][0, 0]]`` transposed)."""
    cell = file[file[_MASKS][index, 0]]
    return np.asarray(file[cell[0, 0]]).transpose(1, 0)


class ImagenetSegmentation(torch.utils.data.Dataset):
    """``gtsegs_ijcv.mat`` as a map-style dataset of ``(image01, mask)``.

    ``image01`` is float32 ``[3, S, S]`` in [0, 1] (Resize((S, S)) without crop, then ToTensor; normalise
    before the model), ``mask`` int64 ``[S, S]`` (Resize((S, S), NEAREST)), with ``S = image_size``.

    The file is checked and measured at construction, then opened lazily on first access in each
    process: an open HDF5 handle cannot be pickled to a DataLoader worker, nor shared across a fork.
    """

    def __init__(self, path: str | PathLike, image_size: int = 224) -> None:
        self.path = Path(path)
        self.image_size = image_size
        with _open_gtsegs(self.path) as file:
            self._length = file[_IMAGES].shape[0]
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return self._length

    def _handle(self) -> h5py.File:
        if self._file is None:
            self._file = _open_gtsegs(self.path)
        return self._file

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored image ``[H, W, 3]`` uint8 and mask ``[H, W]``, before resizing."""
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} is out of range for {self.path} with {self._length} images")
        index %= self._length
        file = self._handle()
        return read_image(file, index), read_mask(file, index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.raw(index)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"{self.path}: image {index} has shape {image.shape} and dtype {image.dtype}; expected [H, W, 3] uint8"
            )
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"{self.path}: mask {index} has shape {mask.shape}; expected the image's {image.shape[:2]}"
            )
        size = (self.image_size, self.image_size)
        return resize_to_tensor(Image.fromarray(image), size), mask_to_tensor(mask, size)

    def close(self) -> None:
        """Close this process's handle; the next access reopens it."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        return state


def write_gtsegs_like(path: str | PathLike, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
    """Write a small file with the layout of ``gtsegs_ijcv.mat``, as a test fixture or a user's own data.

    Args:
        path: the file to create (overwritten).
        images: ``[H_i, W_i, 3]`` uint8 arrays.
        masks: ``[H_i, W_i]`` uint8 arrays in {0, 1}, one per image, of its size.

    Images and masks are stored transposed, as MATLAB writes them, under ``/#refs#``; ``/value/img`` holds a
    reference per image and ``/value/gt`` a reference per image to a 1×1 cell holding a reference to the mask.
    """
    if len(images) != len(masks):
        raise ValueError(f"write_gtsegs_like needs one mask per image, got {len(images)} images and {len(masks)} masks")
    with h5py.File(path, "w") as file:
        refs = file.create_group("#refs#")
        image_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        mask_refs = np.empty((len(images), 1), dtype=h5py.ref_dtype)
        for i, (image, mask) in enumerate(zip(images, masks)):
            image, mask = np.asarray(image), np.asarray(mask)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(
                    f"images[{i}] has shape {image.shape} and dtype {image.dtype}; expected [H, W, 3] uint8"
                )
            if mask.shape != image.shape[:2]:
                raise ValueError(f"masks[{i}] has shape {mask.shape}; expected its image's {image.shape[:2]}")
            image_refs[i, 0] = refs.create_dataset(f"img_{i}", data=image.transpose(2, 1, 0)).ref
            mask_data = refs.create_dataset(f"gt_{i}", data=mask.astype(np.uint8).transpose(1, 0))
            cell = refs.create_dataset(f"gt_cell_{i}", data=np.array([[mask_data.ref]], dtype=h5py.ref_dtype))
            mask_refs[i, 0] = cell.ref
        value = file.create_group("value")
        value.create_dataset("img", data=image_refs)
        value.create_dataset("gt", data=mask_refs)
