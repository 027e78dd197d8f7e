"""Shared fixtures: the smoke synthetic dataset, generated once per test session."""

import pytest

from vstain.config import load_profile
from vstain.stages.dataset import generate_dataset


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory):
    """Path of the smoke dataset's manifest.yaml (samples, split.csv beside it), generated once."""
    out = tmp_path_factory.mktemp("smoke_dataset")
    return generate_dataset(load_profile("smoke"), out, progress=False)
