"""A tiny config on the shared tiny dataset (tests/conftest.py)."""


import pytest

from toco_ray.config import build_config


@pytest.fixture
def tiny_cfg(tiny_root, tiny_overrides):
    def make(**overrides):
        return build_config("synthetic", {**tiny_overrides, "data.root": str(tiny_root), **overrides})

    return make
