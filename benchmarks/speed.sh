#!/usr/bin/env bash
# rec's ML-32M-shape benchmark and LensKit's BiasedMF on the same training ratings, in one
# sitting, with the ratio (README, "Performance").
#   bash benchmarks/speed.sh [OUT] [K ...]        (default: outputs/speed, K = 10 64)
# Run with rec's requirements installed (PYTHON= picks that interpreter). LensKit lives in the
# peers' virtualenv ($PEERS_VENV, default benchmarks/.venv-peers), made here on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-outputs/speed}"
shift || true
if [ "$#" -eq 0 ]; then set -- 10 64; fi
PY="${PYTHON:-python}"
source benchmarks/peers_venv.sh
"$PY" -m rec.data split synthetic --scale 1 --out "$OUT/split"
for K in "$@"; do
  "$PY" train.py +experiment=bench_32m K="$K" measure_loading=false \
      paths.root="$OUT/rec" 2>&1 | tee "$OUT/rec-K$K.txt"
  "$VENV/bin/python" benchmarks/lenskit_speed.py "$OUT/split" --K "$K" --threads 2 \
      | tee "$OUT/lenskit-K$K.txt"
  "$PY" benchmarks/ratio.py "LensKit / rec (median s/epoch)" \
      "$OUT/lenskit-K$K.txt" "s/epoch median ([0-9.]+)" \
      "$OUT/rec-K$K.txt" "ALS s/epoch median ([0-9.]+)"
done
