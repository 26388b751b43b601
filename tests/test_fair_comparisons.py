"""Fair comparisons: a split's exact rows for other libraries, and paired bootstrap intervals."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from rec.als import ModelConfig
from rec.data.__main__ import main as data_main
from rec.data.splits import SplitConfig
from rec.errors import RecError
from rec.metrics import paired_bootstrap_rmse
from rec.model import Recommender
from rec.training import TrainConfig, fit


def test_split_command_writes_the_exact_rows_of_the_split(small, small_root, tmp_path, capsys):
    out = tmp_path / "split"
    assert data_main(["split", "ml-latest-small", "--root", str(small_root), "--seed", "4",
                      "--out", str(out)]) == 0
    assert "90,752 train, 5,042 val, 5,042 test" in capsys.readouterr().out
    split = SplitConfig(seed=4).make(small)
    info = json.loads((out / "split.json").read_text())
    assert info["seed"] == 4 and info["sizes"] == {k: int(v.numel()) for k, v in split.parts().items()}
    for part, index in split.parts().items():
        rows = pd.read_csv(out / f"{part}.csv")
        assert list(rows.columns) == ["userId", "movieId", "rating", "timestamp"]
        idx = index.long()
        assert rows["userId"].tolist() == small.user_ids[small.user[idx].long()].tolist()
        assert rows["movieId"].tolist() == small.movies.ids[small.item[idx].long()].tolist()
        assert rows["rating"].tolist() == small.rating[idx].tolist()
        assert rows["timestamp"].tolist() == small.timestamp[idx].tolist()
    movies = pd.read_csv(out / "movies.csv")
    assert movies["movieId"].tolist() == small.movies.ids.tolist()
    assert movies["genres"][0] == "|".join(small.movies.genres_of(0))


def test_split_command_writes_the_held_out_users_given_rows(small, small_root, tmp_path, capsys):
    out = tmp_path / "strong"
    assert data_main(["split", "ml-latest-small", "--root", str(small_root), "--kind", "strong",
                      "--fold-in", "0.5", "--out", str(out)]) == 0
    split = SplitConfig("strong", fold_in=0.5).make(small)
    assert f"{split.fold_in.numel():,} given to fold held-out users in" in capsys.readouterr().out
    rows = pd.read_csv(out / "fold_in.csv")
    idx = split.fold_in.long()
    assert rows["userId"].tolist() == small.user_ids[small.user[idx].long()].tolist()
    assert rows["movieId"].tolist() == small.movies.ids[small.item[idx].long()].tolist()
    info = json.loads((out / "split.json").read_text())
    assert info["fold_in"] == 0.5 and info["sizes"]["fold_in"] == split.fold_in.numel()
    assert set(pd.read_csv(out / "test.csv")["userId"]).isdisjoint(pd.read_csv(out / "train.csv")["userId"])


def test_split_command_refuses_options_the_split_would_ignore(small_root, tmp_path, capsys):
    args = ["split", "ml-latest-small", "--root", str(small_root), "--out", str(tmp_path / "x")]
    assert data_main([*args, "--kind", "temporal", "--seed", "3"]) == 2
    assert "temporal split has no seed" in capsys.readouterr().err
    assert data_main([*args, "--fold", "u1"]) == 2
    assert "predefined" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_paired_bootstrap_interval():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4000, generator=g)
    same = paired_bootstrap_rmse(base, base.clone(), n_boot=300)
    assert same["diff"] == 0 and same["low"] == same["high"] == 0 and not same["excludes_zero"]
    worse = base * 1.05  # RMSE exactly 5% higher on every draw
    r = paired_bootstrap_rmse(worse, base, n_boot=300)
    rmse = float(base.double().square().mean().sqrt())
    assert r["diff"] == pytest.approx(0.05 * rmse, rel=1e-6) and r["excludes_zero"]
    assert r["low"] < r["diff"] < r["high"] and r["high"] - r["low"] < 0.02 * rmse  # paired: tight
    noise = paired_bootstrap_rmse(base + 0.01 * torch.randn(4000, generator=g), base, n_boot=300)
    unpaired_width = 2 * 1.96 * rmse / (2 * 4000) ** 0.5 * 2 ** 0.5
    assert noise["high"] - noise["low"] < unpaired_width / 5
    with pytest.raises(ValueError):
        paired_bootstrap_rmse(base, base[:10])


def test_predict_ids_equals_one_at_a_time_predictions(small):
    split = SplitConfig().make(small)
    cfg = ModelConfig(name="features", K=3)
    result = fit(small, split, cfg, TrainConfig(max_epochs=2, ranking_max_users=20))
    model = Recommender.from_training(small, split.train, result.params, cfg)
    rows = split.test[:50].long()
    users, movies = small.user_ids[small.user[rows].long()], small.movies.ids[small.item[rows].long()]
    many = model.predict_ids(users, movies)
    assert many.tolist() == pytest.approx([model.predict(int(u), int(m)) for u, m in zip(users, movies)])
    with pytest.raises(RecError, match="movie id 999999999 is not in ml-latest-small"):
        model.predict_ids(users[:1], torch.tensor([999999999]))
