"""Speed and memory of the attribution methods on models of the real sizes (random weights), relative to one
plain forward+backward pass of the same model, measured in the same run (DESIGN §6).

For each model of :data:`MODELS` and each batch size (default 1 and 16) it times:

* the reference, ``forward+backward``: a forward pass, then the gradient of the summed predicted-class logits
  w.r.t. every weight (``torch.autograd.grad``, what ``.backward()`` computes without accumulating into
  ``.grad``). That is the pass the original implementation makes 1 + steps times per Ours-H explanation, so
  the ratio of Ours-H to it compares directly with the original's ~21 (at 20 steps);
* every row of ``--methods``: ``tokenattr.explain(model, inputs, method, target=None, **options)``, with
  ``steps`` passed to the methods that take it. A row is a registered method name, optionally with options:
  ``ours-h:feedback_path=last-attention`` or ``ours-h:internal_batch_size=16,steps=10``.

Models are built as ``tokenattr.load_model`` returns them (eval mode, weights trainable), with N(0, 0.02)
weights and LayerNorms at 1 and 0 (so that attention maps are not flat).

Every row (one model, one method, one batch size) runs in a fresh spawned process, so that its peak memory is
its own: peak resident set size (VmHWM) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA, over its first
call (a warm-up call, or the first timed call with ``--warmup 0``), also given above what the process held once
the model and inputs were built, and as a ratio to the reference's at the same batch. The timed calls
(``time.perf_counter``; ``torch.cuda.synchronize`` around each on CUDA) alternate with reference calls in the
same process, so that other processes on a shared machine slow both sides of each ratio alike: the ratio is the
median over the row's calls of its time over the mean of the reference calls next to it. On a CPU shared with
other processes, prefer ``--threads 1``: two OpenMP threads competing for two busy cores run several times
slower, and unevenly. ``--autocast bfloat16`` runs the reference and the methods under
``torch.autocast(dtype=torch.bfloat16)``; a row whose method fails (under autocast, or on a family it does not
serve) records the error and the run goes on.

Run from the repository root:

    PYTHONPATH=. python benchmarks/bench.py --threads 1                       # everything (many hours on 2 cores)
    PYTHONPATH=. python benchmarks/bench.py --threads 1 --models vit-b16 \\
        --methods ours-h ours-h:feedback_path=last-attention --batch-sizes 1 16   # the key figures
    PYTHONPATH=. python benchmarks/bench.py --device cuda --repeats 5 --large-batch-repeats 5

It writes the JSON to ``--out`` (default ``benchmarks/results/bench_<device type>.json``) and prints a
markdown table and the key figures to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

import tokenattr
from tokenattr.models import BertClassifier, BertConfig, CLIPConfig, CLIPModel, VisionTransformer, ViTConfig

REFERENCE = "forward+backward"
REFERENCE_DEFINITION = (
    "forward, then torch.autograd.grad of the summed predicted-class logits w.r.t. every weight "
    "(what .backward() computes; the original's pass, made 1 + steps times per Ours-H explanation)"
)
INIT_STD = 0.02
MIB = 2**20
RESULTS_DIR = Path(__file__).resolve().parent / "results"
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16}

KEY_METHOD = "ours-h"
CHEAP_FEEDBACK = "ours-h:feedback_path=last-attention"
ORIGINAL_KEY_RATIO = 21  # the original: 1 + 20 full forward/backward passes per explanation at batch 1
GOALS = {  # issue 8, on the CPU
    "ours_h_batch1_ratio": 8.0,  # at most, × one forward+backward at batch 1, 20 steps
    "cheap_feedback_batch1_ratio": 2.5,  # at most
    "ours_h_throughput_gain": 3.0,  # at least: explanations per second at the large batch over batch 1
    "ours_h_memory_ratio": 2.0,  # about, at most: peak memory at the large batch over forward+backward's
}


def image_inputs(model: VisionTransformer, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
    config = model.config
    shape = (batch_size, config.in_chans, config.image_size, config.image_size)
    return {"pixel_values": torch.randn(shape, generator=generator)}


def text_inputs(model: BertClassifier, batch_size: int, generator: torch.Generator, tokens: int) -> dict[str, Tensor]:
    """Random word-piece ids after [CLS] (id 101 in BERT's vocabulary), no padding."""
    input_ids = torch.randint(1000, model.config.vocab_size, (batch_size, tokens), generator=generator)
    input_ids[:, 0] = 101
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def clip_inputs(model: CLIPModel, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Random images and as many prompts of 16 tokens (start, random ids, end-of-text, padding to 77): each image
    is explained for its best-matching prompt."""
    config = model.config
    pixel_values = torch.randn((batch_size, 3, config.image_size, config.image_size), generator=generator)
    input_ids = torch.zeros(batch_size, config.context_length, dtype=torch.long)
    input_ids[:, 1:15] = torch.randint(1000, config.vocab_size - 2, (batch_size, 14), generator=generator)
    input_ids[:, 0], input_ids[:, 15] = config.vocab_size - 2, config.vocab_size - 1  # start, end of text
    return {"pixel_values": pixel_values, "input_ids": input_ids}


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked model: how to build it (random weights of the real size) and random inputs for it."""

    description: str
    model_class: Callable[[object], nn.Module]  # called with ``config``
    config: object
    make_inputs: Callable[[nn.Module, int, torch.Generator], dict[str, Tensor]]


MODELS: dict[str, ModelSpec] = {
    "vit-b16": ModelSpec("ViT-B/16, 224×224", VisionTransformer, ViTConfig(), image_inputs),
    "vit-l16": ModelSpec(
        "ViT-L/16, 224×224",
        VisionTransformer,
        ViTConfig(embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096),
        image_inputs,
    ),
    "bert-base-128": ModelSpec("BERT-base, 128 tokens", BertClassifier, BertConfig(), partial(text_inputs, tokens=128)),
    "bert-base-512": ModelSpec("BERT-base, 512 tokens", BertClassifier, BertConfig(), partial(text_inputs, tokens=512)),
    "clip-b32": ModelSpec("CLIP ViT-B/32, 224×224 images vs 77-token prompts", CLIPModel, CLIPConfig(), clip_inputs),
}


def parse_row(row: str) -> tuple[str, dict]:
    """``"method[:key=value,...]"`` -> (canonical method name, options); ints and floats are converted."""
    name, _, option_text = row.partition(":")
    method = tokenattr.get_method(name)
    options = {}
    for item in filter(None, option_text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"row {row!r}: option {item!r} is not key=value")
        if key not in method.options:
            raise ValueError(
                f"row {row!r}: {method.name} has no option {key!r}; its options: {', '.join(method.options)}"
            )
        for convert in (int, float, str):
            try:
                options[key] = convert(value)
                break
            except ValueError:
                continue
    return method.name, options


@dataclass(frozen=True)
class Case:
    """One measurement, run in its own process."""

    model: str  # a key of MODELS
    row: str  # REFERENCE or a method row (see parse_row)
    batch_size: int
    device: str
    threads: int
    steps: int
    warmup: int
    repeats: int
    seed: int
    autocast: str | None  # a key of AUTOCAST_DTYPES


def build_model(spec: ModelSpec, device: torch.device, seed: int) -> nn.Module:
    """The model with random weights: N(0, 0.02) everywhere but the LayerNorms; eval mode, weights trainable."""
    torch.manual_seed(seed)
    model = spec.model_class(spec.config)
    for module in model.modules():
        if not isinstance(module, nn.LayerNorm):
            for parameter in module.parameters(recurse=False):
                nn.init.normal_(parameter, std=INIT_STD)
    return model.eval().to(device)


def predicted_score(logits: Tensor) -> Tensor:
    return logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum()


def forward_backward(model: nn.Module, inputs: dict[str, Tensor]) -> None:
    torch.autograd.grad(predicted_score(model(**inputs)), list(model.parameters()))


def row_call(case: Case, model: nn.Module, inputs: dict[str, Tensor]) -> Callable[[], object]:
    if case.row == REFERENCE:
        return partial(forward_backward, model, inputs)
    method, options = parse_row(case.row)
    if "steps" in tokenattr.METHODS[method].options:
        options = {"steps": case.steps, **options}
    return partial(tokenattr.explain, model, inputs, method=method, **options)


def _proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MiB; ``None`` where there is no /proc."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    return None


def memory_mb(device: torch.device) -> float | None:
    """What the process holds now: allocated CUDA memory, or resident set size on CPU."""
    return torch.cuda.memory_allocated(device) / MIB if device.type == "cuda" else _proc_status_mb("VmRSS")


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak since the last reset: ``torch.cuda.max_memory_allocated``, or the process's peak RSS on CPU.

    On CPU this is VmHWM, not ``ru_maxrss``: Linux carries a parent's peak across exec into a spawned child's
    ``ru_maxrss``, so it would report the parent's peak whenever that is higher.
    """
    return torch.cuda.max_memory_allocated(device) / MIB if device.type == "cuda" else _proc_status_mb("VmHWM")


def timed(call: Callable[[], object], device: torch.device, autocast: str | None) -> float:
    context = nullcontext() if autocast is None else torch.autocast(device.type, dtype=AUTOCAST_DTYPES[autocast])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with context:
        call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(case: Case) -> dict:
    """Run one row (in its own process): the peak memory of its first call, then timings.

    The calls run ``warm-up calls, ref_0, call_1, ref_1, ..., call_n, ref_n``, or without warm-up
    ``call_1, ref_1, call_2, ref_2, ...`` (the reference row: its own calls only). The ratio of ``call_i`` is its
    time over the mean of the reference calls just before and after it, and the row's ratio is their median.
    """
    torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    spec = MODELS[case.model]
    model = build_model(spec, device, case.seed)
    generator = torch.Generator().manual_seed(case.seed)
    inputs = {name: value.to(device) for name, value in spec.make_inputs(model, case.batch_size, generator).items()}
    call = row_call(case, model, inputs)
    run = partial(timed, device=device, autocast=case.autocast)

    setup_mb = memory_mb(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = [run(call) for _ in range(max(case.warmup, 1))][case.warmup :]  # the first call when no warm-up
    peak_mb = peak_memory_mb(device)
    memory = {"peak_memory_mb": peak_mb, "peak_memory_above_model_mb": None if peak_mb is None else peak_mb - setup_mb}
    if case.row == REFERENCE:
        times += [run(call) for _ in range(case.repeats - len(times))]
        return {**timing_summary(times, case.batch_size), "ratio_to_forward_backward": 1.0, **memory}

    reference = partial(forward_backward, model, inputs)
    for _ in range(case.warmup):
        run(reference)
    reference_times = [run(reference)]
    neighbours = [reference_times[:]] if times else []  # the first call, made before any reference call
    while len(times) < case.repeats:
        times.append(run(call))
        reference_times.append(run(reference))
        neighbours.append(reference_times[-2:])
    ratios = [t / statistics.fmean(refs) for t, refs in zip(times, neighbours)]
    return {
        **timing_summary(times, case.batch_size),
        "ratio_to_forward_backward": statistics.median(ratios),
        "forward_backward_times_s": reference_times,
        **memory,
    }


def timing_summary(times: list[float], batch_size: int) -> dict:
    median = statistics.median(times)
    return {"times_s": times, "median_s": median, "min_s": min(times), "explanations_per_s": batch_size / median}


def run_in_child(case: Case) -> dict:
    """A fresh process per case, so that its peak memory is its own; a failing method gives ``{"error": ...}``."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(measure, case).result()
        except Exception as error:  # noqa: BLE001 - recorded in the results, the run goes on
            return {"error": f"{type(error).__name__}: {error}"}


def add_memory_ratios(references: dict, rows: dict) -> None:
    """Each row's peak memory over the reference's at the same batch, in total and above the model."""
    for per_batch in rows.values():
        for batch, result in per_batch.items():
            reference = references.get(batch, {})
            for key in ("peak_memory_mb", "peak_memory_above_model_mb"):
                mine, theirs = result.get(key), reference.get(key)
                ratio = None if mine is None or not theirs else mine / theirs
                result[key.replace("_mb", "_ratio_to_forward_backward")] = ratio


def key_figures(rows: dict, batch_sizes: list[int]) -> dict:
    """Issue 8's figures for one model, from the rows that were run (a figure whose rows were not run is absent)."""
    small, large = str(min(batch_sizes)), str(max(batch_sizes))
    ours, cheap = rows.get(KEY_METHOD, {}), rows.get(CHEAP_FEEDBACK, {})
    figures = {}

    def add(name: str, value: float | None, at_most: bool) -> None:
        if value is not None:
            goal = GOALS[name]
            figures[name] = {"value": value, "goal": f"{'<=' if at_most else '>='} {goal}"}
            figures[name]["meets_goal"] = value <= goal if at_most else value >= goal

    add("ours_h_batch1_ratio", ours.get(small, {}).get("ratio_to_forward_backward"), at_most=True)
    add("cheap_feedback_batch1_ratio", cheap.get(small, {}).get("ratio_to_forward_backward"), at_most=True)
    if small != large and "explanations_per_s" in ours.get(small, {}) and "explanations_per_s" in ours.get(large, {}):
        gain = ours[large]["explanations_per_s"] / ours[small]["explanations_per_s"]
        add("ours_h_throughput_gain", gain, at_most=False)
    add("ours_h_memory_ratio", ours.get(large, {}).get("peak_memory_ratio_to_forward_backward"), at_most=True)
    if figures:
        figures["batch_sizes"] = [int(small), int(large)]
    return figures


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(results: dict) -> str:
    lines = [
        "| model | row | batch | median s | × fwd+bwd | expl/s | peak MB | above model MB | peak × fwd+bwd |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model, section in results.items():
        for row, per_batch in {REFERENCE: section["references"], **section["methods"]}.items():
            for batch, r in per_batch.items():
                if "error" in r:
                    lines.append(f"| {model} | {row} | {batch} | {r['error'][:80]} | | | | | |")
                    continue
                cells = [
                    model,
                    row,
                    batch,
                    _cell(r["median_s"], 3),
                    _cell(r["ratio_to_forward_backward"], 2),
                    _cell(r["explanations_per_s"], 3),
                    _cell(r["peak_memory_mb"], 0),
                    _cell(r["peak_memory_above_model_mb"], 0),
                    _cell(r.get("peak_memory_ratio_to_forward_backward", 1.0), 2),
                ]
                lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, threads: int) -> dict:
    info = {"platform": platform.platform(), "processor": cpu_name(), "cpu_count": os.cpu_count()}
    info["torch_threads"] = threads
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="default: all of %(choices)s"
    )
    default_rows = [*tokenattr.METHODS, CHEAP_FEEDBACK, "ours-t:feedback_path=last-attention"]
    parser.add_argument(
        "--methods",
        nargs="+",
        default=default_rows,
        metavar="ROW",
        help=f"method rows, METHOD[:key=value,...] (default: every method and the cheap feedback: {default_rows})",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16], help="default: 1 16")
    parser.add_argument("--steps", type=int, default=20, help="reasoning-feedback steps of the methods that take them")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls at the smallest batch size (default: 5)")
    parser.add_argument(
        "--large-batch-repeats", type=int, default=1, help="timed calls at the larger batch sizes (default: 1)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed calls first (default: 1); with 0 the first timed call also gives the peak memory",
    )
    parser.add_argument("--autocast", choices=list(AUTOCAST_DTYPES), help="run every call under torch.autocast")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's, %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON output (default: benchmarks/results/bench_<device type>.json)")
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.large_batch_repeats < 1 or args.warmup < 0:
        parser.error("batch sizes and repeats must be at least 1, warm-up calls at least 0")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    for row in args.methods:
        try:
            parse_row(row)
        except ValueError as error:
            parser.error(f"--methods: {error}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available in this torch build/machine")
    if args.out is None:
        args.out = RESULTS_DIR / f"bench_{torch.device(args.device).type}.json"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    batch_sizes = sorted(set(args.batch_sizes))
    rows = [REFERENCE, *dict.fromkeys(args.methods)]
    cases = [
        Case(
            model,
            row,
            batch,
            args.device,
            args.threads,
            args.steps,
            args.warmup,
            args.repeats if batch == batch_sizes[0] else args.large_batch_repeats,
            args.seed,
            args.autocast,
        )
        for model in args.models
        for batch in batch_sizes
        for row in rows
    ]
    measured: dict[str, dict[str, dict[str, dict]]] = {model: {row: {} for row in rows} for model in args.models}
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {case.model} {case.row}, batch {case.batch_size} ...", end="", file=sys.stderr)
        result = run_in_child(case)
        summary = result["error"] if "error" in result else f"{result['ratio_to_forward_backward']:.2f} × fwd+bwd"
        print(f" {summary}", file=sys.stderr, flush=True)
        measured[case.model][case.row][str(case.batch_size)] = result

    sections = {}
    for model, per_row in measured.items():
        references = per_row.pop(REFERENCE)
        add_memory_ratios(references, per_row)
        sections[model] = {
            "description": MODELS[model].description,
            "config": {k: v for k, v in asdict(MODELS[model].config).items() if k != "class_names"},
            "references": references,
            "methods": per_row,
            "key_figures": key_figures(per_row, batch_sizes),
        }
    results = {
        "benchmark": "attribution methods on random-weight models of the real sizes (benchmarks/bench.py)",
        "command": "python benchmarks/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "machine": machine_info(args.device, args.threads),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "tokenattr": tokenattr.__version__,
        },
        "settings": {
            "init": f"normal(0, {INIT_STD}) on all parameters but LayerNorms; eval mode; weights trainable",
            "target": "None (predicted class)",
            "steps": args.steps,
            "batch_sizes": batch_sizes,
            "warmup": args.warmup,
            "repeats": {"smallest batch": args.repeats, "larger batches": args.large_batch_repeats},
            "autocast": args.autocast,
            "seed": args.seed,
            "reference": REFERENCE_DEFINITION,
            "timing": (
                "time.perf_counter per call; one spawned process per row; ratio_to_forward_backward = median over "
                f"the row's calls of (its time / mean of the {REFERENCE} calls next to it in the same process)"
            ),
            "memory": (
                "peak RSS (VmHWM)" if torch.device(args.device).type == "cpu" else "torch.cuda.max_memory_allocated"
            )
            + " over the row's first call; *_ratio_to_forward_backward: over the reference row's at the same batch",
            "goals": GOALS,
            "original_design_ratio": ORIGINAL_KEY_RATIO,
        },
        "total_wall_s": time.perf_counter() - started,
        # Other processes slow a shared machine's CPU runs, and two-thread runs far more than their share.
        "load_average_1_5_15min": {"start": load_at_start, "end": os.getloadavg()},
        "models": sections,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(markdown_table(sections))
    for model, section in sections.items():
        for name, figure in section["key_figures"].items():
            if name != "batch_sizes":
                verdict = "meets" if figure["meets_goal"] else "MISSES"
                print(f"{model} {name}: {figure['value']:.2f} (goal {figure['goal']}: {verdict} it)")
    print(f"\nwritten to {args.out}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
