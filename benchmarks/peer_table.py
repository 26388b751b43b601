"""rec against the peers on identical rows, with paired bootstrap intervals (rec's environment).

    python benchmarks/peer_table.py OUT

OUT holds ``split/`` (``python -m rec.data split``) and ``predictions/`` (the peers'
per-row test predictions, ``benchmarks/peers.py``).  This trains rec's rungs on the
same split with the shipped defaults (as ``python train.py model=<rung>`` would,
under ``OUT/rec``; and ``features`` as plain ALS without the bias prior), checks that rec's test rows are exactly ``split/test.csv``,
and prints test RMSE and cold-start RMSE (test rows whose movie has no training
rating) of every system, each against rec's ``features`` rung as a paired
bootstrap 95% interval of the RMSE difference.  Every system's predictions are
clipped to the rating range; a row a system cannot predict (NaN) gets the
training mean and is counted.  The table goes to ``OUT/peers.md`` and ``OUT/peers.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir

from rec.hydra_config import run_config
from rec.metrics import paired_bootstrap_rmse
from rec.model import Recommender
from rec.pipeline import train

REPO = Path(__file__).resolve().parents[1]
RUNGS = {"biases": ["model=biases"], "embeddings": ["model=embeddings"], "features": ["model=features"],
         "features-plain": ["model=features", "model.genre_bias=false", "train.relaxation=1",
                            "model.svdpp_flipped=false", "model.movie_year=false",
                            "model.time_drift=false"]}
"""rec's systems: the rungs with the shipped defaults (with the dataset's conf/tuned/ values),
and features as plain ALS without the bias prior, the flipped term, the decades or the drift
(the report's algorithm, rec's earlier default)."""
REFERENCE = "rec-features"


def split_overrides(info: dict) -> list[str]:
    """The train.py overrides that rebuild the split ``split.json`` describes."""
    out = [f"data={info['dataset']}", f"split={info['kind']}",
           "split.fractions=[" + ",".join(f"{x:g}" for x in info["fractions"]) + "]"]
    out += [f"split.seed={info['seed']}"] if "seed" in info else []
    out += [f"split.cold_fraction={info['cold_fraction']:g}"] if "cold_fraction" in info else []
    return out + ([f"split.fold={info['fold']}"] if "fold" in info else [])


def train_rec(out: Path, info: dict, test: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Each rung's clipped predictions of the test rows, trained on the same split."""
    preds = {}
    for rung, model in RUNGS.items():
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*split_overrides(info), *model,
                                               f"paths.root={out / 'rec'}", "tensorboard=false"])
        folder = out / "rec" / f"run-{rung}"
        shutil.rmtree(folder, ignore_errors=True)  # this command's own run of an earlier call
        summary = train(run_config(cfg), folder)
        if summary["split"]["sizes"] != info["sizes"]:
            raise SystemExit(f"rec's {rung} split {summary['split']} is not {info}")
        model = Recommender.load(summary["model_file"])
        preds[f"rec-{rung}"] = model.predict_ids(torch.tensor(test["userId"].to_numpy()),
                                                 torch.tensor(test["movieId"].to_numpy()),
                                                 torch.tensor(test["timestamp"].to_numpy()))
    return preds


def peer_predictions(folder: Path, n: int, fill: float) -> tuple[dict, dict]:
    preds, missing = {}, {}
    for path in sorted(folder.glob("*.csv")):
        p = torch.tensor(pd.read_csv(path)["prediction"].to_numpy(), dtype=torch.float64)
        if p.numel() != n:
            raise SystemExit(f"{path}: {p.numel()} predictions for {n} test rows")
        missing[path.stem] = int(torch.isnan(p).sum())
        preds[path.stem] = torch.nan_to_num(p, nan=fill)
    return preds, missing


def row(name: str, err: torch.Tensor, ref: torch.Tensor, cold: torch.Tensor, missing: int) -> dict:
    out = {"system": name, "test_rmse": float(err.square().mean().sqrt()),
           "cold_rmse": float(err[cold].square().mean().sqrt()), "unpredicted": missing}
    if name != REFERENCE:
        out["vs_features"] = paired_bootstrap_rmse(err, ref)
        out["cold_vs_features"] = paired_bootstrap_rmse(err[cold], ref[cold])
    return out


PAIRS = (("rec-features", "rec-biases"), ("rec-features", "rec-embeddings"),
         ("rec-features-plain", "rec-biases"), ("rec-features-plain", "rec-embeddings"))
"""rec's own rungs against each other on the cold rows, where the genre prior should show."""


def pairs(errors: dict, cold: torch.Tensor) -> list[dict]:
    return [{"a": a, "b": b, "cold": paired_bootstrap_rmse(errors[a][cold], errors[b][cold])}
            for a, b in PAIRS]


def interval(d: dict | None) -> str:
    return "—" if d is None else f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def table(rows: list[dict], info: dict, n_cold: int) -> str:
    lines = [f"{info['dataset']}, split {info['tag']}: {info['sizes']['test']:,} test rows, "
             f"{n_cold} of them cold (movie unseen in training)", "",
             "| system | test RMSE | minus rec features (95% CI) | cold-start RMSE | minus rec features (95% CI) |",
             "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["test_rmse"]):
        lines.append(f"| {r['system']} | {r['test_rmse']:.4f} | {interval(r.get('vs_features'))} | "
                     f"{r['cold_rmse']:.4f} | {interval(r.get('cold_vs_features'))} |")
    return "\n".join(lines)


def pair_lines(compared: list[dict]) -> str:
    return "\n".join(["", "cold-start RMSE differences between rec's rungs (95% CI):"] + [
        f"  {c['a']} minus {c['b']}: {interval(c['cold'])}" for c in compared])


def main(out: Path) -> None:
    info = json.loads((out / "split" / "split.json").read_text())
    train_rows, test = pd.read_csv(out / "split" / "train.csv"), pd.read_csv(out / "split" / "test.csv")
    rating = torch.tensor(test["rating"].to_numpy(), dtype=torch.float64)
    peers, missing = peer_predictions(out / "predictions", len(test), float(train_rows["rating"].mean()))
    preds = {**{k: v.double() for k, v in train_rec(out, info, test).items()}, **peers}
    lo, hi = 0.5, 5.0
    errors = {k: p.clamp(lo, hi) - rating for k, p in preds.items()}
    cold = torch.tensor(~test["movieId"].isin(set(train_rows["movieId"])).to_numpy())
    rows = [row(k, e, errors[REFERENCE], cold, missing.get(k, 0)) for k, e in errors.items()]
    compared = pairs(errors, cold)
    text = table(rows, info, int(cold.sum())) + "\n" + pair_lines(compared)
    (out / "peers.md").write_text(text + "\n")
    (out / "peers.json").write_text(json.dumps({"split": info, "rows": rows, "pairs": compared},
                                               indent=2))
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
