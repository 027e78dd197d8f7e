"""Which results a built book shows: a digest of the artefacts it was built from, kept beside the book.

The workflow's ``book`` rule writes ``book/_build/html/_results_digest.json`` after a successful build: the profile,
the results folder, and the SHA-256 of every stage's record file and executed notebook the book was built from, with
one digest over them all. The same short digest stands in the footer of every page. A book whose results have been
deleted or recomputed since is recognised with ``check``.

Usage (the workflow's own interpreter, from the checkout)::

    .venv/bin/python workflow/results_digest.py write OUT.json --profile quick --results results/quick FILE...
    .venv/bin/python workflow/results_digest.py config book/_config.yml OUT.json book/_generated/_config.yml
    .venv/bin/python workflow/results_digest.py check book/_build/html/_results_digest.json

``check`` exits 0 when every file still has its recorded digest, 1 when one changed or is missing (each named), and
2 when the digest file itself cannot be read.

Examples
--------
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> (folder / "table1.csv").write_text("model,ssim\\npix2pix,0.5\\n")
23
>>> record = results_digest([folder / "table1.csv"], folder, profile="smoke")
>>> record["files"]["table1.csv"]["bytes"], len(record["digest"])
(23, 64)
>>> stale_files(record)
[]
>>> _ = (folder / "table1.csv").write_text("model,ssim\\npix2pix,0.6\\n")
>>> stale_files(record)
['table1.csv (changed)']
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

FORMAT = 1
SHORT = 12  # characters of the digest shown in the book's footer


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in chunks (a file of any size in little memory)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            sha.update(block)
    return sha.hexdigest()


def _name(path: Path, root: Path) -> str:
    # a file under the results folder is named relative to it, so a moved results tree still compares
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def results_digest(files, root: str | Path, profile: str) -> dict:
    """A record of the files a book was built from: each file's SHA-256 and size, and one digest over all.

    Parameters
    ----------
    files : iterable of path-like
        The stage record files and executed notebooks. Each must exist.
    root : path-like
        The results folder (``results/<profile>``); files under it are named relative to it.
    profile : str
        The profile name the results were computed with.

    Returns
    -------
    dict
        ``{"format", "profile", "results", "digest", "built", "files": {name: {"sha256", "bytes"}}}``; ``digest`` is
        the SHA-256 of the sorted ``name sha256`` lines, so it depends on the files' contents and names only.
    """
    root = Path(root)
    entries = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"results digest: {path} does not exist (a result the book is built from)")
        entries[_name(path, root)] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    lines = "".join(f"{name} {entries[name]['sha256']}\n" for name in sorted(entries))
    return {
        "format": FORMAT,
        "profile": str(profile),
        "results": str(root.resolve()),
        "digest": hashlib.sha256(lines.encode()).hexdigest(),
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "files": {name: entries[name] for name in sorted(entries)},
    }


def stale_files(record: dict) -> list[str]:
    """The recorded files that are missing or whose contents changed since the record was made (``[]``: none)."""
    root = Path(record["results"])
    stale = []
    for name, entry in record["files"].items():
        path = Path(name) if Path(name).is_absolute() else root / name
        if not path.is_file():
            stale.append(f"{name} (missing)")
        elif path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            stale.append(f"{name} (changed)")
    return stale


def footer(record: dict) -> str:
    """The line every page of the book shows: the profile, the results folder and the short digest."""
    count = len(record["files"])
    return (f"Built from the <code>{record['profile']}</code> results ({count} file{'s' * (count != 1)}, digest "
            f"<code>{record['digest'][:SHORT]}</code>, listed in <code>_results_digest.json</code>) "
            f"on {record['built'][:10]}.")


def _write_text(path: Path, text: str) -> None:
    # nothing half-written: a temporary name beside the target, then a rename
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_record(path: str | Path) -> dict:
    """A digest file read back, with a clear error naming the file and field when it is not one."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable results digest ({error})") from None
    for key in ("profile", "results", "digest", "files"):
        if key not in record:
            raise ValueError(f"{path}: field '{key}' missing (not a results digest)")
    return record


def book_config(config_in: str | Path, record: dict) -> dict:
    """The book's configuration with the digest line added as every page's footer (``html.extra_footer``)."""
    config = yaml.safe_load(Path(config_in).read_text()) or {}
    config.setdefault("html", {})["extra_footer"] = footer(record)
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="record the files a book is built from")
    write.add_argument("out", type=Path)
    write.add_argument("files", nargs="+", type=Path)
    write.add_argument("--profile", required=True)
    write.add_argument("--results", required=True, type=Path)
    config = commands.add_parser("config", help="the book's _config.yml with the digest in every page's footer")
    config.add_argument("config_in", type=Path)
    config.add_argument("record", type=Path)
    config.add_argument("config_out", type=Path)
    check = commands.add_parser("check", help="whether a book's results are still the ones it was built from")
    check.add_argument("record", type=Path)
    args = parser.parse_args(argv)

    if args.command == "write":
        record = results_digest(args.files, args.results, args.profile)
        _write_text(args.out, json.dumps(record, indent=1) + "\n")
        print(f"results digest {record['digest'][:SHORT]} ({len(record['files'])} files) -> {args.out}")
        return 0
    try:
        record = read_record(args.record)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if args.command == "config":
        _write_text(args.config_out, yaml.safe_dump(book_config(args.config_in, record), sort_keys=False))
        return 0
    stale = stale_files(record)
    if stale:
        print(f"{args.record}: the book is stale; {len(stale)} of its {len(record['files'])} results changed "
              f"since it was built:", *stale, sep="\n  ")
        return 1
    print(f"{args.record}: the book shows the current {record['profile']} results "
          f"(digest {record['digest'][:SHORT]}, {len(record['files'])} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
