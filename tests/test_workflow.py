"""The workflow's DAG resolves for the paper profile with every job of the study (dry run, no work done)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vstain.config import load_profile

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
    assert counts["notebook"] == len(chapters) == 11
    for stage in ("dataset", "register", "evaluate", "evaluate_he", "frc", "volume", "uncertainty", "book"):
        assert counts[stage] == 1, stage


@pytest.mark.slow
def test_readme_papermill_example_trains_and_shows_only_the_named_model(tmp_path, monkeypatch):
    """The README's `papermill 03_training -p model pix2pix -p fold F`, on smoke: Pix2Pix alone is trained."""
    import papermill

    monkeypatch.setenv("VSTAIN_RESULTS", str(tmp_path / "results"))
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
