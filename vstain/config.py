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
import math
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from vstain.params import RegistrationParams
from vstain.vocabulary import ABLATED_MODEL, ABLATIONS, MODEL_NAMES, PIXEL_UM_RANGE

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
    slide_rotation_deg: float  # sections lie on the slide at an in-plane rotation uniform over +/- this
    mirror_fraction: float  # this fraction of sections lies face down (the histology is the plane mirrored)
    min_tilt_deg: float  # the section plane tilts from the screw's plane by an angle uniform from this ...
    max_tilt_deg: float  # ... up to this
    other_axis_fraction: float  # this fraction of blocks lies with the section normal along y or x, not z
    # The paper's regime (its 2.1, 2.2, 3 and S3): what makes pairs only partly aligned and the CT coarser.
    section_thickness_um: float  # the slide integrates the stain through the section (paper 2.1: about 40 um)
    section_sublayers: int  # planes through the thickness whose stain is summed (1: one plane)
    depth_of_field_um: float  # the microscope's depth of field (10x objective: about 10 um)
    objective_na: float  # a layer beyond half the depth of field blurs by NA x the excess (10x: about 0.25)
    misalignment_strength: float  # one dial scaling every effect below that registration cannot remove (0: none)
    soft_tissue_shift_um: float  # RMS soft-tissue displacement between scan and slide (paper 3: it shifts; 10-50 um)
    marrow_retraction: float  # fraction of the marrow next to bone that retracts from it (embedding shrinkage)
    residual_warp_um: float  # RMS of a smooth non-affine warp of the whole section
    section_waviness_um: float  # RMS out-of-plane offset of the section's surface (it is not a plane)
    cracks_per_section: float  # mean number of cracks through the dense bone (paper 3: formed after the scan)
    crack_opening_um: float  # how far a crack's fragments move apart at its middle
    marrow_air_fraction: float  # fraction of marrow that is air in the CT (critical-point drying, paper 2.1)
    slide_hue_jitter: float  # relative spread of each stain's uptake per slide, beyond the session's
    brown_soft_tissue_fraction: float  # slides whose soft tissue stains brownish (paper 3.1)
    n_cameras: int  # microscope cameras the sessions alternate between (paper 2.2: two)
    vignetting: float  # illumination falloff at the corners of each microscope tile (tile seams)
    microscope_tile_um: float  # side of one microscope field (the stage is stepped, paper 2.2)
    ct_blur_voxels: list[float]  # [min, max] Gaussian blur of the CT per beamtime (S3: CT coarser than histology)
    ct_noise_correlation_voxels: float  # correlation length of the CT noise (the reconstruction filter)
    ct_ring_amplitude: float  # ring artefacts about the rotation axis, relative to dense bone
    ct_metal_streak_amplitude: float  # beam-hardening streaks around a Ti screw, relative to dense bone


#: 2D-3D registration (paper 2.3): the science's own typed parameters (:mod:`vstain.params`), ranges included.
RegistrationConfig = RegistrationParams


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
    # which saved checkpoint stains downstream (paper 2.6.3 saves one at each generator loss minimum):
    # the best median SSIM or PSNR on the fold's validation pairs (never the test pairs), or the last epoch
    checkpoint_selection: Literal["validation_ssim", "validation_psnr", "last"]
    cuda_precision: Literal["fp32", "bf16", "fp16"]  # on CUDA: fp32 as the paper's code ran; fp16 with a gradient scaler
    lr_decay_start_epoch: int  # 0: constant learning rate; k: linear decay to zero from epoch k to the last (base code: 100)
    prefetch_batches: int  # batches sampled ahead in a background thread (pinned memory on CUDA); 0: in the loop
    # processes of one training run (distributed data parallel, started by torchrun; one GPU each on CUDA, the
    # workflow asks SLURM for gpu=ranks); batch_size stays the global batch, a multiple of ranks (vstain.distributed)
    ranks: int


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """Overlapping whole-slide inference (paper 2.9)."""

    patch_size: int  # (paper: 256)
    step: int  # (paper: 64)
    batch_size: int
    blend: Literal["mean", "window"]  # mean: the paper's plain average
    cpu_bf16: Literal["off", "on", "auto"]  # bf16 autocast of the forward passes on CPU; auto: where the CPU has it
    cuda_precision: Literal["fp32", "bf16", "fp16"]  # forward passes on CUDA (fp32: as the paper's code ran)


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
class UncertaintyConfig:
    """Per-pixel uncertainty of the virtual stain (ours: the paper, 3.3, can only describe its model's doubt)."""

    model: str  # the model whose fold models form the ensemble
    folds: list[int]  # ensemble members, one model per fold (paper: all five)
    member_epochs: int  # epochs of members outside training.folds (0: training.epochs, the fold's own run)
    tta: bool  # the 8 flips and quarter turns (test-time augmentation)
    tiling: bool  # the spread over the overlapping patches of whole-slide inference
    volume_source: Literal["ensemble", "tta", "tiling", "combined"]  # which uncertainty the volume carries
    error_threshold: float  # optical-density distance above which a stained pixel counts as wrong (AUROC)
    reliability_bins: int  # uncertainty bins of the reliability curve


@dataclasses.dataclass(frozen=True)
class HEConfig:
    """The H&E secondary study (paper S2)."""

    models: list[str]  # (paper: mod_cyclegan and pix2pix)
    epochs: int


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The misalignment sweep that tests the paper's claim (ours: the paper's data have one, unknown, level)."""

    levels: list[float]  # dataset.misalignment_strength values swept (0: slide and CT aligned)
    models: list[str]  # models trained at every level
    seeds: int  # networks per model and level (initialisation and patch draws; the same seeds at every level)
    ablation_level: float  # the level at which the modified CycleGAN's own terms are taken out ...
    ablations: list[str]  # ... one at a time or together: no_px, no_gs, no_px_no_gs
    n_train: int  # toluidine-blue training slides per level (the same blocks at every level)
    n_test: int  # test slides per level, scored against the prepared section and against its aligned twin
    ct_shape: list[int]  # the sweep's blocks (z, y, x), at dataset.ct_voxel_um
    epochs: int  # training epochs of every sweep run (the rest of the training section as profiled)
    patches_per_pair: int  # patches per training slide and epoch


@dataclasses.dataclass(frozen=True)
class RegistrationCasesConfig:
    """Blocks drawn only to measure registration (chapter 01), beside the dataset's: the other implant placements."""

    screwless: int  # round blocks of trabecular bone, no screw and no cortex: only the texture orients the section
    screw_at_edge: int  # blocks whose screw runs along the section's edge


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
    uncertainty: UncertaintyConfig
    sweep: SweepConfig
    registration_cases: RegistrationCasesConfig

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
        if not math.isfinite(value):  # .nan / .inf in YAML: no setting of the study means them
            raise ProfileError(f"{source}: {where} must be a finite number, got {value!r}")
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
    profile = _build(Profile, data, "", str(path))
    check_ranges(profile, str(path))
    return profile


# --------------------------------------------------------------------------- ranges

#: The networks' down-sampling: a patch side must be a multiple of it (ResNet generator: two stride-2
#: convolutions; PatchGAN: three), or the up-sampled output does not match the input.
PATCH_MULTIPLE = 8
VOLUME_AXES = ("z", "y", "x", "zyx")
#: Widest generator / discriminator base width a profile may ask for (paper: 64); wider ones exhaust any memory.
MAX_NETWORK_WIDTH = 1024


def _range_checks(p: Profile) -> list[tuple[str, Any, bool, str]]:
    """``(dotted key, value, valid, what a valid value is)`` for every number with a range."""
    return [*_dataset_checks(p), *p.registration.range_checks("registration"), *_normalisation_checks(p),
            *_training_checks(p), *_later_stage_checks(p)]


def _dataset_checks(p: Profile) -> list[tuple[str, Any, bool, str]]:
    """The range checks of the seed and the ``dataset`` section."""
    d = p.dataset
    checks = [("seed", p.seed, p.seed >= 0, "a non-negative integer")]
    for name, counts in (("tb_counts", d.tb_counts), ("tb_test_counts", d.tb_test_counts),
                         ("he_counts", d.he_counts), ("he_test_counts", d.he_test_counts)):
        for material, n in counts.items():
            checks.append((f"dataset.{name}.{material}", n, n >= 0, "a non-negative count"))
    checks += [
        ("dataset.n_folds", d.n_folds, d.n_folds >= 2, "at least 2 (cross-validation needs a validation fold)"),
        ("dataset.ct_shape", d.ct_shape, len(d.ct_shape) == 3 and min(d.ct_shape) >= 8,
         "three sizes (z, y, x) of at least 8 voxels"),
        ("dataset.ct_voxel_um", d.ct_voxel_um, _LOW_UM <= d.ct_voxel_um <= _HIGH_UM, _PLAUSIBLE_UM),
        ("dataset.histology_pixel_um", d.histology_pixel_um, _LOW_UM <= d.histology_pixel_um <= _HIGH_UM,
         _PLAUSIBLE_UM),
        ("dataset.n_beamtimes", d.n_beamtimes, d.n_beamtimes >= 1, _AT_LEAST_ONE),
        ("dataset.n_staining_sessions", d.n_staining_sessions, d.n_staining_sessions >= 1, _AT_LEAST_ONE),
        ("dataset.slide_rotation_deg", d.slide_rotation_deg, 0 <= d.slide_rotation_deg <= 180,
         "an angle in [0, 180] degrees"),
        ("dataset.mirror_fraction", d.mirror_fraction, 0 <= d.mirror_fraction <= 1, _FRACTION),
        ("dataset.max_tilt_deg", d.max_tilt_deg, 0 <= d.max_tilt_deg <= 30, "an angle in [0, 30] degrees"),
        ("dataset.min_tilt_deg", d.min_tilt_deg, 0 <= d.min_tilt_deg <= d.max_tilt_deg,
         "an angle between 0 and dataset.max_tilt_deg"),
        ("dataset.other_axis_fraction", d.other_axis_fraction, 0 <= d.other_axis_fraction <= 1, _FRACTION),
        ("dataset.section_thickness_um", d.section_thickness_um, 0 <= d.section_thickness_um <= 200,
         "a thickness in [0, 200] um"),
        ("dataset.section_sublayers", d.section_sublayers, 1 <= d.section_sublayers <= 32, "an integer in [1, 32]"),
        ("dataset.depth_of_field_um", d.depth_of_field_um, 0 <= d.depth_of_field_um <= 200, "a depth in [0, 200] um"),
        ("dataset.objective_na", d.objective_na, 0 < d.objective_na <= 1.5, "a numerical aperture in (0, 1.5]"),
        ("dataset.misalignment_strength", d.misalignment_strength, 0 <= d.misalignment_strength <= 4,
         "a factor in [0, 4] (0: aligned, 1: the profile's regime)"),
        ("dataset.soft_tissue_shift_um", d.soft_tissue_shift_um, 0 <= d.soft_tissue_shift_um <= 200,
         "a length in [0, 200] um"),
        ("dataset.marrow_retraction", d.marrow_retraction, 0 <= d.marrow_retraction <= 1, _FRACTION),
        ("dataset.residual_warp_um", d.residual_warp_um, 0 <= d.residual_warp_um <= 200, "a length in [0, 200] um"),
        ("dataset.section_waviness_um", d.section_waviness_um, 0 <= d.section_waviness_um <= 200,
         "a length in [0, 200] um"),
        ("dataset.cracks_per_section", d.cracks_per_section, 0 <= d.cracks_per_section <= 50, "a mean count in [0, 50]"),
        ("dataset.crack_opening_um", d.crack_opening_um, 0 <= d.crack_opening_um <= 200, "a length in [0, 200] um"),
        ("dataset.marrow_air_fraction", d.marrow_air_fraction, 0 <= d.marrow_air_fraction <= 1, _FRACTION),
        ("dataset.slide_hue_jitter", d.slide_hue_jitter, 0 <= d.slide_hue_jitter <= 1, _FRACTION),
        ("dataset.brown_soft_tissue_fraction", d.brown_soft_tissue_fraction, 0 <= d.brown_soft_tissue_fraction <= 1,
         _FRACTION),
        ("dataset.n_cameras", d.n_cameras, 1 <= d.n_cameras <= 2, "1 or 2 (the paper's two cameras)"),
        ("dataset.vignetting", d.vignetting, 0 <= d.vignetting < 1, "a fraction in [0, 1)"),
        ("dataset.microscope_tile_um", d.microscope_tile_um, d.microscope_tile_um > 0, _POSITIVE),
        ("dataset.ct_blur_voxels", d.ct_blur_voxels,
         len(d.ct_blur_voxels) == 2 and 0 <= d.ct_blur_voxels[0] <= d.ct_blur_voxels[1] < 50,
         "a range [min, max] of Gaussian sigmas with 0 <= min <= max < 50 voxels"),
        ("dataset.ct_noise_correlation_voxels", d.ct_noise_correlation_voxels,
         0 <= d.ct_noise_correlation_voxels <= 10, "a length in [0, 10] voxels"),
        ("dataset.ct_ring_amplitude", d.ct_ring_amplitude, 0 <= d.ct_ring_amplitude <= 1, _FRACTION),
        ("dataset.ct_metal_streak_amplitude", d.ct_metal_streak_amplitude, 0 <= d.ct_metal_streak_amplitude <= 2,
         "an amplitude in [0, 2] (relative to dense bone)"),
    ]
    return checks


def _normalisation_checks(p: Profile) -> list[tuple[str, Any, bool, str]]:
    """The range checks of the ``normalisation`` section."""
    norm = p.normalisation
    return [
        ("normalisation.ct_background_mean", norm.ct_background_mean, 0 <= norm.ct_background_mean < 65535,
         "a 16-bit value in [0, 65535) (the CT is written as uint16)"),
        ("normalisation.ct_bone_mean", norm.ct_bone_mean, norm.ct_background_mean < norm.ct_bone_mean <= 65535,
         "a 16-bit value above normalisation.ct_background_mean (bone is brighter than background)"),
        ("normalisation.histology_c_low", norm.histology_c_low, 0 <= norm.histology_c_low <= 255,
         "an offset in [0, 255] (8-bit histology)"),
        ("normalisation.histology_c_high", norm.histology_c_high, 0 <= norm.histology_c_high <= 255,
         "an offset in [0, 255] (8-bit histology)"),
    ]


def _training_checks(p: Profile) -> list[tuple[str, Any, bool, str]]:
    """The range checks of the ``training`` section."""
    d, t = p.dataset, p.training
    return [
        ("training.models", t.models, bool(t.models) and len(set(t.models)) == len(t.models)
         and set(t.models) <= set(MODEL_NAMES), f"a list of distinct model names from {list(MODEL_NAMES)}"),
        ("training.folds", t.folds, bool(t.folds) and all(0 <= k < d.n_folds for k in t.folds)
         and len(set(t.folds)) == len(t.folds), f"distinct folds between 0 and dataset.n_folds - 1 ({d.n_folds - 1})"),
        ("training.patch_size", t.patch_size, t.patch_size >= 16 and t.patch_size % PATCH_MULTIPLE == 0,
         f"a multiple of {PATCH_MULTIPLE} of at least 16 px (the networks down-sample by {PATCH_MULTIPLE})"),
        ("training.unet_num_downs", t.unet_num_downs,
         t.unet_num_downs >= 1 and t.patch_size % (2 ** t.unet_num_downs) == 0,
         "at least 1, with training.patch_size a multiple of 2 ** unet_num_downs"),
        ("training.patches_per_pair", t.patches_per_pair, t.patches_per_pair >= 1, _AT_LEAST_ONE),
        ("training.batch_size", t.batch_size, t.batch_size >= 1, _AT_LEAST_ONE),
        ("training.epochs", t.epochs, t.epochs >= 1, _AT_LEAST_ONE),
        ("training.ngf", t.ngf, 1 <= t.ngf <= MAX_NETWORK_WIDTH, f"between 1 and {MAX_NETWORK_WIDTH} (paper: 64)"),
        ("training.ndf", t.ndf, 1 <= t.ndf <= MAX_NETWORK_WIDTH, f"between 1 and {MAX_NETWORK_WIDTH} (paper: 64)"),
        ("training.n_blocks", t.n_blocks, t.n_blocks >= 0, "non-negative"),
        ("training.n_layers_d", t.n_layers_d, t.n_layers_d >= 1, _AT_LEAST_ONE),
        ("training.lr", t.lr, 0 < t.lr <= 1, "a learning rate in (0, 1]"),
        *[(f"training.{name}", getattr(t, name), getattr(t, name) >= 0, "a non-negative loss weight")
          for name in ("lambda_cyc", "lambda_id", "lambda_px", "lambda_gs", "lambda_l1")],
        ("training.lr_decay_start_epoch", t.lr_decay_start_epoch, 0 <= t.lr_decay_start_epoch < max(t.epochs, 1),
         f"0 (constant) or an epoch before the last ({t.epochs})"),
        ("training.prefetch_batches", t.prefetch_batches, 0 <= t.prefetch_batches <= 64, "between 0 and 64"),
        ("training.ranks", t.ranks, t.ranks >= 1 and t.batch_size % t.ranks == 0,
         f"at least 1 and a divisor of training.batch_size ({t.batch_size}, the global batch)"),
        ("training.beta1", t.beta1, 0 <= t.beta1 < 1, "in [0, 1)"),
        ("training.beta2", t.beta2, 0 <= t.beta2 < 1, "in [0, 1)"),
        ("training.pool_size", t.pool_size, t.pool_size >= 0, "non-negative"),
        ("training.min_mask_fraction", t.min_mask_fraction, 0 <= t.min_mask_fraction <= 1, _FRACTION),
        ("training.rescale_range", t.rescale_range, len(t.rescale_range) == 2
         and 0 < t.rescale_range[0] <= t.rescale_range[1], "two factors [low, high] with 0 < low <= high"),
        ("training.jitter", t.jitter, 0 <= t.jitter < 1, "in [0, 1)"),
        ("training.threads", t.threads, t.threads >= 0, "non-negative (0: torch's default)"),
    ]


def _later_stage_checks(p: Profile) -> list[tuple[str, Any, bool, str]]:
    """The range checks of the ``inference``, ``evaluation``, ``frc``, ``volume``, ``he`` and ``uncertainty`` sections."""
    d, i, e, f, v = p.dataset, p.inference, p.evaluation, p.frc, p.volume
    return [
        ("inference.patch_size", i.patch_size, i.patch_size >= 16 and i.patch_size % PATCH_MULTIPLE == 0,
         f"a multiple of {PATCH_MULTIPLE} of at least 16 px"),
        ("inference.step", i.step, 1 <= i.step <= i.patch_size, "between 1 and inference.patch_size"),
        ("inference.batch_size", i.batch_size, i.batch_size >= 1, _AT_LEAST_ONE),
        ("evaluation.patch_size", e.patch_size, e.patch_size >= 8, "at least 8 px"),
        ("evaluation.patch_step", e.patch_step, e.patch_step >= 1, _AT_LEAST_ONE),
        ("evaluation.min_mask_fraction", e.min_mask_fraction, 0 <= e.min_mask_fraction <= 1, _FRACTION),
        ("frc.patch_size", f.patch_size, f.patch_size >= 8, "at least 8 px"),
        ("frc.min_mask_fraction", f.min_mask_fraction, 0 <= f.min_mask_fraction <= 1, _FRACTION),
        ("volume.sigma_voxels", v.sigma_voxels, v.sigma_voxels >= 0, "non-negative"),
        ("volume.axes", v.axes, bool(v.axes) and set(v.axes) <= set(VOLUME_AXES), f"a list from {list(VOLUME_AXES)}"),
        ("volume.model", v.model, v.model in MODEL_NAMES, f"one of {list(MODEL_NAMES)}"),
        ("volume.fold", v.fold, 0 <= v.fold < d.n_folds, f"between 0 and dataset.n_folds - 1 ({d.n_folds - 1})"),
        ("he.models", p.he.models, bool(p.he.models) and set(p.he.models) <= set(MODEL_NAMES),
         f"a list of model names from {list(MODEL_NAMES)}"),
        ("he.epochs", p.he.epochs, p.he.epochs >= 1, _AT_LEAST_ONE),
        ("uncertainty.model", p.uncertainty.model, p.uncertainty.model in MODEL_NAMES, f"one of {list(MODEL_NAMES)}"),
        ("uncertainty.folds", p.uncertainty.folds, bool(p.uncertainty.folds)
         and all(0 <= k < d.n_folds for k in p.uncertainty.folds) and len(set(p.uncertainty.folds)) == len(p.uncertainty.folds),
         f"distinct folds between 0 and dataset.n_folds - 1 ({d.n_folds - 1})"),
        ("uncertainty.member_epochs", p.uncertainty.member_epochs, p.uncertainty.member_epochs >= 0,
         "non-negative (0: training.epochs)"),
        ("uncertainty.error_threshold", p.uncertainty.error_threshold, p.uncertainty.error_threshold > 0, _POSITIVE),
        ("uncertainty.reliability_bins", p.uncertainty.reliability_bins, p.uncertainty.reliability_bins >= 2,
         "at least 2"),
    ]


_FRACTION = "a fraction between 0 and 1"
_POSITIVE = "a positive number"
_AT_LEAST_ONE = "an integer of at least 1"
_LOW_UM, _HIGH_UM = PIXEL_UM_RANGE
_PLAUSIBLE_UM = f"a size in micrometres from {_LOW_UM:g} to {_HIGH_UM:g} (outside, the unit is wrong)"


MAX_SWEEP_LEVEL = 10.0  # misalignment strengths beyond this tear the phantom's sections apart


#: More registration-only blocks than this of one kind make chapter 01 wait on them for no better figure.
MAX_REGISTRATION_CASES = 200


def _registration_case_checks(p: Profile) -> list[tuple[str, Any, bool, str]]:
    """The ranges of the ``registration_cases`` section (as :func:`_range_checks`)."""
    what = f"a count from 0 to {MAX_REGISTRATION_CASES}"
    return [(f"registration_cases.{name}", n, 0 <= n <= MAX_REGISTRATION_CASES, what)
            for name, n in dataclasses.asdict(p.registration_cases).items()]


def _sweep_checks(p: Profile) -> list[tuple[str, Any, bool, str]]:
    """The ranges of the ``sweep`` section (as :func:`_range_checks`)."""
    s = p.sweep
    levels_ok = bool(s.levels) and len(set(s.levels)) == len(s.levels) and all(
        0 <= level <= MAX_SWEEP_LEVEL for level in s.levels)
    return [
        ("sweep.levels", s.levels, levels_ok, f"distinct strengths between 0 and {MAX_SWEEP_LEVEL:g}"),
        ("sweep.models", s.models, bool(s.models) and len(set(s.models)) == len(s.models)
         and set(s.models) <= set(MODEL_NAMES), f"a list of distinct model names from {list(MODEL_NAMES)}"),
        ("sweep.seeds", s.seeds, 1 <= s.seeds <= 100, "between 1 and 100"),
        ("sweep.ablation_level", s.ablation_level, s.ablation_level in s.levels or not s.ablations,
         "one of sweep.levels (where the full model's runs are)"),
        ("sweep.ablations", s.ablations, len(set(s.ablations)) == len(s.ablations)
         and set(s.ablations) <= set(ABLATIONS) and (not s.ablations or ABLATED_MODEL in s.models),
         f"distinct names from {list(ABLATIONS)}, with {ABLATED_MODEL} among sweep.models"),
        ("sweep.n_train", s.n_train, s.n_train >= 1, "an integer of at least 1"),
        ("sweep.n_test", s.n_test, s.n_test >= 1, "an integer of at least 1"),
        ("sweep.ct_shape", s.ct_shape, len(s.ct_shape) == 3 and all(n >= 16 for n in s.ct_shape),
         "three sizes (z, y, x) of at least 16 voxels"),
        ("sweep.epochs", s.epochs, s.epochs >= 1, "an integer of at least 1"),
        ("sweep.patches_per_pair", s.patches_per_pair, s.patches_per_pair >= 1, "an integer of at least 1"),
    ]


def inference_settings(data: Any, source: str) -> InferenceConfig:
    """An ``inference`` section read back from a record (a checkpoint's), validated as a profile's is.

    Raises
    ------
    ProfileError
        Naming ``source`` and the dotted key, for an unknown, missing, mistyped or out-of-range value.

    Examples
    --------
    >>> recorded = dataclasses.asdict(load_profile("smoke").inference)
    >>> inference_settings(recorded, "last.pt").step == load_profile("smoke").inference.step
    True
    >>> inference_settings({**recorded, "step": 0}, "last.pt")
    Traceback (most recent call last):
    ...
    vstain.config.ProfileError: last.pt: inference.step must be between 1 and inference.patch_size, got 0
    """
    settings = _build(InferenceConfig, data, "inference", source)
    for key, value, valid, what in _range_checks(dataclasses.replace(load_profile("smoke"), inference=settings)):
        if key.startswith("inference.") and not valid:
            raise ProfileError(f"{source}: {key} must be {what}, got {value!r}")
    return settings


def check_ranges(profile: Profile, source: str = "profile") -> None:
    """Stop with a :class:`ProfileError` naming ``source`` and the dotted key of the first value out of range.

    Examples
    --------
    >>> import dataclasses
    >>> smoke = load_profile("smoke")
    >>> bad = dataclasses.replace(smoke, training=dataclasses.replace(smoke.training, lr=-2e-4))
    >>> check_ranges(bad, "my.yaml")
    Traceback (most recent call last):
    ...
    vstain.config.ProfileError: my.yaml: training.lr must be a learning rate in (0, 1], got -0.0002
    """
    checks = _range_checks(profile) + _sweep_checks(profile) + _registration_case_checks(profile)
    for key, value, valid, what in checks:
        if not valid:
            raise ProfileError(f"{source}: {key} must be {what}, got {value!r}")
