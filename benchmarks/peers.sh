#!/usr/bin/env bash
# rec against LensKit, Surprise and cmfrec on rec's own split rows (README, "Peers").
#   bash benchmarks/peers.sh [OUT] [python -m rec.data split options, default: ml-latest-small]
# Run from anywhere with rec's requirements installed (PYTHON= picks that interpreter). The peers
# are installed once into their own virtualenv ($PEERS_VENV, default benchmarks/.venv-peers).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-outputs/peers}"
shift || true
PY="${PYTHON:-python}"
source benchmarks/peers_venv.sh
if [ "$#" -eq 0 ]; then set -- ml-latest-small; fi
"$PY" -m rec.data split "$@" --out "$OUT/split"
"$VENV/bin/python" benchmarks/peers.py "$OUT/split" "$OUT/predictions"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" benchmarks/peer_table.py "$OUT"
