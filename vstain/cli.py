"""The ``vstain`` command line: a table of commands, each pointing at the stage that runs it.

``vstain --help`` lists every command with one line each. Each command lives in its stage
module (:mod:`vstain.stages`), which provides two functions::

    configure_parser(parser: argparse.ArgumentParser) -> None
    run_cli(args: argparse.Namespace) -> int

A module that serves two commands names the second pair with a prefix, e.g.
``configure_phantom_parser`` / ``run_phantom_cli`` for ``"vstain.stages.dataset:phantom"``.

The stage module is imported only when its command runs, so ``vstain --help`` is fast
and a command does not pay for the imports of the others. ``python -m vstain`` is the same
command line.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import tempfile
import traceback
import warnings

from vstain import __version__

# name -> ("module" or "module:prefix" providing [prefix_]configure_parser/run_cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "profile": ("vstain.stages.profile", "print one of the study's profiles (smoke, quick, paper) to copy and edit"),
    "phantom": ("vstain.stages.dataset:phantom", "generate the synthetic bone-implant dataset and its manifest"),
    "check-manifest": ("vstain.stages.dataset",
                       "validate a data manifest (files, checksums, fields) and write the split"),
    "register": ("vstain.stages.register", "register histology sections to CT volumes (2D-3D, mutual information)"),
    "register-cases": ("vstain.stages.register_cases",
                       "register the registration-only phantom blocks (no screw, screw at the edge) and measure them"),
    "normalise": ("vstain.stages.register:normalise",
                  "normalise registered pairs and build sample-correspondence masks"),
    "train": ("vstain.stages.train", "train one model on one fold"),
    "infer": ("vstain.stages.infer", "whole-slide overlapping patch inference of a trained model"),
    "evaluate": ("vstain.stages.evaluate", "SSIM / PSNR / LPIPS per patch and Table 1"),
    "frc": ("vstain.stages.frc", "Fourier ring correlation resolution of CT, histology and generated histology"),
    "stain": ("vstain.stages.stain", "virtually stain a CT volume with a trained generator"),
    "volume": ("vstain.stages.volume", "the study's 3D stage: stain the phantom test volume, single-axis and fused"),
    "he": ("vstain.stages.he", "the H&E secondary study: train, infer and measure on the H&E pairs"),
    "uncertainty": ("vstain.stages.uncertainty",
                    "per-pixel uncertainty (fold ensemble, flips / turns, overlapping tiles) against the phantom's truth"),
    "sweep": ("vstain.stages.sweep",
              "the paper's claim tested: models trained and scored across misalignment strengths, with ablations"),
}


def command_functions(name: str):
    """``(configure_parser, run_cli)`` of command ``name``, importing only its module."""
    module_name, _, prefix = COMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    configure = f"configure_{prefix}_parser" if prefix else "configure_parser"
    run = f"run_{prefix}_cli" if prefix else "run_cli"
    return getattr(module, configure), getattr(module, run)


class VstainError(Exception):
    """An error the command line reports as one line, without a traceback."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s module is imported to configure its options."""
    parser = argparse.ArgumentParser(
        prog="vstain",
        description="Virtual staining of X-ray micro-CT of bone implants (Irvine et al.).",
    )
    parser.add_argument("--version", action="version", version=f"vstain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_line) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_line, description=help_line)
        if name == command:
            command_functions(name)[0](sp)
    return parser


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler or ``kill``): unwinds like Ctrl-C, so temporary files are removed."""


def _raise_terminated(signum, frame):  # noqa: ARG001  (signal handler signature)
    raise Terminated()


#: Errors a user can cause and fix (bad input, missing or unwritable files): one line, exit code 2.
EXPECTED_ERRORS = (VstainError, ValueError, OSError)


#: How libraries word a full disk when they do not raise ENOSPC themselves (numpy's tofile, torch.save).
_DISK_FULL_WORDS = ("requested and", "file write failed", "no space left", "disk quota exceeded")


def disk_full_message(err: BaseException) -> str | None:
    """The one line for an error whose cause is a full disk (or quota), naming the file where it is known.

    The exception and its causes are searched for ``ENOSPC`` / ``EDQUOT`` or a library's own words
    for a short write; None when the disk is not the cause.

    Examples
    --------
    >>> disk_full_message(OSError(errno.ENOSPC, "No space left on device", "/data/out.tif"))
    'no space left on the device writing /data/out.tif; free space there or choose another output'
    >>> disk_full_message(OSError("27648 requested and 9152 written"))
    'no space left on the device (27648 requested and 9152 written); free space there or choose another output'
    >>> disk_full_message(ValueError("bad shape")) is None
    True
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        full = getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
            isinstance(err, (OSError, RuntimeError)) and any(w in str(err).lower() for w in _DISK_FULL_WORDS))
        if full:
            filename = getattr(err, "filename", None)
            where = f" writing {filename}" if filename else f" ({str(err).splitlines()[0][:200]})"
            return f"no space left on the device{where}; free space there or choose another output"
        err = err.__cause__ or err.__context__
    return None


def _show_warning_once(command: str, seen: set[str]):
    """A ``warnings.showwarning`` that prints each message once, as one line in words (no source line)."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001  (the hook's signature)
        text = str(message)
        if text not in seen:
            seen.add(text)
            print(f"vstain {command}: warning: {text}", file=sys.stderr)

    return show


def _unexpected(command: str, err: BaseException) -> int:
    """Report a bug: one line, the full traceback kept in a file named in it; exit code 1."""
    fd, log = tempfile.mkstemp(prefix=f"vstain-{command}-", suffix=".traceback")
    with os.fdopen(fd, "w") as handle:
        traceback.print_exception(err, file=handle)
    print(f"vstain {command}: unexpected error: {type(err).__name__}: {err} "
          f"(full traceback in {log}; please report it)", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vstain`` console script.

    Exit codes: 0 success, 2 an error in the input or the files (one line naming the file and field),
    1 an unexpected error (one line, the full traceback written to a file named in it), 130 Ctrl-C,
    143 SIGTERM. Interrupted commands leave no half-written output behind.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    run = command_functions(args.command)[1]
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_show = warnings.showwarning
    warnings.showwarning = _show_warning_once(args.command, set())
    try:
        return int(run(args) or 0)
    except (*EXPECTED_ERRORS, RuntimeError) as err:
        full = disk_full_message(err)
        if full is None and not isinstance(err, EXPECTED_ERRORS):
            return _unexpected(args.command, err)
        print(f"vstain {args.command}: error: {full or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vstain {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"vstain {args.command}: terminated", file=sys.stderr)
        return 143
    except Exception as err:  # noqa: BLE001  (anything else is a bug: keep its traceback, say where)
        return _unexpected(args.command, err)
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = previous_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
