"""analyze.py end to end on ml-latest-small, with a small K and few epochs (SPEC §4)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rec.analysis.run import run_task
from rec.hydra_config import analyze_config
from rec.errors import RecError
from tests.conftest import RANDOM, REPO

SHRINK = ["K=4", "train.max_epochs=6", "train.ranking_max_users=100", "tensorboard=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("analyze")


def analyze(store: Path, data_root: Path, task: str, *overrides: str) -> tuple[dict, Path]:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("analyze", overrides=[
            f"task={task}", f"paths.data_root={data_root}", f"paths.output_root={store / 'outputs'}",
            f"paths.models={store / 'models'}", *SHRINK, *overrides])
    out = store / "runs" / f"{task}-{uuid.uuid4().hex[:8]}"
    result = run_task(analyze_config(cfg), out)
    saved = json.loads((out / f"{task}.json").read_text())
    assert saved["task"] == task and saved["summary"] == result["summary"]
    return saved, out


def pngs(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.png")}


def test_data_task(store, small_root, small):
    result, out = analyze(store, small_root, "data")
    counts = result["counts"]
    assert (counts["ratings"], counts["users"], counts["movies"], counts["movies_rated"]) == (
        len(small), small.n_users, small.n_items, 9724)
    assert sum(result["rating_histogram"].values()) == len(small)
    for who in ("users", "movies"):
        assert result["power_law"][who]["alpha"] > 1 and result["power_law"][who]["n_tail"] >= 50
    for relation in result["relations"].values():
        assert -1 <= relation["spearman_r"] <= 1
    assert counts["user_degree"]["min"] == 20 and counts["sparsity"] == pytest.approx(1 - 100836 / (610 * 9742))
    assert pngs(out) == {"degrees.png", "ratings_histogram.png", "variance_vs_count.png",
                         "mean_vs_count.png", "variance_vs_mean.png"}


def test_first_analysis_trains_the_missing_model_then_reuses_it(store, small_root, capsys):
    first, _ = analyze(store, small_root, "polarization")
    assert "training it first" in capsys.readouterr().out
    assert (store / "models" / "ml-latest-small" / RANDOM / "features+genre_bias+flipped+year+drift-K4.pt").is_file()
    again, out = analyze(store, small_root, "polarization")
    assert "training it first" not in capsys.readouterr().out
    assert again["correlations"] == first["correlations"]
    for relation in again["correlations"].values():
        for key in ("pearson_r", "spearman_r"):
            assert -1 <= relation[key] <= 1
    for key in ("top_by_norm", "top_by_variance", "top_by_direction"):
        assert len(again[key]) == 10 and all(m["ratings"] >= 20 for m in again[key])
    norms = [m["norm"] for m in again["top_by_norm"]]
    assert norms == sorted(norms, reverse=True)
    assert pngs(out) == {"variance_vs_norm.png", "polarizing_three_ways.png", "polarizing_map.png"}


def test_unreadable_published_model_is_retrained(tmp_path, small_root, capsys):
    published = tmp_path / "models" / "ml-latest-small" / RANDOM / "features+genre_bias+flipped+year+drift-K4.pt"
    published.parent.mkdir(parents=True)
    published.write_bytes(b"an older or damaged file")
    analyze(tmp_path, small_root, "polarization")
    out = capsys.readouterr().out
    assert "not a usable rec model" in out and "training it first" in out
    assert published.stat().st_size > 1000  # replaced by the retrained model


def test_recommend_task(store, small_root):
    result, out = analyze(store, small_root, "recommend", "task.implicit.K=8")
    seed = result["seed"]
    assert seed["title"] == "Lord of the Rings: The Fellowship of the Ring, The (2001)"
    assert set(result["lists"]) == {"report", "cosine", "centered", "neighbours", "fold_in"}
    for records in result["lists"].values():
        assert len(records) == 10
        assert seed["movie_id"] not in {r["movie_id"] for r in records}  # never itself
        assert all(r["ratings"] >= 100 for r in records)
    assert len(result["user"]["top"]) == 10
    assert (out / "recommendations.csv").read_text().count("\n") == 11
    assert pngs(out) == {"recommendations_map.png"}
    loved = result["loved"]  # unfiltered: every movie a candidate, each with its rating count
    assert set(loved) == {"explicit", "implicit"}
    for kind, records in loved.items():
        assert len(records) == 10 and seed["movie_id"] not in {r["movie_id"] for r in records}
        assert (out / f"loved_seed_{kind}.csv").is_file()
    assert all("predicted" in r for r in loved["explicit"])
    assert all("predicted" not in r for r in loved["implicit"])
    assert "the explicit model (rated it 5 stars) and the implicit rung" in result["summary"]


def test_recommend_unknown_seed_lists_close_matches(store, small_root):
    with pytest.raises(RecError, match="Close matches.*Fellowship"):
        analyze(store, small_root, "recommend", "task.seed_movie='Lord of the Rngs Felowship'")


def test_genres_task(store, small_root, small):
    result, out = analyze(store, small_root, "genres")
    assert 0 < result["cophenetic"] <= 1
    assert sorted(g for c in result["clusters"] for g in c) == sorted(small.movies.genre_names)
    assert len(result["clusters"]) == 5
    assert -1 <= result["inter_cluster"] < result["intra_cluster"] <= 1
    assert pngs(out) == {"genre_map.png", "genre_similarity.png", "genre_dendrogram.png"}


def test_genres_needs_the_features_rung(store, small_root):
    with pytest.raises(RecError, match="model=features"):
        analyze(store, small_root, "genres", "model=embeddings")


def test_dimensions_task(store, small_root):
    result, out = analyze(store, small_root, "dimensions", "task.Ks=[2,4]")
    assert [row["K"] for row in result["table"]] == [2, 4]
    for row in result["table"]:
        assert 0 < row["cophenetic"] <= 1 and 0.8 < row["test_rmse"] < 1.0
    for per_k in result["top"].values():
        assert all(len(v) == 10 for v in per_k.values())
    assert {"genre_maps.png", "genre_similarity_K2.png", "genre_similarity_K4.png"} <= pngs(out)


def test_explicit_checkpoint_and_mismatched_hyperparameters(store, small_root, capsys):
    path = store / "models" / "ml-latest-small" / RANDOM / "features+genre_bias+flipped+year+drift-K4.pt"
    analyze(store, small_root, "genres", f"checkpoint={path}")
    assert "training it first" not in capsys.readouterr().out
    analyze(store, small_root, "genres", "model.tau=30")
    assert "trained with" in capsys.readouterr().out  # another tau: retrained, not reused


def test_analyze_command(small_root, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "analyze.py"), "task=data"], cwd=tmp_path,
                         capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "REC_DATA_ROOT": str(small_root),
                              "REC_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "100,836 ratings" in out.stdout
    assert next((tmp_path / "outputs" / "analyze" / "ml-latest-small" / "data").glob("*/data.json"))
    bad = subprocess.run([sys.executable, str(REPO / "analyze.py"), "task=recommend",
                          "task.seed_movie=zzzzqqq", "checkpoint=/nonexistent.pt"], cwd=tmp_path,
                         capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "REC_DATA_ROOT": str(small_root),
                              "REC_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "nonexistent.pt" in bad.stderr


def test_coldstart_task_on_held_out_movies(store, small_root):
    result, out = analyze(store, small_root, "coldstart", "split=cold_movies")
    assert result["cold_rows"] > 2000 and result["split"]["kind"] == "cold_movies"
    rungs = {r["rung"]: r for r in result["rungs"]}
    assert list(rungs) == ["biases", "embeddings", "features", "features+genre_bias"]
    for r in rungs.values():
        assert r["low"] < r["diff"] < r["high"] and r["n"] == result["cold_rows"]
    assert rungs["features"]["minus_reference"] is None
    d = rungs["embeddings"]["minus_reference"]
    assert d["diff"] == pytest.approx(rungs["embeddings"]["diff"] - rungs["features"]["diff"])
    assert sum(g["n"] for g in result["by_genres"] if g["rung"] == "biases") == result["cold_rows"]
    assert pngs(out) == {"coldstart.png"} and (out / "coldstart_by_genres.csv").is_file()


def test_coldstart_task_refuses_an_unknown_rung(store, small_root):
    with pytest.raises(RecError, match="task.rungs / task.reference: wide"):
        analyze(store, small_root, "coldstart", "task.rungs=[biases,wide]")


def test_uncertainty_task_trains_a_gibbs_model_and_checks_its_intervals(store, small_root):
    result, out = analyze(store, small_root, "uncertainty", "inference=gibbs",
                          "inference.burn_in=5", "inference.samples=40", "inference.keep=8",
                          "task.levels=9", "task.top=5")
    cal = {round(c["nominal"], 1): c["observed"] for c in result["calibration"]}
    assert len(cal) == 9 and list(cal.values()) == sorted(cal.values())
    assert abs(cal[0.5] - 0.5) < 0.06 and abs(cal[0.9] - 0.9) < 0.04  # calibrated
    by_count = result["by_count"]
    assert by_count[0]["mean"] > by_count[-1]["mean"] > result["noise_sd"]  # rarer: less sure
    least = result["least_sure"]
    assert len(least) == 5 and all(m["ratings"] >= 1 and m["title"] for m in least)
    assert [m["std"] for m in least] == sorted((m["std"] for m in least), reverse=True)
    assert pngs(out) == {"uncertainty.png"} and (out / "calibration.csv").is_file()


def test_the_analyses_run_on_a_model_with_the_time_terms(store, small_root):
    """Polarization reads the static factors of a model with time terms; the uncertainty task
    predicts each test rating at its timestamp, and its intervals stay calibrated."""
    terms = ["model.time_bins=4", "model.time_drift=true"]
    result, _ = analyze(store, small_root, "polarization", *terms)
    assert result["model"]["time_bins"] == 4 and result["model"]["time_drift"]
    for relation in result["correlations"].values():
        assert -1 <= relation["spearman_r"] <= 1
    result, _ = analyze(store, small_root, "uncertainty", *terms, "inference=gibbs",
                        "inference.burn_in=4", "inference.samples=16", "inference.keep=4",
                        "task.levels=9")
    cal = {round(c["nominal"], 1): c["observed"] for c in result["calibration"]}
    assert abs(cal[0.5] - 0.5) < 0.08 and abs(cal[0.9] - 0.9) < 0.06
