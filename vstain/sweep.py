"""The misalignment sweep: the runs that test the paper's claim, and how each run differs from the others.

The paper explains why its modified CycleGAN beats Pix2Pix: Pix2Pix's L1 term (Eq. 9) compares the
generated stain with a section that is only partly aligned with the CT (soft tissue deformed in
preparation, cracks formed after the scan), while cycle consistency (Eq. 1) compares a network's
output with its own input, always aligned. Its data have one, unknown, level of misalignment; the
phantom's is a dial (``dataset.misalignment_strength``). The sweep trains each model at several
strengths with several seeds, and the modified CycleGAN without its pixelwise (Eq. 5) and greyscale
(Eq. 6) terms at one strength, so the claim and its explanation can be tested with intervals
(:mod:`vstain.reports.sweep`).

A run is one network: a strength (``level``), an *arm* (a model name, or ``mod_cyclegan_<ablation>``)
and a seed index. The same seed index gives the same initialisation and patch draws at every
strength, and the same blocks are cut at every strength: what changes between two strengths is the
preparation of the sections alone.

Examples
--------
>>> from vstain.config import load_profile
>>> cfg = load_profile("quick").sweep
>>> len(sweep_runs(cfg)), arms_at(cfg, 2.0)
(30, ['mod_cyclegan', 'pix2pix', 'mod_cyclegan_no_px', 'mod_cyclegan_no_gs'])
>>> level_name(2.0), parse_level("2", cfg.levels)
('2', 2.0)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from vstain.vocabulary import ABLATED_MODEL, ABLATION_LABELS, ABLATIONS, MODEL_LABELS, MODEL_NAMES

#: The two targets a sweep run is scored against: the prepared section (the paper's protocol, 2.10) and
#: the section's aligned twin (the stain where the CT says the tissue is: what a user wants).
TARGETS = ("section", "twin")


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One network of the sweep: a misalignment strength, an arm and a seed index."""

    level: float
    arm: str
    seed: int

    @property
    def model(self) -> str:
        """The network the arm trains (an ablation trains the modified CycleGAN)."""
        return arm_model(self.arm)


def level_name(level: float) -> str:
    """A strength as it is written in folder names and on the command line (``2.0`` -> ``"2"``)."""
    return f"{float(level):g}"


def parse_level(text: str | float, levels: Sequence[float]) -> float:
    """The strength of ``levels`` that ``text`` names, or a ValueError listing them.

    Examples
    --------
    >>> parse_level("0.5", [0.0, 0.5])
    0.5
    >>> parse_level("7", [0.0, 0.5])
    Traceback (most recent call last):
    ...
    ValueError: misalignment strength 7 is not swept by this profile; sweep.levels: 0, 0.5
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    for level in levels:
        if np.isclose(level, value):
            return float(level)
    raise ValueError(f"misalignment strength {text} is not swept by this profile; sweep.levels: "
                     f"{', '.join(level_name(v) for v in levels)}")


def ablation_arm(ablation: str) -> str:
    """The arm name of an ablation (``"no_px"`` -> ``"mod_cyclegan_no_px"``)."""
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; valid: {', '.join(ABLATIONS)}")
    return f"{ABLATED_MODEL}_{ablation}"


def arm_ablation(arm: str) -> str | None:
    """The ablation an arm names, or None for a model's own arm."""
    for ablation in ABLATIONS:
        if arm == ablation_arm(ablation):
            return ablation
    return None


def arm_model(arm: str) -> str:
    """The model an arm trains.

    Examples
    --------
    >>> arm_model("mod_cyclegan_no_gs"), arm_model("pix2pix")
    ('mod_cyclegan', 'pix2pix')
    """
    if arm in MODEL_NAMES:
        return arm
    if arm_ablation(arm) is not None:
        return ABLATED_MODEL
    raise ValueError(f"unknown sweep arm {arm!r}; valid: a model ({', '.join(MODEL_NAMES)}) or "
                     f"{', '.join(ablation_arm(a) for a in ABLATIONS)}")


def arm_label(arm: str) -> str:
    """How the book names an arm (the paper's model names; an ablation by the terms it lacks)."""
    ablation = arm_ablation(arm)
    if ablation is not None:
        return ABLATION_LABELS[ablation]
    return MODEL_LABELS.get(arm, arm).replace(" (our model)", "")


def arms_at(cfg: Any, level: float) -> list[str]:
    """The arms trained at one strength: every model, and the ablations at ``cfg.ablation_level``."""
    arms = list(cfg.models)
    if cfg.ablations and np.isclose(level, cfg.ablation_level):
        arms += [ablation_arm(a) for a in cfg.ablations]
    return arms


def sweep_runs(cfg: Any) -> list[SweepRun]:
    """Every run of a profile's ``sweep`` section, strength by strength, arm by arm, seed by seed."""
    return [SweepRun(float(level), arm, seed) for level in cfg.levels for arm in arms_at(cfg, level)
            for seed in range(int(cfg.seeds))]


def arm_training(training: Any, arm: str, patches_per_pair: int) -> Any:
    """The training settings of one arm: the profile's, with the ablated loss weights set to zero.

    Parameters
    ----------
    training : TrainingConfig
        ``profile.training``.
    arm : str
    patches_per_pair : int
        The sweep's patches per slide and epoch.

    Examples
    --------
    >>> from vstain.config import load_profile
    >>> t = arm_training(load_profile("quick").training, "mod_cyclegan_no_px", 32)
    >>> t.lambda_px, t.lambda_gs
    (0.0, 1.0)
    """
    arm_model(arm)  # a known arm
    zeroed = {name: 0.0 for name in ABLATIONS.get(arm_ablation(arm) or "", ())}
    return dataclasses.replace(training, patches_per_pair=int(patches_per_pair), **zeroed)


def sweep_seed(study_seed: int, seed_index: int) -> int:
    """The study seed of seed index ``k`` (the run's own seed is derived from it and the model, as in training).

    Seed index 0 is the study's own seed; the others follow it. The same index at every strength gives the
    same initialisation and the same patch draws, so strengths are compared network by network.
    """
    if seed_index < 0:
        raise ValueError(f"seed index must be >= 0, got {seed_index}")
    return int(study_seed) + 7919 * int(seed_index)


def sample_plan(counts: Mapping[str, int], n_train: int, n_test: int, seed: int) -> list[dict[str, Any]]:
    """The sweep's blocks: one entry per slide, the same at every strength.

    Materials follow the proportions of ``counts`` (the dataset's toluidine-blue counts), spread over the
    training and the test slides alike; each block has its own seed.

    Returns
    -------
    list of dict
        ``pair_id`` (``sweep_<role>_<k>``), ``role`` (``train`` or ``test``), ``material``, ``index``, ``seed``.

    Examples
    --------
    >>> [(p["pair_id"], p["material"]) for p in sample_plan({"Mg": 2, "Ti": 1, "PEEK": 1}, 2, 2, 0)]
    [('sweep_train_0', 'Mg'), ('sweep_train_1', 'PEEK'), ('sweep_test_0', 'Mg'), ('sweep_test_1', 'PEEK')]
    """
    pool = [material for material, n in counts.items() for _ in range(int(n))]
    if not pool:
        raise ValueError("the sweep needs at least one toluidine-blue material in dataset.tb_counts")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"the sweep needs training and test slides, got n_train={n_train}, n_test={n_test}")
    seeds = np.random.SeedSequence([int(seed), 0x5EE9]).generate_state(n_train + n_test, np.uint32)
    plan = []
    for role, n, start in (("train", n_train, 0), ("test", n_test, n_train)):
        for k in range(n):
            # evenly through the pool, so both roles see every material in about its proportion
            material = pool[int((k + 0.5) * len(pool) / n) % len(pool)]
            plan.append({"pair_id": f"sweep_{role}_{k}", "role": role, "material": material, "index": start + k,
                         "seed": int(seeds[start + k])})
    return plan
