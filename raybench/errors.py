"""raybench's one exception tree.

    RaybenchError
    ├── ConfigError      a value the user gave is impossible (names field, value, what is allowed)
    ├── BackendError     a server is unreachable, not OpenAI-compatible, or died
    └── RunError         a run could not go on (lost actors, an unwritable run dir)

A failed *request* is never an exception: it is a row with a status. Only ``cli.py`` turns
these errors into exit codes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RaybenchError(Exception):
    """Base of every error raybench raises on purpose."""


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
