"""The parameters a chapter notebook was run with, checked before the chapter does any work.

A chapter declares its parameters in the cell tagged ``parameters``; papermill (``-p name value``)
runs a cell of its own right after it, tagged ``injected-parameters``, that assigns the given values.
Papermill only warns about a name the chapter does not declare, and the chapter then runs on its
default: a misspelt ``-p fodl 1`` would train fold 0. A bad value (``-p fold 7``, ``-p model pix2pixx``,
``-p profile smok``) would fail deep inside a stage, under a traceback.

:func:`check_parameters`, called by the first cell after the parameters cell of every chapter
(``check_parameters(globals())``), refuses both with a :class:`ParameterError` whose message is one
line, and which IPython shows as that line alone (no traceback): the parameter, its value and what is
allowed, or the unknown name and the chapter's parameters.

Unknown names are found in the kernel's input history (IPython's ``In``): the cell that papermill
injected is the last one before the check that begins with papermill's ``# Parameters`` comment, and
the chapter's own parameters cell is the cell run just before it; the names each cell assigns are read
with :mod:`ast`. Without an injected cell no parameter was given, and only the values are checked
(``profile`` may still come from the ``VSTAIN_PROFILE`` environment variable).

Examples
--------
>>> history = ["", 'profile = "quick"\\nfold = 0', "# Parameters\\nprofile = 'smoke'\\nfodl = 1\\n", "check"]
>>> check_parameters({"In": history, "profile": "smoke", "fold": 0, "fodl": 1})
Traceback (most recent call last):
...
vstain.reports.parameters.ParameterError: unknown parameter 'fodl' (did you mean 'fold'?); this chapter's parameters: profile, fold
>>> check_parameters({"profile": "smoke", "fold": 1, "model": "pix2pix"})
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from vstain.config import PROFILE_NAMES, Profile, ProfileError, load_profile, resolve_profile_path
from vstain.vocabulary import PAIR_SOURCES

#: The first line of the cell papermill injects (its Python translator's comment, then one assignment a line).
INJECTED_HEADER = "# Parameters"
#: Names papermill itself may inject (``--inject-paths``); never a chapter's own.
PAPERMILL_NAMES = ("PAPERMILL_INPUT_PATH", "PAPERMILL_OUTPUT_PATH")


class ParameterError(ValueError):
    """A chapter's parameter is unknown or has a value the chapter cannot use; the message is one line.

    IPython shows the message alone, without a traceback (``_render_traceback_``), so the executed
    notebook, papermill's error and the cell's output all begin with the one line that says what to change.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def assigned_names(source: str) -> list[str]:
    """The names a cell assigns at its top level, in order (``x = 1``, ``x: int = 1``, ``a = b = 2``).

    A cell that is not valid Python (a magic the history did not translate) assigns nothing.

    Examples
    --------
    >>> assigned_names("import os\\n\\nprofile = os.environ.get('P', 'quick')\\nfold: int = 0\\na = b = 1")
    ['profile', 'fold', 'a', 'b']
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name) and leaf.id not in names:
                    names.append(leaf.id)
    return names


def parameter_cells(history: Sequence[str]) -> tuple[str | None, str | None]:
    """The chapter's parameters cell and papermill's injected cell in a kernel's input history.

    ``history`` is IPython's ``In``: the cells in the order they ran, the running cell last. The
    injected cell is the last earlier one that begins with :data:`INJECTED_HEADER`; the parameters
    cell is the one run just before it. Without an injected cell: ``(None, None)``.

    Examples
    --------
    >>> parameter_cells(["", "fold = 0", "# Parameters\\nfold = 2\\n", "check(globals())"])
    ('fold = 0', '# Parameters\\nfold = 2\\n')
    >>> parameter_cells(["", "fold = 0", "check(globals())"])
    (None, None)
    """
    earlier = list(history[:-1])
    for k in range(len(earlier) - 1, -1, -1):
        if earlier[k].lstrip().startswith(INJECTED_HEADER):
            return (earlier[k - 1] if k > 0 else None), earlier[k]
    return None, None


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def _profile(value: Any) -> Profile:
    where = f"parameter profile = {value!r}"
    allowed = f"give one of {', '.join(PROFILE_NAMES)} or the path of a .yaml file"
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ParameterError(f"{where} is not a profile: {allowed}")
    path = resolve_profile_path(value)
    if not path.is_file():
        what = "no such file" if str(value).endswith((".yaml", ".yml")) else "not a profile"
        raise ParameterError(f"{where}: {what}; {allowed}")
    try:
        return load_profile(value)
    except ProfileError as err:
        raise ParameterError(f"{where}: {_one_line(err)}") from None


def _check_model(value: Any, profile: Profile, none_allowed: bool) -> None:
    models = list(profile.training.models)
    if value is None and none_allowed:
        return
    if not isinstance(value, str) or value not in models:
        also = " (or None: every model)" if none_allowed else ""
        raise ParameterError(f"parameter model = {value!r} is not in training.models of profile {profile.name}: "
                             f"give one of {', '.join(models)}{also}")


def _check_fold(value: Any, profile: Profile, none_allowed: bool, folds: str) -> None:
    if value is None and none_allowed:
        return
    also = " (or None: the profile's first fold)" if none_allowed else ""
    if folds == "training":
        allowed = list(profile.training.folds)
        what = f"one of training.folds {', '.join(map(str, allowed))} of profile {profile.name} (the evaluated folds)"
    else:
        allowed = list(range(profile.dataset.n_folds))
        what = f"a fold from 0 to {allowed[-1]} (dataset.n_folds = {profile.dataset.n_folds} in profile {profile.name})"
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        hint = " (an integer: -p, not -r)" if isinstance(value, str) and value.strip().isdigit() else ""
        raise ParameterError(f"parameter fold = {value!r} is not allowed: give {what}{also}{hint}")


def _check_source(value: Any) -> None:
    if value not in PAIR_SOURCES:
        raise ParameterError(f"parameter source = {value!r} is not allowed: give one of {', '.join(PAIR_SOURCES)}")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"parameter {name} = {value!r} is not allowed: give a positive integer")


def check_parameters(namespace: Mapping[str, Any], *, folds: Literal["dataset", "training"] = "dataset") -> None:
    """Refuse a chapter's unknown parameter names and bad values, with one line each.

    Parameters
    ----------
    namespace : mapping
        The notebook's ``globals()``: the parameters' values and IPython's input history ``In``.
    folds : {"dataset", "training"}
        Which folds ``fold`` may name: any of the dataset's ``dataset.n_folds`` (a chapter that trains
        what it needs), or only the profile's ``training.folds`` (a chapter that shows what the
        workflow evaluated).

    Raises
    ------
    ParameterError
        If papermill gave a name the chapter's parameters cell does not declare (the message names it
        and the declared ones), or a value is not allowed: ``profile`` a known profile or a readable,
        valid .yaml file; ``model`` one of the profile's ``training.models``; ``fold`` an integer as
        ``folds`` says; ``source`` one of :data:`vstain.vocabulary.PAIR_SOURCES`; ``n_patches`` a
        positive integer. ``model`` and ``fold`` may be None where the chapter's default is None.
        Names without a rule here are not checked for their value.

    Examples
    --------
    >>> check_parameters({"profile": "smoke", "model": "pix2pix", "fold": 0})
    >>> check_parameters({"profile": "smoke", "fold": 9})
    Traceback (most recent call last):
    ...
    vstain.reports.parameters.ParameterError: parameter fold = 9 is not allowed: give a fold from 0 to 1 ...
    """
    if folds not in ("dataset", "training"):
        raise ValueError(f"folds must be 'dataset' or 'training', got {folds!r}")
    history = namespace.get("In")
    declared_cell, injected_cell = parameter_cells(history) if isinstance(history, Sequence) else (None, None)
    defaults: dict[str, Any] = {}
    if injected_cell is not None:
        declared = assigned_names(declared_cell or "")
        given = [n for n in assigned_names(injected_cell) if n not in PAPERMILL_NAMES]
        for name in given:
            if name not in declared:
                close = difflib.get_close_matches(name, declared, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = ", ".join(declared) or "none"
                raise ParameterError(f"unknown parameter {name!r}{hint}; this chapter's parameters: {known}")
        defaults = _declared_values(declared_cell or "")

    profile = _profile(namespace["profile"]) if "profile" in namespace else None
    if profile is not None and "model" in namespace:
        _check_model(namespace["model"], profile, none_allowed=defaults.get("model", None) is None)
    if profile is not None and "fold" in namespace:
        _check_fold(namespace["fold"], profile, none_allowed=defaults.get("fold", None) is None, folds=folds)
    if "source" in namespace:
        _check_source(namespace["source"])
    if "n_patches" in namespace:
        _check_count("n_patches", namespace["n_patches"])


def _declared_values(source: str) -> dict[str, Any]:
    """The literal defaults of a parameters cell (names whose value is not a literal map to ``...``)."""
    values: dict[str, Any] = {}
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return values
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                value = ...
            for target in targets:
                if isinstance(target, ast.Name):
                    values[target.id] = value
    return values
