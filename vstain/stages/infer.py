"""The inference stage: stain every registered pair with a trained model; ``vstain infer``.

The whole-slide overlapping patch inference itself is :mod:`vstain.infer`. This stage
takes a profile: it finds the trained model's chosen checkpoint
(:func:`vstain.stages.upstream.selected_checkpoint`; an untrained model stops with the command that
trains it), stains every registered pair in both directions, writes the outputs
and their masked versions under ``results/<profile>/inference/<model>/fold<k>/``
(:func:`vstain.layout.inference_dir`) and redoes only what changed.

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="vstain infer")
>>> configure_parser(parser)
>>> parser.parse_args(["--model", "pix2pix", "--blend", "window"]).blend
'window'
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # plain text bars: the same in a terminal, a log and a notebook

from vstain.config import as_profile, resolve_device
from vstain.data import network_to_histology
from vstain.infer import (BLENDS, Blend, check_tiling, ct_network_channels_last, ct_to_histology_slide,
                          generator_channels, histology_to_ct_slide, infer_slide, seam_score, tile_grid)
from vstain.io import is_current, provenance, read_record, sha256_file, write_json, write_tiff
from vstain.layout import inference_dir, registered_dir
from vstain.masks import apply_mask, background_fill
from vstain.models.checkpoint import load_generators
from vstain.pairs import read_registered_pair, registered_fingerprint, registered_pair_ids, split_roles
from vstain.stages import upstream
from vstain.stages.arguments import add_stage_options, non_negative_int
from vstain.stages.upstream import read_inference  # noqa: F401  (this stage's reader, kept under its name)
from vstain.train import forward_dtype
from vstain.vocabulary import STAINS


def inference_dtype(profile: Any, device: str) -> torch.dtype:
    """The forward passes' dtype: ``inference.cuda_precision`` on CUDA, bf16 autocast on the CPU where
    ``inference.cpu_bf16`` asks for it (``auto``: where the CPU computes bf16 natively), else float32.

    Examples
    --------
    >>> inference_dtype(as_profile("smoke"), "cpu")
    torch.float32
    """
    return forward_dtype(profile.inference, device)


def run_inference(
    profile: Any,
    model: str,
    fold: int,
    *,
    blend: Blend | None = None,
    stain: str = "toluidine_blue",
    pair_ids: Sequence[str] | None = None,
    checkpoint: str | Path | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Stage driver: stain every registered pair with one trained model (idempotent).

    For each pair, writes into ``results/<profile>/inference/<model>/fold<k>/<pair_id>/``:
    ``histology.tif`` (generated histology, uint8 RGB), ``ct.tif`` (generated CT, uint16;
    not for Pix2Pix), their ``*_masked.tif`` versions (outside the correspondence mask:
    the real image's mean background value, paper 2.8), all with the pixel size, and
    ``inference.json`` (settings, fill values, split role, provenance), written last.
    ``done.json`` in the fold folder marks the whole run complete. Pairs whose
    ``inference.json`` records the same settings and checkpoint are not recomputed.

    Parameters
    ----------
    profile : str or Profile
        Profile name or loaded profile; patch size, step, batch size and blend come
        from ``profile.inference``.
    model : str
        Model name (``mod_cyclegan``, ``cyclegan``, ``cyclegan_invct``, ``pix2pix``).
    fold : int
        Cross-validation fold.
    blend : {"mean", "window"}, optional
        Overrides ``profile.inference.blend``.
    stain : str
        Which registered pairs to stain.
    pair_ids : sequence of str, optional
        Only these pairs (default: all registered pairs of ``stain``).
    checkpoint : str or Path, optional
        Use this checkpoint instead of the run's selected one (chosen on demand by
        :func:`vstain.stages.upstream.selected_checkpoint`: ``training.checkpoint_selection``).
    out_dir : str or Path, optional
        Instead of ``results/<profile>/inference/<model>/fold<k>/``.
    force : bool
        Recompute even when up to date.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        The fold folder holding the pair folders and ``done.json``.
    """
    profile = as_profile(profile)
    cfg = profile.inference
    blend = cfg.blend if blend is None else blend
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {list(BLENDS)}, got {blend!r}")
    check_tiling((cfg.patch_size, cfg.patch_size), cfg.patch_size, cfg.step)
    if checkpoint is None:
        checkpoint = upstream.selected_checkpoint(profile, model, fold, stain, progress=progress)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (train it: vstain train --model {model})")
    out = Path(out_dir) if out_dir is not None else inference_dir(profile.name, model, fold, stain)
    ids = list(pair_ids) if pair_ids is not None else registered_pair_ids(profile.name, stain)
    if not ids:
        raise FileNotFoundError(f"no registered {stain} pairs under results/{profile.name}/registered/ "
                                "(run the registration stage first: vstain register)")
    try:
        roles = split_roles(profile.name, fold)
    except FileNotFoundError:
        roles = {}
    device = resolve_device(profile.device, source=f"profile {profile.name}: field device")
    settings = {
        "model": model, "fold": fold, "blend": blend, "patch_size": cfg.patch_size, "step": cfg.step,
        "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
        "cuda_precision": cfg.cuda_precision, "precision": str(inference_dtype(profile, device)).removeprefix("torch."),
    }
    registered = registered_dir(profile.name)
    inputs = {pid: registered_fingerprint(registered / pid) for pid in ids}
    done_path = out / "done.json"
    if not force and is_current(done_path, settings) and is_current(done_path, inputs, key="inputs") and all(
        _pair_up_to_date(out / pid, settings, inputs[pid]) for pid in ids
    ):
        return out

    done_path.unlink(missing_ok=True)  # the run is complete again only when every pair is
    generators = load_generators(checkpoint, model)
    for generator, _ in generators.values():
        generator.to(device)
    for pair_id in tqdm(ids, desc=f"infer {model} fold{fold}", unit="pair", disable=not progress):
        folder = out / pair_id
        if not force and _pair_up_to_date(folder, settings, inputs[pair_id]):
            continue
        pair = read_registered_pair(registered / pair_id)
        tiling = dict(patch_size=cfg.patch_size, step=cfg.step, batch_size=cfg.batch_size, blend=blend, device=device,
                      dtype=inference_dtype(profile, device))
        record = provenance(profile, **settings, pair_id=pair_id, material=pair.material, stain=pair.stain,
                            role=roles.get(pair_id, "unknown"), pixel_size_um=pair.pixel_size_um)
        # inference.json goes first out of the way: a pair folder without it is incomplete.
        (folder / "inference.json").unlink(missing_ok=True)
        files, histology_fill, ct_fill = _infer_pair(folder, pair, pair_id, generators, tiling, record)
        write_json(folder / "inference.json", {
            **record, "settings": settings, "input": inputs[pair_id], "files": files,
            "histology_fill": np.asarray(histology_fill).tolist(), "ct_fill": float(np.asarray(ct_fill)),
        })
    write_json(done_path, {"settings": settings, "pairs": ids, "inputs": inputs,
                           "provenance": provenance(profile, **settings)})
    return out


def _infer_pair(folder: Path, pair: Any, pair_id: str, generators: dict, tiling: dict,
                record: dict) -> tuple[list[str], Any, Any]:
    """Stain one registered pair (and generate its CT where the model has a reverse generator) into ``folder``.

    Writes ``histology.tif`` and ``histology_masked.tif`` (and ``ct.tif``, ``ct_masked.tif``) with
    ``record`` as their metadata; returns the files written and the fill values outside the mask.
    """
    forward, info = generators["ct_to_histology"]
    try:
        histology = ct_to_histology_slide(forward, pair.ct, info=info, **tiling)
    except ValueError as err:
        raise ValueError(f"pair {pair_id}: {err}") from err
    histology_fill = background_fill(pair.histology, pair.mask)
    write_tiff(folder / "histology.tif", histology, pair.pixel_size_um, metadata=record)
    write_tiff(folder / "histology_masked.tif", apply_mask(histology, pair.mask, histology_fill),
               pair.pixel_size_um, metadata=record)
    files = ["histology.tif", "histology_masked.tif"]
    ct_fill = background_fill(pair.ct, pair.mask)
    if "histology_to_ct" in generators:
        reverse, rinfo = generators["histology_to_ct"]
        try:
            ct = histology_to_ct_slide(reverse, pair.histology, info=rinfo, **tiling)
        except ValueError as err:
            raise ValueError(f"pair {pair_id}: {err}") from err
        write_tiff(folder / "ct.tif", ct, pair.pixel_size_um, metadata=record)
        write_tiff(folder / "ct_masked.tif", apply_mask(ct, pair.mask, ct_fill), pair.pixel_size_um,
                   metadata=record)
        files += ["ct.tif", "ct_masked.tif"]
    return files, histology_fill, ct_fill


def _pair_up_to_date(folder: Path, settings: dict[str, Any], fingerprint: str) -> bool:
    record = read_record(folder / "inference.json")
    return (is_current(record, settings) and is_current(record, fingerprint, key="input")
            and all((folder / f).is_file() for f in record.get("files", [])))


# --------------------------------------------------------------------------- for the chapter


def compare_blends(
    profile: Any, model: str, fold: int, pair_id: str, *, checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Stain one pair with both blends and measure their seams (paper 3: tiling steps behind the mask).

    Parameters
    ----------
    profile : str or Profile
        Patch size, step and batch size come from ``profile.inference``.
    model : str
    fold : int
    pair_id : str
        A registered pair of the profile.
    checkpoint : str or Path, optional
        Default: the run's selected checkpoint (chosen on demand; the run must be trained).

    Returns
    -------
    dict
        ``"mean"`` and ``"window"``: the generated histology (uint8 RGB, unmasked);
        ``"grid"``: the :class:`TileGrid`; ``"pair"``: the registered pair;
        ``"scores"``: a DataFrame ``blend, region, seam_score`` for the regions
        ``whole slide``, ``inside mask`` and ``background`` (outside the mask).
    """
    profile = as_profile(profile)
    cfg = profile.inference
    if checkpoint is None:
        checkpoint = upstream.selected_checkpoint(profile, model, fold)
    forward, info = load_generators(checkpoint, model)["ct_to_histology"]
    pair = read_registered_pair(registered_dir(profile.name) / pair_id)
    grid = tile_grid(pair.ct.shape, cfg.patch_size, cfg.step)
    network = ct_network_channels_last(pair.ct, invert=bool(info.get("invert_ct", False)),
                                       channels=generator_channels(info))
    device = resolve_device(profile.device, source=f"profile {profile.name}: field device")
    result: dict[str, Any] = {"grid": grid, "pair": pair}
    rows = []
    regions = {"whole slide": None, "inside mask": pair.mask, "background": ~pair.mask}
    for blend in BLENDS:
        # scored in network range: 8-bit rounding would hide steps smaller than a grey level
        stained = infer_slide(forward, network, patch_size=cfg.patch_size, step=cfg.step, batch_size=cfg.batch_size,
                              blend=blend, device=device, dtype=inference_dtype(profile, device))
        result[blend] = np.asarray(network_to_histology(np.moveaxis(stained, -1, 0)), np.uint8)
        for region_name, region in regions.items():
            rows.append({"blend": blend, "region": region_name, "seam_score": seam_score(stained, grid, region)})
    result["scores"] = pd.DataFrame(rows)
    return result


# --------------------------------------------------------------------------- command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain infer``."""
    add_stage_options(parser, force="recompute even when up to date")
    parser.add_argument("--model", required=True, help="model name, e.g. mod_cyclegan")
    parser.add_argument("--fold", type=non_negative_int, default=0, help="cross-validation fold (default: 0)")
    parser.add_argument("--blend", choices=BLENDS, default=None, help="override the profile's blend")
    parser.add_argument("--stain", default="toluidine_blue", choices=STAINS,
                        help="which registered pairs (default: toluidine_blue)")
    parser.add_argument("--checkpoint", default=None, help="use this checkpoint instead of the trained model's")


def run_cli(args: argparse.Namespace) -> int:
    """Run ``vstain infer``."""
    out = run_inference(args.profile, args.model, args.fold, blend=args.blend, stain=args.stain,
                        checkpoint=args.checkpoint, force=args.force)
    print(out)
    return 0
