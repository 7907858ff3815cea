"""Metrics over (input, relevance, label) that know nothing about models."""

from .perturbation import (
    PERTURBATION_FRACTIONS,
    PerturbationCurve,
    PerturbationLogits,
    perturb,
    run_perturbation,
    top1_hits,
)
from .rationale import (
    RATIONALE_TOP_K,
    RationaleScores,
    eraser_record,
    predictions_at_k,
    predictions_from_results,
    random_ranking_table,
    rationale_table,
    read_eraser_results,
    token_prf,
    truth_from_annotations,
    write_eraser_results,
)
from .segmentation import ImageSegmentationScores, SegmentationMetrics, image_segmentation_scores
from .text_perturbation import MOVIES_STEPS, NEWSGROUPS_STEPS, mask_top_tokens, run_text_perturbation

__all__ = [
    "MOVIES_STEPS",
    "NEWSGROUPS_STEPS",
    "RATIONALE_TOP_K",
    "RationaleScores",
    "eraser_record",
    "mask_top_tokens",
    "predictions_at_k",
    "predictions_from_results",
    "random_ranking_table",
    "rationale_table",
    "read_eraser_results",
    "run_text_perturbation",
    "token_prf",
    "truth_from_annotations",
    "write_eraser_results",
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
