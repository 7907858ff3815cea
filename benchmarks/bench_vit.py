"""Speed and memory of every attribution method on ViT-B/16 (224×224, random weights), relative to one plain
forward+backward pass of the same model, measured in the same run (DESIGN §6).

For each batch size (default 1 and 8) it times:

* the reference, ``forward+backward``: a forward pass, then the gradient of the summed predicted-class logits
  w.r.t. every weight (``torch.autograd.grad``, what ``.backward()`` computes without accumulating into
  ``.grad``). That is the pass the original implementation makes 1 + steps times per Ours-H explanation, so
  the ratio of Ours-H to it compares directly with the original's ~21 (at 20 steps);
* ``forward+input-gradient``: the gradient w.r.t. the input pixels only, no weight gradients — the cheapest
  pass through the whole network and back (a vanilla-gradient explanation). Each method's ratio to it is also
  reported, a stricter unit;
* every method in ``tokenattr.METHODS`` (default all): ``tokenattr.explain(model, pixel_values, method,
  target=None)``, with ``steps`` passed to the methods that take it.

The model is built as ``tokenattr.load_model`` returns one: eval mode, weights trainable.

Every row (one method at one batch size) runs in a fresh spawned process that builds the model and makes
``--warmup`` untimed calls, whose peak memory it reports: peak resident set size (VmHWM) on CPU, and
``torch.cuda.max_memory_allocated`` on CUDA, also given above what the process held once the model and inputs
were built. It then times the calls (``time.perf_counter``; ``torch.cuda.synchronize`` around each call on
CUDA), alternating them with reference calls in the same process so that other processes on a shared machine
slow both sides of each ratio alike: the ratio is the median over the row's calls of its time over the mean of
the reference calls just before and after it. On a CPU shared with other processes, prefer ``--threads 1``:
two OpenMP threads competing for two busy cores run several times slower, and unevenly.

Run from the repository root (on 2 CPU cores with the defaults: about half an hour, most of it Ours-H/T and
the LRP methods at batch 8):

    PYTHONPATH=. python benchmarks/bench_vit.py --threads 1
    PYTHONPATH=. python benchmarks/bench_vit.py --device cuda --large-batch-repeats 5

It writes the JSON to ``--out`` (default ``benchmarks/results/vit_b16_<device type>.json``) and prints a
markdown table to stdout; progress goes to stderr.
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
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

import tokenattr
from tokenattr.models import VisionTransformer, ViTConfig

REFERENCE = "forward+backward"
INPUT_GRADIENT = "forward+input-gradient"
DEFINITIONS = {
    REFERENCE: (
        "forward, then torch.autograd.grad of the summed predicted-class logits w.r.t. every weight "
        "(what .backward() computes; the original's pass, made 1 + steps times per Ours-H explanation)"
    ),
    INPUT_GRADIENT: (
        "forward, then torch.autograd.grad of the summed predicted-class logits w.r.t. the input pixels only"
    ),
}
KEY_METHOD = "ours-h"
ORIGINAL_KEY_RATIO = 21  # the original: 1 + 20 full forward/backward passes per explanation at batch 1
KEY_RATIO_GOAL = 10
INIT_STD = 0.02
MIB = 2**20
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Case:
    """One measurement, run in its own process."""

    method: str  # a name in tokenattr.METHODS, REFERENCE or INPUT_GRADIENT
    batch_size: int
    device: str
    threads: int
    steps: int
    warmup: int
    repeats: int
    seed: int


def build_model(device: torch.device, seed: int) -> VisionTransformer:
    """ViT-B/16 with random weights: N(0, 0.02) everywhere but the LayerNorms (kept at 1 and 0, so the
    attention maps are not flat); eval mode, weights trainable, as ``tokenattr.load_model`` returns models."""
    torch.manual_seed(seed)
    model = VisionTransformer(ViTConfig())
    for module in model.modules():
        if not isinstance(module, nn.LayerNorm):
            for parameter in module.parameters(recurse=False):
                nn.init.normal_(parameter, std=INIT_STD)
    return model.eval().to(device)


def predicted_score(logits: Tensor) -> Tensor:
    return logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum()


def forward_backward(model: nn.Module, pixel_values: Tensor) -> None:
    torch.autograd.grad(predicted_score(model(pixel_values)), list(model.parameters()))


def forward_input_gradient(model: nn.Module, pixel_values: Tensor) -> None:
    pixel_values = pixel_values.detach().requires_grad_()
    torch.autograd.grad(predicted_score(model(pixel_values)), pixel_values)


def row_call(case: Case, model: nn.Module, pixel_values: Tensor) -> Callable[[], object]:
    if case.method == REFERENCE:
        return partial(forward_backward, model, pixel_values)
    if case.method == INPUT_GRADIENT:
        return partial(forward_input_gradient, model, pixel_values)
    options = {"steps": case.steps} if "steps" in tokenattr.METHODS[case.method].options else {}
    return partial(tokenattr.explain, model, pixel_values, method=case.method, **options)


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


def timed(call: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def timing_summary(times: list[float], batch_size: int) -> dict:
    median = statistics.median(times)
    return {"times_s": times, "median_s": median, "min_s": min(times), "explanations_per_s": batch_size / median}


def measure(case: Case) -> dict:
    """Run one row (in its own process): peak memory of the warm-up call(s), then timings.

    Except in the reference row, the timed calls alternate with reference calls, ``ref, call, ref, ..., call,
    ref``, and the row's ratio is the median over its calls of ``call time / mean of the two reference calls
    around it``.
    """
    torch.set_num_threads(case.threads)
    device = torch.device(case.device)
    model = build_model(device, case.seed)
    config = model.config
    pixel_values = torch.randn(case.batch_size, config.in_chans, config.image_size, config.image_size, device=device)
    call = row_call(case, model, pixel_values)

    setup_mb = memory_mb(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(case.warmup):
        timed(call, device)
    peak_mb = peak_memory_mb(device)
    memory = {
        "peak_memory_mb": peak_mb,
        "peak_memory_above_model_mb": None if peak_mb is None else peak_mb - setup_mb,
    }
    if case.method == REFERENCE:
        times = [timed(call, device) for _ in range(case.repeats)]
        return {**timing_summary(times, case.batch_size), "ratio_to_forward_backward": 1.0, **memory}

    reference = partial(forward_backward, model, pixel_values)
    for _ in range(case.warmup):
        timed(reference, device)
    reference_times = [timed(reference, device)]
    times = []
    for _ in range(case.repeats):
        times.append(timed(call, device))
        reference_times.append(timed(reference, device))
    ratios = [t / ((before + after) / 2) for t, before, after in zip(times, reference_times, reference_times[1:])]
    return {
        **timing_summary(times, case.batch_size),
        "ratio_to_forward_backward": statistics.median(ratios),
        "forward_backward_times_s": reference_times,
        **memory,
    }


def run_in_child(case: Case) -> dict:
    """A fresh process per case, so that its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, case).result()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str, threads: int) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def add_input_gradient_ratios(references: dict, methods: dict) -> None:
    """Each row's ratio to the input-gradient pass: its ratio to the reference over that pass's."""
    for per_batch in [*references.values(), *methods.values()]:
        for batch, result in per_batch.items():
            unit = references[INPUT_GRADIENT][batch]["ratio_to_forward_backward"]
            result["ratio_to_forward_input_gradient"] = result["ratio_to_forward_backward"] / unit


def markdown_table(references: dict, methods: dict) -> str:
    lines = [
        "| method | batch | median s | min s | × fwd+bwd | × fwd+input-grad | expl/s | peak MB | above model MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, per_batch in [*references.items(), *methods.items()]:
        for batch, r in per_batch.items():
            cells = [
                name,
                batch,
                f"{r['median_s']:.3f}",
                f"{r['min_s']:.3f}",
                f"{r['ratio_to_forward_backward']:.2f}",
                f"{r['ratio_to_forward_input_gradient']:.2f}",
                f"{r['explanations_per_s']:.2f}",
                *("n/a" if r[k] is None else f"{r[k]:.0f}" for k in ("peak_memory_mb", "peak_memory_above_model_mb")),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def key_figure(methods: dict, steps: int) -> dict | None:
    """Ours-H at batch 1 over one forward+backward: the original costs ~21, the goal is under 10."""
    first = methods.get(KEY_METHOD, {}).get("1")
    if first is None:
        return None
    ratio = first["ratio_to_forward_backward"]
    return {
        "method": KEY_METHOD,
        "steps": steps,
        "batch_size": 1,
        "ratio_to_forward_backward": ratio,
        "ratio_to_forward_input_gradient": first["ratio_to_forward_input_gradient"],
        "original_design_ratio": ORIGINAL_KEY_RATIO,
        "goal": f"ratio_to_forward_backward < {KEY_RATIO_GOAL}",
        "meets_goal": ratio < KEY_RATIO_GOAL,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="default: 1 8")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=list(tokenattr.METHODS),
        default=list(tokenattr.METHODS),
        metavar="METHOD",
        help=f"registered methods to time (default: all: {', '.join(tokenattr.METHODS)})",
    )
    parser.add_argument("--steps", type=int, default=20, help="reasoning-feedback steps of the methods that take them")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls at batch size 1 (default: 5)")
    parser.add_argument(
        "--large-batch-repeats",
        type=int,
        default=1,
        help="timed calls at larger batch sizes (default: 1: Ours-H/T take about 2 min a call at batch 8 on CPU)",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed calls before timing, at the measured batch size (default: 1)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads (default: torch's, %(default)s here)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON output (default: benchmarks/results/vit_b16_<device type>.json)")
    args = parser.parse_args(argv)
    if min(args.batch_sizes) < 1 or args.repeats < 1 or args.large_batch_repeats < 1 or args.warmup < 1:
        parser.error("batch sizes, repeats and warm-up calls must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available in this torch build/machine")
    if args.out is None:
        args.out = RESULTS_DIR / f"vit_b16_{torch.device(args.device).type}.json"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    names = [REFERENCE, INPUT_GRADIENT, *args.methods]
    cases = [
        Case(
            name,
            batch,
            args.device,
            args.threads,
            args.steps,
            args.warmup,
            args.repeats if batch == 1 else args.large_batch_repeats,
            args.seed,
        )
        for batch in args.batch_sizes
        for name in names
    ]
    measured: dict[str, dict[str, dict]] = {name: {} for name in names}
    load_at_start = os.getloadavg()
    started = time.perf_counter()
    for index, case in enumerate(cases, 1):
        print(
            f"[{index}/{len(cases)}] {case.method}, batch {case.batch_size}: "
            f"{case.warmup} warm-up + {case.repeats} timed call(s) ...",
            end="",
            file=sys.stderr,
            flush=True,
        )
        result = run_in_child(case)
        print(
            f" median {result['median_s']:.3f} s, {result['ratio_to_forward_backward']:.2f} × fwd+bwd",
            file=sys.stderr,
            flush=True,
        )
        measured[case.method][str(case.batch_size)] = result
    references = {name: measured.pop(name) for name in (REFERENCE, INPUT_GRADIENT)}
    add_input_gradient_ratios(references, measured)
    key = key_figure(measured, args.steps)

    device_type = torch.device(args.device).type
    results = {
        "benchmark": "ViT-B/16, random weights, 224×224",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "machine": machine_info(args.device, args.threads),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "tokenattr": tokenattr.__version__,
        },
        "config": {
            "model": {k: v for k, v in asdict(ViTConfig()).items() if k != "class_names"},
            "init": f"normal(0, {INIT_STD}) on all parameters but LayerNorms; eval mode; weights trainable",
            "target": "None (predicted class)",
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": {"batch 1": args.repeats, "larger batches": args.large_batch_repeats},
            "seed": args.seed,
            "reference": DEFINITIONS,
            "timing": (
                "time.perf_counter per call; median and min over the timed calls; one spawned process per row; "
                "ratio_to_forward_backward = median over the row's calls of (its time / mean of the "
                f"{REFERENCE} calls made just before and after it in the same process); "
                f"ratio_to_forward_input_gradient = that ratio / the {INPUT_GRADIENT} row's"
            ),
            "memory": (
                "peak RSS (VmHWM) of the row's process over its warm-up call(s)"
                if device_type == "cpu"
                else "torch.cuda.max_memory_allocated over the row's warm-up call(s)"
            ),
        },
        "total_wall_s": time.perf_counter() - started,
        # Other processes slow a shared machine's CPU runs, and two-thread runs far more than their share.
        "load_average_1_5_15min": {"start": load_at_start, "end": os.getloadavg()},
        "references": references,
        "methods": measured,
        "key_figure": key,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(markdown_table(references, measured))
    if key is not None:
        verdict = "meets" if key["meets_goal"] else "MISSES"
        print(
            f"\nOurs-H ({args.steps} steps) at batch 1: {key['ratio_to_forward_backward']:.2f} × one forward+backward "
            f"(original design: ~{ORIGINAL_KEY_RATIO}; goal < {KEY_RATIO_GOAL}: {verdict} it); "
            f"{key['ratio_to_forward_input_gradient']:.2f} × one forward+input-gradient"
        )
    print(f"\nwritten to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
