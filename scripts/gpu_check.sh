#!/usr/bin/env bash
# `make gpu-check`: everything a person with an NVIDIA GPU runs to check bertrt
# on it, ending with a summary block to paste into an issue.
#   1. the gpu-marked tests (TensorRT engines vs ONNX Runtime)
#   2. `bertrt build-engine` on the run directory, if its ONNX files exist
#   3. a short benchmark (`python bench/compare.py --quick`)
# Each step is optional: a missing part is reported in the summary, never fatal.
# Usage: bash scripts/gpu_check.sh [RUN_DIR]   (default runs/default)
set -uo pipefail
cd "$(dirname "$0")/.."

RUN="${1:-runs/default}"
PYTHON="${PYTHON:-python}"
LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/bertrt-gpu-check.XXXXXX")"
declare -a SUMMARY=()
note() { SUMMARY+=("$1"); }

py() { "$PYTHON" - "$@" 2>/dev/null; }

echo "== bertrt gpu-check (logs in $LOG_DIR)"

# -- machine and versions ------------------------------------------------------
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu="$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"
  note "gpu: ${gpu:-nvidia-smi found no GPU}"
else
  note "gpu: nvidia-smi not found (no NVIDIA driver visible)"
fi
note "python: $("$PYTHON" --version 2>&1)"
note "torch: $(py <<'PY' || echo "not importable"
import torch
print(torch.__version__, "cuda", torch.version.cuda, "available" if torch.cuda.is_available() else "NOT available")
PY
)"
note "tensorrt: $(py <<'PY' || echo "not importable"
from bertrt.trt.availability import tensorrt_availability
s = tensorrt_availability()
print(s.version if s.ok else s.reason)
PY
)"
note "onnxruntime: $(py <<'PY' || echo "not importable"
import onnxruntime as ort
print(ort.__version__, ",".join(ort.get_available_providers()))
PY
)"
note "bertrt: $(git rev-parse --short HEAD 2>/dev/null || echo "no git")$(git diff --quiet 2>/dev/null || echo "+dirty")"

# -- 1. gpu tests --------------------------------------------------------------
echo "== pytest -m gpu -v"
"$PYTHON" -m pytest -m gpu -v -rs 2>&1 | tee "$LOG_DIR/pytest.log"
rc=${PIPESTATUS[0]}
tests="$(grep -E '^=+ .*(passed|failed|skipped|error).* =+$' "$LOG_DIR/pytest.log" | tail -n 1 | tr -d '=' | xargs)"
note "gpu tests (rc $rc): ${tests:-no summary line}"
while IFS= read -r line; do note "  $line"; done < <(grep -E '^(FAILED|ERROR|SKIPPED)' "$LOG_DIR/pytest.log" | head -n 10)

# -- 2. engines of the run -----------------------------------------------------
if [ -f "$RUN/onnx/model.fp16.onnx" ] || [ -f "$RUN/onnx/model.int8.onnx" ]; then
  echo "== bertrt build-engine --run-dir $RUN"
  "$PYTHON" -m bertrt build-engine --run-dir "$RUN" 2>&1 | tee "$LOG_DIR/build-engine.log"
  rc=${PIPESTATUS[0]}
  note "build-engine $RUN (rc $rc): $(grep -E 'wrote|error' "$LOG_DIR/build-engine.log" | tr '\n' ' ' | cut -c1-400)"
  for meta in "$RUN"/engines/*.json; do
    [ -f "$meta" ] || continue
    note "  $(py "$meta" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{m['precision']}: TensorRT {m['tensorrt_version']}, {m['gpu']['name']} (sm {m['gpu']['compute_capability']}), "
      f"build {m['build_s']} s, layer types {m.get('layer_precisions')}")
PY
)"
  done
else
  note "build-engine: skipped, $RUN has no ONNX files (run: make all DATA=path/to/train-sample.csv)"
fi

# -- 3. short benchmark --------------------------------------------------------
if [ -f bench/compare.py ] && [ -d "$RUN" ]; then
  echo "== python bench/compare.py --quick --run-dir $RUN"
  "$PYTHON" bench/compare.py --quick --run-dir "$RUN" 2>&1 | tee "$LOG_DIR/bench.log"
  rc=${PIPESTATUS[0]}
  note "bench --quick (rc $rc): results in $RUN/bench/results.md"
  if [ -f "$RUN/bench/results.md" ]; then
    while IFS= read -r line; do note "  $line"; done < <(head -n 40 "$RUN/bench/results.md")
  fi
else
  note "bench: skipped ($( [ -f bench/compare.py ] || echo "bench/compare.py missing; " )$( [ -d "$RUN" ] || echo "no run dir $RUN" ))"
fi

# -- summary -------------------------------------------------------------------
echo
echo "----- 8< ----- bertrt gpu-check summary (paste into the issue) -----"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '%s\n' "${SUMMARY[@]}"
echo "----- >8 -------------------------------------------------------------"
