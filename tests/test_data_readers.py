"""Readers of gtsegs_ijcv.mat and ImageNet validation, and the PIL + torch preprocessing, on files the tests write."""

from __future__ import annotations

import ast
import hashlib
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image

from tokenattr.data.imagenet import ImageNetValidation, devkit_labels, folder_samples
from tokenattr.data.imagenet_seg import ImagenetSegmentation, write_gtsegs_like
from tokenattr.data.transforms import load_rgb, mask_to_tensor, normalize, resize_to_tensor

DATA_PACKAGE = Path(__file__).resolve().parents[1] / "tokenattr" / "data"


def _random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture
def seg_file(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (25, 50), (33, 33)]
    images = [_random_image(rng, h, w) for h, w in sizes]
    masks = [(rng.random((h, w)) > 0.5).astype(np.uint8) for h, w in sizes]
    path = tmp_path / "gtsegs_small.mat"
    write_gtsegs_like(path, images, masks)
    return path, images, masks


# --- transforms --------------------------------------------------------------------------------------------------


def test_resize_to_tensor_matches_hand_bilinear():
    # PIL's bilinear 2 -> 4 samples source positions 0.25, 0.75, 1.25, 1.75 (in pixel units, edge-clamped):
    # output weights on (first, second) source pixel are (1, 0), (.75, .25), (.25, .75), (0, 1).
    weights = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    grey = np.array([[0, 160], [240, 80]], dtype=np.float64)  # multiples of 16 keep every output an integer
    expected = weights @ grey @ weights.T  # [4, 4]
    image = Image.fromarray(np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2))
    out = resize_to_tensor(image, (4, 4))
    assert out.shape == (3, 4, 4) and out.dtype == torch.float32
    for channel in out:
        np.testing.assert_allclose(channel.numpy() * 255, expected, atol=1e-4)


def test_resize_to_tensor_equals_pil_resize_and_is_in_unit_range():
    rng = np.random.default_rng(1)
    image = Image.fromarray(_random_image(rng, 7, 5))
    out = resize_to_tensor(image, (6, 11))
    assert out.shape == (3, 6, 11)
    reference = np.asarray(image.resize((11, 6), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), reference, atol=1e-7)
    assert out.min() >= 0 and out.max() <= 1


def test_resize_to_tensor_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        resize_to_tensor(Image.new("L", (4, 4)))


def test_normalize_half_maps_unit_range_to_plus_minus_one():
    images = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])  # [2, 3, 2, 2]
    out = normalize(images, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.equal(out[0], torch.full((3, 2, 2), -1.0)) and torch.equal(out[1], torch.ones(3, 2, 2))
    assert torch.equal(normalize(images[1], [0.5] * 3, [0.5] * 3), out[1])
    per_channel = normalize(torch.ones(3, 1, 1), (0.0, 0.5, 1.0), (1.0, 0.25, 2.0))
    assert per_channel.flatten().tolist() == [1.0, 2.0, 0.0]
    with pytest.raises(ValueError, match="shape"):
        normalize(torch.ones(2, 2), (0.5,), (0.5,))


def test_mask_to_tensor_nearest_keeps_labels():
    mask = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    out = mask_to_tensor(mask, (4, 4))
    assert out.dtype == torch.int64
    assert out.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert torch.equal(mask_to_tensor(mask.astype(np.float64), (4, 4)), out)  # MATLAB doubles
    with pytest.raises(ValueError, match="non-integer"):
        mask_to_tensor(np.full((2, 2), 0.5), (4, 4))


# --- gtsegs_ijcv.mat --------------------------------------------------------------------------------------------


def test_written_file_has_matlab_reference_layout(seg_file):
    path, _, _ = seg_file
    with h5py.File(path, "r") as file:
        img_refs, gt_refs = file["/value/img"], file["/value/gt"]
        assert img_refs.shape == gt_refs.shape == (3, 1)
        assert h5py.check_dtype(ref=img_refs.dtype) is h5py.Reference
        assert h5py.check_dtype(ref=gt_refs.dtype) is h5py.Reference
        stored = file[img_refs[1, 0]]
        assert stored.shape == (3, 50, 25)  # MATLAB's column-major [H, W, 3] reads back as [3, W, H]
        cell = file[gt_refs[1, 0]]
        assert cell.shape == (1, 1) and h5py.check_dtype(ref=cell.dtype) is h5py.Reference
        assert file[cell[0, 0]].shape == (50, 25)


def test_segmentation_reads_back_what_was_written(seg_file):
    path, images, masks = seg_file
    dataset = ImagenetSegmentation(path, image_size=32)
    assert len(dataset) == 3
    for index in range(3):
        image, mask = dataset.raw(index)
        assert image.dtype == np.uint8 and np.array_equal(image, images[index])
        assert np.array_equal(mask, masks[index])
    image01, label = dataset[1]
    assert image01.shape == (3, 32, 32) and image01.dtype == torch.float32
    assert 0 <= image01.min() and image01.max() <= 1
    assert label.shape == (32, 32) and label.dtype == torch.int64
    assert set(label.unique().tolist()) == {0, 1}
    expected = np.asarray(Image.fromarray(masks[1]).resize((32, 32), Image.Resampling.NEAREST))
    assert np.array_equal(label.numpy(), expected)
    assert torch.equal(dataset[-2][0], image01)
    with pytest.raises(IndexError, match="out of range"):
        dataset[3]
    dataset.close()


def test_segmentation_after_pickling_and_in_a_dataloader(seg_file):
    path, _, _ = seg_file
    dataset = ImagenetSegmentation(path, image_size=16)
    first = dataset[0]  # opens the handle, which must not travel with the pickle
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy._file is None
    assert all(torch.equal(a, b) for a, b in zip(copy[0], first))
    batches = list(torch.utils.data.DataLoader(copy, batch_size=2, num_workers=0))
    assert [tuple(images.shape) for images, _ in batches] == [(2, 3, 16, 16), (1, 3, 16, 16)]
    assert batches[0][1].shape == (2, 16, 16) and batches[0][1].dtype == torch.int64
    assert torch.equal(batches[0][0][0], first[0])
    dataset.close()
    copy.close()


def test_segmentation_errors_name_the_file(tmp_path):
    missing = tmp_path / "absent.mat"
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        ImagenetSegmentation(missing)
    not_hdf5 = tmp_path / "v5.mat"
    not_hdf5.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(ValueError, match="v5.mat.*not an HDF5"):
        ImagenetSegmentation(not_hdf5)
    no_gt = tmp_path / "no_gt.mat"
    with h5py.File(no_gt, "w") as file:
        file.create_dataset("/value/img", data=np.zeros((1, 1)))
    with pytest.raises(ValueError, match="no_gt.mat has no dataset /value/gt"):
        ImagenetSegmentation(no_gt)


def test_writer_rejects_mismatched_masks(tmp_path):
    image = np.zeros((4, 5, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="masks\\[0\\]"):
        write_gtsegs_like(tmp_path / "bad.mat", [image], [np.zeros((5, 4), dtype=np.uint8)])


# --- ImageNet validation ----------------------------------------------------------------------------------------


@pytest.fixture
def imagenet_folder(tmp_path):
    """3 classes × 2 images, written out of order; one greyscale JPEG, one CMYK JPEG, one palette PNG."""
    rng = np.random.default_rng(2)
    root = tmp_path / "val"
    files = {
        "n02/b.JPEG": ("RGB", "JPEG"),
        "n02/a.JPEG": ("L", "JPEG"),
        "n10/z.JPEG": ("CMYK", "JPEG"),
        "n10/y.png": ("P", "PNG"),
        "n01/b.JPEG": ("RGB", "JPEG"),
        "n01/a.JPEG": ("RGBA", "PNG"),  # a PNG with a .JPEG name still decodes: PIL reads the content
    }
    for name, (mode, file_format) in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_random_image(rng, 9, 12)).convert(mode).save(root / name, format=file_format)
    (root / "n01" / "notes.txt").write_text("not an image")  # ImageFolder skips other extensions
    return root


def test_folder_order_and_labels_are_image_folders(imagenet_folder):
    paths, labels, classes = folder_samples(imagenet_folder)
    assert classes == ["n01", "n02", "n10"]
    relative = [p.relative_to(imagenet_folder).as_posix() for p in paths]
    assert relative == ["n01/a.JPEG", "n01/b.JPEG", "n02/a.JPEG", "n02/b.JPEG", "n10/y.png", "n10/z.JPEG"]
    assert labels == [0, 0, 1, 1, 2, 2]


def test_imagenet_validation_decodes_every_mode(imagenet_folder):
    dataset = ImageNetValidation(imagenet_folder, image_size=20)
    assert len(dataset) == 6
    for position in range(6):
        image01, label = dataset[position]
        assert image01.shape == (3, 20, 20) and image01.dtype == torch.float32
        assert 0 <= image01.min() and image01.max() <= 1
        assert label == position // 2
    grey, _ = dataset[2]  # n02/a.JPEG, saved as "L": its three channels are equal
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_imagenet_validation_subset_and_bad_indices(imagenet_folder):
    full = ImageNetValidation(imagenet_folder, image_size=8)
    subset = ImageNetValidation(imagenet_folder, indices=np.array([5, 0, 3]), image_size=8)
    assert len(subset) == 3
    assert [subset[i][1] for i in range(3)] == [2, 0, 1]
    assert torch.equal(subset[0][0], full[5][0])
    with pytest.raises(IndexError, match=r"\[0, 6\).*\[6, -1\]"):
        ImageNetValidation(imagenet_folder, indices=[0, 6, -1])
    with pytest.raises(ValueError, match="integers"):
        ImageNetValidation(imagenet_folder, indices=[0.5])


def test_undecodable_file_is_named(imagenet_folder):
    broken = imagenet_folder / "n02" / "c_broken.JPEG"
    broken.write_bytes(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="c_broken.JPEG"):
        load_rgb(broken)
    dataset = ImageNetValidation(imagenet_folder)
    with pytest.raises(ValueError, match="c_broken.JPEG"):
        dataset[4]


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageNetValidation(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no class folders.*labels="):
        ImageNetValidation(tmp_path)


def test_flat_layout_with_devkit_labels(tmp_path):
    rng = np.random.default_rng(4)
    for number in (2, 1, 3):
        Image.fromarray(_random_image(rng, 6, 6)).save(tmp_path / f"ILSVRC2012_val_{number:08d}.JPEG")
    # Devkit IDs are not in sorted-wnid order: ID 1 = n03, ID 2 = n01, ID 3 = n02.
    (tmp_path / "id_wnids.txt").write_text("n03 truck\nn01 fish\nn02 bird\n")
    (tmp_path / "ground_truth.txt").write_text("1\n3\n2\n")
    labels = devkit_labels(tmp_path / "ground_truth.txt", tmp_path / "id_wnids.txt")
    assert labels == [2, 1, 0]
    dataset = ImageNetValidation(tmp_path, labels=labels, image_size=8)
    assert [p.name for p in dataset.paths] == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in (1, 2, 3)]
    assert [dataset[i][1] for i in range(3)] == [2, 1, 0]
    with pytest.raises(ValueError, match="2 entries.*3"):
        ImageNetValidation(tmp_path, labels=[0, 1])
    (tmp_path / "bad_gt.txt").write_text("1\n4\n")
    with pytest.raises(ValueError, match="bad_gt.txt line 2"):
        devkit_labels(tmp_path / "bad_gt.txt", tmp_path / "id_wnids.txt")


# --- shared data and package boundaries -------------------------------------------------------------------------


def test_pert_index_file():
    path = SHARED / "data" / "pert_index.npy"
    if not path.is_file():
        pytest.skip(f"{path} is absent (it lives beside the repository, in ../shared)")
    indices = np.load(path)
    assert indices.shape == (5000,) and np.unique(indices).size == 5000
    assert indices.min() >= 0 and indices.max() < 50000
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith("7973fd5b")


def test_data_package_imports_no_model_or_method_code():
    for source in sorted(DATA_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for name in names:
                assert not name.startswith(("tokenattr.models", "tokenattr.methods", "..models", "..methods")), (
                    f"{source.name} imports {name}"
                )
