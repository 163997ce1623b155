import pytest

from raybench import cluster


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray cluster for the whole session (starting one takes seconds)."""
    cluster.connect(None, num_cpus=4)
    yield
    cluster.disconnect()
