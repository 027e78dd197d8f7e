"""Per-pixel uncertainty of a virtual stain, and how well it predicts the actual error.

The paper (3.3) sees its model unsure where residual alloy meets the degradation layer and
can only describe it. Here a stain carries a map of where it can be trusted, from three
sources of disagreement, each available alone and combined:

* ``ensemble``: the k fold models of one model (trained on different folds) stain the same
  slide; their spread;
* ``tta``: test-time augmentation, the 8 flips and 90-degree rotations of the slide (the
  dihedral group, which the networks were never made to respect), each stained and turned back;
* ``tiling``: the overlapping patches of whole-slide inference (paper 2.9) each predict a
  pixel several times; their spread (:func:`vstain.infer.infer_slide` with ``spread_of``);
* ``combined``: every member under every transform, with the tiling spread inside each run.

Spread is measured in CIELAB (sRGB, D65), where a Euclidean distance is the colour difference
Delta E (CIE76; about 2.3 is just noticeable), so it is in the unit of the error of
:func:`stain_error`. (Optical density, the 3D fusion's unit, was not used: it diverges towards
black, so the black screw's grain would outweigh every tissue.) Each map is measured around a
stain, its *centre*:

* around the **single** stain (the default, :data:`STAINS`): the first member's own stain,
  untransformed, bit for bit what plain inference writes; the map is the root-mean-square
  Delta E of the source's runs from it (:func:`spread_about`). That is the stain a user keeps,
  so that is the stain whose error the map has to predict;
* around the **mean** of the source's runs (``sqrt(var_L + var_a + var_b)``,
  :func:`spread_of_runs`): the spread of the runs about their mean, which is a stain of its own
  (:func:`mean_stain`: the ensemble mean), written only when asked for by name.

For runs with tiling spread the second moment adds the mean variance inside the runs (the law of
total variance). Several maps can be mixed with weights chosen on validation slides
(:func:`mix_maps`, :func:`choose_mix`).

Measured against the truth: :func:`rank_correlation` (Spearman), :func:`flag_auroc` (how well
the uncertainty ranks pixels whose error exceeds a threshold), :func:`reliability_curve`
(error per uncertainty bin), :func:`by_label` (per tissue class) and :func:`quiet_error_fraction`
(the wrong pixels a map leaves in its quieter half).

Examples
--------
>>> import numpy as np, torch
>>> ct = np.random.default_rng(0).uniform(-1, 1, (32, 32, 3)).astype(np.float32)
>>> result = slide_uncertainty([torch.nn.Identity(), torch.nn.Identity()], ct, patch_size=16, step=8,
...                            batch_size=8, tiling=True)
>>> sorted(result.spreads), float(result.spreads["combined"].max())   # identical members agree exactly
(['combined', 'ensemble', 'tiling', 'tta'], 0.0)
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from vstain.data import ct_to_network, network_to_histology
from vstain.infer import infer_slide
from skimage.color import lab2rgb, rgb2lab

from vstain.io import remove_path
from vstain.volume import filtered_slices
from vstain.volume_io import RawStore, write_rgb_volume, write_scalar_volume

#: The sources of uncertainty, each alone, and all of them combined.
SOURCES = ("ensemble", "tta", "tiling", "combined")
#: The 8 symmetries of a square grid: (quarter turns, flipped left-right first).
DIHEDRAL = tuple((turns, flip) for flip in (False, True) for turns in range(4))
#: The stains a map can be measured around: the single model's own stain (what the command writes without a
#: map) or the mean of the source's runs (written only when asked for by name).
STAINS = ("single", "mean")
#: The unit of uncertainty and error.
UNIT = "Delta E (CIE76, CIELAB)"


# --------------------------------------------------------------------------- units


def network_lab(network: np.ndarray) -> np.ndarray:
    """CIELAB of a network-range RGB image ``(..., 3)`` in ``[-1, 1]`` (unrounded).

    The network output maps to intensity ``(x + 1) / 2`` in ``[0, 1]`` (as
    :func:`vstain.data.network_to_histology`, before rounding), read as sRGB.

    Examples
    --------
    >>> import numpy as np
    >>> [round(float(v), 1) for v in network_lab(np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]))[:, 0]]
    [100.0, 0.0]
    """
    rgb = np.clip((np.asarray(network, np.float64) + 1.0) / 2.0, 0.0, 1.0)
    return rgb2lab(rgb).astype(np.float32)


def stain_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of a uint8 RGB image ``(..., 3)``.

    Examples
    --------
    >>> import numpy as np
    >>> [round(float(v), 1) for v in stain_lab(np.array([255, 0, 0], np.uint8))]   # sRGB red
    [53.2, 80.1, 67.2]
    """
    return rgb2lab(np.asarray(rgb, np.float64) / 255.0).astype(np.float32)


def stain_error(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel error of a stain: the colour difference Delta E (CIE76) from the true stain.

    Parameters
    ----------
    prediction, truth : ndarray
        ``(..., 3)`` uint8 RGB images of the same shape.

    Returns
    -------
    ndarray
        ``(...)`` float32 Delta E (the unit of the uncertainty).

    Examples
    --------
    >>> import numpy as np
    >>> white, black = np.full((1, 1, 3), 255, np.uint8), np.zeros((1, 1, 3), np.uint8)
    >>> round(float(stain_error(black, white)[0, 0]), 1)   # L* from 0 to 100
    100.0
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape or prediction.shape[-1:] != (3,):
        raise ValueError(f"prediction {prediction.shape} and truth {truth.shape} must be RGB images of one shape")
    difference = stain_lab(prediction) - stain_lab(truth)
    return np.sqrt(np.sum(difference * difference, axis=-1)).astype(np.float32)


def mean_stain(mean_lab: np.ndarray) -> np.ndarray:
    """The uint8 RGB stain of a mean CIELAB colour (the ensemble mean as a stain).

    Examples
    --------
    >>> import numpy as np
    >>> mean_stain(np.array([[[100.0, 0.0, 0.0]]])).tolist()
    [[[255, 255, 255]]]
    """
    rgb = lab2rgb(np.asarray(mean_lab, np.float64))
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- spread


def dihedral(image: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """``image`` (axes 0, 1 spatial) flipped left-right when ``flip``, then turned ``turns`` quarter turns.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(6).reshape(2, 3)
    >>> bool(np.array_equal(undo_dihedral(dihedral(a, 3, True), 3, True), a))
    True
    """
    image = np.flip(image, axis=1) if flip else image
    return np.ascontiguousarray(np.rot90(image, turns, axes=(0, 1)))


def undo_dihedral(image: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The inverse of :func:`dihedral`."""
    image = np.rot90(image, -turns, axes=(0, 1))
    return np.ascontiguousarray(np.flip(image, axis=1) if flip else image)


def spread_of_runs(run_means: Sequence[np.ndarray], run_variances: Sequence[np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of several predictions of the same pixels, in CIELAB.

    Parameters
    ----------
    run_means : sequence of ndarray
        ``(Y, X, 3)`` CIELAB of each run (member, transform).
    run_variances : sequence of ndarray, optional
        ``(Y, X, 3)`` variance inside each run (over its overlapping patches).

    Returns
    -------
    mean : ndarray
        ``(Y, X, 3)`` float32 mean CIELAB.
    spread : ndarray
        ``(Y, X)`` float32, ``sqrt(sum_c (var_c(run means) + mean_c(run variances)))``
        (population variance: one run has spread 0 without ``run_variances``).

    Examples
    --------
    >>> import numpy as np
    >>> a, b = np.zeros((1, 1, 3)), np.full((1, 1, 3), 2.0)
    >>> mean, spread = spread_of_runs([a, b])
    >>> mean[0, 0].tolist(), round(float(spread[0, 0]), 4)   # each channel's std is 1
    ([1.0, 1.0, 1.0], 1.7321)
    """
    if len(run_means) == 0:
        raise ValueError("spread_of_runs needs at least one run")
    first = np.zeros(np.shape(run_means[0]), np.float64)
    second = np.zeros_like(first)
    for od in run_means:
        od = np.asarray(od, np.float64)
        if od.shape != first.shape:
            raise ValueError(f"runs disagree in shape: {od.shape} and {first.shape}")
        first += od
        second += od * od
    n = len(run_means)
    mean = first / n
    variance = np.maximum(second / n - mean * mean, 0.0)
    if run_variances is not None:
        if len(run_variances) != n:
            raise ValueError(f"{len(run_variances)} run variances for {n} runs")
        variance += np.mean([np.asarray(v, np.float64) for v in run_variances], axis=0)
    return mean.astype(np.float32), np.sqrt(variance.sum(axis=-1)).astype(np.float32)


def spread_about(run_means: Sequence[np.ndarray], reference: np.ndarray,
                 run_variances: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Root-mean-square Delta E of several predictions of the same pixels from a reference stain, in CIELAB.

    The uncertainty of a stain one keeps (``reference``, e.g. the single model's stain) rather
    than of the runs' mean: ``sqrt(mean_r sum_c ((m_rc - ref_c)^2 + v_rc))``. It equals the
    spread about the mean plus the squared distance of the mean from the reference, so it is
    large both where the runs disagree and where they agree on another colour than the stain kept.
    A run equal to the reference counts, at distance 0.

    Parameters
    ----------
    run_means : sequence of ndarray
        ``(Y, X, 3)`` CIELAB of each run.
    reference : ndarray
        ``(Y, X, 3)`` CIELAB of the stain the map is measured around.
    run_variances : sequence of ndarray, optional
        ``(Y, X, 3)`` variance inside each run (over its overlapping patches).

    Returns
    -------
    ndarray
        ``(Y, X)`` float32 Delta E.

    Examples
    --------
    >>> import numpy as np
    >>> reference, other = np.zeros((1, 1, 3)), np.full((1, 1, 3), 2.0)
    >>> round(float(spread_about([reference, other], reference)[0, 0]), 4)   # sqrt((0 + 12) / 2)
    2.4495
    >>> float(spread_about([other, other], other)[0, 0])                     # runs that agree with it
    0.0
    """
    if len(run_means) == 0:
        raise ValueError("spread_about needs at least one run")
    reference = np.asarray(reference, np.float64)
    second = np.zeros(reference.shape, np.float64)
    for run in run_means:
        run = np.asarray(run, np.float64)
        if run.shape != reference.shape:
            raise ValueError(f"a run of shape {run.shape} and the reference {reference.shape} differ")
        second += (run - reference) ** 2
    second /= len(run_means)
    if run_variances is not None:
        if len(run_variances) != len(run_means):
            raise ValueError(f"{len(run_variances)} run variances for {len(run_means)} runs")
        second += np.mean([np.asarray(v, np.float64) for v in run_variances], axis=0)
    return np.sqrt(second.sum(axis=-1)).astype(np.float32)


@dataclasses.dataclass
class SlideUncertainty:
    """The stains and uncertainty maps of one slide (see :func:`slide_uncertainty`).

    Attributes
    ----------
    single : ndarray
        ``(Y, X, 3)`` uint8: the first member, untransformed, bit for bit what plain inference
        gives (:func:`vstain.volume.make_slice_stainer`).
    means : dict
        Source name -> ``(Y, X, 3)`` uint8 mean stain over that source's runs (``ensemble``:
        the ensemble mean; ``tiling``: the single stain).
    spreads : dict
        Source name -> ``(Y, X)`` float32 uncertainty in Delta E about that source's mean stain
        (:func:`spread_of_runs`).
    about_single : dict
        Source name -> ``(Y, X)`` float32 uncertainty in Delta E about the single stain
        (:func:`spread_about`): the map of the stain a user keeps.
    """

    single: np.ndarray
    means: dict[str, np.ndarray]
    spreads: dict[str, np.ndarray]
    about_single: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def stain(self, stain_from: str, source: str) -> tuple[np.ndarray, np.ndarray]:
        """The stain named by ``stain_from`` (:data:`STAINS`) and the ``source``'s map measured around it."""
        if stain_from not in STAINS:
            raise ValueError(f"stain_from must be one of {list(STAINS)}, got {stain_from!r}")
        if stain_from == "single":
            return self.single, self.about_single[source]
        return self.means[source], self.spreads[source]


def source_runs(source: str, n_members: int, n_transforms: int = len(DIHEDRAL)) -> list[tuple[int, int]]:
    """The ``(member, transform)`` runs a source of uncertainty compares.

    Examples
    --------
    >>> source_runs("ensemble", 3), len(source_runs("tta", 3)), len(source_runs("combined", 3))
    ([(0, 0), (1, 0), (2, 0)], 8, 24)
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    if source == "ensemble":
        return [(m, 0) for m in range(n_members)]
    if source == "tta":
        return [(0, t) for t in range(n_transforms)]
    if source == "tiling":
        return [(0, 0)]
    return [(m, t) for m in range(n_members) for t in range(n_transforms)]


def slide_uncertainty(
    members: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    image: np.ndarray,
    *,
    patch_size: int,
    step: int,
    batch_size: int,
    tta: bool = True,
    tiling: bool = True,
    sources: Sequence[str] | None = None,
    **infer_kwargs: Any,
) -> SlideUncertainty:
    """Stain one slide with every member under every transform and measure their spread.

    Parameters
    ----------
    members : sequence of callable
        The ensemble's CT-to-histology generators (one model's fold models; one member
        gives no ensemble spread).
    image : ndarray
        ``(Y, X, C)`` CT in network range, as the generators take it
        (:func:`vstain.infer.ct_network_channels_last`).
    patch_size, step, batch_size
        Whole-slide tiling, as :func:`vstain.infer.infer_slide`.
    tta : bool
        Run the 8 dihedral transforms (else the identity only).
    tiling : bool
        Measure the spread over overlapping patches.
    sources : sequence of str, optional
        Which of :data:`SOURCES` to report (default: every one the runs allow).
    **infer_kwargs
        ``blend``, ``device``, ``dtype``, ``in_channels`` for :func:`vstain.infer.infer_slide`.

    Returns
    -------
    SlideUncertainty
        Each source's map both about its runs' mean and about the single stain.
    """
    if len(members) == 0:
        raise ValueError("slide_uncertainty needs at least one member")
    transforms = DIHEDRAL if tta else DIHEDRAL[:1]
    if sources is None:
        wanted = {"ensemble": len(members) > 1, "tta": tta, "tiling": tiling, "combined": True}
        sources = [s for s in SOURCES if wanted[s]]
    lab: dict[tuple[int, int], np.ndarray] = {}
    var: dict[tuple[int, int], np.ndarray] = {}
    single = None
    for m, generator in enumerate(members):
        for t, (turns, flip) in enumerate(transforms):
            out = infer_slide(generator, dihedral(image, turns, flip), patch_size=patch_size, step=step,
                              batch_size=batch_size, spread_of=network_lab if tiling else None,
                              **infer_kwargs)
            blended, spread = out if tiling else (out, None)
            if (m, t) == (0, 0):  # the single stain, converted exactly as plain inference converts it
                single = network_to_histology(np.moveaxis(blended, -1, 0))
            lab[m, t] = network_lab(undo_dihedral(blended, turns, flip))
            if spread is not None:
                var[m, t] = undo_dihedral(spread, turns, flip).astype(np.float64) ** 2
    means, spreads, about = {}, {}, {}
    for source in sources:
        runs = source_runs(source, len(members), len(transforms))
        with_tiling = tiling and source in ("tiling", "combined")
        run_means = [lab[r] for r in runs]
        run_variances = [var[r] for r in runs] if with_tiling else None
        mean, spread = spread_of_runs(run_means, run_variances)
        means[source], spreads[source] = mean_stain(mean), spread
        about[source] = spread_about(run_means, lab[0, 0], run_variances)
    return SlideUncertainty(single=single, means=means, spreads=spreads, about_single=about)


def uncertain_slices(
    slices: Iterator[np.ndarray],
    stain_slice: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stain a stream of CT slices with an uncertainty stainer: ``(rgb, uncertainty)`` per slice, streaming.

    ``stain_slice`` maps one CT slice to its uint8 RGB mean stain and float32 uncertainty
    (e.g. :func:`make_uncertainty_stainer`); only one slice is held at a time, so memory
    stays flat in depth.

    Examples
    --------
    >>> import numpy as np
    >>> fake = lambda ct: (np.zeros(ct.shape + (3,), np.uint8), np.ones(ct.shape, np.float32))
    >>> [float(u.sum()) for _, u in uncertain_slices(iter([np.zeros((2, 2))] * 2), fake)]
    [4.0, 4.0]
    """
    for ct_slice in slices:
        rgb, spread = stain_slice(ct_slice)
        rgb, spread = np.asarray(rgb), np.asarray(spread, np.float32)
        if rgb.shape != ct_slice.shape + (3,) or rgb.dtype != np.uint8 or spread.shape != ct_slice.shape:
            raise ValueError(f"the uncertainty stainer returned {rgb.dtype} {rgb.shape} and {spread.shape}; "
                             f"expected uint8 {ct_slice.shape + (3,)} and {ct_slice.shape}")
        yield rgb, spread


def make_uncertainty_stainer(
    members: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    *,
    patch_size: int,
    step: int,
    batch_size: int,
    source: str = "combined",
    stain_from: str = "single",
    tta: bool = True,
    tiling: bool = True,
    invert: bool = False,
    **infer_kwargs: Any,
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A function that stains one CT slice (CT values) and returns ``(stain, uncertainty)``.

    CT values map to network range by :func:`vstain.data.ct_to_network` (as
    :func:`vstain.volume.make_slice_stainer`); slices smaller than a patch are padded by
    reflection and cropped back. ``source`` picks which uncertainty (:data:`SOURCES`);
    ``stain_from`` which stain (:data:`STAINS`): ``single`` (default) is the first member's own
    stain, bit for bit what :func:`vstain.volume.make_slice_stainer` gives with the same
    settings, with the map measured around it; ``mean`` is the mean of the source's runs with
    their spread about it.

    Examples
    --------
    >>> import numpy as np, torch
    >>> stainer = make_uncertainty_stainer([torch.nn.Identity()], patch_size=8, step=4, batch_size=4)
    >>> rgb, spread = stainer(np.full((6, 12), 65535.0, np.float32))
    >>> rgb[0, 0].tolist(), float(spread.max())
    ([255, 255, 255], 0.0)
    """
    if stain_from not in STAINS:
        raise ValueError(f"stain_from must be one of {list(STAINS)}, got {stain_from!r}")

    def stain(ct_slice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        height, width = ct_slice.shape
        pad_y, pad_x = max(0, patch_size - height), max(0, patch_size - width)
        if pad_y or pad_x:
            ct_slice = np.pad(ct_slice, ((0, pad_y), (0, pad_x)), mode="symmetric")
        net = np.asarray(ct_to_network(ct_slice, invert=invert), np.float32)
        net = np.repeat((net[0] if net.ndim == 3 else net)[..., None], 3, axis=-1)
        result = slide_uncertainty(members, net, patch_size=patch_size, step=step, batch_size=batch_size,
                                   tta=tta, tiling=tiling, sources=[source], **infer_kwargs)
        rgb, spread = result.stain(stain_from, source)
        return rgb[:height, :width], spread[:height, :width]

    return stain


#: The sub-image of an OME-Zarr stain that holds its uncertainty map.
UNCERTAINTY_IMAGE = "uncertainty"


def uncertainty_path(output: str | Path) -> Path:
    """Where the uncertainty map of a stained output is written.

    A TIFF stain gets it beside it, ``<name>_uncertainty<suffixes>``; an OME-Zarr stain holds it in
    the same store, as the OME-NGFF image ``uncertainty`` next to the stain's levels.

    Examples
    --------
    >>> uncertainty_path("out/stained.ome.zarr").as_posix(), uncertainty_path("he.tif").name
    ('out/stained.ome.zarr/uncertainty', 'he_uncertainty.tif')
    """
    output = Path(output)
    if output.suffix.lower() == ".zarr":
        return output / UNCERTAINTY_IMAGE
    stem, dot, suffixes = output.name.partition(".")
    return output.with_name(f"{stem}_uncertainty{dot}{suffixes}")


def stain_volume_uncertainty(
    source: Any,
    stain_slice: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    output: str | Path,
    *,
    sigma_voxels: float,
    uncertainty_output: str | Path | None = None,
    metadata: dict | None = None,
    overwrite: bool = False,
    progress: bool = False,
    ngff_version: str = "0.4",
) -> tuple[Path, Path]:
    """Stain a CT volume slice-wise along Z with its uncertainty, streaming; write both.

    The stain goes to ``output`` (as :func:`vstain.volume.stain_volume`), the uncertainty
    (float32, Delta E) to ``uncertainty_output`` (default :func:`uncertainty_path`)
    with the same voxel size: a TIFF stack beside a TIFF stain; for a ``.zarr`` stain (and no
    ``uncertainty_output`` given) the OME-NGFF image ``uncertainty`` inside the stain's own store,
    written before the store is complete, so neither exists without the other.
    One pass over the slices: each slice's uncertainty waits in a scratch file on disk
    while its stain is written, so memory stays flat in depth.

    Parameters
    ----------
    source : ArrayVolume, TiffVolume, ZarrVolume, ...
        Anything with ``shape``, ``voxel_size_um`` and ``read_slice(z)``.
    stain_slice : callable
        One CT slice (float32) to ``(uint8 RGB, float32 uncertainty)``, e.g. :func:`make_uncertainty_stainer`.
    output : path
        ``.tif`` or ``.zarr``.
    sigma_voxels : float
        Gaussian pre-filter (paper: 1).
    uncertainty_output : path, optional
    metadata : dict, optional
        Provenance stored in both outputs.
    overwrite : bool
        Replace existing outputs (refused otherwise, before any work).
    progress : bool
    ngff_version : {"0.4", "0.5"}
        OME-NGFF version of ``.zarr`` outputs.

    Returns
    -------
    (Path, Path)
        The stain and its uncertainty, complete.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from vstain.volume_io import ArrayVolume
    >>> vol = ArrayVolume(np.zeros((3, 8, 8), np.float32), (5.0, 5.0, 5.0))
    >>> fake = lambda ct: (np.full(ct.shape + (3,), 255, np.uint8), np.zeros(ct.shape, np.float32))
    >>> out, unc = stain_volume_uncertainty(vol, fake, pathlib.Path(tempfile.mkdtemp()) / "s.tif", sigma_voxels=1.0)
    >>> unc.name
    's_uncertainty.tif'
    """
    output = Path(output)
    inside = output.suffix.lower() == ".zarr" and uncertainty_output is None  # one store, two images
    uncertainty_output = uncertainty_path(output) if uncertainty_output is None else Path(uncertainty_output)
    for path in ((output,) if inside else (output, uncertainty_output)):
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path}: output exists; choose another path or pass --overwrite")
    output.parent.mkdir(parents=True, exist_ok=True)
    if not inside:
        uncertainty_output.parent.mkdir(parents=True, exist_ok=True)
    depth = int(source.shape[0])
    meta = {"axes": "z", "sigma_voxels": sigma_voxels, "uncertainty_unit": UNIT,
            **(metadata or {})}
    scratch = Path(tempfile.mkdtemp(prefix=".vstain-uncertainty-", dir=output.parent))
    store = RawStore(scratch / "uncertainty.raw", tuple(source.shape), np.float32)
    try:
        def stains() -> Iterator[np.ndarray]:
            slices = tqdm(filtered_slices(source, sigma_voxels), total=depth, desc="stain z + uncertainty",
                          disable=not progress, unit="slice")
            for z, (rgb, spread) in enumerate(uncertain_slices(slices, stain_slice)):
                store.write((z,), spread)
                yield rgb

        if inside:
            maps = {UNCERTAINTY_IMAGE: (lambda: (store.read((z,)) for z in range(depth)), meta)}
            write_rgb_volume(output, stains(), source.shape, source.voxel_size_um, metadata=meta,
                             overwrite=overwrite, siblings=maps, version=ngff_version)
            return output, uncertainty_output
        zarr_options = {"version": ngff_version} if output.suffix.lower() == ".zarr" else {}
        write_rgb_volume(output, stains(), source.shape, source.voxel_size_um, metadata=meta, overwrite=overwrite,
                         **zarr_options)
        try:
            write_scalar_volume(uncertainty_output, (store.read((z,)) for z in range(depth)), source.shape,
                                source.voxel_size_um, metadata=meta, overwrite=overwrite,
                                **({"version": ngff_version} if uncertainty_output.suffix.lower() == ".zarr" else {}))
        except BaseException:
            remove_path(output)  # no stain without its uncertainty
            raise
    finally:
        store.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return output, uncertainty_output


# --------------------------------------------------------------------------- measured against the truth


def _valid(uncertainty: np.ndarray, error: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    uncertainty, error = np.asarray(uncertainty, np.float64), np.asarray(error, np.float64)
    if uncertainty.shape != error.shape:
        raise ValueError(f"uncertainty {uncertainty.shape} and error {error.shape} differ in shape")
    keep = np.isfinite(uncertainty) & np.isfinite(error)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != error.shape:
            raise ValueError(f"mask {mask.shape} and error {error.shape} differ in shape")
        keep &= mask
    return uncertainty[keep], error[keep]


def rank_correlation(uncertainty: np.ndarray, error: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Spearman's rank correlation between uncertainty and actual error over the (masked) pixels.

    Ties take their average rank. NaN for fewer than 2 pixels or a constant input.

    Examples
    --------
    >>> round(rank_correlation([1, 2, 3, 4], [1, 3, 2, 4]), 3)   # 1 - 6 * 2 / (4 * 15)
    0.8
    """
    u, e = _valid(uncertainty, error, mask)
    if u.size < 2 or np.ptp(u) == 0 or np.ptp(e) == 0:
        return float("nan")
    return float(stats.spearmanr(u, e).statistic)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` ranking ``positive`` above the rest (Mann-Whitney U).

    The probability that a random positive scores higher than a random negative, ties
    counting one half. NaN when either class is empty.

    Examples
    --------
    >>> auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])   # 3 of 4 pairs ordered
    0.75
    """
    scores, positive = np.ravel(np.asarray(scores, np.float64)), np.ravel(np.asarray(positive, bool))
    if scores.shape != positive.shape:
        raise ValueError(f"scores {scores.shape} and labels {positive.shape} differ in size")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def flag_auroc(uncertainty: np.ndarray, error: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> float:
    """AUROC of flagging, by uncertainty, the pixels whose actual error exceeds ``threshold``.

    Examples
    --------
    >>> flag_auroc([0.1, 0.2, 0.9, 0.8], [0.0, 0.1, 1.0, 2.0], threshold=0.5)
    1.0
    """
    u, e = _valid(uncertainty, error, mask)
    return auroc(u, e > threshold)


def quiet_error_fraction(uncertainty: np.ndarray, error: np.ndarray, threshold: float,
                         mask: np.ndarray | None = None) -> float:
    """Of the pixels whose error exceeds ``threshold``, the fraction whose uncertainty is at most the median.

    Errors the map cannot flag: where the runs agree (less spread than half the pixels) yet the
    stain is wrong. 0.5 is what a map unrelated to the error gives; NaN without wrong pixels.

    Examples
    --------
    >>> quiet_error_fraction([1.0, 2.0, 3.0, 4.0], [30.0, 0.0, 0.0, 30.0], threshold=20.0)   # median 2.5
    0.5
    """
    u, e = _valid(uncertainty, error, mask)
    wrong = e > threshold
    if not wrong.any():
        return float("nan")
    return float(np.mean(u[wrong] <= np.median(u)))


def reliability_curve(uncertainty: np.ndarray, error: np.ndarray, n_bins: int, mask: np.ndarray | None = None,
                      threshold: float | None = None) -> pd.DataFrame:
    """Actual error per uncertainty bin: does more uncertainty mean more error?

    Bins are quantiles of the uncertainty (equal pixel counts; ties may merge bins).

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``bin, lower, upper, pixels, uncertainty`` (mean), ``error`` (mean),
        ``error_median`` and, with ``threshold``, ``above`` (fraction of pixels whose error exceeds it).

    Examples
    --------
    >>> import numpy as np
    >>> u = np.arange(10.0); e = 2 * u
    >>> reliability_curve(u, e, 2)[["pixels", "uncertainty", "error"]].values.tolist()
    [[5.0, 2.0, 4.0], [5.0, 7.0, 14.0]]
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    u, e = _valid(uncertainty, error, mask)
    columns = ["bin", "lower", "upper", "pixels", "uncertainty", "error", "error_median"] + (
        ["above"] if threshold is not None else [])
    if u.size == 0:
        return pd.DataFrame(columns=columns)
    edges = np.unique(np.quantile(u, np.linspace(0, 1, int(n_bins) + 1)))
    index = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        inside = index == b
        if not inside.any():
            continue
        row = [b, edges[b], edges[min(b + 1, len(edges) - 1)], int(inside.sum()), u[inside].mean(),
               e[inside].mean(), float(np.median(e[inside]))]
        if threshold is not None:
            row.append(float((e[inside] > threshold).mean()))
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def by_label(uncertainty: np.ndarray, error: np.ndarray, labels: np.ndarray, names: dict[str, int],
             mask: np.ndarray | None = None) -> pd.DataFrame:
    """Uncertainty and actual error per tissue class.

    Parameters
    ----------
    uncertainty, error : ndarray
        ``(Y, X)`` maps.
    labels : ndarray
        ``(Y, X)`` label codes.
    names : dict
        Class name -> label code (e.g. a subset of :data:`vstain.phantom.LABELS`).
    mask : ndarray of bool, optional
        Only these pixels count.

    Returns
    -------
    pandas.DataFrame
        One row per class present: ``tissue, pixels, uncertainty`` (mean), ``uncertainty_median``,
        ``error`` (mean), ``error_median``.

    Examples
    --------
    >>> import numpy as np
    >>> table = by_label(np.array([[1.0, 3.0]]), np.array([[0.5, 0.5]]), np.array([[1, 2]]), {"a": 1, "b": 2})
    >>> table[["tissue", "uncertainty"]].values.tolist()
    [['a', 1.0], ['b', 3.0]]
    """
    labels = np.asarray(labels)
    if labels.shape != np.shape(error):
        raise ValueError(f"labels {labels.shape} and error {np.shape(error)} differ in shape")
    rows = []
    for name, code in names.items():
        u, e = _valid(uncertainty, error, (labels == code) & (True if mask is None else np.asarray(mask, bool)))
        if u.size:
            rows.append({"tissue": name, "pixels": int(u.size), "uncertainty": float(u.mean()),
                         "uncertainty_median": float(np.median(u)), "error": float(e.mean()),
                         "error_median": float(np.median(e))})
    return pd.DataFrame(rows, columns=["tissue", "pixels", "uncertainty", "uncertainty_median", "error",
                                       "error_median"])


# --------------------------------------------------------------------------- mixing maps


def simplex_weights(n: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` non-negative weights summing to 1 on a grid of ``step``.

    Examples
    --------
    >>> simplex_weights(2, 0.5)
    [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    >>> len(simplex_weights(3, 0.1))
    66
    """
    if n < 1:
        raise ValueError(f"simplex_weights needs at least one weight, got {n}")
    parts = int(round(1.0 / step))
    if parts < 1 or not np.isclose(parts * step, 1.0):
        raise ValueError(f"step must divide 1 into whole parts, got {step}")

    def split(k: int, total: int) -> Iterator[tuple[int, ...]]:
        if k == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in split(k - 1, total - first):
                yield (first, *rest)

    return [tuple(round(p / parts, 10) for p in combo) for combo in split(n, parts)]


def mix_maps(maps: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """A weighted mean of uncertainty maps of the same pixels (Delta E in, Delta E out).

    Examples
    --------
    >>> import numpy as np
    >>> mix_maps([np.array([2.0]), np.array([4.0])], (0.25, 0.75)).tolist()
    [3.5]
    """
    if len(maps) == 0 or len(maps) != len(weights):
        raise ValueError(f"{len(maps)} maps and {len(weights)} weights: one weight per map, at least one")
    weights = np.asarray(weights, np.float64)
    if np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError(f"weights must be non-negative and not all 0, got {weights.tolist()}")
    total = np.zeros(np.shape(maps[0]), np.float64)
    for weight, values in zip(weights / weights.sum(), maps):
        if np.shape(values) != total.shape:
            raise ValueError(f"maps disagree in shape: {np.shape(values)} and {total.shape}")
        total += weight * np.asarray(values, np.float64)
    return total.astype(np.float32)


def choose_mix(candidates: dict[str, Sequence[np.ndarray]], errors: Sequence[np.ndarray], threshold: float,
               step: float = 0.1) -> tuple[dict[str, float], float]:
    """The weights of a mix of maps that best flags one stain's errors on the given (validation) slides.

    Every weight vector of :func:`simplex_weights` is scored by the median over slides of
    :func:`flag_auroc` of the mixed map against the error (slides without pixels on both sides of
    the threshold are left out); the first best wins (ties keep the order of the grid).

    Parameters
    ----------
    candidates : dict
        Map name -> one array per slide (the pixels that count, e.g. inside the mask).
    errors : sequence of ndarray
        The stain's error on the same pixels, one array per slide.
    threshold : float
        Error above which a pixel counts as wrong (Delta E).
    step : float
        Grid of the weights.

    Returns
    -------
    weights : dict
        Map name -> weight (summing to 1).
    score : float
        The median AUROC reached (NaN when no slide has pixels on both sides).

    Examples
    --------
    >>> import numpy as np
    >>> error = [np.array([0.0, 1.0, 2.0, 3.0])]
    >>> useful, noise = [np.array([0.0, 1.0, 2.0, 3.0])], [np.array([3.0, 2.0, 0.0, 1.0])]
    >>> choose_mix({"useful": useful, "noise": noise}, error, threshold=1.5, step=0.5)
    ({'useful': 1.0, 'noise': 0.0}, 1.0)
    """
    names = list(candidates)
    if not names:
        raise ValueError("choose_mix needs at least one map")
    for name in names:
        if len(candidates[name]) != len(errors):
            raise ValueError(f"map {name!r} has {len(candidates[name])} slides, the errors {len(errors)}")
    best, best_score = None, -np.inf
    for weights in simplex_weights(len(names), step):
        scores = [flag_auroc(mix_maps([candidates[n][i] for n in names], weights), errors[i], threshold)
                  for i in range(len(errors))]
        scores = [v for v in scores if np.isfinite(v)]
        score = float(np.median(scores)) if scores else float("nan")
        if best is None or (np.isfinite(score) and score > best_score):
            best, best_score = weights, score
    return dict(zip(names, best)), (best_score if np.isfinite(best_score) else float("nan"))
