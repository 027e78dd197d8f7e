"""Checkpoint files of a training run: writing, reading, checking, and rebuilding generators from them.

A checkpoint is a ``torch.save`` dictionary whose field ``format`` is :data:`CHECKPOINT_FORMAT`.
Besides the generator weights it records the model name, the architecture hyper-parameters,
which generator maps which direction (``directions``: ``G_XY`` is CT to histology), whether
the CT enters the network inverted, the patch size, the epoch, the profile, seed and code
version, so that :func:`load_generator` rebuilds a network from the file alone.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "junk.pt"
>>> save_checkpoint({"format": "something else"}, path)
>>> load_checkpoint(path)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: ...junk.pt: field format is not 'vstain-checkpoint-1' (not a vstain checkpoint)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vstain.io import atomic_path
from vstain.models import build_generator
from vstain.vocabulary import DIRECTIONS, GENERATOR_OF, MODELS_WITHOUT_REVERSE

CHECKPOINT_FORMAT = "vstain-checkpoint-1"


def save_checkpoint(record: dict[str, Any], path: str | Path) -> None:
    """Write ``record`` with :func:`torch.save`, atomically (a reader never sees half a file)."""
    with atomic_path(Path(path)) as tmp:
        torch.save(record, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file on the CPU (weights only) and check its ``format`` field.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If it cannot be unpickled or is not a vstain checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: field format is not {CHECKPOINT_FORMAT!r} (not a vstain checkpoint)")
    return checkpoint


def compare_records(expected: Any, found: Any, where: str, path: str | Path) -> None:
    """Raise a ValueError naming the first differing field of two nested records.

    Parameters
    ----------
    expected : Any
        The values of this run.
    found : Any
        The values stored in the checkpoint.
    where : str
        Dotted name of the field compared (``""`` at the top).
    path : str or Path
        The checkpoint, named in the error.

    Examples
    --------
    >>> compare_records({"a": {"b": 1}}, {"a": {"b": 2}}, "", "last.pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: last.pt: field a.b is 2 in the checkpoint but 1 for this run (a checkpoint of another ...)
    """
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in list(expected) + [k for k in found if k not in expected]:
            compare_records(expected.get(key), found.get(key), f"{where}.{key}" if where else key, path)
    elif expected != found:
        raise ValueError(f"{path}: field {where} is {found!r} in the checkpoint but {expected!r} for this run "
                         "(a checkpoint of another model or shape; delete it or pass resume=False)")


def load_generator(checkpoint_path: str | Path, direction: str = "ct_to_histology") -> tuple[torch.nn.Module, dict]:
    """Rebuild one generator from a checkpoint file alone.

    Parameters
    ----------
    checkpoint_path : path
        ``best_<component>.pt`` or ``last.pt`` of a run.
    direction : {"ct_to_histology", "histology_to_ct"}
        ``G_XY`` or ``G_YX`` (Pix2Pix has only ``ct_to_histology``).

    Returns
    -------
    generator : torch.nn.Module
        On CPU, in eval mode.
    info : dict
        ``model``, ``network`` (G_XY / G_YX), ``direction``, ``architecture``,
        ``in_channels``, ``invert_ct`` (map CT with ``ct_to_network(ct, invert=True)``
        and back with ``network_to_ct(t, invert=True)``), ``patch_size``, ``epoch``,
        ``component``, ``value``, ``fold``, ``stain``, ``profile``, ``seed``, ``provenance``.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        For an unknown direction, a file that is not a vstain checkpoint, a model without
        that direction, or weights that do not fit the recorded architecture.
    """
    path = Path(checkpoint_path)
    if direction not in GENERATOR_OF:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(GENERATOR_OF)}")
    checkpoint = load_checkpoint(path)
    network = checkpoint.get("directions", {}).get(direction)
    if network is None:
        raise ValueError(f"{path}: model {checkpoint.get('model')} has no {direction} generator "
                         f"(field directions: {checkpoint.get('directions')})")
    arch = checkpoint["architecture"]["generator"]
    generator = build_generator(arch)
    try:
        generator.load_state_dict(checkpoint["generators"][network])
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: field generators.{network} does not fit its architecture ({err})") from err
    generator.eval()
    info = {k: checkpoint.get(k) for k in ("model", "architecture", "invert_ct", "patch_size", "epoch", "component",
                                           "value", "fold", "stain", "profile", "seed", "provenance",
                                           "ct_statistics", "ct_voxel_um", "inference")}
    info.update(network=network, direction=direction, in_channels=int(arch["in_channels"]),
                out_channels=int(arch["out_channels"]), path=str(path))
    return generator, info


def load_generators(checkpoint: str | Path, model: str) -> dict[str, tuple[torch.nn.Module, dict]]:
    """The generators of a checkpoint by direction, checked against the expected ``model``.

    Parameters
    ----------
    checkpoint : str or Path
        A checkpoint file of a run.
    model : str
        The model the checkpoint must belong to; Pix2Pix has only ``ct_to_histology``.

    Returns
    -------
    dict
        ``direction -> (generator, info)`` as :func:`load_generator` returns them.

    Raises
    ------
    FileNotFoundError
        If the checkpoint file is missing.
    ValueError
        If the checkpoint belongs to another model.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found (train it: vstain train --model {model})")
    directions = DIRECTIONS[:1] if model in MODELS_WITHOUT_REVERSE else DIRECTIONS
    generators = {}
    for direction in directions:
        generator, info = load_generator(checkpoint, direction=direction)
        found = info.get("model")
        if found is not None and found != model:
            raise ValueError(f"{checkpoint}: checkpoint of model {found!r}, expected {model!r} (field 'model')")
        generators[direction] = (generator, dict(info))
    return generators
