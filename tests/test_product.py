"""rec as a product: the `rec` command, the Python API and the example of docs/python.md."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import rec
from rec.command import main
from rec.errors import ConfigError
from rec.hydra_config import CONF
from tests.conftest import REPO


def test_the_rec_command_dispatches_and_refuses_what_it_does_not_know(capsys):
    assert main(["--help"]) == 0 and "rec serve MODEL" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["trian"]) == 2
    assert "rec trian: no such command; the commands are train, analyze" in capsys.readouterr().err


def test_rec_data_and_train_run_from_anywhere(small_root, tmp_path):
    env = {"REC_DATA_ROOT": str(small_root), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    data = subprocess.run([sys.executable, "-m", "rec.command", "data", "ml-latest-small"],
                          capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert data.returncode == 0 and "100,836" in data.stdout, data.stderr
    bad = subprocess.run([sys.executable, "-m", "rec.command", "train", "K=-3"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and \
        len(bad.stderr.strip().splitlines()) == 1


def test_the_configs_ship_inside_the_package():
    assert (CONF / "config.yaml").is_file() and (CONF / "feedback" / "implicit.yaml").is_file()
    assert CONF.parent.name == "rec"
    assert (REPO / "conf").resolve() == CONF.resolve()  # in a clone: the top-level conf/


def test_the_api_refuses_what_the_command_line_refuses():
    assert rec.overrides("ml-100k", K=8, model="embeddings", train={"max_epochs": 3},
                         split={"fractions": [0.8, 0.1, 0.1]}) == [
        "data=ml-100k", "model=embeddings", "train.max_epochs=3", "split.fractions=[0.8, 0.1, 0.1]",
        "K=8"]
    with pytest.raises(ConfigError, match="not a setting"):
        rec.overrides(modle="features")
    with pytest.raises(ConfigError, match="train takes a mapping"):
        rec.overrides(train="fast")
    with pytest.raises(ConfigError, match="model.tau=-1.0 must be positive"):
        rec.train(model={"tau": -1})


def test_the_python_guide_runs(small_root, tmp_path, monkeypatch, capsys):
    text = (REPO / "docs" / "python.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REC_DATA_ROOT", str(small_root))
    namespace: dict = {}
    exec(compile(code, "docs/python.md", "exec"), namespace)
    assert namespace["model"].path.is_file() and namespace["model"].path.is_relative_to(tmp_path)
    assert len(namespace["fan"]) == 5 and namespace["same"].config == namespace["model"].config
    assert namespace["loved"].config.implicit
    assert "100836" in capsys.readouterr().out
