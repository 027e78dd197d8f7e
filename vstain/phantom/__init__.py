"""The synthetic bone-implant dataset with ground truth (the study's embedded default data).

Additions to the shared contract (nothing in it is changed): ``PhantomSample`` also carries
``ct_params`` (the beamtime's X-ray settings), ``artefacts`` (uint8 map of histology-only
artefacts: 1 crack, 2 stain droplet, 3 lost tissue) and ``details`` (seed, drawn affine
parameters, plane tilt), and a ``plane_shape`` property; ``section_labels`` include the soft
tissue's shift and retraction from bone (tissue as seen in the section), but no cracks, saw
marks or droplets; ``ground_truth_pair`` takes the normalisation constants as keyword
arguments (default: the paper's 30000 / 10000, c = c' = 5) and records ``crop_origin_ij`` in
``extras``; in ``split.csv`` the H&E validation/testing pairs (paper S2.1) are ``test`` in every
fold column and the other H&E pairs ``train``; the dataset stage
(:func:`vstain.stages.dataset.generate_dataset`) also writes ``dataset.json`` (provenance, generation time).

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
perfect registration), :mod:`~vstain.phantom.dataset` (the dataset's plan, sample folders).
The dataset stage :mod:`vstain.stages.dataset` writes the whole dataset, its manifest and split
(``vstain phantom``).

Examples
--------
>>> from vstain.phantom import LABELS, make_sample
>>> LABELS["screw"]
5
"""

from vstain.phantom.ct import beamtime_params, simulate_ct
from vstain.phantom.dataset import dataset_plan, load_sample, write_sample
from vstain.phantom.labels import LABEL_COLOURS, LABELS, MATERIALS, STAINS, label_colormap, label_name
from vstain.phantom.sample import (PhantomSample, ground_truth_labels, ground_truth_pair, label_means, make_sample,
                                   plane_grid, plane_height, screw_contrast)
from vstain.phantom.stain import session_params, stain_labels

__all__ = [
    "LABEL_COLOURS", "LABELS", "MATERIALS", "STAINS", "PhantomSample", "beamtime_params", "dataset_plan",
    "ground_truth_labels", "ground_truth_pair", "label_colormap", "label_means", "label_name", "load_sample", "make_sample", "plane_grid",
    "plane_height", "screw_contrast", "session_params", "simulate_ct", "stain_labels", "write_sample",
]
