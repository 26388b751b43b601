"""Downloading a missing GroupLens dataset, served from a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from rec.data import DataConfig, load_dataset
from rec.errors import DataError
from tests.formats import write_csv_family, write_dat_family
from tests.test_data_movielens import MOVIES, RATINGS, as_tuples


class Server:
    """Serves a folder over HTTP and counts the requests for each path."""

    def __init__(self, folder: Path):
        hits = self.hits = {}

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(folder), **k)

            def do_GET(self):
                hits[self.path] = hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def served(tmp_path):
    site = tmp_path / "site" / "datasets"
    site.mkdir(parents=True)
    server = Server(site.parent)
    yield site, server
    server.close()


def make_zip(site: Path, name: str, folder_in_zip: str, writer=write_csv_family) -> Path:
    src = writer(site.parent / "src" / folder_in_zip, RATINGS, MOVIES)
    path = site / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(src.iterdir()):
            z.write(f, f"{folder_in_zip}/{f.name}")
    return path


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_download_verify_extract(served, tmp_path):
    site, server = served
    zpath = make_zip(site, "ml-latest-small", "ml-latest-small")
    (site / "ml-latest-small.zip.md5").write_text(
        f"MD5 (ml-latest-small.zip) = {hashlib.md5(zpath.read_bytes()).hexdigest()}\n")
    root = tmp_path / "root"
    r = load_dataset(DataConfig(root=str(root), url=server.url))
    assert as_tuples(r) == set(RATINGS)
    assert leftovers(root) == ["ml-latest-small"]  # no temporary folder left behind
    assert server.hits["/datasets/ml-latest-small.zip"] == 1
    load_dataset(DataConfig(root=str(root), url=server.url))
    assert server.hits["/datasets/ml-latest-small.zip"] == 1  # now found on disk


def test_ml10m_archive_folder_is_renamed(served, tmp_path):
    site, server = served
    make_zip(site, "ml-10m", "ml-10M100K",
             lambda f, r, m: write_dat_family(f, r, m, encoding="utf-8"))
    root = tmp_path / "root"
    r = load_dataset(DataConfig(name="ml-10m", root=str(root), url=server.url))
    assert as_tuples(r) == set(RATINGS)
    assert leftovers(root) == ["ml-10m"]


def test_corrupt_download_is_retried_then_refused(served, tmp_path):
    site, server = served
    zpath = make_zip(site, "ml-latest-small", "ml-latest-small")
    zpath.write_bytes(zpath.read_bytes()[:-40])  # truncated
    root = tmp_path / "root"
    with pytest.raises(DataError, match="corrupt") as e:
        load_dataset(DataConfig(root=str(root), url=server.url))
    assert "data=synthetic" in str(e.value)
    assert server.hits["/datasets/ml-latest-small.zip"] == 2
    assert leftovers(root) == []  # nothing partial is left


def test_checksum_mismatch_is_refused(served, tmp_path):
    site, server = served
    make_zip(site, "ml-latest-small", "ml-latest-small")
    (site / "ml-latest-small.zip.md5").write_text("0123456789abcdef0123456789abcdef  ml-latest-small.zip\n")
    root = tmp_path / "root"
    with pytest.raises(DataError, match="MD5"):
        load_dataset(DataConfig(root=str(root), url=server.url))
    assert leftovers(root) == []


def test_offline_error_names_folder_url_and_synthetic(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "root"
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(name="ml-32m", root=str(root), url=f"http://127.0.0.1:{port}/x"))
    message = str(e.value)
    assert str(root / "ml-32m") in message
    assert f"http://127.0.0.1:{port}/x/ml-32m.zip" in message
    assert "data=synthetic" in message and "ratings.csv" in message
    assert leftovers(root) == []
