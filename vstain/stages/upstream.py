"""Where a stage obtains what earlier stages wrote: the one resolver between stages.

A stage never imports another stage's module to get its inputs; it asks this module, which reads
them from ``results/<profile>/`` (:mod:`vstain.layout`, :mod:`vstain.pairs`) and checks that they
are there. The workflow owns the graph (``workflow/Snakefile``): an input that is missing and is
not cheap to make stops with :class:`MissingInput`, whose message names the command that makes it
(e.g. ``vstain train --profile quick --model pix2pix --fold 0``). Two inputs are cheap and made
here on demand: the synthetic dataset (deterministic from the seed, :func:`dataset_manifest`) and
the choice of a trained run's checkpoint (:func:`selected_checkpoint`, written once into the run
folder as ``selection.json``).

What a stage may ask for:

* the dataset: :func:`dataset_manifest`, :func:`dataset_folder`, :func:`ground_truth_pairs`,
  :func:`volume_sample`;
* the registered pairs: :func:`registration_table`, :func:`fold_pairs`;
* a trained model: :func:`is_trained`, :func:`trained_run`, :func:`selected_checkpoint`,
  :func:`forward_stainer`;
* whole-slide outputs: :func:`inference_run`, :func:`read_inference`.

Examples
--------
>>> from vstain.config import load_profile
>>> command("train", load_profile("quick"), model="pix2pix", fold=0)
'vstain train --profile quick --model pix2pix --fold 0'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from vstain.config import Profile, as_profile
from vstain.io import is_current, read_record, read_tiff, sha256_file, write_json
from vstain.layout import default_manifest_path, inference_dir, model_dir, registered_dir, split_path, stage_dir
from vstain.models import architecture
from vstain.pairs import RegisteredPair, fold_pair_ids, load_fold_pairs, read_profile_split
from vstain.phantom import ground_truth_pair, load_sample
from vstain.stages.dataset import ensure_dataset, resolve_manifest
from vstain.stages.stain import load_forward_stainer
from vstain.train import run_checkpoints, select_checkpoint
from vstain.volume import volume_sample as choose_volume_sample
from vstain.vocabulary import PAIR_SOURCES

__all__ = ["MissingInput", "TABLE_COLUMNS", "command", "dataset_folder", "dataset_manifest", "epochs_for",
           "fold_pairs", "forward_stainer", "ground_truth_pairs", "inference_run", "is_trained", "read_inference",
           "registration_table", "selected_checkpoint", "trained_run", "volume_sample"]

#: Where training pairs come from: the registration stage's, or the phantom's ground truth.
SOURCES = PAIR_SOURCES  # where a stage takes its pairs from

#: Columns of ``registered/registration.csv`` (one row per pair, failures included).
TABLE_COLUMNS = ["pair_id", "material", "stain", "beamtime", "session", "mutual_information",
                 "initial_mutual_information", "mi_margin", "silhouette_iou", "tilt_spread_deg",
                 "tilt_disagreement_deg", "tilt_error_px", "mirrored",
                 "normal_axis", "initial_guess", "angle_error_deg",
                 "offset_um", "tre_median_px", "tre_max_px", "mask_iou", "seconds", "status"]

#: The 3D study's sample is stained in toluidine blue.
VOLUME_STAIN = "toluidine_blue"

#: The toluidine-blue study is ``vstain train`` / ``vstain infer``; the H&E study (one split, fold 0) is ``vstain he``.
HE_FOLD = 0


class MissingInput(FileNotFoundError):
    """An input another stage makes is missing; the message names the file and the command that makes it."""


def command(name: str, profile: Profile, **options: Any) -> str:
    """The command line that makes an input: ``vstain <name> --profile <profile> --<option> <value> ...``.

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> command("he", load_profile("smoke"), model="pix2pix", stage="train")
    'vstain he --profile smoke --model pix2pix --stage train'
    """
    words = [f"vstain {name}", f"--profile {profile.name}"]
    words += [f"--{key.replace('_', '-')} {value}" for key, value in options.items()]
    return " ".join(words)


# --------------------------------------------------------------------------- the dataset


def dataset_manifest(profile: Profile | str, manifest_path: str | Path | None = None) -> Path:
    """The data manifest of real files to use; the synthetic dataset is generated when missing (cheap).

    ``manifest_path`` defaults to :func:`vstain.layout.default_manifest_path`; ``source: synthetic``
    resolves to ``results/<profile>/dataset/manifest.yaml`` (:func:`vstain.stages.dataset.resolve_manifest`).
    """
    profile = as_profile(profile)
    return resolve_manifest(default_manifest_path() if manifest_path is None else manifest_path, profile)


def dataset_folder(profile: Profile | str, root: str | Path | None = None) -> Path:
    """``results/<profile>/dataset/`` with the profile's synthetic dataset in it (generated when missing).

    Under another results ``root`` the dataset is that root's own, and is not generated here.
    """
    profile = as_profile(profile)
    if root is None:
        ensure_dataset(profile, progress=False)
    return stage_dir(profile.name, "dataset", root)


def ground_truth_pairs(profile: Profile | str, fold: int, role: str = "train", stain: str = "toluidine_blue",
                       root: str | Path | None = None) -> list[RegisteredPair]:
    """The pairs of one fold and role, registered by the phantom's ground truth.

    What a perfect registration would give (:func:`vstain.phantom.ground_truth_pair`): an
    upper bound for teaching, and a way to train before the registration stage has run.
    The dataset is generated first when missing.
    """
    profile = as_profile(profile)
    ensure_dataset(profile)
    dataset = stage_dir(profile.name, "dataset", root)
    ids = fold_pair_ids(profile.name, fold, role, stain, root)
    return [ground_truth_pair(load_sample(dataset / pid)) for pid in ids]


def volume_sample(profile: Profile | str, fold: int | None = None) -> Any:
    """The phantom sample whose CT volume the 3D study stains (the volume and uncertainty stages alike).

    The pair is chosen by :func:`vstain.volume.volume_sample` (the first toluidine-blue test pair of
    ``fold``, default ``profile.volume.fold``) from the split; only that sample is loaded.

    Returns
    -------
    PhantomSample
    """
    profile = as_profile(profile)
    dataset = dataset_folder(profile)
    split = read_profile_split(profile.name)
    column = f"fold{int(profile.volume.fold if fold is None else fold)}"
    if column not in split.columns:
        raise ValueError(f"{dataset / 'split.csv'}: no column {column!r} (profile {profile.name}: field volume.fold)")
    ids = split["pair_id"].astype(str)
    pair_id = choose_volume_sample(dict(zip(ids, split[column].astype(str))),
                                   dict(zip(ids, split["stain"].astype(str))), VOLUME_STAIN)
    return load_sample(dataset / pair_id)


# --------------------------------------------------------------------------- registered pairs


def pair_records(profile_name: str, pair_ids: list[str], folder: Path | None = None) -> list[dict]:
    out_dir = stage_dir(profile_name, "registered") if folder is None else Path(folder)
    records = []
    for pair_id in pair_ids:
        meta = out_dir / pair_id / "pair.json"
        failed = out_dir / f".{pair_id}.failed.json"
        if meta.is_file():
            records.append(json.loads(meta.read_text()))
        elif failed.is_file():
            row = {c: v for c, v in json.loads(failed.read_text()).items() if c in TABLE_COLUMNS}
            records.append({"extras": {"table_row": row}})
    return records


def registration_table(profile_name: str, pair_ids: list[str] | None = None, *,
                       folder: str | Path | None = None) -> pd.DataFrame:
    """The per-pair registration table from the pair folders (one row per pair, failures included).

    Parameters
    ----------
    profile_name : str
        The profile whose ``results/<profile>/registered/`` is read.
    pair_ids : list of str, optional
        These pairs, in this order (default: every registered pair, then every failed one); a pair
        the registration stage has no record of has no row.
    folder : path, optional
        Where the pair folders are (default ``results/<profile>/registered/``; the registration-only
        blocks of chapter 01 lie in ``registration_cases/registered/``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`: ``pair_id``, ``material``, ``stain``, ``beamtime``, ``session``,
        ``mutual_information``, ``initial_mutual_information``, ``mi_margin`` and
        ``silhouette_iou`` (the quality check), ``mirrored`` (the fit found the section
        face down), ``angle_error_deg``, ``offset_um``, ``tre_median_px``, ``tre_max_px``,
        ``mask_iou``, ``seconds``, ``status``.
    """
    out_dir = stage_dir(profile_name, "registered") if folder is None else Path(folder)
    if pair_ids is None:
        pair_ids = sorted(p.parent.name for p in out_dir.glob("*/pair.json"))
        pair_ids += sorted(p.name[1:-len(".failed.json")] for p in out_dir.glob(".*.failed.json"))
    rows = [r["extras"]["table_row"] for r in pair_records(profile_name, pair_ids, out_dir)]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def registered_table(profile: Profile | str, pair_ids: list[str], stain: str | None = None) -> pd.DataFrame:
    """The registration rows of ``pair_ids``; every one must have a record (a pair folder or its failure).

    Raises
    ------
    MissingInput
        Naming the first pair without a record and ``vstain register``.
    """
    profile = as_profile(profile)
    table = registration_table(profile.name, list(pair_ids))
    missing = [pid for pid in pair_ids if pid not in set(table["pair_id"])]
    if missing:
        options = {"stain": stain} if stain else {}
        raise MissingInput(f"{registered_dir(profile.name) / missing[0]}: not registered ({len(missing)} of "
                           f"{len(pair_ids)} pairs); run `{command('register', profile, **options)}`")
    return table


def fold_pairs(profile: Profile | str, fold: int, role: str = "train", stain: str = "toluidine_blue", *,
               source: str = "registered", progress: bool = True, root: str | Path | None = None
               ) -> list[RegisteredPair]:
    """The pairs of one fold and role: registered (the pipeline) or the phantom's ground truth.

    ``source="registered"`` reads ``results/<profile>/registered/`` (:func:`vstain.pairs.load_fold_pairs`:
    a missing pair stops with the command that registers it, ``vstain register``; the dataset, whose
    split names the pairs, is generated when there is no split); ``"ground_truth"``
    registers by the phantom's ground truth (:func:`ground_truth_pairs`). ``progress`` is accepted for
    the callers' sake: nothing slow runs here.
    """
    profile = as_profile(profile)
    if source == "registered":
        if not split_path(profile.name, root).is_file():  # the split names the fold's pairs: the dataset is cheap
            dataset_folder(profile, root)
        return load_fold_pairs(profile.name, fold, role, stain, root)
    if source == "ground_truth":
        return ground_truth_pairs(profile, fold, role, stain, root)
    raise ValueError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")


# --------------------------------------------------------------------------- trained models


def epochs_for(profile: Profile, stain: str) -> int:
    """The profile's epochs of a stain: ``he.epochs`` for H&E, else ``training.epochs``.

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> epochs_for(load_profile("smoke"), "he")
    1
    """
    return profile.he.epochs if stain == "he" else profile.training.epochs


def is_trained(profile: Profile | str, model: str, fold: int, stain: str = "toluidine_blue",
               root: str | Path | None = None) -> bool:
    """Whether the run folder holds a finished run of the profile's epochs and architecture."""
    profile = as_profile(profile)
    out = model_dir(profile.name, model, fold, stain, root)
    record = read_record(out / "training.json")
    if record is None or not (out / "last.pt").is_file():
        return False
    return (record.get("epochs_done", 0) >= epochs_for(profile, stain)
            and is_current(record, architecture(model, profile.training), key="architecture"))


def _train_command(profile: Profile, model: str, fold: int, stain: str) -> str:
    if stain == "he":
        return command("he", profile, model=model, stage="train")
    return command("train", profile, model=model, fold=int(fold))


def trained_run(profile: Profile | str, model: str, fold: int = 0, stain: str = "toluidine_blue", *,
                root: str | Path | None = None) -> Path:
    """The folder of a finished training run (:func:`is_trained`).

    Raises
    ------
    MissingInput
        Naming the run folder and ``vstain train`` (``vstain he --stage train`` for H&E).
    """
    profile = as_profile(profile)
    out = model_dir(profile.name, model, fold, stain, root)
    if not is_trained(profile, model, fold, stain, root):
        raise MissingInput(f"{out}: no finished training run of {model} on fold {int(fold)} with profile "
                           f"{profile.name}'s settings; run `{_train_command(profile, model, fold, stain)}`")
    return out


def selected_checkpoint(profile: Profile | str, model: str, fold: int = 0, stain: str = "toluidine_blue", *,
                        source: str = "registered", progress: bool = True, root: str | Path | None = None) -> Path:
    """The checkpoint of a finished run that stains downstream, chosen once by the profile's rule.

    Applies ``training.checkpoint_selection`` (:func:`vstain.train.select_checkpoint`) on the fold's
    validation pairs and writes ``selection.json`` in the run folder (the rule, the scores of every
    candidate, the choice); an up-to-date choice is read back. Inference, evaluation, FRC and the 3D
    stage all stain with it.

    Returns
    -------
    Path
        ``last.pt`` or ``best_<component>.pt`` of the run.

    Raises
    ------
    MissingInput
        When the run is not trained (:func:`trained_run`).
    """
    profile = as_profile(profile)
    run = trained_run(profile, model, fold, stain, root=root)
    rule = profile.training.checkpoint_selection
    candidates = run_checkpoints(run)
    key = {"rule": rule, "candidates": sorted(candidates), "last_sha256": sha256_file(run / "last.pt"),
           "patch_size": profile.inference.patch_size, "step": profile.inference.step, "source": source}
    record_path = run / "selection.json"
    record = read_record(record_path)
    if is_current(record, key, key="key"):
        return run / record["file"]
    pairs = [] if rule == "last" else fold_pairs(profile, fold, "validation", stain, source=source, root=root)
    chosen, table = select_checkpoint(candidates, pairs, rule, profile.inference.patch_size, profile.inference.step)
    write_json(record_path, {"key": key, "chosen": chosen, "file": candidates[chosen].name,
                             "validation_pairs": [p.pair_id for p in pairs], "scores": table.to_dict("records")})
    return candidates[chosen]


def forward_stainer(checkpoint: str | Path, **options: Any) -> tuple[Any, dict]:
    """A trained checkpoint's CT-to-histology generator as a slice stainer
    (:func:`vstain.stages.stain.load_forward_stainer`, the same options)."""
    return load_forward_stainer(checkpoint, **options)


# --------------------------------------------------------------------------- whole-slide outputs


def inference_run(profile: Profile | str, model: str, fold: int, stain: str = "toluidine_blue") -> Path:
    """The folder of a complete inference run (its ``done.json`` written last).

    Raises
    ------
    MissingInput
        Naming ``done.json`` and ``vstain infer`` (``vstain he --stage infer`` for H&E).
    """
    profile = as_profile(profile)
    out = inference_dir(profile.name, model, fold, stain)
    if read_record(out / "done.json") is None:
        make = (command("he", profile, model=model, stage="infer") if stain == "he"
                else command("infer", profile, model=model, fold=int(fold)))
        raise MissingInput(f"{out / 'done.json'}: no complete inference of {model} on fold {int(fold)}; "
                           f"run `{make}`")
    return out


def read_inference(folder: str | Path) -> dict[str, Any]:
    """One pair's inference outputs: ``histology``, ``histology_masked``, ``ct``, ``ct_masked``
    (absent for Pix2Pix), ``pixel_size_um`` and the ``record`` of ``inference.json``."""
    folder = Path(folder)
    meta = folder / "inference.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: not found (inference of this pair is missing or incomplete)")
    record = json.loads(meta.read_text())
    out: dict[str, Any] = {"record": record}
    for name in record.get("files", []):
        image, size, _ = read_tiff(folder / name)
        out[name.removesuffix(".tif")] = image
        out["pixel_size_um"] = float(size[-1])
    return out
