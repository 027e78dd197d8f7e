"""Argument types the stage commands share: out-of-range options are argparse errors (exit 2, the option named).

Examples
--------
>>> import argparse
>>> parser = argparse.ArgumentParser(prog="vstain x"); _ = parser.add_argument("--step", type=positive_int)
>>> parser.parse_args(["--step", "4"]).step
4
"""

from __future__ import annotations

import argparse
import math


def _whole_number(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    return _whole_number(text, 1, "at least 1")


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be above 0, got 0")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0 (a fold index).

    Examples
    --------
    >>> non_negative_int("2")
    2
    """
    return _whole_number(text, 0, "0 or more")
