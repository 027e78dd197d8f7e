"""``vstain profile NAME``: print one of the study's profiles, comments included, to copy and edit.

Examples
--------
>>> import argparse, contextlib, io
>>> parser = argparse.ArgumentParser(); configure_parser(parser)
>>> out = io.StringIO()
>>> with contextlib.redirect_stdout(out):
...     code = run_cli(parser.parse_args(["smoke"]))
>>> code
0
>>> "name: smoke" in out.getvalue()
True
"""

from __future__ import annotations

import argparse

from vstain.config import PROFILE_NAMES, profile_text


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain profile``."""
    parser.add_argument("name", choices=PROFILE_NAMES, help="the profile to print")


def run_cli(args: argparse.Namespace) -> int:
    """Print the profile's YAML text (``vstain profile quick > my.yaml``, then ``--profile my.yaml``)."""
    print(profile_text(args.name), end="")
    return 0
