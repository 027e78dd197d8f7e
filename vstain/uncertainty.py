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

Measured against the truth (in :mod:`vstain.uncertainty_measures`): :func:`rank_correlation` (Spearman), :func:`flag_auroc` (how well
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
import torch
from tqdm.auto import tqdm

from vstain.data import ct_to_network, network_to_histology
from vstain.infer import infer_slide, with_channels
from skimage.color import lab2rgb, rgb2lab

from vstain.io import remove_path
from vstain.volume import filtered_slices
from vstain.volume_io import RawStore, write_rgb_volume, write_scalar_volume
# the measures against the truth and the mixing of maps live in their own part; their names are this module's too
from vstain.uncertainty_measures import (auroc, by_label, choose_mix, flag_auroc, mix_maps,  # noqa: F401
                                         quiet_error_fraction, rank_correlation, reliability_curve,
                                         simplex_weights)

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
    in_channels: int | None = None,
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
    in_channels : int, optional
        The generators' input channels: a single-channel slide is repeated to them
        (:func:`vstain.infer.with_channels`).
    **infer_kwargs
        ``blend``, ``device``, ``dtype`` for :func:`vstain.infer.infer_slide`.

    Returns
    -------
    SlideUncertainty
        Each source's map both about its runs' mean and about the single stain.
    """
    if len(members) == 0:
        raise ValueError("slide_uncertainty needs at least one member")
    if in_channels is not None:
        image = with_channels(image, in_channels)
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


