"""Three client nodes: one cell's streams spread over actors on all of them, every request recorded."""

import collections

import polars as pl
import pytest
import ray
from ray.cluster_utils import Cluster

from raybench import cluster as rb_cluster
from raybench.experiment import Experiment, Online, SimBackend
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir

STREAMS = 1200


@pytest.fixture(scope="module")
def client_nodes():
    rb_cluster.disconnect()  # one Ray connection per process: this module brings its own cluster
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    clients = [nodes.add_node(num_cpus=2, resources={"client": 1}) for _ in range(3)]
    ray.init(address=nodes.address, namespace="raybench")
    nodes.wait_for_nodes()
    yield {c.node_id for c in clients}
    ray.shutdown()
    nodes.shutdown()


@pytest.mark.slow
def test_streams_spread_over_actors_on_every_client_node(client_nodes, tmp_path):
    # a long ITL keeps every stream open at once: 1200 streams in flight over 6 actors
    experiment = Experiment(
        name="spread", model="deepseek-ai/DeepSeek-R1",
        backends=(SimBackend(timing="fixed", ttft_ms=500, itl_ms=1000),),
        online=(Online(concurrency=(STREAMS,), input_len=16, output_len=3, num_prompts=STREAMS),),
    )
    rd = RunDir.create(tmp_path, "spread")
    [summary] = Runner(experiment, rd, RunOptions(actors=6, num_cpus_per_actor=0.1), report=lambda _: None).run()
    requests = pl.read_parquet(rd.cell_dir(summary["cell_id"]) / "requests.parquet")
    assert summary["completed"] == STREAMS == requests.height
    assert requests["request_id"].n_unique() == STREAMS
    assert summary["peak_concurrency_requests"] >= 0.9 * STREAMS
    actor_nodes = collections.Counter(a["node"] for a in summary["actors"])
    assert set(actor_nodes) == client_nodes, actor_nodes  # every client node hosts actors, no other node does
    per_node = requests.group_by("node").len()
    assert set(per_node["node"]) == client_nodes
    assert per_node["len"].min() >= STREAMS // 6  # at least one actor's share on each node
    # every actor was anchored before and after
    assert all(a["clock_drift_ns"] is not None for a in summary["actors"])
    # each actor accounts for the memory its streams took (35-70 KiB a stream measured; see
    # docs/scaling.md): a regression to megabytes per stream would show here
    growth_mb = [a["rss_peak_mb"] - a["rss_start_mb"] for a in summary["actors"]]
    assert all(g > 0 for g in growth_mb)
    assert sum(growth_mb) * 1024 / STREAMS < 256, growth_mb
