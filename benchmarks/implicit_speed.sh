#!/usr/bin/env bash
# rec's implicit-feedback epoch at ML-32M's shape beside implicit 0.7.3's CPU ALS iteration on
# the same training rows, in one sitting, with the ratios (benchmarks/README.md, "Top-N"): rec
# with exact row solves, and with 3 conjugate-gradient steps a row as implicit takes.
#   bash benchmarks/implicit_speed.sh [OUT] [K ...]     (default: outputs/implicit-speed, K = 10 64)
# Run with rec's requirements installed (PYTHON= picks that interpreter); implicit lives in the
# peers' virtualenv ($PEERS_VENV, default benchmarks/.venv-peers), made here on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-outputs/implicit-speed}"
shift || true
if [ "$#" -eq 0 ]; then set -- 10 64; fi
PY="${PYTHON:-python}"
source benchmarks/peers_venv.sh
"$PY" -m rec.data split synthetic --scale 1 --out "$OUT/split"
for K in "$@"; do
  for run in rec rec-cg; do
    extra=()
    if [ "$run" = rec-cg ]; then extra=(train.cg_steps=3); fi
    "$PY" train.py +experiment=bench_32m feedback=implicit K="$K" measure_loading=false \
        train.max_epochs=3 train.eval_test=false train.ranking_max_users=1000 threads=2 \
        "${extra[@]}" paths.root="$OUT/$run" 2>&1 | tee "$OUT/$run-K$K.txt"
  done
  "$VENV/bin/python" benchmarks/implicit_speed.py "$OUT/split" --K "$K" --threads 2 \
      | tee "$OUT/implicit-K$K.txt"
  for run in rec rec-cg; do
    "$PY" benchmarks/ratio.py "$run / implicit (median s per epoch / iteration)" \
        "$OUT/$run-K$K.txt" "ALS s/epoch median ([0-9.]+)" \
        "$OUT/implicit-K$K.txt" "s/iteration median ([0-9.]+)"
  done
done
