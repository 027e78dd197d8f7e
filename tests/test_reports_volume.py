"""Chapter 07 reads the 3D stage's artefacts through vstain.reports.volume, never by file name."""

import shutil

import numpy as np
import pandas as pd
import pytest

from vstain.config import load_profile
from vstain.io import write_json, write_png, write_tiff
from vstain.layout import stage_dir, volume_dir
from vstain.manifest import load_manifest
from vstain.reports.volume import read_volume_results


def test_read_volume_results_reads_what_the_stage_wrote(smoke_dataset, tmp_path):
    profile = load_profile("smoke")
    pair_id = next(p.pair_id for p in load_manifest(smoke_dataset, verify=False).pairs if p.stain == "toluidine_blue")
    shutil.copytree(smoke_dataset.parent / pair_id, stage_dir("smoke", "dataset", tmp_path) / pair_id)
    with pytest.raises(FileNotFoundError, match=r"done.json: .*run `vstain volume --profile smoke`"):
        read_volume_results(profile, root=tmp_path)
    out = volume_dir("smoke", tmp_path)
    rng = np.random.default_rng(0)
    written = {"ct.tif": rng.uniform(0, 40000, (3, 4, 5)).astype(np.float32)}
    for name in ("stained_z.tif", "stained_zyx.tif", "truth.tif"):
        written[name] = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    for name, image in written.items():
        write_tiff(out / name, image, (2.0, 2.0, 2.0))
    write_png(out / "rendering_z.png", np.full((6, 7, 4), 200, np.uint8))
    pd.DataFrame({"variant": ["truth"], "ssim": [1.0]}).to_csv(out / "metrics.csv", index=False)
    write_json(out / "done.json", {"pair_id": pair_id, "material": "Mg", "rendering": {"z": "rendered"}})
    results = read_volume_results(profile, root=tmp_path)
    assert results["done"]["pair_id"] == pair_id and results["voxel"] == (2.0, 2.0, 2.0)
    for key, name in {"ct": "ct.tif", "single": "stained_z.tif", "fused": "stained_zyx.tif",
                      "truth": "truth.tif"}.items():
        assert np.array_equal(results[key], written[name]), key
    assert results["metrics"]["variant"].tolist() == ["truth"]
    assert results["renderings"]["z"].shape[:2] == (6, 7) and results["renderings"]["zyx"] is None
    assert results["sample"].pair_id == pair_id
    section = results["section"]
    assert section.histology.dtype == np.uint8 and section.ct.shape == section.histology.shape[:2]
