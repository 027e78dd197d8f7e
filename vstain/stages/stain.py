"""``vstain stain``: virtually stain a user's CT volume with a trained generator, no notebook needed.

The command opens the CT as it comes (a TIFF stack, a folder of slice TIFFs, OME-Zarr or an HDF5
dataset: :func:`vstain.volume_io.open_volume`), brings it to the scale the model was trained on
(bone 30000, background 10000, paper 2.5: :func:`choose_ct_normalisation`), compares its
intensities with the training CT the checkpoint records (:func:`check_ct_intensities`, a warning
in words when they differ), wraps the checkpoint's CT-to-histology generator as a slice stainer
(:func:`load_forward_stainer`) and streams the volume through :func:`vstain.volume.stain_volume`,
slice-wise along Z or along Z, Y and X fused. What was done to the intensities is written into
the output's metadata (``ct_normalisation``).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(); configure_parser(parser)
>>> args = parser.parse_args(["--checkpoint", "last.pt", "--input", "ct.tif", "--output", "he.tif"])
>>> args.axes, args.fusion, args.sigma
('z', 'od', 1.0)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from vstain.config import DEVICES, ProfileError, as_profile, inference_settings, resolve_device
from vstain.infer import check_tiling, infer_slide
from vstain.io import provenance
from vstain.models.checkpoint import load_generator
from vstain.normalise import FieldOfViewVolume
from vstain.stages.arguments import at_most, non_negative_float, positive_float, positive_int
from vstain.stages.stain_intensities import (CONTRASTS, N_SAMPLE_SLICES, VOXEL_SIZE_FACTOR, check_ct_contrast,
                                             check_ct_intensities, check_voxel_size, choose_ct_normalisation,
                                             choose_field_of_view, ct_targets, field_of_view_record,
                                             read_sample_slices, sample_slices)
from vstain.train import forward_dtype
from vstain.uncertainty import (SOURCES, STAINS, make_uncertainty_stainer, stain_volume_uncertainty,
                                uncertainty_path)
from vstain.volume import AXES, SliceStainer, make_slice_stainer, stain_volume
from vstain.volume_io import NGFF_VERSIONS, InvertedVolume, NormalisedVolume, open_volume

__all__ = ["CONTRASTS", "N_SAMPLE_SLICES", "STAIN_NOTES", "StainOptions", "VOXEL_SIZE_FACTOR", "check_ct_contrast",
           "check_ct_intensities", "check_distinct_member", "check_output_path", "check_voxel_size",
           "choose_ct_normalisation", "choose_field_of_view", "configure_parser", "ct_targets",
           "field_of_view_record", "load_forward_generator", "load_forward_stainer", "load_uncertainty_stainer",
           "parse_fill_value", "parse_roi", "read_sample_slices", "run_cli", "sample_slices", "selected_checkpoint",
           "stain_ct_volume", "trained_inference_settings", "weights_digest"]


def load_forward_generator(
    checkpoint: str | Path,
    *,
    device: str = "cpu",
    patch_size: int | None = None,
    step: int | None = None,
    batch_size: int | None = None,
    blend: str | None = None,
    profile: Any = None,
) -> tuple[torch.nn.Module, dict]:
    """Load the CT-to-histology generator of a checkpoint, checked, with the inference settings it is run with.

    ``patch_size`` defaults to the training patch size stored in the checkpoint; ``step`` (as the
    same fraction of the patch), ``batch_size``, ``blend`` and the precision of the forward passes
    (``cpu_bf16``, ``cuda_precision``) to the ``inference`` section of ``profile``: by default the
    settings the checkpoint records from its training profile (:func:`trained_inference_settings`). A checkpoint
    without a CT-to-histology generator (the reverse one alone) or whose weights do not fit its
    architecture is refused with a ValueError naming the file. The file is read once.

    Parameters
    ----------
    checkpoint : path
        ``last.pt`` or ``best_<component>.pt`` of a training run, or a run folder.
    device : str
        Torch device name (``cpu``, ``cuda``): the generator is moved there.
    patch_size, step : int, optional
        Whole-slide inference tiling (defaults above).
    batch_size : int, optional
    blend : {"mean", "window"}, optional
    profile : str or Profile, optional
        Whose ``inference`` settings are the defaults.

    Returns
    -------
    generator : torch.nn.Module
        In eval mode, on ``device``.
    info : dict
        The generator's record (:func:`vstain.models.checkpoint.load_generator`) with the
        ``patch_size``, ``step``, ``batch_size``, ``blend``, ``precision`` used, the profile
        they came from (``inference_profile``).

    Raises
    ------
    FileNotFoundError
        If the checkpoint does not exist.
    ValueError
        If it holds no CT-to-histology generator of 3 input and 3 output channels.
    """
    checkpoint = selected_checkpoint(checkpoint)
    try:
        generator, info = load_generator(checkpoint, direction="ct_to_histology")
    except (KeyError, TypeError, RuntimeError, EOFError, AttributeError) as err:
        raise ValueError(f"{checkpoint}: not a vstain generator checkpoint ({type(err).__name__}: {err})") from err
    if info.get("direction") != "ct_to_histology" or info.get("out_channels") != 3 or info.get("in_channels") != 3:
        raise ValueError(
            f"{checkpoint}: field direction/channels is {info.get('direction')} "
            f"{info.get('in_channels')}->{info.get('out_channels')}; `stain` needs the CT-to-histology generator (3->3)"
        )
    for name, tensor in generator.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{checkpoint}: generator weight {name} holds NaN or infinite values (a run that "
                             "diverged); its stain would be blank: choose an earlier checkpoint")
    patch = int(patch_size or info.get("patch_size") or 256)
    arch = (info.get("architecture") or {}).get("generator", {})
    # the generator's down-sampling: a patch side it cannot halve that often gives a mismatched output
    multiple = 2 ** int(arch.get("num_downs", 0)) if arch.get("kind") == "unet" else 4
    if patch < multiple or patch % multiple:
        raise ValueError(f"--patch-size {patch}: the {arch.get('kind', 'resnet')} generator of {checkpoint} needs a "
                         f"multiple of {multiple}")
    inference_profile = trained_inference_settings(checkpoint, info, profile)
    cfg = inference_profile.inference
    step = int(step or max(1, round(patch * cfg.step / cfg.patch_size)))
    try:
        check_tiling((patch, patch), patch, step)
    except ValueError as err:
        raise ValueError(f"--step / --patch-size: {err}") from None
    batch_size, blend = int(batch_size or cfg.batch_size), blend or cfg.blend
    dtype = forward_dtype(inference_profile.inference, device)
    return generator.to(device), {**info, "patch_size": patch, "step": step, "batch_size": batch_size,
                                  "blend": blend, "precision": str(dtype).removeprefix("torch."),
                                  "inference_profile": inference_profile.name}


def trained_inference_settings(checkpoint, info: dict, profile: Any = None) -> Any:
    """The profile whose ``inference`` section tiles the stain: ``profile`` if given, else the training one.

    A checkpoint records its training profile's ``inference`` section (validated again here), so
    the settings are the trained ones even where that profile file does not exist or was edited
    since. An older checkpoint names its profile only: it is loaded (the embedded ``quick`` when it
    names none), and a name not found here says so, naming the checkpoint and ``--profile``.

    Returns
    -------
    Profile or SimpleNamespace
        With ``name`` and ``inference``.
    """
    if profile is not None:
        return as_profile(profile)
    recorded = info.get("inference")
    name = info.get("profile") or "quick"
    if isinstance(recorded, dict):
        try:
            settings = inference_settings(recorded, f"{checkpoint}: field inference")
        except ProfileError as err:
            raise ValueError(f"{err}; pass --profile with the inference settings to use") from None
        return SimpleNamespace(name=f"{name} (as recorded in the checkpoint)", inference=settings)
    try:
        return as_profile(name)
    except ProfileError as err:
        raise ValueError(f"{checkpoint}: trained with profile {name!r}, whose inference settings are not recorded in "
                         f"the checkpoint and whose file is not found here ({err}); pass --profile with that "
                         "profile's YAML") from None


def load_forward_stainer(
    checkpoint: str | Path,
    *,
    device: str = "cpu",
    patch_size: int | None = None,
    step: int | None = None,
    batch_size: int | None = None,
    blend: str | None = None,
    profile: Any = None,
    infer: Callable[..., np.ndarray] | None = None,
) -> tuple[SliceStainer, dict]:
    """Load the CT-to-histology generator of a checkpoint and wrap it as a slice stainer.

    The generator, its checks and the inference settings come from :func:`load_forward_generator`
    (the same parameters); ``infer`` replaces :func:`vstain.infer.infer_slide` (see
    :func:`vstain.volume.make_slice_stainer`).

    Returns
    -------
    stainer : callable
        One CT slice (float32) to uint8 RGB.
    info : dict
        As :func:`load_forward_generator` returns it.
    """
    generator, info = load_forward_generator(checkpoint, device=device, patch_size=patch_size, step=step,
                                             batch_size=batch_size, blend=blend, profile=profile)
    dtype = getattr(torch, info["precision"])
    infer = functools.partial(infer or infer_slide, dtype=dtype) if dtype != torch.float32 else infer
    stainer = make_slice_stainer(generator, infer=infer, patch_size=info["patch_size"], step=info["step"],
                                 batch_size=info["batch_size"], blend=info["blend"], device=device,
                                 invert=bool(info.get("invert_ct")))
    return stainer, info


def selected_checkpoint(checkpoint: str | Path) -> Path:
    """The checkpoint file of ``checkpoint``: itself, or for a training run folder the one its selection chose.

    Raises
    ------
    FileNotFoundError
        For a missing file, or a run folder without ``selection.json``.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():  # a training run folder: the checkpoint its selection chose
        record = checkpoint / "selection.json"
        if not record.is_file():
            raise FileNotFoundError(f"{checkpoint}: a run folder without selection.json (the checkpoint choice); "
                                    "pass a .pt file such as last.pt, or run vstain infer on the run first")
        checkpoint = checkpoint / json.loads(record.read_text())["file"]
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    return checkpoint


def load_uncertainty_stainer(checkpoints: list[str | Path], *, source: str, device: str = "cpu",
                             patch_size: int | None = None, step: int | None = None,
                             batch_size: int | None = None, blend: str | None = None,
                             profile: Any = None, stain_from: str = "single") -> tuple[Callable, dict]:
    """A slice stainer that also returns the uncertainty (:func:`vstain.uncertainty.make_uncertainty_stainer`).

    ``checkpoints``: the model first, then the other members of its ensemble (e.g. its other folds'
    runs). ``source`` is one of :data:`vstain.uncertainty.SOURCES`; ``ensemble`` needs at least two
    checkpoints, ``tta`` and ``tiling`` use the first only. Each checkpoint is read once and checked
    by :func:`load_forward_generator`; all must share the first one's CT mapping, and the first
    one's inference settings (tiling, blend, precision) serve every member. ``stain_from``
    (:data:`vstain.uncertainty.STAINS`): ``single`` stains with the first checkpoint alone, bit for
    bit as :func:`load_forward_stainer` does, and measures the map around that stain; ``mean``
    stains with the mean of the source's runs and measures the map around it.
    """
    if stain_from not in STAINS:
        raise ValueError(f"--stain-from must be one of {', '.join(STAINS)}, got {stain_from!r}")
    if source not in SOURCES:
        raise ValueError(f"--uncertainty-source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "ensemble" and len(checkpoints) < 2:
        raise ValueError("--uncertainty-source ensemble needs other members: pass their checkpoints with --ensemble")
    if source in ("tta", "tiling"):
        checkpoints = checkpoints[:1]
    members, infos, digests = [], [], {}
    for checkpoint in checkpoints:
        generator, info = load_forward_generator(checkpoint, device=device, patch_size=patch_size, step=step,
                                                 batch_size=batch_size, blend=blend, profile=profile)
        check_distinct_member(checkpoint, generator, digests)
        if infos and bool(info.get("invert_ct")) != bool(infos[0].get("invert_ct")):
            raise ValueError(f"{checkpoint}: field invert_ct differs from {checkpoints[0]}'s; an ensemble shares "
                             "one CT mapping")
        members.append(generator)
        infos.append(info)
    first = infos[0]
    dtype = getattr(torch, first["precision"])
    precision = {"dtype": dtype} if dtype != torch.float32 else {}
    stainer = make_uncertainty_stainer(members, patch_size=first["patch_size"], step=first["step"],
                                       batch_size=first["batch_size"], source=source, stain_from=stain_from,
                                       tta=source in ("tta", "combined"), tiling=source in ("tiling", "combined"),
                                       blend=first["blend"], device=device, invert=bool(first.get("invert_ct")),
                                       **precision)
    return stainer, {**first, "members": [str(i.get("path", c)) for i, c in zip(infos, checkpoints)],
                     "uncertainty_source": source, "stain": stain_from}


#: What the stain written with ``--uncertainty`` is, per ``--stain-from`` (recorded in the outputs' metadata).
STAIN_NOTES = {
    "single": "single: the checkpoint's own stain, as written without --uncertainty",
    "mean": "mean: the mean (CIELAB) of the uncertainty source's runs, not the checkpoint's own stain",
}


def weights_digest(generator: torch.nn.Module) -> str:
    """A sha256 of a network's weights (names, dtypes, shapes and values): equal for the same weights.

    Examples
    --------
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> _ = b.load_state_dict(a.state_dict())
    >>> weights_digest(a) == weights_digest(b), weights_digest(a) == weights_digest(torch.nn.Linear(2, 3))
    (True, False)
    """
    digest = hashlib.sha256()
    for name, tensor in generator.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_distinct_member(checkpoint, generator: torch.nn.Module, seen: dict[str, Any]) -> None:
    """Refuse an ensemble member whose weights another member already has (the same file, or a copy).

    A repeated member agrees with itself everywhere: the ensemble's spread shrinks, to zero when
    every member is the same, and the map calls the stain certain. ``seen`` maps the digests
    (:func:`weights_digest`) of the members so far to their checkpoints; this one is added.

    Raises
    ------
    ValueError
        Naming both checkpoints.
    """
    digest = weights_digest(generator)
    if digest in seen:
        same = "the same file as" if Path(seen[digest]).resolve() == Path(checkpoint).resolve() else \
            "the same weights as"
        raise ValueError(f"{checkpoint}: --ensemble member with {same} {seen[digest]}; a repeated member adds no "
                         "spread and would make the uncertainty look certain; pass distinct members (e.g. the "
                         "model's other folds)")
    seen[digest] = checkpoint


#: Output suffixes the writers make (anything else would be TIFF content under a misleading name).
OUTPUT_SUFFIXES = (".tif", ".tiff", ".zarr")


def check_output_path(output: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse an output the writers cannot make, before any work is done.

    Raises
    ------
    ValueError
        If the suffix is not ``.tif``, ``.tiff`` or ``.zarr``, or a parent of ``output`` is a file.
    FileExistsError
        If ``output`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> check_output_path("stained.tif").name
    'stained.tif'
    >>> check_output_path("stained.png")
    Traceback (most recent call last):
    ...
    ValueError: stained.png: --output must end in .tif, .tiff or .zarr (the writers make a TIFF stack or OME-Zarr), got '.png'
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"{output}: --output must end in .tif, .tiff or .zarr (the writers make a TIFF stack or "
                         f"OME-Zarr), got {''.join(output.suffixes) or 'no suffix'!r}")
    for parent in output.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{output}: --output's folder {parent} is a file, not a folder")
            break
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: output exists; choose another path or pass --overwrite")
    return output


def parse_fill_value(text: str) -> float | str | None:
    """``--ct-fill-value``: a finite number, ``auto`` (found from the slices) or ``none`` (every voxel is data).

    Examples
    --------
    >>> parse_fill_value("0"), parse_fill_value("auto"), parse_fill_value("none")
    (0.0, 'auto', None)
    """
    word = text.strip().lower()
    if word in ("auto", "none"):
        return None if word == "none" else "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, auto or none, got {text!r}") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, auto or none, got {text} (auto finds a NaN "
                                         "fill outside the reconstruction circle)")
    return value


def parse_roi(text: str) -> tuple[int, slice, slice]:
    """``Z:Y0:Y1:X0:X1`` (a box on slice Z) as ``(z, rows, columns)``.

    Examples
    --------
    >>> parse_roi("4:10:20:30:40")
    (4, slice(10, 20, None), slice(30, 40, None))
    """
    try:
        z, y0, y1, x0, x1 = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Z:Y0:Y1:X0:X1 (whole numbers), got {text!r}") from None
    if min(z, y0, x0) < 0 or y1 <= y0 or x1 <= x0:
        raise argparse.ArgumentTypeError(f"a box needs 0 <= Y0 < Y1 and 0 <= X0 < X1 on slice Z >= 0, got {text!r}")
    return z, slice(y0, y1), slice(x0, x1)


#: Bounds of the options whose slip of a digit would run for hours: the pre-filter's sigma (voxels), the
#: inference patch (px, paper: 256) and patches per forward pass.
MAX_SIGMA_VOXELS, MAX_PATCH_SIZE, MAX_BATCH_SIZE = 20.0, 2048, 1024


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain stain``."""
    parser.add_argument("--checkpoint", required=True,
                        help="a trained run's folder (its selected checkpoint) or a .pt file (e.g. .../fold0/last.pt)")
    parser.add_argument("--input", required=True, help="CT volume: greyscale TIFF stack (Z, Y, X) or OME-Zarr")
    parser.add_argument("--output", required=True, help="stained RGB volume: .tif stack or .zarr (OME-Zarr)")
    parser.add_argument("--ngff-version", choices=NGFF_VERSIONS, default="0.4",
                        help="OME-NGFF version of a .zarr output: 0.4 (Zarr format 2, what most viewers read) or "
                             "0.5 (Zarr format 3)")
    parser.add_argument("--axes", choices=AXES, default="z",
                        help="z: slice-wise along Z (the paper); zyx: along Z, Y and X, fused")
    parser.add_argument("--fusion", choices=("od", "rgb"), default="od",
                        help="zyx fusion: mean optical density (default) or mean RGB")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="cpu, cuda or auto (CUDA when present)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars")
    parser.add_argument("--voxel-size", nargs=3, type=positive_float, metavar=("Z", "Y", "X"),
                        help="voxel size in um when the input does not carry it")
    parser.add_argument("--sigma", type=at_most(non_negative_float, MAX_SIGMA_VOXELS, "the paper's is 1 voxel; "
                                                "wider erases what the model stains"), default=1.0,
                        help="Gaussian pre-filter in voxels (paper: 1; 0: none)")
    parser.add_argument("--profile", help="profile whose inference settings (step, blend, batch size, precision) are "
                                          "the defaults (default: the checkpoint's training profile, else quick)")
    parser.add_argument("--patch-size", type=at_most(positive_int, MAX_PATCH_SIZE, "the paper's is 256 px"),
                        help="inference patch (default: the training patch size)")
    parser.add_argument("--step", type=positive_int,
                        help="inference step (default: the profile's inference.step, as a fraction of the patch)")
    parser.add_argument("--batch-size", type=at_most(positive_int, MAX_BATCH_SIZE, "the paper's is 4"),
                        help="patches per forward pass (default: the profile's)")
    parser.add_argument("--blend", choices=("mean", "window"), help="patch blend (default: the profile's)")
    parser.add_argument("--ct-normalisation", choices=("auto", "none"), default="auto",
                        help="auto: bone and background found on a few slices are mapped to 30000 / 10000 as "
                             "in the study (paper 2.5); none: the input is already on that scale")
    parser.add_argument("--ct-bone-value", type=float, help="the input's bone value (with --ct-background-value)")
    parser.add_argument("--ct-background-value", type=float, help="the input's background value")
    parser.add_argument("--ct-fill-value", type=parse_fill_value, default="auto", metavar="VALUE",
                        help="the value the reconstruction writes outside its field of view (its circle); those "
                             "voxels are left out of the normalisation and written black (no data). Default auto: "
                             "found on a few slices (a constant connected to the slice border); none: every voxel "
                             "is data")
    parser.add_argument("--ct-contrast", choices=CONTRASTS, default="auto",
                        help="auto: stop when bone looks dark (the brightest class lining the edge of the field of "
                             "view); normal: bone is bright, no check; inverted: bone is dark, the volume is negated "
                             "first")
    parser.add_argument("--bone-roi", type=parse_roi, metavar="Z:Y0:Y1:X0:X1", help="a box of bone on slice Z")
    parser.add_argument("--background-roi", type=parse_roi, metavar="Z:Y0:Y1:X0:X1",
                        help="a box of background on slice Z")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write a per-voxel uncertainty map (Delta E, CIELAB): <name>_uncertainty.tif "
                             "beside a TIFF output, the image 'uncertainty' inside a .zarr output (slice-wise along Z "
                             "only)")
    parser.add_argument("--uncertainty-source", choices=SOURCES, default="combined",
                        help="ensemble: spread over --ensemble members; tta: over the 8 flips / quarter turns; "
                             "tiling: over overlapping patches; combined (default): all of them")
    parser.add_argument("--ensemble", nargs="+", default=[], metavar="CHECKPOINT",
                        help="other members of the ensemble (e.g. the model's other folds) whose spread enters the "
                             "map; the stain stays the --checkpoint's own unless --stain-from mean")
    parser.add_argument("--stain-from", choices=STAINS,
                        help="with --uncertainty: single (default) writes the same stain as without --uncertainty "
                             "(the --checkpoint's own) and measures the map around it; mean writes the mean of the "
                             "source's runs (flips / turns, members) instead, with the map measured around that")


@dataclasses.dataclass(frozen=True)
class StainOptions:
    """The options of ``vstain stain`` (:func:`configure_parser`) by their long names, for :func:`stain_ct_volume`.

    Attributes
    ----------
    ensemble : sequence of path
        Other members of the ensemble whose spread enters the uncertainty map (with ``uncertainty``).
    uncertainty : bool
        Also write the per-voxel uncertainty map (slice-wise along Z only).
    uncertainty_source : str
        One of :data:`vstain.uncertainty.SOURCES`.
    stain_from : str, optional
        One of :data:`vstain.uncertainty.STAINS` (with ``uncertainty``; default ``single``).
    axes, fusion : str
        ``z`` or ``zyx``; the ``zyx`` fusion, ``od`` or ``rgb``.
    sigma : float
        Gaussian pre-filter in voxels (paper: 1).
    device : str
        ``cpu``, ``cuda`` or ``auto``.
    patch_size, step, batch_size : int, optional
        Inference tiling (defaults: :func:`load_forward_generator`).
    blend : str, optional
        ``mean`` or ``window``.
    profile : str or Profile, optional
        Whose inference settings and CT scale are the defaults (default: the checkpoint's training profile).
    ct_contrast, ct_fill_value, ct_normalisation : str or float
        As ``--ct-contrast`` (:data:`CONTRASTS`), ``--ct-fill-value`` (:func:`parse_fill_value`) and
        ``--ct-normalisation`` (``auto`` or ``none``).
    ct_bone_value, ct_background_value : float, optional
        The input's bone and background values.
    bone_roi, background_roi : tuple, optional
        :func:`parse_roi` boxes of bone and background.
    overwrite, progress : bool
        Replace an existing output; show progress bars.
    input_name : str, optional
        The input as the output's metadata names it (default: the opened volume's name).
    ngff_version : str
        OME-NGFF version of a ``.zarr`` output, "0.4" or "0.5".

    Examples
    --------
    >>> options = StainOptions(sigma=0.0, step=8)
    >>> options.axes, options.sigma, dataclasses.replace(options, axes="zyx").axes
    ('z', 0.0, 'zyx')
    """

    ensemble: list[str | Path] | tuple = ()
    uncertainty: bool = False
    uncertainty_source: str = "combined"
    stain_from: str | None = None
    axes: str = "z"
    fusion: str = "od"
    sigma: float = 1.0
    device: str = "cpu"
    patch_size: int | None = None
    step: int | None = None
    batch_size: int | None = None
    blend: str | None = None
    profile: Any = None
    ct_contrast: str = "auto"
    ct_fill_value: float | str | None = "auto"
    ct_normalisation: str = "auto"
    ct_bone_value: float | None = None
    ct_background_value: float | None = None
    bone_roi: tuple | None = None
    background_roi: tuple | None = None
    overwrite: bool = False
    progress: bool = True
    input_name: str | None = None
    ngff_version: str = "0.4"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "StainOptions":
        """The options of a parsed ``vstain stain`` command line (:func:`configure_parser`).

        Examples
        --------
        >>> parser = argparse.ArgumentParser(); configure_parser(parser)
        >>> args = parser.parse_args(["--checkpoint", "a.pt", "--input", "ct.tif", "--output", "o.tif", "--quiet"])
        >>> StainOptions.from_args(args).progress, StainOptions.from_args(args).input_name
        (False, 'ct.tif')
        """
        return cls(
            ensemble=getattr(args, "ensemble", None) or [], uncertainty=bool(getattr(args, "uncertainty", False)),
            uncertainty_source=getattr(args, "uncertainty_source", "combined"),
            stain_from=getattr(args, "stain_from", None), axes=args.axes, fusion=args.fusion, sigma=args.sigma,
            device=args.device, patch_size=args.patch_size, step=args.step, batch_size=args.batch_size,
            blend=args.blend, profile=args.profile, ct_contrast=getattr(args, "ct_contrast", "auto"),
            ct_fill_value=getattr(args, "ct_fill_value", "auto"), ct_normalisation=args.ct_normalisation,
            ct_bone_value=args.ct_bone_value, ct_background_value=args.ct_background_value,
            bone_roi=args.bone_roi, background_roi=args.background_roi, overwrite=args.overwrite,
            progress=not getattr(args, "no_progress", False), input_name=str(args.input),
            ngff_version=getattr(args, "ngff_version", "0.4"))


def stain_ct_volume(source: Any, checkpoint: str | Path, output: str | Path, options: StainOptions | None = None,
                    **changes: Any) -> tuple[Path, Path | None]:
    """Stain an opened CT volume with a checkpoint and write it: what ``vstain stain`` does, as a call.

    The options are those of ``vstain stain`` (:func:`configure_parser`): a :class:`StainOptions`,
    and any of its fields given by keyword (``stain_ct_volume(source, ckpt, out, sigma=0)``)
    replace those of ``options``; an unknown keyword is a TypeError. ``source`` is an opened
    volume (:func:`vstain.volume_io.open_volume`, an :class:`~vstain.volume_io.ArrayVolume`, ...),
    left open for the caller to close.

    Voxels outside the reconstruction's field of view (what ``ct_fill_value`` finds or gives: 0, any
    number, or NaN, found by ``"auto"``) are left out of the normalisation and reach the generator as
    the input's background value; the stain there is black (RGB 0, 0, 0: no data), and with
    ``uncertainty`` the stain and its map there are those of that background. A NaN or infinite voxel
    inside the field of view stops the run.

    Returns
    -------
    (Path, Path or None)
        The stain and, with ``uncertainty``, its map (:func:`vstain.uncertainty.uncertainty_path`).

    Examples
    --------
    >>> stain_ct_volume(None, "last.pt", "stained.png")
    Traceback (most recent call last):
    ...
    ValueError: stained.png: --output must end in .tif, .tiff or .zarr (the writers make a TIFF stack or OME-Zarr), got '.png'
    """
    opts = dataclasses.replace(options or StainOptions(), **changes)
    output = _checked_request(output, opts)
    stain_from = opts.stain_from or "single"
    device = resolve_device(opts.device, source="--device")
    if opts.patch_size and opts.patch_size > 2 * max(source.shape):
        raise ValueError(f"--patch-size {opts.patch_size} is more than twice the largest side of {source.name} "
                         f"({' x '.join(map(str, source.shape))}): the padding alone would cost the run; give a "
                         "patch no larger than the slices")
    opened = source
    if opts.ct_contrast == "inverted":
        source = InvertedVolume(source)
    settings = dict(device=device, patch_size=opts.patch_size, step=opts.step, batch_size=opts.batch_size,
                    blend=opts.blend, profile=opts.profile)
    if opts.uncertainty:  # only the stainer that is used is built
        stainer, info = load_uncertainty_stainer([checkpoint, *opts.ensemble], source=opts.uncertainty_source,
                                                 stain_from=stain_from, **settings)
    else:
        stainer, info = load_forward_stainer(checkpoint, **settings)
    normalised, field_source, record, field = _normalised_input(source, checkpoint, info, opts)
    for note in record["warnings"]:
        warnings.warn(note, stacklevel=2)
    meta = provenance(None, checkpoint=str(info.get("path", checkpoint)), model=info.get("model"),
                      fold=info.get("fold"),
                      input=str(opts.input_name if opts.input_name is not None else opened.name),
                      training_voxel_um=info.get("ct_voxel_um"), patch_size=info["patch_size"], step=info["step"],
                      blend=info["blend"], precision=info["precision"], inference_profile=info["inference_profile"],
                      ct_normalisation=record, field_of_view=field)
    if opts.uncertainty:
        meta = {**meta, "members": info["members"], "uncertainty_source": opts.uncertainty_source,
                "stain": stain_from, "stain_note": STAIN_NOTES[stain_from]}
        return stain_volume_uncertainty(normalised, stainer, output, sigma_voxels=opts.sigma, metadata=meta,
                                        overwrite=opts.overwrite, progress=opts.progress,
                                        ngff_version=opts.ngff_version)
    outside = field_source.outside if field_source is not source else None
    stain_volume(normalised, stainer, output, sigma_voxels=opts.sigma, axes=opts.axes, fusion=opts.fusion,
                 metadata=meta, overwrite=opts.overwrite, progress=opts.progress, outside=outside,
                 ngff_version=opts.ngff_version)
    return output, None


def _checked_request(output: str | Path, opts: StainOptions) -> Path:
    """``output`` checked (and the uncertainty map's path beside it), and the options that need ``uncertainty``."""
    output = check_output_path(output, overwrite=opts.overwrite)
    if opts.uncertainty:
        if opts.axes != "z":
            raise ValueError("--uncertainty stains slice-wise along Z only; leave out --axes zyx")
        if output.suffix.lower() != ".zarr":  # an OME-Zarr stain holds its map inside the same store
            check_output_path(uncertainty_path(output), overwrite=opts.overwrite)
    elif opts.ensemble:
        raise ValueError("--ensemble is for --uncertainty (the spread across members); add --uncertainty")
    elif opts.stain_from:
        raise ValueError("--stain-from is for --uncertainty (without it the stain is the checkpoint's own); "
                         "add --uncertainty")
    return output


def _normalised_input(source, checkpoint, info: dict, opts: StainOptions) -> tuple[Any, Any, dict, dict]:
    """``source`` on the study's scale, with its field of view, and what was found and done (for the metadata).

    Returns the normalised volume, the field-of-view volume under it (``source`` itself without a
    fill), the ``ct_normalisation`` record (map, contrast, intensities and the warnings, in words)
    and the field of view's record (:func:`field_of_view_record`).
    """
    # read and segmented once, for the field of view, the map and the check
    fill, contrast = opts.ct_fill_value, opts.ct_contrast
    inverted = isinstance(fill, float) and contrast == "inverted"
    sample = read_sample_slices(source, fill_value=-fill if inverted else fill)  # the file's value, negated too
    field = sample[2]
    automatic = opts.ct_bone_value is None and opts.bone_roi is None  # nothing given that fixes bone's side
    contrast_record = {"contrast": contrast}
    if contrast != "normal" and automatic:
        contrast_record.update(check_ct_contrast(source, sample, contrast))
    targets = ct_targets(opts.profile, info)
    normalisation = choose_ct_normalisation(
        source, method=opts.ct_normalisation, bone_value=opts.ct_bone_value,
        background_value=opts.ct_background_value, bone_roi=opts.bone_roi, background_roi=opts.background_roi,
        sample=sample, targets=targets)
    field_source = source
    if field["fill_value"] is not None:  # outside the circle: the input's background, then no data
        field_source = FieldOfViewVolume(source, field["fill_value"],
                                         normalisation.get("background_mean_before", targets.ct_background_mean))
    normalised = (NormalisedVolume(field_source, normalisation["scale"], normalisation["offset"])
                  if "scale" in normalisation else field_source)
    stats, notes = check_ct_intensities(source, normalisation, info.get("ct_statistics"), checkpoint,
                                        sample=sample, targets=targets)
    notes += check_voxel_size(source, info.get("ct_voxel_um"), checkpoint)
    record = {**normalisation, **contrast_record, "intensities": stats, "warnings": notes}
    return normalised, field_source, record, field_of_view_record({**field, "fill_value": fill} if inverted else field)


def run_cli(args: argparse.Namespace) -> int:
    """``vstain stain``: stain a CT volume with a trained generator, no notebook needed."""
    output = check_output_path(args.output, overwrite=args.overwrite)
    source = open_volume(args.input, args.voxel_size)
    try:
        _, map_path = stain_ct_volume(source, args.checkpoint, output, StainOptions.from_args(args))
    finally:
        source.close()
    print(f"wrote {output} ({source.shape[0]} x {source.shape[1]} x {source.shape[2]} voxels, "
          f"voxel size {source.voxel_size_um} um)")
    if map_path is not None:
        print(f"wrote {map_path} (uncertainty: {args.uncertainty_source}, Delta E, measured around "
              f"the {getattr(args, 'stain_from', None) or 'single'} stain)")
    return 0
