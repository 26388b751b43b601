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
# rec's epoch at K = $1 into $OUT/$2-K$1.txt, exact then with 3 CG steps ($2-cg-K$1.txt);
# the rest of the arguments are overrides
rec_runs() {
  local k="$1" name="$2"
  shift 2
  "$PY" train.py +experiment=bench_32m K="$k" measure_loading=false threads=2 "$@" \
      paths.root="$OUT/$name" 2>&1 | tee "$OUT/$name-K$k.txt"
  "$PY" train.py +experiment=bench_32m K="$k" measure_loading=false threads=2 "$@" \
      train.cg_steps=3 paths.root="$OUT/$name-cg" 2>&1 | tee "$OUT/$name-cg-K$k.txt"
}
for K in "$@"; do
  rec_runs "$K" rec
  "$VENV/bin/python" benchmarks/lenskit_speed.py "$OUT/split" --K "$K" --threads 2 \
      | tee "$OUT/lenskit-K$K.txt"
  if [ -z "${SKIP_IMPLICIT:-}" ]; then
    rec_runs "$K" rec-implicit feedback=implicit train.max_epochs=3 train.eval_test=false \
        train.ranking_max_users=1000
    "$VENV/bin/python" benchmarks/implicit_speed.py "$OUT/split" --K "$K" --threads 2 \
        | tee "$OUT/implicit-K$K.txt"
  fi
done
"$PY" benchmarks/speed_table.py "$OUT" "$@"
