"""The tables and sentences the chapters show, computed from what the stages measured.

Beside :mod:`vstain.figures` (every drawing), this layer turns the measured numbers into what a
chapter states: Table 1 with its intervals and every sentence that ranks models
(:mod:`vstain.reports.table1`), and the colour distances between tissue classes before and after
normalisation (:mod:`vstain.reports.normalisation`). It reads no profile and stains nothing: the
stages (and the science below) compute, this layer reports. A sentence that states a result
(a ranking, "beats", "inverts") is made here from the numbers, never typed in a chapter.
"""
