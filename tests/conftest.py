"""Fixtures shared by every test directory."""

import logging

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """One local two-CPU Ray cluster on loopback for the session (joined if a sweep fixture started one)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    # address="local": without it ray.init joins whatever cluster /tmp/ray/ray_current_cluster names (any earlier
    # `ray start` on this machine, even a stopped one)
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=True,
             logging_level=logging.WARNING)
    yield ray
    ray.shutdown()
