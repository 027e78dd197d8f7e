"""Quick looks at a trained model and the choice of its checkpoint: a pair stained whole (:func:`stain_pair`), SSIM
and PSNR on validation pairs beside the raw-CT baseline (:func:`validation_scores`), the checkpoint a rule selects
(:func:`select_checkpoint`, :data:`SELECTION_RULES`), training patch panels (:func:`patch_panels`).

Part of :mod:`vstain.train`, which re-exports every name here.

Examples
--------
>>> SELECTION_RULES
('validation_ssim', 'validation_psnr', 'last')
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from vstain.data import PatchSampler, network_to_ct, network_to_histology
from vstain.infer import ct_to_histology_slide
from vstain.masks import apply_mask, background_fill
from vstain.metrics import psnr, raw_ct_as_rgb, ssim
from vstain.models.checkpoint import load_checkpoint, load_generator
from vstain.pairs import RegisteredPair


# --------------------------------------------------------------------------- quick looks at a trained model


def _mask_box(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def stain_pair(checkpoint_path: str | Path, pair: RegisteredPair, patch_size: int, step: int,
               batch_size: int = 16) -> np.ndarray:
    """The generated histology (uint8 RGB) of a whole pair's CT by overlapping patch inference.

    Parameters
    ----------
    checkpoint_path : path
        A checkpoint of a run (its CT-to-histology generator is used).
    pair : RegisteredPair
    patch_size, step, batch_size : int
        As :func:`vstain.infer.infer_slide`.

    Returns
    -------
    ndarray
        ``(Y, X, 3)`` uint8.
    """
    generator, info = load_generator(checkpoint_path, "ct_to_histology")
    return ct_to_histology_slide(generator, pair.ct, patch_size=patch_size, step=step, batch_size=batch_size,
                                 info=info)


def validation_scores(checkpoint_path: str | Path, pairs: Sequence[RegisteredPair], patch_size: int, step: int,
                      batch_size: int = 16) -> pd.DataFrame:
    """SSIM and PSNR of generated vs real histology per pair, next to the raw CT vs histology baseline.

    A quick check of a training run (the full evaluation with LPIPS and 256 px patches is
    ``vstain.metrics``): each whole pair is stained by overlapping patches; outside the
    sample-correspondence mask every image is replaced by the real image's mean
    background value (paper 2.8: outputs are shown masked; the masked losses never
    trained there), and both scores are computed on the bounding box of the mask.

    Returns
    -------
    DataFrame
        ``pair_id, material, ssim, psnr, ssim_baseline, psnr_baseline``.
    """
    rows = []
    for pair in pairs:
        generated = stain_pair(checkpoint_path, pair, patch_size, step, batch_size)
        box = _mask_box(pair.mask)
        fill = background_fill(pair.histology, pair.mask)
        ct_rgb = raw_ct_as_rgb(pair.ct)
        real = apply_mask(pair.histology, pair.mask, fill)[box]
        fake = apply_mask(generated, pair.mask, fill)[box]
        ct_rgb = apply_mask(ct_rgb, pair.mask, background_fill(ct_rgb, pair.mask))[box]
        rows.append({"pair_id": pair.pair_id, "material": pair.material, "ssim": ssim(real, fake),
                     "psnr": psnr(real, fake), "ssim_baseline": ssim(real, ct_rgb), "psnr_baseline": psnr(real, ct_rgb)})
    return pd.DataFrame(rows)


#: Checkpoint selection rules (profile ``training.checkpoint_selection``).
SELECTION_RULES = ("validation_ssim", "validation_psnr", "last")


def run_checkpoints(run_dir: str | Path) -> dict[str, Path]:
    """The checkpoints a training run saved: ``last`` first, then ``best_<component>`` in name order."""
    run_dir = Path(run_dir)
    found = {"last": run_dir / "last.pt"} if (run_dir / "last.pt").is_file() else {}
    found.update({p.stem: p for p in sorted(run_dir.glob("best_*.pt"))})
    return found


def select_checkpoint(candidates: dict[str, Path], validation_pairs: Sequence[RegisteredPair], rule: str,
                      patch_size: int, step: int) -> tuple[str, pd.DataFrame]:
    """Choose the checkpoint that stains the fold's validation pairs best (paper 2.6.3, 2.10).

    The paper saves a checkpoint at the minimum of each generator loss component "for later
    evaluation" without saying which one its Table 1 uses; here each candidate stains the
    validation pairs whole (:func:`validation_scores`) and the best median SSIM (or PSNR) wins;
    ties go to the earlier candidate (``last`` first). The test pairs never take part.

    Parameters
    ----------
    candidates : dict
        ``name -> checkpoint path`` (:func:`run_checkpoints`).
    validation_pairs : sequence of RegisteredPair
    rule : {"validation_ssim", "validation_psnr", "last"}
    patch_size, step : int
        Whole-slide inference tiling.

    Returns
    -------
    chosen : str
        The chosen candidate's name.
    table : DataFrame
        ``candidate, median_ssim, median_psnr, n_pairs`` (empty for ``rule="last"``).
    """
    if rule not in SELECTION_RULES:
        raise ValueError(f"checkpoint selection rule must be one of {SELECTION_RULES}, got {rule!r}")
    if "last" not in candidates:
        raise ValueError("no last checkpoint among the candidates: the run is not finished")
    columns = ["candidate", "median_ssim", "median_psnr", "n_pairs"]
    if rule == "last":
        return "last", pd.DataFrame(columns=columns)
    if not validation_pairs:
        raise ValueError("checkpoint selection needs validation pairs (or training.checkpoint_selection: last)")
    rows = []
    for name, path in candidates.items():
        scores = validation_scores(path, validation_pairs, patch_size, step)
        rows.append({"candidate": name, "median_ssim": float(scores["ssim"].median()),
                     "median_psnr": float(scores["psnr"].median()), "n_pairs": len(scores)})
    table = pd.DataFrame(rows, columns=columns)
    metric = "median_ssim" if rule == "validation_ssim" else "median_psnr"
    chosen = str(table.loc[table[metric].idxmax(), "candidate"])  # idxmax: the first of equal maxima
    return chosen, table


def patch_panels(checkpoint_path: str | Path, pairs: Sequence[RegisteredPair], patch_size: int, n: int = 4,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Fig. 4a-style patches: real CT, generated histology, mask, real histology, generated CT.

    ``n`` patches at random positions (no augmentation) of ``pairs``; returns
    ``real_ct`` (n, P, P) float in [0, 1] of the 16-bit range, ``generated_histology``
    (n, P, P, 3) uint8, ``mask`` (n, P, P) bool, ``real_histology`` (n, P, P, 3) uint8 and,
    for the CycleGANs, ``generated_ct`` (n, P, P) like ``real_ct``.
    """
    g_xy, info = load_generator(checkpoint_path, "ct_to_histology")
    invert = bool(info["invert_ct"])
    sampler = PatchSampler(pairs, patch_size, max(1, -(-n // len(pairs))), n, seed, augmentation=None, invert_ct=invert)
    batch = next(iter(sampler.epoch(0)))
    with torch.no_grad():
        panels = {
            "real_ct": network_to_ct(batch["x"], invert=invert).astype(np.float32) / 65535.0,
            "generated_histology": network_to_histology(g_xy(batch["x"])),
            "mask": batch["mask"][:, 0].numpy().astype(bool),
            "real_histology": network_to_histology(batch["y"]),
        }
        if "histology_to_ct" in load_checkpoint(checkpoint_path)["directions"]:
            g_yx, _ = load_generator(checkpoint_path, "histology_to_ct")
            panels["generated_ct"] = network_to_ct(g_yx(batch["y"]), invert=invert).astype(np.float32) / 65535.0
    return panels


def validation_medians(scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Median SSIM and PSNR (and their raw-CT baselines) per model of :func:`validation_scores` tables.

    Parameters
    ----------
    scores : dict
        ``model -> validation_scores(...)`` table.

    Returns
    -------
    DataFrame
        Indexed by model: ``ssim, psnr, ssim_baseline, psnr_baseline``.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"ssim": [0.2, 0.4], "psnr": [10.0, 12.0], "ssim_baseline": [0.1, 0.1],
    ...                       "psnr_baseline": [5.0, 7.0]})
    >>> validation_medians({"pix2pix": table}).loc["pix2pix"].tolist()
    [0.30000000000000004, 11.0, 0.1, 6.0]
    """
    table = pd.concat([s.assign(model=n) for n, s in scores.items()], ignore_index=True)
    return table.groupby("model")[["ssim", "psnr", "ssim_baseline", "psnr_baseline"]].median()
