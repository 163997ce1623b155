"""A tiny OpenAI-compatible server that knows its tokenizer, as vLLM does.

It rejects a prompt id beyond its vocabulary the way vLLM 0.32 did in the stream (``Token id N
is out of vocabulary``), counts text prompts and chat messages with the tokenizer (chat through
its template, as vLLM's chat endpoint), and streams ``max_tokens`` one-token chunks with
usage, so a test can check that what raybench recorded is what the server counted.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
from aiohttp import web

from raybench.workloads.tokenizer import Tokenizer


class VocabServer:
    """Runs on 127.0.0.1, port 0, in a thread of its own; ``url`` once started."""

    def __init__(self, tokenizer: Tokenizer, *, model: str = "tiny-model") -> None:
        self.tokenizer, self.model = tokenizer, model
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> VocabServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/health", lambda _: web.Response(text="ok"))
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.bodies.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        prompt = body.get("prompt")
        if "messages" in body:
            prompt_tokens = self.tokenizer.count_chat(body["messages"])
        elif isinstance(prompt, str):
            prompt_tokens = len(self.tokenizer.encode(prompt))
        else:
            bad = [i for i in prompt if not 0 <= i < self.tokenizer.vocab_size]
            if bad:
                error = {"message": f"Token id {bad[0]} is out of vocabulary", "type": "BadRequestError",
                         "param": None, "code": 400}
                await response.write(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
                await response.write(b"data: [DONE]\n\n")
                return response
            prompt_tokens = len(prompt)
        max_tokens = body.get("max_completion_tokens") or body["max_tokens"]
        chat = "messages" in body
        for n in range(1, max_tokens + 1):
            choice = {"index": 0, "finish_reason": "length" if n == max_tokens else None}
            choice.update({"delta": {"content": "x"}} if chat else {"text": "x"})
            event = {"choices": [choice], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                                                    "total_tokens": prompt_tokens + n}}
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response
