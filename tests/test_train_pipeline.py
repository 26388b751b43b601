"""train.py end to end: composed configs, outputs, TensorBoard, shipped defaults, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rec.als import ModelConfig
from rec.compare import main as compare_main
from rec.compare import paired_ratio, shipped_model
from rec.model import Recommender
from rec.hydra_config import compose_run, run_config
from rec.pipeline import train as train_run
from tests.conftest import RANDOM, REPO


def configure(tmp_path: Path, data_root: Path, *overrides: str):
    """The composed train.py config, with every output under ``tmp_path``."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[
            f"paths.data_root={data_root}", f"paths.output_root={tmp_path / 'outputs'}",
            f"paths.models={tmp_path / 'models'}", *overrides])


def train(tmp_path, data_root, *overrides, run="run"):
    cfg = configure(tmp_path, data_root, *overrides)
    return train_run(run_config(cfg), tmp_path / "outputs" / run), cfg


def test_shipped_defaults_order_the_ladder_on_ml_latest_small(small_root, tmp_path, capsys):
    rmse = {}
    for rung in ("biases", "embeddings", "features"):
        summary, _ = train(tmp_path, small_root, f"model={rung}", "tensorboard=false",
                           "train.ranking_max_users=200", run=rung)
        rmse[rung] = summary["final"]["test/rmse"]
    assert rmse["features"] <= 0.870
    assert rmse["biases"] > rmse["embeddings"] >= rmse["features"]
    assert "test RMSE" in capsys.readouterr().out


def test_report_values_overfit_small_data(small_root, tmp_path):
    summary, cfg = train(tmp_path, small_root, "model=embeddings", "+experiment=report",
                         "tensorboard=false", "train.ranking_max_users=100")
    assert (cfg.model.tau, cfg.model.gamma, cfg.model.reg_scaling, cfg.train.patience) == (
        0.25, 1.0, "none", 0)
    assert summary["final"]["test/rmse"] > 1.0  # SPEC §2.1: ~1.07, worse than biases alone


def test_outputs_tensorboard_and_published_model(small_root, tmp_path):
    summary, cfg = train(tmp_path, small_root, "K=4", "train.max_epochs=3", "train.patience=100",
                         "train.ranking_max_users=100")
    run = tmp_path / "outputs" / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["final"]["val/rmse"] == summary["final"]["val/rmse"]
    published = tmp_path / "models" / "ml-latest-small" / RANDOM / "features+genre_bias+flipped+year+drift-K4.pt"
    model = Recommender.load(published)
    assert model.params.item_factors.shape == (9742, 4) and model.dataset == "ml-latest-small"
    logdir = Path(summary["tensorboard"])
    assert f"ml-latest-small_{RANDOM}_features+genre_bias+flipped+year+drift_K4" in logdir.name  # dataset, split, rung and K
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("train/rmse", "val/rmse", "test/rmse", "val/nll", "objective", "time/als_s"):
        assert tag in tags
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3]
    assert events.Scalars("val/rmse")[-1].value == pytest.approx(
        metrics["history"][-1]["val/rmse"], rel=1e-6)
    final = EventAccumulator(str(logdir / "final"), size_guidance={"scalars": 0})
    final.Reload()  # the kept model's metrics: one point at its epoch on the curves, for HPARAMS
    assert not any(t.startswith("final/") for t in tags)
    assert [(e.step, e.value) for e in final.Scalars("val/rmse")] == [
        (summary["final"]["best_epoch"], pytest.approx(summary["final"]["val/rmse"], rel=1e-6))]
    assert "test/ndcg@10" in final.Tags()["scalars"]
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams and b"tau" in hparams["_hparams_/session_start_info"]
    projector = (logdir / "projector_config.pbtxt").read_text()
    assert "movie_embeddings" in projector
    header = next(logdir.glob("*/movie_embeddings/metadata.tsv")).read_text().splitlines()[0]
    assert header == "title\tgenres\tratings"


def test_a_rerun_of_an_unfinished_run_resumes_it(small_root, tmp_path, capsys):
    summary, cfg = train(tmp_path, small_root, "model=biases", "train.max_epochs=2",
                         "tensorboard=false", "train.ranking_max_users=50", run="first")
    info = json.loads((tmp_path / "outputs" / "first" / "run.json").read_text())
    assert info["finished"] is True
    info["finished"] = False  # as if it had been killed after its last checkpoint
    (tmp_path / "outputs" / "first" / "run.json").write_text(json.dumps(info))
    again, _ = train(tmp_path, small_root, "model=biases", "train.max_epochs=2",
                     "tensorboard=false", "train.ranking_max_users=50", run="second")
    assert again["final"] == summary["final"]
    assert not (tmp_path / "outputs" / "second" / "checkpoint.pt").exists()  # continued the first
    printed = capsys.readouterr().out.split("rec: ")[-1]  # the resumed run's summary
    assert "none ran in this process" in printed and "nan" not in printed


def run_cli(args, cwd, env_root):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "REC_DATA_ROOT": str(env_root),
                               "REC_CACHE_DIR": str(cwd / "cache"), "HOME": str(cwd)})


def test_train_command_and_sweep(small_root, tmp_path):
    out = run_cli(["-m", "model=biases", "K=2,3", "train.max_epochs=2", "tensorboard=false",
                   "train.ranking_max_users=50"], tmp_path, small_root)
    assert out.returncode == 0, out.stderr[-2000:]
    results = next((tmp_path / "outputs" / "sweeps").glob("*/sweep_results.csv")).read_text()
    assert len(results.strip().splitlines()) == 3  # header + one row per job
    assert "best:" in out.stdout and "K=2" in results and "K=3" in results
    assert (tmp_path / "models" / "ml-latest-small" / RANDOM / "biases-K0.pt").is_file()


def test_train_command_reports_user_errors_without_traceback(tmp_path):
    out = run_cli(["data=csv", f"data.path={tmp_path / 'missing.csv'}"], tmp_path, tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "missing.csv" in out.stderr
    out = run_cli(["model.tau=-1"], tmp_path, tmp_path / "nowhere")
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_benchmark_experiment_prints_its_figures(tmp_path, capsys):
    summary, cfg = train(tmp_path, tmp_path / "data", "+experiment=bench_32m", "data.scale=0.005",
                         "train.max_epochs=3")
    assert (cfg.data.name, cfg.model.name, cfg.K) == ("synthetic", "features", 10)
    t = summary["timing"]
    assert len(summary["history"]) == 3 and t["epochs_timed"] == 3
    for key in ("load_s", "csv_load_s", "cache_load_s", "setup_s", "als_s_median", "als_s_min",
                "eval_s_median", "peak_rss_mb", "als_s_per_million_ratings"):
        assert t[key] > 0, key
    assert set(t["profile"]) == {"kernel", "genre", "other"}  # the fused kernel, chosen on CPU
    assert sum(t["profile"].values()) == pytest.approx(t["als_s_median"], rel=0.5)
    out = capsys.readouterr().out
    for needle in ("threads", "peak RSS", "s/epoch median", "parse from CSV", "profile"):
        assert needle in out
    assert summary["machine"]["cpu"] and summary["machine"]["threads"] >= 1


def test_compare_times_exact_and_conjugate_gradient_steps_fused_at_any_width(small_root, capsys):
    assert compare_main(["--data", "ml-latest-small", "--root", str(small_root), "--epochs", "1",
                         "--K", "30", "cg=2"]) == 0
    exact, cg = capsys.readouterr().out.splitlines()[2:]
    assert "cg=" not in exact and "ran=fused" in exact  # rows of 32 entries: the wide tiles
    assert ",cg=2 " in cg and "ran=fused" in cg


@pytest.mark.parametrize("rung,feedback", [("latent", "explicit"), ("features", "implicit")])
def test_compare_times_each_rung_with_the_priors_it_ships(rung, feedback):
    # as train.py trains it on a dataset without tuned values, not ModelConfig's defaults
    # (the explicit features rung's: they shrink the implicit loss's factors to ~1e-8)
    shipped = shipped_model(rung, 8, feedback)
    assert shipped == compose_run([f"model={rung}", "K=8", f"feedback={feedback}",
                                   "data=ml-1m"]).model
    assert shipped != ModelConfig(name=rung, K=8, feedback=feedback)


def test_compare_interleaves_settings_in_one_process(small_root, capsys):
    assert compare_main(["--data", "ml-latest-small", "--root", str(small_root), "--epochs", "2",
                 "--K", "4", "kernel=torch,chunk=256,batch=8", "threads=1", "chunk=131072",
                 "kernel=fused,solver=cholesky"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split()[:3] for line in lines[2:]]
    tile, fused_tile = 3 * 2 ** 19 // (4 * 6), 16 * 2 ** 20 // (4 * 6)  # rows [u (4), b, offset]
    sizes = "chunk=default,batch=default,tile=default"
    auto = ["ml-latest-small", f"kernel=auto,solver=auto,{sizes},threads=default",
            f"ran=fused,rows,tile={fused_tile}"]
    assert rows == [auto,
                    ["ml-latest-small", "kernel=torch,solver=auto,chunk=256,batch=8,"
                                        "tile=default,threads=default", f"ran=torch,rows,tile={tile}"],
                    ["ml-latest-small", f"kernel=auto,solver=auto,{sizes},threads=1",
                     f"ran=fused,rows,tile={fused_tile}"],
                    ["ml-latest-small", f"kernel=auto,solver=auto,chunk=131072,batch=default,"
                                        f"tile=default,threads=default",
                     f"ran=fused,rows,tile={fused_tile}"],
                    ["ml-latest-small", f"kernel=fused,solver=cholesky,{sizes},threads=default",
                     f"ran=fused,cholesky,tile={fused_tile}"]]
    assert "2 timed epochs" in lines[0] and "machine: cpu" in lines[1]
    assert all(float(line.split()[-1]) > 0 for line in lines[2:])  # seconds per million ratings
    assert lines[2].split("vs defaults ")[1].startswith("1.000 ")  # the defaults against themselves


def test_paired_ratio_cancels_drift_that_separate_medians_keep():
    slow_phase = [1.0, 1.0, 3.0, 3.0, 3.0]
    assert paired_ratio([0.9 * t for t in slow_phase], slow_phase) == pytest.approx(0.9)
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == pytest.approx(2.0)


def test_compare_rejects_an_unreadable_setting(small_root, capsys):
    with pytest.raises(SystemExit) as stop:
        compare_main(["--data", "ml-latest-small", "--root", str(small_root), "chunks=5"])
    assert stop.value.code == 2 and "write chunk=N" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        compare_main(["--data", "ml-latest-small", "--root", str(small_root), "--scale", "0.5,1"])
    assert stop.value.code == 2 and "need --data synthetic" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        compare_main(["--data", "ml-latest-small", "--root", str(small_root), "--epochs", "0"])
    assert stop.value.code == 2 and "at least one epoch" in capsys.readouterr().err
