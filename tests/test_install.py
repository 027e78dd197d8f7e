"""A non-editable ``pip install .`` carries the profiles and runs a command outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_package_checks_the_manifest_with_a_packaged_profile(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies come from this environment's site-packages: a path line in a .pth file adds
    # the folder without running its own .pth files, so the editable install of the checkout stays out.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    build = tmp_path / "src"
    shutil.copytree(ROOT, build, ignore=shutil.ignore_patterns(".venv", ".git", "results", "book", "*.egg-info",
                                                              "__pycache__", ".snakemake"))
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                                "--no-index", str(build)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "data_manifest.yaml", work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSTAIN_")}
    env["VSTAIN_RESULTS"] = str(work / "results")
    where = subprocess.run([str(python), "-c", "import vstain; print(vstain.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert str(site) in where and str(ROOT) not in where
    done = subprocess.run([str(env_dir / "bin" / "vstain"), "check-manifest", "--profile", "smoke"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (work / "results" / "smoke" / "dataset" / "split.csv").is_file()
    shown = subprocess.run([str(python), "-m", "vstain", "profile", "quick"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert "name: quick" in shown


def test_the_checkout_is_found_from_any_working_directory(tmp_path, monkeypatch):
    """Chapters run with the notebook folder as working directory: results and manifest are the checkout's."""
    from vstain import layout

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VSTAIN_RESULTS", raising=False)
    monkeypatch.delenv("VSTAIN_MANIFEST", raising=False)
    assert layout.results_root() == layout.PROJECT_ROOT / "results"
    assert layout.default_manifest_path() == layout.PROJECT_ROOT / "data_manifest.yaml"
