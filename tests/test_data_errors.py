"""Bad input (SPEC §1.4): each error names the file and the problem and damages nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rec.data import DataConfig, load_dataset, make_split
from rec.data.load import cache_path, resolve
from rec.errors import ConfigError, DataError
from tests.conftest import REPO
from tests.formats import write_csv_family
from tests.test_data_movielens import MOVIES, RATINGS, as_tuples

HEADER = "userId,movieId,rating,timestamp"


@pytest.fixture
def dataset(tmp_path):
    """A valid dataset whose cache exists; yields (config, ratings.csv, cache file, cache bytes)."""
    folder = write_csv_family(tmp_path / "ml-latest-small", RATINGS, MOVIES)
    cfg = DataConfig(root=str(tmp_path), cache_dir=str(tmp_path / "cache"), download=False)
    load_dataset(cfg)
    cache = cache_path(cfg, resolve(cfg))
    return cfg, folder / "ratings.csv", cache, cache.read_bytes()


def break_ratings(path, lines: list[str]) -> None:
    path.write_text("\n".join([HEADER, *lines]) + "\n")


def assert_error(cfg, cache, cache_bytes, *needles):
    with pytest.raises(DataError) as e:
        load_dataset(cfg)
    message = str(e.value)
    for needle in needles:
        assert needle in message, message
    assert cache.read_bytes() == cache_bytes  # the existing cache is left as it was
    return message


def test_missing_file(tmp_path):
    (tmp_path / "ml-latest-small").mkdir()
    (tmp_path / "ml-latest-small" / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(root=str(tmp_path), download=False))
    assert "ratings.csv" in str(e.value) and str(tmp_path / "ml-latest-small") in str(e.value)


def test_missing_dataset_without_download_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(name="ml-25m", root=str(tmp_path), download=False))
    message = str(e.value)
    for needle in (str(tmp_path / "ml-25m"), "https://files.grouplens.org/datasets/movielens/ml-25m.zip",
                   "data=synthetic", "REC_DATA_ROOT"):
        assert needle in message


def test_wrong_columns(dataset):
    cfg, ratings, cache, before = dataset
    ratings.write_text("user,movie,stars,time\n1,10,4.0,5\n")
    assert_error(cfg, cache, before, str(ratings), "line 1", "userId", "movieId")


def test_unparsable_line(dataset):
    cfg, ratings, cache, before = dataset
    break_ratings(ratings, ["1,10,4.0,964982703", "1,20,3.5", "2,10,5.0,964982224"])
    assert_error(cfg, cache, before, str(ratings), "line 3", "expected 4 fields")


def test_non_numeric_value(dataset):
    cfg, ratings, cache, before = dataset
    break_ratings(ratings, ["1,10,4.0,964982703", "1,20,3.5,964981247", "2,x10,5.0,964982224"])
    assert_error(cfg, cache, before, str(ratings), "line 4", "movieId", "'x10' is not an integer")


def test_nan_rating(dataset):
    cfg, ratings, cache, before = dataset
    break_ratings(ratings, ["1,10,4.0,964982703", "1,20,NaN,964981247"])
    message = assert_error(cfg, cache, before, str(ratings), "line 3", "rating nan is not")
    assert "np." not in message and "float64" not in message  # plain values, not numpy reprs


def test_missing_rating(dataset):
    cfg, ratings, cache, before = dataset
    break_ratings(ratings, ["1,10,4.0,964982703", "1,20,,964981247"])
    assert_error(cfg, cache, before, str(ratings), "line 3", "empty")


def test_out_of_range_rating(dataset):
    cfg, ratings, cache, before = dataset
    break_ratings(ratings, ["1,10,4.0,964982703", "1,20,3.5,964981247", "2,10,7.0,964982224"])
    message = assert_error(cfg, cache, before, str(ratings), "line 4", "7.0", "[0.5, 5.0]")
    assert "data.rating_scale" in message


def test_duplicate_pairs_are_an_error_by_default(dataset):
    cfg, ratings, cache, before = dataset
    break_ratings(ratings, ["1,10,4.0,100", "1,20,3.5,200", "2,10,5.0,300", "1,10,2.0,400"])
    assert_error(cfg, cache, before, str(ratings), "lines 2 and 5", "(user 1, movie 10)",
                 "data.duplicates=keep_last")


def test_duplicates_keep_last_keeps_the_latest(dataset):
    cfg, ratings, _, _ = dataset
    break_ratings(ratings, ["1,10,4.0,500", "1,20,3.5,200", "2,10,5.0,300", "1,10,2.0,400"])
    cfg.duplicates = "keep_last"
    r = load_dataset(cfg)
    assert as_tuples(r) == {(1, 10, 4.0, 500), (1, 20, 3.5, 200), (2, 10, 5.0, 300)}


def test_movie_listed_twice(dataset):
    cfg, ratings, cache, before = dataset
    movies = ratings.parent / "movies.csv"
    movies.write_text("movieId,title,genres\n10,A (1990),Drama\n10,B (1991),Comedy\n")
    assert_error(cfg, cache, before, str(movies), "movie id 10")


def test_split_that_leaves_a_part_empty(tmp_path):
    write_csv_family(tmp_path / "ml-latest-small", RATINGS[:4], MOVIES)
    r = load_dataset(DataConfig(root=str(tmp_path), download=False))
    with pytest.raises(DataError) as e:
        make_split(r)
    assert "ml-latest-small" in str(e.value) and "empty" in str(e.value)


def test_bad_split_fractions(small):
    with pytest.raises(ConfigError, match="sum to 1"):
        make_split(small, fractions=(0.9, 0.2, 0.1))


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ConfigError, match="ml-latest-small"):
        load_dataset(DataConfig(name="ml-99m", root=str(tmp_path)))


def test_command_line_prints_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rec.data", "csv", "--path",
                          str(tmp_path / "nope.csv")], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "nope.csv" in out.stderr and "missing" in out.stderr
