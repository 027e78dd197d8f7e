"""``vstain stain``: virtually stain a user's CT volume with a trained generator, no notebook needed.

The command opens a greyscale TIFF stack or OME-Zarr store (:func:`vstain.volume_io.open_volume`),
wraps the checkpoint's CT-to-histology generator as a slice stainer
(:func:`load_forward_stainer`) and streams the volume through :func:`vstain.volume.stain_volume`,
slice-wise along Z or along Z, Y and X fused.

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
from pathlib import Path
from typing import Callable

import numpy as np

from vstain.config import DEVICES, resolve_device
from vstain.io import provenance
from vstain.models.checkpoint import load_generator
from vstain.stages.arguments import non_negative_float, positive_float, positive_int
from vstain.volume import AXES, SliceStainer, make_slice_stainer, stain_volume
from vstain.volume_io import open_volume


def load_forward_stainer(
    checkpoint: str | Path,
    *,
    device: str = "cpu",
    patch_size: int | None = None,
    step: int | None = None,
    batch_size: int = 4,
    blend: str = "mean",
    infer: Callable[..., np.ndarray] | None = None,
) -> tuple[SliceStainer, dict]:
    """Load the CT-to-histology generator of a checkpoint and wrap it as a slice stainer.

    ``patch_size`` defaults to the training patch size stored in the checkpoint and
    ``step`` to a quarter of it (the paper's 256 / 64). A checkpoint without a
    CT-to-histology generator (the reverse one alone) or whose weights do not fit its
    architecture is refused with a ValueError naming the file.

    Parameters
    ----------
    checkpoint : path
        ``last.pt`` or ``best_<component>.pt`` of a training run.
    device : str
        Torch device name (``cpu``, ``cuda``).
    patch_size, step : int, optional
        Whole-slide inference tiling (defaults above).
    batch_size : int
    blend : {"mean", "window"}
    infer : callable, optional
        Replaces :func:`vstain.infer.infer_slide` (see :func:`vstain.volume.make_slice_stainer`).

    Returns
    -------
    stainer : callable
        One CT slice (float32) to uint8 RGB.
    info : dict
        The generator's record (:func:`vstain.models.checkpoint.load_generator`) with the
        ``patch_size`` and ``step`` used.

    Raises
    ------
    FileNotFoundError
        If the checkpoint does not exist.
    ValueError
        If it holds no CT-to-histology generator of 3 input and 3 output channels.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    try:
        generator, info = load_generator(checkpoint, direction="ct_to_histology")
    except (KeyError, TypeError, RuntimeError, EOFError, AttributeError) as err:
        raise ValueError(f"{checkpoint}: not a vstain generator checkpoint ({type(err).__name__}: {err})") from err
    if info.get("direction") != "ct_to_histology" or info.get("out_channels") != 3 or info.get("in_channels") != 3:
        raise ValueError(
            f"{checkpoint}: field direction/channels is {info.get('direction')} "
            f"{info.get('in_channels')}->{info.get('out_channels')}; `stain` needs the CT-to-histology generator (3->3)"
        )
    patch = int(patch_size or info.get("patch_size") or 256)
    arch = (info.get("architecture") or {}).get("generator", {})
    # the generator's down-sampling: a patch side it cannot halve that often gives a mismatched output
    multiple = 2 ** int(arch.get("num_downs", 0)) if arch.get("kind") == "unet" else 4
    if patch < multiple or patch % multiple:
        raise ValueError(f"--patch-size {patch}: the {arch.get('kind', 'resnet')} generator of {checkpoint} needs a "
                         f"multiple of {multiple}")
    stainer = make_slice_stainer(generator.to(device), infer=infer, patch_size=patch, step=int(step or max(1, patch // 4)),
                                 batch_size=batch_size, blend=blend, device=device,
                                 invert=bool(info.get("invert_ct")))
    return stainer, {**info, "patch_size": patch, "step": int(step or max(1, patch // 4))}


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


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain stain``."""
    parser.add_argument("--checkpoint", required=True, help="a trained run's .pt file (e.g. .../fold0/last.pt)")
    parser.add_argument("--input", required=True, help="CT volume: greyscale TIFF stack (Z, Y, X) or OME-Zarr")
    parser.add_argument("--output", required=True, help="stained RGB volume: .tif stack or .zarr (OME-Zarr)")
    parser.add_argument("--axes", choices=AXES, default="z",
                        help="z: slice-wise along Z (the paper); zyx: along Z, Y and X, fused")
    parser.add_argument("--fusion", choices=("od", "rgb"), default="od",
                        help="zyx fusion: mean optical density (default) or mean RGB")
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="cpu, cuda or auto (CUDA when present)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--voxel-size", nargs=3, type=positive_float, metavar=("Z", "Y", "X"),
                        help="voxel size in um when the input does not carry it")
    parser.add_argument("--sigma", type=non_negative_float, default=1.0,
                        help="Gaussian pre-filter in voxels (paper: 1; 0: none)")
    parser.add_argument("--patch-size", type=positive_int, help="inference patch (default: the training patch size)")
    parser.add_argument("--step", type=positive_int, help="inference step (default: patch size / 4)")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--blend", choices=("mean", "window"), default="mean")


def run_cli(args: argparse.Namespace) -> int:
    """``vstain stain``: stain a CT volume with a trained generator, no notebook needed."""
    output = check_output_path(args.output, overwrite=args.overwrite)
    device = resolve_device(args.device, source="--device")
    source = open_volume(args.input, args.voxel_size)
    try:
        stainer, info = load_forward_stainer(args.checkpoint, device=device, patch_size=args.patch_size,
                                             step=args.step, batch_size=args.batch_size, blend=args.blend)
        meta = provenance(None, checkpoint=str(args.checkpoint), model=info.get("model"), fold=info.get("fold"),
                          input=str(args.input), patch_size=info["patch_size"], step=info["step"])
        stain_volume(source, stainer, output, sigma_voxels=args.sigma, axes=args.axes, fusion=args.fusion,
                     metadata=meta, overwrite=args.overwrite, progress=True)
    finally:
        source.close()
    print(f"wrote {output} ({source.shape[0]} x {source.shape[1]} x {source.shape[2]} voxels, "
          f"voxel size {source.voxel_size_um} um)")
    return 0
