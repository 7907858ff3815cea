"""Metrics over (input, relevance, label) that know nothing about models."""

from .perturbation import (
    PERTURBATION_FRACTIONS,
    PerturbationCurve,
    PerturbationLogits,
    perturb,
    run_perturbation,
    top1_hits,
)
from .segmentation import ImageSegmentationScores, SegmentationMetrics, image_segmentation_scores

__all__ = [
    "PERTURBATION_FRACTIONS",
    "ImageSegmentationScores",
    "PerturbationCurve",
    "PerturbationLogits",
    "SegmentationMetrics",
    "image_segmentation_scores",
    "perturb",
    "run_perturbation",
    "top1_hits",
]
