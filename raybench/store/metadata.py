"""What a run records about itself besides its measurements (env.json): versions, sources, secrets kept out.

A run directory gets copied, attached to issues and published, so nothing in it may carry a
credential: command lines and environments pass through ``redact_argv`` / ``redact_env`` first.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"
KEY_PACKAGES = ("ray", "aiohttp", "numpy", "pyarrow", "polars", "altair", "click", "orjson", "msgspec", "uvloop")

# a flag or variable is secret when one of its words is one of these: --api-key, HF_TOKEN and
# OPENAI_API_KEY are; --tokenizer, --max-num-batched-tokens and TOKENIZERS_PARALLELISM are not
_SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "credential", "credentials",
                           "authorization"})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Za-z][a-z]*")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@", re.IGNORECASE)
# container flags whose value is NAME=VALUE (docker/podman run -e, --env)
_ENV_FLAGS = ("-e", "--env")


def is_secret_name(name: str) -> bool:
    """True for names such as ``--api-key``, ``HF_TOKEN``, ``hf_token``, ``X-Api-Key``."""
    words = {w.lower() for w in _WORDS.findall(name)}
    if {"token", "id"} <= words:  # --token-id-range: a token id is a vocabulary index, not a credential
        words -= {"token"}
    return bool(words & _SECRET_WORDS)


def redact_text(text: str) -> str:
    """Passwords in URLs (``https://user:pw@host``) replaced; the rest kept."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: REDACTED if is_secret_name(k) else redact_text(str(v)) for k, v in env.items()}


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Command-line options as parsed (``--url`` may carry a password): like ``redact_env``, types kept."""
    return {k: REDACTED if is_secret_name(k) and v is not None else redact_text(v) if isinstance(v, str) else v
            for k, v in options.items()}


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with the values of secret flags and secret ``-e NAME=VALUE`` replaced.

    Handles ``--api-key X``, ``--api-key=X``, ``-e HF_TOKEN=X``, ``--env=HF_TOKEN=X`` and
    ``HF_TOKEN=X`` words (as ``env`` takes them).
    """
    out: list[str] = []
    secret_next = False
    env_next = False
    for arg in argv:
        if secret_next and not arg.startswith("-"):  # vLLM's --hf-token may also stand alone
            out.append(REDACTED)
            secret_next = False
            continue
        secret_next = False
        if env_next:
            out.append(_redact_assignment(arg))
            env_next = False
            continue
        if arg.startswith("-"):
            flag, eq, value = arg.partition("=")
            if flag in _ENV_FLAGS:
                out.append(f"{flag}={_redact_assignment(value)}" if eq else arg)
                env_next = not eq
            elif is_secret_name(flag):
                out.append(f"{flag}={REDACTED}" if eq else arg)
                secret_next = not eq
            else:
                out.append(redact_text(arg))
            continue
        out.append(_redact_assignment(arg) if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", arg) else redact_text(arg))
    return out


def _redact_assignment(text: str) -> str:
    name, eq, value = text.partition("=")
    if eq and is_secret_name(name):
        return f"{name}={REDACTED}"
    return redact_text(text)


def package_versions(packages: Iterable[str] = KEY_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for pkg in packages:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


def host_info() -> dict[str, str]:
    return {"python": platform.python_version(), "platform": platform.platform()}


def git_state(path: Path) -> dict[str, Any] | None:
    """The commit of ``path`` (a file or a directory) and whether it has uncommitted changes.

    None when git does not track it: an installed copy inside someone else's work tree (a
    virtualenv in a checkout) must not report that checkout's commit as its own.
    """
    path = path.resolve()
    where = path if path.is_dir() else path.parent
    try:
        if not _git(where, "ls-files", "--", str(path)):
            return None
        commit = _git(where, "rev-parse", "HEAD")
        root = _git(where, "rev-parse", "--show-toplevel")
        changes = _git(where, "status", "--porcelain", "--untracked-files=no", "--", str(path))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "root": root, "dirty": bool(changes)}


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()


def source_record(path: Path) -> dict[str, Any]:
    """An experiment file as it was when the run started: path, text, digest, git state."""
    data = path.read_bytes()
    return {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "text": data.decode("utf-8", errors="replace"),
        "git": git_state(path),
    }
