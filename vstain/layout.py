"""Where artefacts live: ``results/<profile>/<stage>/``.

The results root is ``$VSTAIN_RESULTS`` when set; otherwise ``results/`` of the project
checkout this package was installed from (so a notebook run from ``notebooks/`` and a
command run from the top level share one results tree), or ``./results`` for an
installed package. Every stage reads only what earlier stages wrote there, so any stage
can be re-run alone. :func:`default_manifest_path` finds ``data_manifest.yaml`` the same way.

Examples
--------
>>> stage_dir("smoke", "registered", root="results").as_posix()
'results/smoke/registered'
>>> default_manifest_path().name
'data_manifest.yaml'
>>> model_dir("quick", "pix2pix", 2, root="results").as_posix()
'results/quick/models/pix2pix/fold2'
>>> model_dir("quick", "pix2pix", 0, "he", root="results").as_posix()
'results/quick/he/models/pix2pix'
"""

from __future__ import annotations

import os
from pathlib import Path

from vstain.vocabulary import MODEL_NAMES, STAINS, check_word

STAGES = (
    "dataset",      # vstain.phantom / vstain.manifest: images, ground truth, manifest, split
    "registered",   # vstain.registration + normalise + masks: pairs at CT pixel size
    "registration_cases",  # registration-only phantom blocks (no screw, screw at the edge): chapter 01
    "models",       # vstain.train: models/<model>/fold<k>/
    "inference",    # vstain.infer: whole-slide outputs
    "evaluation",   # vstain.metrics: per-patch metrics, Table 1
    "frc",          # vstain.frc
    "volume",       # vstain.volume
    "he",           # the H&E study
    "uncertainty",  # vstain.uncertainty: per-pixel uncertainty measured against the phantom's truth
    "sweep",        # vstain.sweep: the misalignment sweep (the paper's claim tested)
    "notebooks",    # executed notebooks (the book's pages)
)


PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _in_checkout() -> bool:
    # a source checkout (not an installed package): the project's own files sit beside the package
    return (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "workflow" / "Snakefile").is_file()


def results_root(root: str | Path | None = None) -> Path:
    """The results root: ``root`` if given, else ``$VSTAIN_RESULTS``, else the checkout's ``results/``."""
    if root is not None:
        return Path(root)
    if os.environ.get("VSTAIN_RESULTS"):
        return Path(os.environ["VSTAIN_RESULTS"])
    return PROJECT_ROOT / "results" if _in_checkout() else Path("results")


def default_manifest_path() -> Path:
    """The data manifest: ``$VSTAIN_MANIFEST``, else ``data_manifest.yaml`` of the checkout (or of ``.``)."""
    if os.environ.get("VSTAIN_MANIFEST"):
        return Path(os.environ["VSTAIN_MANIFEST"])
    return PROJECT_ROOT / "data_manifest.yaml" if _in_checkout() else Path("data_manifest.yaml")


def stage_dir(profile: str, stage: str, root: str | Path | None = None) -> Path:
    """The folder of one stage's artefacts for one profile (not created)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
    return results_root(root) / profile / stage


def split_path(profile: str, root: str | Path | None = None) -> Path:
    """``results/<profile>/dataset/split.csv``: the roles of every pair in every fold."""
    return stage_dir(profile, "dataset", root) / "split.csv"


def registered_dir(profile: str, root: str | Path | None = None) -> Path:
    """``results/<profile>/registered/``: one folder per registered pair, ``registration.csv``."""
    return stage_dir(profile, "registered", root)


def registration_cases_dir(profile: str, root: str | Path | None = None) -> Path:
    """``results/<profile>/registration_cases/``: the registration-only blocks (``blocks/``), their registered pairs
    (``registered/``) and ``registration.csv``."""
    return stage_dir(profile, "registration_cases", root)


def model_dir(profile: str, model: str, fold: int, stain: str = "toluidine_blue",
              root: str | Path | None = None) -> Path:
    """The run folder of one model on one fold.

    Toluidine blue: ``results/<profile>/models/<model>/fold<k>/``. H&E (the secondary study, S2,
    has one split recorded as fold 0): ``results/<profile>/he/models/<model>/``; other H&E folds
    get a ``fold<k>`` sub-folder.
    """
    check_word(model, MODEL_NAMES, "model")
    if check_word(stain, STAINS, "stain") == "he":
        base = stage_dir(profile, "he", root) / "models" / model
        return base if int(fold) == 0 else base / f"fold{int(fold)}"
    return stage_dir(profile, "models", root) / model / f"fold{int(fold)}"


def inference_dir(profile: str, model: str, fold: int, stain: str = "toluidine_blue",
                  root: str | Path | None = None) -> Path:
    """Whole-slide outputs of one model and fold: ``results/<profile>/inference/<model>/fold<k>/``;
    H&E: ``results/<profile>/he/inference/<model>/``."""
    check_word(model, MODEL_NAMES, "model")
    if check_word(stain, STAINS, "stain") == "he":
        base = stage_dir(profile, "he", root) / "inference" / model
        return base if int(fold) == 0 else base / f"fold{int(fold)}"
    return stage_dir(profile, "inference", root) / model / f"fold{int(fold)}"


def evaluation_dir(profile: str, root: str | Path | None = None) -> Path:
    """``results/<profile>/evaluation/``: per-patch metrics and Table 1."""
    return stage_dir(profile, "evaluation", root)


def frc_dir(profile: str, model: str, fold: int, root: str | Path | None = None) -> Path:
    """``results/<profile>/frc/<model>/fold<k>/``: per-patch FRC resolutions."""
    return stage_dir(profile, "frc", root) / model / f"fold{int(fold)}"


def volume_dir(profile: str, root: str | Path | None = None) -> Path:
    """``results/<profile>/volume/``: the stained phantom volume, its scores and renderings."""
    return stage_dir(profile, "volume", root)


def sweep_dir(profile: str, root: str | Path | None = None) -> Path:
    """``results/<profile>/sweep/``: the misalignment sweep (``per_patch.csv``, ``runs.csv``, ``done.json``)."""
    return stage_dir(profile, "sweep", root)


def sweep_level_dir(profile: str, level_name: str, root: str | Path | None = None) -> Path:
    """``results/<profile>/sweep/level<strength>/``: one strength's slides (``data/``) and runs (``<arm>/seed<k>/``)."""
    return sweep_dir(profile, root) / f"level{level_name}"
