"""Compare engine settings inside one process: ``python -m rec.compare`` (SPEC §5).

Timings on shared machines drift by 15-40% between processes, so two
settings are only comparable when their epochs interleave in one process.
This builds one engine per distinct ``chunk``/``batch``/``tile`` (and per dataset
scale) on the same training ratings and runs all their epochs round-robin
(``threads`` is switched per epoch), then prints each case's min and median
ALS seconds per epoch, its median ratio to the defaults' epoch of the same
round, and seconds per million ratings.  The shipped defaults
always run as the reference; each argument changes them.

    python -m rec.compare --scale 0.25 chunk=65536 chunk=262144 batch=4096 tile=65536 threads=1
    python -m rec.compare --scale 0.125,0.25,0.5,1     # growth with size, interleaved
    python -m rec.compare kernel=fused solver=cholesky   # the kernels and solvers
    python -m rec.compare inference=gibbs      # a Gibbs sweep against an ALS epoch
    python -m rec.compare --K 64 cg=3          # 3 conjugate-gradient steps a row (train.cg_steps)
    python -m rec.compare --K 64 woodbury=0    # every row by its Gram (engine.woodbury_below)
    python -m rec.compare --K 64 --feedback implicit woodbury=0   # the same, implicit loss
    python -m rec.compare inference=gibbs inference=gibbs,svdpp=1,flipped=1   # the SVD++ terms
    python -m rec.compare inference=gibbs inference=gibbs,bins=30,drift=1     # the time terms

Each engine holds its own grouped ratings (~0.5 GB at full ML-32M scale).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch

from rec.als.config import RUNGS, ModelConfig
from rec.als.engine import ALS
from rec.als.sizes import EngineSizes
from rec.als.params import Params
from rec.bayes.config import InferenceConfig
from rec.bayes.sampler import GibbsSampler
from rec.cli import run_or_exit
from rec.data.load import DATASETS, DataConfig, load_dataset
from rec.data.ratings import Ratings
from rec.data.splits import make_split
from rec.errors import ConfigError
from rec.hydra_config import compose_run
from rec.system import describe, pick_device
from rec.training import build_engine


@dataclass(frozen=True)
class Setting:
    """One engine configuration to time."""

    chunk: int | None = None
    """Padded ratings per Gram chunk (``engine.chunk_elems``; ``None``: the device's default)."""
    batch: int | None = None
    """Rows per batched solve (``engine.batch_rows``)."""
    tile: int | None = None
    """Most table rows per pass (``engine.tile_cols``; 0: no tiles; ``None``: the kernel's
    default)."""
    threads: int = 0
    """torch threads during its epochs; 0 keeps the process default."""
    kernel: str = "auto"
    """``engine.kernel``: auto, torch or fused."""
    solver: str = "auto"
    """``engine.solver`` of the torch path: auto, rows, lu or cholesky."""
    inference: str = "als"
    """``als`` times ALS epochs; ``gibbs`` times Gibbs sweeps on the same engine layout."""
    cg: int = 0
    """``train.cg_steps``: conjugate-gradient steps a row instead of exact solves (0: exact)."""
    svdpp: int = 0
    """1: ``model.svdpp`` (what a person rated) on."""
    flipped: int = 0
    """1: ``model.svdpp_flipped`` on."""
    bins: int = 0
    """``model.time_bins``: a movie bias per time bin (0: none)."""
    drift: int = 0
    """1: ``model.time_drift`` on."""
    woodbury: float | None = None
    """``engine.woodbury_below`` (``None``: its default)."""

    @classmethod
    def parse(cls, text: str, base: "Setting") -> "Setting":
        """``chunk=131072,batch=32768,tile=32768,threads=2,kernel=torch,solver=lu``; keys
        left out keep ``base``'s values."""
        values = {}
        for item in filter(None, text.split(",")):
            key, _, value = item.partition("=")
            named = key in ("kernel", "solver", "inference") and value.isidentifier()
            ratio = key == "woodbury" and value.replace(".", "", 1).isdigit()
            if key not in cls.__dataclass_fields__ or not (value.isdigit() or named or ratio):
                raise ConfigError(f"cannot read the setting {item!r}: write chunk=N, batch=N, "
                                  "tile=N, threads=N, cg=N, svdpp=1, flipped=1, bins=N, drift=1, "
                                  "woodbury=RATIO, kernel=NAME, "
                                  "solver=NAME or inference=als|gibbs, comma-separated")
            values[key] = value if named else float(value) if ratio else int(value)
        return replace(base, **values)

    def sizes(self) -> EngineSizes:
        """The engine layout this setting times (threads do not change the engine)."""
        return EngineSizes(self.kernel, self.solver, chunk_elems=self.chunk, batch_rows=self.batch,
                           tile_cols=self.tile, woodbury_below=self.woodbury)

    def label(self) -> str:
        default = lambda v: "default" if v is None else v
        return (f"kernel={self.kernel},solver={self.solver},chunk={default(self.chunk)},"
                f"batch={default(self.batch)},tile={default(self.tile)},"
                f"threads={self.threads or 'default'}"
                + (f",inference={self.inference}" if self.inference != "als" else "")
                + (f",cg={self.cg}" if self.cg else "")
                + (",svdpp=1" if self.svdpp else "") + (",flipped=1" if self.flipped else "")
                + (f",bins={self.bins}" if self.bins else "") + (",drift=1" if self.drift else "")
                + (f",woodbury={self.woodbury:g}" if self.woodbury is not None else ""))

    def model(self, base: ModelConfig) -> ModelConfig:
        """The model this setting trains: ``base`` with its SVD++ and time terms."""
        return replace(base, svdpp=bool(self.svdpp), svdpp_flipped=bool(self.flipped),
                       time_bins=self.bins, time_drift=bool(self.drift)).validated()


@dataclass
class Case:
    """One timed combination: a dataset's engine under one setting."""

    data: str
    setting: Setting
    engine: ALS
    params: Params
    sampler: GibbsSampler | None = None

    @property
    def n_train(self) -> int:
        return self.engine.n_train

    def step(self) -> None:
        """One ALS epoch, or one Gibbs sweep (hyperparameters, users, movies, genres)."""
        if self.sampler is None:
            self.engine.epoch(self.params)
        else:
            self.sampler.sweep(self.params)


def time_cases(cases: list[Case], epochs: int) -> list[list[float]]:
    """ALS seconds of each epoch per case, the cases' epochs interleaved."""
    default_threads = torch.get_num_threads()
    seconds: list[list[float]] = [[] for _ in cases]
    for _ in range(epochs):
        for case, times in zip(cases, seconds):
            torch.set_num_threads(case.setting.threads or default_threads)
            start = time.perf_counter()
            case.step()
            if case.engine.device.type == "cuda":
                torch.cuda.synchronize(case.engine.device)
            times.append(time.perf_counter() - start)
    torch.set_num_threads(default_threads)
    return seconds


def build_cases(ratings: Ratings, settings: list[Setting], model: ModelConfig,
                device: torch.device) -> list[Case]:
    """One engine per distinct chunk/batch/tile/inference on the seeded random split's training
    ratings (a Gibbs case: its own parameters and sampler, after one ALS epoch)."""
    train = make_split(ratings, seed=0).train
    built: dict[Setting, tuple] = {}  # threads do not change the engine
    for s in settings:
        key = replace(s, threads=0)
        if key not in built:
            engine = build_engine(ratings, train, s.model(model), s.sizes(), device,
                                  cg_steps=s.cg or None)
            p = engine.initial_params(engine.n_features, 0)
            sampler = None
            if s.inference == "gibbs":
                engine.epoch(p)
                sampler = GibbsSampler(engine, InferenceConfig(method="gibbs"), 0)
            elif s.inference != "als":
                raise ConfigError(f"inference={s.inference}: write inference=als or inference=gibbs")
            built[key] = engine, p, sampler
    return [Case(ratings.name, s, *built[replace(s, threads=0)]) for s in settings]


def shipped_model(name: str, k: int, feedback: str) -> ModelConfig:
    """The rung as ``conf/model/`` and ``conf/feedback/`` ship it, whatever the dataset
    (``conf/tuned/`` left out), as ``python train.py`` trains it.  Timings depend on it: under
    the explicit rungs' priors the implicit loss shrinks every factor to about 1e-8, and its
    conjugate-gradient products fall among float32's subnormal numbers, which are slow."""
    return compose_run([f"model={name}", f"K={k}", f"feedback={feedback}", "~tuned"]).model


def compare(args: argparse.Namespace) -> str:
    if len(args.scale) > 1 and args.data != "synthetic":
        raise ConfigError("several --scale values need --data synthetic")
    if args.epochs < 1:
        raise ConfigError(f"--epochs {args.epochs}: time at least one epoch")
    device = pick_device(args.device)
    model = shipped_model(args.model, args.K, args.feedback)
    base = Setting()
    settings = list(dict.fromkeys([base, *(Setting.parse(t, base) for t in args.settings)]))
    cases = []
    for scale in args.scale:
        ratings = load_dataset(DataConfig(name=args.data, root=args.root, scale=scale),
                               timestamps=any(s.bins or s.drift for s in settings))
        cases += build_cases(ratings, settings, model, device)
        del ratings
    seconds = time_cases(cases, args.epochs + 1)  # the first epoch warms up
    machine = describe(device)
    lines = [f"{args.model} K={args.K} {args.feedback}: ALS seconds per epoch, {args.epochs} "
             "timed epochs per case (after one warm-up), all cases interleaved",
             f"machine: {machine['device']}, {machine['cpu']}, {machine['cpus']} CPUs, "
             f"default {machine['threads']} threads, torch {machine['torch']}"]
    defaults = {c.data: times for c, times in zip(cases, seconds) if c.setting == base}
    for case, times in zip(cases, seconds):
        median = statistics.median(times[1:])
        ran = case.engine.sizes
        label = f"{case.setting.label()} ran={ran.kernel},{ran.solver},tile={ran.tile_cols}"
        lines.append(f"  {case.data:30s} {label:110s} median {median:.3f}  "
                     f"min {min(times[1:]):.3f}  vs defaults "
                     f"{paired_ratio(times[1:], defaults[case.data][1:]):.3f}  "
                     f"per million ratings {median / case.n_train * 1e6:.4f}")
    return "\n".join(lines)


def paired_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds of ``times[i] / reference[i]``: epochs of the same round ran back to
    back, so this cancels the machine's slow drift, which the separate medians do not."""
    return statistics.median(a / b for a, b in zip(times, reference))


def _scales(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write fractions like 0.125,0.25,1") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rec.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*",
                        help="chunk=N,batch=N,tile=N,threads=N,kernel=NAME,solver=NAME "
                             "(one per setting)")
    parser.add_argument("--data", default="synthetic", choices=DATASETS)
    parser.add_argument("--scale", type=_scales, default=[1.0],
                        help="synthetic: fraction of ML-32M, or several, comma-separated")
    parser.add_argument("--root", default=os.environ.get("REC_DATA_ROOT", "data"))
    parser.add_argument("--model", default="features", choices=RUNGS)
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--feedback", default="explicit", choices=("explicit", "implicit"),
                        help="the loss: explicit ratings, or the implicit loss at its defaults")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(run_or_exit(lambda: compare(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
