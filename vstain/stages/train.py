"""The training stage: which pairs, which run folder, whether a run is finished; ``vstain train``.

The training itself is :func:`vstain.train.train_model` (pairs and a training
configuration in, a run folder out). This stage takes a profile: it reads the fold's
pairs (registered by the registration stage, or by the phantom's ground truth), runs the
registration first when needed, and writes the run into
``results/<profile>/models/<model>/fold<k>/`` (:func:`vstain.layout.model_dir`; H&E:
``results/<profile>/he/models/<model>/``).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="vstain train")
>>> configure_parser(parser)
>>> parser.parse_args(["--model", "pix2pix", "--source", "ground_truth"]).source
'ground_truth'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from vstain.config import Profile, as_profile, load_profile, resolve_device
from vstain.distributed import Ranks, barrier, process_group, ranks_from_environment, report_failure
from vstain.layout import model_dir, split_path
from vstain.pairs import RegisteredPair, load_fold_pairs, read_profile_split
from vstain.stages import upstream
from vstain.stages.arguments import add_stage_options, non_negative_int, positive_int
from vstain.stages.upstream import SOURCES, epochs_for, fold_pairs, ground_truth_pairs, is_trained
from vstain.train import patch_panels, train_model, validation_scores
from vstain.vocabulary import MODEL_NAMES, STAINS, check_word

__all__ = ["SOURCES", "TrainingReport", "chapter_models", "check_ranks", "check_split_folds", "configure_parser",
           "ensure_selected", "ensure_trained", "epochs_for", "fold_pairs", "ground_truth_pairs", "is_trained",
           "run_cli", "selection_table", "torchrun_command", "train_fold", "training_report"]


def check_split_folds(profile: Profile, root: str | Path | None = None, *, split: pd.DataFrame | None = None
                      ) -> pd.DataFrame:
    """Refuse a split whose fold count is not the profile's ``dataset.n_folds`` (it was made by another profile).

    Parameters
    ----------
    profile : Profile
    root : str or Path, optional
        Results root.
    split : DataFrame, optional
        The split already read (:func:`vstain.pairs.read_profile_split`); read here otherwise.

    Returns
    -------
    DataFrame
        The split, for the caller to take its pairs from without reading it again.

    Raises
    ------
    ValueError
        Naming the split file, both counts and the command that rewrites the split.
    """
    path = split_path(profile.name, root)
    split = read_profile_split(profile.name, root) if split is None else split
    folds = sum(c.startswith("fold") for c in split.columns)
    if folds != profile.dataset.n_folds:
        raise ValueError(f"{path}: the split has {folds} folds but profile {profile.name} sets dataset.n_folds "
                         f"{profile.dataset.n_folds}; rewrite it with vstain check-manifest --profile {profile.name}")
    return split


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """Where and how a training run goes, not what it learns: :func:`train_fold`'s ``setup``.

    Attributes
    ----------
    resume : bool
        Continue from the run folder's ``last.pt`` when it exists.
    device : str, optional
        ``"cpu"``, ``"cuda"`` or ``"auto"``; default the profile's ``device``.
    ranks : Ranks, optional
        This process among the ranks of a distributed run, its process group joined
        (:func:`vstain.distributed.process_group`; ``device`` is then the rank's own, e.g. ``cuda:1``).

    Examples
    --------
    >>> RunSetup().resume, RunSetup(device="cuda").device
    (True, 'cuda')
    """

    resume: bool = True
    device: str | None = None
    ranks: Ranks | None = None


def train_fold(profile: Profile | str, model: str, fold: int = 0, *, stain: str = "toluidine_blue",
               epochs: int | None = None, pairs: Sequence[RegisteredPair] | None = None,
               out_dir: str | Path | None = None, progress: bool = True, root: str | Path | None = None,
               setup: RunSetup | None = None) -> Path:
    """Train ``model`` on ``fold`` with the profile's settings and write its history and checkpoints.

    Parameters
    ----------
    profile : Profile or str
        Every number (patches, widths, lambdas, epochs, seed) comes from it.
    model : str
        ``mod_cyclegan``, ``cyclegan``, ``cyclegan_invct`` or ``pix2pix``.
    fold : int
        Cross-validation fold; its ``train`` pairs are used.
    stain : {"toluidine_blue", "he"}
    epochs : int, optional
        Total epochs (default ``profile.training.epochs``, H&E ``profile.he.epochs``).
    pairs : sequence of RegisteredPair, optional
        Training pairs; default: the fold's registered pairs (:func:`vstain.pairs.load_fold_pairs`).
    out_dir : path, optional
        Default :func:`vstain.layout.model_dir`.
    progress : bool
        Show a tqdm bar.
    root : path, optional
        Results root (default: :func:`vstain.layout.results_root`).
    setup : RunSetup, optional
        Resume or not, the device and the ranks of a distributed run (default :class:`RunSetup`:
        resume, the profile's device, one process).

    Returns
    -------
    Path
        The run folder (see :func:`vstain.train.train_model`).
    """
    profile = as_profile(profile)
    check_word(model, MODEL_NAMES, "model")
    check_word(stain, STAINS, "stain")
    epochs = epochs_for(profile, stain) if epochs is None else int(epochs)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if pairs is None:
        split = check_split_folds(profile, root)  # read once: the fold's pairs come from the same table
        pairs = load_fold_pairs(profile.name, fold, "train", stain, root, split=split)
    out = Path(out_dir) if out_dir is not None else model_dir(profile.name, model, fold, stain, root)
    setup = RunSetup() if setup is None else setup
    device, ranks = setup.device, setup.ranks
    if ranks is not None and ranks.distributed and device is not None:
        torch_device = device  # the rank's own device, resolved when the group was joined
    else:
        source = "--device" if device is not None else f"profile {profile.name}: field device"
        torch_device = resolve_device(device or profile.device, source=source)
    return train_model(pairs, out, model, profile.training, epochs=epochs, seed=profile.seed, fold=fold,
                       stain=stain, profile_name=profile.name, device=torch_device, resume=setup.resume,
                       progress=progress, ranks=ranks, inference=profile.inference)


def ensure_trained(profile: Profile | str, model: str, fold: int = 0, stain: str = "toluidine_blue", *,
                   source: str = "registered", progress: bool = True, root: str | Path | None = None) -> Path:
    """Train ``model`` on ``fold`` unless a finished run exists; resume an unfinished one.

    ``source="registered"`` trains on the registered pairs (the pipeline; missing ones stop with the
    command that registers them); ``"ground_truth"`` on the phantom's ground-truth pairs
    (:func:`vstain.stages.upstream.ground_truth_pairs`).

    Returns
    -------
    Path
        The run folder, :func:`vstain.layout.model_dir`; its ``last.pt`` is the checkpoint.
    """
    profile = as_profile(profile)
    out = model_dir(profile.name, model, fold, stain, root)
    if is_trained(profile, model, fold, stain, root):
        return out
    pairs = fold_pairs(profile, fold, "train", stain, source=source, progress=progress, root=root)
    return train_fold(profile, model, fold, stain=stain, pairs=pairs, progress=progress, root=root)


def ensure_selected(profile: Profile | str, model: str, fold: int = 0, stain: str = "toluidine_blue", *,
                    source: str = "registered", progress: bool = True, root: str | Path | None = None) -> Path:
    """The checkpoint of a finished run that stains downstream, chosen once by the profile's rule.

    Trains first if needed (:func:`ensure_trained`), then chooses
    (:func:`vstain.stages.upstream.selected_checkpoint`: ``training.checkpoint_selection`` on the
    fold's validation pairs, recorded in ``selection.json``).

    Returns
    -------
    Path
        ``last.pt`` or ``best_<component>.pt`` of the run.
    """
    ensure_trained(profile, model, fold, stain, source=source, progress=progress, root=root)
    return upstream.selected_checkpoint(profile, model, fold, stain, source=source, progress=progress, root=root)


def selection_table(profile: Profile | str, model: str, fold: int = 0, stain: str = "toluidine_blue", *,
                    root: str | Path | None = None) -> tuple[str, pd.DataFrame]:
    """The chosen checkpoint of a run and the validation scores of every candidate (``selection.json``)."""
    profile = as_profile(profile)
    path = model_dir(profile.name, model, fold, stain, root) / "selection.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint selection yet (run vstain infer, which chooses it)")
    record = json.loads(path.read_text())
    return record["chosen"], pd.DataFrame(record["scores"])


# --------------------------------------------------------------------------- for the chapter


@dataclasses.dataclass
class TrainingReport:
    """What chapter 03 shows of one trained model.

    Attributes
    ----------
    model : str
    fold : int
    run : Path
        The run folder (``history.csv``, ``last.pt``).
    history : DataFrame
        ``history.csv``.
    panels : dict
        Fig. 4a: training patches of the fold (:func:`vstain.train.patch_panels`), as in the paper.
    scores : DataFrame
        Per validation pair SSIM / PSNR against the raw-CT baseline (:func:`vstain.train.validation_scores`),
        of the selected checkpoint.
    selected : str
        The checkpoint that stains downstream (``last`` or ``best_<component>``).
    selection : DataFrame
        Median validation SSIM / PSNR of every saved checkpoint (:func:`vstain.train.select_checkpoint`).
    """

    model: str
    fold: int
    run: Path
    history: pd.DataFrame
    panels: dict[str, np.ndarray]
    scores: pd.DataFrame
    selected: str = "last"
    selection: pd.DataFrame | None = None


def training_report(profile: Profile | str, model: str, fold: int, validation_pairs: Sequence[RegisteredPair], *,
                    n_patches: int = 4, source: str = "registered", progress: bool = True) -> TrainingReport:
    """Train ``model`` when needed, choose its checkpoint, read its history, draw and score validation patches.

    Patches come from the profile's training patch size and seed; the scores from whole-slide
    inference with the profile's inference patch size and step, of the selected checkpoint
    (:func:`ensure_selected`).
    """
    profile = as_profile(profile)
    checkpoint = ensure_selected(profile, model, fold, source=source, progress=progress)
    run = checkpoint.parent
    selected, selection = selection_table(profile, model, fold)
    return TrainingReport(
        model=model, fold=int(fold), run=run, history=pd.read_csv(run / "history.csv"),
        # Figure 4a of the paper shows training patches: what the model was fitted to
        panels=patch_panels(checkpoint, fold_pairs(profile, fold, "train", source=source, progress=progress),
                            profile.training.patch_size, n=n_patches, seed=profile.seed),
        scores=validation_scores(checkpoint, validation_pairs, profile.inference.patch_size, profile.inference.step),
        selected=selected, selection=selection,
    )


# --------------------------------------------------------------------------- command line


def chapter_models(profile: Profile | str, model: str | None = None) -> tuple[list[str], str]:
    """The models a training chapter trains and shows, and the one whose scores are its headline.

    ``model=None``: every model of ``profile.training.models``, headline the modified CycleGAN
    (the paper's model; else the first). A named model: that model alone, and its headline.

    Raises
    ------
    ValueError
        If ``model`` is not one of the profile's ``training.models``.

    Examples
    --------
    >>> chapter_models("smoke", "pix2pix")
    (['pix2pix'], 'pix2pix')
    >>> chapter_models("smoke")[1]
    'mod_cyclegan'
    """
    profile = as_profile(profile)
    models = list(profile.training.models)
    if model is None:
        return models, "mod_cyclegan" if "mod_cyclegan" in models else models[0]
    if model not in models:
        raise ValueError(f"profile {profile.name}: model {model!r} is not in training.models {models}")
    return [model], model


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain train``."""
    add_stage_options(parser)
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument("--fold", type=non_negative_int, default=0)
    parser.add_argument("--stain", default="toluidine_blue", choices=STAINS)
    parser.add_argument("--epochs", type=positive_int, default=None, help="total epochs (default: from the profile)")
    parser.add_argument("--source", default="registered", choices=SOURCES,
                        help="training pairs: the registration stage's, or the phantom's ground truth")
    parser.add_argument("--no-resume", action="store_true", help="start again even if last.pt exists")
    parser.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"))
    parser.add_argument("--results", default=None, help="results root (default: $VSTAIN_RESULTS or ./results)")


def torchrun_command(ranks: int) -> str:
    """The launcher of a run on ``ranks`` processes, with this interpreter (what the workflow's train rule runs).

    Examples
    --------
    >>> torchrun_command(4).split(" ", 1)[1]
    '-m torch.distributed.run --standalone --nproc_per_node 4 -m vstain train'
    """
    return f"{shlex.quote(sys.executable)} -m torch.distributed.run --standalone --nproc_per_node {int(ranks)} " \
           "-m vstain train"


def check_ranks(profile: Profile, ranks: Ranks | None) -> Ranks | None:
    """The ranks torchrun started, checked against the profile's ``training.ranks``.

    A run's patches depend on how many ranks share them, so the number of processes must be the
    profile's: one process for ``training.ranks: 1`` (not started by torchrun, or by torchrun with
    one process), exactly ``training.ranks`` processes otherwise. This catches a launcher that
    starts the command several times without telling each process of the others (each would
    train alone into the same run folder).

    Raises
    ------
    ValueError
        Naming the profile field, the processes found and the command to use.
    """
    wanted = profile.training.ranks
    found = 1 if ranks is None else ranks.world_size
    if found != wanted:
        started = "not started by torchrun" if ranks is None else f"started by torchrun on {found} processes"
        raise ValueError(f"profile {profile.name}: field training.ranks is {wanted} but vstain train was {started}; "
                         f"start it as {torchrun_command(wanted)} ... (the workflow's train rule does) or set "
                         f"training.ranks: {found}")
    return ranks


def _cli_pairs(profile: Profile, args: argparse.Namespace) -> list[RegisteredPair]:
    if args.source == "registered":
        return load_fold_pairs(profile.name, args.fold, "train", args.stain, args.results)
    return ground_truth_pairs(profile, args.fold, "train", args.stain, args.results)


def run_cli(args: argparse.Namespace) -> int:
    """Run ``vstain train``; prints the run folder.

    Started by ``torchrun`` (``WORLD_SIZE`` above 1), every rank runs this: the ranks join one
    process group and train one run together (:mod:`vstain.distributed`); rank 0 prints and writes.
    """
    profile = load_profile(args.profile)
    ranks = check_ranks(profile, ranks_from_environment())
    if ranks is None or not ranks.distributed:
        pairs = _cli_pairs(profile, args)
        out = train_fold(profile, args.model, args.fold, stain=args.stain, epochs=args.epochs, pairs=pairs,
                         root=args.results, setup=RunSetup(resume=not args.no_resume, device=args.device))
        print(out)
        return 0
    source = "--device" if args.device is not None else f"profile {profile.name}: field device"
    device = resolve_device(args.device or profile.device, source=source)
    with report_failure(ranks), process_group(ranks, device) as rank_device:
        if not ranks.is_main:
            barrier(ranks)  # rank 0 first: the phantom's ground truth may generate the dataset
        pairs = _cli_pairs(profile, args)
        if ranks.is_main:
            barrier(ranks)
        out = train_fold(profile, args.model, args.fold, stain=args.stain, epochs=args.epochs, pairs=pairs,
                         root=args.results, setup=RunSetup(resume=not args.no_resume, device=rank_device,
                                                           ranks=ranks))
    if ranks.is_main:
        print(out)
    return 0
