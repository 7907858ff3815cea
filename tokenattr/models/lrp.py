"""Layer-wise relevance propagation rules (Bach et al. 2015), as Chefer et al. (CVPR'21) apply them to
transformers (spec §4.1, "LRP machinery"). Each rule maps the relevance of a layer's output to its inputs.

Two rule sets exist in the original code and both are kept here, as flags of :class:`LRPRules`:
Chefer's (``layers_ours``: z⁺ and z⁻ share one normaliser; residual adds rescale their branches so relevance
is conserved) and the "orig LRP" of the original's BERT baselines (``layers_lrp``: z⁺ and z⁻ normalised
separately; plain adds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

STABILIZER = 1e-9


@dataclass(frozen=True)
class LRPRules:
    """Which variant of the rules to apply.

    Attributes:
        separate_sign_normalisation: normalise the positive and negative contributions of a linear layer by
            their own sums (z⁺, z⁻) instead of by their joint sum — the original's "orig LRP" (spec §4.2).
        conservative_add: rescale the two branches of a residual add so that they share the output relevance
            in proportion to |Σ branch| and sum to it exactly — Chefer's rule; otherwise plain LRP-0.
    """

    separate_sign_normalisation: bool = False
    conservative_add: bool = True


CHEFER_RULES = LRPRules()
ORIGINAL_LRP_RULES = LRPRules(separate_sign_normalisation=True, conservative_add=False)


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / (denominator + 1e-9)``, and 0 where the denominator is exactly 0 (the original's stabiliser)."""
    shifted = denominator + STABILIZER
    shifted = shifted + (shifted == 0) * STABILIZER
    return numerator / shifted * (denominator != 0)


def _per_sample_sum(values: Tensor) -> Tensor:
    return values.sum(dim=tuple(range(1, values.dim())), keepdim=True)


def linear_relprop(x: Tensor, weight: Tensor, relevance: Tensor, rules: LRPRules = CHEFER_RULES) -> Tensor:
    """The z⁺ rule (α=1, β=0) for ``z = x Wᵀ`` (the bias takes no relevance).

    ``R_x = x⁺ ⊙ (S⁺ W⁺) + x⁻ ⊙ (S⁻ W⁻)`` with ``S^± = R / (x⁺W⁺ᵀ + x⁻W⁻ᵀ)``, or ``S^± = R / (x^±W^±ᵀ)`` with
    ``separate_sign_normalisation``.
    """
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    z_pos, z_neg = F.linear(x_pos, w_pos), F.linear(x_neg, w_neg)
    if rules.separate_sign_normalisation:
        s_pos, s_neg = safe_divide(relevance, z_pos), safe_divide(relevance, z_neg)
    else:
        s_pos = s_neg = safe_divide(relevance, z_pos + z_neg)
    return x_pos * (s_pos @ w_pos) + x_neg * (s_neg @ w_neg)


def conv_zb_relprop(x: Tensor, weight: Tensor, stride: int | tuple[int, int], relevance: Tensor) -> Tensor:
    """The z^B rule for the first convolution (Montavon et al. 2017), bounded by each image's min and max.

    ``R_x = x ⊙ (Wᵀ S) − l ⊙ (W⁺ᵀ S) − h ⊙ (W⁻ᵀ S)`` with ``S = R / (conv(x, W) − conv(l, W⁺) − conv(h, W⁻))``,
    ``l``/``h`` the lowest/highest input value of the sample. Returns ``[B, C, H, W]``.
    """
    low = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
    high = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)
    w_pos, w_neg = weight.clamp(min=0), weight.clamp(max=0)
    z = F.conv2d(x, weight, stride=stride) - F.conv2d(low, w_pos, stride=stride) - F.conv2d(high, w_neg, stride=stride)
    s = relevance / (z + STABILIZER)

    def backward(kernel: Tensor) -> Tensor:
        return F.conv_transpose2d(s, kernel, stride=stride)

    return x * backward(weight) - low * backward(w_pos) - high * backward(w_neg)


def add_relprop(a: Tensor, b: Tensor, relevance: Tensor, rules: LRPRules = CHEFER_RULES) -> tuple[Tensor, Tensor]:
    """LRP-0 for ``z = a + b``: ``R_a = a ⊙ R/z``, ``R_b = b ⊙ R/z``.

    With ``conservative_add`` each branch is then rescaled, per sample, to ``|ΣR_a| / (|ΣR_a| + |ΣR_b|) · ΣR``
    (and likewise for b), so the two shares sum to ΣR.
    """
    s = safe_divide(relevance, a + b)
    r_a, r_b = a * s, b * s
    if not rules.conservative_add:
        return r_a, r_b
    sum_a, sum_b = _per_sample_sum(r_a), _per_sample_sum(r_b)
    total = _per_sample_sum(relevance)
    share_a = safe_divide(sum_a.abs(), sum_a.abs() + sum_b.abs()) * total
    share_b = safe_divide(sum_b.abs(), sum_a.abs() + sum_b.abs()) * total
    return r_a * safe_divide(share_a, sum_a), r_b * safe_divide(share_b, sum_b)


def matmul_relprop(left: Tensor, right: Tensor, relevance: Tensor) -> tuple[Tensor, Tensor]:
    """LRP-0 for a product of two inputs ``z = left @ right``, each operand's relevance halved.

    Both operands receive the full relevance under LRP-0 (``R_left = left ⊙ (S rightᵀ)``,
    ``R_right = right ⊙ (leftᵀ S)``, ``S = R/z``), so each is halved to conserve the total (spec §4.1).
    """
    s = safe_divide(relevance, left @ right)
    return left * (s @ right.transpose(-1, -2)) / 2, right * (left.transpose(-1, -2) @ s) / 2
