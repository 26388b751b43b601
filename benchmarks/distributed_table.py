"""The P = 1 / 2 / 4 table from the run folders that ``benchmarks/distributed.sh`` wrote.

    python benchmarks/distributed_table.py OUT P [P ...]

Reads each ``OUT/P{P}/**/metrics.json`` and prints one Markdown row per P: seconds per ALS
epoch (median, min), seconds in collectives and MB sent per rank per epoch, peak RSS per
rank, and each rank's peak RSS as a share of one process's above the imports alone
(``--imports-mb``, what ``python -c "import rec.pipeline"`` peaks at).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def summary(out: Path, p: int) -> dict | None:
    found = sorted((out / f"P{p}").glob("**/metrics.json"))
    return json.loads(found[-1].read_text()) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("P", type=int, nargs="+")
    parser.add_argument("--imports-mb", type=float, default=0.0)
    args = parser.parse_args()
    runs = {p: summary(args.out, p) for p in args.P}
    one = runs.get(1)
    base = one["timing"]["peak_rss_mb"] - args.imports_mb if one else None
    first = next((s for s in runs.values() if s), None)
    if first:
        m = first["machine"]
        print(f"# {first['dataset']}, K={first['model']['K']}; machine: {m['cpu']}")
    print("| P | threads per rank | ALS s/epoch median (min) | in collectives s/epoch | "
          "MB sent per rank per epoch | peak RSS per rank (MiB) | share of one process "
          "above the imports |")
    print("|---|---|---|---|---|---|---|")
    for p, s in runs.items():
        if s is None:
            print(f"| {p} | no run | | | | | |")
            continue
        t = s["timing"]
        peaks = t.get("peak_rss_mb_per_rank", [t["peak_rss_mb"]])
        share = "-" if base is None else ", ".join(
            f"{(x - args.imports_mb) / base:.2f}" for x in peaks)
        comm = f"{t['comm_s_median']:.3f}" if "comm_s_median" in t else "-"
        sent = f"{t['comm_mb_per_epoch']:,.1f}" if "comm_mb_per_epoch" in t else "-"
        print(f"| {p} | {s['machine']['threads']} | {t['als_s_median']:.3f} "
              f"({t['als_s_min']:.3f}) | {comm} | {sent} | "
              f"{', '.join(f'{x:,.0f}' for x in peaks)} | {share} |")


if __name__ == "__main__":
    main()
