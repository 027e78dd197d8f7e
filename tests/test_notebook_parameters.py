"""A chapter's papermill parameters: a misspelt name or a bad value stops at once, with one line.

The histories below are built by hand the way the kernel records them (IPython's ``In``: the cells in
the order they ran, the running check last), with papermill's own translator writing the injected cell,
so the unit tests see what a papermill run gives the helper. The table at the end runs papermill on
the chapter notebooks themselves (smoke profile): every bad parameter is one line, and nothing runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from papermill.translators import PythonTranslator

from vstain.reports.parameters import (ParameterError, assigned_names, check_parameters, parameter_cells)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))

TRAINING_CELL = ('import os\n\nprofile = os.environ.get("VSTAIN_PROFILE", "quick")\n'
                 'model = None  # one model\nfold = 0\nsource = "registered"\nn_patches = 4')
FRC_CELL = 'import os\n\nprofile = os.environ.get("VSTAIN_PROFILE", "quick")\nmodel = "mod_cyclegan"\nfold = None'
CHECK_CELL = "check_parameters(globals())"


def _run(parameters_cell: str, given: dict | None = None, *, folds: str = "dataset") -> None:
    """Check a chapter's namespace as the kernel holds it after its parameters cell and papermill's cell."""
    namespace: dict = {}
    exec(parameters_cell.replace('os.environ.get("VSTAIN_PROFILE", "quick")', '"smoke"'), namespace)
    history = ["", parameters_cell]
    if given is not None:
        injected = PythonTranslator.codify(given)
        exec(injected, namespace)
        history.append(injected)
    namespace["In"] = history + [CHECK_CELL]
    check_parameters(namespace, folds=folds)


# --------------------------------------------------------------------------- reading the history


def test_assigned_names_are_the_top_level_assignments_only():
    assert assigned_names(TRAINING_CELL) == ["profile", "model", "fold", "source", "n_patches"]
    assert assigned_names("x: int = 1\na, (b, c) = 1, (2, 3)\ndef f():\n    y = 2\nfor i in []: pass") == \
        ["x", "a", "b", "c"]
    assert assigned_names("%matplotlib inline") == []


def test_the_injected_cell_is_found_after_the_parameters_cell_papermill_or_not():
    injected = PythonTranslator.codify({"fold": 2})
    assert injected.startswith("# Parameters")
    assert parameter_cells(["", TRAINING_CELL, injected, CHECK_CELL]) == (TRAINING_CELL, injected)
    # a chapter with a code cell before its parameters cell
    assert parameter_cells(["", "%matplotlib inline", TRAINING_CELL, injected, CHECK_CELL]) == (TRAINING_CELL, injected)
    # run without papermill: nothing was injected, only the values are checked
    assert parameter_cells(["", TRAINING_CELL, CHECK_CELL]) == (None, None)
    assert parameter_cells([]) == (None, None)


# --------------------------------------------------------------------------- names


def test_a_misspelt_name_is_refused_naming_it_and_the_declared_ones():
    with pytest.raises(ParameterError) as err:
        _run(TRAINING_CELL, {"fodl": 1})
    assert str(err.value) == ("unknown parameter 'fodl' (did you mean 'fold'?); this chapter's parameters: "
                              "profile, model, fold, source, n_patches")
    with pytest.raises(ParameterError, match=r"^unknown parameter 'epochs'; this chapter's parameters: profile$"):
        _run('import os\n\nprofile = os.environ.get("VSTAIN_PROFILE", "quick")', {"epochs": 3})


def test_declared_names_and_papermills_own_paths_pass():
    _run(TRAINING_CELL, {"profile": "smoke", "model": "pix2pix", "fold": 1, "source": "ground_truth",
                         "n_patches": 2})
    _run(TRAINING_CELL, {"fold": 1, "PAPERMILL_INPUT_PATH": "in.ipynb", "PAPERMILL_OUTPUT_PATH": "out.ipynb"})
    _run(TRAINING_CELL, {})  # papermill with no -p: an injected cell with its comment only
    _run(TRAINING_CELL)  # no papermill at all


def test_an_unknown_name_without_papermills_cell_is_not_guessed_at():
    # run by hand (no injected cell): a stray global of the reader's is none of the helper's business
    check_parameters({"In": ["", TRAINING_CELL, "fodl = 1", CHECK_CELL], "profile": "smoke", "fodl": 1})


# --------------------------------------------------------------------------- values


BAD_VALUES = {
    # case: (parameters cell, given, folds, the one line)
    "fold beyond dataset.n_folds": (TRAINING_CELL, {"fold": 7}, "dataset",
                                    "parameter fold = 7 is not allowed: give a fold from 0 to 1 "
                                    "(dataset.n_folds = 2 in profile smoke)"),
    "fold -1": (TRAINING_CELL, {"fold": -1}, "dataset", "parameter fold = -1 is not allowed"),
    "fold as text (-r fold 1)": (TRAINING_CELL, {"fold": "1"}, "dataset", "(an integer: -p, not -r)"),
    "fold True": (TRAINING_CELL, {"fold": True}, "dataset", "parameter fold = True is not allowed"),
    "fold 1.5": (TRAINING_CELL, {"fold": 1.5}, "dataset", "parameter fold = 1.5 is not allowed"),
    "fold None where the default is 0": (TRAINING_CELL, {"fold": None}, "dataset",
                                         "parameter fold = None is not allowed"),
    "fold not evaluated by the workflow": (FRC_CELL, {"fold": 1}, "training",
                                           "parameter fold = 1 is not allowed: give one of training.folds 0 of "
                                           "profile smoke (the evaluated folds) (or None: the profile's first fold)"),
    "model misspelt": (TRAINING_CELL, {"model": "pix2pixx"}, "dataset",
                       "parameter model = 'pix2pixx' is not in training.models of profile smoke: give one of "
                       "mod_cyclegan, cyclegan, cyclegan_invct, pix2pix (or None: every model)"),
    "model None where the default is a model": (FRC_CELL, {"model": None}, "dataset",
                                                "parameter model = None is not in training.models of profile smoke: "
                                                "give one of mod_cyclegan, cyclegan, cyclegan_invct, pix2pix"),
    "model 3": (FRC_CELL, {"model": 3}, "dataset", "parameter model = 3 is not in training.models"),
    "profile misspelt": (TRAINING_CELL, {"profile": "smok"}, "dataset",
                         "parameter profile = 'smok': not a profile; give one of smoke, quick, paper or the path "
                         "of a .yaml file"),
    "profile a missing .yaml": (TRAINING_CELL, {"profile": "/no/such/mine.yaml"}, "dataset",
                                "parameter profile = '/no/such/mine.yaml': no such file; give one of smoke"),
    "profile a number": (TRAINING_CELL, {"profile": 1}, "dataset", "parameter profile = 1 is not a profile"),
    "profile empty": (TRAINING_CELL, {"profile": ""}, "dataset", "parameter profile = '' is not a profile"),
    "source misspelt": (TRAINING_CELL, {"source": "groundtruth"}, "dataset",
                        "parameter source = 'groundtruth' is not allowed: give one of registered, ground_truth"),
    "n_patches 0": (TRAINING_CELL, {"n_patches": 0}, "dataset",
                    "parameter n_patches = 0 is not allowed: give a positive integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_a_bad_value_is_one_line_naming_the_parameter_its_value_and_what_is_allowed(case):
    cell, given, folds, line = BAD_VALUES[case]
    with pytest.raises(ParameterError) as err:
        _run(cell, given, folds=folds)
    message = str(err.value)
    assert line in message and "\n" not in message, message
    assert err.value._render_traceback_() == [f"ParameterError: {message}"]


def test_none_is_allowed_exactly_where_the_chapter_declares_it():
    _run(TRAINING_CELL, {"model": None})  # 03: every model
    _run(FRC_CELL, {"fold": None})  # 06: the profile's first fold
    _run(FRC_CELL, {"fold": 0}, folds="training")


def test_a_malformed_profile_file_is_named_with_its_key_in_one_line(tmp_path):
    from vstain.config import profile_text

    mine = tmp_path / "mine.yaml"
    mine.write_text(profile_text("smoke").replace("n_folds: 2", "n_folds: two"))
    with pytest.raises(ParameterError) as err:
        _run(TRAINING_CELL, {"profile": str(mine)})
    assert f"parameter profile = '{mine}': {mine}: dataset.n_folds must be an integer" in str(err.value)
    mine.write_text("dataset: [unclosed\n  - x: y\n")
    with pytest.raises(ParameterError, match="malformed YAML") as err:
        _run(TRAINING_CELL, {"profile": str(mine)})
    assert "\n" not in str(err.value)


def test_the_profile_from_the_environment_is_checked_too(monkeypatch):
    monkeypatch.setenv("VSTAIN_PROFILE", "quik")
    namespace: dict = {}
    exec(TRAINING_CELL, namespace)
    namespace["In"] = ["", TRAINING_CELL, CHECK_CELL]
    with pytest.raises(ParameterError, match="^parameter profile = 'quik': not a profile"):
        check_parameters(namespace)


def test_folds_must_be_named_as_documented():
    with pytest.raises(ValueError, match="folds must be 'dataset' or 'training'"):
        check_parameters({"profile": "smoke"}, folds="all")


# --------------------------------------------------------------------------- the chapters


def _cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_checks_its_parameters_first_and_its_defaults_pass(path, monkeypatch):
    cells = _cells(path)
    first = next(k for k, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    check = cells[first + 1].source
    assert "check_parameters(globals()" in check, f"{path.name}: the cell after the parameters cell: {check[:200]}"
    assert sum("check_parameters(" in c.source for c in cells) == 1
    for profile in ("smoke", "quick", "paper"):  # each chapter's defaults under every shipped profile
        monkeypatch.setenv("VSTAIN_PROFILE", profile)
        namespace: dict = {}
        exec(cells[first].source, namespace)
        injected = PythonTranslator.codify({"profile": profile})
        namespace["In"] = ["", cells[first].source, injected, check]
        exec(check, namespace)


# --------------------------------------------------------------------------- papermill on the chapters

BAD_NOTEBOOK_PARAMETERS = {
    # case: (chapter, papermill parameters, the one line the run stops with)
    "03 -p fodl 1 (misspelt)": ("03_training", {"fodl": 1}, "unknown parameter 'fodl' (did you mean 'fold'?); "
                                                            "this chapter's parameters: profile, model, fold, source, "
                                                            "n_patches"),
    "03 -p fold 7": ("03_training", {"fold": 7}, "parameter fold = 7 is not allowed: give a fold from 0 to 1"),
    "04 -p model pix2pixx": ("04_inference", {"model": "pix2pixx"},
                             "parameter model = 'pix2pixx' is not in training.models of profile smoke"),
    "05 -p fold 1 (not evaluated)": ("05_evaluation", {"fold": 1}, "give one of training.folds 0 of profile smoke"),
    "00 -p profile smok": ("00_dataset", {"profile": "smok"}, "parameter profile = 'smok': not a profile"),
}


@pytest.mark.parametrize("case", sorted(BAD_NOTEBOOK_PARAMETERS))
def test_papermill_with_a_bad_parameter_stops_at_once_with_one_line(case, tmp_path, monkeypatch):
    import papermill

    chapter, given, line = BAD_NOTEBOOK_PARAMETERS[case]
    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))  # nothing may be written there
    parameters = {"profile": "smoke", **given}
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(NOTEBOOKS / f"{chapter}.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters=parameters, kernel_name="python3", progress_bar=False,
                                   cwd=str(ROOT), execution_timeout=120)
    assert err.value.ename == "ParameterError" and line in err.value.evalue, err.value
    # the cell's error is the one line, no traceback above it; nothing of the chapter ran
    assert err.value.traceback == [f"ParameterError: {err.value.evalue}"]
    assert str(err.value).rstrip().endswith(f"ParameterError: {err.value.evalue}")
    assert not (tmp_path / "results").exists()


def test_papermills_command_exits_1_and_its_last_line_is_the_parameter(tmp_path):
    """papermill's command prints its own Python traceback for any failed cell; the cell's line ends it."""
    done = subprocess.run([sys.executable, "-m", "papermill", "--kernel", "python3", "--no-progress-bar",
                           str(NOTEBOOKS / "03_training.ipynb"), str(tmp_path / "out.ipynb"), "-p", "profile",
                           "smoke", "-p", "fodl", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "VSTAIN_RESULTS": str(tmp_path / "results")})
    assert done.returncode == 1
    assert done.stderr.rstrip().splitlines()[-1] == (
        "ParameterError: unknown parameter 'fodl' (did you mean 'fold'?); this chapter's parameters: profile, "
        "model, fold, source, n_patches")
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert len(errors) == 1 and len(errors[0].traceback) == 1


def test_papermill_with_good_parameters_passes_the_check(tmp_path, monkeypatch):
    """The chapter's own cells up to the check, then a marker: good values are not refused."""
    import papermill

    nb = nbformat.read(NOTEBOOKS / "06_frc.ipynb", as_version=4)
    k = next(i for i, c in enumerate(nb.cells) if "check_parameters(" in c.source)
    nb.cells = nb.cells[:k + 1] + [nbformat.v4.new_code_cell("print('checked', profile, model, fold)")]
    nbformat.write(nb, tmp_path / "head.ipynb")
    out = papermill.execute_notebook(str(tmp_path / "head.ipynb"), str(tmp_path / "out.ipynb"),
                                     parameters={"profile": "smoke", "model": "pix2pix", "fold": 1},
                                     kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    assert out.cells[-1].outputs[0].text == "checked smoke pix2pix 1\n"
