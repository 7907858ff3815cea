"""Attribution methods: one registry, one call shape (:func:`explain`).

Every method is a function ``fn(model, inputs, target=None, **options) -> Tensor [B, N]``; options are
keywords with defaults in its signature, and a model family may supply its own defaults for them
(``model.method_defaults(name)``, e.g. ViT's start blocks).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import attention_gradcam, generic_attribution, raw_attention, rollout
from .lrp import full_lrp, lrp_rollout, partial_lrp, transformer_attribution
from .ours import ours_head_wise, ours_token_wise


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., Tensor]
    description: str
    aliases: tuple[str, ...] = ()
    pixels: bool = False  # explains input pixels [B, H, W] rather than tokens [B, N]
    needs_relprop: bool = False  # propagates LRP relevance, which a model family must implement (``model.relprop``)

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options the method accepts."""
        parameters = inspect.signature(self.fn).parameters.values()
        return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)

    def applies_to(self, model: nn.Module) -> bool:
        """Whether the method can explain ``model`` (LRP methods need the family's relevance propagation)."""
        return not self.needs_relprop or hasattr(model, "relprop")


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            "ours-h", ours_head_wise, "attention perception, head-wise, ⊙ reasoning feedback (the paper)", ("ours",)
        ),
        Method(
            "ours-t",
            ours_token_wise,
            "attention perception, token-wise, ⊙ reasoning feedback (the paper)",
            ("ours_c", "our-c", "ours-c"),
        ),
        Method(
            "raw-attention", raw_attention, "last-block attention averaged over heads", ("attn_last_layer", "last_attn")
        ),
        Method("rollout", rollout, "attention rollout (Abnar & Zuidema 2020)"),
        Method("attn-gradcam", attention_gradcam, "Grad-CAM on the last attention map", ("attn_gradcam",)),
        Method(
            "generic-attribution",
            generic_attribution,
            "gradient-weighted attention rollout (Chefer et al. ICCV'21)",
            ("generic_attribution",),
        ),
        Method(
            "transformer-attribution",
            transformer_attribution,
            "gradient-weighted LRP relevance of attention, rolled out (Chefer et al. CVPR'21)",
            ("transformer_attribution", "grad"),
            needs_relprop=True,
        ),
        Method(
            "partial-lrp",
            partial_lrp,
            "LRP relevance of the last attention map (Voita et al. 2019)",
            ("partial_lrp",),
            needs_relprop=True,
        ),
        Method(
            "lrp-rollout",
            lrp_rollout,
            "rollout of the LRP relevances of attention",
            ("lrp_rollout",),
            needs_relprop=True,
        ),
        Method(
            "lrp",
            full_lrp,
            "LRP down to the input pixels (Bach et al. 2015)",
            ("full_lrp", "full"),
            pixels=True,
            needs_relprop=True,
        ),
    )
}
_ALIASES = {alias: method.name for method in METHODS.values() for alias in (method.name, *method.aliases)}


def get_method(name: str) -> Method:
    """Look a method up by its name or one of the original code's spellings."""
    canonical = _ALIASES.get(name) if isinstance(name, str) else None
    if canonical is None:
        aliases = ", ".join(sorted(set(_ALIASES) - set(METHODS)))
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)} (aliases: {aliases})")
    return METHODS[canonical]


def _as_inputs(model: nn.Module, inputs: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(inputs, Tensor):
        inputs = {model.main_input_name: inputs}
    if not isinstance(inputs, Mapping):
        raise TypeError(f"inputs must be a tensor or a mapping of tensors, got {type(inputs).__name__}")
    device = next(model.parameters()).device
    return {name: value.to(device) for name, value in inputs.items()}


def explain(
    model: nn.Module,
    inputs: Tensor | Mapping[str, Tensor],
    method: str = "ours-h",
    target: int | Tensor | None = None,
    *,
    tower: str | None = None,
    **options,
) -> Tensor:
    """Token relevance ``[B, N]`` of ``inputs`` for ``target`` by ``method``.

    Args:
        model: a model from :func:`tokenattr.load_model`.
        inputs: the model's main input (``pixel_values [B, C, H, W]`` for ViT) or a mapping of its inputs
            (CLIP: ``pixel_values`` and the prompts' ``input_ids``).
        method: a name from ``METHODS`` or an alias.
        target: ``None`` (predicted class), an ``int``, or a ``LongTensor [B]``; the raw logit is explained.
            For CLIP's image tower, the prompt explained for each image (``None``: the best-matching one); for its
            text tower, the image each prompt is compared with.
        tower: two-tower models (CLIP) only: ``"image"`` (default; relevance ``[B_images, patches]``) or
            ``"text"`` (relevance ``[B_prompts, T]`` over the prompt tokens).
        **options: the method's keyword options (``start_layer``, ``steps``, ``internal_batch_size``, ...);
            ``None`` means the family's default.

    Returns the raw relevance over the non-prefix tokens, before any up-sampling (see :func:`to_image_map`);
    pixel methods (``METHODS[name].pixels``, i.e. ``lrp``) return ``[B, H, W]``.
    """
    spec = get_method(method)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        accepted = ", ".join(spec.options) or "none"
        raise TypeError(f"method {spec.name!r} has no option(s) {', '.join(unknown)}; its options: {accepted}")
    inputs = _as_inputs(model, inputs)
    if hasattr(model, "explained_tower"):
        model, inputs = model.explained_tower(inputs, tower)
    elif tower is not None:
        raise ValueError(f"tower= applies to two-tower models (CLIP); {type(model).__name__} has one")
    if not spec.applies_to(model):
        applicable = ", ".join(name for name, other in METHODS.items() if other.applies_to(model))
        raise ValueError(
            f"method {spec.name!r} does not apply to {model.family} models: it propagates LRP relevance, which "
            f"this family does not implement; methods that apply: {applicable}"
        )
    kwargs = {**model.method_defaults(spec.name), **{k: v for k, v in options.items() if v is not None}}
    with torch.enable_grad():
        return spec.fn(model, inputs, target, **kwargs).detach()


__all__ = ["METHODS", "Method", "explain", "get_method"]
