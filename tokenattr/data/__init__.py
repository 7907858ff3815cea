"""Readers and generators of the data the evaluations and the demo use. They import no model code."""

from .imagenet import ImageNetValidation, devkit_labels, flat_files, folder_samples
from .imagenet_seg import ImagenetSegmentation, write_gtsegs_like
from .transforms import load_rgb, mask_to_tensor, normalize, resize_to_tensor

__all__ = [
    "ImageNetValidation",
    "ImagenetSegmentation",
    "devkit_labels",
    "flat_files",
    "folder_samples",
    "load_rgb",
    "mask_to_tensor",
    "normalize",
    "resize_to_tensor",
    "write_gtsegs_like",
]
