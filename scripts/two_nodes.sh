#!/usr/bin/env bash
# Two "machines" on this one: two network namespaces joined by a veth pair, one torchrun node
# in each, rendezvous on the veth addresses; checks that the model equals the single-process
# one, and removes the namespaces, also when something fails (README, "Beyond one machine").
#   sudo bash scripts/two_nodes.sh [OUT]          (needs root for ip netns; default OUT: a temp dir)
# Uses only the names and addresses it creates: namespaces rec2n-a/rec2n-b, 10.231.77.1-2/30.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${1:-$(mktemp -d)}"
A=rec2n-a; B=rec2n-b; IPA=10.231.77.1; IPB=10.231.77.2; PORT=29577
cleanup() {
  ip netns pids "$A" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns pids "$B" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT
cleanup  # a previous run's leftovers, if it was killed before its trap ran
ip netns add "$A"
ip netns add "$B"
ip link add rec2n-va type veth peer name rec2n-vb
ip link set rec2n-va netns "$A"
ip link set rec2n-vb netns "$B"
ip -n "$A" addr add "$IPA/30" dev rec2n-va
ip -n "$B" addr add "$IPB/30" dev rec2n-vb
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set rec2n-va up
ip -n "$B" link set rec2n-vb up

ARGS=(data=synthetic data.scale=0.02 K=4 train.max_epochs=5 train.patience=100 threads=1
      tensorboard=false progress=false "paths.data_root=$OUT/data")
echo "one process:"
"$PY" train.py "${ARGS[@]}" "paths.root=$OUT/one" | grep -E "val |machine"
node() {  # $1 namespace, $2 node rank, $3 its interface, $4 its address, $5 hosts the rendezvous
  # (torchrun knows its host, and tells workers where rank 0 is, by the machine's hostname,
  # which both namespaces share: so the addresses are given explicitly)
  ip netns exec "$1" env GLOO_SOCKET_IFNAME="$3" "$PY" -m torch.distributed.run --nnodes=2 \
    --nproc_per_node=1 --node_rank="$2" --rdzv-backend=c10d --rdzv-endpoint="$IPA:$PORT" \
    --rdzv-id=rec2n --rdzv-conf="is_host=$5" --local-addr="$4" train.py "${ARGS[@]}" \
    "paths.root=$OUT/two"
}
echo "two nodes ($A at $IPA, $B at $IPB):"
node "$B" 1 rec2n-vb "$IPB" 0 > "$OUT/node1.log" 2>&1 &
NODE1=$!
node "$A" 0 rec2n-va "$IPA" 1 | grep -E "val |machine"
wait "$NODE1"
"$PY" - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from rec.als.params import TENSORS
from rec.model import Recommender
out = Path(sys.argv[1])
(one,), (two,) = (list((out / run).glob("models/**/*.pt")) for run in ("one", "two"))
a, b = Recommender.load(one), Recommender.load(two)
worst = max(float((getattr(a.params, k) - getattr(b.params, k)).abs().max() /
                  max(float(getattr(a.params, k).abs().max()), 1e-12))
            for k in TENSORS if getattr(a.params, k).numel())
dv = abs(a.metrics["val/rmse"] - b.metrics["val/rmse"])
print(f"largest relative parameter difference {worst:.2e}, validation RMSE difference {dv:.2e}")
if worst > 1e-4 or dv > 1e-5:
    sys.exit("the two-node model differs from the single-process one")
print("the two-node model equals the single-process one")
PYEOF
