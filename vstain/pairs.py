"""Registered image pairs: the contract between registration and everything after it.

This module also answers the questions every later stage asks of the split and of the
registered folder: which role a pair has in a fold (:func:`split_roles`), which pairs are
registered (:func:`registered_pair_ids`), the pairs of one fold and role
(:func:`load_fold_pairs`), and a table of all of them (:func:`pair_catalogue`).

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
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vstain.io import read_tiff, sha256_file, write_json, write_tiff
from vstain.layout import default_manifest_path, registered_dir, split_path, stage_dir
from vstain.manifest import Manifest, load_manifest, pairs_in_role, read_split
from vstain.vocabulary import ROLES, STAINS, check_word

PAIR_FILES = ("pair.json", "ct.tif", "histology.tif", "mask.tif")


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


def registered_fingerprint(folder: str | Path) -> str:
    """SHA-256 over a registered pair's files: later stages redo their work when registration changes them."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in PAIR_FILES:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: registered pair file not found (re-run the registration stage)")
        digest.update(name.encode())
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


# --------------------------------------------------------------------------- the split and the registered folder


def profile_manifest(profile_name: str, root: str | Path | None = None) -> Manifest | None:
    """The manifest the stages use for a profile, read without checksums; None when there is none yet.

    That is the data manifest (:func:`vstain.layout.default_manifest_path`) when it lists pairs,
    else (``source: synthetic`` with no pairs) the generated ``results/<profile>/dataset/manifest.yaml``,
    as :func:`vstain.stages.dataset.resolve_manifest` resolves it, but without generating anything.
    """
    data = default_manifest_path()
    if data.is_file():
        manifest = load_manifest(data, verify=False)
        if manifest.pairs or manifest.source != "synthetic":
            return manifest
    generated = stage_dir(profile_name, "dataset", root) / "manifest.yaml"
    return load_manifest(generated, verify=False) if generated.is_file() else None


def read_profile_split(profile_name: str, root: str | Path | None = None) -> pd.DataFrame:
    """``results/<profile>/dataset/split.csv``, read, validated and checked against the profile's manifest.

    Every stage reads the split here, so a split that contradicts the manifest the stages use
    (:func:`profile_manifest`), e.g. a test pair listed for training, stops every stage
    (:func:`vstain.manifest.read_split`; the error names both files and the pair).
    """
    path = split_path(profile_name, root)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split not found; generate or check the dataset first "
                                f"(vstain check-manifest --profile {profile_name})")
    manifest = profile_manifest(profile_name, root)
    return read_split(path, manifest) if manifest is not None else read_split(path)


def split_roles(profile_name: str, fold: int, stain: str | None = None,
                root: str | Path | None = None) -> dict[str, str]:
    """``pair_id -> role`` (train / validation / test) of one fold, optionally of one stain only."""
    split = read_profile_split(profile_name, root)
    column = f"fold{int(fold)}"
    if column not in split.columns:
        folds = [c for c in split.columns if c.startswith("fold")]
        raise ValueError(f"{split_path(profile_name, root)}: no column {column!r} (the split has {folds})")
    if stain is not None:
        split = split[split["stain"] == check_word(stain, STAINS, "stain")]
    return dict(zip(split["pair_id"].astype(str), split[column].astype(str)))


def fold_pair_ids(profile_name: str, fold: int, role: str, stain: str = "toluidine_blue",
                  root: str | Path | None = None, *, split: pd.DataFrame | None = None) -> list[str]:
    """The pair ids of one fold and role (train / validation / test) for ``stain``, in split order.

    ``split``: the profile's split as :func:`read_profile_split` returned it, when the caller has read it.
    """
    check_word(role, ROLES, "role")
    split = read_profile_split(profile_name, root) if split is None else split
    return pairs_in_role(split, fold, role, stain=check_word(stain, STAINS, "stain"))


def registered_pair_ids(profile_name: str, stain: str | None = "toluidine_blue",
                        root: str | Path | None = None) -> list[str]:
    """The complete registered pairs of a profile (``pair.json`` present), optionally of one stain."""
    folder = registered_dir(profile_name, root)
    ids = []
    for meta in sorted(folder.glob("*/pair.json")):
        if stain is None or json.loads(meta.read_text()).get("stain") == stain:
            ids.append(meta.parent.name)
    return ids


def left_out_pairs(profile_name: str, root: str | Path | None = None) -> dict[str, str]:
    """Pairs the registration stage recorded as uncertain or failed: ``pair_id -> status`` (``registration.csv``).

    Such pairs have no folder under ``registered/`` and are left out of every later stage.
    """
    table = registered_dir(profile_name, root) / "registration.csv"
    if not table.is_file():
        return {}
    frame = pd.read_csv(table, dtype={"pair_id": str}, usecols=lambda c: c in ("pair_id", "status"))
    if "status" not in frame:
        return {}
    bad = frame[~frame["status"].astype(str).str.startswith("ok")]
    return dict(zip(bad["pair_id"], bad["status"].astype(str)))


def load_fold_pairs(profile_name: str, fold: int, role: str = "train", stain: str = "toluidine_blue",
                    root: str | Path | None = None, *, split: pd.DataFrame | None = None) -> list[RegisteredPair]:
    """The registered pairs of one fold and role, read from ``results/<profile>/registered/``.

    Pairs the registration stage recorded as uncertain or failed (:func:`left_out_pairs`) are left out,
    with a warning that names them: a fit registration is not sure of never reaches training or Table 1.

    ``split``: the profile's split as :func:`read_profile_split` returned it, when the caller has read it.

    Raises
    ------
    ValueError
        If the split has no pair of that stain and role in the fold, or registration left out all of them.
    FileNotFoundError
        If a pair of the split is not registered and not recorded as left out (its folder names the first).
    """
    ids = fold_pair_ids(profile_name, fold, role, stain, root, split=split)
    if not ids:
        raise ValueError(f"{split_path(profile_name, root)}: no {stain} pairs with role {role!r} in fold {fold}")
    registered = registered_dir(profile_name, root)
    left_out = {pid: status for pid, status in left_out_pairs(profile_name, root).items() if pid in ids}
    if left_out:
        warnings.warn(f"fold {fold} {role}: {len(left_out)} of {len(ids)} {stain} pairs left out, registration "
                      f"not sure of them: {', '.join(sorted(left_out))} ({registered / 'registration.csv'})",
                      stacklevel=2)
        ids = [pid for pid in ids if pid not in left_out]
        if not ids:
            raise ValueError(f"{registered / 'registration.csv'}: every {stain} pair with role {role!r} in fold "
                             f"{fold} was left out by registration (uncertain or failed)")
    missing = [pid for pid in ids if not (registered / pid / "pair.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{registered / missing[0] / 'pair.json'}: registered pair missing "
                                f"({len(missing)} of {len(ids)}); run vstain register --profile {profile_name}")
    return [read_registered_pair(registered / pid) for pid in ids]


def pair_catalogue(profile_name: str, fold: int, stain: str = "toluidine_blue",
                   root: str | Path | None = None) -> pd.DataFrame:
    """The registered pairs of a profile with their material and split role in ``fold``.

    Returns a DataFrame ``pair_id, material, stain, role`` ordered by role (train, validation,
    test) and pair id; a registered pair missing from the split has role ``unknown``.
    """
    roles = split_roles(profile_name, fold, root=root)
    registered = registered_dir(profile_name, root)
    rows = []
    for pair_id in registered_pair_ids(profile_name, stain, root):
        meta = json.loads((registered / pair_id / "pair.json").read_text())
        rows.append({"pair_id": pair_id, "material": meta.get("material"), "stain": meta.get("stain"),
                     "role": roles.get(pair_id, "unknown")})
    table = pd.DataFrame(rows, columns=["pair_id", "material", "stain", "role"])
    order = {role: i for i, role in enumerate(ROLES)}
    table["_r"] = table["role"].map(lambda r: order.get(r, len(ROLES)))
    return table.sort_values(["_r", "pair_id"]).drop(columns="_r").reset_index(drop=True)
