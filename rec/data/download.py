"""Download, verify and extract a GroupLens dataset (SPEC §1.1).

The zip goes to a temporary folder beside its destination; it is checked
(MD5 where GroupLens publishes one, the CRC of every member, the expected
files) and only then moved into place with one rename, so an interrupted or
failed download never leaves a partial dataset behind.  A corrupt download
is fetched once more before giving up.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from rec.data.movielens import Layout
from rec.errors import DataError

log = logging.getLogger(__name__)
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"


class _Corrupt(Exception):
    pass


def offline_hint(name: str, folder: Path, url: str, files: list[str]) -> str:
    return (f"Put GroupLens' {' and '.join(files)} for {name} in {folder} (from {url}), or set "
            f"data.root= (or REC_DATA_ROOT) to the folder that holds {name}/. To try the "
            "pipeline without any download, use data=synthetic.")


def _fetch(url: str, dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {url.rsplit('/', 1)[-1]}",
                  disable=None, leave=False) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def _published_md5(url: str, timeout: float) -> str | None:
    try:
        with urllib.request.urlopen(url + ".md5", timeout=timeout) as response:
            found = re.search(rb"\b[0-9a-fA-F]{32}\b", response.read(4096))
            return found.group().decode().lower() if found else None
    except (urllib.error.URLError, OSError):
        return None


def verify_zip(path: Path, layout: Layout, md5: str | None = None) -> None:
    """Raise ``_Corrupt`` unless ``path`` is an intact GroupLens zip holding ``layout``'s files."""
    if md5:
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        if digest != md5:
            raise _Corrupt(f"MD5 {digest} differs from the published {md5}")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _Corrupt(f"not a readable zip ({e})") from e
    if bad is not None:
        raise _Corrupt(f"member {bad} fails its CRC check")
    for name in names:
        if name.startswith("/") or ".." in Path(name).parts:
            raise _Corrupt(f"unsafe member path {name!r}")
    for need in (layout.ratings_file, layout.movies_file):
        if not any(n.endswith(f"{layout.archive_folder}/{need}") or n == need for n in names):
            raise _Corrupt(f"it does not contain {layout.archive_folder}/{need}")


def _extract(zip_path: Path, layout: Layout, work: Path, dest: Path) -> None:
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(work)
    hits = sorted(work.rglob(layout.ratings_file), key=lambda p: len(p.parts))
    os.replace(hits[0].parent, dest)


def download(name: str, layout: Layout, folder: Path, base_url: str = GROUPLENS_URL,
             timeout: float = 60.0, attempts: int = 2) -> Path:
    """Fetch ``<base_url>/<name>.zip`` into ``folder``; a :class:`DataError` says what to do if it fails."""
    url = f"{base_url.rstrip('/')}/{name}.zip"
    hint = offline_hint(name, folder, url, [layout.ratings_file, layout.movies_file])
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=folder.parent))
    except OSError as e:
        raise DataError(f"{folder.parent}: cannot write the download there ({e}). {hint}") from e
    try:
        for attempt in range(1, attempts + 1):
            zip_path = work / f"{name}.zip"
            try:
                log.info("downloading %s", url)
                _fetch(url, zip_path, timeout)
                verify_zip(zip_path, layout, _published_md5(url, timeout))
            except _Corrupt as e:
                log.warning("%s: corrupt download (%s), attempt %d of %d", url, e, attempt, attempts)
                if attempt == attempts:
                    raise DataError(f"{url}: the download is corrupt ({e}). {hint}") from e
                continue
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", e)
                raise DataError(f"{name} is not in {folder} and could not be downloaded from "
                                f"{url} ({reason}). {hint}") from e
            _extract(zip_path, layout, work / "extract", folder)
            return folder
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raise AssertionError("unreachable")
