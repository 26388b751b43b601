"""The one prepared GPU check: speed at ML-32M's shape, GPU = CPU, and torchrun with NCCL.

    bash scripts/gpu_check.sh [OUT]          # on a GPU machine: at most ~8 minutes
    bash scripts/gpu_check.sh --dry [OUT]    # the same steps on the CPU at a tiny scale (tests)

Steps, each a subprocess with its own time limit inside one overall budget (a step that
would start past it is recorded as skipped, so the script always finishes and writes):

1. ``data``: synthetic ratings of ML-32M's shape, generated once into ``OUT/data``.
2. ``equal``: a small ``features`` model (K = 8, float64) trained on the CPU and on the GPU;
   the largest relative parameter difference (dry: the CPU's fused kernel against the torch
   path with the GPU's chunk and batch sizes).
3. ``torchrun``: the GPU run again under ``torchrun --standalone --nproc_per_node=1`` (NCCL on
   a GPU, gloo in the dry run), against the one-process model.
4. ``bench``: ``+experiment=bench_32m`` (3 epochs, per-phase profile) for the explicit
   ``features`` rung at K = 10, 64 and 128 and the implicit loss at K = 64 and 256.

It writes ``OUT/gpu_check.json`` (every step's status, seconds and figures) and
``OUT/gpu_check.md`` (the table for the docs). Every run folder is removed and remade first,
and ``resume=false``, so a second run measures again rather than resuming the first.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BENCH = [("explicit", 10, 0.05), ("explicit", 64, None), ("explicit", 128, 0.5),
         ("implicit", 64, None), ("implicit", 256, None)]
"""(loss, K, the engine issue's target in s/epoch on an H100/H200 or None)."""

SMALL = ["data=synthetic", "model=features", "K=8", "dtype=float64", "train.max_epochs=5",
         "train.patience=100", "train.ranking_max_users=200", "tensorboard=false",
         "measure_loading=false", "progress=false", "resume=false"]
GPU_SIZES = ["engine.kernel=torch", "engine.chunk_elems=16777216", "engine.batch_rows=262144"]


class Check:
    def __init__(self, out: Path, dry: bool, budget_s: float) -> None:
        self.out, self.dry = out, dry
        self.deadline = time.monotonic() + budget_s
        self.steps: list[dict] = []
        self.device = "cpu" if dry else "cuda"
        self.scale = 0.01 if dry else 1.0
        self.common = [f"data.root={out / 'data'}", "progress=false", "resume=false"]

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, argv: list[str], limit_s: float) -> dict:
        """Run one step's command with at most ``limit_s`` (and what the budget has left)."""
        step = {"step": name, "command": " ".join(argv)}
        self.steps.append(step)
        limit = min(limit_s, self.left())
        if limit < 10:
            step.update(status="skipped", why="the check's time budget is spent")
            return step
        log = self.out / "logs" / f"{name}.txt"
        start = time.monotonic()
        try:
            with log.open("w") as f:
                done = subprocess.run(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                      timeout=limit)
            step["status"] = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            step["status"] = f"timed out after {limit:.0f} s"
        step["seconds"] = round(time.monotonic() - start, 1)
        if step["status"] != "ok":
            step["log_tail"] = log.read_text()[-2000:]
        print(f"{name}: {step['status']} ({step['seconds']} s)", flush=True)
        return step

    def train(self, name: str, overrides: list[str], limit_s: float,
              torchrun: bool = False) -> dict:
        root = self.out / "runs" / name
        shutil.rmtree(root, ignore_errors=True)
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc_per_node=1"] if torchrun else [sys.executable])
        step = self.run(name, [*launcher, "train.py", *overrides, *self.common,
                               f"paths.root={root}"], limit_s)
        found = sorted(root.glob("**/metrics.json"))
        if step["status"] == "ok" and found:
            summary = json.loads(found[-1].read_text())
            t = summary["timing"]
            step.update(model_file=summary["model_file"], machine=summary["machine"],
                        kernel=summary["engine"]["kernel"],
                        figures={k: t.get(k) for k in ("als_s_median", "als_s_min", "setup_s",
                                                       "eval_s_median", "peak_rss_mb",
                                                       "peak_gpu_mb", "profile")})
        return step


def largest_difference(a_file: str, b_file: str) -> float:
    """max |a - b| / max |a| over every parameter tensor of two published models."""
    from rec.model import Recommender
    a, b = Recommender.load(a_file).params.state_dict(), Recommender.load(b_file).params.state_dict()
    worst = 0.0
    for key, x in a.items():
        if hasattr(x, "shape") and x.numel():
            y = b[key]
            worst = max(worst, float((x.double() - y.double()).abs().max()
                                     / x.double().abs().max().clamp(min=1e-30)))
    return worst


def check_equal(check: Check) -> None:
    small = [*SMALL, "data.scale=0.01"]
    cpu = check.train("equal-cpu", [*small, "device=cpu"], 120)
    gpu = check.train("equal-gpu", [*small, *(["device=cpu", *GPU_SIZES] if check.dry
                                            else ["device=cuda"])], 120)
    tr = check.train("torchrun", [*small, *(["device=cpu", *GPU_SIZES] if check.dry
                                          else ["device=cuda"])], 180, torchrun=True)
    if "model_file" in cpu and "model_file" in gpu:
        gpu["max_relative_difference_to_cpu"] = largest_difference(cpu["model_file"],
                                                                   gpu["model_file"])
        gpu["equal"] = gpu["max_relative_difference_to_cpu"] <= 1e-6  # float64, 5 epochs
    if "model_file" in tr and "model_file" in gpu:
        tr["max_relative_difference_to_one_process"] = largest_difference(gpu["model_file"],
                                                                          tr["model_file"])
        tr["equal"] = tr["max_relative_difference_to_one_process"] <= 1e-6


def check_speed(check: Check) -> None:
    for loss, K, target in BENCH:
        step = check.train(f"bench-{loss}-K{K}", [
            "+experiment=bench_32m", f"data.scale={check.scale}", f"device={check.device}",
            *(["feedback=implicit"] if loss == "implicit" else []), f"K={K}",
            "measure_loading=false", "train.max_epochs=3", "train.eval_test=false"], 150)
        step.update(loss=loss, K=K, target_s=target)


def table(check: Check, machine: dict) -> str:
    where = machine.get("gpu") or machine.get("cpu") or platform.processor()
    lines = [f"GPU check ({'dry run on the CPU, tiny scale' if check.dry else 'ML-32M shape'}): "
             f"{where}; `bash scripts/gpu_check.sh{' --dry' if check.dry else ''}`", "",
             "| run | kernel | s/epoch median (min) | target | setup s | eval s/epoch | peak GPU MiB "
             "| peak RSS MiB | phases (median s/epoch) |", "|---|---|---|---|---|---|---|---|---|"]
    for s in check.steps:
        if not s["step"].startswith("bench-"):
            continue
        f = s.get("figures")
        if not f:
            lines.append(f"| {s['loss']} K={s['K']} | {s['status']} | | | | | | | |")
            continue
        prof = ", ".join(f"{k} {v:.3f}" for k, v in (f.get("profile") or {}).items())
        gpu = f"{f['peak_gpu_mb']:,.0f}" if f.get("peak_gpu_mb") is not None else "-"
        target = "-" if s["target_s"] is None else f"<= {s['target_s']}"
        lines.append(f"| {s['loss']} K={s['K']} | {s.get('kernel', '')} | {f['als_s_median']:.3f} "
                     f"({f['als_s_min']:.3f}) | {target} | {f['setup_s']:.2f} | "
                     f"{f['eval_s_median']:.3f} | {gpu} | {f['peak_rss_mb']:,.0f} | {prof} |")
    lines.append("")
    for s in check.steps:
        if "equal" in s:
            what = ("the GPU model against the CPU one" if s["step"] == "equal-gpu"
                    else "torchrun (1 rank) against one process")
            diff = s.get("max_relative_difference_to_cpu",
                         s.get("max_relative_difference_to_one_process"))
            lines.append(f"- {what}: largest relative parameter difference {diff:.1e} "
                         f"({'equal' if s['equal'] else 'NOT equal'} to float64 tolerance 1e-6)")
        elif s["status"] != "ok" and not s["step"].startswith("bench-"):
            lines.append(f"- {s['step']}: {s['status']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=REPO / "outputs" / "gpu-check")
    parser.add_argument("--dry", action="store_true", help="on the CPU at a tiny scale")
    parser.add_argument("--budget", type=float, default=460.0,
                        help="seconds for every step together (default 460: under 8 minutes)")
    args = parser.parse_args()
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    import torch
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible to torch; run with --dry to check the script "
              "on the CPU.")
        return 2
    check = Check(out, args.dry, args.budget)
    started = time.monotonic()
    check.run("data", [sys.executable, "-m", "rec.data", "synthetic", "--scale", str(check.scale),
                       "--root", str(out / "data")], 120)
    check_equal(check)
    check_speed(check)
    machine = next((s["machine"] for s in check.steps if "machine" in s),
                   {"device": check.device})
    result = {"dry": args.dry, "torch": torch.__version__, "python": platform.python_version(),
              "machine": machine, "seconds": round(time.monotonic() - started, 1),
              "steps": check.steps}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    text = table(check, machine)
    (out / "gpu_check.md").write_text(text)
    print(text + f"\nwrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} "
          f"in {result['seconds']} s")
    ok = all(s["status"] == "ok" for s in check.steps) and all(
        s.get("equal", True) for s in check.steps)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
