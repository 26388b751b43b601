"""The one-sitting speed table from the logs that ``benchmarks/speed.sh`` wrote.

    python benchmarks/speed_table.py OUT K [K ...]

For each K it reads ``OUT/rec-K{K}.txt`` (rec's explicit ``features`` epoch, exact solves),
``OUT/rec-cg-K{K}.txt`` (the same with ``train.cg_steps=3``), ``OUT/lenskit-K{K}.txt``
(LensKit's BiasedMF), ``OUT/rec-implicit-K{K}.txt`` and ``OUT/rec-implicit-cg-K{K}.txt``
(rec's implicit loss, exact and 3 conjugate-gradient steps) and ``OUT/implicit-K{K}.txt``
(implicit 0.7.3's conjugate-gradient ALS, 3 steps), whichever exist, and prints one Markdown
row per K with the ratios the engine issue asks for.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PATTERNS = {
    "rec": r"ALS s/epoch median ([0-9.]+),? min ([0-9.]+)",
    "lenskit": r"s/epoch median ([0-9.]+),? min ([0-9.]+)",
    "rec-cg": r"ALS s/epoch median ([0-9.]+),? min ([0-9.]+)",
    "rec-implicit": r"ALS s/epoch median ([0-9.]+),? min ([0-9.]+)",
    "rec-implicit-cg": r"ALS s/epoch median ([0-9.]+),? min ([0-9.]+)",
    "implicit": r"s/iteration median ([0-9.]+),? min ([0-9.]+)",
}
"""Each log's line with the median and min, as the four programs print it."""


def read(out: Path, name: str, k: int) -> tuple[float, float] | None:
    path = out / f"{name}-K{k}.txt"
    if not path.is_file():
        return None
    found = re.search(PATTERNS[name], path.read_text())
    return (float(found.group(1)), float(found.group(2))) if found else None


def machine(out: Path) -> str:
    for path in sorted(out.glob("rec-K*.txt")):
        found = re.search(r"machine\s+(.*)", path.read_text())
        if found:
            return found.group(1).strip()
    return "unknown"


def cell(t: tuple[float, float] | None) -> str:
    return "-" if t is None else f"{t[0]:.3f} ({t[1]:.3f})"


def ratio(a, b) -> str:
    return "-" if a is None or b is None else f"{a[0] / b[0]:.2f}"


def main() -> None:
    out, ks = Path(sys.argv[1]), [int(k) for k in sys.argv[2:]]
    print(f"# machine: {machine(out)}; seconds per epoch (iteration), median (min)")
    print("| K | rec explicit | rec explicit, 3 CG steps | LensKit BiasedMF | LensKit / rec | "
          "LensKit / rec CG | rec implicit | rec implicit, 3 CG steps | implicit 0.7.3 CG | "
          "rec implicit / implicit | rec implicit CG / implicit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k in ks:
        r, rc, lk = read(out, "rec", k), read(out, "rec-cg", k), read(out, "lenskit", k)
        ri, ric = read(out, "rec-implicit", k), read(out, "rec-implicit-cg", k)
        im = read(out, "implicit", k)
        print(f"| {k} | {cell(r)} | {cell(rc)} | {cell(lk)} | {ratio(lk, r)} | {ratio(lk, rc)} | "
              f"{cell(ri)} | {cell(ric)} | {cell(im)} | {ratio(ri, im)} | {ratio(ric, im)} |")


if __name__ == "__main__":
    main()
