"""Shared fixtures: the smoke synthetic dataset, generated once per test session."""

import pytest


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory):
    """Path of the smoke dataset's manifest.yaml (samples, split.csv beside it), generated once."""
    from vstain.config import load_profile
    from vstain.phantom import generate_dataset

    out = tmp_path_factory.mktemp("smoke_dataset")
    return generate_dataset(load_profile("smoke"), out, progress=False)
