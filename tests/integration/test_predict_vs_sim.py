"""raybench predict against a real run of the engine-timing simulator: one core, two clocks.

The same cell runs twice: in virtual time (``raybench predict``) and over HTTP, raybench's load
generator against the simulator on port 0 with the launch features ``--simulate`` gives it. The
duration and the mean latencies must agree within 2 %: the only difference is the HTTP path and
the wall clock. A second check: the server's prefix cache reports its hits on /metrics.
"""

import json
import time

import aiohttp
import numpy as np
import polars as pl
import pyarrow as pa

from raybench.analysis.summary import summarize_cell
from raybench.backends import seed
from raybench.experiment import Experiment, Hardware, Online
from raybench.loadgen.client import ClientConfig
from raybench.loadgen.generator import LoadGenerator
from raybench.loadgen.records import chunks_batch, requests_batch
from raybench.plan import simulated
from raybench.predict import predict_cell
from raybench.sim import SimConfig, SimServer
from raybench.sim.profiles import load_profiles
from raybench.workloads import RandomWorkload

MODEL = "deepseek-ai/DeepSeek-R1"


async def test_a_simulated_run_and_predict_agree_within_2_percent(tmp_path):
    experiment = Experiment(name="agree", model=MODEL, backends=(seed.SEED_VLLM_MI300X,),
                            hardware={"vllm-mi300x": Hardware(name="MI300X", count=8)},
                            online=(Online(concurrency=(6,), input_len=1600, output_len=24, num_prompts=18),))
    (cell,) = experiment.cells()
    predicted = predict_cell(experiment, cell, load_profiles(), tmp_path / "cell")

    # on a shared machine one run may be late by a few ms per wave: the best of three counts
    worst = []
    for _ in range(3):
        ratios = await _measured_over_predicted(experiment, cell, predicted)
        print({k: round(v, 4) for k, v in ratios.items()})
        worst.append(max(abs(r - 1) for r in ratios.values()))
        if worst[-1] < 0.02:
            break
    assert min(worst) < 0.02, worst


async def _measured_over_predicted(experiment, cell, predicted) -> dict[str, float]:
    (sim,) = simulated(experiment).backends
    config = SimConfig(model=MODEL, timing="engine", gpu=sim.gpu, num_gpus=sim.num_gpus,
                       backend_profile=sim.profile, features=sim.engine_features)
    n = cell.num_prompts
    async with SimServer(config) as server:
        client = ClientConfig(base_url=server.url, model=MODEL)
        specs = RandomWorkload(num_prompts=n, input_len=cell.input_len, output_len=cell.output_len).build(range(n))
        gen = LoadGenerator(cell_id=cell.id, client=client, specs=specs, arrivals_s=np.zeros(n),
                            concurrency=cell.concurrency)
        await gen.connect()
        await gen.run(time.perf_counter_ns())
        chunks, requests = gen.drain()
    requests_df = pl.from_arrow(pa.Table.from_batches([requests_batch(requests, cell.id, "a", "n", 0)]))
    chunks_df = pl.from_arrow(pa.Table.from_batches([chunks_batch(chunks, cell.id, 0)]))
    measured = summarize_cell(requests_df, chunks_df, target_concurrency=cell.concurrency)
    assert measured["completed"] == n
    return {key: measured[key] / predicted[key] for key in ("duration_s", "mean_e2el_ms", "mean_tpot_ms",
                                                             "mean_ttft_ms")}


async def test_the_servers_prefix_cache_reports_hits_on_metrics():
    features = simulated(Experiment(name="p", model=MODEL, backends=(seed.SEED_VLLM_H200_PREFIX,),
                                    hardware={"vllm-h200-prefix": Hardware(name="H200", count=8)},
                                    online=(Online(concurrency=(1,), input_len=10, output_len=2, num_prompts=1),))).backends[0]
    config = SimConfig(model=MODEL, timing="engine", backend_profile="vllm", features=features.engine_features)
    shared = list(range(1000, 1000 + 320))
    async with SimServer(config) as server, aiohttp.ClientSession() as session:
        usages = []
        for tail in (1, 2):
            body = {"model": MODEL, "prompt": shared + [tail] * 40, "max_tokens": 2, "ignore_eos": True,
                    "stream": True, "stream_options": {"include_usage": True}}
            async with session.post(server.url + "/v1/completions", json=body) as resp:
                assert resp.status == 200
                events = [line[6:] for line in (await resp.text()).splitlines() if line.startswith("data: {")]
                usages.append(json.loads(events[-1])["usage"])
        async with session.get(server.url + "/metrics") as resp:
            text = await resp.text()
    hits = [line for line in text.splitlines() if line.startswith("sim:prefix_cache_hits_total")]
    assert hits and float(hits[0].rsplit(" ", 1)[1]) == 320.0  # the shared 5 FlashMLA blocks of 64 ids
    # and the second request's usage says so, as vLLM's prompt_tokens_details does
    assert "prompt_tokens_details" not in usages[0]
    assert usages[1]["prompt_tokens_details"] == {"cached_tokens": 320}
