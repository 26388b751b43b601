"""Reading delimited text files fast, and naming the line when one is bad (SPEC §1.4).

Parsing goes through pyarrow's multi-threaded CSV reader.  When it fails, or a
value is missing or out of range, a slow line-by-line scan of the same file
finds the first offending line, so the error names the file and the line.
"""

from __future__ import annotations

import io
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from rec.errors import DataError

ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}


COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip"), b"PK\x03\x04": ("zip", "unzip"),
              b"BZh": ("bzip2", "bunzip2"), b"\xfd7zXZ": ("xz", "unxz"),
              b"\x28\xb5\x2f\xfd": ("zstd", "unzstd")}
"""How compressed files begin, and the command that unpacks each."""


def require_file(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`DataError` that says what to do."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a {what}. {hint}")
    if not path.is_file():
        raise DataError(f"{path}: missing {what}. {hint}")
    return path


def require_text(path: Path) -> None:
    """Refuse a compressed or binary file with a message that says what it is."""
    with open(path, "rb") as f:
        start = f.read(4096)
    for magic, (kind, command) in COMPRESSED.items():
        if start.startswith(magic):
            raise DataError(f"{path}: is {kind}-compressed; rec reads plain text. Decompress it "
                            f"first ({command} {path.name}) and point rec at the result.")
    if b"\0" in start:
        raise DataError(f"{path}: is a binary file, not delimited text; give rec the ratings as "
                        "text (one rating per line).")


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """Whole file as text; files older GroupLens releases wrote in latin-1 are decoded as such."""
    require_text(path)
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def first_line(path: Path) -> str:
    require_text(path)
    with open(path, "rb") as f:
        return f.readline().decode("utf-8", "replace").rstrip("\r\n").lstrip("\ufeff")


def check_header(path: Path, delimiter: str, expected: list[str], hint: str = "") -> list[str]:
    """Header fields of ``path``; error naming what is missing when ``expected`` are not all there."""
    found = [c.strip().strip('"') for c in first_line(path).split(delimiter)]
    missing = [c for c in expected if c not in found]
    if missing:
        raise DataError(
            f"{path}: line 1 (header) lacks column(s) {', '.join(missing)}; expected "
            f"{delimiter.join(expected)}, found {delimiter.join(found) or '(empty line)'}. {hint}".strip())
    return found


def read_columns(path: Path, columns: dict[str, str], delimiter: str, header: bool,
                 names: list[str] | None = None, data: bytes | None = None,
                 quoting: bool = True, file_delimiter: str | None = None) -> dict[str, np.ndarray]:
    """Parse ``path`` (or ``data``, its already-decoded bytes) into numpy columns.

    ``columns`` maps each wanted column to ``int``, ``float`` or ``str``.
    ``names`` names the fields of a file without a header line.  Any parse
    failure is reported with the first bad line of the file, read with
    ``file_delimiter`` when ``data`` was rewritten with another delimiter.
    """
    if data is None:
        require_text(path)
    scan = (path, file_delimiter or delimiter, header, names, columns, quoting)
    read = pacsv.ReadOptions(column_names=None if header else names, use_threads=True,
                             block_size=1 << 24)
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoting else False)
    convert = pacsv.ConvertOptions(column_types={k: ARROW_TYPES[v] for k, v in columns.items()},
                                   include_columns=list(columns), strings_can_be_null=False,
                                   null_values=[""])
    try:
        table = pacsv.read_csv(io.BytesIO(data) if data is not None else path,
                               read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError) as e:
        raise locate_bad_line(*scan) or DataError(
            f"{path}: could not be parsed ({e}). Check that it is a {delimiter!r}-separated file."
        ) from None  # the line-level message says it all
    out = {}
    for name, kind in columns.items():
        col = table.column(name)
        if col.null_count:
            raise locate_bad_line(*scan) or DataError(
                f"{path}: column {name!r} has {col.null_count} missing value(s).")
        out[name] = col.to_pylist() if kind == "str" else col.to_numpy()
    return out


def _field_problem(value: str, kind: str) -> str | None:
    if value.strip() == "":
        return "is empty"
    if kind == "int":
        try:
            number = int(value)
        except ValueError:
            return f"{value!r} is not an integer"
        if not -2**63 <= number < 2**63:
            return f"{value} is too large for an id (at most {2**63 - 1:,})"
    if kind == "float":
        try:
            float(value)
        except ValueError:
            return f"{value!r} is not a number"
    return None


def scan_lines(path: Path, delimiter: str, header: bool):
    """Yield (line number, fields) for each non-empty data line of ``path``."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if header and number == 1:
                continue
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                yield number, line.split(delimiter)


def locate_bad_line(path: Path, delimiter: str, header: bool, names: list[str] | None,
                    columns: dict[str, str], quoting: bool = True) -> DataError | None:
    """The first line of ``path`` whose fields do not parse, as a :class:`DataError`."""
    field_names = names or [c.strip().strip('"') for c in first_line(path).split(delimiter)]
    wanted = [(i, n, columns[n]) for i, n in enumerate(field_names) if n in columns]
    for number, fields in scan_lines(path, delimiter, header):
        if quoting and '"' in delimiter.join(fields):
            continue  # quoted fields may hold the delimiter: pyarrow judged those
        if len(fields) < len(field_names):
            return DataError(f"{path}: line {number}: expected {len(field_names)} fields "
                             f"separated by {delimiter!r}, found {len(fields)}: "
                             f"{delimiter.join(fields)[:120]!r}. Fix or remove that line.")
        for i, name, kind in wanted:
            problem = _field_problem(fields[i], kind)
            if problem:
                return DataError(f"{path}: line {number}, column {name!r}: {problem}. "
                                 "Fix or remove that line.")
    return None


def line_numbers(path: Path, header: bool, rows: list[int]) -> list[int]:
    """File line numbers of data rows ``rows`` (0-based, empty lines skipped)."""
    wanted, found = sorted(set(rows)), {}
    row = 0
    if wanted:
        for number, _ in scan_lines(path, "\0", header):
            if row == wanted[len(found)]:
                found[row] = number
                if len(found) == len(wanted):
                    break
            row += 1
    return [found.get(r, -1) for r in rows]
