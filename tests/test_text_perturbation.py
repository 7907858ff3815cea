"""The BERT token perturbation test: which tokens go at each step, and the accuracy a known classifier gets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokenattr.evaluation.perturbation import PerturbationCurve, top1_hits
from tokenattr.evaluation.text_perturbation import (
    MOVIES_STEPS,
    NEWSGROUPS_STEPS,
    mask_top_tokens,
    run_text_perturbation,
)

PLANTED = 7  # the token the fake classifier looks for


def _batch(lengths: list[int], padded: int, seed: int = 0, ties: bool = False):
    """Ids 100.. at real positions and 0 at padding, a 0/1 mask, and relevance (small integers when ``ties``)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(len(lengths), padded, dtype=torch.long)
    attention_mask = torch.zeros(len(lengths), padded, dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.arange(100, 100 + length)
        attention_mask[row, :length] = 1
    if ties:
        relevance = torch.randint(0, 3, (len(lengths), padded), generator=generator).float()
    else:
        relevance = torch.rand(len(lengths), padded, generator=generator)
    return input_ids, attention_mask, relevance * attention_mask


def _removed(attention_mask_before, attention_mask_after) -> torch.Tensor:
    return attention_mask_before.bool() & ~attention_mask_after.bool()


def test_steps_are_numpys_aranges():
    assert MOVIES_STEPS == tuple(float(s) for s in np.arange(0.52, 0.68, 0.02))
    assert NEWSGROUPS_STEPS == tuple(float(s) for s in np.arange(0, 1.1, 0.1))
    assert len(MOVIES_STEPS) == 9 and len(NEWSGROUPS_STEPS) == 11
    # The exact floats matter: int(100·s) is 58, not the 57 that the literal 0.58 would give.
    assert int(100 * MOVIES_STEPS[3]) == 58 and int(100 * 0.58) == 57


def test_removes_the_most_relevant_positions():
    input_ids = torch.tensor([[101, 11, 12, 13, 102]])
    attention_mask = torch.ones_like(input_ids)
    relevance = torch.tensor([[0.1, 0.9, 0.3, 0.7, 0.5]])
    ids, mask = mask_top_tokens(input_ids, attention_mask, relevance, 0.4, pad_id=0)  # k = int(5·0.4) = 2
    assert ids.tolist() == [[101, 0, 12, 0, 102]]
    assert mask.tolist() == [[1, 0, 1, 0, 1]]
    assert input_ids.tolist() == [[101, 11, 12, 13, 102]] and attention_mask.tolist() == [[1] * 5]  # not modified
    ids, _ = mask_top_tokens(input_ids, attention_mask, relevance, 0.8, pad_id=-1)  # k = 4, another pad id
    assert ids.tolist() == [[101, -1, -1, -1, -1]]


@pytest.mark.parametrize("count", [10, 37, 100])
def test_k_is_int_count_times_step_over_real_tokens(count):
    input_ids, attention_mask, relevance = _batch([count], padded=count + 5)
    relevance[0, count:] = 5.0  # padding scored high must still never be removed
    for step in MOVIES_STEPS + NEWSGROUPS_STEPS:
        _, mask = mask_top_tokens(input_ids, attention_mask, relevance, step)
        removed = _removed(attention_mask, mask)[0]
        assert int(removed.sum()) == int(count * step)
        assert not removed[count:].any()
        kept = ~removed[:count]
        if removed.any() and kept.any():  # every removed token is at least as relevant as every kept one
            assert relevance[0, removed].min() >= relevance[0, :count][kept].max()


def test_ties_go_in_position_order():
    input_ids = torch.arange(1, 7)[None]
    relevance = torch.tensor([[0.0, 1.0, 0.5, 1.0, 0.5, 0.0]])
    _, mask = mask_top_tokens(input_ids, torch.ones_like(input_ids), relevance, 0.5)  # k = 3
    assert mask.tolist() == [[1, 0, 0, 0, 1, 1]]


def test_fixed_length_counts_padding_and_may_remove_it():
    # 5 real tokens of 8 positions; k = int(8·s) over all 8, padding scoring 0 whatever relevance says there.
    input_ids = torch.tensor([[101, 11, 12, 13, 102, 0, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    relevance = torch.tensor([[0.0, 0.9, 0.0, 0.5, 0.2, 3.0, 3.0, 3.0]])
    _, mask = mask_top_tokens(input_ids, attention_mask, relevance, 0.5, length=8)  # k = 4
    assert mask.tolist() == [[0, 0, 1, 0, 0, 0, 0, 0]]  # 0.9, 0.5, 0.2, then the first zero ([CLS])
    # Negative test: the zero-score positions, padding included, go first, in position order.
    ids, mask = mask_top_tokens(input_ids, attention_mask, -relevance, 0.5, length=8)
    assert _removed(torch.ones_like(mask), mask).nonzero()[:, 1].tolist() == [0, 2, 5, 6, 7]
    assert ids.tolist() == [[0, 11, 0, 13, 102, 0, 0, 0]]
    # Per sequence instead: k = int(5·0.5) = 2 real tokens.
    _, mask = mask_top_tokens(input_ids, attention_mask, -relevance, 0.5)
    assert mask.tolist() == [[0, 1, 0, 1, 1, 0, 0, 0]]


@pytest.mark.parametrize("negative", [False, True])
def test_fixed_length_beyond_the_batch_width_is_padding(negative):
    """A batch padded to 12 with length=20 masks as if every sequence were padded to 20."""
    sign = -1 if negative else 1
    input_ids, attention_mask, relevance = _batch([9, 12], padded=12, ties=True)
    wide_ids, wide_mask = (torch.nn.functional.pad(t, (0, 8)) for t in (input_ids, attention_mask))
    wide_relevance = torch.nn.functional.pad(relevance, (0, 8))
    for step in NEWSGROUPS_STEPS:
        narrow = mask_top_tokens(input_ids, attention_mask, sign * relevance, step, length=20)
        wide = mask_top_tokens(wide_ids, wide_mask, sign * wide_relevance, step, length=20)
        for ours, reference in zip(narrow, wide):
            assert torch.equal(ours, reference[:, :12])


def _original_loop(input_ids, attention_mask, relevance, steps, length):
    """The original's loop, per sequence in plain Python: k = int(count·s) from the unperturbed sequence, then
    the top-k positions (Python's stable sort standing in for topk) masked in place, cumulatively."""
    results = []
    ids, mask = input_ids.clone(), attention_mask.clone()
    for step in steps:
        for row in range(ids.shape[0]):
            real = [i for i in range(ids.shape[1]) if attention_mask[row, i]]
            positions = real if length is None else list(range(ids.shape[1]))
            score = {i: float(relevance[row, i]) if attention_mask[row, i] else 0.0 for i in positions}
            k = int((len(real) if length is None else length) * step)
            for i in sorted(positions, key=lambda i: -score[i])[:k]:
                ids[row, i], mask[row, i] = 0, 0
        results.append((ids.clone(), mask.clone()))
    return results


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("length", [None, 16])
@pytest.mark.parametrize("steps", [MOVIES_STEPS, NEWSGROUPS_STEPS])
def test_same_as_the_originals_cumulative_loop(steps, length, negative):
    input_ids, attention_mask, relevance = _batch([16, 11, 5], padded=16, seed=3, ties=True)
    relevance = -relevance if negative else relevance
    previous = torch.zeros_like(attention_mask, dtype=torch.bool)
    for step, (loop_ids, loop_mask) in zip(steps, _original_loop(input_ids, attention_mask, relevance, steps, length)):
        ids, mask = mask_top_tokens(input_ids, attention_mask, relevance, step, length=length)
        assert torch.equal(ids, loop_ids) and torch.equal(mask, loop_mask)
        removed = _removed(attention_mask, mask)
        assert (removed | ~previous).all()  # nested: everything removed before is removed again
        previous = removed


@pytest.mark.parametrize("length", [None, 24])
def test_batch_equals_each_sequence_alone(length):
    input_ids, attention_mask, relevance = _batch([13, 20], padded=20, seed=1, ties=True)
    for step in MOVIES_STEPS + NEWSGROUPS_STEPS:
        batch_ids, batch_mask = mask_top_tokens(input_ids, attention_mask, relevance, step, length=length)
        for row, real in enumerate([13, 20]):
            alone = (
                input_ids[row : row + 1, :real],
                attention_mask[row : row + 1, :real],
                relevance[row : row + 1, :real],
            )
            ids, mask = mask_top_tokens(*alone, step, length=length)
            assert torch.equal(batch_ids[row, :real], ids[0]) and torch.equal(batch_mask[row, :real], mask[0])
            assert (batch_ids[row, real:] == 0).all() and (batch_mask[row, real:] == 0).all()


def _planted_batch(ranks: list[int], tokens: int):
    """Sequences of ``tokens`` real tokens with PLANTED at the position whose relevance has the given rank."""
    input_ids = torch.arange(100, 100 + tokens).repeat(len(ranks), 1)
    relevance = torch.linspace(1.0, 0.1, tokens).repeat(len(ranks), 1)  # position i has rank i
    for row, rank in enumerate(ranks):
        input_ids[row, rank] = PLANTED
    return input_ids, torch.ones_like(input_ids), relevance


class PlantedClassifier:
    """Class 1 while a real (unmasked) PLANTED token survives, else class 0; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert not torch.is_grad_enabled()
        alive = ((input_ids == PLANTED) & attention_mask.bool()).any(dim=1).float()
        return torch.stack([1 - alive, alive], dim=1)


def test_movies_accuracy_and_auc_by_hand():
    # 10 tokens: k = int(10·s) is 5 for 0.52..0.58 and 6 for 0.60..0.68. Planted at ranks 0, 2, 5, 9.
    input_ids, attention_mask, relevance = _planted_batch([0, 2, 5, 9], tokens=10)
    labels = torch.ones(4, dtype=torch.long)
    predict_fn = PlantedClassifier()
    logits = run_text_perturbation(input_ids, attention_mask, relevance, predict_fn, MOVIES_STEPS)
    assert logits.clean.shape == (4, 2) and logits.steps.shape == (9, 4, 2) and predict_fn.calls == 10
    curve = PerturbationCurve(MOVIES_STEPS)
    curve.update(top1_hits(logits.clean, labels), top1_hits(logits.steps, labels))
    result = curve.compute()
    assert result["clean_accuracy"] == 1.0
    assert result["step_accuracy"] == [0.5] * 4 + [0.25] * 5
    # Trapezoids: 0.52·(1 + 0.5)/2 + 0.06·0.5 + 0.02·(0.5 + 0.25)/2 + 0.08·0.25, then 0.32·0.25/2 to (1, 0).
    assert result["auc_chefer"] == pytest.approx(0.39 + 0.03 + 0.0075 + 0.02)
    assert result["auc_original"] == pytest.approx(0.4475 + 0.04)


def test_newsgroups_accuracy_with_fixed_length():
    # 12 real tokens padded to 20 = length; k = int(20·s) = 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20.
    input_ids, attention_mask, relevance = _planted_batch([1, 7, 11], tokens=12)
    pad = (0, 8)
    input_ids, attention_mask, relevance = (
        torch.nn.functional.pad(t, pad) for t in (input_ids, attention_mask, relevance)
    )
    labels = torch.ones(3, dtype=torch.long)
    predict_fn = PlantedClassifier()
    logits = run_text_perturbation(input_ids, attention_mask, relevance, predict_fn, NEWSGROUPS_STEPS, length=20)
    assert predict_fn.calls == 1 + 10  # step 0 removes nothing and reuses the clean logits
    assert torch.equal(logits.steps[0], logits.clean)
    hits = top1_hits(logits.steps, labels)
    # Removed once k > rank: rank 1 from k=2, rank 7 from k=8, rank 11 from k=12.
    expected = [[k <= rank for rank in (1, 7, 11)] for k in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)]
    assert hits.tolist() == expected
    # A curve's x = 0 is the clean point, which NEWSGROUPS_STEPS[0] = 0 repeats.
    curve = PerturbationCurve(NEWSGROUPS_STEPS[1:])
    curve.update(top1_hits(logits.clean, labels), hits[1:])
    assert curve.compute()["step_accuracy"] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3] + [0.0] * 5)


def test_bad_inputs():
    input_ids, attention_mask, relevance = _batch([4, 6], padded=6)
    with pytest.raises(ValueError, match="relevance must be"):
        mask_top_tokens(input_ids, attention_mask, relevance[:, :5], 0.5)
    with pytest.raises(ValueError, match="relevance must be finite"):
        mask_top_tokens(input_ids, attention_mask, relevance.masked_fill(attention_mask == 0, float("nan")), 0.5)
    with pytest.raises(ValueError, match="attention_mask must hold 0/1"):
        mask_top_tokens(input_ids, attention_mask * 2, relevance, 0.5)
    with pytest.raises(ValueError, match="input_ids must be an integer tensor"):
        mask_top_tokens(input_ids.float(), attention_mask, relevance, 0.5)
    with pytest.raises(ValueError, match="length must be None .* or an int >= T = 6"):
        mask_top_tokens(input_ids, attention_mask, relevance, 0.5, length=5)
    with pytest.raises(ValueError, match=r"fractions must lie in \[0, 1\]"):
        mask_top_tokens(input_ids, attention_mask, relevance, 1.5)
    with pytest.raises(ValueError, match="predict_fn must return logits"):
        run_text_perturbation(input_ids, attention_mask, relevance, lambda ids, mask: ids[0], [0.5])
