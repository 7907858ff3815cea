"""The benchmark command (benchmarks/bench.py): row parsing, one measurement in process on a tiny model (also
under bfloat16 autocast), the key figures and memory ratios, and errors for bad flags. Speed is never asserted."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys

import pytest
import torch
from conftest import ROOT

from tokenattr.models import ViTConfig

# Registered in sys.modules before it runs: its dataclasses look their module up there.
_spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
bench = sys.modules.setdefault("bench", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bench)
TINY = bench.ModelSpec(
    "tiny ViT",
    bench.VisionTransformer,
    ViTConfig(image_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=4, mlp_dim=64),
    bench.image_inputs,
)


def case(row: str, **changes) -> bench.Case:
    fields = dict(model="tiny", row=row, batch_size=2, device="cpu", threads=1, steps=3, warmup=1, repeats=2, seed=0)
    return bench.Case(**{**fields, "autocast": None, **changes})


def test_rows_parse_into_a_method_and_typed_options():
    assert bench.parse_row("ours") == ("ours-h", {})
    assert bench.parse_row("ours-h:feedback_path=last-attention,internal_batch_size=8,steps=4") == (
        "ours-h",
        {"feedback_path": "last-attention", "internal_batch_size": 8, "steps": 4},
    )
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        bench.parse_row("nope")
    with pytest.raises(ValueError, match="rollout has no option 'steps'; its options: start_layer"):
        bench.parse_row("rollout:steps=3")
    with pytest.raises(ValueError, match="option 'steps' is not key=value"):
        bench.parse_row("ours-h:steps")


@pytest.mark.parametrize("warmup", [0, 1])
@pytest.mark.parametrize("row", [bench.REFERENCE, "ours-h:feedback_path=last-attention,internal_batch_size=4"])
def test_one_measurement(monkeypatch, row, warmup):
    monkeypatch.setitem(bench.MODELS, "tiny", TINY)
    result = bench.measure(case(row, warmup=warmup, repeats=3))
    assert len(result["times_s"]) == 3 and result["median_s"] > 0
    assert result["explanations_per_s"] == pytest.approx(2 / result["median_s"])
    assert result["peak_memory_mb"] >= result["peak_memory_above_model_mb"]
    if row == bench.REFERENCE:
        assert result["ratio_to_forward_backward"] == 1.0
    else:  # a reference after every call, and one before the first after a warm-up
        assert len(result["forward_backward_times_s"]) == 3 + (warmup > 0) and result["ratio_to_forward_backward"] > 0


def test_a_measurement_under_bfloat16_autocast(monkeypatch):
    monkeypatch.setitem(bench.MODELS, "tiny", TINY)
    result = bench.measure(case("ours-h", autocast="bfloat16", repeats=1))
    assert result["ratio_to_forward_backward"] > 0


def test_key_figures_and_memory_ratios():
    references = {"1": {"peak_memory_mb": 100.0, "peak_memory_above_model_mb": 50.0}, "16": {"peak_memory_mb": 400.0}}
    rows = {
        "ours-h": {
            "1": {"ratio_to_forward_backward": 7.0, "explanations_per_s": 0.1, "peak_memory_mb": 150.0},
            "16": {"ratio_to_forward_backward": 6.0, "explanations_per_s": 0.2, "peak_memory_mb": 1000.0},
        },
        bench.CHEAP_FEEDBACK: {"1": {"ratio_to_forward_backward": 3.0}},
    }
    rows["ours-h"]["1"]["peak_memory_above_model_mb"] = 100.0
    rows["ours-h"]["16"]["peak_memory_above_model_mb"] = None
    bench.add_memory_ratios(references, rows)
    assert rows["ours-h"]["1"]["peak_memory_ratio_to_forward_backward"] == 1.5
    assert rows["ours-h"]["1"]["peak_memory_above_model_ratio_to_forward_backward"] == 2.0
    assert rows["ours-h"]["16"]["peak_memory_above_model_ratio_to_forward_backward"] is None
    figures = bench.key_figures(rows, [1, 16])
    assert figures["ours_h_batch1_ratio"] == {"value": 7.0, "goal": "<= 8.0", "meets_goal": True}
    assert figures["cheap_feedback_batch1_ratio"]["meets_goal"] is False
    assert figures["ours_h_throughput_gain"]["value"] == pytest.approx(2.0)
    assert figures["ours_h_throughput_gain"]["meets_goal"] is False
    assert figures["ours_h_memory_ratio"]["value"] == 2.5 and figures["batch_sizes"] == [1, 16]
    assert bench.key_figures({}, [1, 16]) == {}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--methods", "ours-h:bogus=1"], "ours-h has no option 'bogus'"),
        (["--models", "gpt"], "invalid choice: 'gpt'"),
        (["--batch-sizes", "0"], "batch sizes and repeats must be at least 1"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--autocast", "float16"], "invalid choice: 'float16'"),
    ],
)
def test_bad_flags_are_refused(capsys, flags, message):
    with pytest.raises(SystemExit):
        bench.parse_args(flags)
    assert message in capsys.readouterr().err


def test_every_model_spec_builds_its_inputs():
    """The table's entries agree with their input makers (configs only: no real-size model is built)."""
    for name, spec in bench.MODELS.items():
        assert dataclasses.is_dataclass(spec.config), name
    vit = bench.VisionTransformer(TINY.config)
    assert vit(**bench.image_inputs(vit, 2, torch.Generator().manual_seed(0))).shape == (2, 5)


def test_clip_entry_measures_a_two_tower_model(monkeypatch):
    """CLIP's inputs are images and prompts; its reference pass runs both towers, its explanations the image one."""
    config = bench.CLIPConfig(
        embed_dim=16,
        image_size=32,
        patch_size=8,
        vision_width=32,
        vision_layers=2,
        vision_heads=4,
        context_length=20,
        vocab_size=1100,
        text_width=32,
        text_layers=1,
        text_heads=2,
    )
    monkeypatch.setitem(bench.MODELS, "tiny", bench.ModelSpec("tiny CLIP", bench.CLIPModel, config, bench.clip_inputs))
    for row in (bench.REFERENCE, "ours-h", bench.CHEAP_FEEDBACK):
        result = bench.measure(case(row, repeats=1))
        assert result["median_s"] > 0 and result["ratio_to_forward_backward"] > 0
