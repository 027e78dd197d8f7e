"""Registered image pairs: the contract between registration and everything after it.

A registered pair is a CT slice and a histology image at the same (CT) pixel size,
cropped to their common field of view, with the sample-correspondence mask. On disk
one pair is one folder::

    <pair_id>/ct.tif          uint16, normalised CT slice (bone 30000, background 10000)
    <pair_id>/histology.tif   uint8 RGB, normalised histology
    <pair_id>/mask.tif        uint8, 1 inside the sample-correspondence mask
    <pair_id>/pair.json       id, material, stain, provenance, extras

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> pair = RegisteredPair("p0", "Mg", "toluidine_blue", np.zeros((8, 8), np.uint16),
...                       np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), bool), 5.0)
>>> folder = pathlib.Path(tempfile.mkdtemp()) / "p0"
>>> write_registered_pair(folder, pair)
>>> read_registered_pair(folder).material
'Mg'
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from vstain.io import read_tiff, write_json, write_tiff


@dataclasses.dataclass
class RegisteredPair:
    """One registered, normalised, masked CT / histology pair at CT pixel size."""

    pair_id: str
    material: str
    stain: str
    ct: np.ndarray  # (Y, X) uint16 (normalised) or float32
    histology: np.ndarray  # (Y, X, 3) uint8
    mask: np.ndarray  # (Y, X) bool
    pixel_size_um: float
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ct.ndim != 2:
            raise ValueError(f"pair {self.pair_id}: ct must be 2D, got shape {self.ct.shape}")
        if self.histology.shape != self.ct.shape + (3,) or self.histology.dtype != np.uint8:
            raise ValueError(
                f"pair {self.pair_id}: histology must be uint8 of shape {self.ct.shape + (3,)}, "
                f"got {self.histology.dtype} {self.histology.shape}"
            )
        if self.mask.shape != self.ct.shape:
            raise ValueError(f"pair {self.pair_id}: mask shape {self.mask.shape} != ct shape {self.ct.shape}")
        self.mask = self.mask.astype(bool)


def write_registered_pair(folder: str | Path, pair: RegisteredPair, provenance: dict | None = None) -> None:
    """Write one pair's folder; each file is written atomically, ``pair.json`` last."""
    folder = Path(folder)
    meta = {"pair_id": pair.pair_id, "material": pair.material, "stain": pair.stain}
    write_tiff(folder / "ct.tif", pair.ct, pair.pixel_size_um, metadata=provenance)
    write_tiff(folder / "histology.tif", pair.histology, pair.pixel_size_um, metadata=provenance)
    write_tiff(folder / "mask.tif", pair.mask.astype(np.uint8), pair.pixel_size_um, metadata=provenance)
    # pair.json is written last: its presence marks the folder as complete.
    write_json(folder / "pair.json", {**meta, "pixel_size_um": pair.pixel_size_um,
                                      "extras": pair.extras, "provenance": provenance or {}})


def read_registered_pair(folder: str | Path) -> RegisteredPair:
    """Read a pair folder written by :func:`write_registered_pair`."""
    folder = Path(folder)
    meta_path = folder / "pair.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not found (the pair folder is missing or incomplete)")
    meta = json.loads(meta_path.read_text())
    ct, size, _ = read_tiff(folder / "ct.tif")
    histology, _, _ = read_tiff(folder / "histology.tif")
    mask, _, _ = read_tiff(folder / "mask.tif")
    return RegisteredPair(meta["pair_id"], meta["material"], meta["stain"], ct, histology,
                          mask.astype(bool), float(size[-1]), meta.get("extras", {}))
