"""Executors for `sweep`: they only decide where `sweep.run_point` runs.

`run_local` uses spawned processes on this machine; `run_slurm` submits one SLURM job array
through submitit (an optional dependency: `pip install -e '.[slurm]'`) and watches it with
`squeue`/`scontrol`, so it also works on clusters without accounting (`sacct`). Both return
{point name: {"status": ..., "error": ...}}; status is "done", "failed" (the point raised),
"busy" (another process was training or sampling its folder: `locks.Busy`), or the SLURM
state a job ended in without a result (CANCELLED, TIMEOUT, PREEMPTED, ...).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mosaicdiff.errors import UserError, check
from mosaicdiff.io import atomic_write_json, read_json

# Ended without a result for reasons outside the point: resubmitted within the same call.
RETRY_STATES = {"PREEMPTED", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL", "DEADLINE", "LOST"}
ACTIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
                 "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}  # fmt: skip


def run_local(specs: list[dict], jobs: int, log=print) -> dict[str, dict]:
    """Run `run_point` on every spec in `jobs` spawned processes (one thread each when > 1)."""
    from concurrent.futures import as_completed

    from mosaicdiff.experiments.sweep import run_point
    from mosaicdiff.pool import process_pool

    outcomes = {}
    with process_pool(jobs) as pool:
        futures = {pool.submit(run_point, s): s["name"] for s in specs}
        for fut in as_completed(futures):
            name = futures[fut]
            try:
                fut.result()
                outcomes[name] = {"status": "done"}
            except Exception as e:  # a failed point must not stop the others
                outcomes[name] = raised(f"{type(e).__name__}: {e}")
            log(f"sweep: {name} {said(outcomes[name])}")
    return outcomes


def raised(error: str) -> dict:
    """The outcome of a point that raised `error` ("Name: message"): busy where another
    process held its folder (a second sweep into the same out), else failed."""
    from mosaicdiff.locks import Busy

    return {"status": "busy" if error.startswith(f"{Busy.__name__}:") else "failed", "error": error}


def said(outcome: dict) -> str:
    """An outcome in a progress line: its status, and the error it raised (its first line)."""
    if outcome["status"] not in ("failed", "busy"):
        return outcome["status"]
    error = outcome["error"].strip().splitlines()[0] if outcome["error"] else ""
    return f"{outcome['status']}: {error}"


@dataclass(frozen=True)
class SlurmOptions:
    """What each point's job asks SLURM for (`sbatch` options in brackets)."""

    partition: str | None = None  # [--partition]
    time_min: int = 60  # [--time], minutes per point
    cpus_per_task: int = 1  # [--cpus-per-task]; also torch's thread count
    mem: str | None = None  # [--mem], e.g. 4G
    gpus_per_node: int = 0  # [--gpus-per-node]; pair with --set device=cuda
    array_parallelism: int = 32  # [--array=...%K]: points running at once
    retries: int = 1  # resubmissions of points that ended in a RETRY_STATES state
    extra: dict = field(default_factory=dict)  # any other sbatch option, e.g. {"account": "x"}
    poll_s: float = 5.0

    def __post_init__(self):
        for flag, value in (
            ("time", self.time_min),
            ("cpus-per-task", self.cpus_per_task),
            ("array-parallelism", self.array_parallelism),
        ):
            check(value >= 1, f"--{flag}={value} must be at least 1")
        check(self.gpus_per_node >= 0, f"--gpus-per-node={self.gpus_per_node} must be 0 or more")
        check(self.retries >= 0, f"--retries={self.retries} must be 0 or more")


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError(
            "--executor slurm needs submitit: pip install -e '.[slurm]' (or pip install submitit)"
        ) from None
    return submitit


def run_slurm(specs: list[dict], folder: Path, opts: SlurmOptions, log=print) -> dict[str, dict]:
    """Submit `specs` as a job array, wait, and resubmit points that were preempted or lost.

    Refuses (UserError) to submit a point whose job from an earlier call is still queued or
    running, so one run directory never has two writers.
    """
    submitit = import_submitit()
    from mosaicdiff.experiments.sweep import run_point

    folder.mkdir(parents=True, exist_ok=True)
    ledger_path = folder / "jobs.json"
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    for s in specs:
        old = ledger.get(s["name"])
        if old and queue_state(old) in ACTIVE_STATES:
            raise UserError(
                f"point {s['name']} is still queued or running as SLURM job {old}; "
                "wait for it (or scancel it) and run sweep again"
            )
    params = {
        "name": "mosaicdiff-sweep",
        "timeout_min": opts.time_min,
        "cpus_per_task": opts.cpus_per_task,
        "tasks_per_node": 1,
        "slurm_array_parallelism": opts.array_parallelism,
    }
    if opts.partition:
        params["slurm_partition"] = opts.partition
    if opts.mem:
        params["slurm_mem"] = opts.mem
    if opts.gpus_per_node:
        params["gpus_per_node"] = opts.gpus_per_node
    if opts.extra:
        params["slurm_additional_parameters"] = dict(opts.extra)
    executor = submitit.AutoExecutor(folder=folder / "logs", cluster="slurm")
    executor.update_parameters(**params)
    outcomes, batch = {}, list(specs)
    for attempt in range(opts.retries + 1):
        try:
            jobs = executor.map_array(run_point, batch)
        except Exception as e:  # submitit wraps sbatch's message in its own error types
            raise UserError(
                f"sbatch refused the sweep: {str(e).strip().splitlines()[-1]}"
            ) from None
        names = [s["name"] for s in batch]
        ledger.update({n: j.job_id for n, j in zip(names, jobs, strict=True)})
        atomic_write_json(ledger_path, ledger)
        log(
            f"sweep: submitted {len(jobs)} points as SLURM job array {jobs[0].job_id.split('_')[0]}"
        )
        outcomes.update(wait_jobs(dict(zip(names, jobs, strict=True)), opts.poll_s, log))
        batch = [s for s in batch if outcomes[s["name"]]["status"] in RETRY_STATES]
        if not batch or attempt == opts.retries:
            break
        log(f"sweep: resubmitting {len(batch)} preempted or lost points")
    return outcomes


def raised_in_job(e: Exception) -> str:
    """The point's own error, from submitit's report of a failed job: the traceback's last
    "module.Name: message" (or bare "Name") line, as "Name: message" ("UserError: ...",
    "TrainingDiverged: ..."), not the log file's path after it."""
    import re

    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    pattern = re.compile(r"(?:\w+\.)*([A-Z]\w*)(: .*)?")
    raised = [m for line in lines if (m := pattern.fullmatch(line))]
    if not raised:
        return lines[-1] if lines else repr(e)
    return raised[-1].group(1) + (raised[-1].group(2) or "")


def wait_jobs(jobs: dict, poll_s: float, log=print) -> dict[str, dict]:
    """Wait until every job has a result or has left the queue; {name: outcome}. While jobs
    wait in the queue, why they wait (squeue's reason) is logged each time it changes: a job
    asking for more than any node has waits there for ever, and says so only there."""
    outcomes, pending, reason = {}, dict(jobs), None
    while pending:
        waiting = []
        for name, job in list(pending.items()):
            state = queue_state(job.job_id)  # before the result check: no race with its exit
            if state == "PENDING":
                waiting.append(job.job_id)
            if job.paths.result_pickle.exists():
                try:
                    job.result()
                    outcomes[name] = {"status": "done"}
                except Exception as e:  # the point's own exception, re-raised by submitit
                    outcomes[name] = raised(raised_in_job(e))
            elif state in ACTIVE_STATES:
                continue
            else:
                outcomes[name] = {"status": final_state(job.job_id), "error": "no result"}
            log(f"sweep: {name} ({job.job_id}) {said(outcomes[name])}")
            del pending[name]
        if waiting and (now := pending_reason(waiting[0])) != reason:
            reason = now
            log(f"sweep: {len(waiting)} point(s) waiting in the queue, squeue's reason: {now}")
        if pending:
            time.sleep(poll_s)
    return outcomes


def queue_state(job_id: str) -> str | None:
    """The job's state while `squeue` lists it, else None."""
    out = _run(["squeue", "-h", "-j", str(job_id), "-o", "%T"])
    states = (out or "").split()
    return states[0] if states else None


def pending_reason(job_id: str) -> str:
    """Why a pending job waits, as `squeue` says (Priority, Resources, PartitionConfig, ...)."""
    return (_run(["squeue", "-h", "-j", str(job_id), "-o", "%r"]) or "").strip() or "unknown"


def final_state(job_id: str) -> str:
    """How a job that left the queue ended: from `scontrol` (recent jobs) or `sacct`."""
    out = _run(["scontrol", "show", "job", "-o", str(job_id)]) or ""
    for word in out.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    out = _run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", str(job_id)]) or ""
    words = out.split()
    return words[0] if words else "LOST"


def _run(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None


__all__ = ["SlurmOptions", "run_local", "run_slurm"]
