"""Config dataclasses from plain mappings, with one-line errors (SPEC §1.4).

Every configuration rec reads (data, split, model, train, engine sizes, paths,
analysis options) is a dataclass; :func:`from_mapping` builds any of them from
the plain dict the entry points make of Hydra's config.  A key the dataclass
does not define, or a value of the wrong type, is refused with a message that
names the key as the user wrote it (``train.max_epochs='ten'``): no option a
user sets is ever silently dropped.  Nested dataclass fields are built the
same way, so one call turns a whole run configuration into typed values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from rec.errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: type[T], values: Mapping[str, Any], section: str, **overrides) -> T:
    """``cls(**values)`` with each value checked against its field's type.

    ``section`` is where the mapping sits in the config (``train``, ``task``), for messages.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section}={_plain(values)}: expected a group of options "
                          f"({', '.join(f.name for f in dataclasses.fields(cls))}).")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    items = {**values, **overrides}
    unknown = [k for k in items if k not in names]
    if unknown:
        raise ConfigError(f"{_key(section, unknown[0])}: {section or 'the configuration'} has no "
                          f"option {unknown[0]!r}; its options are {', '.join(names)}.")
    hints = typing.get_type_hints(cls)
    return cls(**{k: coerce(v, hints[k], _key(section, k)) for k, v in items.items()})


def _key(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def _plain(value) -> str:
    """A value as a user writes it (``nan``, ``'ten'``), never a numpy repr."""
    if isinstance(value, float) or type(value).__module__ == "numpy":
        return f"{float(value):g}" if hasattr(value, "__float__") else str(value)
    return repr(value)


def _refuse(path: str, value, want: str):
    raise ConfigError(f"{path}={_plain(value)}: expected {want}.")


def coerce(value, hint, path: str):
    """``value`` as the type ``hint`` names (ints for floats, lists for tuples), or an error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(value, inner, path)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, path)
    if hint is bool:
        return value if isinstance(value, bool) else _refuse(path, value, "true or false")
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else _refuse(path, value, "an integer")
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _refuse(path, value, "a number")
    if hint is str:
        return value if isinstance(value, str) else _refuse(path, value, "a string")
    if origin is tuple:
        return _sequence(value, args, path)
    if hint is list or origin is list:
        return list(value) if isinstance(value, (list, tuple)) else _refuse(path, value, "a list")
    if hint is dict or origin is dict:
        return dict(value) if isinstance(value, Mapping) else _refuse(path, value, "a mapping")
    return value


def _sequence(value, args: tuple, path: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        _refuse(path, value, "a list")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        _refuse(path, list(value), f"a list of {len(args)} values")
    return tuple(coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
