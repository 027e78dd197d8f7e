"""Where artefacts live: ``results/<profile>/<stage>/``.

The results root is ``results`` under the current directory unless the
environment variable ``VSTAIN_RESULTS`` names another one. Every stage reads only
what earlier stages wrote there, so any stage can be re-run alone.

Examples
--------
>>> stage_dir("smoke", "registered", root="results").as_posix()
'results/smoke/registered'
"""

from __future__ import annotations

import os
from pathlib import Path

STAGES = (
    "dataset",      # vstain.phantom / vstain.manifest: images, ground truth, manifest, split
    "registered",   # vstain.registration + normalise + masks: pairs at CT pixel size
    "models",       # vstain.train: models/<model>/fold<k>/
    "inference",    # vstain.infer: whole-slide outputs
    "evaluation",   # vstain.metrics: per-patch metrics, Table 1
    "frc",          # vstain.frc
    "volume",       # vstain.volume
    "he",           # the H&E study
    "notebooks",    # executed notebooks (the book's pages)
)


def results_root(root: str | Path | None = None) -> Path:
    """The results root: ``root`` if given, else ``$VSTAIN_RESULTS``, else ``./results``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("VSTAIN_RESULTS", "results"))


def stage_dir(profile: str, stage: str, root: str | Path | None = None) -> Path:
    """The folder of one stage's artefacts for one profile (not created)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    return results_root(root) / profile / stage
