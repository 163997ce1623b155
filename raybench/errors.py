"""raybench's one exception tree.

    RaybenchError
    ├── ConfigError      a value the user gave is impossible (names field, value, what is allowed)
    ├── BackendError     a server is unreachable, not OpenAI-compatible, or died
    └── RunError         a run could not go on (lost actors, an unwritable run dir)
        └── StorageError a file of the run directory could not be written (disk full, read-only)

A failed *request* is never an exception: it is a row with a status. Only ``cli.py`` turns
these errors into exit codes. Messages are redacted when the error is made (a URL's password
never reaches a terminal, a log or a summary).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from raybench.redaction import redact_text


class RaybenchError(Exception):
    """Base of every error raybench raises on purpose."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact_text(a) if isinstance(a, str) else a for a in args))


class ConfigError(RaybenchError, ValueError):
    """A configuration value is impossible."""

    @classmethod
    def invalid(cls, field: str, value: object, allowed: str) -> ConfigError:
        return cls(f"{field}={value!r} is not allowed: {allowed}")

    @classmethod
    def unknown(cls, field: str, value: str, choices: Iterable[str]) -> ConfigError:
        options = sorted(choices)
        close = difflib.get_close_matches(value, options, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return cls(f"unknown {field} {value!r}; available: {', '.join(options)}.{hint}")


class BackendError(RaybenchError):
    """A server cannot be used: unreachable, wrong API, or its process died."""


class RunError(RaybenchError):
    """A run cannot go on."""


class StorageError(RunError):
    """A run-directory file could not be written; ``path`` names it."""

    def __init__(self, message: str, *, path: object = None) -> None:
        super().__init__(message)
        self.path = path

    @classmethod
    def from_os_error(cls, path: object, err: OSError) -> StorageError:
        import errno

        why = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
        return cls(f"cannot write {path}: {why}", path=path)
