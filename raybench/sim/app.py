"""Routing and per-server state: endpoints, arrival counting, faults, timing modes, the log.

Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
GET /sim/ground_truth?table=chunks|requests (Arrow IPC stream), POST /sim/reset (clears the
log and the arrival counter), GET /sim/stats (counters and this process's CPU seconds),
GET /metrics (Prometheus text: running/waiting requests, KV usage, tokens; see metrics.py),
POST /reset_prefix_cache or GET|POST /flush_cache (vLLM's and SGLang's: drops the cached
prompts no running request uses).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import orjson

from raybench import __version__
from raybench.sim import costmodel
from raybench.sim.api import ApiError, GenRequest, error_body, parse_generation
from raybench.sim.config import FaultKind, FaultSpec, SimConfig
from raybench.sim.engine import EngineCore, KvCapacityError
from raybench.sim.groundtruth import GroundTruthLog, SimStatus, to_ipc_stream
from raybench.sim.httpproto import ParseQueue
from raybench.sim.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from raybench.sim.metrics import SimMetrics
from raybench.sim.responses import PlanCache
from raybench.sim.streams import Stream
from raybench.sim.timing import EngineDriver, FixedScheduler

if TYPE_CHECKING:
    from raybench.sim.httpproto import HttpConnection, HttpRequest

GENERATION_PATHS = {"/v1/completions": False, "/v1/chat/completions": True}
# the methods each engine's own route takes: vLLM's reset is POST only, SGLang's
# @app.api_route("/flush_cache", methods=["GET", "POST"]) answers a plain `curl` too
CACHE_RESET_METHODS = {"/reset_prefix_cache": ("POST",), "/flush_cache": ("GET", "POST")}
NOT_OPENAI_BODY = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 405: "MethodNotAllowedError",
                411: "BadRequestError", 413: "BadRequestError", 429: "RateLimitError",
                431: "BadRequestError", 500: "InternalServerError"}
_SSE = b"text/event-stream; charset=utf-8"
_JSON = b"application/json"


class SimApp:
    """Everything one simulated server holds; HttpConnection calls ``handle`` per request."""

    def __init__(self, config: SimConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.connections: set[HttpConnection] = set()
        self.parse_queue = ParseQueue(loop)
        self.log = GroundTruthLog()
        created = int(time.time())
        self.plans = PlanCache(config.model, created)
        self.arrivals = 0
        self.events_written = 0
        self.tokens_written = 0
        self.metrics = SimMetrics(config.model)
        self._context_tokens = _context_tokens(config)
        self._streams: set[Stream] = set()
        self._fixed: FixedScheduler | None = None
        self._engine: EngineDriver | None = None
        if config.timing == "fixed":
            self._fixed = FixedScheduler(loop, config.ttft_ms, config.itl_ms, config.tokens_per_chunk)
        elif config.timing == "engine":
            core = EngineCore(costmodel.resolve(config), config.tokens_per_chunk)
            self._engine = EngineDriver(loop, core)
        self._models_body = orjson.dumps({"object": "list", "data": [{
            "id": config.model, "object": "model", "created": created, "owned_by": "raybench-sim",
            "root": config.model, "parent": None}]})

    @property
    def engine_core(self) -> EngineCore | None:
        """The engine core in engine timing (for inspection in tests), else None."""
        return self._engine.core if self._engine is not None else None

    # -- routing -------------------------------------------------------------------------------
    def handle(self, conn: HttpConnection, request: HttpRequest) -> None:
        path, method = request.path, request.method
        if path in GENERATION_PATHS:
            if method != "POST":
                conn.respond(405, self.error_json(405, f"use POST for {path}"))
            else:
                self._generate(conn, request, GENERATION_PATHS[path])
        elif path == "/health":
            conn.respond(200, b"", b"text/plain")
        elif path == "/v1/models":
            conn.respond(200, self._models_body)
        elif path == "/version":  # as vLLM and trtllm-serve answer it: a run records its servers' versions
            conn.respond(200, orjson.dumps({"version": __version__}))
        elif path == "/sim/ground_truth" and method == "GET":
            self._ground_truth(conn, request)
        elif method in CACHE_RESET_METHODS.get(path, ()):
            core = self.engine_core  # zero and fixed timing keep no cache: nothing to drop
            freed = core.reset_prefix_cache() if core is not None else 0
            conn.respond(200, orjson.dumps({"status": "reset", "freed_tokens": freed}))
        elif path == "/sim/reset" and method == "POST":
            self.reset()
            conn.respond(200, b'{"status":"reset"}')
        elif path == "/sim/stats" and method == "GET":
            conn.respond(200, orjson.dumps(self.stats()))
        elif path == "/metrics" and method == "GET":
            conn.respond(200, self._metrics_text(), METRICS_CONTENT_TYPE)
        else:
            conn.respond(404, self.error_json(404, f"no route for {method} {path}"))

    def error_json(self, status: int, message: str) -> bytes:
        return error_body(status, message, _ERROR_TYPES.get(status, "Error"))

    def reset(self) -> None:
        self.metrics.before_reset(self.tokens_written)
        self.log.reset()
        self.arrivals = 0
        self.events_written = 0
        self.tokens_written = 0

    def stats(self) -> dict[str, float | int]:
        return {"process_cpu_s": time.process_time(), "requests": self.arrivals,
                "events_written": self.events_written, "tokens_written": self.tokens_written,
                "open_connections": len(self.connections), "streams_in_flight": len(self._streams)}

    def _metrics_text(self) -> bytes:
        core = self.engine_core
        if core is None:  # zero and fixed timing: every stream runs, no queue, no KV model
            return self.metrics.render(running=len(self._streams), waiting=0, kv_cache_usage=None,
                                       tokens_written=self.tokens_written)
        return self.metrics.render(running=core.num_running, waiting=core.num_waiting,
                                   kv_cache_usage=core.kv_used_tokens / core.cost.kv_capacity_tokens,
                                   tokens_written=self.tokens_written,
                                   prefix_hit_tokens=core.prefix_hit_tokens)

    def _ground_truth(self, conn: HttpConnection, request: HttpRequest) -> None:
        table = parse_qs(request.query).get("table", [""])[0]
        if table == "chunks":
            data = to_ipc_stream(self.log.chunks_table())
        elif table == "requests":
            data = to_ipc_stream(self.log.requests_table())
        else:
            conn.respond(400, self.error_json(400, f"table={table!r} is not allowed: chunks or requests"))
            return
        conn.respond(200, data, b"application/vnd.apache.arrow.stream")

    # -- generation ----------------------------------------------------------------------------
    def _generate(self, conn: HttpConnection, request: HttpRequest, chat: bool) -> None:
        self.arrivals += 1
        index = self.arrivals
        key_text = request.headers.get("x-request-id") or f"sim-{index}"
        key = self.log.new_request(key_text)
        extra = (b"x-request-id: " + key_text.encode("latin-1", "replace"),)
        try:
            req = parse_generation(request.body, chat=chat, served_model=self.config.model,
                                   context_tokens=self._context_tokens)
        except ApiError as err:
            self._reject(conn, request, key, err.status, err.body(), extra, max_tokens=0, prompt=0)
            return
        fault = self._fault_for(index)
        if fault is not None and self._fault_before_stream(conn, request, req, key, fault, extra):
            return
        target = self._target_tokens(req, key_text)
        plan = self.plans.get(req, target, self.config.tokens_per_chunk)
        head = conn.head(200, _SSE if req.stream else _JSON, None if req.stream else len(plan.body), extra)
        stream = Stream(self, conn, req, plan, key, request.t_arrival_ns, head, fault,
                        self.config.tokens_per_chunk)
        if self._engine is not None:
            try:
                self._engine.add(stream, req.max_tokens, target)
            except KvCapacityError as err:
                self._reject(conn, request, key, 400, ApiError(400, str(err)).body(), extra,
                             max_tokens=req.max_tokens, prompt=req.prompt_tokens)
                return
        # after admission: vLLM counts only the requests its front end accepts, not those it refuses
        self.metrics.request_arrived(req.prompt_tokens)
        self._streams.add(stream)
        conn.start(stream)
        if self._fixed is not None:
            self._fixed.add(stream)
        elif self._engine is None:
            stream.pump()

    def _target_tokens(self, req: GenRequest, key_text: str) -> int:
        """Output length: max_tokens, or a seeded EOS point >= min_tokens (same key, same length)."""
        if req.ignore_eos:
            return req.max_tokens
        rng = random.Random(f"{self.config.seed}/{key_text}")
        return rng.randint(max(req.min_tokens, 1), req.max_tokens)

    def _fault_for(self, index: int) -> FaultSpec | None:
        for fault in self.config.faults:
            if fault.hits(index):
                return fault
        return None

    def _fault_before_stream(self, conn, request, req: GenRequest, key: int, fault: FaultSpec,
                             extra: tuple[bytes, ...]) -> bool:
        """Faults that act before any event; True when the request is fully handled."""
        kind = fault.kind
        if kind in (FaultKind.HTTP_500, FaultKind.HTTP_429):
            status = 500 if kind is FaultKind.HTTP_500 else 429
            message = "simulated server error" if status == 500 else "simulated rate limit: retry later"
            body = error_body(status, message, _ERROR_TYPES[status])
            self._reject(conn, request, key, status, body, extra, req.max_tokens, req.prompt_tokens, kind.value)
            return True
        if kind is FaultKind.NOT_OPENAI:
            self._log_end(request, key, req, SimStatus.BAD_RESPONSE, 200, kind.value)
            conn.respond(200, NOT_OPENAI_BODY, b"text/html; charset=utf-8", extra)
            return True
        if req.stream or kind is FaultKind.CLOSE_AFTER:
            return False
        # a non-streamed response has no events: mid-stream faults act on the whole body
        if kind is FaultKind.DROP:
            self._log_end(request, key, req, SimStatus.DISCONNECTED, 200, kind.value)
            conn.close()
        elif kind is FaultKind.STALL:
            self._log_end(request, key, req, SimStatus.STALLED, 200, kind.value)
            conn.hold()
        else:
            self._log_end(request, key, req, SimStatus.BAD_RESPONSE, 200, kind.value)
            conn.respond(200, b"{not json", _JSON, extra)
        return True

    def _reject(self, conn, request, key: int, status: int, body: bytes, extra, max_tokens: int,
                prompt: int, fault: str | None = None) -> None:
        self.log.request_done(key, t_arrival_ns=request.t_arrival_ns, t_end_ns=time.perf_counter_ns(),
                              prompt_tokens=prompt, output_tokens=0, max_tokens=max_tokens,
                              status=SimStatus.HTTP_ERROR, http_status=status, fault=fault)
        conn.respond(status, body, _JSON, extra)

    def _log_end(self, request, key: int, req: GenRequest, status: SimStatus, http_status: int, fault: str) -> None:
        self.log.request_done(key, t_arrival_ns=request.t_arrival_ns, t_end_ns=time.perf_counter_ns(),
                              prompt_tokens=req.prompt_tokens, output_tokens=0, max_tokens=req.max_tokens,
                              status=status, http_status=http_status, fault=fault)

    # -- called by streams and connections ----------------------------------------------------
    def count_written(self, events: int, tokens: int) -> None:
        self.events_written += events
        self.tokens_written += tokens

    def stream_ended(self, stream: Stream, status: SimStatus, output_tokens: int) -> None:
        self._streams.discard(stream)
        if self._engine is not None:
            self._engine.remove(stream)
        self.log.request_done(
            stream.key, t_arrival_ns=stream.t_arrival_ns, t_end_ns=time.perf_counter_ns(),
            prompt_tokens=stream.req.prompt_tokens, output_tokens=output_tokens,
            max_tokens=stream.req.max_tokens, status=status, http_status=200,
            fault=stream.fault.kind.value if stream.fault is not None else None)

    def resume(self, stream: Stream) -> None:
        """The transport drained: zero mode goes on writing; the timed modes never wait."""
        if self._fixed is None and self._engine is None:
            stream.pump()

    def close(self) -> None:
        """Stop timers and drop every connection (server shutdown)."""
        if self._fixed is not None:
            self._fixed.close()
        if self._engine is not None:
            self._engine.close()
        for conn in list(self.connections):
            conn.abort()


def _context_tokens(config: SimConfig) -> int | None:
    """The served context length (max_model_len): the launch's, else the model's; None when the
    simulator knows neither (a model it has no profile of, in zero or fixed timing)."""
    launched = config.engine_features().max_model_len
    if launched is not None:
        return launched
    model = costmodel.find_model(config.model)
    return model.max_model_len if model is not None else None
