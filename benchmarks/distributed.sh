#!/usr/bin/env bash
# Training under torchrun at P = 1, 2 and 4 ranks on one machine, one after another: seconds per
# ALS epoch, seconds in collectives and MB sent per rank per epoch, and peak RSS per rank, with
# each rank's share of one process's memory above the imports (benchmarks/README.md).
#   bash benchmarks/distributed.sh [OUT] [OVERRIDES ...]
# OVERRIDES are train.py's (default: the ML-32M-shaped benchmark, 4 epochs). P = 1 runs with
# 2 threads, P >= 2 with one thread per rank (4 ranks on 2 cores are slow, and that is fine:
# memory and bytes are what this measures there). PYTHON= picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-outputs/distributed}"
shift || true
if [ "$#" -eq 0 ]; then
  set -- +experiment=bench_32m measure_loading=false train.profile=false train.max_epochs=4
fi
PY="${PYTHON:-python}"
mkdir -p "$OUT"
IMPORTS=$("$PY" -c "import resource, rec.pipeline; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
for P in 1 2 4; do
  threads=$([ "$P" -eq 1 ] && echo 2 || echo 1)
  rm -rf "$OUT/P$P"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$P" train.py "$@" \
      threads="$threads" resume=false tensorboard=false progress=false \
      paths.root="$OUT/P$P" 2>&1 | tail -12 | tee "$OUT/P$P.txt"
done
"$PY" benchmarks/distributed_table.py "$OUT" 1 2 4 --imports-mb "$IMPORTS"
