"""On a cluster that declares `client` nodes, load generators run there and nowhere else."""

import json

import polars as pl
import pytest
import ray
from ray.cluster_utils import Cluster

from raybench import cluster as rb_cluster
from raybench.experiment import Experiment, Online, SimBackend
from raybench.runner import RunOptions, Runner
from raybench.store.rundir import RunDir


@pytest.fixture(scope="module")
def two_nodes():
    rb_cluster.disconnect()  # one Ray connection per process: this module brings its own cluster
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    client = nodes.add_node(num_cpus=2, resources={"client": 1})
    ray.init(address=nodes.address, namespace="raybench")
    nodes.wait_for_nodes()
    yield client.node_id
    ray.shutdown()
    nodes.shutdown()


def test_load_generators_land_on_the_client_node(two_nodes, tmp_path):
    experiment = Experiment(
        name="placement", model="deepseek-ai/DeepSeek-R1", backends=(SimBackend(timing="zero"),),
        online=(Online(concurrency=(8,), input_len=16, output_len=8, num_prompts=32),),
    )
    rd = RunDir.create(tmp_path, "placement")
    [summary] = Runner(experiment, rd, RunOptions(actors=2), report=lambda _: None).run()
    assert summary["completed"] == 32
    assert {a["node"] for a in summary["actors"]} == {two_nodes}
    requests = pl.read_parquet(rd.cell_dir(summary["cell_id"]) / "requests.parquet")
    assert set(requests["node"]) == {two_nodes}
    assert set(requests["actor"]) == {"raybench:sim-online-c8-i16-o8:0", "raybench:sim-online-c8-i16-o8:1"}
    env = json.loads(rd.env_json.read_text())
    nodes = {n["node_id"]: n for n in env["ray_nodes"]}
    assert nodes[two_nodes]["resources"]["client"] == 1
    # every node was asked for its GPUs on the node itself; this machine has none
    assert set(env["gpus_by_node"]) == set(nodes)
    assert all(inv["gpus"] == [] and "error" in inv for inv in env["gpus_by_node"].values())
