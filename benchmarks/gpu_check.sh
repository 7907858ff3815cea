#!/usr/bin/env bash
# The GPU check of issue 8, for one CUDA device (about 3-4 minutes on an H200):
#   1. the tests with a CUDA path (tests/test_reasoning_feedback.py runs every test on "cpu" and "cuda";
#      tests/test_clip.py compares every CLIP method's maps on CUDA with the CPU's);
#   2. the benchmark on CUDA in float32, batch 1 and 16: Ours-H (both feedback paths), Ours-T and two gradient
#      baselines on ViT-B/16, BERT-base (128 tokens) and CLIP ViT-B/32; Ours-H (both paths) on ViT-L/16 and
#      BERT-base (512 tokens);
#   3. the same on ViT-B/16 under bfloat16 autocast, for Ours-H (both paths) and Ours-T.
# Usage, from the repository root:  benchmarks/gpu_check.sh [OUT]   (OUT defaults to $OUT, then gpu_check/)
# Writes OUT/nvidia-smi.txt, OUT/pytest.txt, OUT/bench_cuda_float32.json, OUT/bench_cuda_float32_large.json and
# OUT/bench_cuda_bfloat16.json; exits non-zero if a step failed (the others still run).
set -uo pipefail

out="${1:-${OUT:-gpu_check}}"
mkdir -p "$out"
python="${PYTHON:-python}"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
status=0
step() {  # step NAME COMMAND...: run it, log it, remember a failure
  local name="$1"; shift
  echo "== $name: $*" >&2
  local started=$SECONDS
  "$@" || { echo "== $name FAILED" >&2; status=1; }
  echo "== $name took $((SECONDS - started)) s" >&2
}

step device nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv -f "$out/nvidia-smi.txt"
step tests "$python" -m pytest -q -p no:cacheprovider tests/test_reasoning_feedback.py tests/test_clip.py -k cuda \
  >"$out/pytest.txt"
# One spawned process per row (a few seconds each on a GPU machine): the row lists keep the check under 5 minutes.
bench=("$python" benchmarks/bench.py --device cuda --batch-sizes 1 16 --repeats 3 --large-batch-repeats 3)
key_rows=(ours-h ours-h:feedback_path=last-attention)
step bench-float32 "${bench[@]}" --models vit-b16 bert-base-128 clip-b32 \
  --methods "${key_rows[@]}" ours-t generic-attribution transformer-attribution --out "$out/bench_cuda_float32.json"
step bench-float32-large "${bench[@]}" --models vit-l16 bert-base-512 --methods "${key_rows[@]}" \
  --out "$out/bench_cuda_float32_large.json"
step bench-bfloat16 "${bench[@]}" --models vit-b16 --autocast bfloat16 --methods "${key_rows[@]}" ours-t \
  --out "$out/bench_cuda_bfloat16.json"
exit $status
