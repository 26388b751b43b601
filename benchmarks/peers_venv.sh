# Sourced by peers.sh and speed.sh: the peers' own virtualenv in $VENV, made on first use.
VENV="${PEERS_VENV:-benchmarks/.venv-peers}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r benchmarks/requirements-peers.txt
fi
