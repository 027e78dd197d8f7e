"""``vstain volume``: the study's 3D stage on the phantom (paper 2.11, 3.3, Fig. 8, and its outlook).

:func:`stain_phantom_volume` stains a held-out phantom CT volume slice-wise along Z and
along Z, Y and X fused (:func:`vstain.volume.stain_volume`), compares both with the
phantom's true stained volume and writes everything under ``results/<profile>/volume/``.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(); configure_parser(parser)
>>> args = parser.parse_args(["--profile", "smoke", "--force"])
>>> args.profile, args.force, args.no_progress
('smoke', True, False)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from vstain.config import Profile, as_profile, resolve_device
from vstain.io import is_current, provenance, read_tiff, write_csv, write_json, write_png, write_tiff
from vstain.layout import volume_dir
from vstain.normalise import normalise_ct_volume
from vstain.phantom import LABELS, stain_labels
from vstain.stages import upstream
from vstain.stages.arguments import add_stage_options
from vstain.volume import RenderingUnavailable, compare_volumes, render_rgba, stain_volume, stripe_score
from vstain.volume_io import ArrayVolume

# Version of the phantom stage's metrics.csv columns: a change re-runs the stage (2: scores inside the sample).
METRICS_VERSION = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain volume`` (the study's 3D stage on the phantom)."""
    add_stage_options(parser, force=True, progress=True)


def run_cli(args: argparse.Namespace) -> int:
    """``vstain volume``: :func:`stain_phantom_volume`, then print where its results are."""
    done = stain_phantom_volume(args.profile, force=args.force, progress=not args.no_progress)
    print(f"wrote {done.parent} (metrics.csv, stained volumes, renderings; done.json last)")
    return 0


def normalised_ct_volume(ct_volume: np.ndarray, labels_volume: np.ndarray, profile: Profile, pair_id: str = "?"
                         ) -> tuple[np.ndarray, dict]:
    """The phantom's CT volume scaled like the training slices (paper 2.5, the profile's ``normalisation``).

    The fit is :func:`vstain.normalise.normalise_ct_volume` (one map from the middle slice), with the
    phantom's true dense-bone and background labels as the ROIs.

    Parameters
    ----------
    ct_volume, labels_volume : ndarray
        ``(Z, Y, X)`` raw CT and the phantom's label volume.
    profile : Profile
        Its ``normalisation`` targets are used.
    pair_id : str
        Named in errors.

    Returns
    -------
    volume : ndarray
        float32, clipped to ``[0, 65535]``.
    stats : dict
        :func:`vstain.normalise.normalise_ct`'s record (``scale``, ``offset``, ...).
    """
    n = profile.normalisation
    return normalise_ct_volume(ct_volume, labels_volume, LABELS["dense_bone"], LABELS["background"],
                               bone_mean=n.ct_bone_mean, background_mean=n.ct_background_mean, pair_id=pair_id)


def stain_phantom_volume(profile: Profile | str | Path, *, force: bool = False, progress: bool = True) -> Path:
    """Stage driver: stain a phantom CT volume along Z and fused along Z, Y, X; compare with the truth.

    The sample is the first toluidine-blue test pair of ``profile.volume.fold`` (never
    seen in training; :func:`vstain.stages.upstream.volume_sample`); its CT volume is normalised
    like the training data (:func:`normalised_ct_volume`) and stained with the forward generator of
    ``profile.volume.model`` (its selected checkpoint, :func:`vstain.stages.upstream.selected_checkpoint`;
    an untrained model stops with the command that trains it).
    The true stained volume is the phantom's stain model applied to the label volume.
    Writes into ``results/<profile>/volume/``: ``ct.tif`` (normalised input),
    ``stained_z.tif``, ``stained_zyx.tif``, ``truth.tif``, ``metrics.csv`` (per variant:
    stripe score along z, y, x; SSIM and PSNR against the truth; each over the whole
    volume and, with the suffix ``_sample``, inside the sample only), ``rendering_*.png``
    when off-screen rendering works, and ``done.json`` last. Idempotent.

    The sample mask leaves out the background and the sample-holder wall: training
    never saw them (the correspondence mask excluded them, paper 2.6), and there the
    true stain is plain white, so whole-volume scores mostly measure the colour the
    network happens to give to air and holder.

    Parameters
    ----------
    profile : Profile, str or Path
    force : bool
        Recompute even when ``done.json`` records the same settings.
    progress : bool

    Returns
    -------
    Path
        ``results/<profile>/volume/done.json``.
    """
    profile = as_profile(profile)
    cfg = profile.volume
    out = volume_dir(profile.name)
    done = out / "done.json"
    settings = {"model": cfg.model, "fold": cfg.fold, "sigma_voxels": cfg.sigma_voxels, "axes": list(cfg.axes),
                "patch_size": profile.inference.patch_size, "step": profile.inference.step,
                "blend": profile.inference.blend, "checkpoint_selection": profile.training.checkpoint_selection,
                "metrics_version": METRICS_VERSION}
    if not force and is_current(done, settings):
        return done
    sample = upstream.volume_sample(profile, cfg.fold)
    ct, stats = normalised_ct_volume(sample.ct_volume, sample.labels_volume, profile, sample.pair_id)
    voxel = (sample.ct_voxel_um,) * 3
    meta = provenance(profile, pair_id=sample.pair_id, model=cfg.model, fold=cfg.fold)
    write_tiff(out / "ct.tif", ct, voxel, metadata={**meta, "normalisation": stats})
    truth = stain_labels(sample.labels_volume, sample.stain, sample.stain_params,
                         np.random.default_rng(profile.seed))
    write_tiff(out / "truth.tif", truth, voxel, metadata=meta)

    checkpoint = upstream.selected_checkpoint(profile, cfg.model, cfg.fold, progress=progress)
    device = resolve_device(profile.device, source=f"profile {profile.name}: field device")
    stainer, info = upstream.forward_stainer(checkpoint, device=device, patch_size=profile.inference.patch_size,
                                         step=profile.inference.step, batch_size=profile.inference.batch_size,
                                         blend=profile.inference.blend, profile=profile)
    source = ArrayVolume(ct, voxel, name=f"{sample.pair_id} ct")
    inside = ~np.isin(sample.labels_volume, [LABELS["background"], LABELS["holder_wall"]])
    rows = [{"variant": "truth", **_stripes(truth), "ssim": 1.0, "psnr": float("inf"),
             **_stripes(truth, inside, "_sample"), "ssim_sample": 1.0, "psnr_sample": float("inf")}]
    status = {}
    for axes in ("z", "zyx"):
        path = stain_volume(source, stainer, out / f"stained_{axes}.tif", sigma_voxels=cfg.sigma_voxels, axes=axes,
                            metadata={**meta, "checkpoint": str(checkpoint)}, overwrite=True, progress=progress)
        stained = read_tiff(path)[0]
        inside_scores = compare_volumes(stained, truth, mask=inside)
        rows.append({"variant": "single-axis (z)" if axes == "z" else "fused (zyx, OD mean)", **_stripes(stained),
                     **compare_volumes(stained, truth), **_stripes(stained, inside, "_sample"),
                     "ssim_sample": inside_scores["ssim"], "psnr_sample": inside_scores["psnr"]})
        try:
            image = render_rgba(stained, voxel)
            write_png(out / f"rendering_{axes}.png", image)
            status[axes] = "rendered"
        except RenderingUnavailable as err:
            status[axes] = f"skipped: {err}"
    write_csv(out / "metrics.csv", pd.DataFrame(rows))
    write_json(done, {"settings": settings, "pair_id": sample.pair_id, "material": sample.material,
                      "sample_fraction": float(inside.mean()),
                      "rendering": status, "checkpoint": str(checkpoint), "provenance": meta})
    return done


def _stripes(volume: np.ndarray, mask: np.ndarray | None = None, suffix: str = "") -> dict[str, float]:
    return {f"stripe_{name}{suffix}": stripe_score(volume, axis=axis, mask=mask) for axis, name in enumerate("zyx")}
