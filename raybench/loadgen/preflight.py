"""Checks before a cell: is the server there, does it speak OpenAI, does it serve the model.

Each failure becomes one line that names the problem and the flag that fixes it, instead of
500 failed request rows.
"""

from __future__ import annotations

import asyncio

import aiohttp

from raybench.errors import BackendError, ConfigError

_TIMEOUT_S = 10.0


async def _models(base_url: str) -> list[str]:
    url = base_url + "/v1/models"
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            content_type = resp.headers.get("Content-Type", "")
            body = await resp.read()
            if resp.status != 200:
                raise BackendError(
                    f"{url} answered HTTP {resp.status}: is {base_url} an OpenAI-compatible server? "
                    f"{body[:200].decode(errors='replace')}"
                )
            if "json" not in content_type:
                raise BackendError(
                    f"{url} answered {content_type or 'no content type'}, not JSON: "
                    f"{base_url} does not look like an OpenAI-compatible server"
                )
            try:
                data = (await resp.json()).get("data")
                return [m["id"] for m in data]
            except (ValueError, TypeError, KeyError, AttributeError) as err:
                raise BackendError(f"{url} did not list models as the OpenAI API does ({err!r})") from err
    except aiohttp.ClientConnectorError as err:
        raise BackendError(f"cannot reach {base_url}: {err.os_error or err}; is the server running? (check --url)") from err
    except asyncio.TimeoutError as err:
        raise BackendError(f"{url} did not answer within {_TIMEOUT_S:g} s") from err
    except aiohttp.ClientError as err:
        raise BackendError(f"cannot talk to {base_url}: {err!r}") from err


def check_server(base_url: str, model: str | None) -> str:
    """Return the model to use: ``model``, or the only one served when ``model`` is None."""
    models = asyncio.run(_models(base_url.rstrip("/")))
    if model is None:
        if len(models) != 1:
            raise ConfigError(f"{base_url} serves {len(models)} models ({', '.join(models)}): pick one with --model")
        return models[0]
    if model not in models:
        raise ConfigError.unknown("model", model, models)
    return model
