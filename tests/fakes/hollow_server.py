"""An OpenAI-style server whose 200 answers carry no output, or less than was forced.

Modes (the ``mode`` given to :func:`start`):

    done_only     a 200 stream with nothing but ``data: [DONE]``
    empty_text    chunks whose text is empty, a finish reason, usage with 0 completion tokens, [DONE]
    short         2 text chunks however many tokens were forced (ignore_eos/min_tokens ignored)
    empty_body    a non-streamed 200 whose one choice has empty text and no usage

Used to check that raybench does not count such answers as successes with measured latencies.
"""

from __future__ import annotations

import json

from aiohttp import web

MODES = ("done_only", "empty_text", "short", "empty_body")
MODE = web.AppKey("mode", str)


def _event(obj: dict | str) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()


def _chunk(text: str, finish: str | None = None, usage: dict | None = None) -> dict:
    body: dict = {"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = usage
    return body


async def _completions(request: web.Request) -> web.StreamResponse:
    mode = request.app[MODE]
    body = await request.json()
    if mode == "empty_body" or not body.get("stream"):
        return web.json_response({"id": "x", "object": "text_completion",
                                  "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    if mode == "empty_text":
        for _ in range(3):
            await resp.write(_event(_chunk("")))
        await resp.write(_event(_chunk("", finish="stop")))
        await resp.write(_event({"id": "x", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 0}}))
    elif mode == "short":
        await resp.write(_event(_chunk("a", usage={"prompt_tokens": 4, "completion_tokens": 1})))
        await resp.write(_event(_chunk("b", finish="stop", usage={"prompt_tokens": 4, "completion_tokens": 2})))
    await resp.write(_event("[DONE]"))
    await resp.write_eof()
    return resp


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})


async def start(mode: str) -> tuple[web.AppRunner, str]:
    """Serve ``mode`` on 127.0.0.1 on a free port; returns the runner (to clean up) and the base URL."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed: one of {', '.join(MODES)}")
    app = web.Application()
    app[MODE] = mode
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"
