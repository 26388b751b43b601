"""User-facing errors (SPEC §1.4).

A :class:`RecError` is a mistake the user can fix: its message names the file,
the line or row where it can, what was expected and what to do.  The command
line entry points print it without a traceback and exit with status 2.
"""


class RecError(Exception):
    """A problem the user can fix; the message says how."""


class DataError(RecError):
    """Bad, missing or unreachable input data."""


class ConfigError(RecError):
    """An invalid configuration value."""


class CacheError(Exception):
    """A corrupt, truncated or stale cache file: rebuilt, never used, never shown."""
