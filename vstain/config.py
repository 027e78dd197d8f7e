"""Profiles: the only place where the study's numbers live.

A profile is a YAML file with one section per stage. The three profiles of the study
(``smoke``, ``quick``, ``paper``) live inside the package (``vstain/profiles/``, read with
:mod:`importlib.resources`, so an installed package has them); ``vstain profile quick > my.yaml``
prints one to copy and edit, and any YAML path is accepted wherever a profile name is. :func:`load_profile` reads it and validates it against the
schema below: an unknown key, a value of the wrong type or a missing value stops
with a :class:`ProfileError` that names the file and the dotted key.

Each section is a frozen dataclass; the field annotations *are* the schema.
Supported annotations: ``int``, ``float`` (ints accepted), ``str``, ``bool``,
``list[T]``, ``dict[str, T]`` and ``Literal[...]``.

Examples
--------
>>> from vstain.config import load_profile
>>> profile = load_profile("smoke")
>>> profile.name
'smoke'
>>> profile.training.batch_size > 0
True
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILE_NAMES = ("smoke", "quick", "paper")
DEVICES = ("cpu", "cuda", "auto")


class ProfileError(ValueError):
    """A profile file is malformed: the message names the file and the key."""


# --------------------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """The synthetic dataset (``vstain.phantom``) and the split (``vstain.manifest``)."""

    tb_counts: dict[str, int]  # toluidine-blue pairs per implant material (Mg, Ti, PEEK)
    tb_test_counts: dict[str, int]  # of these, held out for testing (paper: 2 Mg + 1 PEEK)
    he_counts: dict[str, int]  # H&E pairs per material (paper S2.1: 3 Mg, 6 Ti, 2 PEEK)
    he_test_counts: dict[str, int]  # H&E validation/testing pairs (paper: 1 of each)
    n_folds: int  # cross-validation folds over the train/validation pool
    ct_shape: list[int]  # CT volume (z, y, x) in voxels
    ct_voxel_um: float  # CT voxel size (paper: 5 um)
    histology_pixel_um: float  # histology pixel size (paper: 0.44 um; finer than CT)
    n_beamtimes: int  # CT acquisition sessions, each with its own gain/offset
    n_staining_sessions: int  # histology sessions, each with its own white balance


@dataclasses.dataclass(frozen=True)
class RegistrationConfig:
    """2D-3D registration (paper 2.3)."""

    pyramid_levels: int  # coarse-to-fine levels of the plane search, finest at the CT voxel size
    histology_downsample_um: float  # histology pixel size of the coarsest plane-search level
    max_tilt_deg: float  # a fitted plane tilted more than this from the z axis is a failure
    mi_bins: int  # histogram bins of the Mattes mutual information (fewer on small images)
    affine_iterations: int  # optimiser iterations of the 2D affine stage
    plane_iterations: int  # optimiser iterations per level of the rigid plane fit
    max_inplane_rotation_deg: float  # starting grid: in-plane rotations searched, +/-
    inplane_step_deg: float  # starting grid: rotation step
    max_shift_fraction: float  # starting grid: in-plane shifts searched, +/- (fraction of the CT width)
    shift_step_fraction: float  # starting grid: shift step (fraction of the CT width)
    depth_margin_voxels: float  # starting grid: planes no closer than this to the top/bottom slice
    n_starts: int  # starting grid: best depths refined at the coarsest level; the best fit wins
    refinement_rounds: int  # plane refits on the section undistorted by the fitted affine
    refinement_levels: int  # finest pyramid levels used by each refit
    min_inside_fraction: float  # less of the section than this inside the volume is a failure
    threads: int  # SimpleITK threads; 1 makes every fit bit-for-bit reproducible (ITK reductions vary with threads)


@dataclasses.dataclass(frozen=True)
class NormalisationConfig:
    """CT and histology normalisation (paper 2.5)."""

    ct_bone_mean: float  # target mean of the CT bone ROI (paper: 30000)
    ct_background_mean: float  # target mean of the CT background ROI (paper: 10000)
    histology_c_low: float  # c: subtracted from the bone ROI 1st percentile
    histology_c_high: float  # c': added to the background ROI 99th percentile


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Models, losses and training (paper 2.6, 2.7)."""

    models: list[str]  # models trained by the workflow
    folds: list[int]  # folds trained by the workflow
    patch_size: int  # training patch side (paper: 256)
    patches_per_pair: int  # patches per pair per epoch (paper: 100)
    batch_size: int  # (paper: 4)
    epochs: int  # (paper: 500)
    ngf: int  # generator base width (paper: 64)
    ndf: int  # discriminator base width (paper: 64)
    n_blocks: int  # residual blocks of the ResNet generator (paper: 9)
    n_layers_d: int  # PatchGAN layers (3 gives the 70x70 receptive field)
    unet_num_downs: int  # U-Net down-samplings (8 for 256 px patches)
    lr: float  # Adam learning rate (paper: 2e-4)
    beta1: float  # Adam beta1 (paper: 0.5)
    beta2: float  # Adam beta2 (paper: 0.999)
    lambda_cyc: float  # Eq. 4 / 7 (paper: 6)
    lambda_id: float  # Eq. 4 / 7 (paper: 3)
    lambda_px: float  # Eq. 7 (paper: 6)
    lambda_gs: float  # Eq. 7 (paper: 1)
    lambda_l1: float  # Eq. 10 (paper: 20)
    pool_size: int  # image buffer per discriminator (Zhu et al. 2017: 50)
    min_mask_fraction: float  # a patch with less mask than this is re-drawn
    rescale_range: list[float]  # augmentation rescale (paper: 0.9-1.1)
    jitter: float  # brightness/contrast jitter (paper: 0.1)
    threads: int  # CPU threads of a training run (0: torch's default); see benchmarks/train_speed.py
    channels_last: bool  # NHWC memory format for the networks (faster oneDNN convolutions on CPU)
    cpu_bf16: Literal["off", "on", "auto"]  # bf16 autocast on CPU; auto: when the CPU has native bf16 (CUDA: always)


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """Overlapping whole-slide inference (paper 2.9)."""

    patch_size: int  # (paper: 256)
    step: int  # (paper: 64)
    batch_size: int
    blend: Literal["mean", "window"]  # mean: the paper's plain average


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """SSIM / PSNR / LPIPS on patches (paper 2.10)."""

    patch_size: int  # (paper: 256)
    patch_step: int  # stride of the candidate patch grid
    min_mask_fraction: float  # (paper: 0.5)


@dataclasses.dataclass(frozen=True)
class FRCConfig:
    """Fourier ring correlation (paper S3)."""

    patch_size: int  # (paper: 256)
    threshold: Literal["1/7", "half-bit"]
    split: Literal["checkerboard", "binomial"]
    min_mask_fraction: float  # a patch with less of the correspondence mask is skipped


@dataclasses.dataclass(frozen=True)
class VolumeConfig:
    """3D virtual staining (paper 2.11)."""

    sigma_voxels: float  # Gaussian pre-filter of the CT stack (paper: 1)
    axes: list[str]  # stack axes stained and fused (paper: ["z"])
    model: str  # the model whose generator stains the volume
    fold: int


@dataclasses.dataclass(frozen=True)
class HEConfig:
    """The H&E secondary study (paper S2)."""

    models: list[str]  # (paper: mod_cyclegan and pix2pix)
    epochs: int


@dataclasses.dataclass(frozen=True)
class Profile:
    """A whole profile: one seed and one section per stage."""

    name: str
    seed: int
    device: Literal["cpu", "cuda", "auto"]
    dataset: DatasetConfig
    registration: RegistrationConfig
    normalisation: NormalisationConfig
    training: TrainingConfig
    inference: InferenceConfig
    evaluation: EvaluationConfig
    frc: FRCConfig
    volume: VolumeConfig
    he: HEConfig

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain nested dicts (for provenance records)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- validation


def _check_value(value: Any, annotation: Any, where: str, source: str) -> Any:
    """Return ``value`` coerced to ``annotation`` or raise a ProfileError naming ``where``."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where, source)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ProfileError(f"{source}: {where} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ProfileError(f"{source}: {where} must be a list, got {type(value).__name__}")
        return [_check_value(v, item_type, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        key_type, item_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ProfileError(f"{source}: {where} must be a mapping, got {type(value).__name__}")
        return {
            _check_value(k, key_type, f"{where} key", source): _check_value(v, item_type, f"{where}.{k}", source)
            for k, v in value.items()
        }
    if annotation is bool:
        if not isinstance(value, bool):
            raise ProfileError(f"{source}: {where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError(f"{source}: {where} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(f"{source}: {where} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ProfileError(f"{source}: {where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} at {where}")  # a schema bug, not user input


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: {prefix or 'the profile'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    dotted = (prefix + ".") if prefix else ""
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ProfileError(f"{source}: unknown key {dotted}{unknown[0]} (valid keys: {', '.join(names)})")
    missing = [n for n in names if n not in data or data[n] is None]
    if missing:
        raise ProfileError(f"{source}: missing value for {dotted}{missing[0]}")
    return cls(**{n: _check_value(data[n], hints[n], dotted + n, source) for n in names})


def resolve_profile_path(profile: str | Path) -> Path:
    """Map a profile name (``smoke``, ``quick``, ``paper``) or a YAML path to a file path.

    Examples
    --------
    >>> resolve_profile_path("smoke").name
    'smoke.yaml'
    >>> resolve_profile_path("my.yaml").as_posix()
    'my.yaml'
    """
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        return path
    return Path(str(importlib.resources.files("vstain") / "profiles" / f"{profile}.yaml"))


def profile_text(name: str) -> str:
    """The YAML text of one of the study's profiles, with its comments (to copy and edit).

    Examples
    --------
    >>> "name: smoke" in profile_text("smoke")
    True
    """
    if name not in PROFILE_NAMES:
        raise ProfileError(f"unknown profile {name!r} (known profiles: {', '.join(PROFILE_NAMES)})")
    return resolve_profile_path(name).read_text()


def as_profile(profile: "Profile | str | Path") -> "Profile":
    """``profile`` itself if it is a :class:`Profile`, else the profile it names (loaded and validated).

    Examples
    --------
    >>> as_profile("smoke") is not None and as_profile(as_profile("smoke")).name
    'smoke'
    """
    return profile if isinstance(profile, Profile) else load_profile(profile)


def resolve_device(device: str, *, source: str = "device") -> str:
    """The torch device name of a ``device`` setting: ``auto`` is CUDA when present, else CPU.

    Parameters
    ----------
    device : {"cpu", "cuda", "auto"}
    source : str
        Where the setting came from, named in errors (a profile file and key, or an option).

    Raises
    ------
    ValueError
        If ``device`` is unknown, or ``cuda`` while no CUDA device is available.

    Examples
    --------
    >>> resolve_device("cpu")
    'cpu'
    """
    if device not in DEVICES:
        raise ValueError(f"{source} must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return "cpu"
    import torch  # heavy; only needed to look for a GPU

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError(f"{source} is 'cuda' but no CUDA device is available (set device: cpu or auto)")
    return "cuda"


def load_profile(profile: str | Path) -> Profile:
    """Load and validate a profile.

    Parameters
    ----------
    profile : str or Path
        A profile name (``"smoke"``, ``"quick"``, ``"paper"``) or the path of a YAML file.

    Returns
    -------
    Profile
        The validated, immutable profile.

    Raises
    ------
    ProfileError
        If the file is missing or malformed, a key is unknown, a value has the wrong type
        or is missing; the message names the file and the dotted key.

    Examples
    --------
    >>> load_profile("paper").training.patch_size
    256
    """
    path = resolve_profile_path(profile)
    if not path.is_file():
        raise ProfileError(
            f"{path}: profile file not found (known profiles: {', '.join(PROFILE_NAMES)}, or give a .yaml path)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: malformed YAML: {err}") from err
    return _build(Profile, data, "", str(path))
