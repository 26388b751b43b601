"""Every command and snippet README.md and docs/ show runs (shrunk to a few epochs and small data);
the README stays short and the docs site builds."""

from __future__ import annotations

import importlib.util
import itertools
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from rec.analysis.run import run_task
from rec.als.sizes import default_sizes
from rec.compare import Setting, build_parser
from rec.hydra_config import analyze_config, run_config
from rec.pipeline import train
from tests.conftest import REPO
from tests.test_train_pipeline import configure

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
README = re.sub(r"\s+", " ", "\n".join(path.read_text() for path in DOCS))
"""The README, the guides of docs/ and the benchmark log: where the commands are shown."""
SHRINK = ("train.max_epochs=2", "tensorboard=false", "train.ranking_max_users=50",
          "engine.kernel=torch")
"""A few epochs on small data, on the torch path: the fused kernel compiles once per width, a
minute at K = 20 on 2 cores, and tests/test_kernel.py checks it against the torch path."""

RUNS = [
    "python train.py model=embeddings K=20 model.tau=10 split=temporal",
    "python train.py feedback=implicit K=32",
    "python train.py +experiment=report",
    "python train.py data=csv data.path=my.csv data.columns.user=uid "
    "data.columns.item=iid data.columns.rating=stars data.columns.timestamp=null",
]
SWEEPS = [
    "python train.py -m K=8,10,12 model.tau=0.1,0.25,1",
    "python train.py -m +experiment=tune_small model=features",
    "python train.py -m +experiment=bench_32m data.scale=0.125,0.25,0.5,1",
]


def overrides(command: str) -> list[str]:
    """The Hydra overrides of a README command line (none of them needs shell quoting)."""
    return [w for w in command.split()[2:] if w != "-m"]


@pytest.mark.parametrize("command", RUNS + SWEEPS + [
    "python analyze.py task=polarization model=embeddings model.reg_scaling=count model.tau=0.15 "
    "model.gamma=0.2", "python -m rec.data ml-latest-small", "python train.py +experiment=bench_32m",
    "bash benchmarks/peers.sh", "python -m rec.data split ml-latest-small --out DIR",
    "python benchmarks/topn.py", "bash benchmarks/implicit_speed.sh",
    "python train.py +experiment=topn_small"])
def test_command_is_in_the_readme(command):
    assert command in README


@pytest.mark.parametrize("command", RUNS)
def test_readme_training_commands_run(command, small_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.csv").write_text("uid,iid,stars\n" + "".join(
        f"{u},{i},{1 + (u * i) % 5}\n" for u in range(1, 41) for i in range(1, 31) if (u + i) % 3))
    cfg = configure(tmp_path, small_root, *overrides(command), *SHRINK)
    summary = train(run_config(cfg), tmp_path / "run")
    final = summary["final"]
    assert final["val/rmse"] > 0 if "feedback=implicit" not in command else final["val/ndcg@10"] > 0


@pytest.mark.parametrize("command", SWEEPS)
def test_readme_sweeps_compose(command, tmp_path):
    """Each point of the grid composes to the configuration it names."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides(command) if "," not in o],
                       return_hydra_config=True)
    grid = {k: v.split(",") for k, v in (o.split("=", 1) for o in overrides(command) if "," in o)}
    grid.update({k: str(v).split(",") for k, v in (base.hydra.sweeper.params or {}).items()})
    assert grid, command
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for point in itertools.product(*grid.values()):
            chosen = [f"{k}={v}" for k, v in zip(grid, point)]
            cfg = compose("config", overrides=[o for o in overrides(command) if "," not in o] + chosen)
            for k, v in zip(grid, point):
                node = cfg
                for part in k.split("."):
                    node = node[part]
                assert str(node) == v or float(node) == float(v)


def test_readme_python_snippet(small_root, tmp_path):
    cfg = configure(tmp_path, small_root, *SHRINK)
    summary = train(run_config(cfg), tmp_path / "run")
    snippet = re.search(r"```python\n(.*?)```", (REPO / "docs" / "training.md").read_text(),
                        re.S).group(1)
    published = '"models/ml-latest-small/random-0.9-0.05-0.05-seed0/features+genre_bias+flipped+year+drift-K10.pt"'
    assert published in snippet
    snippet = snippet.replace(published, repr(summary["model_file"]))
    scope: dict = {}
    exec(snippet, scope)
    m = scope["m"]
    assert len(m.recommend(user_id=1, k=10)) == 10 and 0.5 <= m.predict(user_id=1, movie_id=4993) <= 5


def test_readme_analysis_command_runs(small_root, tmp_path):
    command = ("python analyze.py task=polarization model=embeddings model.reg_scaling=count "
               "model.tau=0.15 model.gamma=0.2")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("analyze", overrides=[
            *overrides(command), f"paths.data_root={small_root}", f"paths.output_root={tmp_path}",
            f"paths.models={tmp_path / 'models'}", "train.max_epochs=15", "tensorboard=false",
            "train.ranking_max_users=50"])
    result = run_task(analyze_config(cfg), tmp_path / "out")
    assert result["correlations"]["variance_vs_norm"]["pearson_r"] > 0.6  # the report's link


COMPARES = [
    "python -m rec.compare chunk=65536 chunk=262144 batch=4096 tile=65536 threads=1",
    "python -m rec.compare --scale 0.125,0.25,0.5,1",
    "python -m rec.compare --scale 1 tile=0 tile=131072 chunk=65536 chunk=262144 batch=8192",
    "python -m rec.compare --scale 0.5 --K 64 tile=0",
]


@pytest.mark.parametrize("command", COMPARES)
def test_readme_compare_commands_parse(command):
    assert command in README
    args = build_parser().parse_args(command.split()[3:])
    base = Setting(*default_sizes("cpu"))
    settings = [Setting.parse(t, base) for t in args.settings]
    assert all(s != base for s in settings) and args.scale


def test_the_readme_is_short_and_links_what_exists():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        assert (REPO / target).exists(), target


def test_the_docs_site_builds_without_a_warning(tmp_path):
    mkdocs = pytest.importorskip("mkdocs.commands.build")
    from mkdocs.config import load_config
    config = load_config(str(REPO / "mkdocs.yml"), site_dir=str(tmp_path / "site"))
    mkdocs.build(config)  # strict: a broken link or a page left out of nav fails the build
    assert (tmp_path / "site" / "python" / "index.html").is_file()


def test_the_configuration_reference_is_current():
    """docs/configuration.md is generated from the config dataclasses: a new key, a changed
    default or docstring must be regenerated, so the page never disagrees with the code."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_config_key_is_documented():
    import dataclasses
    spec = importlib.util.spec_from_file_location("config_reference",
                                                  REPO / "scripts" / "config_reference.py")
    config_reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_reference)
    text = config_reference.render()
    assert "|  |" not in text  # a field without a docstring
    from rec.run_config import RunConfig
    for group in ("data", "split", "model", "train", "engine", "inference", "paths"):
        for f in dataclasses.fields(getattr(RunConfig(), group)):
            key = "K" if (group, f.name) == ("model", "K") else f"{group}.{f.name}"
            assert f"| `{key}` |" in text, key
