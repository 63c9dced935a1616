#!/usr/bin/env bash
# Entrypoint of the bertrt NVIDIA container (Dockerfile.trt).
# Says up front whether the GPU, TensorRT and the mounted runs/ are usable,
# then hands over to NVIDIA's own entrypoint (banner, CUDA compat setup), which
# runs the command (default: make gpu-check).
set -euo pipefail
cd /workspace/bertrt

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bertrt container: no NVIDIA GPU visible; start it with --gpus all" \
       "(make docker-run does) on a host with the NVIDIA Container Toolkit." >&2
fi
if [ ! -w runs ]; then
  echo "bertrt container: /workspace/bertrt/runs is not writable by uid $(id -u);" \
       "rebuild with 'docker build --build-arg UID=$(stat -c %u runs 2>/dev/null || echo 1000)'" \
       "or run with --user \"\$(id -u):\$(id -g)\"." >&2
  exit 3
fi
export HOME="${HOME:-/home/bertrt}"
[ -w "$HOME" ] || export HOME=/tmp

if [ -x /opt/nvidia/nvidia_entrypoint.sh ]; then
  exec /opt/nvidia/nvidia_entrypoint.sh "$@"
fi
exec "$@"
