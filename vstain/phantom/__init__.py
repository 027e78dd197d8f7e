"""The synthetic bone-implant dataset with ground truth (the study's embedded default data).

The paper's data are not public, so the study runs on pairs generated here,
deterministically from a seed. Each pair is a CT volume of a bone-implant block
(a trephine cylinder of bone in a sample tube, a threaded Mg, Ti or PEEK screw
along x, cortical and trabecular bone with vessels and lacunae, marrow, new bone
and for Mg a degradation layer) and a toluidine-blue or H&E section cut from it
on a slightly oblique plane near the screw axis, with the ground truth of the
tissue labels, the plane and the slide's affine distortion.

Modules: :mod:`~vstain.phantom.labels` (label codes), :mod:`~vstain.phantom.geometry`
(the block), :mod:`~vstain.phantom.ct` (X-ray forward model),
:mod:`~vstain.phantom.stain` (Beer-Lambert stain model), :mod:`~vstain.phantom.section`
(plane, affine, histology artefacts), :mod:`~vstain.phantom.sample` (one pair, the
perfect registration), :mod:`~vstain.phantom.dataset` (files, manifest, split),
:mod:`~vstain.phantom.cli` (``vstain phantom``).

Examples
--------
>>> from vstain.phantom import LABELS, make_sample
>>> LABELS["screw"]
5
"""

from vstain.phantom.ct import beamtime_params, simulate_ct
from vstain.phantom.dataset import dataset_plan, dataset_summary, ensure_dataset, generate_dataset, load_sample, write_sample
from vstain.phantom.labels import LABEL_COLOURS, LABELS, MATERIALS, STAINS, label_colormap, label_name
from vstain.phantom.sample import (PhantomSample, ground_truth_pair, label_means, make_sample, plane_grid,
                                   plane_height)
from vstain.phantom.stain import session_params, stain_labels

__all__ = [
    "LABEL_COLOURS", "LABELS", "MATERIALS", "dataset_summary", "label_colormap", "label_means", "plane_height", "STAINS", "PhantomSample", "beamtime_params", "dataset_plan", "ensure_dataset",
    "generate_dataset", "ground_truth_pair", "label_name", "load_sample", "make_sample", "plane_grid",
    "session_params", "simulate_ct", "stain_labels", "write_sample",
]
