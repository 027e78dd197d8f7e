"""Chapters 02, 05, 09 and 11 state results only through glued sentences, never in typed prose."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

#: Words that state a result: a ranking, a win, an inversion, a merge.
RESULT_WORDS = re.compile(r"\b(beats?|outperforms?|inverts?|inverted|inversion|merges?|merged|ranks? first|line up|"
                          r"better than|worse than|the best model|overtakes?|gains? on)\b", re.IGNORECASE)
GLUE = re.compile(r"\{glue:[a-z]+\}`[^`]*`|```\{glue:figure\}.*?```", re.DOTALL)


def typed_results(source: str) -> list[str]:
    """The result words of a markdown cell outside its glued text and the paper's own claims."""
    text = GLUE.sub("", source)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    return [s for s in sentences if RESULT_WORDS.search(s) and not re.match(r"\s*(The|In the) paper\b", s)
            and not re.search(r"\b(whether|only where|if|can|could|may|keeps or)\b", s, re.I)]


def test_the_checker_sees_a_typed_ranking_and_spares_glued_ones():
    assert typed_results("The modified CycleGAN beats Pix2Pix on every split.")
    assert not typed_results("On the test slides: {glue:md}`ranking_test_ssim`.")
    assert not typed_results("The paper finds that its model beats Pix2Pix.")
    # the claim chapter 05 used to type
    assert typed_results("The standard CycleGAN shows the intensity inversion the paper describes.")
    assert not typed_results("A model beats another only where the interval excludes zero.")
    assert not typed_results("A stretch that clips can merge two dark classes.")


@pytest.mark.parametrize("name", ["02_normalisation.ipynb", "05_evaluation.ipynb", "09_results.ipynb", "11_misalignment.ipynb"])
def test_chapter_prose_types_no_result(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    typed = [s for cell in nb.cells if cell.cell_type == "markdown" for s in typed_results(cell.source)]
    assert not typed, typed
