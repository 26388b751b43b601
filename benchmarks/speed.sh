#!/usr/bin/env bash
# rec, LensKit and implicit at ML-32M's shape on the same training ratings, in one sitting:
# rec's explicit features epoch against LensKit's BiasedMF, rec's implicit-loss epoch against
# implicit 0.7.3's conjugate-gradient ALS iteration, each rec epoch with exact solves and with
# 3 conjugate-gradient steps a row (train.cg_steps=3, as implicit takes), then one table with
# the machine (benchmarks/README.md).
#   bash benchmarks/speed.sh [OUT] [K ...]        (default: outputs/speed, K = 10 64)
# Run with rec's requirements installed (PYTHON= picks that interpreter). LensKit and implicit
# live in the peers' virtualenv ($PEERS_VENV, default benchmarks/.venv-peers), made here on
# first use. SKIP_IMPLICIT=1 leaves out the implicit-feedback pair.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-outputs/speed}"
shift || true
if [ "$#" -eq 0 ]; then set -- 10 64; fi
PY="${PYTHON:-python}"
source benchmarks/peers_venv.sh
"$PY" -m rec.data split synthetic --scale 1 --out "$OUT/split"
for K in "$@"; do
  "$PY" train.py +experiment=bench_32m K="$K" measure_loading=false threads=2 \
      paths.root="$OUT/rec" 2>&1 | tee "$OUT/rec-K$K.txt"
  "$PY" train.py +experiment=bench_32m K="$K" measure_loading=false threads=2 \
      train.cg_steps=3 paths.root="$OUT/rec-cg" 2>&1 | tee "$OUT/rec-cg-K$K.txt"
  "$VENV/bin/python" benchmarks/lenskit_speed.py "$OUT/split" --K "$K" --threads 2 \
      | tee "$OUT/lenskit-K$K.txt"
  if [ -z "${SKIP_IMPLICIT:-}" ]; then
    "$PY" train.py +experiment=bench_32m feedback=implicit K="$K" measure_loading=false \
        train.max_epochs=3 train.eval_test=false train.ranking_max_users=1000 threads=2 \
        paths.root="$OUT/rec-implicit" 2>&1 | tee "$OUT/rec-implicit-K$K.txt"
    "$PY" train.py +experiment=bench_32m feedback=implicit K="$K" measure_loading=false \
        train.max_epochs=3 train.eval_test=false train.ranking_max_users=1000 threads=2 \
        train.cg_steps=3 paths.root="$OUT/rec-implicit-cg" 2>&1 \
        | tee "$OUT/rec-implicit-cg-K$K.txt"
    "$VENV/bin/python" benchmarks/implicit_speed.py "$OUT/split" --K "$K" --threads 2 \
        | tee "$OUT/implicit-K$K.txt"
  fi
done
"$PY" benchmarks/speed_table.py "$OUT" "$@"
