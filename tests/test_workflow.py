"""The workflow: its DAG for the paper profile, jobs a batch node can run, starting afresh after deleted results
(dry runs on a stand-in study), and the digest that says which results a book was built from."""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vstain.config import load_profile
from vstain.stages import register as register_stage
from vstain.sweep import level_name, sweep_runs

ROOT = Path(__file__).resolve().parent.parent


def _job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    return counts


def test_paper_profile_dag_has_every_job(tmp_path):
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", VSTAIN_RESULTS=str(tmp_path))
    done = subprocess.run(
        [str(bin_dir / "snakemake"), "-s", "workflow/Snakefile", "all", "--dry-run", "--config", "profile=paper"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    counts = _job_counts(done.stdout)
    paper = load_profile("paper")
    grid = len(paper.training.models) * len(paper.training.folds)
    assert grid == 20  # 4 models x 5 folds, as in the paper
    assert counts["train"] == grid and counts["infer"] == grid
    assert counts["train_he"] == len(paper.he.models) == counts["infer_he"]
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert counts["notebook"] == len(chapters) == 12
    # the claim's full grid: every model at six strengths with 3 seeds, and the ablations at one strength
    assert counts["sweep_data"] == len(paper.sweep.levels) == 6
    assert counts["sweep_run"] == len(sweep_runs(paper.sweep)) == 6 * 4 * 3 + 3 * 3
    for stage in ("dataset", "register", "register_cases", "evaluate", "evaluate_he", "frc", "volume", "uncertainty",
                  "sweep", "book"):
        assert counts[stage] == 1, stage


@pytest.mark.slow
def test_readme_papermill_example_trains_and_shows_only_the_named_model(tmp_path, monkeypatch):
    """The README's `vstain register`, then `papermill 03_training -p model pix2pix -p fold F`, on smoke: Pix2Pix
    alone is trained."""
    import papermill

    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))
    # the chapter trains on the registered pairs: before the registration stage it names the command, trains nothing
    with pytest.raises(papermill.PapermillExecutionError, match="run vstain register --profile smoke"):
        papermill.execute_notebook(str(ROOT / "notebooks" / "03_training.ipynb"), str(tmp_path / "early.ipynb"),
                                   parameters={"profile": "smoke", "model": "pix2pix", "fold": 0},
                                   kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    assert not (tmp_path / "results" / "smoke" / "models").exists()
    register_stage.ensure_registered("smoke", progress=False)  # what the README runs first
    papermill.execute_notebook(str(ROOT / "notebooks" / "03_training.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"profile": "smoke", "model": "pix2pix", "fold": 0},
                               kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    trained = sorted(p.name for p in (tmp_path / "results" / "smoke" / "models").iterdir())
    assert trained == ["pix2pix"]
    with pytest.raises(papermill.PapermillExecutionError, match="is not in training.models"):
        papermill.execute_notebook(str(ROOT / "notebooks" / "03_training.ipynb"), str(tmp_path / "bad.ipynb"),
                                   parameters={"profile": "smoke", "model": "pix2pixx"},
                                   kernel_name="python3", progress_bar=False, cwd=str(ROOT))


def _dry_run_commands(tmp_path, *args):
    """The shell commands of a dry run, from a shell whose PATH has no venv (as a batch job's)."""
    bin_dir = Path(sys.executable).parent
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != bin_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env.update(PATH=path, VSTAIN_RESULTS=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", "all", "--dry-run",
                           "--printshellcmds", "--config", "profile=smoke", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_every_job_runs_the_workflow_interpreter_not_a_command_on_path(tmp_path):
    """A batch job does not inherit the submitting shell's venv: no rule may call a bare `vstain` or `papermill`."""
    out = _dry_run_commands(tmp_path)
    lines = [line.strip().removeprefix("Shell command: ") for line in out.splitlines()]
    bare = [line for line in lines if re.match(r"^(vstain|papermill|jupyter-book|python3?) ", line)
            or re.search(r"(^|[;&|]\s*|if )(vstain|papermill|jupyter-book) ", line)]
    assert not bare, bare
    interpreter = f"{sys.executable} -m vstain"
    for command in ("check-manifest", "register", "train", "infer", "evaluate", "frc", "volume", "he"):
        assert any(line.startswith(f"{interpreter} {command} ") for line in lines), command
    assert any(f"{sys.executable} -m papermill " in line for line in lines)


def test_training_rules_end_in_training_json_so_a_killed_job_keeps_its_checkpoint(tmp_path):
    """Snakemake deletes a failed job's outputs: last.pt must not be one, or a retry could not resume from it."""
    out = _dry_run_commands(tmp_path)
    for rule in ("train", "train_he"):
        blocks = [b for b in out.split("\nrule ")[1:] if b.startswith(f"{rule}:")]
        assert blocks, rule
        for block in blocks:
            outputs = re.search(r"output: (\S+)", block).group(1)
            assert outputs.endswith("/training.json") and "last.pt" not in block.split("output:")[1].split("\n")[0]
            assert 'rm -f "$run"/*.pt' in block and "run.key" in block  # stale checkpoints go when settings change


def test_slurm_profile_chains_training_jobs_within_a_cluster_time_limit():
    """Runtimes a cluster accepts (a day at most), enough retries to chain the paper's 100-hour fold, squeue status."""
    profile = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    jobs = {"default": profile["default-resources"], **profile["set-resources"]}
    for name, resources in jobs.items():
        for key in ("slurm_partition", "slurm_account", "runtime", "mem_mb", "cpus_per_task"):
            assert key in resources, (name, key)
        assert resources["runtime"] <= 24 * 60, name
    gpu_rules = {"train", "train_he", "infer", "volume", "infer_he"}
    assert gpu_rules <= set(profile["set-resources"])
    for name in gpu_rules:
        assert jobs[name]["slurm_partition"] == jobs["train"]["slurm_partition"]
        # training asks for training.ranks GPUs itself (the rule's gpu=); a profile value would override it
        assert jobs[name].get("gpu") == (None if name == "train" else 1), name
    assert jobs["train"]["tasks"] == 1  # torchrun starts the ranks inside the one task
    paper_fold_minutes = 100 * 60  # the paper's CycleGAN fold on a V100
    assert (profile["retries"] + 1) * jobs["train"]["runtime"] >= paper_fold_minutes


@pytest.mark.skipif(os.environ.get("VSTAIN_SLURM") != "1",
                    reason="set VSTAIN_SLURM=1 (root, slurm-wlm and munge installed) to run the smoke study on SLURM")
def test_smoke_study_through_a_local_slurm_equals_the_local_run_and_a_killed_training_resumes():
    """workflow/slurm_smoke.py: Table 1 through SLURM equals the local one; scancel + retry resumes to the same weights."""
    done = subprocess.run([sys.executable, str(ROOT / "workflow" / "slurm_smoke.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode == 77:
        pytest.skip(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "PASS: Table 1 through SLURM equals the local run's" in done.stdout
    assert "PASS (scancel): the final checkpoint equals the uninterrupted run's" in done.stdout
    assert "PASS (ranks): its checkpoint equals the local torchrun run's" in done.stdout


# --- starting afresh: a deleted stage folder, record or executed notebook is made again, with all after it -----------

def _copy_checkout(dest: Path) -> Path:
    """The files the workflow reads, copied to ``dest`` (the package linked): a checkout whose book is its own."""
    dest.mkdir(parents=True)
    shutil.copytree(ROOT / "workflow", dest / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "notebooks", dest / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "book", dest / "book", ignore=shutil.ignore_patterns("_build", "_generated", "chapters"))
    shutil.copy2(ROOT / "data_manifest.yaml", dest / "data_manifest.yaml")
    (dest / "vstain").symlink_to(ROOT / "vstain", target_is_directory=True)
    return dest


def _snakemake_in(checkout: Path, results: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", VSTAIN_RESULTS=str(results))
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", *args,
                           "--config", "profile=smoke"], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=600)


def _dry_run_jobs(checkout: Path, results: Path) -> list[dict]:
    """The jobs a dry run of ``all`` schedules: rule, label (``rule[wildcard values]``), input and output files."""
    done = _snakemake_in(checkout, results, "all", "--dry-run")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if "Nothing to be done" in done.stdout + done.stderr:
        return []
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", done.stdout)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        fields = dict(re.findall(r"^    (input|output|wildcards): (.*)$", block, flags=re.M))
        values = [item.split("=", 1)[1] for item in fields.get("wildcards", "").split(", ") if "=" in item]
        jobs.append({"rule": rule, "label": f"{rule}[{','.join(values)}]" if values else rule,
                     "input": fields.get("input", "").split(", ") if fields.get("input") else [],
                     "output": fields.get("output", "").split(", ") if fields.get("output") else []})
    return jobs


@pytest.fixture(scope="module")
def touched_smoke_study(tmp_path_factory):
    """A checkout copy whose smoke study and book are complete and up to date: every file the workflow makes exists
    (empty, one time stamp), the sources older. Returns (checkout, results root, the jobs of a run from scratch)."""
    base = tmp_path_factory.mktemp("afresh")
    checkout, results = _copy_checkout(base / "checkout"), base / "results"
    from_scratch = _dry_run_jobs(checkout, results)
    sources, made = 1_700_000_000, 1_800_000_000
    for path in [checkout / "data_manifest.yaml", *(checkout / "notebooks").glob("*.ipynb")]:
        os.utime(path, (sources, sources))
    for job in from_scratch:
        for name in job["output"]:
            path = checkout / name  # absolute under results, relative to the checkout for the book
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            os.utime(path, (made, made))
    assert _dry_run_jobs(checkout, results) == [], "the stand-in study is not up to date to start with"
    return checkout, results, from_scratch


def test_the_all_target_asks_for_every_file_the_workflow_makes(touched_smoke_study):
    """Snakemake makes a missing file again only when a target asks for it: `all` must name every rule's output."""
    _, _, from_scratch = touched_smoke_study
    (all_job,) = [job for job in from_scratch if job["rule"] == "all"]
    made = {name for job in from_scratch if job["rule"] != "all" for name in job["output"]}
    assert made == set(all_job["input"])
    assert {"book/_build/html/index.html", "book/_build/html/_results_digest.json"} <= made


def _rerun_cases():
    smoke = load_profile("smoke")
    grid = [f"{m},{k}" for m in smoke.training.models for k in smoke.training.folds]
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    book = {"book", "all"}
    sweep = {"sweep", *(f"sweep_data[{level_name(v)}]" for v in smoke.sweep.levels),
             *(f"sweep_run[{level_name(r.level)},{r.arm},{r.seed}]" for r in sweep_runs(smoke.sweep))}
    return {
        # Table 1: evaluation, the two chapters that read it and the book; nothing before it, not FRC beside it
        "evaluation": {"evaluate", "notebook[05_evaluation]", "notebook[09_results]", *book},
        "notebooks/05_evaluation.ipynb": {"notebook[05_evaluation]", *book},
        "he": {*(f"{r}[{m}]" for r in ("train_he", "infer_he") for m in smoke.he.models), "evaluate_he",
               "notebook[08_he_stain]", *book},
        "models": {*(f"{r}[{g}]" for r in ("train", "infer") for g in grid), "evaluate", "frc", "volume",
                   "uncertainty", *(f"notebook[{c}]" for c in ("03_training", "04_inference", "05_evaluation",
                                                           "06_frc", "07_volume", "09_results", "10_uncertainty")),
                   *book},
        # the sweep cuts its own blocks: it needs nothing before it, and only its chapter reads it
        "sweep": {*sweep, "notebook[11_misalignment]", *book},
        # the registration-only blocks are drawn by their own stage, and read by chapter 01 alone
        "registration_cases": {"register_cases", "notebook[01_registration]", *book},
        "": {*(f"{r}[{g}]" for r in ("train", "infer") for g in grid), "dataset", "register", "register_cases",
             "evaluate", "frc",
             "volume", "uncertainty", *(f"{r}[{m}]" for r in ("train_he", "infer_he") for m in smoke.he.models),
             "evaluate_he", *(f"notebook[{c}]" for c in chapters), *sweep, *book},
    }


@pytest.mark.parametrize("deleted", list(_rerun_cases()), ids=lambda d: d or "whole-profile")
def test_deleting_a_stage_folder_reruns_it_everything_after_it_and_the_book(touched_smoke_study, tmp_path, deleted):
    """`rm -rf results/smoke/<stage>` (or one executed notebook, or the whole folder) then `make book`: that part is
    made again, every job after it and the book, and nothing before it (a dry run of `all`, as `make book` runs)."""
    checkout, results, _ = touched_smoke_study
    target = results / "smoke" / deleted
    aside = tmp_path / "aside"
    target.rename(aside)  # deleted for the dry run, put back (time stamps kept) for the next case
    try:
        jobs = _dry_run_jobs(checkout, results)
    finally:
        aside.rename(target)
    labels = [job["label"] for job in jobs]
    assert len(labels) == len(set(labels)), labels
    expected = _rerun_cases()[deleted]
    assert set(labels) == expected, (sorted(set(labels) - expected), sorted(expected - set(labels)))
    if deleted == "evaluation":
        assert not {"dataset", "register", "train", "infer", "frc", "volume"} & {job["rule"] for job in jobs}


# --- the book records which results it was built from ------------------------------------------------------------

def _digest_module():
    spec = importlib.util.spec_from_file_location("results_digest", ROOT / "workflow" / "results_digest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_digest_names_every_file_and_tells_a_changed_or_missing_one(tmp_path, capsys):
    digest = _digest_module()
    results = tmp_path / "results" / "smoke"
    (results / "evaluation").mkdir(parents=True)
    (results / "evaluation" / "table1.csv").write_text("model,ssim\npix2pix,0.51\n")
    (results / "notebooks").mkdir()
    (results / "notebooks" / "05_evaluation.ipynb").write_text('{"cells": []}')
    files = [results / "evaluation" / "table1.csv", results / "notebooks" / "05_evaluation.ipynb"]
    out = tmp_path / "book" / "_results_digest.json"
    assert digest.main(["write", str(out), "--profile", "smoke", "--results", str(results), *map(str, files)]) == 0
    record = json.loads(out.read_text())
    assert record["profile"] == "smoke" and Path(record["results"]) == results.resolve()
    assert sorted(record["files"]) == ["evaluation/table1.csv", "notebooks/05_evaluation.ipynb"]
    assert record["files"]["evaluation/table1.csv"] == {
        "sha256": hashlib.sha256(b"model,ssim\npix2pix,0.51\n").hexdigest(), "bytes": 24}
    assert not list(out.parent.glob(".*.tmp"))  # written under a temporary name, then renamed
    # the digest depends on the files' names and contents only, not on their order or the time
    again = digest.results_digest(files[::-1], results, "smoke")
    assert again["digest"] == record["digest"]
    assert digest.main(["check", str(out)]) == 0
    assert "shows the current smoke results" in capsys.readouterr().out

    (results / "evaluation" / "table1.csv").write_text("model,ssim\npix2pix,0.52\n")  # same size, new numbers
    (results / "notebooks" / "05_evaluation.ipynb").unlink()
    assert digest.main(["check", str(out)]) == 1
    said = capsys.readouterr().out
    assert "evaluation/table1.csv (changed)" in said and "notebooks/05_evaluation.ipynb (missing)" in said
    assert digest.results_digest(files[:1], results, "smoke")["digest"] != record["digest"]

    with pytest.raises(FileNotFoundError, match="05_evaluation.ipynb does not exist"):
        digest.results_digest(files, results, "smoke")
    (tmp_path / "bad.json").write_text('{"profile": "smoke"}')
    assert digest.main(["check", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: field 'results' missing" in capsys.readouterr().err


def test_results_digest_puts_its_line_in_the_footer_of_the_books_configuration(tmp_path):
    digest = _digest_module()
    (tmp_path / "r.csv").write_text("a\n1\n")
    record = digest.results_digest([tmp_path / "r.csv"], tmp_path, "quick")
    config = digest.book_config(ROOT / "book" / "_config.yml", record)
    original = yaml.safe_load((ROOT / "book" / "_config.yml").read_text())
    footer = config["html"].pop("extra_footer")
    assert config == original  # nothing else changed
    assert record["digest"][:12] in footer and "<code>quick</code>" in footer and "1 file," in footer


@pytest.mark.slow
def test_the_book_rule_builds_the_book_with_its_results_digest_and_a_second_run_does_nothing(tmp_path):
    """The real `book` rule on stand-in results (empty records, one-heading chapters): the digest beside the book
    lists every record and chapter, every page's footer shows it, `check` passes; then nothing is left to do."""
    import nbformat

    checkout, results = _copy_checkout(tmp_path / "checkout"), tmp_path / "results"
    jobs = _dry_run_jobs(checkout, results)
    for job in jobs:
        if job["rule"] in ("book", "pipeline_figure", "all"):
            continue
        for name in job["output"]:
            path = checkout / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".ipynb":
                notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {path.stem}")])
                notebook.metadata.update(kernelspec={"name": "python3", "display_name": "Python 3",
                                                     "language": "python"}, language_info={"name": "python"})
                nbformat.write(notebook, path)
            else:
                path.write_text(f"{path.parent.name}\n")
    records = {name for job in jobs if job["rule"] not in ("book", "pipeline_figure", "all") for name in job["output"]}

    done = _snakemake_in(checkout, results, "all", "--cores", "1")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "rule book:" in done.stdout + done.stderr and "rule train:" not in done.stdout + done.stderr
    html = checkout / "book" / "_build" / "html"
    record = json.loads((html / "_results_digest.json").read_text())
    smoke = (results / "smoke").resolve()
    assert record["profile"] == "smoke" and Path(record["results"]) == smoke
    assert {str(smoke / name) for name in record["files"]} == {str(Path(name).resolve()) for name in records}
    for page in ("intro.html", "chapters/05_evaluation.html"):
        assert record["digest"][:12] in (html / page).read_text(), page
    check = subprocess.run([sys.executable, "workflow/results_digest.py", "check", str(html / "_results_digest.json")],
                           cwd=checkout, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert _dry_run_jobs(checkout, results) == []  # a second run recomputes nothing


def _profile_with_ranks(tmp_path, name, ranks):
    text = (ROOT / "vstain" / "profiles" / f"{name}.yaml").read_text()
    assert "  ranks: 1" in text
    path = tmp_path / f"{name}_{ranks}_ranks.yaml"
    path.write_text(text.replace("  ranks: 1", f"  ranks: {ranks}", 1))
    return path


def test_training_on_several_ranks_is_started_by_torchrun_inside_one_job_with_as_many_gpus(tmp_path):
    """training.ranks N > 1: the train rule runs torch.distributed.run with N processes and asks for gpu=N on GPU profiles."""
    out = _dry_run_commands(tmp_path, f"profile={_profile_with_ranks(tmp_path, 'smoke', 2)}")
    blocks = [b for b in out.split("\nrule ")[1:] if b.startswith("train:")]
    assert blocks
    launcher = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node 2 -m vstain train --profile"
    assert all(launcher in block for block in blocks)
    one = _dry_run_commands(tmp_path / "one")
    assert f"{sys.executable} -m vstain train --profile smoke" in one and "torch.distributed.run" not in one
    bin_dir = Path(sys.executable).parent
    paper = _profile_with_ranks(tmp_path, "paper", 4)
    done = subprocess.run([str(bin_dir / "snakemake"), "-s", "workflow/Snakefile", "all", "--dry-run",
                           "--config", f"profile={paper}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, VSTAIN_RESULTS=str(tmp_path / "paper")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    train_blocks = [b for b in done.stdout.split("\nrule ")[1:] if b.startswith("train:")]
    assert len(train_blocks) == 20 and all(re.search(r"resources: .*\bgpu=4\b", b) for b in train_blocks)
    infer_blocks = [b for b in done.stdout.split("\nrule ")[1:] if b.startswith("infer:")]
    assert infer_blocks and all(re.search(r"resources: .*\bgpu=1\b", b) for b in infer_blocks)
