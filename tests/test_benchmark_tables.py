"""The benchmark table scripts read what the runs wrote and compute their ratios right."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def _metrics(folder, peaks, als, comm=None):
    timing = {"peak_rss_mb": max(peaks), "als_s_median": als, "als_s_min": als * 0.9}
    if len(peaks) > 1:
        timing.update(peak_rss_mb_per_rank=peaks, comm_s_median=comm, comm_mb_per_epoch=6.1)
    run = folder / "outputs" / "train" / "x"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "dataset": "synthetic", "model": {"K": 10}, "timing": timing,
        "machine": {"cpu": "Test CPU", "threads": 2 if len(peaks) == 1 else 1}}))


def test_the_distributed_table_reports_each_ranks_share_above_the_imports(tmp_path):
    _metrics(tmp_path / "P1", [1350.0], 0.40)
    _metrics(tmp_path / "P2", [750.0, 740.0], 0.42, comm=0.05)
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "distributed_table.py"),
                           str(tmp_path), "1", "2", "4", "--imports-mb", "350"],
                          capture_output=True, text=True, check=True)
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert "Test CPU" in done.stdout
    assert "| 1.00 |" in rows["1"]
    assert "| 0.40, 0.39 |" in rows["2"]  # (750 - 350) / 1000, (740 - 350) / 1000
    assert "0.050" in rows["2"] and "6.1" in rows["2"]
    assert "no run" in rows["4"]


def test_the_speed_table_divides_medians(tmp_path):
    (tmp_path / "rec-K10.txt").write_text(
        "  machine   cpu, 2 threads, Test CPU\n  epochs    5 run, best 5; ALS s/epoch median "
        "0.400, min 0.380 (x)\n")
    (tmp_path / "lenskit-K10.txt").write_text(  # as benchmarks/lenskit_speed.py prints it
        "lenskit BiasedMF K=10 threads=2 (28,800,184 ratings): s/epoch median 1.800 min 1.700 "
        "(first 2.0, 5 timed; setup 3.1 s; torch threads 2)\n")
    (tmp_path / "rec-implicit-K10.txt").write_text("ALS s/epoch median 0.250, min 0.240\n")
    (tmp_path / "rec-implicit-cg-K10.txt").write_text("ALS s/epoch median 0.500, min 0.450\n")
    (tmp_path / "implicit-K10.txt").write_text(  # as benchmarks/implicit_speed.py prints it
        "implicit 0.7.3 ALS (conjugate gradient), K = 10, 2 threads, 28,800,184 interactions: "
        "s/iteration median 2.000, min 1.900\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed_table.py"),
                           str(tmp_path), "10", "64"], capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert "Test CPU" in lines[0]
    row = next(line for line in lines if line.startswith("| 10 |"))
    assert "| 4.50 |" in row and "| 0.12 |" in row  # 1.8 / 0.4, 0.25 / 2.0 (rounded)
    assert row.endswith("| 0.25 |")  # rec implicit CG / implicit: 0.5 / 2.0
    assert row.count("| - ") == 2  # no rec explicit CG log: its cell and ratio
    assert next(line for line in lines if line.startswith("| 64 |")).count("| - ") == 10
