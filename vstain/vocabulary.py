"""The study's vocabulary: implant materials, stains, split roles, directions, model names.

Each word is defined here once; every other module imports it from here, so a new stain
or model name is added in one place and validated everywhere.

Examples
--------
>>> "Mg" in MATERIALS and "he" in STAINS
True
>>> GENERATOR_OF["ct_to_histology"]
'G_XY'
>>> MODEL_LABELS["pix2pix"]
'Pix2Pix'
"""

from __future__ import annotations

#: Implant materials of the screws (paper 2.1).
MATERIALS: tuple[str, ...] = ("Mg", "Ti", "PEEK")

#: Histological stains: toluidine blue (the main study) and H&E (Supplementary S2).
STAINS: tuple[str, ...] = ("toluidine_blue", "he")

#: Roles of a pair in one cross-validation fold.
ROLES: tuple[str, ...] = ("train", "validation", "test")

#: Where the registered pairs a training run reads come from: the registration stage, or the phantom's
#: ground truth (its true plane and affine; synthetic data only).
PAIR_SOURCES: tuple[str, ...] = ("registered", "ground_truth")

#: Translation directions and the generator of a checkpoint that performs each.
GENERATOR_OF: dict[str, str] = {"ct_to_histology": "G_XY", "histology_to_ct": "G_YX"}
DIRECTIONS: tuple[str, ...] = tuple(GENERATOR_OF)

#: The paper's four models (section 2.6), in the order of its Table 1.
MODEL_NAMES: tuple[str, ...] = ("mod_cyclegan", "cyclegan", "cyclegan_invct", "pix2pix")

#: Models with a single (CT -> histology) generator: no generated CT (paper 3.1).
MODELS_WITHOUT_REVERSE: tuple[str, ...] = ("pix2pix",)

#: Plausible pixel and voxel sizes in micrometres (inclusive): outside, the unit is almost surely wrong.
#: The manifest's sizes and the profile's ``dataset.ct_voxel_um`` / ``histology_pixel_um`` are held to it.
PIXEL_UM_RANGE: tuple[float, float] = (0.01, 1000.0)

#: The raw CT shown as greyscale RGB against the histology: Table 1's baseline (paper 3.2).
BASELINE = "raw_ct"

#: The CT grey value -> colour lookup fitted on the training pairs (Khimchenko et al. 2016): a peer
#: of the networks in Table 1 that is not a network (no checkpoint, no generated CT).
LOOKUP = "ct_lookup"

#: Display names of the models, the lookup and the baseline, as the paper writes them (Table 1's order).
MODEL_LABELS: dict[str, str] = {
    "mod_cyclegan": "Mod. CycleGAN (our model)",
    "pix2pix": "Pix2Pix",
    "cyclegan_invct": "Std. CycleGAN + inv. CT input",
    "cyclegan": "Std. CycleGAN",
    LOOKUP: "CT colour lookup (no network)",
    BASELINE: "Raw CT (no generation)",
}


#: The misalignment sweep's ablations of the modified CycleGAN (chapter 11): the loss weights each sets to zero,
#: the pixelwise term of paper Eq. 5 (lambda_px) and the greyscale term of Eq. 6 (lambda_gs) in the total of Eq. 7.
ABLATIONS: dict[str, tuple[str, ...]] = {
    "no_px": ("lambda_px",),
    "no_gs": ("lambda_gs",),
    "no_px_no_gs": ("lambda_px", "lambda_gs"),
}
ABLATION_LABELS: dict[str, str] = {
    "no_px": "Mod. CycleGAN without L_px",
    "no_gs": "Mod. CycleGAN without L_gs",
    "no_px_no_gs": "Mod. CycleGAN without L_px and L_gs",
}
#: The model an ablation takes its terms from.
ABLATED_MODEL = "mod_cyclegan"


def check_word(value: str, allowed: tuple[str, ...], what: str) -> str:
    """``value`` if it is one of ``allowed``, else a ValueError naming ``what`` and the valid words.

    Examples
    --------
    >>> check_word("he", STAINS, "stain")
    'he'
    >>> check_word("eosin", STAINS, "stain")
    Traceback (most recent call last):
    ...
    ValueError: unknown stain 'eosin'; valid: toluidine_blue, he
    """
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(allowed)}")
    return value
