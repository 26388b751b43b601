"""The MovieLens loaders: real ml-latest-small, each GroupLens format, the cache."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from rec.data import DataConfig, load_dataset
from rec.data import load as load_module
from rec.bundle import read_header
from rec.data.load import cache_path, resolve
from tests.conftest import REPO
from tests.formats import (ML100K_GENRES, write_csv_family, write_dat_family, write_ml100k,
                           write_people)

RATINGS = [(1, 10, 4.0, 964982703), (1, 20, 3.5, 964981247), (2, 10, 5.0, 964982224),
           (2, 30, 0.5, 964983815), (7, 20, 2.5, 964982931), (7, 40, 1.0, 1445714835)]
MOVIES = [(10, "Toy Story (1995)", ["Adventure", "Animation"]),
          (20, "American President, The (1995)", ["Comedy", "Drama", "Romance"]),
          (30, "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)", ["Comedy", "Romance"]),
          (40, "Unrated Shorts (1920)", []), (50, "Never Rated (1999)", ["Drama"])]


def as_tuples(r) -> set:
    return {(int(r.user_ids[u]), int(r.movies.ids[i]), float(x), int(t))
            for u, i, x, t in zip(r.user.tolist(), r.item.tolist(), r.rating.tolist(),
                                  r.timestamp.tolist())}


def test_ml_latest_small_counts(small):
    s = small.summary()
    assert (s["ratings"], s["users"], s["movies"], s["movies_rated"], s["genres"]) == (
        100_836, 610, 9_742, 9_724, 20)
    assert (s["rating_min"], s["rating_max"]) == (0.5, 5.0)
    assert s["rating_mean"] == pytest.approx(3.5016, abs=1e-4)
    halves = torch.bincount((small.rating * 2).long(), minlength=11)[1:].tolist()
    assert halves == [1370, 2811, 1791, 7551, 5550, 20047, 13136, 26818, 8551, 13211]  # SOURCES.md
    assert small.user.dtype == small.item.dtype == torch.int32
    assert small.rating.dtype == torch.float32 and small.timestamp.dtype == torch.int64


def test_ml_latest_small_catalog(small):
    first = small.movies.ids.tolist().index(1)
    assert small.movies.titles[first] == "Toy Story (1995)"
    assert small.movies.genres_of(first) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert "(no genres listed)" in small.movies.genre_names
    assert small.user_ids.tolist() == list(range(1, 611))
    assert sum("," in t for t in small.movies.titles) > 100  # quoted titles kept whole
    genre_a = small.movies.genre_matrix()
    assert torch.allclose(genre_a.sum(1), torch.ones(small.n_items))


@pytest.mark.parametrize("name", ["ml-latest-small", "ml-20m", "ml-25m", "ml-32m", "ml-latest"])
def test_csv_family_round_trip(tmp_path, name):
    write_csv_family(tmp_path / name, RATINGS, MOVIES)
    r = load_dataset(DataConfig(name=name, root=str(tmp_path), download=False))
    assert as_tuples(r) == set(RATINGS)
    assert r.n_items == 5 and r.n_users == 3
    n = r.movies.ids.tolist().index(20)
    assert r.movies.titles[n] == "American President, The (1995)"
    assert r.movies.genres_of(n) == ["Comedy", "Drama", "Romance"]
    assert r.movies.genres_of(r.movies.ids.tolist().index(40)) == ["(no genres listed)"]
    assert r.movies.titles[r.movies.ids.tolist().index(30)].startswith("Amélie")


def test_ml1m_round_trip_latin1(tmp_path):
    whole = [(u, m, float(int(x) or 1), t) for u, m, x, t in RATINGS]
    write_dat_family(tmp_path / "ml-1m", whole, MOVIES, encoding="latin-1")
    r = load_dataset(DataConfig(name="ml-1m", root=str(tmp_path), download=False))
    assert as_tuples(r) == set(whole)
    assert r.movies.titles[r.movies.ids.tolist().index(30)].startswith("Amélie")
    assert r.movies.genres_of(r.movies.ids.tolist().index(20)) == ["Comedy", "Drama", "Romance"]


def test_ml10m_round_trip_from_zip_folder_name(tmp_path):
    write_dat_family(tmp_path / "ml-10M100K", RATINGS, MOVIES, encoding="utf-8")
    r = load_dataset(DataConfig(name="ml-10m", root=str(tmp_path), download=False))
    assert as_tuples(r) == set(RATINGS)
    assert r.movies.titles[r.movies.ids.tolist().index(30)].startswith("Amélie")


def test_ml100k_round_trip_with_folds(tmp_path):
    whole = [(u, m, float(int(x) or 1), t) for u, m, x, t in RATINGS]
    folds = {"u1": (whole[:4], whole[4:]), "ua": (whole[1:], whole[:1])}
    write_ml100k(tmp_path / "ml-100k", whole, MOVIES, folds)
    r = load_dataset(DataConfig(name="ml-100k", root=str(tmp_path), download=False))
    assert as_tuples(r) == set(whole)
    assert r.movies.genre_names[:19] == ML100K_GENRES and r.movies.genre_names[4] == "Children's"
    assert r.movies.genres_of(r.movies.ids.tolist().index(40)) == ["(no genres listed)"]  # no flag set
    assert r.movies.titles[r.movies.ids.tolist().index(30)].startswith("Amélie")
    assert r.movies.genres_of(r.movies.ids.tolist().index(10)) == ["Adventure", "Animation"]
    assert set(r.folds) == {"u1", "ua"}
    key = lambda rows: {(u, m) for u, m, _, _ in rows}
    pairs = [(int(r.user_ids[u]), int(r.movies.ids[i])) for u, i in zip(r.user.tolist(), r.item.tolist())]
    test_u1 = {p for p, f in zip(pairs, r.folds["u1"].tolist()) if f == 1}
    assert test_u1 == key(whole[4:])


def test_unrated_catalog_movies_are_indexed(tmp_path):
    write_csv_family(tmp_path / "ml-latest-small", RATINGS, MOVIES)
    r = load_dataset(DataConfig(root=str(tmp_path), download=False))
    counts = r.item_counts()
    assert counts[r.movies.ids.tolist().index(50)] == 0 and r.n_items == 5


def test_cache_is_used_then_invalidated_by_a_source_change(tmp_path, monkeypatch):
    folder = write_csv_family(tmp_path / "ml-latest-small", RATINGS, MOVIES)
    cfg = DataConfig(root=str(tmp_path), cache_dir=str(tmp_path / "cache"), download=False)
    first = load_dataset(cfg)
    assert cache_path(cfg, resolve(cfg)).is_file()

    def no_parse(*a, **k):
        raise AssertionError("parsed although the cache is valid")
    monkeypatch.setattr(load_module, "assemble", no_parse)
    second = load_dataset(cfg)
    assert as_tuples(second) == as_tuples(first) and second.movies.titles == first.movies.titles
    monkeypatch.undo()
    write_csv_family(folder, RATINGS[:-1], MOVIES)  # the source changes
    third = load_dataset(cfg)
    assert as_tuples(third) == set(RATINGS[:-1])


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, damage, caplog):
    write_csv_family(tmp_path / "ml-latest-small", RATINGS, MOVIES)
    cfg = DataConfig(root=str(tmp_path), cache_dir=str(tmp_path / "cache"), download=False)
    load_dataset(cfg)
    path = cache_path(cfg, resolve(cfg))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        header = read_header(path)
        spec = next(a for a in header["arrays"] if a["name"] == "rating")
        data[header["data_start"] + spec["offset"] + 1] ^= 0xFF  # inside the ratings
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data = bytearray(b"not a cache at all")
    path.write_bytes(bytes(data))
    r = load_dataset(cfg)
    assert as_tuples(r) == set(RATINGS)
    assert "rebuilding" in caplog.text
    assert load_dataset(cfg).movies.titles == r.movies.titles  # and the rebuilt cache is sound


def test_counts_command(small_root, tmp_path):
    out = subprocess.run([sys.executable, "-m", "rec.data", "ml-latest-small", "--root",
                          str(small_root)], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "", "REC_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "100,836" in out.stdout and "9,742 (9,724 rated)" in out.stdout
    assert "0.5 to 5" in out.stdout


def test_id_maps_round_trip(small, small_root):
    raw = np.loadtxt(small_root / "ml-latest-small" / "ratings.csv", delimiter=",", skiprows=1,
                     max_rows=50)
    users = small.user_ids[small.user[:50].long()].numpy()
    items = small.movies.ids[small.item[:50].long()].numpy()
    assert (users == raw[:, 0]).all() and (items == raw[:, 1]).all()
    assert np.allclose(small.rating[:50].numpy(), raw[:, 2])


def test_the_people_files_of_ml100k_and_ml1m_give_the_same_features(tmp_path):
    """u.user's exact ages fall in ml-1m's age groups, users.dat's codes name the same
    occupations; a rating person the file leaves out has no features; the cache keeps them."""
    whole = [(u, m, float(int(x) or 1), t) for u, m, x, t in RATINGS]
    write_people(write_ml100k(tmp_path / "ml-100k", whole, MOVIES), "100k",
                 [(1, 24, "M", "technician"), (2, 53, "F", "writer")])
    write_people(write_dat_family(tmp_path / "ml-1m", whole, MOVIES), "dat",
                 [(1, 18, "M", 17), (2, 50, "F", 20)])
    for name in ("ml-100k", "ml-1m"):
        cfg = DataConfig(name=name, root=str(tmp_path), cache_dir=str(tmp_path / "cache"),
                         download=False)
        for r in (load_dataset(cfg), load_dataset(cfg)):  # parsed, then from the cache
            people = r.people
            of = lambda user: [people.names[i] for i in
                               people.index[people.offsets[user]:people.offsets[user + 1]]]
            users = r.user_ids.tolist()
            assert sorted(of(users.index(1)))[:2] == ["age:18-24", "gender:M"]
            assert sorted(of(users.index(2))) == ["age:50-55", "gender:F", "occupation:writer"]
            assert of(users.index(7)) == []
            d = people.feature_matrix()
            np.testing.assert_allclose(d.sum(1).tolist(), [1.0, 1.0, 0.0])
            row = people.row({"gender": "f", "age": 52, "occupation": "writer"})
            torch.testing.assert_close(row, d[users.index(2)])
    technician = load_dataset(DataConfig(name="ml-100k", root=str(tmp_path), download=False)).people
    engineer = load_dataset(DataConfig(name="ml-1m", root=str(tmp_path), download=False)).people
    assert "occupation:technician" in technician.names
    assert "occupation:technician/engineer" in engineer.names
