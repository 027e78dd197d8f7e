"""The "Use your own data" page (book/own_data.md): its walkthrough of each format runs as written.

The page's Python blocks are run in order in a temporary folder, with a tiny generator checkpoint in place of
the trained run the page names; what they print is checked: the same voxels and voxel size from a folder of slice
TIFFs and an HDF5 dataset, the pyramid level read from an OME-TIFF, the normalisation found, and the warning a
volume taken as normalised gets (and the automatically normalised one does not).
"""

import os
import re
import sys
from pathlib import Path

import pytest

from tests.test_stain_cli import make_checkpoint
from vstain.volume_io import validate_ome_zarr

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "own_data.md"


def page_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_page_has_a_block_per_format():
    code = "\n".join(page_blocks())
    for needle in ("open_volume(work / \"slices\"", ":/exchange/data", "write_pyramid", "read_slide",
                   "choose_ct_normalisation", "--ct-normalisation", "stain_volume(ct, checkpoint"):
        assert needle in code, needle


def test_own_data_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    checkpoint = make_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    namespace: dict = {}
    for block in page_blocks():
        block = re.sub(r'^checkpoint = .*$', f'checkpoint = "{checkpoint}"', block, flags=re.M)
        exec(compile(block, str(PAGE), "exec"), namespace)  # noqa: S102 - the page's own code
    out = capsys.readouterr().out
    assert "slice folder: (8, 96, 96) (5.0, 5.0, 5.0)" in out
    assert "HDF5 dataset: (8, 96, 96) (5.0, 5.0, 5.0)" in out
    assert re.search(r"slide: level 2 of 3, 256 x 192 px at 1\.76 µm \(OME-XML PhysicalSizeX\)", out)
    found = re.search(r"bone (\d+) -> 30000, background (\d+) -> 10000", out)
    assert found and abs(int(found[1]) - 44000) < 1000 and abs(int(found[2]) - 23000) < 1000
    none_line = next(line for line in out.splitlines() if line.startswith("--ct-normalisation none"))
    auto_line = next(line for line in out.splitlines() if line.startswith("automatic normalisation"))
    assert "taken as normalised" in none_line and "slices" in none_line
    assert "taken as normalised" not in auto_line
    assert (tmp_path / "own_data_example" / "stained.tif").is_file()
    assert "API: (8, 96, 96, 3) uint8" in out and "OME-Zarr: stained.zarr with uncertainty" in out
    assert namespace["one"].shape == (96, 96, 3)
    validate_ome_zarr(tmp_path / "own_data_example" / "stained.zarr")
    validate_ome_zarr(tmp_path / "own_data_example" / "stained.zarr" / "uncertainty")


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
