"""The command line's error contract: exit codes, one-line messages, tracebacks kept in a file."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from vstain import cli


def _run_with(monkeypatch, body):
    """Run ``vstain profile smoke`` with its run function replaced by ``body``."""
    configure, _ = cli.command_functions("profile")
    monkeypatch.setattr(cli, "command_functions", lambda name: (configure, lambda args: body()))
    return cli.main(["profile", "smoke"])


def test_expected_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, tmp_path):
    def unwritable():
        raise PermissionError(13, "Permission denied", str(tmp_path / "results"))

    assert _run_with(monkeypatch, unwritable) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "results") in err and "Traceback" not in err


def test_unexpected_errors_keep_their_traceback_in_a_file(monkeypatch, capsys):
    def bug():
        raise RuntimeError("index out of step")

    assert _run_with(monkeypatch, bug) == 1
    err = capsys.readouterr().err
    assert "RuntimeError: index out of step" in err and "Traceback" not in err
    log = Path(re.search(r"full traceback in (\S+?);", err).group(1))
    try:
        assert "Traceback" in log.read_text() and "def bug" not in err
    finally:
        log.unlink()


@pytest.mark.parametrize("error, words", [
    (OSError(28, "No space left on device", "/data/results/last.pt"), "writing /data/results/last.pt"),
    (OSError("27648 requested and 9152 written"), "(27648 requested and 9152 written)"),  # numpy's tofile
    (RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                  "data/3: file write failed"), "file write failed"),  # torch.save: was an "unexpected error"
])
def test_a_full_disk_is_named_as_the_cause_with_exit_code_2(monkeypatch, capsys, error, words):
    def full():
        raise error

    assert _run_with(monkeypatch, full) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: no space left on the device" in err and words in err, err
    assert "unexpected" not in err and "Traceback" not in err


def test_sigterm_unwinds_like_ctrl_c_and_exits_143(monkeypatch, capsys, tmp_path):
    from vstain.io import atomic_target

    target = tmp_path / "stained.tif"

    def killed_midway():
        with atomic_target(target) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("SIGTERM did not interrupt")

    assert _run_with(monkeypatch, killed_midway) == 143
    assert "terminated" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary part
    assert signal.getsignal(signal.SIGTERM) is not cli._raise_terminated  # handler restored


def test_unknown_command_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dance"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_warning_repeated_by_several_stages_is_printed_once_in_words(monkeypatch, capsys):
    import warnings

    def noisy():
        for _ in range(3):  # e.g. train, infer and metrics each find the same left-out pair
            warnings.warn("pair he_01 left out of the H&E study", UserWarning, stacklevel=1)
        warnings.warn("another matter", UserWarning, stacklevel=1)
        return 0

    assert _run_with(monkeypatch, noisy) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["vstain profile: warning: pair he_01 left out of the H&E study",
                                "vstain profile: warning: another matter"]
    assert warnings.showwarning.__module__ == "warnings"  # the hook is gone after the command
