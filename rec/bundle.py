"""rec's one binary file format: a JSON header and raw arrays, every part checksummed.

The data cache (SPEC §1.1), the split labels, checkpoints and published models are all
bundles.  A file holds a JSON header (with its own CRC-32) and raw arrays, each with its
CRC-32, so a truncated, corrupt or tampered-with file is detected on read
(:class:`CacheError`), never used.  Nothing is unpickled: reading a bundle can run no code
that the file carries.  Files are written to a temporary name and renamed into place, so a
failed or killed run never leaves a half-written file behind.

:func:`save_tree` / :func:`load_tree` store a nested structure of dicts, lists, tuples,
numbers, strings and tensors (a model, a checkpoint) as one bundle: tensors become arrays,
the rest JSON.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rec.errors import CacheError
from rec.files import atomic_write

MAGIC = b"RECBNDL2"
"""Version 2: the header carries its CRC-32 (version 1 files are rebuilt or refused)."""
_ALIGN = 64
_START = len(MAGIC) + 12


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def raw_bytes(array: np.ndarray) -> memoryview:
    """The bytes of ``array`` without a copy when it is contiguous (empty arrays included)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def _crc(array: np.ndarray) -> int:
    return zlib.crc32(raw_bytes(array))


@dataclass(frozen=True)
class StreamedArray:
    """A 1-D array written block by block, never whole in memory: ``blocks()`` gives a fresh
    iterator of its consecutive parts each time it is called, and its length and CRC-32 are
    known before the write (the header, which comes first, carries them).  :func:`save_tree`
    stores it as a tensor."""

    dtype: np.dtype
    length: int
    crc32: int
    blocks: Callable[[], Iterable[np.ndarray]]

    @classmethod
    def of(cls, blocks: Callable[[], Iterable[np.ndarray]], dtype) -> "StreamedArray":
        """The array ``blocks()`` yields, its length and checksum from one pass over them."""
        dtype = np.dtype(dtype)
        return cls(dtype, *_tally(blocks(), dtype), blocks)

    @property
    def shape(self) -> tuple[int]:
        return (self.length,)

    @property
    def nbytes(self) -> int:
        return self.length * self.dtype.itemsize

    def write_to(self, f, name: str) -> None:
        """Its bytes into ``f``; :class:`CacheError` when the blocks no longer give the array
        that was measured (the file is then not put in place)."""
        if _tally(self.blocks(), self.dtype, f.write) != (self.length, self.crc32):
            raise CacheError(f"array {name!r} changed while it was written")


def _tally(blocks: Iterable[np.ndarray], dtype: np.dtype, sink=None) -> tuple[int, int]:
    """The length and CRC-32 of the array ``blocks`` make up, each block's bytes also handed
    to ``sink`` when given."""
    length, crc = 0, 0
    for block in blocks:
        data = raw_bytes(np.asarray(block, dtype=dtype))
        if sink is not None:
            sink(data)
        length, crc = length + len(data) // dtype.itemsize, zlib.crc32(data, crc)
    return length, crc


def write_bundle(path: str | Path, arrays: dict[str, np.ndarray | StreamedArray],
                 meta: dict) -> None:
    """Write ``arrays`` (each whole, or :class:`StreamedArray`) and JSON-able ``meta`` to
    ``path`` atomically."""
    arrays = {k: v if isinstance(v, StreamedArray) else np.ascontiguousarray(v)
              for k, v in arrays.items()}
    specs, offset = [], 0
    for name, a in arrays.items():
        crc = a.crc32 if isinstance(a, StreamedArray) else _crc(a)
        specs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape),
                      "offset": offset, "nbytes": a.nbytes, "crc32": crc})
        offset += a.nbytes + _pad(a.nbytes)
    header = json.dumps({"meta": meta, "arrays": specs}).encode()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<QI", len(header), zlib.crc32(header)) + header)
            f.write(b"\0" * _pad(f.tell()))
            for name, a in arrays.items():
                if isinstance(a, StreamedArray):
                    a.write_to(f, name)
                else:
                    f.write(raw_bytes(a))
                f.write(b"\0" * _pad(a.nbytes))
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def read_header(path: str | Path) -> dict:
    """The header of a bundle (its ``meta`` and array specs), without the arrays."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != MAGIC:
                raise CacheError(f"{path}: not a rec file of this version")
            n, crc = struct.unpack("<QI", f.read(12))
            text = f.read(n)
            if len(text) != n or zlib.crc32(text) != crc:
                raise CacheError(f"{path}: checksum mismatch in the header")
            header = json.loads(text)
            header["data_start"] = _START + n + _pad(_START + n)
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
                crc[name] = zlib.crc32(raw_bytes(block[name]), crc[name])
            yield s, block
    bad = [name for name in names if crc[name] != specs[name]["crc32"]]
    if bad:
        raise CacheError(f"{path}: checksum mismatch in array {', '.join(map(repr, bad))}")


# trees: models and checkpoints ----------------------------------------------------------
OLD_FORMATS = {b"PK\x03\x04": "a PyTorch zip archive", b"\x80": "a Python pickle"}
"""How files that rec wrote before bundles begin (they were ``torch.save`` pickles)."""


def save_tree(path: str | Path, tree, kind: str, version: int,
              finite: tuple[str, ...] = ()) -> Path:
    """Write ``tree`` (dicts with string keys, lists, tuples, numbers, strings, ``None``,
    tensors, arrays and :class:`StreamedArray` arrays) as one bundle of ``kind`` and ``version``.
    Every floating array under a key path that starts with one of ``finite`` must hold
    finite numbers (else :class:`CacheError`, and nothing is written); :func:`load_tree`
    checks them again."""
    arrays: dict[str, np.ndarray | StreamedArray] = {}
    encoded = _encode(tree, "", arrays)
    _require_finite(arrays, finite, "refusing to write")
    write_bundle(path, arrays, {"kind": kind, "version": version, "tree": encoded})
    return Path(path)


def load_tree(path: str | Path, kind: str, version: int, finite: tuple[str, ...] = ()):
    """The tree :func:`save_tree` wrote to ``path``; :class:`CacheError` (its message says
    why) when the file is not a ``kind`` bundle of ``version``, is damaged, or holds NaN or
    infinite values under a key path that starts with one of ``finite``."""
    with open(path, "rb") as f:
        start = f.read(len(MAGIC))
    if start != MAGIC:
        old = next((what for magic, what in OLD_FORMATS.items() if start.startswith(magic)), None)
        if old:
            raise CacheError(f"it is {old}, the format of rec before version 3, which rec no "
                             "longer reads because loading a pickle can run code stored in it")
        raise CacheError("it is not a file rec wrote")
    arrays, meta = read_bundle(path)
    if meta.get("kind") != kind:
        raise CacheError(f"it holds a {meta.get('kind')!r}, not a {kind!r}")
    if meta.get("version") != version:
        raise CacheError(f"it is {kind} format {meta.get('version')}; this version of rec reads "
                         f"format {version}")
    _require_finite(arrays, finite, "found")
    return _decode(meta["tree"], arrays)


def _encode(node, name: str, arrays: dict):
    if isinstance(node, StreamedArray):
        key = f"{name}#{len(arrays)}"
        arrays[key] = node
        return {"$tensor": key}
    if isinstance(node, (torch.Tensor, np.ndarray)):
        key = f"{name}#{len(arrays)}"
        arrays[key] = node.detach().cpu().numpy() if isinstance(node, torch.Tensor) else node
        return {"$tensor" if isinstance(node, torch.Tensor) else "$array": key}
    if isinstance(node, dict):
        if not all(isinstance(k, str) and not k.startswith("$") for k in node):
            raise TypeError(f"{name or 'the tree'}: keys must be strings not starting with '$'")
        return {k: _encode(v, f"{name}/{k}" if name else k, arrays) for k, v in node.items()}
    if isinstance(node, tuple):
        return {"$tuple": [_encode(v, f"{name}/{i}", arrays) for i, v in enumerate(node)]}
    if isinstance(node, list):
        return [_encode(v, f"{name}/{i}", arrays) for i, v in enumerate(node)]
    if isinstance(node, np.generic):
        return node.item()
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f"{name}: a {type(node).__name__} cannot be stored in a rec file")


def _decode(node, arrays: dict):
    if isinstance(node, list):
        return [_decode(v, arrays) for v in node]
    if not isinstance(node, dict):
        return node
    if "$tensor" in node:
        return torch.from_numpy(arrays[node["$tensor"]])
    if "$array" in node:
        return arrays[node["$array"]]
    if "$tuple" in node:
        return tuple(_decode(v, arrays) for v in node["$tuple"])
    return {k: _decode(v, arrays) for k, v in node.items()}


def _require_finite(arrays: dict, prefixes: tuple[str, ...], verb: str) -> None:
    for key, a in arrays.items():
        if not (key.startswith(prefixes) and a.dtype.kind == "f"):
            continue
        if isinstance(a, StreamedArray):
            raise CacheError(f"{key.split('#')[0]}: a streamed array is not checked for NaN; "
                             "store it whole")
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).sum())
            raise CacheError(f"{verb} {bad} NaN or infinite value(s) in {key.split('#')[0]}")
