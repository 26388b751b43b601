"""rec's K = 10 epoch against a plain C++ epoch of the same steps, in one sitting.

    python benchmarks/anchor_speed.py [--root data] [--epochs 5] [--threads 2] [--out DIR]

The engine issue's speed anchor at K = 10 is a hand-written fused kernel of rec's user and
movie steps. ``benchmarks/anchor/als_anchor.cpp`` is one (plain C++, compiled here with
``g++ -O3 -march=native -fopenmp``): this script writes the random split's training rows of
the synthetic data at ML-32M's shape (``rec.data`` ``synthetic``, seed 0) grouped by person
and by movie, times the anchor's epochs, then rec's ``features`` epoch (``rec.compare``'s
default case: user, movie and genre steps, the fused kernel) in this process, then the anchor
again, and prints the medians and minima with the machine.  The anchor's steps hold the
movies' prior means fixed at the genre prior's start (W = 0); its loss pass is timed apart,
as rec's epoch has none.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from anywhere: rec beside it

from rec.compare import Setting, build_cases, shipped_model, time_cases  # noqa: E402
from rec.data import DataConfig, load_dataset, make_split  # noqa: E402
from rec.system import cpu_model  # noqa: E402

SOURCE = HERE / "anchor" / "als_anchor.cpp"
K = 10


def write_rows(path: Path, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray,
               n_rows: int, n_cols: int) -> None:
    """The anchor's row file: ``n_rows, n_cols, nnz`` (int64), ``ptr`` (int64), ``col``
    (int32), ``val`` (float32), the ratings grouped by ``rows``."""
    order = np.argsort(rows, kind="stable")
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=ptr[1:])
    with open(path, "wb") as f:
        np.array([n_rows, n_cols, rows.size], dtype=np.int64).tofile(f)
        ptr.tofile(f)
        cols[order].astype(np.int32).tofile(f)
        vals[order].astype(np.float32).tofile(f)


def build(out: Path) -> Path:
    binary = out / "als_anchor"
    if not binary.exists() or binary.stat().st_mtime < SOURCE.stat().st_mtime:
        subprocess.run(["g++", "-O3", "-march=native", "-fopenmp", "-o", str(binary),
                        str(SOURCE)], check=True)
    return binary


def run_anchor(binary: Path, rows: Path, epochs: int, threads: int) -> list[tuple[float, float]]:
    """(steps, loss) seconds of each epoch after the first."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    text = subprocess.run([str(binary), str(rows), str(epochs + 1)], check=True, env=env,
                          capture_output=True, text=True).stdout
    print(text, end="")
    found = re.findall(r"steps ([\d.]+) s loss ([\d.]+) s", text)
    return [(float(a), float(b)) for a, b in found][1:]


def stats(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("REC_DATA_ROOT", "data"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/anchor"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    binary = build(args.out)
    ratings = load_dataset(DataConfig(name="synthetic", root=args.root))
    train = make_split(ratings, seed=0).train.numpy()
    user, item = ratings.user.numpy()[train], ratings.item.numpy()[train]
    value = ratings.rating.numpy()[train]
    write_rows(args.out / "by_user.bin", user, item, value, ratings.n_users, ratings.n_items)
    write_rows(args.out / "by_item.bin", item, user, value, ratings.n_items, ratings.n_users)
    with open(args.out / "prior.bin", "wb") as f:
        np.array([ratings.n_items], dtype=np.int64).tofile(f)
        np.zeros((ratings.n_items, K + 1), dtype=np.float32).tofile(f)
    del user, item, value, train
    first = run_anchor(binary, args.out, args.epochs, args.threads)
    model = shipped_model("features", K, "explicit")
    cases = build_cases(ratings, [Setting()], model, torch.device("cpu"))
    del ratings
    rec = time_cases(cases, args.epochs + 1)[0][1:]
    del cases
    second = run_anchor(binary, args.out, args.epochs, args.threads)
    anchor = [s for s, _ in first + second]
    print(f"# machine: {cpu_model()}, {args.threads} threads; synthetic data of ML-32M's shape, "
          f"K = {K}, {args.epochs} epochs each after a warm-up, median (min) seconds")
    print("| anchor steps (run 1) | rec features epoch | anchor steps (run 2) | anchor loss pass "
          "| rec / anchor (medians) |")
    print("|---|---|---|---|---|")
    print(f"| {stats([s for s, _ in first])} | {stats(rec)} | {stats([s for s, _ in second])} | "
          f"{stats([b for _, b in first + second])} | "
          f"{statistics.median(rec) / statistics.median(anchor):.2f} |")


if __name__ == "__main__":
    main()
