"""A cell's streams against the cluster's room for load generators, before the cell starts."""

from __future__ import annotations

import pytest

from raybench.capacity import ClientCapacity, local_port_range, size_pool
from raybench.errors import ConfigError, RunError

TWO_CPUS = ClientCapacity(free_cpus=2.0, nodes=1, client_nodes=0, fds_per_process=1024)


def _size(streams, actors=None, capacity=TWO_CPUS):
    return size_pool(cell_id="c", streams=streams, actors=actors, streams_per_actor=256, cpus_per_actor=0.25,
                     capacity=capacity)


def test_a_cell_that_fits_gets_one_actor_per_256_streams():
    assert _size(1).actors == 1 and _size(256).actors == 1 and _size(257).actors == 2
    assert _size(2048).actors == 8 and _size(2048).note is None
    assert _size(100, actors=4).actors == 4 and _size(3, actors=8).actors == 3  # never more actors than streams


def test_by_default_no_more_actors_than_the_client_nodes_have_cpus():
    # more actors than cores only makes them take turns; --actors may still ask for more
    two_cores = ClientCapacity(free_cpus=2.0, nodes=1, client_nodes=0, fds_per_process=1024, total_cpus=2)
    assert _size(2048, capacity=two_cores).actors == 2 and _size(2048, capacity=two_cores).note is None
    assert _size(2048, actors=4, capacity=two_cores).actors == 4
    assert _size(100, capacity=two_cores).actors == 1


def test_more_actors_than_fit_run_on_those_that_fit_and_say_so():
    size = _size(3000)  # 12 actors asked, 8 fit on 2 CPUs (the case)
    assert size.actors == 8
    assert size.note == ("cell c: 3,000 streams would take 12 load-generator actors, but 2 free CPUs on 1 node "
                         "(0.25 CPU per load-generator actor) hold 8: running 8 actors of up to 375 streams each")


def test_too_many_streams_is_one_line_with_the_largest_concurrency_and_how_to_add_nodes():
    with pytest.raises(RunError) as info:
        _size(100_000)
    message = str(info.value)
    assert message == (
        "cell c: 100,000 concurrent streams do not fit: the cluster can host at most 7,168 now (2 free CPUs on 1 node "
        "(0.25 CPU per load-generator actor); 8 actors x up to 896 streams (open-file limit 1,024), 28,232 ports per "
        "node toward one server); lower the concurrency to 7,168 or less, or add client nodes (on each: ray start "
        """--address=<head>:6379 --resources='{"client": 1}')""")
    assert "\n" not in message
    _size(7168)  # the largest it names does fit


def test_ephemeral_ports_cap_the_streams_of_a_node():
    roomy = ClientCapacity(free_cpus=64.0, nodes=2, client_nodes=2, fds_per_process=1 << 20, ports_per_node=28232)
    with pytest.raises(RunError, match=r"can host at most 56,464 now \(64 free CPUs on 2 client nodes"):
        _size(60_000, capacity=roomy)
    assert _size(56_464, capacity=roomy).actors == 221


def test_explicit_actors_beyond_the_room_and_no_room_at_all():
    with pytest.raises(ConfigError) as info:
        _size(100, actors=12)
    assert str(info.value).startswith("--actors 12: the cluster has room for 8 load-generator actors now (2 free CPUs")
    assert "use --actors 8 or fewer" in str(info.value)
    full = ClientCapacity(free_cpus=0.1, nodes=1, client_nodes=0, fds_per_process=1024)
    with pytest.raises(RunError, match="no room for a load-generator actor: 0.1 free CPUs on 1 node"):
        _size(1, capacity=full)


def test_port_range_from_proc(tmp_path):
    (tmp_path / "range").write_text("32768\t60999\n")
    assert local_port_range(tmp_path / "range") == 28232
    assert local_port_range(tmp_path / "missing") == 28232
