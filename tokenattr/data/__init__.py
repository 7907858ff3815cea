"""Readers and generators of the data the evaluations and the demo use. They import no model code."""

from .eraser import (
    ERASER_SPLITS,
    MOVIE_LABELS,
    Annotation,
    Evidence,
    load_annotations,
    load_document,
    load_documents,
    top_k_words,
    word_scores_from_pieces,
    words_to_text,
)
from .imagenet import ImageNetValidation, devkit_labels, flat_files, folder_samples
from .imagenet_seg import ImagenetSegmentation, write_gtsegs_like
from .newsgroups import NEWSGROUPS_REMOVE, NewsgroupsSplit, load_20newsgroups, perturbation_sample
from .transforms import load_rgb, mask_to_tensor, normalize, resize_to_tensor

__all__ = [
    "ERASER_SPLITS",
    "MOVIE_LABELS",
    "NEWSGROUPS_REMOVE",
    "Annotation",
    "Evidence",
    "NewsgroupsSplit",
    "load_20newsgroups",
    "load_annotations",
    "load_document",
    "load_documents",
    "perturbation_sample",
    "top_k_words",
    "word_scores_from_pieces",
    "words_to_text",
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
