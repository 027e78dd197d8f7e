"""The workflow's DAG resolves for the paper profile with every job of the study (dry run, no work done)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vstain.config import load_profile

ROOT = Path(__file__).resolve().parent.parent


def _job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def test_paper_profile_dag_has_every_job(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", VSTAIN_RESULTS=str(tmp_path))
    done = subprocess.run(
        [str(bin_dir / "snakemake"), "-s", "workflow/Snakefile", "all", "--dry-run", "--config", "profile=paper"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = _job_counts(done.stdout)
    paper = load_profile("paper")
    grid = len(paper.training.models) * len(paper.training.folds)
    assert grid == 20  # 4 models x 5 folds, as in the paper
    assert counts["train"] == grid and counts["infer"] == grid
    assert counts["train_he"] == len(paper.he.models) == counts["infer_he"]
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert counts["notebook"] == len(chapters) == 11
    for stage in ("dataset", "register", "evaluate", "evaluate_he", "frc", "volume", "uncertainty", "book"):
        assert counts[stage] == 1, stage


@pytest.mark.slow
def test_readme_papermill_example_trains_and_shows_only_the_named_model(tmp_path, monkeypatch):
    """The README's `papermill 03_training -p model pix2pix -p fold F`, on smoke: Pix2Pix alone is trained."""
    import papermill

    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))
    papermill.execute_notebook(str(ROOT / "notebooks" / "03_training.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"profile": "smoke", "model": "pix2pix", "fold": 0},
                               kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    trained = sorted(p.name for p in (tmp_path / "results" / "smoke" / "models").iterdir())
    assert trained == ["pix2pix"]
    with pytest.raises(papermill.PapermillExecutionError, match="is not in training.models"):
        papermill.execute_notebook(str(ROOT / "notebooks" / "03_training.ipynb"), str(tmp_path / "bad.ipynb"),
                                   parameters={"profile": "smoke", "model": "pix2pixx"},
                                   kernel_name="python3", progress_bar=False, cwd=str(ROOT))
