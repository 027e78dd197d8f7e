"""What chapter 07 shows of the 3D stage, read from ``results/<profile>/volume/`` (``vstain volume`` wrote it).

The chapter reads the stage's artefacts through :func:`read_volume_results`, never by file name: the
record (``done.json``), the normalised CT, both stained volumes, the true stained volume, the scores
(``metrics.csv``), the renderings where they were made, and the phantom sample with its ground-truth
section (the inset beside the stained volume).

Examples
--------
>>> import tempfile
>>> from vstain.config import load_profile
>>> try:
...     read_volume_results(load_profile("smoke"), root=tempfile.mkdtemp())
... except FileNotFoundError as err:
...     print(str(err).split("; ")[-1])
run `vstain volume --profile smoke` (or the workflow) first
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.image
import pandas as pd

from vstain.io import read_tiff
from vstain.layout import stage_dir, volume_dir
from vstain.phantom import ground_truth_pair, load_sample

__all__ = ["VOLUMES", "read_volume_results"]

#: The volumes the stage writes: result key -> file in ``results/<profile>/volume/``.
VOLUMES = {"ct": "ct.tif", "single": "stained_z.tif", "fused": "stained_zyx.tif", "truth": "truth.tif"}


def read_volume_results(profile: Any, root: str | Path | None = None) -> dict[str, Any]:
    """The 3D stage's results of a profile, as chapter 07 shows them.

    Parameters
    ----------
    profile : Profile
        Its name finds the results; its ``normalisation`` section normalises the ground-truth section.
    root : path, optional
        Results root (default :func:`vstain.layout.results_root`).

    Returns
    -------
    dict
        ``done`` (the stage's record: ``pair_id``, ``material``, ``rendering``, ``sample_fraction`` ...),
        ``ct`` (normalised CT), ``single`` and ``fused`` (stained along Z / along Z, Y, X fused), ``truth``
        (the true stained volume), ``voxel`` (voxel size in um, z y x), ``metrics`` (``metrics.csv``),
        ``renderings`` (``{"z": RGBA image or None, "zyx": ...}``, None where the stage skipped it),
        ``sample`` (the phantom sample) and ``section`` (its ground-truth pair, normalised as in paper 2.5).

    Raises
    ------
    FileNotFoundError
        When the stage has not run, naming its record and the command that runs it.
    """
    out = volume_dir(profile.name, root)
    record = out / "done.json"
    if not record.is_file():
        raise FileNotFoundError(f"{record}: no results of the 3D stage; run `vstain volume --profile {profile.name}` "
                                "(or the workflow) first")
    done = json.loads(record.read_text())
    results: dict[str, Any] = {"done": done}
    for key, name in VOLUMES.items():
        image, voxel, _ = read_tiff(out / name)
        results[key] = image
        if key == "ct":
            results["voxel"] = voxel
    results["metrics"] = pd.read_csv(out / "metrics.csv")
    pngs = {axes: out / f"rendering_{axes}.png" for axes in ("z", "zyx")}
    results["renderings"] = {axes: matplotlib.image.imread(png) if png.is_file() else None
                             for axes, png in pngs.items()}
    sample = load_sample(stage_dir(profile.name, "dataset", root) / done["pair_id"])
    n = profile.normalisation
    results["sample"] = sample
    results["section"] = ground_truth_pair(sample, ct_bone_mean=n.ct_bone_mean, ct_background_mean=n.ct_background_mean,
                                           c_low=n.histology_c_low, c_high=n.histology_c_high)
    return results
