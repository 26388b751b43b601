"""The planning table of README "Beyond one machine": per-rank memory and bytes per epoch.

    python scripts/plan_distributed.py

Computed from :func:`rec.distributed.plan` (the implementation's own accounting), for
ML-32M's shape at K = 10 and for 1 billion ratings (10 M users, 1 M movies) at K = 64,
with the CPU's fused kernel (``plan(..., kernel="torch")`` gives the torch path's).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rec.distributed import plan  # noqa: E402

CASES = [("ML-32M, K=10", 200_948, 87_585, 32_000_204, 10),
         ("1B ratings, K=64", 10_000_000, 1_000_000, 1_000_000_000, 64)]

print("| data | P | grouped ratings / rank | raw ratings held / rank (setup) | val + test / rank "
      "| tables / rank | per-row vectors / rank | training memory / rank | rows sent / rank / epoch "
      "| out-blocks received / rank / epoch | rank 0's rated-movies CSR (end) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
gb = lambda b: f"{b / 2 ** 30:,.2f} GiB" if b >= 2 ** 30 else f"{b / 2 ** 20:,.0f} MiB"
HELD = ("grouped", "read_side", "held_out", "tables", "per_row")
"""What a rank holds while it trains (the raw block only during setup, counted anyway)."""
COLUMNS = (*HELD, "training", "exchange_sent", "outblocks_received", "rank0_rated")
for name, users, items, nnz, k in CASES:
    for parts in (8, 64, 512):
        p = plan(users, items, nnz, k, parts)
        p["training"] = sum(p[c] for c in HELD)
        print(f"| {name} | {parts} | " + " | ".join(gb(p[c]) for c in COLUMNS) + " |")

# The same accounting at the shapes benchmarks/distributed.sh measured (README "torchrun at
# P = 1, 2 and 4"), to hold against the measured peak RSS per rank less the imports' ~330 MiB.
print()
print("| data | P | training memory / rank (plan) |")
print("|---|---|---|")
for name, users, items, nnz, k in [("ML-32M, K=10", 200_948, 87_585, 32_000_204, 10),
                                   ("2M people, K=64", 2_000_000, 100_000, 40_000_000, 64)]:
    for parts in (2, 4):
        p = plan(users, items, nnz, k, parts)
        print(f"| {name} | {parts} | {gb(sum(p[c] for c in HELD))} |")
