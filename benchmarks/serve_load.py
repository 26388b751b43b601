"""Requests per second and p50 / p99 latency of each endpoint of ``rec serve``, on loopback.

    python benchmarks/serve_load.py [--data ml-latest-small synthetic] [--requests 300]
                                    [--clients 4] [--seconds 20]

ml-latest-small gets a briefly trained ``features`` model (K = 10); the synthetic dataset
(ML-32M's shape) gets random parameters of the same shape (an answer's cost does not depend
on the values).  Each model is published to a temporary folder and served by ``rec serve``
in a child process (one uvicorn worker, ``--threads`` torch threads), so the clients do not
share its interpreter; this process then sends each endpoint ``--requests`` requests from
``--clients`` threads (at most ``--seconds`` per endpoint, after a warm-up) and prints one
table row per endpoint with the machine.  Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere: rec beside it

import httpx2 as httpx  # noqa: E402  (the maintained fork of httpx, as starlette uses)

from rec.als import ModelConfig, Params  # noqa: E402
from rec.data import DataConfig, load_dataset, make_split  # noqa: E402
from rec.model import Recommender  # noqa: E402
from rec.system import cpu_model  # noqa: E402
from rec.training import TrainConfig, fit  # noqa: E402


def build(name: str, root: str) -> Recommender:
    ratings = load_dataset(DataConfig(name=name, root=root))
    split = make_split(ratings)
    cfg = ModelConfig(name="features", K=10)
    if name == "synthetic":
        g = torch.Generator().manual_seed(0)
        p = Params(3.5, torch.randn(ratings.n_users, 10, generator=g) * 0.3,
                   torch.zeros(ratings.n_users), torch.randn(ratings.n_items, 10, generator=g) * 0.3,
                   torch.zeros(ratings.n_items), torch.zeros(ratings.n_genres, 10),
                   torch.zeros(ratings.n_genres))
        return Recommender.from_training(ratings, split.train, p, cfg)
    result = fit(ratings, split, cfg, TrainConfig(max_epochs=20, ranking_max_users=100))
    return Recommender.from_training(ratings, split.train, result.params, cfg, result.final)


def requests_for(model: Recommender, rng: random.Random):
    users, movies = model.user_ids.tolist(), model.movies.ids.tolist()
    popular = [int(model.movies.ids[i]) for i in torch.topk(model.item_counts, 200).indices]
    words = [t.split()[0] for t in model.movies.titles[:500] if t.split()]
    return {
        "GET /users/{id}/recommendations": lambda: ("GET", f"/users/{rng.choice(users)}/recommendations?k=10", None),
        "POST /recommendations (20 movies)": lambda: ("POST", "/recommendations", {
            "movies": [{"movie_id": m, "rating": 4.5} for m in rng.sample(popular, 20)], "k": 10}),
        "GET /movies/{id}/similar": lambda: ("GET", f"/movies/{rng.choice(movies)}/similar?k=10", None),
        "GET /predict": lambda: ("GET", f"/predict?user_id={rng.choice(users)}&movie_id={rng.choice(movies)}", None),
        "GET /movies?q=": lambda: ("GET", f"/movies?q={rng.choice(words)}&limit=10", None),
        "GET /health": lambda: ("GET", "/health", None),
    }


def serve(model_file: Path, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "rec.command", "serve", str(model_file),
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"rec serve {model_file} exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("rec serve did not answer /health within 300 s")


def load(base: str, make, n: int, clients: int, seconds: float) -> tuple[int, float, list[float]]:
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    def worker(count: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(count):
                if time.perf_counter() > deadline:
                    return
                method, path, body = make()
                t = time.perf_counter()
                response = client.request(method, path, json=body)
                latencies.append(time.perf_counter() - t)
                response.raise_for_status()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [n // clients + (i < n % clients) for i in range(clients)]))
    return len(latencies), time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["ml-latest-small", "synthetic"])
    parser.add_argument("--root", default=os.environ.get("REC_DATA_ROOT", "data"),
                        help="where MovieLens datasets are read")
    parser.add_argument("--synthetic-root", default=str(REPO / "data"),
                        help="where the synthetic dataset is generated (never a shared data root)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# machine: {cpu_model()}, {args.threads} torch threads, Python "
          f"{platform.python_version()}; rec serve: 1 uvicorn worker; {args.clients} client "
          f"threads in another process, loopback")
    print("| data | endpoint | requests | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for name in args.data:
        model = build(name, args.synthetic_root if name == "synthetic" else args.root)
        with tempfile.TemporaryDirectory() as tmp:
            server, base = serve(model.save(Path(tmp) / "model.pt"), args.threads)
            try:
                for endpoint, make in requests_for(model, random.Random(0)).items():
                    load(base, make, min(20, args.requests), 1, args.seconds)  # warm up
                    n, took, lat = load(base, make, args.requests, args.clients, args.seconds)
                    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else lat * 99
                    print(f"| {model.dataset} | {endpoint} | {n} | {n / took:,.0f} | "
                          f"{1000 * statistics.median(lat):.1f} | {1000 * q[98]:.1f} |", flush=True)
            finally:
                server.terminate()
                server.wait(timeout=30)


if __name__ == "__main__":
    main()
