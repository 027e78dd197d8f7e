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


def at_most(kind, maximum: float, why: str):
    """An argparse type: ``kind`` (e.g. :func:`positive_int`) no larger than ``maximum``, ``why`` said when it is.

    A bound keeps a slip of a digit from running for hours on trivial work.

    Examples
    --------
    >>> sigma = at_most(non_negative_float, 20, "the paper's is 1")
    >>> sigma("1.5")
    1.5
    >>> sigma("1e6")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be at most 20 (the paper's is 1), got 1e6
    """
    def parse(text: str):
        value = kind(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g} ({why}), got {text}")
        return value
    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def non_negative_int(text: str) -> int:
    """An argparse type: an integer of at least 0 (a fold index).

    Examples
    --------
    >>> non_negative_int("2")
    2
    """
    return _whole_number(text, 0, "0 or more")


#: What ``--force`` does in most stages (a stage whose force does more says so).
RECOMPUTE = "recompute even if the results exist"


def add_stage_options(parser: argparse.ArgumentParser, *, force: bool | str = False,
                      progress: bool = False) -> None:
    """The options the stage commands share: ``--profile``, and where the stage has them ``--force`` and ``--no-progress``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    force : bool or str
        Add ``--force``: True with the help :data:`RECOMPUTE`, a string with that help.
    progress : bool
        Add ``--no-progress`` (also spelled ``--quiet``): no progress bars.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="vstain x")
    >>> add_stage_options(parser, force=True, progress=True)
    >>> args = parser.parse_args(["--profile", "smoke", "--quiet"])
    >>> args.profile, args.force, args.no_progress
    ('smoke', False, True)
    >>> add_stage_options(argparse.ArgumentParser(), force=1)
    Traceback (most recent call last):
    ...
    TypeError: force must be a bool or its help text, got 1
    """
    if not isinstance(force, (bool, str)):
        raise TypeError(f"force must be a bool or its help text, got {force!r}")
    parser.add_argument("--profile", default="quick", help="profile name or YAML path (default: %(default)s)")
    if force:
        parser.add_argument("--force", action="store_true", help=RECOMPUTE if force is True else force)
    if progress:
        parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true",
                            help="no progress bars")
