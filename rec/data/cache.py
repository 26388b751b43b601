"""The compact binary cache of parsed datasets (SPEC §1.1).

One file holds a JSON header and raw arrays, each with its CRC-32, so a
truncated or corrupt file is detected on read (:class:`CacheError`) and
rebuilt, never used.  Files are written to a temporary name and renamed into
place, so a failed or killed run never leaves a half-written cache behind.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from rec.errors import CacheError
from rec.files import atomic_write

MAGIC = b"RECBNDL1"
_ALIGN = 64


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))


def write_bundle(path: str | Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and JSON-able ``meta`` to ``path`` atomically."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    specs, offset = [], 0
    for name, a in arrays.items():
        specs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape),
                      "offset": offset, "nbytes": a.nbytes, "crc32": _crc(a)})
        offset += a.nbytes + _pad(a.nbytes)
    header = json.dumps({"meta": meta, "arrays": specs}).encode()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<Q", len(header)) + header)
            f.write(b"\0" * _pad(f.tell()))
            for a in arrays.values():
                f.write(memoryview(a).cast("B"))
                f.write(b"\0" * _pad(a.nbytes))
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def read_header(path: str | Path) -> dict:
    """The header of a bundle (its ``meta`` and array specs), without the arrays."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != MAGIC:
                raise CacheError(f"{path}: not a rec cache file")
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            header["data_start"] = 16 + n + _pad(16 + n)
            return header
    except (OSError, ValueError, struct.error) as e:
        raise CacheError(f"{path}: unreadable cache header ({e})") from e


def read_bundle(path: str | Path, verify: bool = True,
                skip: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], dict]:
    """Read a bundle, except the arrays named in ``skip``; raise :class:`CacheError` if it
    is truncated or corrupt."""
    header = read_header(path)
    size = os.path.getsize(path)
    arrays = {}
    with open(path, "rb") as f:
        for spec in header["arrays"]:
            if spec["name"] in skip:
                continue
            start = header["data_start"] + spec["offset"]
            if start + spec["nbytes"] > size:
                raise CacheError(f"{path}: truncated at array {spec['name']!r}")
            f.seek(start)
            dtype = np.dtype(spec["dtype"])
            a = np.fromfile(f, dtype=dtype, count=spec["nbytes"] // dtype.itemsize)
            if verify and _crc(a) != spec["crc32"]:
                raise CacheError(f"{path}: checksum mismatch in array {spec['name']!r}")
            arrays[spec["name"]] = a.reshape(spec["shape"])
    return arrays, header["meta"]


def read_chunks(path: str | Path, names: tuple[str, ...], chunk: int):
    """Rows ``[s, s + chunk)`` of the equally long arrays ``names``, one block at a time:
    yields ``(s, {name: array})``.  Each block is read into its own small buffer (not
    memory-mapped), so a process that keeps only part of each block never holds the whole
    arrays, nor their pages.  The checksums are verified on the way: a corrupt file raises
    :class:`CacheError` after its last block, before the caller can use what it gathered."""
    header = read_header(path)
    specs = {s["name"]: s for s in header["arrays"]}
    missing = [n for n in names if n not in specs]
    if missing:
        raise CacheError(f"{path}: no array {', '.join(map(repr, missing))}")
    lengths = {specs[n]["shape"][0] for n in names}
    if len(lengths) != 1:
        raise CacheError(f"{path}: arrays {', '.join(names)} differ in length")
    (n,) = lengths
    if header["data_start"] + max(specs[k]["offset"] + specs[k]["nbytes"] for k in names) \
            > os.path.getsize(path):
        raise CacheError(f"{path}: truncated")
    crc = dict.fromkeys(names, 0)
    with open(path, "rb") as f:
        for s in range(0, n, chunk):
            block = {}
            for name in names:
                dtype = np.dtype(specs[name]["dtype"])
                f.seek(header["data_start"] + specs[name]["offset"] + s * dtype.itemsize)
                block[name] = np.fromfile(f, dtype=dtype, count=min(chunk, n - s))
                crc[name] = zlib.crc32(memoryview(block[name]).cast("B"), crc[name])
            yield s, block
    bad = [name for name in names if crc[name] != specs[name]["crc32"]]
    if bad:
        raise CacheError(f"{path}: checksum mismatch in array {', '.join(map(repr, bad))}")
