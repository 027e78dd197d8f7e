"""The tables and sentences the chapters show, computed from what the stages measured.

Beside :mod:`vstain.figures` (every drawing), this layer turns measured numbers into what a chapter
states: Table 1 with its intervals and every sentence that ranks models (:mod:`vstain.reports.table1`),
the intensity relation of CT and stain (:mod:`vstain.reports.intensity`) and the colour distances
between tissue classes before and after normalisation (:mod:`vstain.reports.normalisation`), the
registration cases (:mod:`vstain.reports.registration`) and the phantom beside the paper's regime
(:mod:`vstain.reports.regime`). It reads
the stages' artefacts through :mod:`vstain.layout` and runs no stage. A sentence that states a result
(a ranking, "beats", "inverts", "merges") is made here from the numbers, never typed in a chapter.
"""
