"""GET /metrics on the simulated server: its queue, KV cache and token counters as Prometheus text."""

import asyncio

from simclient import completion_body, headers, read_sse

from raybench.telemetry.server_metrics import parse_prometheus_text


async def metrics(session, sim):
    async with session.get(sim.url + "/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return {name: sum(values) for name, values in parse_prometheus_text(await resp.text()).items()}


async def test_engine_queue_kv_and_tokens_show_in_metrics(make_sim, session):
    # TensorRT-LLM's features: admission reserves prompt + max_tokens, so the KV usage is exact
    sim = await make_sim(timing="engine", backend_profile="trtllm", max_num_seqs=2, kv_capacity_tokens=10_000)

    async def one(i):
        async with session.post(sim.url + "/v1/completions", data=completion_body(20, prompt=range(100)),
                                headers=headers(f"m-{i}")) as resp:
            return await read_sse(resp)

    tasks = [asyncio.create_task(one(i)) for i in range(5)]
    seen = set()
    for _ in range(500):  # until the server has read all five and its next step admitted a second
        m = await metrics(session, sim)
        seen.add((m["sim:num_requests_running"], m["sim:num_requests_waiting"]))
        if m["sim:request_arrivals_total"] == 5 and m["sim:num_requests_running"] == 2:
            break
        await asyncio.sleep(0.01)
    # two run (max_num_seqs), three wait; each running one reserves prompt + max_tokens of KV,
    # 120 tokens in 32-token blocks
    assert (m["sim:num_requests_running"], m["sim:num_requests_waiting"]) == (2, 3)
    assert all(running <= 2 for running, _ in seen)
    assert m["sim:kv_cache_usage_perc"] == 2 * 128 / 10_000
    assert m["sim:prompt_tokens_total"] == 500 and m["sim:prefix_cache_hits_total"] == 0
    await asyncio.gather(*tasks)
    m = await metrics(session, sim)
    assert (m["sim:num_requests_running"], m["sim:num_requests_waiting"], m["sim:kv_cache_usage_perc"]) == (0, 0, 0)
    assert m["sim:generation_tokens_total"] == 5 * 20


async def test_zero_timing_counts_streams_and_keeps_counters_across_reset(make_sim, session):
    sim = await make_sim()
    async with session.post(sim.url + "/v1/completions", data=completion_body(30), headers=headers("z-1")) as resp:
        await read_sse(resp)
    async with session.post(sim.url + "/sim/reset") as resp:
        assert resp.status == 200
    m = await metrics(session, sim)
    assert m["sim:num_requests_running"] == 0 and "sim:kv_cache_usage_perc" not in m  # no KV model here
    assert m["sim:generation_tokens_total"] == 30  # a Prometheus counter never goes down
