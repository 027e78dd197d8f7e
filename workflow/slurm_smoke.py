"""The smoke study through a real SLURM: a throwaway single-node cluster on this machine, then two checks.

1. The smoke study (dataset to Table 1, and the Table 1 chapter by papermill) runs through
   ``workflow/profiles/slurm`` as SLURM batch jobs from a shell without the venv on PATH, and its
   ``evaluation/table1.csv`` equals the local run's (``snakemake --cores N``, brought up to date first).
2. A training job on two ranks (``training.ranks: 2``, gloo on the CPU) runs as one SLURM job in which the train rule
   starts torchrun, and its checkpoint equals the same two-rank training run locally with torchrun.
3. A training job stopped by SLURM mid-run is resubmitted by the workflow's retry, resumes from its last checkpoint
   and ends with the same weights as an uninterrupted run: cancelled by ``scancel`` after two epochs (SIGTERM, then
   SIGKILL after KillWait, as at a time limit), and on request stopped at a one-minute time limit as a chain of jobs.

The cluster: a munge key, a ``slurm.conf`` for one node with this machine's CPUs and memory, no accounting database,
``munged``, ``slurmctld`` and ``slurmd`` started in the foreground with every file under one temporary folder, and
stopped by their process ids when the script ends (also on failure or Ctrl-C). It needs Debian's ``slurm-wlm`` and
``munge`` packages and root (slurmd starts jobs as their user); ``.ci/run`` installs them where it can. The SLURM
profile is the repository's with the resources edited as a user would for this node: every partition set to the
local one, CPUs and memory within the node, no GPU request.

Usage (from the checkout, with the venv's interpreter)::

    .venv/bin/python workflow/slurm_smoke.py                          # Table 1, two ranks, scancel (CI)
    .venv/bin/python workflow/slurm_smoke.py --time-limit-epochs 100  # also a chain of one-minute jobs
    .venv/bin/python workflow/slurm_smoke.py --skip-resume --skip-ranks   # Table 1 only

Exit status 0 when every check passes, 1 when a check fails, 77 when SLURM or munge is not installed or this is not
root (nothing was run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIR = ROOT / "workflow" / "profiles" / "slurm"
PARTITION = "local"
SKIPPED = 77
DAEMONS = ("munged", "slurmctld", "slurmd")


def say(text: str) -> None:
    print(f"[slurm-smoke {time.strftime('%H:%M:%S')}] {text}", flush=True)


def missing_requirements() -> str | None:
    """Why this machine cannot run the check, or None."""
    missing = [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]
    missing += [c for c in ("sbatch", "srun", "squeue", "scancel", "scontrol") if shutil.which(c) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (Debian: apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "needs root (slurmd starts each job as the user who submitted it)"
    return None


def daemon(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_memory_mb() -> int:
    """Usable memory of this machine for jobs (MemTotal less a margin, as slurmd -C reports it)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512
    raise RuntimeError("/proc/meminfo has no MemTotal")


class Cluster:
    """A single-node SLURM under ``folder``; :meth:`stop` ends the daemons it started, by process id."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cpus = os.cpu_count() or 1
        self.memory_mb = node_memory_mb()
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=str(folder / "slurm.conf"))

    def write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        for sub in ("munge", "state", "spool", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        key = self.folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (self.folder / "munge").chmod(0o700)
        f = self.folder
        conf = f"""\
ClusterName=vstain-smoke
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={f}/munge/munge.socket
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
# finished jobs stay visible to squeue for 10 minutes: the workflow's status command (no accounting here)
MinJobAge=600
# a cancelled or timed-out job gets SIGTERM, then SIGKILL after this many seconds (as on a real cluster)
KillWait=30
SchedulerType=sched/backfill
NodeName={host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
        (f / "slurm.conf").write_text(conf)
        # Inside each job the plugin's jobstep runs `srun` with every SLURM_* variable removed, SLURM_CONF too: a
        # real cluster keeps slurm.conf where srun looks without it (/etc/slurm/). This one keeps it here, so the
        # jobs find an `srun` that names it (the folder goes first on the jobs' PATH; nothing in /etc is touched).
        (f / "bin").mkdir(exist_ok=True)
        wrapper = f / "bin" / "srun"
        wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={f / "slurm.conf"} exec {shutil.which("srun")} "$@"\n')
        wrapper.chmod(0o755)

    def start(self) -> None:
        self.write_config()
        f = self.folder
        logs = {}
        commands = {
            "munged": [daemon("munged"), "--foreground", "--force", f"--key-file={f}/munge/munge.key",
                       f"--socket={f}/munge/munge.socket", f"--pid-file={f}/munge/munged.pid",
                       f"--log-file={f}/log/munged.log", f"--seed-file={f}/munge/munged.seed"],
            "slurmctld": [daemon("slurmctld"), "-D", "-i", "-f", str(f / "slurm.conf")],
            "slurmd": [daemon("slurmd"), "-D", "-f", str(f / "slurm.conf")],
        }
        for name in DAEMONS:
            logs[name] = open(f / "log" / f"{name}.out", "w")  # noqa: SIM115  (closed with the process)
            self.processes[name] = subprocess.Popen(commands[name], stdout=logs[name], stderr=subprocess.STDOUT,
                                                    env=self.env, start_new_session=True)
            if name == "munged":
                self._wait(lambda: (f / "munge" / "munge.socket").exists(), "munged's socket", 20)
            if name == "slurmctld":
                self._wait(lambda: self._run(["scontrol", "ping"]).stdout.count("UP") > 0, "slurmctld", 30)
        self._wait(lambda: "idle" in self._run(["sinfo", "-h", "-o", "%T"]).stdout, "the node to be idle", 60)
        say(f"SLURM up: 1 node, {self.cpus} CPUs, {self.memory_mb} MB, partition {PARTITION!r}, "
            f"daemon pids {', '.join(f'{n} {p.pid}' for n, p in self.processes.items())}")

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True)

    def _wait(self, ready, what: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited (log: {self.folder / 'log'}):\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what} (logs in {self.folder / 'log'}):\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                         for p in sorted((self.folder / "log").glob("*")) if p.is_file())

    def stop(self) -> None:
        """SIGTERM each daemon this script started (by its pid), SIGKILL any that has not ended after 15 s."""
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        say("SLURM daemons stopped")


def local_profile(folder: Path, cluster: Cluster, extra: dict | None = None) -> Path:
    """The repository's SLURM profile with its resources edited for this one node (as its comments ask)."""
    profile = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
    jobs = [profile["default-resources"], *profile.get("set-resources", {}).values()]
    for resources in jobs:
        resources["slurm_partition"] = PARTITION
        resources["cpus_per_task"] = 1
        resources["mem_mb"] = min(int(resources["mem_mb"]), cluster.memory_mb // cluster.cpus)
        resources.pop("gpu", None)  # no GPU on this node
        resources.pop("gpu_model", None)
    profile["slurm-init-seconds-before-status-checks"] = 5  # smoke jobs take seconds; the default waits 40
    profile.update(extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def snakemake(args: list[str], env: dict, log: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", *args]
    with open(log, "w") as handle:
        return subprocess.run(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def clean_env(cluster: Cluster, results: Path) -> dict:
    """The submitting shell of a new user: no venv on PATH, no PYTHONPATH (jobs must not depend on either)."""
    env = {k: v for k, v in cluster.env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin]
    env["PATH"] = os.pathsep.join([str(cluster.folder / "bin"), *path])
    env["VSTAIN_RESULTS"] = str(results)
    return env


def check_table1(cluster: Cluster, work: Path) -> bool:
    """The smoke study to Table 1 through SLURM, compared with the local run's Table 1."""
    results = work / "results-slurm"
    target = f"{results}/smoke/evaluation/table1.csv"
    env = clean_env(cluster, results)
    started = time.monotonic()
    chapter = f"{results}/smoke/notebooks/05_evaluation.ipynb"  # a papermill job too
    done = snakemake([target, chapter, "--workflow-profile", str(local_profile(work / "profile", cluster)),
                      "--config", "profile=smoke"], env, work / "snakemake-slurm.log")
    minutes = (time.monotonic() - started) / 60
    if done.returncode != 0:
        say(f"FAIL: the SLURM smoke study failed after {minutes:.1f} min:\n{log_tail(work / 'snakemake-slurm.log')}")
        return False
    submitted = (work / "snakemake-slurm.log").read_text().count("has been submitted with SLURM jobid")
    say(f"SLURM smoke study to Table 1: {submitted} batch jobs, {minutes:.1f} min")

    # the local run: the same target under the default results (made by `make test`; brought up to date here)
    local_env = dict(os.environ)
    local_env.pop("VSTAIN_RESULTS", None)
    local_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{local_env.get('PATH', '')}"
    local_target = str(ROOT / "results" / "smoke" / "evaluation" / "table1.csv")
    started = time.monotonic()
    done = snakemake([local_target, "--cores", str(cluster.cpus), "--config", "profile=smoke"], local_env,
                     work / "snakemake-local.log")
    if done.returncode != 0:
        say(f"FAIL: the local smoke study failed:\n{log_tail(work / 'snakemake-local.log')}")
        return False
    say(f"local smoke Table 1 up to date in {(time.monotonic() - started) / 60:.1f} min")
    slurm_table, local_table = Path(target).read_text(), Path(local_target).read_text()
    if slurm_table != local_table:
        say(f"FAIL: Table 1 differs.\nSLURM ({target}):\n{slurm_table}\nlocal ({local_target}):\n{local_table}")
        return False
    say(f"PASS: Table 1 through SLURM equals the local run's ({len(local_table.splitlines()) - 1} rows)")
    return True


def resume_profile(work: Path, epochs: int, model: str) -> Path:
    """The smoke profile with one model, ten times the patches per epoch and more epochs: a training job of a minute
    or two (a smoke epoch takes a fraction of a second), long enough to be stopped mid-run."""
    profile = yaml.safe_load(subprocess.run([sys.executable, "-m", "vstain", "profile", "smoke"], cwd=ROOT,
                                            capture_output=True, text=True, check=True).stdout)
    profile["training"]["models"] = [model]
    profile["training"]["epochs"] = epochs
    profile["training"]["patches_per_pair"] *= 10
    path = work / f"smoke-resume-{epochs}.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def ranks_profile(work: Path, model: str, ranks: int) -> Path:
    """The smoke profile with one model trained on ``ranks`` processes (its global batch a multiple of them)."""
    profile = yaml.safe_load(subprocess.run([sys.executable, "-m", "vstain", "profile", "smoke"], cwd=ROOT,
                                            capture_output=True, text=True, check=True).stdout)
    profile["training"]["models"] = [model]
    profile["training"]["ranks"] = ranks
    profile["training"]["batch_size"] = ranks * max(1, profile["training"]["batch_size"] // ranks)
    path = work / f"smoke-ranks-{ranks}.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def check_ranks(cluster: Cluster, work: Path, model: str, ranks: int = 2) -> bool:
    """One training job on ``ranks`` CPU ranks through SLURM (torchrun inside the job) equals the local torchrun run."""
    import torch

    profile = ranks_profile(work, model, ranks)
    results, reference = work / "results-ranks", work / "results-ranks-local"
    for root in (results, reference):  # the smoke study's dataset and registration (the same sections) are reused
        for stage in ("dataset", "registered"):
            shutil.copytree(work / "results-slurm" / "smoke" / stage, root / "smoke" / stage)
    run = results / "smoke" / "models" / model / "fold0"
    target = str(run / "training.json")
    env = clean_env(cluster, results)
    args = ["--config", f"profile={profile}"]
    snakemake([target, "--touch", "--cores", "1", *args], env, work / "snakemake-ranks-touch.log")
    (run / "training.json").unlink(missing_ok=True)
    log = work / "snakemake-ranks.log"
    started = time.monotonic()
    done = snakemake([target, "--printshellcmds", "--workflow-profile",
                      str(local_profile(work / "profile-ranks", cluster)), *args], env, log)
    if done.returncode != 0:
        say(f"FAIL: the {ranks}-rank training job failed through SLURM:\n{log_tail(log)}")
        return False
    text = log.read_text(errors="replace")
    say(f"{ranks}-rank training through SLURM in {(time.monotonic() - started) / 60:.1f} min")
    local = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                            str(ranks), "-m", "vstain", "train", "--profile", str(profile), "--model", model,
                            "--fold", "0", "--results", str(reference)], cwd=ROOT, env=clean_env(cluster, reference),
                           capture_output=True, text=True)
    if local.returncode != 0:
        say(f"FAIL: the local {ranks}-rank run failed:\n{local.stderr[-3000:]}")
        return False
    through = torch.load(run / "last.pt", weights_only=True)
    straight = torch.load(reference / "smoke" / "models" / model / "fold0" / "last.pt", weights_only=True)
    networks = straight["state"]["networks"]
    checks = {
        "one SLURM job": text.count("has been submitted with SLURM jobid") == 1,
        f"the job started torchrun with {ranks} processes":
            f"-m torch.distributed.run --standalone --nproc_per_node {ranks} -m vstain train" in text,
        f"the run was trained on {ranks} ranks": through.get("ranks") == straight.get("ranks") == ranks,
        "its checkpoint equals the local torchrun run's (every network tensor)":
            through["epoch"] == straight["epoch"] and all(
                torch.equal(through["state"]["networks"][n][k], networks[n][k]) for n in networks for k in networks[n]),
    }
    for what, ok in checks.items():
        say(f"{'PASS' if ok else 'FAIL'} (ranks): {what}")
    if not all(checks.values()):
        say(f"workflow log:\n{log_tail(log)}")
    return all(checks.values())


def jobs_of(cluster: Cluster) -> list[str]:
    out = cluster._run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"]).stdout
    return out.split()


def check_resume(cluster: Cluster, work: Path, epochs: int, model: str, kill: str) -> bool:
    """A training job killed by SLURM mid-run resumes, through the workflow's retry, to the uninterrupted weights.

    ``kill="scancel"``: the job is cancelled after two epochs (one retry). ``kill="timelimit"``: the training job asks
    for one minute and SLURM stops it at that limit, as many times as it takes (a chain of jobs; eight retries).
    """
    import pandas as pd
    import torch

    profile = resume_profile(work, epochs, model)
    results, reference = work / f"results-{kill}", work / f"results-reference-{epochs}"
    # the dataset and registration of the smoke study (the same sections in this profile) are reused
    for root in (results, reference):
        if root == reference and root.exists():
            continue  # made by the other check
        for stage in ("dataset", "registered"):
            shutil.copytree(work / "results-slurm" / "smoke" / stage, root / "smoke" / stage)
    run = results / "smoke" / "models" / model / "fold0"
    target = str(run / "training.json")
    env = clean_env(cluster, results)
    # --touch first: the copied stages are taken as made by this workflow, so only the training job runs
    args = ["--config", f"profile={profile}"]
    snakemake([target, "--touch", "--cores", "1", *args], env, work / f"snakemake-{kill}-touch.log")
    (run / "training.json").unlink(missing_ok=True)
    extra = {"retries": 1} if kill == "scancel" else {"retries": 8}
    slurm_profile = local_profile(work / f"profile-{kill}", cluster, extra)
    if kill == "timelimit":
        config = yaml.safe_load((slurm_profile / "config.yaml").read_text())
        config["set-resources"]["train"]["runtime"] = 1  # minutes
        (slurm_profile / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    log = work / f"snakemake-{kill}.log"
    cmd = [sys.executable, "-m", "snakemake", "-s", "workflow/Snakefile", target, "--workflow-profile",
           str(slurm_profile), *args]
    started = time.monotonic()
    history = run / "history.csv"
    first_job, before = None, None
    with open(log, "w") as handle:
        workflow = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while workflow.poll() is None and time.monotonic() < deadline:
            running = jobs_of(cluster)
            if first_job is None and running:
                first_job = running[0]
            if first_job is not None and first_job in running and history.is_file():
                with contextlib.suppress(Exception):  # a history being replaced is read at the next turn
                    before = pd.read_csv(history)  # what the first job had written when it was stopped
                if kill == "scancel" and before is not None and len(before) >= 2 and (run / "last.pt").is_file():
                    saved = int(torch.load(run / "last.pt", weights_only=True)["epoch"])
                    cluster._run(["scancel", first_job])
                    say(f"scancel {first_job} after epoch {saved} of {epochs} "
                        f"({time.monotonic() - started:.0f} s after submission)")
                    while first_job in jobs_of(cluster):
                        time.sleep(0.5)
            time.sleep(0.5)
        code = workflow.wait(timeout=60)
    finally:
        if workflow.poll() is None:
            workflow.send_signal(signal.SIGINT)  # Snakemake cancels its SLURM jobs on Ctrl-C
            workflow.wait(60)
    text = log.read_text(errors="replace")
    minutes = (time.monotonic() - started) / 60
    if code != 0 or first_job is None or before is None:
        say(f"FAIL: the workflow did not finish after the retries (exit {code}, first job {first_job}):\n"
            f"{log_tail(log)}")
        return False
    job_logs = list((ROOT / ".snakemake" / "slurm_logs").rglob(f"{first_job}.log"))
    killed = job_logs[0].read_text(errors="replace") if job_logs else ""
    submissions = text.count("has been submitted with SLURM jobid")
    after = pd.read_csv(history)
    say(f"{kill}: training of {epochs} epochs in {submissions} SLURM jobs, {minutes:.1f} min")
    checks = {
        "the stopped job's vstain caught SIGTERM (exit 143, 'terminated')": "vstain train: terminated" in killed,
        "the workflow submitted the training job again": submissions == 2 if kill == "scancel" else submissions >= 2,
        f"the retry resumed: epochs 1-{len(before)} kept from the stopped job (their timings too)":
            0 < len(before) < epochs and after.iloc[:len(before)].equals(before) and len(after) == epochs,
    }
    if kill == "timelimit":
        checks["SLURM stopped the first job at its time limit"] = "DUE TO TIME LIMIT" in killed
    # the uninterrupted run, locally, with the same profile and pairs (once for both checks)
    if not (reference / "smoke" / "models" / model / "fold0" / "training.json").is_file():
        subprocess.run([sys.executable, "-m", "vstain", "train", "--profile", str(profile), "--model", model,
                        "--fold", "0", "--results", str(reference)], cwd=ROOT, env=clean_env(cluster, reference),
                       check=True, capture_output=True)
    resumed = torch.load(run / "last.pt", weights_only=True)
    straight = torch.load(reference / "smoke" / "models" / model / "fold0" / "last.pt", weights_only=True)
    same = all(torch.equal(resumed["generators"][net][k], straight["generators"][net][k])
               for net in straight["generators"] for k in straight["generators"][net])
    checks["the final checkpoint equals the uninterrupted run's (every generator tensor)"] = (
        same and resumed["epoch"] == straight["epoch"] == epochs)
    for what, ok in checks.items():
        say(f"{'PASS' if ok else 'FAIL'} ({kill}): {what}")
    if not all(checks.values()):
        say(f"workflow log:\n{log_tail(log)}\nstopped job's log:\n{killed[-3000:]}")
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-resume", action="store_true", help="not the scancel check")
    parser.add_argument("--skip-ranks", action="store_true", help="not the two-rank training check")
    parser.add_argument("--resume-epochs", type=int, default=30,
                        help="epochs of the training job that is stopped (about 3 s each here)")
    parser.add_argument("--resume-model", default="mod_cyclegan")
    parser.add_argument("--time-limit-epochs", type=int, default=0,
                        help="also stop a training job of this many epochs (100: a few minutes here) at a one-minute "
                             "time limit, as a chain of jobs (0, the default: not)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, results)")
    args = parser.parse_args(argv)
    why = missing_requirements()
    if why:
        say(f"SKIPPED: cannot start a local SLURM: {why}")
        return SKIPPED
    work = Path(tempfile.mkdtemp(prefix="vstain-slurm-"))
    cluster = Cluster(work / "cluster")
    started = time.monotonic()
    ok = False
    try:
        cluster.start()
        ok = check_table1(cluster, work)
        if ok and not args.skip_ranks:
            ok = check_ranks(cluster, work, args.resume_model)
        if ok and not args.skip_resume:
            ok = check_resume(cluster, work, args.resume_epochs, args.resume_model, "scancel")
        if ok and args.time_limit_epochs:
            ok = check_resume(cluster, work, args.time_limit_epochs, args.resume_model, "timelimit")
    except (RuntimeError, subprocess.CalledProcessError) as err:
        say(f"FAIL: {err}")
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        say(f"{'PASSED' if ok else 'FAILED'} in {(time.monotonic() - started) / 60:.1f} min"
            + (f"; files in {work}" if args.keep or not ok else ""))
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
