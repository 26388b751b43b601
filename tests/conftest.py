"""Shared fixtures: the real ml-latest-small, tiny planted-truth ratings, isolated caches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from rec.data import DataConfig, load_dataset
from rec.data.catalog import Catalog
from rec.data.ratings import Ratings
from rec.errors import DataError

REPO = Path(__file__).resolve().parents[1]
RANDOM = "random-0.9-0.05-0.05-seed0"
"""The default split's folder in the model store."""


def shared_root() -> Path:
    """The data root: $REC_DATA_ROOT, else ../shared/movielens if present, else data/."""
    if os.environ.get("REC_DATA_ROOT"):
        return Path(os.environ["REC_DATA_ROOT"]).resolve()
    shared = REPO.parent / "shared" / "movielens"
    return shared.resolve() if shared.is_dir() else REPO / "data"


@pytest.fixture(scope="session")
def small_root(session_cache) -> Path:
    """A root holding ml-latest-small; downloaded there when missing and online."""
    root = shared_root()
    try:
        load_dataset(DataConfig(name="ml-latest-small", root=str(root), cache_dir=str(session_cache)))
    except DataError as e:
        pytest.skip(f"ml-latest-small is unavailable: {e}")
    return root


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def small(small_root, session_cache) -> Ratings:
    """ml-latest-small, loaded once per session."""
    return load_dataset(DataConfig(name="ml-latest-small", root=str(small_root),
                                   cache_dir=str(session_cache)))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Never write caches into the user's ~/.cache during tests.

    Session-scoped so that it is in force before any module- or session-scoped
    fixture loads data (a function-scoped one would be set up after them).
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "default-cache"))
        yield


def random_ratings(n_users=40, n_items=30, n_genres=5, density=0.3, seed=0,
                   cold_users=2, cold_items=3) -> Ratings:
    """Small random ratings on the 0.5-5 grid, with some users and movies left unrated."""
    g = np.random.default_rng(seed)
    mask = g.random((n_users, n_items)) < density
    mask[:cold_users] = False
    mask[:, :cold_items] = False
    user, item = np.nonzero(mask)
    rating = np.round(g.uniform(0.5, 5.0, len(user)) * 2) / 2
    genres = [[f"g{j}" for j in np.flatnonzero(g.random(n_genres) < 0.4)] for _ in range(n_items)]
    return Ratings(
        name="random", user=torch.from_numpy(user.astype(np.int32)),
        item=torch.from_numpy(item.astype(np.int32)),
        rating=torch.from_numpy(rating.astype(np.float32)),
        timestamp=torch.from_numpy(g.integers(0, 10**9, len(user))),
        user_ids=torch.arange(1, n_users + 1),
        movies=Catalog.from_genre_lists(torch.arange(1, n_items + 1) * 10,
                                        [f"Movie {i}" for i in range(n_items)], genres),
        rating_range=(0.5, 5.0))


def assert_killed_run_resumes(r: Ratings, cfg, method: str, tmp_path: Path, names: tuple,
                              relaxation: float = 1.0) -> None:
    """Train ``cfg`` on ``r``'s seeded split by ``method`` (``als`` or ``gibbs``) whole, then
    killed after epoch 6 and resumed from its checkpoint: the same final metrics and the
    same parameters ``names``."""
    import json

    from rec.bayes.chain import sample
    from rec.bayes.config import InferenceConfig
    from rec.data.splits import make_split
    from rec.training import TrainConfig, fit, load_checkpoint

    split = make_split(r, seed=0)

    class Kill:
        def on_epoch(self, epoch, record, params):
            if epoch == 6:
                raise KeyboardInterrupt

    ckpt = tmp_path / "run.pt"
    if method == "als":
        train = TrainConfig(max_epochs=8, patience=100, relaxation=relaxation)
        run = lambda **kw: fit(r, split, cfg, train, fingerprint="x", **kw)
    else:
        inf = InferenceConfig(method="gibbs", warm_start=2, burn_in=2, samples=6, keep=3,
                              checkpoint_every=5)
        run = lambda **kw: sample(r, split, cfg, inf, seed=1, fingerprint="x", **kw).fit
    whole = run()
    with pytest.raises(KeyboardInterrupt):
        run(checkpoint=ckpt, callbacks=(Kill(),))
    assert load_checkpoint(ckpt, "x")
    resumed = run(checkpoint=ckpt)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert same(resumed.final, whole.final)
    for name in names:
        assert torch.equal(getattr(resumed.params, name), getattr(whole.params, name)), name
