"""The paper's evaluation protocols: a model, a method and batches of data in, the metrics out.

This is the one place where models, methods and the model-free metrics of :mod:`tokenattr.evaluation` meet, so
that the experiment scripts and the demo stay thin:

* :func:`segmentation_test` (spec §5.1): explain the predicted class, up-sample to an image map, score it
  against the object mask with :class:`~tokenattr.evaluation.SegmentationMetrics` (:func:`segmentation_metrics`
  returns that accumulator, to add up the shards of several processes);
* :func:`perturbation_test` (spec §5.2): explain the predicted (``vis_class="top"``) or the ground-truth class
  (``"target"``), remove the most (positive) or least (negative) relevant pixels step by step, and accumulate
  top-1 hits against the labels in a :class:`~tokenattr.evaluation.PerturbationCurve`;
* :func:`clip_perturbation_test` (spec §5.6): the CLIP version: explain the predicted (zero-shot arg-max) or the
  ground-truth class's prompt, replace the most (positive) or least (negative) relevant pixels by the mean colour
  at levels 0, 0.1, ..., 1.0, and accumulate zero-shot hits against the labels in the same curve;
* :func:`text_perturbation_test` (spec §5.4, §5.5): the BERT version: explain the ground-truth class, replace the
  most (positive) or least (negative) relevant tokens by [PAD] step by step, and accumulate the same curve;
* :func:`rationale_test` (spec §5.3): explain the ground-truth class of each ERASER document, map word-piece
  relevance to words, and score the top-k words against the human rationales
  (:class:`~tokenattr.evaluation.RationaleScores`).

Images come in [0, 1] (``images01 [B, 3, H, W]``); ``normalize`` turns them into the model's input
(ViT-B: ``(x - 0.5) / 0.5``), so pixels are removed before normalisation, as in the original.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tokenattr.data.eraser import Annotation, top_k_words, word_scores_from_pieces, words_to_text
from tokenattr.evaluation import (
    RATIONALE_TOP_K,
    PerturbationCurve,
    RationaleScores,
    SegmentationMetrics,
    run_perturbation,
    run_text_perturbation,
    top1_hits,
)
from tokenattr.methods import explain, get_method
from tokenattr.models.bert import encode_texts
from tokenattr.viz import to_image_map

__all__ = [
    "CLIP_PERTURBATION_FRACTIONS",
    "VIS_CLASSES",
    "RationaleResult",
    "clip_perturbation_test",
    "perturbation_test",
    "rationale_test",
    "segmentation_metrics",
    "segmentation_test",
    "text_perturbation_test",
    "versions",
]

VIS_CLASSES = ("top", "target")
# The CLIP script's levels after 0 (spec §5.6), as literals: k = int(H·W·p) must see the original's floats.
CLIP_PERTURBATION_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_TEXT_CHUNK = 256  # prompts per text-tower forward when computing the class prompts' features


def segmentation_test(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    method: str,
    *,
    normalize: Callable[[Tensor], Tensor],
    image_size: int | tuple[int, int] | None = None,
    progress: bool = True,
    **method_options,
) -> dict:
    """The ImageNet-segmentation test of ``method`` on ``model`` over ``batches``.

    Args:
        model: a model from :func:`tokenattr.load_model`.
        batches: any iterable (e.g. a ``DataLoader`` over
            :class:`~tokenattr.data.ImagenetSegmentation`) of ``(images01 [B, 3, H, W] in [0, 1],
            masks [B, H, W] in {0, 1})``.
        method: a name or alias from ``tokenattr.METHODS``; the predicted class is explained (``target=None``),
            as in the original.
        normalize: ``images01 -> model input`` (ViT-B: ``(x - 0.5) / 0.5``).
        image_size: the map size ``H`` or ``(H, W)``; default (and it must equal) the masks' size.
        progress: show a tqdm progress bar.
        **method_options: the method's options (``start_layer``, ``steps``, ...), see :func:`tokenattr.explain`.

    Returns :meth:`SegmentationMetrics.compute` (pixel accuracy, IoUs, mIoU, mAP as fractions, ``count``) plus
    ``method``, the canonical method name. :func:`segmentation_metrics` is the same loop returning the
    accumulator (e.g. to add up the shards of several processes before computing).
    """
    name = get_method(method).name
    metrics = segmentation_metrics(
        model, batches, name, normalize=normalize, image_size=image_size, progress=progress, **method_options
    )
    if metrics.count == 0:
        raise ValueError("segmentation_test got no batches; expected (images01, masks) pairs")
    return {**metrics.compute(), "method": name}


def segmentation_metrics(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    method: str,
    *,
    normalize: Callable[[Tensor], Tensor],
    image_size: int | tuple[int, int] | None = None,
    progress: bool = True,
    metrics: SegmentationMetrics | None = None,
    **method_options,
) -> SegmentationMetrics:
    """The loop of :func:`segmentation_test`: ``batches`` scored into ``metrics`` (a new one by default).

    Same arguments as :func:`segmentation_test`; returns the accumulator, not yet computed, and accepts no
    batches (an empty accumulator: e.g. a process whose shard of the data is empty).
    """
    from tqdm.auto import tqdm

    name = get_method(method).name
    device = next(model.parameters()).device
    metrics = SegmentationMetrics() if metrics is None else metrics
    for images01, masks in tqdm(batches, desc=f"segmentation {name}", unit="batch", disable=not progress):
        size = tuple(masks.shape[-2:])
        if image_size is not None and _hw(image_size) != size:
            raise ValueError(f"image_size {image_size} does not match the masks' size {size}")
        relevance = explain(model, normalize(images01.to(device)), name, target=None, **method_options)
        metrics.update(to_image_map(relevance, size).cpu(), masks.cpu())
    return metrics


def perturbation_test(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    method: str,
    *,
    normalize: Callable[[Tensor], Tensor],
    vis_class: str = "top",
    positive: bool = True,
    progress: bool = True,
    **method_options,
) -> dict:
    """The perturbation test of ``method`` on ``model`` over ``batches``.

    Args:
        model: a model from :func:`tokenattr.load_model`.
        batches: any iterable of ``(images01 [B, 3, H, W] in [0, 1], labels [B])``, labels the ground truth.
        method: a name or alias from ``tokenattr.METHODS``.
        normalize: ``images01 -> model input``; predictions on perturbed images go through it too.
        vis_class: ``"top"`` explains the predicted class, ``"target"`` the ground-truth label.
        positive: remove the most relevant pixels first (lower accuracy = better map) or, if ``False``, the
            least relevant first (higher = better).
        progress: show a tqdm progress bar.
        **method_options: the method's options, see :func:`tokenattr.explain`.

    Hits are always counted against the ground-truth labels. Returns :meth:`PerturbationCurve.compute`
    (clean and per-step accuracy, ``auc_original``, ``auc_chefer``, ``count``) plus ``method``, ``vis_class``
    and ``positive``.
    """
    from tqdm.auto import tqdm

    name = get_method(method).name
    if vis_class not in VIS_CLASSES:
        raise ValueError(f"vis_class must be one of {', '.join(VIS_CLASSES)}, got {vis_class!r}")
    device = next(model.parameters()).device

    def predict_fn(images01: Tensor) -> Tensor:
        return model(normalize(images01))

    curve = PerturbationCurve()
    kind = "positive" if positive else "negative"
    for images01, labels in tqdm(batches, desc=f"{kind} perturbation {name}", unit="batch", disable=not progress):
        images01, labels = images01.to(device), torch.as_tensor(labels).to(device)
        target = labels if vis_class == "target" else None
        relevance = explain(model, normalize(images01), name, target=target, **method_options)
        maps = to_image_map(relevance, tuple(images01.shape[-2:]))
        logits = run_perturbation(images01, maps, predict_fn, positive=positive)
        curve.update(top1_hits(logits.clean, labels), top1_hits(logits.steps, labels))
    if curve.count == 0:
        raise ValueError("perturbation_test got no batches; expected (images01, labels) pairs")
    return {**curve.compute(), "method": name, "vis_class": vis_class, "positive": positive}


def clip_perturbation_test(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    method: str,
    *,
    input_ids: Tensor,
    normalize: Callable[[Tensor], Tensor],
    vis_class: str = "top",
    positive: bool = True,
    curve: PerturbationCurve | None = None,
    after_batch: Callable[[PerturbationCurve], None] | None = None,
    progress: bool = True,
    **method_options,
) -> dict:
    """The zero-shot perturbation test of ``method`` on a CLIP model over ``batches`` (spec §5.6).

    Args:
        model: a CLIP model from :func:`tokenattr.load_model`.
        batches: any iterable of ``(images01 [B, 3, S, S] in [0, 1], labels [B])``: images after CLIP's resize and
            crop (:func:`~tokenattr.data.transforms.clip_image_to_tensor`), labels indexing ``input_ids``' rows.
        method: a name or alias from ``tokenattr.METHODS`` that applies to CLIP.
        input_ids: ``[C, context]``, one tokenised prompt per class (``zero_shot_prompts`` then
            ``tokenize_prompts``); their text features are computed once.
        normalize: ``images01 -> pixel_values`` with the model's mean and std.
        vis_class: ``"top"`` explains the prompt that matches the clean image best (zero-shot arg-max over all
            ``C``), ``"target"`` the ground-truth class's prompt.
        positive: remove the most relevant pixels first (lower accuracy = better map) or, if ``False``, the least
            relevant first (higher = better).
        curve: the counts of images already done, to continue (a resumed run); a curve over
            :data:`CLIP_PERTURBATION_FRACTIONS` is accumulated into it, a new one by default.
        after_batch: called with the curve after each batch (e.g. to save it for resuming).
        progress: show a tqdm progress bar.
        **method_options: the method's options, see :func:`tokenattr.explain`; those not given take CLIP's
            defaults (the last block for Ours-H, Ours-T and generic attribution).

    Each image is explained against its own prompt alone (row i of the explained ``input_ids`` is image i's).
    Pixels are removed *after* normalisation, set to 0 there, i.e. to the dataset's mean colour, as the original
    CLIP script does (the ViT test sets them to black before normalising; spec §9.19), k = int(S·S·p) at each
    level p of :data:`CLIP_PERTURBATION_FRACTIONS`. A hit is a zero-shot arg-max over all ``C`` prompts equal to
    the label.

    Returns :meth:`PerturbationCurve.compute` (``clean_accuracy``, ``step_accuracy`` per fraction, ``count``, and
    ``auc_original`` = ``auc_chefer``, equal since the last level is 1) plus ``method``, ``method_options`` (as
    used, defaults included), ``vis_class``, ``positive``, ``levels`` (0, 0.1, ..., 1), ``accuracy`` (one value
    per level, the clean accuracy at 0) and ``auc_percent``: the area under ``100 · accuracy`` over ``levels``,
    the number the original script saves (which first rounds each accuracy to 0.01 %, moving it by < 0.005).
    """
    from tqdm.auto import tqdm

    name = get_method(method).name
    if vis_class not in VIS_CLASSES:
        raise ValueError(f"vis_class must be one of {', '.join(VIS_CLASSES)}, got {vis_class!r}")
    if getattr(model, "family", None) != "clip":
        raise ValueError(f"clip_perturbation_test needs a CLIP model, got {type(model).__name__}")
    curve = PerturbationCurve(CLIP_PERTURBATION_FRACTIONS) if curve is None else curve
    if curve.fractions != CLIP_PERTURBATION_FRACTIONS:
        raise ValueError(f"curve must be over {CLIP_PERTURBATION_FRACTIONS}, got {curve.fractions}")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    with torch.no_grad():
        text_features = torch.cat([model.text_features(chunk) for chunk in input_ids.split(_TEXT_CHUNK)])
    given = {key: value for key, value in method_options.items() if value is not None}
    options = {**model.method_defaults(name), **given}

    def zero_shot(pixel_values: Tensor) -> Tensor:  # [B, C]
        return model.similarity(model.image_features(pixel_values), text_features)

    kind = "positive" if positive else "negative"
    for images01, labels in tqdm(batches, desc=f"CLIP {kind} perturbation {name}", unit="batch", disable=not progress):
        labels = torch.as_tensor(labels).to(device)
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < len(input_ids):
            raise ValueError(f"labels must index the {len(input_ids)} prompts, got {labels.tolist()}")
        pixel_values = normalize(images01.to(device))
        if vis_class == "target":
            prompts = labels
        else:
            with torch.no_grad():
                prompts = zero_shot(pixel_values).argmax(dim=-1)
        inputs = {"pixel_values": pixel_values, "input_ids": input_ids[prompts]}
        relevance = explain(model, inputs, name, target=torch.arange(len(labels), device=device), **options)
        maps = to_image_map(relevance, tuple(pixel_values.shape[-2:]))
        logits = run_perturbation(pixel_values, maps, zero_shot, curve.fractions, positive=positive, fill=0.0)
        curve.update(top1_hits(logits.clean, labels), top1_hits(logits.steps, labels))
        if after_batch is not None:
            after_batch(curve)
    if curve.count == 0:
        raise ValueError("clip_perturbation_test got no batches; expected (images01, labels) pairs")
    scores = curve.compute()
    return {
        **scores,
        "method": name,
        "method_options": options,
        "vis_class": vis_class,
        "positive": positive,
        "levels": [0.0, *scores["fractions"]],
        "accuracy": [scores["clean_accuracy"], *scores["step_accuracy"]],
        "auc_percent": 100 * scores["auc_chefer"],
    }


def text_perturbation_test(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor, Tensor]],
    method: str,
    *,
    fractions: Sequence[float],
    length: int | None = None,
    positive: bool = True,
    vis_class: str = "target",
    pad_id: int = 0,
    progress: bool = True,
    **method_options,
) -> dict:
    """The BERT perturbation test of ``method`` on a text classifier (spec §5.4 movie reviews, §5.5 20 Newsgroups).

    Args:
        model: a text model from :func:`tokenattr.load_model` (BERT family).
        batches: any iterable of ``(input_ids [B, T], attention_mask [B, T], labels [B])``, labels the ground truth.
        method: a name or alias from ``tokenattr.METHODS``.
        fractions: the steps s, k = int(count·s) tokens removed at each (:data:`~tokenattr.evaluation.MOVIES_STEPS`,
            :data:`~tokenattr.evaluation.NEWSGROUPS_STEPS`); not called ``steps``, which is Ours' option. A leading
            0 (nothing removed) is measured but kept out of the curve, whose clean point already sits at 0.
        length: ``None`` counts each sequence's real tokens (movie reviews); an int counts that fixed padded length
            (20 Newsgroups: 512, padding included), see :func:`~tokenattr.evaluation.run_text_perturbation`.
        positive: remove the most relevant tokens first (lower accuracy = better relevance) or, if ``False``, the
            least relevant first (higher = better), zero-relevance tokens such as [CLS] among the first.
        vis_class: ``"target"`` explains the ground-truth class (the original), ``"top"`` the predicted one.
        pad_id: the id written into removed positions (BERT's [PAD] is 0).
        progress: show a tqdm progress bar.
        **method_options: the method's options, see :func:`tokenattr.explain`.

    The relevance is clamped at 0 as the original's ``cam.clamp(min=0)``, and negated for the negative test; hits
    are counted against the labels. Returns :meth:`PerturbationCurve.compute` (clean and per-step accuracy over the
    curve's fractions, ``auc_original``, ``auc_chefer``, ``count``) plus ``method``, ``positive``, ``vis_class``,
    ``steps`` (``fractions`` as given) and ``accuracy``, one value per step (the clean accuracy at a step 0).
    """
    from tqdm.auto import tqdm

    name = get_method(method).name
    if vis_class not in VIS_CLASSES:
        raise ValueError(f"vis_class must be one of {', '.join(VIS_CLASSES)}, got {vis_class!r}")
    steps = tuple(float(step) for step in fractions)
    skip_zero = bool(steps) and steps[0] == 0  # s = 0 is the clean point, which a curve holds already
    curve = PerturbationCurve(steps[1:] if skip_zero else steps)
    device = next(model.parameters()).device

    def predict_fn(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask)

    kind = "positive" if positive else "negative"
    for input_ids, attention_mask, labels in tqdm(
        batches, desc=f"{kind} perturbation {name}", unit="batch", disable=not progress
    ):
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        labels = torch.as_tensor(labels).to(device)
        target = labels if vis_class == "target" else None
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        relevance = explain(model, inputs, name, target=target, **method_options).clamp(min=0)
        if not positive:
            relevance = -relevance
        logits = run_text_perturbation(
            input_ids, attention_mask, relevance, predict_fn, steps, pad_id=pad_id, length=length
        )
        step_logits = logits.steps[1:] if skip_zero else logits.steps
        curve.update(top1_hits(logits.clean, labels), top1_hits(step_logits, labels))
    if curve.count == 0:
        raise ValueError("text_perturbation_test got no batches; expected (input_ids, attention_mask, labels)")
    scores = curve.compute()
    accuracy = [scores["clean_accuracy"]] * skip_zero + scores["step_accuracy"]
    return {
        **scores,
        "method": name,
        "positive": positive,
        "vis_class": vis_class,
        "steps": list(steps),
        "accuracy": accuracy,
    }


@dataclass
class RationaleResult:
    """What :func:`rationale_test` found.

    Attributes:
        summary: ``method``, ``count`` (documents), ``accuracy`` (the classifier's, on these documents),
            ``truncated_documents`` (with words beyond the model's length, which get no score), and
            ``token_f1``: ``{k: {"instance_micro": {p, r, f1}, "instance_macro": {p, r, f1}}}``.
        ranked_words: per annotation id, ``(docid, word indices from most to least relevant)`` up to the largest
            k — the top-k rationale of every k is its first k entries (for ERASER's results files).
    """

    summary: dict
    ranked_words: dict[str, tuple[str, np.ndarray]]


def rationale_test(
    model: nn.Module,
    tokenizer,
    annotations: Sequence[Annotation],
    documents: Mapping[str, Sequence[str]],
    method: str,
    *,
    label_index: Mapping[str, int],
    ks: Sequence[int] = RATIONALE_TOP_K,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: bool = True,
    **method_options,
) -> RationaleResult:
    """The ERASER rationale test of ``method`` on a text classifier (spec §5.3).

    Args:
        model: a text model from :func:`tokenattr.load_model` (BERT family).
        tokenizer: its fast tokenizer (:func:`tokenattr.models.load_tokenizer`); character offsets are needed.
        annotations: the split's annotations (:func:`tokenattr.data.load_annotations`); each is explained once.
        documents: ``{docid: whitespace words}`` holding every annotation's first document.
        method: a name or alias from ``tokenattr.METHODS``.
        label_index: the model's class index of each ERASER label (Movie Reviews: ``{"NEG": 0, "POS": 1}``).
        ks: the rationale sizes scored (default 5, 10, ..., 80).
        batch_size: documents per explanation batch (padded; every method is padding-invariant).
        max_length: tokens per document, longer ones are truncated; default the model's limit (512).
        progress: show a tqdm progress bar.
        **method_options: the method's options, see :func:`tokenattr.explain`.

    The ground-truth class is explained and the relevance clamped at 0, as the original pipeline does.
    """
    from tqdm.auto import tqdm

    name = get_method(method).name
    if not annotations:
        raise ValueError("rationale_test got no annotations")
    max_length = max_length or model.max_length
    unknown = sorted({annotation.label for annotation in annotations} - set(label_index))
    if unknown:
        raise ValueError(f"labels {unknown} have no class index; label_index covers {sorted(label_index)}")
    device = next(model.parameters()).device
    scores, ranked_words = RationaleScores(ks), {}
    correct = truncated = 0
    batches = range(0, len(annotations), batch_size)
    for start in tqdm(batches, desc=f"rationales {name}", unit="batch", disable=not progress):
        chunk = annotations[start : start + batch_size]
        words = [documents[annotation.docids[0]] for annotation in chunk]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation is counted below, per document
            encoded = encode_texts(tokenizer, [words_to_text(doc) for doc in words], max_length, offsets=True)
        offsets = encoded.pop("offset_mapping")
        labels = torch.tensor([label_index[annotation.label] for annotation in chunk], device=device)
        with torch.no_grad():
            correct += int((model(**{k: v.to(device) for k, v in encoded.items()}).argmax(-1) == labels).sum())
        relevance = explain(model, encoded, name, target=labels, **method_options).clamp(min=0).cpu()
        for row, annotation in enumerate(chunk):
            word_scores = word_scores_from_pieces(words[row], offsets[row].numpy(), relevance[row].numpy())
            truncated += bool(np.isnan(word_scores).any())
            scores.update(annotation, word_scores)
            ranked_words[annotation.annotation_id] = (annotation.docids[0], top_k_words(word_scores, max(ks)))
    summary = {
        "method": name,
        "count": len(annotations),
        "accuracy": correct / len(annotations),
        "truncated_documents": truncated,
        "token_f1": scores.compute(),
    }
    return RationaleResult(summary, ranked_words)


def versions() -> dict[str, str]:
    """The versions a result depends on, to record beside it: tokenattr, torch, numpy, Python."""
    import tokenattr  # here, not at the top: the package may re-export this module

    return {
        "tokenattr": tokenattr.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)
