"""scripts/gpu_check.sh, the one prepared GPU check, run dry: the same steps on the CPU at a
tiny scale, so that the day a GPU is lent the script runs first time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO


def test_the_gpu_check_runs_dry_and_writes_its_table(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in result["steps"]}
    assert result["dry"] and all(s["status"] == "ok" for s in steps.values())
    assert steps["equal-gpu"]["equal"] and steps["torchrun"]["equal"]
    benches = [s for s in result["steps"] if s["step"].startswith("bench-")]
    assert [(s["loss"], s["K"]) for s in benches] == [
        ("explicit", 10), ("explicit", 64), ("explicit", 128), ("implicit", 64), ("implicit", 256)]
    for s in benches:
        f = s["figures"]
        assert 0 < f["als_s_min"] <= f["als_s_median"] and f["setup_s"] > 0
        assert {"gram", "solve"} <= set(f["profile"]) or s["kernel"] == "fused"
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| explicit K=") == 3 and table.count("\n| implicit K=") == 2
    assert "torchrun (1 rank) against one process" in table
    # safe to rerun: the run folders are remade, nothing is resumed from the first run
    assert "resume=false" in steps["bench-explicit-K10"]["command"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the check would run")
def test_without_a_gpu_the_check_says_to_run_it_dry(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--dry" in done.stdout
