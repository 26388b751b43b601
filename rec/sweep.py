"""The table at the end of a sweep (``python train.py -m ...``): the report's Algorithm 1.

Each job of a multirun writes ``metrics.json``; at the end this collects them
with the overrides that made them, writes ``sweep_results.csv`` and prints
them sorted by validation RMSE, best first, with seconds per epoch per
million ratings (the scaling run of SPEC §5).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

COLUMNS = ("job", "overrides", "val_rmse", "test_rmse", "val_ndcg", "test_ndcg", "best_epoch",
           "ratings", "als_s_median", "als_s_min", "als_s_per_million", "peak_rss_mb")


def collect(sweep_dir: Path) -> list[dict]:
    """One row per finished job under ``sweep_dir``, best first: by validation RMSE, or by
    validation NDCG@k for the implicit loss, which predicts no ratings."""
    rows = []
    for metrics in Path(sweep_dir).glob("*/metrics.json"):
        s = json.loads(metrics.read_text())
        overrides = metrics.parent / ".hydra" / "overrides.yaml"
        over = " ".join(yaml.safe_load(overrides.read_text()) or []) if overrides.is_file() else ""
        t = s["timing"]
        f = s["final"]
        ndcg = {part: next((v for k, v in f.items() if k.startswith(f"{part}/ndcg@")), math.nan)
                for part in ("val", "test")}
        rows.append({"job": metrics.parent.name, "overrides": over,
                     "val_rmse": f.get("val/rmse", math.nan), "test_rmse": f.get("test/rmse", math.nan),
                     "val_ndcg": ndcg["val"], "test_ndcg": ndcg["test"], "best_epoch": f["best_epoch"],
                     "ratings": s["counts"]["ratings"], "als_s_median": t["als_s_median"],
                     "als_s_min": t["als_s_min"], "als_s_per_million": t["als_s_per_million_ratings"],
                     "peak_rss_mb": t["peak_rss_mb"]})
    return sorted(rows, key=lambda r: -r["val_ndcg"] if math.isnan(r["val_rmse"]) else r["val_rmse"])


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'val RMSE':>9} {'test RMSE':>9} {'val NDCG':>9} {'test NDCG':>9} {'best ep':>7} "
             f"{'ratings':>11} {'s/epoch':>8} {'s/M ratings':>11}  overrides"]
    for r in rows:
        lines.append(f"{r['val_rmse']:9.4f} {r['test_rmse']:9.4f} {r['val_ndcg']:9.4f} "
                     f"{r['test_ndcg']:9.4f} {r['best_epoch']:7d} "
                     f"{r['ratings']:11,d} {r['als_s_median']:8.3f} {r['als_s_per_million']:11.4f}  "
                     f"{r['overrides']}")
    return "\n".join(lines)


def write_summary(sweep_dir: Path) -> None:
    """Write ``sweep_results.csv`` of a finished multirun and print its rows, best first."""
    rows = collect(sweep_dir)
    if not rows:
        return
    with open(sweep_dir / "sweep_results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nsweep: {len(rows)} runs, best first ({sweep_dir / 'sweep_results.csv'})")
    print(format_rows(rows))
    best = rows[0]
    print(f"best: {best['overrides']}  (" + (f"val NDCG {best['val_ndcg']:.4f})"
          if math.isnan(best["val_rmse"]) else f"val RMSE {best['val_rmse']:.4f})"))
