"""Shared fixtures: the smoke synthetic dataset, generated once per test session."""

import sys
from pathlib import Path

import pytest

# test modules share fixtures and small builders by importing each other (`from test_stain_cli import ...`),
# which --import-mode=importlib does not allow unless their folder is importable
sys.path.insert(0, str(Path(__file__).parent))

from vstain.config import load_profile  # noqa: E402
from vstain.pairs import read_registered_pair  # noqa: E402
from vstain.stages import upstream  # noqa: E402
from vstain.stages.dataset import generate_dataset  # noqa: E402
from vstain.train import train_model  # noqa: E402


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory):
    """Path of the smoke dataset's manifest.yaml (samples, split.csv beside it), generated once."""
    out = tmp_path_factory.mktemp("smoke_dataset")
    return generate_dataset(load_profile("smoke"), out, progress=False)


@pytest.fixture
def one_epoch_models(tmp_path, monkeypatch):
    """``results/smoke`` under ``tmp_path`` where the inference stage finds its models without the pipeline.

    The resolver's ``selected_checkpoint`` (:mod:`vstain.stages.upstream`, where every stage gets its
    checkpoint) becomes one smoke epoch on the registered pair ``p0`` (the test writes it under the
    returned folder), trained once per model into ``tmp_path/models/<model>``. Returns the
    ``results/smoke`` folder.
    """
    smoke = load_profile("smoke")
    root = tmp_path / "results" / "smoke"
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))

    def selected_checkpoint(profile, model, fold, stain="toluidine_blue", **kwargs):
        out = tmp_path / "models" / model
        if not (out / "last.pt").is_file():
            train_model([read_registered_pair(root / "registered" / "p0")], out, model, smoke.training, epochs=1,
                        seed=smoke.seed, fold=fold, profile_name="smoke", progress=False)
        return out / "last.pt"

    monkeypatch.setattr(upstream, "selected_checkpoint", selected_checkpoint)
    return root
