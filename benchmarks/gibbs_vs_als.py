"""ALS against Gibbs sampling for each rung, on identical rows (README, "Bayesian MF").

    python benchmarks/gibbs_vs_als.py [OUT] [overrides ...]     (default OUT: outputs/gibbs_vs_als)

Trains (or reuses, from OUT's model store) each rung at K = 10 with ``inference=als`` and
``inference=gibbs`` with the shipped defaults, and ``features`` with Gibbs at K = 50; then
prints validation and test RMSE, the Gibbs models' interval coverage, and each paired
difference on the test rows with its bootstrap 95% interval (a Gibbs model's rows are
predicted by the model file, i.e. its ``keep`` thinned samples; the table's RMSE is the
running mean over all ``samples`` sweeps).  Extra arguments are
``train.py`` overrides applied to every run (e.g. ``data=ml-1m``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: rec beside it
from rec.metrics import paired_bootstrap_rmse
from trained import errors_on_test  # beside this file

RUNS = [("biases", 10, "als"), ("biases", 10, "gibbs"), ("embeddings", 10, "als"),
        ("embeddings", 10, "gibbs"), ("features", 10, "als"), ("features", 10, "gibbs"),
        ("features", 50, "gibbs")]
PAIRS = [(("biases", 10, "gibbs"), ("biases", 10, "als")),
         (("embeddings", 10, "gibbs"), ("embeddings", 10, "als")),
         (("features", 10, "gibbs"), ("features", 10, "als")),
         (("features", 50, "gibbs"), ("features", 10, "gibbs"))]


def main(out: Path, overrides: list[str]) -> None:
    results, errors = {}, {}
    for rung, k, how in RUNS:
        metrics, errors[rung, k, how] = errors_on_test(
            out, f"{rung}-K{k}-{how}", [f"model={rung}", f"K={k}", f"inference={how}", *overrides])
        results[rung, k, how] = metrics
    print(f"{'rung':12s} {'K':>3s} {'inference':9s} {'val RMSE':>9s} {'test RMSE':>9s} "
          f"{'50% cov.':>8s} {'90% cov.':>8s}")
    for (rung, k, how), m in results.items():
        cov = (f"{m['test/coverage_50']:8.3f} {m['test/coverage_90']:8.3f}" if how == "gibbs"
               else f"{'-':>8s} {'-':>8s}")
        print(f"{rung:12s} {k:3d} {how:9s} {m['val/rmse']:9.4f} {m['test/rmse']:9.4f} {cov}")
    print(f"paired test RMSE differences ({len(next(iter(errors.values()))):,} rows), 95% intervals:")
    for a, b in PAIRS:
        d = paired_bootstrap_rmse(errors[a], errors[b])
        print(f"  {'/'.join(map(str, a)):20s} minus {'/'.join(map(str, b)):20s} "
              f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]")


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args.pop(0)) if args and "=" not in args[0] else Path("outputs/gibbs_vs_als")
    main(out.resolve(), args)
