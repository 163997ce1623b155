"""A server's endpoints besides the OpenAI API: cache reset between cells, version for the record."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from raybench.errors import BackendError

_TIMEOUT_S = 60.0


def reset_cache(base_url: str, path: str, *, attempts: int = 5, retry_s: float = 1.0) -> None:
    """POST ``path``; BackendError if the server refuses every attempt.

    SGLang answers 400 while requests are still running or waiting; the seed's client slept
    a second after its flush, so raybench retries a few times a second apart.
    """
    url = base_url.rstrip("/") + path
    last = ""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=_TIMEOUT_S):
                return
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}: {err.read(300).decode(errors='replace').strip()}"
            if err.code == 404:
                break  # retrying will not make the endpoint appear
        except (urllib.error.URLError, OSError) as err:
            last = str(err)
        if attempt + 1 < attempts:
            time.sleep(retry_s)
    hint = " (vLLM serves it only with VLLM_SERVER_DEV_MODE=1)" if "reset_prefix_cache" in path else ""
    raise BackendError(f"cache reset POST {url} failed: {last}{hint}")


def server_version(base_url: str, paths: Sequence[str]) -> str | None:
    """The ``version`` field of the first path that answers with one, else None."""
    for path in paths:
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + path, timeout=_TIMEOUT_S) as r:
                version = json.load(r).get("version")
        except (urllib.error.URLError, OSError, ValueError, AttributeError):
            continue
        if version:
            return str(version)
    return None
