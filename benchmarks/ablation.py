"""Which accuracy terms earn their keep: each alone and all together, ALS and Gibbs, against
the ``features`` rung without them on identical rows (issue 27, item 4).

    python benchmarks/ablation.py [OUT] [overrides ...]     (default OUT: outputs/ablation)

For each evaluation (ml-latest-small's random and temporal splits; ml-100k's official folds
u1-u5 when their files are under the data root) it trains, or reuses from OUT's model store,
the shipped ``features`` model at K = 10 with every term off, then each switched on alone
(what a person rated, who rated the movie, the release decade, the 50 most used tags, a
movie bias per time bin, a person's drift, and where the dataset describes its people their
age group, gender and occupation), then
all together, by ALS and by Gibbs, and prints validation and test RMSE and the paired test-RMSE difference
against the same inference without the terms, with its bootstrap 95% interval.  The rows
"... + held-out identities" let the sums also hold which movies a person rated outside
training (never the values): the convention of the Netflix Prize and of the published SVD++
numbers, reported beside the default (training only).  Extra arguments are ``train.py``
overrides applied to every run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: rec beside it
from rec.hydra_config import compose_run
from rec.metrics import paired_bootstrap_rmse
from trained import errors_on_test  # beside this file

OFF = {"model.svdpp": "false", "model.svdpp_flipped": "false", "model.svdpp_heldout": "false",
       "model.movie_year": "false", "model.movie_tags": "0", "model.time_bins": "0",
       "model.time_drift": "false", "model.person_features": "false"}
ALL = {"model.svdpp": "true", "model.svdpp_flipped": "true", "model.movie_year": "true",
       "model.movie_tags": "50", "model.time_bins": "10", "model.time_drift": "true"}
TERMS = [
    ("features (no terms)", {}),
    ("+ what a person rated (svdpp)", {"model.svdpp": "true"}),
    ("+ flipped (who rated the movie)", {"model.svdpp_flipped": "true"}),
    ("+ release decade (movie_year)", {"model.movie_year": "true"}),
    ("+ 50 most used tags (movie_tags)", {"model.movie_tags": "50"}),
    ("+ movie bias per time bin (time_bins=10)", {"model.time_bins": "10"}),
    ("+ person's drift (time_drift)", {"model.time_drift": "true"}),
    ("+ what the person is (person_features)", {"model.person_features": "true"}),
    ("all terms", ALL),
    ("all terms + held-out identities", {**ALL, "model.svdpp_heldout": "true"}),
]
METHODS = ("als", "gibbs")


def evaluations(data_root: Path) -> list[tuple[str, list[str], bool]]:
    """(name, overrides, whether the dataset describes its people) of each evaluation."""
    out = [("ml-latest-small random", ["data=ml-latest-small", "split=random"], False),
           ("ml-latest-small temporal", ["data=ml-latest-small", "split=temporal"], False)]
    folder = data_root / "ml-100k"
    if (folder / "u1.base").is_file():
        out += [(f"ml-100k {f}", ["data=ml-100k", "split=predefined", f"split.fold={f}"],
                 (folder / "u.user").is_file()) for f in ("u1", "u2", "u3", "u4", "u5")]
    return out


def main(out: Path, overrides: list[str]) -> None:
    probe = compose_run(overrides)
    print(f"| evaluation | terms | inference | val RMSE | test RMSE | test diff vs no terms [95%] |")
    print("|---|---|---|---|---|---|")
    for evaluation, args, people in evaluations(Path(probe.data.root)):
        for method in METHODS:
            base_errors = None
            for label, terms in TERMS:
                if "person_features" in label and not people:
                    continue  # a dataset that describes no people refuses the term
                if label.startswith("all terms") and people:
                    terms = {**terms, "model.person_features": "true"}
                keys = [f"{k}={v}" for k, v in {**OFF, **terms}.items()]
                metrics, errors = errors_on_test(out, f"{evaluation}-{method}-{label}",
                                          [*args, f"inference={method}", "K=10", *keys,
                                           *overrides])
                if base_errors is None:
                    base_errors, diff = errors, "-"
                else:
                    d = paired_bootstrap_rmse(errors, base_errors)
                    diff = f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
                print(f"| {evaluation} | {label} | {method} | {metrics['val/rmse']:.4f} | "
                      f"{metrics['test/rmse']:.4f} | {diff} |", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args.pop(0)) if args and "=" not in args[0] else Path("outputs/ablation")
    main(out.resolve(), args)
