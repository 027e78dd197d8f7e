"""The same seed gives the same Table 1 on CPU: the whole smoke pipeline, run twice from nothing.

Dataset, registration, training of the four models, inference and evaluation run in two
separate results trees; the two Table 1 files must be identical to the last digit.
"""

import pandas as pd
import pytest

from vstain.config import load_profile
from vstain.stages.evaluate import evaluate
from vstain.stages.infer import run_inference
from vstain.stages.register import ensure_registered
from vstain.stages.train import train_fold
from vstain.vocabulary import BASELINE


@pytest.mark.slow
def test_same_seed_same_table1(tmp_path, monkeypatch):
    profile = load_profile("smoke")
    tables = []
    for run in ("first", "second"):
        monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / run))
        # the stages in the workflow's order: each reads what the one before it wrote
        ensure_registered(profile, progress=False)
        for model in profile.training.models:
            for fold in profile.training.folds:
                train_fold(profile, model, fold, progress=False)
                run_inference(profile, model, fold, progress=False)
        path = evaluate(profile, profile.training.models, profile.training.folds, progress=False)
        tables.append(pd.read_csv(path))
    first, second = tables
    assert set(first["model"]) >= set(profile.training.models) | {BASELINE}
    assert first[["ssim", "psnr"]].notna().all().all()
    pd.testing.assert_frame_equal(first, second, check_exact=True)
