#!/usr/bin/env bash
# The one prepared GPU check (docs/performance.md): speed at ML-32M's shape for K = 10, 64, 128
# and the implicit loss at K = 64, 256, with the phase profile; a small model trained on the GPU
# against the CPU one; torchrun --nproc_per_node=1 with NCCL. Writes OUT/gpu_check.json and
# OUT/gpu_check.md. Finishes within ~8 minutes and is safe to rerun.
#   bash scripts/gpu_check.sh [OUT]          on a GPU machine (default OUT: outputs/gpu-check)
#   bash scripts/gpu_check.sh --dry [OUT]    the same steps on the CPU at a tiny scale
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" scripts/gpu_check.py "$@"
