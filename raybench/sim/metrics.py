"""The simulator's ``GET /metrics``: its state in Prometheus' text format, named like vLLM's.

A benchmark watches the server beside the client (running and waiting requests, KV cache,
tokens/s); real servers publish these at /metrics, and so does the simulator, with vLLM's
metric names under a ``sim:`` prefix so one scraper and one dashboard read all of them.
Zero and fixed timing model no queue and no KV cache: there every stream runs, nothing
waits, and no KV usage is published. In engine timing the prefix cache's hits are the engine
core's (a block-hash or radix cache, by the engine's features); elsewhere none is a hit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_MIN_RATE_WINDOW_S = 0.5  # a tokens/s over a shorter window than this is mostly noise


class SimMetrics:
    """Counters that survive /sim/reset (Prometheus counters never go down) and the rendering."""

    def __init__(self, model: str, clock_s: Callable[[], float] = time.monotonic) -> None:
        self._labels = '{model_name="%s"}' % model.replace("\\", "\\\\").replace('"', '\\"')
        self._clock_s = clock_s
        self.requests_total = 0
        self.prompt_tokens_total = 0
        self._tokens_before_reset = 0
        self._rate_mark: tuple[float, int] | None = None
        self._tokens_per_s = 0.0

    def request_arrived(self, prompt_tokens: int) -> None:
        self.requests_total += 1
        self.prompt_tokens_total += prompt_tokens

    def before_reset(self, tokens_written: int) -> None:
        """The app's own token count is about to go back to 0: keep it in the totals."""
        self._tokens_before_reset += tokens_written

    def render(self, *, running: int, waiting: int, kv_cache_usage: float | None, tokens_written: int,
               prefix_hit_tokens: int = 0) -> bytes:
        generated = self._tokens_before_reset + tokens_written
        self._update_rate(generated)
        rows = [
            ("num_requests_running", "gauge", "Requests in the running batch.", running),
            ("num_requests_waiting", "gauge", "Requests waiting to be scheduled.", waiting),
        ]
        if kv_cache_usage is not None:
            rows.append(("kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", kv_cache_usage))
        rows += [
            ("generation_tokens", "counter", "Number of generation tokens written.", generated),
            ("prompt_tokens", "counter", "Number of prompt tokens received.", self.prompt_tokens_total),
            ("prefix_cache_queries", "counter", "Prefix cache queries, in prompt tokens.", self.prompt_tokens_total),
            ("prefix_cache_hits", "counter", "Prefix cache hits, in prompt tokens (0 where the engine keeps no prefix cache).",
             prefix_hit_tokens),
            ("request_arrivals", "counter", "Generation requests received.", self.requests_total),
            ("gen_throughput", "gauge", "Generation tokens/s since the previous scrape.", self._tokens_per_s),
        ]
        lines = []
        for name, kind, help_text, value in rows:
            sample = f"sim:{name}_total" if kind == "counter" else f"sim:{name}"
            lines += [f"# HELP sim:{name} {help_text}", f"# TYPE sim:{name} {kind}",
                      f"{sample}{self._labels} {float(value)!r}"]
        return ("\n".join(lines) + "\n").encode()

    def _update_rate(self, generated: int) -> None:
        now = self._clock_s()
        if self._rate_mark is None:
            self._rate_mark = (now, generated)
            return
        t0, g0 = self._rate_mark
        if now - t0 >= _MIN_RATE_WINDOW_S:
            self._tokens_per_s = max(0, generated - g0) / (now - t0)
            self._rate_mark = (now, generated)
