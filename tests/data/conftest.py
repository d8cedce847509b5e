"""Small generated dataset trees shared by the data tests (generated once per session, copied when mutated)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from data_trees import NUM_TRAIN, NUM_VAL

from toco_ray.data.synthetic import generate_dataset


@pytest.fixture(scope="session")
def synthetic_tree(tmp_path_factory) -> Path:
    """A read-only-by-convention VOC-layout tree: 10 train + 5 val images, seed 0."""
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), NUM_TRAIN, NUM_VAL, seed=0)


@pytest.fixture
def voc_root(synthetic_tree, tmp_path) -> Path:
    """A private copy of the synthetic tree that a test may modify."""
    return Path(shutil.copytree(synthetic_tree, tmp_path / "VOC2012"))
