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
import functools
import hashlib
import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from vstain.config import DEVICES, NormalisationConfig, ProfileError, as_profile, inference_settings, resolve_device
from vstain.infer import check_tiling, infer_slide
from vstain.io import provenance
from vstain.models.checkpoint import load_generator
from vstain.normalise import (FieldOfViewVolume, compare_ct_statistics, ct_outside_field_of_view, ct_statistics,
                              edge_class_shares, find_ct_fill_value, linear_ct_map, looks_inverted,
                              segment_ct_slices, volume_scale_from_slices)
from vstain.stages.arguments import at_most, non_negative_float, positive_float, positive_int
from vstain.train import forward_dtype
from vstain.uncertainty import (SOURCES, STAINS, make_uncertainty_stainer, stain_volume_uncertainty,
                                uncertainty_path)
from vstain.volume import AXES, SliceStainer, make_slice_stainer, stain_volume
from vstain.volume_io import NGFF_VERSIONS, InvertedVolume, NormalisedVolume, open_volume


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


#: Slices sampled (evenly, away from the ends) to find the automatic ROIs and describe the intensities.
N_SAMPLE_SLICES = 9


def sample_slices(source, n: int = N_SAMPLE_SLICES) -> list[int]:
    """Indices of ``n`` slices spread evenly over the middle 80 % of the depth (the ends often hold no sample).

    Examples
    --------
    >>> from vstain.volume_io import ArrayVolume
    >>> sample_slices(ArrayVolume(np.zeros((100, 2, 2)), (1, 1, 1)), 3)
    [10, 50, 89]
    """
    depth = source.shape[0]
    return sorted({int(round(z)) for z in np.linspace(0.1 * (depth - 1), 0.9 * (depth - 1), min(n, depth))})


def read_sample_slices(source, n: int = N_SAMPLE_SLICES, *,
                       fill_value: float | str | None = "auto") -> tuple[list[np.ndarray], list[dict | None], dict]:
    """The :func:`sample_slices` of ``source``, their field of view and segmentations, each read and segmented once.

    The automatic normalisation (:func:`choose_ct_normalisation`) and the intensity check
    (:func:`check_ct_intensities`) share them. Voxels outside the reconstruction's field of view
    (the constant a reconstruction writes outside its circle, :func:`choose_field_of_view`; 0, any
    number or NaN) are left out of the segmentations, so they are neither background nor sample.
    A NaN or infinite voxel inside the field of view (or anywhere, without one) stops the run.

    Parameters
    ----------
    source
        A volume source (:func:`vstain.volume_io.open_volume`).
    n : int
    fill_value : float, "auto" or None
        As :func:`choose_field_of_view` takes it.

    Returns
    -------
    slices : list of ndarray
    segmentations : list of dict or None
        :func:`vstain.normalise.segment_ct_slices` of ``slices`` inside the field of view.
    field_of_view : dict
        :func:`choose_field_of_view` of ``slices``.

    Raises
    ------
    ValueError
        A non-finite voxel with data (inside the field of view), naming the file and the slice.
    """
    zs = sample_slices(source, n)
    slices = [np.asarray(source.read_slice(z)) for z in zs]
    field = choose_field_of_view(source, slices, fill_value)
    valid = (None if field["fill_value"] is None else
             [~ct_outside_field_of_view(image, field["fill_value"]) for image in slices])
    for k, (z, image) in enumerate(zip(zs, slices)):
        finite = np.isfinite(image)
        bad = int(np.count_nonzero(~finite if valid is None else valid[k] & ~finite))
        if bad:
            where = "" if valid is None else " inside the field of view"
            hint = (" (NaN outside the reconstruction circle is found with --ct-fill-value auto)"
                    if fill_value != "auto" and np.isnan(image).any() else "")
            raise ValueError(f"{source.name}: slice {z} holds {bad} non-finite voxels (NaN or infinite){where}; "
                             f"fix or mask them before staining{hint}")
    return slices, segment_ct_slices(slices, valid), field


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


def choose_field_of_view(source, slices: list[np.ndarray], fill_value: float | str | None = "auto") -> dict:
    """Which voxels of ``source`` hold data: all, or all but the reconstruction's fill outside its circle.

    Reconstructions write a constant (mostly 0, some NaN) outside the circle the projections cover.
    Taken for background it would drag the automatic normalisation (bone 30000, background 10000)
    and be stained as if it were tissue; :func:`vstain.normalise.find_ct_fill_value` finds it on
    the sample ``slices`` (``fill_value="auto"``, a NaN fill included), a number gives it, None
    says there is none.

    Returns
    -------
    dict
        ``method`` (``found``, ``given``, ``none``, ``not found``), ``fill_value`` (float, NaN for a
        NaN fill, or None) and ``outside_fraction``: the share of the sampled voxels outside the field of view.

    Raises
    ------
    ValueError
        A fill value that covers every sampled voxel (nothing left to stain).
    """
    if isinstance(fill_value, str) and fill_value != "auto":
        raise ValueError(f"--ct-fill-value must be a number, auto or none, got {fill_value!r}")
    if fill_value is None:
        return {"method": "none", "fill_value": None, "outside_fraction": 0.0}
    method = "found" if fill_value == "auto" else "given"
    value = find_ct_fill_value(slices) if fill_value == "auto" else float(fill_value)
    if value is None:
        return {"method": "not found", "fill_value": None, "outside_fraction": 0.0}
    outside = sum(int(ct_outside_field_of_view(image, value).sum()) for image in slices)
    total = sum(image.size for image in slices)
    if total and outside == total:
        if method == "given":
            raise ValueError(f"{source.name}: --ct-fill-value {value:g} covers every sampled voxel; the volume would "
                             "hold no data (give the value the reconstruction writes outside its circle, or none)")
        raise ValueError(f"{source.name}: every sampled slice holds the one value {value:g} and nothing else: "
                         "no data to stain")
    return {"method": method, "fill_value": value, "outside_fraction": outside / total if total else 0.0}


def _field_record(field: dict) -> dict:
    """The field of view as the output records it: a NaN fill as the string ``"NaN"`` (JSON has no NaN).

    Examples
    --------
    >>> _field_record({"method": "found", "fill_value": float("nan"), "outside_fraction": 0.2})["fill_value"]
    'NaN'
    """
    value = field.get("fill_value")
    return {**field, "fill_value": "NaN"} if isinstance(value, float) and np.isnan(value) else field


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


def _roi_mean(source, roi: tuple[int, slice, slice], option: str) -> float:
    z, rows, columns = roi
    if z >= source.shape[0]:
        raise ValueError(f"{source.name}: {option} slice {z} is beyond the volume's {source.shape[0]} slices")
    box = source.read_slice(z)[rows, columns]
    if box.size == 0 or box.shape != (rows.stop - rows.start, columns.stop - columns.start):
        raise ValueError(f"{source.name}: {option} box {rows.start}:{rows.stop}, {columns.start}:{columns.stop} "
                         f"leaves the {source.shape[1]} x {source.shape[2]} slice")
    return float(np.mean(box))


def ct_targets(profile: Any = None, info: dict | None = None) -> NormalisationConfig:
    """The CT scale a stain brings the volume to (paper 2.5): the ``normalisation`` section of a profile.

    That of ``profile`` when given, else of the checkpoint's training profile (``info["profile"]``,
    :func:`vstain.models.checkpoint.load_generator`'s record) where it is found here, else of the
    embedded ``quick`` profile (the study's scale, bone 30000 and background 10000).

    Examples
    --------
    >>> targets = ct_targets("smoke")
    >>> targets.ct_bone_mean, targets.ct_background_mean
    (30000.0, 10000.0)
    """
    if profile is not None:
        return as_profile(profile).normalisation
    try:
        return as_profile((info or {}).get("profile") or "quick").normalisation
    except ProfileError:
        return as_profile("quick").normalisation


def choose_ct_normalisation(source, *, method: str = "auto", bone_value: float | None = None,
                            background_value: float | None = None, bone_roi=None, background_roi=None,
                            sample: tuple[list, list] | None = None,
                            targets: NormalisationConfig | None = None) -> dict:
    """How the CT volume is brought to the study's scale (``targets``: :func:`ct_targets`; paper 2.5).

    ``bone_value`` and ``background_value`` (the input's own numbers) or ``bone_roi`` and
    ``background_roi`` (:func:`parse_roi` boxes) fix the linear map; otherwise ``method="auto"``
    finds bone and background on a few slices as the registration stage does
    (:func:`vstain.normalise.volume_scale_from_slices`), and ``"none"`` takes the volume as
    already normalised (then the automatic ROIs only check that it is). ``sample``
    (:func:`read_sample_slices` of ``source``) spares reading and segmenting them again.
    ``targets`` (default :func:`ct_targets` of no profile) gives the bone and background means.

    Returns
    -------
    dict
        ``method`` and, unless ``"none"``, ``scale`` and ``offset`` with the ROI values they come from.
    """
    targets = ct_targets() if targets is None else targets
    means = dict(bone_mean=targets.ct_bone_mean, background_mean=targets.ct_background_mean)
    given = {"values": (bone_value, background_value), "ROIs": (bone_roi, background_roi)}
    for kind, pair in given.items():
        if (pair[0] is None) != (pair[1] is None):
            raise ValueError(f"{source.name}: give both bone and background {kind}, or neither")
    if bone_value is not None and bone_roi is not None:
        raise ValueError(f"{source.name}: give bone/background values or ROIs, not both")
    if bone_value is not None:
        return {"method": "given values", **linear_ct_map(bone_value, background_value, **means)}
    if bone_roi is not None:
        values = _roi_mean(source, bone_roi, "--bone-roi"), _roi_mean(source, background_roi, "--background-roi")
        try:
            return {"method": "given ROIs", **linear_ct_map(*values, **means)}
        except ValueError as err:
            raise ValueError(f"{source.name}: --bone-roi / --background-roi: {err}") from None
    if method == "none":
        return {"method": "none (the input is taken as normalised)"}
    try:
        slices, segmentations = (sample or read_sample_slices(source))[:2]
        return volume_scale_from_slices(slices, segmentations=segmentations, **means)
    except ValueError as err:
        raise ValueError(f"{source.name}: automatic CT normalisation failed: {err} "
                         "(--ct-bone-value/--ct-background-value or --bone-roi/--background-roi)") from None


#: ``--ct-contrast``: found from the slices, bone bright as it is, or bone dark (the volume is negated first).
CONTRASTS = ("auto", "normal", "inverted")


def check_ct_contrast(source, sample: tuple, contrast: str = "auto") -> dict:
    """Stop when the CT looks inverted (bone dark): the brightest class lines the edge of the field of view.

    Around a sample lies air or medium, the darkest class of a CT; where the brightest class
    lines most of the edge instead (:func:`vstain.normalise.edge_class_shares`), bone and
    background would swap in the automatic normalisation and the stain. ``--ct-contrast
    inverted`` negates the volume first; ``--ct-contrast normal`` skips the check (a sample
    wider than the field of view, with bone at its edge). With ``contrast="inverted"`` (``source``
    already negated) the same finding means the CT was not inverted in the first place.

    Returns
    -------
    dict
        ``edge_class_shares`` (darkest to brightest class), for the output's record.

    Raises
    ------
    ValueError
        Naming the file and ``--ct-contrast``.
    """
    shares = edge_class_shares(sample[1])
    if looks_inverted(shares) and contrast == "inverted":
        raise ValueError(
            f"{source.name}: --ct-contrast inverted, but negated the CT looks inverted: its darkest class would "
            f"line {shares[3]:.0%} of the edge of the field of view; bone is bright in this scan as it comes: "
            "drop --ct-contrast inverted")
    if looks_inverted(shares):
        raise ValueError(
            f"{source.name}: the CT looks inverted (bone dark): its brightest class lines {shares[3]:.0%} of the edge "
            f"of the field of view, where air or medium lies, its darkest {shares[0]:.0%}; stained as it is, bone "
            "and background would swap. Pass --ct-contrast inverted (or --ct-contrast normal if bone is bright and "
            "the sample fills the field of view)")
    return {"edge_class_shares": None if shares is None else [round(float(v), 4) for v in shares]}


def check_ct_intensities(source, normalisation: dict, training: dict | None, checkpoint, *,
                         sample: tuple[list, list] | None = None,
                         targets: NormalisationConfig | None = None) -> tuple[dict, list[str]]:
    """Describe the intensities of ``source`` once normalised, and say, in words, what looks wrong.

    Returns the statistics (:func:`vstain.normalise.ct_statistics` over the sample region of the
    sampled slices, mapped by ``normalisation``) and a list of warnings: the volume unlike the
    checkpoint's training CT, an input taken as normalised whose bone and background are far
    from the ``targets`` (:func:`ct_targets`), or a checkpoint that records no training statistics. ``sample``
    (:func:`read_sample_slices` of ``source``) spares reading and segmenting the slices again:
    the sample region comes from the input's own segmentation (a linear map with a positive
    scale leaves the intensity classes where they are).
    """
    raw, segmentations = (sample or read_sample_slices(source))[:2]
    if "scale" in normalisation:
        mapping = NormalisedVolume(source, normalisation["scale"], normalisation["offset"])
        slices = [mapping.map_slice(image) for image in raw]
    else:
        slices = raw
    # the sample, not the air around it nor the fill outside the field of view (class -1)
    fill = (sample[2] if sample is not None and len(sample) > 2 else {}).get("fill_value")
    masks = [seg["classes"] >= 1 if seg is not None else
             ~ct_outside_field_of_view(image, fill) if fill is not None else np.ones(image.shape, bool)
             for image, seg in zip(raw, segmentations)]
    stats = ct_statistics(slices, masks)
    notes = []
    targets = ct_targets() if targets is None else targets
    bone, background = targets.ct_bone_mean, targets.ct_background_mean
    contrast = bone - background
    if normalisation["method"].startswith("none"):
        try:
            found = volume_scale_from_slices(slices, segmentations=segmentations, bone_mean=bone,
                                             background_mean=background)
        except ValueError:
            found = None
        if found is None or (abs(found["bone_mean_before"] - bone) > 0.25 * contrast
                             or abs(found["background_mean_before"] - background) > 0.25 * contrast):
            seen = ("no bone and background found" if found is None else
                    f"bone {found['bone_mean_before']:.0f}, background {found['background_mean_before']:.0f}")
            notes.append(f"{source.name}: taken as normalised, but the automatic ROIs read {seen} "
                         f"where the model expects {bone:.0f} and {background:.0f}; drop --ct-normalisation none")
    if training is None:
        notes.append(f"{checkpoint}: records no training CT statistics; the volume's intensities cannot be "
                     "compared with what the model was trained on")
    else:
        difference = compare_ct_statistics(stats, training, contrast=contrast)
        if difference:
            notes.append(f"{source.name}: the normalised CT is unlike the training CT of {checkpoint}: "
                         f"{difference}; check the normalisation before trusting the stain")
    return stats, notes


#: Bounds of the options whose slip of a digit would run for hours: the pre-filter's sigma (voxels), the
#: inference patch (px, paper: 256) and patches per forward pass.
MAX_SIGMA_VOXELS, MAX_PATCH_SIZE, MAX_BATCH_SIZE = 20.0, 2048, 1024


#: Largest factor between a volume's voxel size and the training CT's (either way) before a warning; also the
#: largest ratio of a volume's longest to shortest voxel side.
VOXEL_SIZE_FACTOR = 2.0


def check_voxel_size(source, training_um: float | None, checkpoint) -> list[str]:
    """Warnings, in words, when the volume's voxels are far from the training CT's or far from cubic.

    The generator learnt the structures at the training voxel size (recorded in the checkpoint
    as ``ct_voxel_um``); at another size they appear larger or smaller than it knows them. A
    checkpoint that records none is not compared.

    Examples
    --------
    >>> from vstain.volume_io import ArrayVolume
    >>> check_voxel_size(ArrayVolume(np.zeros((2, 2, 2)), (5, 5, 5), name="ct.tif"), 5.0, "last.pt")
    []
    >>> check_voxel_size(ArrayVolume(np.zeros((2, 2, 2)), (50, 1, 1), name="ct.tif"), 5.0, "last.pt")[0]
    'ct.tif: voxel size 50 x 1 x 1 um (z, y, x), but last.pt was trained on CT at 5 um: structures appear 0.1-5x the size the model learnt; resample the volume to 5 um voxels, or expect a worse stain'
    """
    sizes = tuple(float(v) for v in source.voxel_size_um)
    shown = " x ".join(f"{v:g}" for v in sizes)
    notes = []
    if training_um:
        factors = [training_um / v for v in sizes]
        if max(factors) > VOXEL_SIZE_FACTOR or min(factors) < 1 / VOXEL_SIZE_FACTOR:
            notes.append(f"{source.name}: voxel size {shown} um (z, y, x), but {checkpoint} was trained on CT at "
                         f"{training_um:g} um: structures appear {min(factors):.2g}-{max(factors):.2g}x the size "
                         f"the model learnt; resample the volume to {training_um:g} um voxels, or expect a worse "
                         "stain")
    if max(sizes) > VOXEL_SIZE_FACTOR * min(sizes):
        notes.append(f"{source.name}: anisotropic voxels {shown} um (z, y, x): each slice is stained as if its "
                     "voxels were cubic; resample to cubic voxels first")
    return notes


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


def stain_ct_volume(
    source: Any,
    checkpoint: str | Path,
    output: str | Path,
    *,
    ensemble: list[str | Path] | tuple = (),
    uncertainty: bool = False,
    uncertainty_source: str = "combined",
    stain_from: str | None = None,
    axes: str = "z",
    fusion: str = "od",
    sigma: float = 1.0,
    device: str = "cpu",
    patch_size: int | None = None,
    step: int | None = None,
    batch_size: int | None = None,
    blend: str | None = None,
    profile: Any = None,
    ct_contrast: str = "auto",
    ct_fill_value: float | str | None = "auto",
    ct_normalisation: str = "auto",
    ct_bone_value: float | None = None,
    ct_background_value: float | None = None,
    bone_roi: tuple | None = None,
    background_roi: tuple | None = None,
    overwrite: bool = False,
    progress: bool = True,
    input_name: str | None = None,
    ngff_version: str = "0.4",
) -> tuple[Path, Path | None]:
    """Stain an opened CT volume with a checkpoint and write it: what ``vstain stain`` does, as a call.

    The options are those of ``vstain stain`` (:func:`configure_parser`), by their long names
    (``ngff_version``: the OME-NGFF version of a ``.zarr`` output, "0.4" or "0.5");
    ``source`` is an opened volume (:func:`vstain.volume_io.open_volume`, an
    :class:`~vstain.volume_io.ArrayVolume`, ...), left open for the caller to close.

    Voxels outside the reconstruction's field of view (what ``ct_fill_value`` finds or gives: 0, any
    number, or NaN, found by ``"auto"``) are left out of the normalisation and reach the generator as
    the input's background value; the stain there is black (RGB 0, 0, 0: no data), and with
    ``uncertainty`` the stain and its map there are those of that background. A NaN or infinite voxel
    inside the field of view stops the run.

    Returns
    -------
    (Path, Path or None)
        The stain and, with ``uncertainty``, its map (:func:`vstain.uncertainty.uncertainty_path`).
    """
    output = check_output_path(output, overwrite=overwrite)
    if uncertainty:
        if axes != "z":
            raise ValueError("--uncertainty stains slice-wise along Z only; leave out --axes zyx")
        if output.suffix.lower() != ".zarr":  # an OME-Zarr stain holds its map inside the same store
            check_output_path(uncertainty_path(output), overwrite=overwrite)
    elif ensemble:
        raise ValueError("--ensemble is for --uncertainty (the spread across members); add --uncertainty")
    elif stain_from:
        raise ValueError("--stain-from is for --uncertainty (without it the stain is the checkpoint's own); "
                         "add --uncertainty")
    stain_from = stain_from or "single"
    device = resolve_device(device, source="--device")
    if patch_size and patch_size > 2 * max(source.shape):
        raise ValueError(f"--patch-size {patch_size} is more than twice the largest side of {source.name} "
                         f"({' x '.join(map(str, source.shape))}): the padding alone would cost the run; give a "
                         "patch no larger than the slices")
    contrast = ct_contrast
    opened = source
    if contrast == "inverted":
        source = InvertedVolume(source)
    settings = dict(device=device, patch_size=patch_size, step=step, batch_size=batch_size, blend=blend,
                    profile=profile)
    if uncertainty:  # only the stainer that is used is built
        stainer, info = load_uncertainty_stainer([checkpoint, *ensemble], source=uncertainty_source,
                                                 stain_from=stain_from, **settings)
    else:
        stainer, info = load_forward_stainer(checkpoint, **settings)
    # read and segmented once, for the field of view, the map and the check
    fill = ct_fill_value
    inverted = isinstance(fill, float) and contrast == "inverted"
    sample = read_sample_slices(source, fill_value=-fill if inverted else fill)  # the file's value, negated too
    field = sample[2]
    automatic = ct_bone_value is None and bone_roi is None  # nothing given that fixes bone's side
    contrast_record = {"contrast": contrast}
    if contrast != "normal" and automatic:
        contrast_record.update(check_ct_contrast(source, sample, contrast))
    targets = ct_targets(profile, info)
    normalisation = choose_ct_normalisation(
        source, method=ct_normalisation, bone_value=ct_bone_value, background_value=ct_background_value,
        bone_roi=bone_roi, background_roi=background_roi, sample=sample, targets=targets)
    field_source = source
    if field["fill_value"] is not None:  # outside the circle: the input's background, then no data
        field_source = FieldOfViewVolume(source, field["fill_value"],
                                         normalisation.get("background_mean_before", targets.ct_background_mean))
    normalised = (NormalisedVolume(field_source, normalisation["scale"], normalisation["offset"])
                  if "scale" in normalisation else field_source)
    stats, notes = check_ct_intensities(source, normalisation, info.get("ct_statistics"), checkpoint,
                                        sample=sample, targets=targets)
    del sample
    notes += check_voxel_size(source, info.get("ct_voxel_um"), checkpoint)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    meta = provenance(None, checkpoint=str(info.get("path", checkpoint)), model=info.get("model"),
                      fold=info.get("fold"), input=str(input_name if input_name is not None else opened.name),
                      training_voxel_um=info.get("ct_voxel_um"), patch_size=info["patch_size"], step=info["step"],
                      blend=info["blend"], precision=info["precision"], inference_profile=info["inference_profile"],
                      ct_normalisation={**normalisation, **contrast_record, "intensities": stats,
                                        "warnings": notes},
                      field_of_view=_field_record({**field, "fill_value": fill} if inverted else field))
    if uncertainty:
        meta = {**meta, "members": info["members"], "uncertainty_source": uncertainty_source,
                "stain": stain_from, "stain_note": STAIN_NOTES[stain_from]}
        return stain_volume_uncertainty(normalised, stainer, output, sigma_voxels=sigma, metadata=meta,
                                        overwrite=overwrite, progress=progress, ngff_version=ngff_version)
    outside = field_source.outside if field_source is not source else None
    stain_volume(normalised, stainer, output, sigma_voxels=sigma, axes=axes, fusion=fusion, metadata=meta,
                 overwrite=overwrite, progress=progress, outside=outside, ngff_version=ngff_version)
    return output, None


def run_cli(args: argparse.Namespace) -> int:
    """``vstain stain``: stain a CT volume with a trained generator, no notebook needed."""
    output = check_output_path(args.output, overwrite=args.overwrite)
    source = open_volume(args.input, args.voxel_size)
    try:
        _, map_path = stain_ct_volume(
            source, args.checkpoint, output, ensemble=getattr(args, "ensemble", None) or [],
            uncertainty=bool(getattr(args, "uncertainty", False)),
            uncertainty_source=getattr(args, "uncertainty_source", "combined"),
            stain_from=getattr(args, "stain_from", None), axes=args.axes, fusion=args.fusion, sigma=args.sigma,
            device=args.device, patch_size=args.patch_size, step=args.step, batch_size=args.batch_size,
            blend=args.blend, profile=args.profile, ct_contrast=getattr(args, "ct_contrast", "auto"),
            ct_fill_value=getattr(args, "ct_fill_value", "auto"), ct_normalisation=args.ct_normalisation,
            ct_bone_value=args.ct_bone_value, ct_background_value=args.ct_background_value,
            bone_roi=args.bone_roi, background_roi=args.background_roi, overwrite=args.overwrite,
            progress=not getattr(args, "no_progress", False), input_name=str(args.input),
            ngff_version=getattr(args, "ngff_version", "0.4"))
    finally:
        source.close()
    print(f"wrote {output} ({source.shape[0]} x {source.shape[1]} x {source.shape[2]} voxels, "
          f"voxel size {source.voxel_size_um} um)")
    if map_path is not None:
        print(f"wrote {map_path} (uncertainty: {args.uncertainty_source}, Delta E, measured around "
              f"the {getattr(args, 'stain_from', None) or 'single'} stain)")
    return 0
