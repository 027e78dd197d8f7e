"""``vstain sweep``: the paper's claim tested on the phantom, across misalignment strengths (chapter 11).

The plan is :mod:`vstain.sweep`; the profile's ``sweep`` section sizes it. Three steps, one workflow rule each:

1. ``--stage data --level L``: the sweep's blocks (:func:`vstain.sweep.sample_plan`, the same blocks at every
   strength) cut with ``dataset.misalignment_strength = L`` at ``sweep.ct_shape``, and written as pairs the
   phantom's ground truth registers (:func:`vstain.phantom.ground_truth_pair`, normalised as paper 2.5 with
   the profile's constants): ``data/train/<id>/`` (the prepared sections, what the networks learn from),
   ``data/section/<id>/`` and ``data/twin/<id>/`` (each test slide as prepared, and its aligned twin);
   ``data.json`` last.
2. ``--stage run --level L --arm A --seed K``: one network trained on the strength's training slides
   (:func:`vstain.train.train_model`, ``sweep.epochs`` epochs, the arm's loss weights
   (:func:`vstain.sweep.arm_training`), seed :func:`vstain.sweep.sweep_seed`; last checkpoint), then each test
   slide stained (the profile's inference settings) and scored patch by patch (paper 2.10, the evaluation
   section's patches) against both targets; the first test slide's stain in ``example_stain.tif``;
   ``<arm>/seed<K>/scores.csv`` last.
3. ``--stage summarise``: every run's scores in ``per_patch.csv`` (``strength, model, seed, fold, pair_id, role,
   material``, metrics; ``model`` is the arm, ``role`` the target) and ``runs.csv`` (training seconds and steps
   per run); ``done.json`` last.

Without ``--stage`` every step runs in turn (what is done and current is kept).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(); configure_parser(parser)
>>> args = parser.parse_args(["--profile", "smoke", "--stage", "run", "--level", "2", "--arm", "pix2pix", "--seed", "1"])
>>> args.stage, args.level, args.arm, args.seed
('run', '2', 'pix2pix', 1)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from vstain.config import Profile, as_profile, resolve_device
from vstain.infer import ct_to_histology_slide
from vstain.io import is_current, provenance, write_csv, write_json, write_tiff
from vstain.layout import sweep_dir, sweep_level_dir
from vstain.metrics import load_lpips, patch_metrics
from vstain.models.checkpoint import load_generator
from vstain.pairs import read_registered_pair, write_registered_pair
from vstain.phantom import ground_truth_pair, make_sample
from vstain.stages.arguments import add_stage_options, non_negative_int
from vstain.sweep import (TARGETS, SweepRun, arm_model, arm_training, arms_at, level_name, parse_level,
                          sample_plan, sweep_runs, sweep_seed)
from vstain.train import forward_dtype, train_model

STAGES = ("data", "run", "summarise")
EXAMPLE = "example_stain.tif"  # each run's stain of the first test slide
STAIN = "toluidine_blue"


# --------------------------------------------------------------------------- records


def _data_settings(profile: Profile, level: float) -> dict[str, Any]:
    data = profile.to_dict()
    return {"seed": profile.seed, "level": level, "dataset": data["dataset"], "normalisation": data["normalisation"],
            "sweep": {k: data["sweep"][k] for k in ("n_train", "n_test", "ct_shape")}}


def _run_settings(profile: Profile, run: SweepRun) -> dict[str, Any]:
    data = profile.to_dict()
    return {**_data_settings(profile, run.level), "arm": run.arm, "seed_index": run.seed,
            "training": data["training"], "inference": data["inference"], "evaluation": data["evaluation"],
            "epochs": profile.sweep.epochs, "patches_per_pair": profile.sweep.patches_per_pair}


def run_dir(profile_name: str, run: SweepRun) -> Path:
    """``results/<profile>/sweep/level<L>/<arm>/seed<K>/``: one network's checkpoints and scores."""
    return sweep_level_dir(profile_name, level_name(run.level)) / run.arm / f"seed{run.seed}"


# --------------------------------------------------------------------------- 1. the slides of one strength


def level_dataset(profile: Profile, level: float) -> Any:
    """The dataset section with which the sweep cuts its blocks at one strength."""
    return dataclasses.replace(profile.dataset, misalignment_strength=float(level),
                               ct_shape=list(profile.sweep.ct_shape))


def make_level_data(profile: Profile | str, level: float, *, force: bool = False, progress: bool = True) -> Path:
    """Write one strength's training and test pairs (step 1 of the module docstring); return ``data.json``."""
    profile = as_profile(profile)
    level = parse_level(level, profile.sweep.levels)
    folder = sweep_level_dir(profile.name, level_name(level)) / "data"
    record = folder.parent / "data.json"
    settings = _data_settings(profile, level)
    if not force and is_current(record, settings):
        return record
    record.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    cfg, norm = level_dataset(profile, level), profile.normalisation
    constants = dict(ct_bone_mean=norm.ct_bone_mean, ct_background_mean=norm.ct_background_mean,
                     c_low=norm.histology_c_low, c_high=norm.histology_c_high)
    plan = sample_plan(profile.dataset.tb_counts, profile.sweep.n_train, profile.sweep.n_test, profile.seed)
    slides = []
    for entry in tqdm(plan, desc=f"sweep slides, strength {level_name(level)}", unit="slide", disable=not progress):
        sample = make_sample(cfg, entry["pair_id"], entry["material"], STAIN,
                             entry["index"] % cfg.n_beamtimes, entry["index"] % cfg.n_staining_sessions,
                             entry["seed"])
        targets = ("train",) if entry["role"] == "train" else TARGETS
        for target in targets:
            pair = ground_truth_pair(sample, twin=target == "twin", **constants)
            write_registered_pair(folder / target / entry["pair_id"], pair, provenance(profile, sweep_level=level))
        slides.append({k: entry[k] for k in ("pair_id", "role", "material")})
    write_json(record, {"settings": settings, "slides": slides, "provenance": provenance(profile)})
    return record


def _level_pairs(profile: Profile, level: float, target: str) -> list:
    folder = sweep_level_dir(profile.name, level_name(level))
    record = folder / "data.json"
    if not is_current(record, _data_settings(profile, level)):
        raise FileNotFoundError(f"{record}: the sweep's slides at strength {level_name(level)} are missing or were "
                                f"made with other settings; run `vstain sweep --profile {profile.name} --stage data "
                                f"--level {level_name(level)}`")
    role = "train" if target == "train" else "test"
    ids = [s["pair_id"] for s in json.loads(record.read_text())["slides"] if s["role"] == role]
    return [read_registered_pair(folder / "data" / target / pid) for pid in ids]


# --------------------------------------------------------------------------- 2. one network


def score_run(profile: Profile, checkpoint: Path, level: float, device: str, lpips_model: Any = None,
              example: Path | None = None) -> pd.DataFrame:
    """Per-patch SSIM / PSNR / LPIPS of one network's stain of every test slide, against both targets.

    With ``example``, the stain of the first test slide is written there (the chapter shows it).
    """
    generator, info = load_generator(checkpoint, "ct_to_histology")
    generator.to(device)
    cfg, ev = profile.inference, profile.evaluation
    tiling = dict(patch_size=cfg.patch_size, step=cfg.step, batch_size=cfg.batch_size, blend=cfg.blend,
                  device=device, dtype=forward_dtype(profile.inference, device), info=info)
    tables = []
    stains: dict[str, tuple[Any, Any]] = {}  # pair id -> (CT, stain): a slide and its twin share their CT plane
    for target in TARGETS:
        for pair in _level_pairs(profile, level, target):
            ct, stained = stains.get(pair.pair_id, (None, None))
            if ct is None or not np.array_equal(ct, pair.ct):
                stained = ct_to_histology_slide(generator, pair.ct, **tiling)
                stains[pair.pair_id] = (pair.ct, stained)
            if example is not None and not tables:
                write_tiff(example, stained, pair.pixel_size_um, metadata={"pair_id": pair.pair_id})
            table = patch_metrics(pair.histology, stained, pair.mask, patch_size=ev.patch_size, step=ev.patch_step,
                                  min_mask_fraction=ev.min_mask_fraction, lpips_model=lpips_model)
            table.insert(0, "pair_id", pair.pair_id)
            table.insert(1, "role", target)
            table.insert(2, "material", pair.material)
            tables.append(table)
    return pd.concat(tables, ignore_index=True)


def train_and_score(profile: Profile | str, run: SweepRun, *, device: str | None = None, force: bool = False,
                    progress: bool = True) -> Path:
    """Train one sweep network and score it (step 2 of the module docstring); return its ``scores.csv``."""
    profile = as_profile(profile)
    run = SweepRun(parse_level(run.level, profile.sweep.levels), run.arm, int(run.seed))
    if run.arm not in arms_at(profile.sweep, run.level):
        raise ValueError(f"arm {run.arm!r} is not trained at strength {level_name(run.level)} by profile "
                         f"{profile.name}; there: {', '.join(arms_at(profile.sweep, run.level))}")
    if not 0 <= run.seed < profile.sweep.seeds:
        raise ValueError(f"seed index {run.seed} is outside profile {profile.name}'s sweep.seeds "
                         f"({profile.sweep.seeds}: 0 to {profile.sweep.seeds - 1})")
    out = run_dir(profile.name, run)
    scores_path, record = out / "scores.csv", out / "run.json"
    settings = _run_settings(profile, run)
    if not force and is_current(record, settings, requires=[scores_path]):
        return scores_path
    scores_path.unlink(missing_ok=True)
    if not is_current(record, settings):  # other settings: start the network again
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(record, {"settings": settings, "provenance": provenance(profile)})
    torch_device = resolve_device(device or profile.device, source=f"profile {profile.name}: field device")
    training = arm_training(profile.training, run.arm, profile.sweep.patches_per_pair)
    train_model(_level_pairs(profile, run.level, "train"), out, arm_model(run.arm), training,
                epochs=profile.sweep.epochs, seed=sweep_seed(profile.seed, run.seed), fold=0, stain=STAIN,
                profile_name=profile.name, device=torch_device, progress=progress, inference=profile.inference)
    lpips = load_lpips()
    scores = score_run(profile, out / "last.pt", run.level, torch_device, lpips.model, example=out / EXAMPLE)
    scores.insert(0, "strength", run.level)
    scores.insert(1, "model", run.arm)
    scores.insert(2, "seed", run.seed)
    scores.insert(3, "fold", 0)
    write_csv(scores_path, scores)
    return scores_path


# --------------------------------------------------------------------------- 3. the whole sweep


def summarise(profile: Profile | str) -> Path:
    """Gather every run's scores and timing (step 3 of the module docstring); return ``done.json``."""
    profile = as_profile(profile)
    folder = sweep_dir(profile.name)
    runs = sweep_runs(profile.sweep)
    missing = [run for run in runs if not (run_dir(profile.name, run) / "scores.csv").is_file()]
    if missing:
        first = missing[0]
        raise FileNotFoundError(
            f"{run_dir(profile.name, first) / 'scores.csv'}: {len(missing)} of the sweep's {len(runs)} runs are "
            f"missing; run `vstain sweep --profile {profile.name}` (or `--stage run --level {level_name(first.level)} "
            f"--arm {first.arm} --seed {first.seed}`)")
    done = folder / "done.json"
    done.unlink(missing_ok=True)
    tables, timing = [], []
    for run in runs:
        path = run_dir(profile.name, run)
        tables.append(pd.read_csv(path / "scores.csv"))
        trained = json.loads((path / "training.json").read_text())
        seconds, steps = float(trained["seconds"]), int(trained["steps_per_epoch"]) * int(trained["epochs_done"])
        timing.append({"strength": run.level, "model": run.arm, "seed": run.seed, "seconds": seconds, "steps": steps,
                       "steps_per_second": steps / seconds if seconds > 0 else float("nan")})
    write_csv(folder / "per_patch.csv", pd.concat(tables, ignore_index=True))
    write_csv(folder / "runs.csv", pd.DataFrame(timing))
    lpips = load_lpips()
    write_json(done, {"settings": profile.to_dict()["sweep"], "runs": len(runs), "lpips": lpips.message,
                      "provenance": provenance(profile)})
    return done


def run_sweep(profile: Profile | str, *, device: str | None = None, force: bool = False,
              progress: bool = True) -> Path:
    """Every step in turn, one run at a time (the workflow runs them in parallel); return ``done.json``."""
    profile = as_profile(profile)
    for level in profile.sweep.levels:
        make_level_data(profile, level, force=force, progress=progress)
    scores = [train_and_score(profile, run, device=device, force=force, progress=False)
              for run in tqdm(sweep_runs(profile.sweep), desc="sweep runs", unit="run", disable=not progress)]
    done = sweep_dir(profile.name) / "done.json"
    # gathered already, after every run's scores were written, with these settings: kept as it is
    if not force and is_current(done, profile.to_dict()["sweep"]) and all(
            path.stat().st_mtime <= done.stat().st_mtime for path in scores):
        return done
    return summarise(profile)


# --------------------------------------------------------------------------- command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_stage_options(parser, force=True, progress=True)
    parser.add_argument("--stage", choices=STAGES, help="one step (default: all of them in turn)")
    parser.add_argument("--level", help="misalignment strength (one of the profile's sweep.levels)")
    parser.add_argument("--arm", help="a model, or mod_cyclegan_no_px / _no_gs / _no_px_no_gs (--stage run)")
    parser.add_argument("--seed", type=non_negative_int, help="seed index, from 0 to sweep.seeds - 1 (--stage run)")
    parser.add_argument("--device", help="cpu, cuda or auto (default: the profile's)")


def run_cli(args: argparse.Namespace) -> int:
    """``vstain sweep``: one step, or the whole sweep."""
    progress = not args.no_progress
    needs = {"data": ("level",), "run": ("level", "arm", "seed"), "summarise": ()}.get(args.stage, ())
    absent = [f"--{name}" for name in needs if getattr(args, name) is None]
    if absent:
        raise ValueError(f"vstain sweep --stage {args.stage} needs {' and '.join(absent)}")
    if args.stage == "data":
        path = make_level_data(args.profile, args.level, force=args.force, progress=progress)
    elif args.stage == "run":
        path = train_and_score(args.profile, SweepRun(args.level, args.arm, args.seed), device=args.device,
                               force=args.force, progress=progress)
    elif args.stage == "summarise":
        path = summarise(args.profile)
    else:
        path = run_sweep(args.profile, device=args.device, force=args.force, progress=progress)
    print(f"wrote {path}")
    return 0

