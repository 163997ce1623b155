"""The seed's shared-prefix rows against the shipped profiles: where the predicted TTFT falls short.

    python benchmarks/sim_prefix_rows.py                                  # vLLM on H200
    python benchmarks/sim_prefix_rows.py backend=sglang,prefix_len=2000

Every request of a row is sent at once up to its concurrency, so the first C requests (the first
wave) all queue for their prompts together; the rest arrive one by one as slots free. Per row:

- TTFT (mean, median, std, p99): published, predicted, and two ways to close the gap in the mean.
  "first wave +S": the first C requests' TTFT plus one constant S, as if the wave as a whole
  started S later. "prompt steps xK": every step with prompt work K times as long (a schedule
  does not depend on what its steps cost, so this is exact without re-simulating), with the TPOT
  that follows.
- Rows with prefix hits, "first wave recomputes its prefix": the first C requests compute their
  whole prompt, though their KV blocks are still shared (as if the scheduler had counted their
  cached tokens before any prefix was computed; vLLM V0 fixes that count at its first look at a
  request). Every later request hits as before.
- "front end T ms a request": the row again behind a server front end that spends T seconds of
  one event loop on every request before the engine may see it (the T that matches the row's
  mean TTFT, bisected). A loop iteration runs every request handler waiting at its start, one
  after another, and tokens reach the clients only between iterations. vLLM V0's OpenAI server
  hands a request to its engine when the request's response stream starts, which is after the
  iteration its handler ran in, so a burst's requests go in together once all of their handlers
  have run. SGLang's TokenizerManager sends each request to its scheduler as soon as its handler
  has tokenized it, so a burst's requests go in one by one, T apart.
- Inter-token gaps (median, p99) as the client sees them: a token that brings no text (the share
  1 - TPOT / mean ITL of the published row) merges its gap into the next one; which tokens those
  are is drawn at random (seed 0). The published p99 ITL column may hold a p95 (the seed's CSV
  lost one header; see the reference README).

About 11 CPU-seconds for vLLM's rows, 14 for SGLang's. docs/simulator-prefix-rows.md quotes this
output.
"""

from __future__ import annotations

import bisect
import csv
import math
import sys

import numpy as np

from raybench.calibration import load_reference, observations, profiled_cost, seed_launches, select_rows
from raybench.report.sources import published_csv
from raybench.sim.engine import EngineCore
from raybench.sim.profiles import load_profiles
from raybench.sim.virtual import simulate


def published_extras() -> dict[tuple, dict[str, float]]:
    """std TTFT and p99 ITL per online row: the report's frame does not carry them."""
    extras = {}
    with published_csv().open(newline="") as f:
        for r in csv.DictReader(f):
            if r["mode"] == "online":
                key = (r["hardware"], r["backend"].replace("trt-llm", "trtllm"), int(r["max_concurrency"]),
                       int(r["shared_prefix_len"] or 0), int(r["output_len"]))
                extras[key] = {"std_ttft_ms": float(r["std_ttft_ms"]), "p99_itl_ms": float(r["p99_itl_ms_as_labelled"])}
    return extras


def stats(ttft_ms: np.ndarray) -> tuple[float, float, float, float]:
    return float(ttft_ms.mean()), float(np.median(ttft_ms)), float(ttft_ms.std()), float(np.percentile(ttft_ms, 99))


def line(label: str, values, extra: str = "") -> str:
    return f"  {label:34s}" + "".join(f"{v:9.0f}" for v in values) + extra


class ColdFirstWave(EngineCore):
    """An engine whose first ``wave`` requests recompute the prefix they hit: admitted and charged
    as hits (their blocks are shared), but prefilled from their first token."""

    def __init__(self, cost, wave: int) -> None:
        super().__init__(cost)
        self.wave = wave
        self.recompute: dict[int, int] = {}  # request -> cached tokens it has still to compute again

    def _lookup(self, req) -> int:
        return 0 if req.req_id < self.wave else super()._lookup(req)  # the step budget sees the whole prompt

    def _admit(self, req, hit: int) -> bool:
        if req.req_id >= self.wave:
            return super()._admit(req, hit)
        shared = super()._lookup(req)
        if not super()._admit(req, shared):
            return False
        req.prefilled = 0
        self.recompute[req.req_id] = shared
        return True

    def _grow(self, req, n: int) -> None:
        again = min(n, self.recompute.get(req.req_id, 0))  # written into blocks it shares
        if again:
            self.recompute[req.req_id] -= again
        super()._grow(req, n - again)


class Replay:
    """One row's run, step by step: its times again under steps with prompt work made longer."""

    def __init__(self, cost, obs, core: EngineCore | None = None) -> None:
        steps = []
        self.trace = simulate(cost, obs.requests, concurrency=obs.concurrency, on_step=steps.append, core=core)
        self.steps = steps
        self.durations = np.array([cost.cost_s(s.features) for s in steps])
        self.prompt_work = np.array([bool(s.prefill_chunks) for s in steps])
        # with every step seen, the first feature of a moment's running sum counts the steps before it
        self.at = [np.rint(m[:, 0]).astype(int) for m in (self.trace.sent, self.trace.first, self.trace.done)]

    def times(self, scale: float = 1.0) -> list[np.ndarray]:
        durations = np.where(self.prompt_work, scale * self.durations, self.durations)
        clock = np.concatenate([[0.0], np.cumsum(durations)])
        return [clock[i] for i in self.at]

    def ttft_ms(self, scale: float = 1.0) -> np.ndarray:
        sent, first, _ = self.times(scale)
        return (first - sent) * 1000

    def tpot_ms(self, scale: float = 1.0) -> float:
        _, first, done = self.times(scale)
        return float(((done - first) / (self.trace.output_tokens - 1)).mean() * 1000)

    def token_times(self) -> list[np.ndarray]:
        clock = np.concatenate([[0.0], np.cumsum(self.durations)])
        times: dict[int, list[float]] = {}
        for k, step in enumerate(self.steps):
            for e in step.emissions:
                times.setdefault(e.req_id, []).extend([clock[k + 1]] * e.new_tokens)
        return [np.asarray(t) for t in times.values()]


def behind_front_end(cost, obs, per_request_s: float, hand_over: str = "batch") -> tuple[np.ndarray, float]:
    """(TTFT ms of every request, mean TPOT ms) of the row's closed loop behind a front end that
    spends ``per_request_s`` of one event loop on each request. A request reaches the engine at
    the end of the loop iteration its handler ran in (``hand_over="batch"``, vLLM V0), or as soon
    as its own handler has run (``"each"``, SGLang); tokens reach the client at the end of the
    iteration running when the engine's step hands them out."""
    if hand_over not in ("batch", "each"):
        raise ValueError(f"hand_over is 'batch' or 'each', not {hand_over!r}")
    specs, n = obs.requests, len(obs.requests)
    core = EngineCore(cost)
    sent, first, last = np.zeros(n), np.zeros(n), np.zeros(n)
    starts: list[float] = []  # loop iterations, in order
    ends: list[float] = []
    waiting: list[tuple[float, int]] = []  # (sent, request) not yet handled by the loop
    to_engine: list[tuple[float, int]] = []  # (handed over, request)
    loop_free, sent_count, done_count, now = 0.0, 0, 0, 0.0

    def send(at: float) -> None:
        nonlocal sent_count
        sent[sent_count] = at
        waiting.append((at, sent_count))
        sent_count += 1

    def run_loop(until: float) -> None:
        nonlocal loop_free, waiting
        while waiting:
            start = max(loop_free, min(a for a, _ in waiting))
            if start > until:
                return
            batch = sorted(w for w in waiting if w[0] <= start)
            waiting = [w for w in waiting if w[0] > start]
            loop_free = start + per_request_s * len(batch)
            starts.append(start)
            ends.append(loop_free)
            if hand_over == "batch":
                to_engine.extend((loop_free, i) for _, i in batch)
            else:
                to_engine.extend((start + per_request_s * (k + 1), i) for k, (_, i) in enumerate(batch))
        to_engine.sort()

    def out_at(t: float) -> float:
        k = bisect.bisect_right(ends, t)
        return ends[k] if k < len(ends) and starts[k] <= t else t

    for _ in range(min(obs.concurrency, n)):
        send(0.0)
    while done_count < n:
        run_loop(now)
        # what reached the engine while its last step ran joins the next one; an idle engine takes it at once
        while to_engine and (to_engine[0][0] < now or not core.has_work() and to_engine[0][0] <= now):
            i = to_engine.pop(0)[1]
            core.add_request(i, specs[i].prompt_tokens, specs[i].output_tokens, segments=specs[i].segments)
        if not core.has_work():
            if not to_engine:
                run_loop(math.inf)
            now = max(now, to_engine[0][0])
            continue
        span = core.fast_forward_decode(to_engine[0][0] - now if to_engine else math.inf)
        result = span if span is not None else core.step()
        now += span.duration_s if span is not None else cost.cost_s(result.features)
        run_loop(now)
        for e in result.emissions:
            if e.total_tokens == e.new_tokens:
                first[e.req_id] = out_at(now)
            if e.finished:
                last[e.req_id] = out_at(now)
                done_count += 1
                if sent_count < n:
                    send(last[e.req_id])
    outputs = np.array([r.output_tokens for r in specs])
    return (first - sent) * 1000, float(((last - first) / (outputs - 1)).mean() * 1000)


def matching(mean_ttft_ms, target_ms: float, lo: float, hi: float, steps: int) -> float:
    """The x in [lo, hi] whose mean TTFT (rising with x) matches the row's, by bisection."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_ttft_ms(mid) < target_ms else (lo, mid)
    return (lo + hi) / 2


def main(only: str) -> None:
    profiles = load_profiles()
    extras = published_extras()
    rows = select_rows(load_reference(["published"]), only)
    rng = np.random.default_rng(0)
    for row, obs in zip(rows.iter_rows(named=True), observations(rows, seed_launches())):
        if row["mode"] != "online":  # an offline row has no TTFT to look at
            continue
        cost = profiled_cost(obs, profiles[obs.key])
        run = Replay(cost, obs)
        extra = extras.get((row["hardware"], row["backend"], row["concurrency"], row["prefix_len"] or 0,
                            row["output_len"]), {})
        c = obs.concurrency
        predicted = run.ttft_ms()
        wave = np.argsort(run.times()[0], kind="stable")[:c]
        shift_ms = (row["mean_ttft_ms"] - predicted.mean()) * len(predicted) / c
        shifted = predicted.copy()
        shifted[wave] += shift_ms
        scale = matching(lambda k, run=run: run.ttft_ms(k).mean(), row["mean_ttft_ms"], 0.1, 20.0, 60)

        print(f"{obs.label}   ({c} requests in the first wave)")
        print(f"  {'TTFT ms':34s}{'mean':>9s}{'median':>9s}{'std':>9s}{'p99':>9s}")
        print(line("published", (row["mean_ttft_ms"], row["median_ttft_ms"], extra.get("std_ttft_ms", np.nan),
                                 row["p99_ttft_ms"]), f"   TPOT {row['mean_tpot_ms']:.1f} ms"))
        print(line("predicted", stats(predicted), f"   TPOT {run.tpot_ms():.1f} ms"))
        print(line(f"first wave +{shift_ms / 1000:.1f} s", stats(shifted)))
        print(line(f"prompt steps x{scale:.2f}", stats(run.ttft_ms(scale)), f"   TPOT {run.tpot_ms(scale):.1f} ms"))
        if run.trace.cached_tokens.any():
            cold = Replay(cost, obs, core=ColdFirstWave(cost, c))
            print(line("first wave recomputes its prefix", stats(cold.ttft_ms()), f"   TPOT {cold.tpot_ms():.1f} ms"))
        if obs.engine in ("vllm", "sglang"):  # up to 0.3 s a request
            hand_over = "batch" if obs.engine == "vllm" else "each"
            per_request_s = matching(
                lambda t, cost=cost, obs=obs, h=hand_over: behind_front_end(cost, obs, t, h)[0].mean(),
                row["mean_ttft_ms"], 0.0, 0.3, 10)
            ttft, tpot = behind_front_end(cost, obs, per_request_s, hand_over)
            print(line(f"front end {per_request_s * 1000:.0f} ms a request", stats(ttft), f"   TPOT {tpot:.1f} ms"))

        merged = 1.0 - row["mean_tpot_ms"] / row["mean_itl_ms"]
        gaps, gaps_merged = [], []
        for t in run.token_times():
            gaps.append(np.diff(t))
            keep = rng.random(len(t)) >= merged
            keep[0] = keep[-1] = True
            gaps_merged.append(np.diff(t[keep]))
        a, m = np.concatenate(gaps) * 1000, np.concatenate(gaps_merged) * 1000
        print(f"  {'ITL ms':34s}{'median':>9s}{'p99':>9s}")
        print(f"  {'published':34s}{row['median_itl_ms']:9.1f}{extra.get('p99_itl_ms', np.nan):9.1f}")
        print(f"  {'predicted, one gap per token':34s}{np.median(a):9.1f}{np.percentile(a, 99):9.1f}")
        print(f"  {f'predicted, {merged:.1%} of tokens no text':34s}{np.median(m):9.1f}{np.percentile(m, 99):9.1f}")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "backend=vllm,hardware=H200,prefix_len=2000")
