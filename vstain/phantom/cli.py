"""``vstain phantom``: generate the synthetic dataset, its manifest and split."""

from __future__ import annotations

import argparse
import time


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``vstain phantom``."""
    parser.add_argument("--profile", default="quick", help="profile name or YAML (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: results/<profile>/dataset)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the dataset is complete")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    """Generate (or complete) the dataset and print where its manifest is."""
    from vstain.config import load_profile
    from vstain.phantom.dataset import ensure_dataset, generate_dataset

    profile = load_profile(args.profile)
    start = time.perf_counter()
    make = generate_dataset if args.force else ensure_dataset
    manifest = make(profile, args.out, progress=not args.quiet)
    print(f"{manifest} ({time.perf_counter() - start:.1f} s)")
    return 0
