r"""The intensity relation between CT and stain, real and generated, and the sentences chapter 05 states.

The paper's toluidine blue stains mineralised bone purple and darker than soft tissue, while bone is
the brightest tissue in CT: inside the correspondence mask, CT grey value and stain lightness
correlate negatively. A model that learns the stain keeps the real stain's sign; one that copies the
CT's brightness (the standard CycleGAN's identity term) inverts it. Whether that happens is measured
per slide (:func:`vstain.colour.ct_lightness_correlation`) and stated from the counts, never typed.

Examples
--------
>>> t = pd.DataFrame({"pair_id": ["a", "b", "a", "b"], "source": ["real", "real", "m", "m"],
...                   "r": [-0.6, -0.4, 0.5, -0.2]})
>>> print(real_relation_sentence(t).replace(": ", ":\n"))
Inside the mask, CT intensity and the real stain's lightness correlate negatively on 2 of 2 slides (median r = -0.50):
bright CT is dark in the stain.
>>> print(inversion_sentence(t, "m"))
m inverts the real stain's CT-lightness relation on 1 of 2 slides (median r = +0.15 against -0.50 for the real stain).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from vstain.colour import ct_lightness_correlation
from vstain.pairs import RegisteredPair
from vstain.vocabulary import MODEL_LABELS

REAL = "real"


def intensity_relation(pair: RegisteredPair, generated: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """CT-lightness correlation inside the mask of one slide: the real stain and each model's output.

    Parameters
    ----------
    pair : RegisteredPair
        The registered pair (its CT, histology and correspondence mask).
    generated : mapping
        ``model -> (Y, X, 3) uint8 generated histology`` on the pair's grid.

    Returns
    -------
    pandas.DataFrame
        ``pair_id, material, source, r``; ``source`` is ``"real"`` or the model's name.
    """
    rows = [{"pair_id": pair.pair_id, "material": pair.material, "source": REAL,
             "r": ct_lightness_correlation(pair.ct, pair.histology, pair.mask)}]
    for model, image in generated.items():
        rows.append({"pair_id": pair.pair_id, "material": pair.material, "source": model,
                     "r": ct_lightness_correlation(pair.ct, image, pair.mask)})
    return pd.DataFrame(rows, columns=["pair_id", "material", "source", "r"])


def _sign_word(r: float) -> str:
    return "negatively" if r < 0 else "positively"


def real_relation_sentence(table: pd.DataFrame) -> str:
    """How CT intensity and the real stain's lightness relate on the slides of ``table``, in one sentence."""
    real = table[table["source"] == REAL].dropna(subset=["r"])
    if real.empty:
        return "No slide had the CT and stain contrast to correlate."
    median = float(real["r"].median())
    n_same = int((np.sign(real["r"]) == np.sign(median)).sum())
    meaning = "bright CT is dark in the stain" if median < 0 else "bright CT is pale in the stain"
    return (f"Inside the mask, CT intensity and the real stain's lightness correlate {_sign_word(median)} on "
            f"{n_same} of {len(real)} slides (median r = {median:+.2f}): {meaning}.")


def inversion_sentence(table: pd.DataFrame, model: str) -> str:
    """Whether ``model`` keeps or inverts the real stain's CT-lightness relation, slide by slide, in one sentence.

    A slide counts as inverted where the generated stain's correlation with the CT has the opposite
    sign of the real stain's on the same slide.
    """
    name = MODEL_LABELS.get(model, model).replace(" (our model)", "")
    both = table[table["source"].isin([REAL, model])].pivot_table(index="pair_id", columns="source", values="r")
    if model not in both.columns or REAL not in both.columns:
        return f"{name}: not measured."
    both = both.dropna()
    if both.empty:
        return f"{name}: no slide with both correlations."
    inverted = int((np.sign(both[model]) != np.sign(both[REAL])).sum())
    detail = f"median r = {both[model].median():+.2f} against {both[REAL].median():+.2f} for the real stain"
    if inverted:
        return f"{name} inverts the real stain's CT-lightness relation on {inverted} of {len(both)} slides ({detail})."
    return f"{name} keeps the real stain's CT-lightness relation on all {len(both)} slides ({detail})."
