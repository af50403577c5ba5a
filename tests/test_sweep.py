"""Sweeps: the grid is validated before anything runs, points run through the local executor
and (opt-in, `-m slurm`) through a real SLURM cluster, and finished points are never redone.

The SLURM tests need `sbatch` on PATH and MOSAICDIFF_SLURM_TESTS=1; `.ci/slurm` starts a
one-node cluster with scripts/slurm_local.sh and runs them.
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from mosaicdiff.errors import UserError
from mosaicdiff.experiments.sweep import register, sweep
from mosaicdiff.experiments.sweep_executors import SlurmOptions
from mosaicdiff.experiments.sweep_plan import load_spec, plan_sweep

EXAMPLES = Path(__file__).parents[1] / "examples"
slurm = pytest.mark.skipif(
    shutil.which("sbatch") is None or os.environ.get("MOSAICDIFF_SLURM_TESTS") != "1",
    reason="needs sbatch on PATH and MOSAICDIFF_SLURM_TESTS=1 (see .ci/slurm)",
)


def tiny_spec(out, grid=None) -> dict:
    """Two points, one epoch on 64 images, 10 DDIM steps, 2 x 16 samples."""
    return {
        "out": str(out),
        "base": {
            "data": {"n_images": 64},
            "train": {"epochs": 1, "ema_decay": 0.9},
            "sample": {"sampler": "ddim", "steps": 10, "n_runs": 2, "n_per_run": 16},
        },
        "grid": grid or {"model.arch": ["cnn", "attn"]},
    }


def read_table(out) -> list[dict]:
    with open(out / "table.csv") as f:
        return list(csv.DictReader(f))


def assert_all_done(out, n_points: int) -> None:
    rows = read_table(out)
    assert len(rows) == n_points
    for r in rows:
        assert r["status"] == "done", r
        assert 0.0 <= float(r["consistency_mean"]) <= 1.0
        assert float(r["ci95_low"]) <= float(r["consistency_mean"]) <= float(r["ci95_high"])
        assert float(r["wall_s"]) > 0
    with open(out / "points.csv") as f:
        points = list(csv.DictReader(f))
    for p in points:  # the mean over a point's seed rows, with the reasons' shares summing to 1
        seeds = [float(r["consistency_mean"]) for r in rows if r["point"] == p["point"]]
        assert abs(float(p["consistency_mean"]) - sum(seeds) / len(seeds)) < 1e-12
        assert int(p["n_seeds"]) == len(seeds)
        shares = [float(v) for k, v in p.items() if k.startswith("share_")]
        assert abs(sum(shares) - 1) < 1e-9
    assert len({p["point"] for p in points}) == len(points) == len({r["point"] for r in rows})
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "reasons.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "grid, named",
    [
        ({"model.nope": [1]}, "model.nope"),
        ({"model.arch": ["cnn", "transformer"]}, "transformer"),
        ({"train.epochs": [1, 0]}, "train.epochs=0"),
        ({"train.seeds": 3}, "train.seeds"),
        ({"model.arch": ["resnet", "cnn"], "model.depth": [4]}, "arch=cnn__depth=4: model.depth"),
        ({"data.kind": ["digits"], "data.n_images": [64]}, "sets the colour pairings only"),
        # only building the network finds it (probe 55: every point failed in its worker)
        ({"model.patch": [2, 3]}, "patch=3: model.patch=3 must divide the image size 4x4"),
        ({"model.arch ": ["cnn"]}, "key 'model.arch ' has spaces around it"),
    ],
)
def test_bad_grid_fails_before_anything_runs(tmp_path, grid, named):
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        plan_sweep(tiny_spec(tmp_path / "out", grid))
    assert not (tmp_path / "out").exists()


def test_a_base_field_a_point_never_reads_is_refused(tmp_path):
    spec = tiny_spec(tmp_path / "out", {"data.kind": ["digits"]})  # the base's data.n_images=64
    with pytest.raises(UserError, match="kind=digits: data.n_images=64 sets the colour pairings"):
        plan_sweep(spec)


def test_a_base_value_in_place_of_a_section_is_one_line(tmp_path):
    spec = tiny_spec(tmp_path / "out")
    spec["base"]["model"] = "cnn"
    with pytest.raises(UserError, match="sweep base: config section model must be a mapping"):
        plan_sweep(spec)
    spec = tiny_spec(tmp_path / "out")  # a bad --set is not blamed on the spec alone
    with pytest.raises(UserError, match="sweep base or --set: unknown config key 'bogus.x'"):
        plan_sweep(spec, sets=["bogus.x=1"])


def test_the_grid_may_complete_the_base(tmp_path):
    # Probe 53: data.kind npz in the base and data.path in the grid was refused, the base alone
    # lacking a path; a base fault the points share is still named as the base's.
    import numpy as np

    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", images=np.zeros((4, 1, 8, 8), np.float32))
    spec = tiny_spec(tmp_path / "out", {"data.path": [str(tmp_path / f"{n}.npz") for n in "ab"]})
    spec["base"] = {"data": {"kind": "npz"}, "model": {"arch": "resnet"}}
    assert [p.cfg.data.path for p in plan_sweep(spec).points][0] == str(tmp_path / "a.npz")
    spec["grid"] = {"model.hidden": [8, 16]}
    with pytest.raises(UserError, match="^sweep base: data.kind=npz needs data.path$"):
        plan_sweep(spec)
    # one point that leaves the base incomplete is that point's fault (probe 56)
    spec["grid"] = {"data.path": [str(tmp_path / "a.npz"), ""]}
    with pytest.raises(
        UserError, match="^sweep grid point path=empty: data.kind=npz needs data.path$"
    ):
        plan_sweep(spec)


def test_a_failed_point_says_why_and_that_a_rerun_alone_will_not_help(
    tmp_path, monkeypatch, capsys
):
    from mosaicdiff.experiments import sweep_executors

    def run_local(specs, jobs, log):
        outcomes = {
            specs[0]["name"]: {"status": "failed", "error": "UserError: boom\nsecond line"},
            specs[1]["name"]: {"status": "OUT_OF_MEMORY", "error": "no result"},
        }
        for name, outcome in outcomes.items():
            log(f"sweep: {name} {sweep_executors.said(outcome)}")
        return outcomes

    monkeypatch.setattr(sweep_executors, "run_local", run_local)
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(tiny_spec(tmp_path / "out")))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(spec)])
    assert args.handler(args) == 1
    out = capsys.readouterr().out
    assert "sweep: arch=cnn failed: UserError: boom\n" in out and "arch=attn OUT_OF_MEMORY" in out
    assert "1 point(s) failed (arch=cnn): each one's error is above" in out
    again = "run the same command again (OUT_OF_MEMORY: with more --mem)"
    assert f"1 point(s) unfinished (arch=attn); {again}" in out


def test_a_point_another_process_is_training_is_busy_not_failed(tmp_path, capsys):
    # A second sweep into the same out while the first trains a point: run it again later.
    from mosaicdiff.locks import held
    from mosaicdiff.runs import TRAIN_LOCK

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(tiny_spec(tmp_path / "out", {"model.arch": ["cnn"]})))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(spec), "--jobs", "1"])
    (point,) = plan_sweep(load_spec(spec)).points
    with held(point.run_path / TRAIN_LOCK, "trained"):  # as the first sweep's worker holds it
        assert args.handler(args) == 1
    out = capsys.readouterr().out
    assert f"sweep: arch=cnn busy: Busy: {point.run_path} is being trained by another" in out
    assert "1 point(s) unfinished (arch=cnn); run the same command again" in out
    assert "failed" not in out
    assert [r["status"] for r in read_table(tmp_path / "out")] == ["busy"]
    assert args.handler(args) == 0  # once that process has let go
    assert_all_done(tmp_path / "out", 1)


def test_a_fault_every_point_has_is_the_bases_and_a_key_must_be_text(tmp_path):
    spec = tiny_spec(tmp_path / "out")
    with pytest.raises(UserError, match="^sweep base or --set: model.patch=3 must divide"):
        plan_sweep(spec, sets=["model.patch=3"])
    with pytest.raises(UserError, match="sweep grid: key 1 must name a field"):
        plan_sweep({**spec, "grid": {1: [2]}})


def test_one_table_holds_one_metric(tmp_path):
    spec = tiny_spec(tmp_path / "out", {"data.kind": ["pairings", "digits"]})
    del spec["base"]["data"]
    with pytest.raises(UserError, match="measured by consistency and creativity"):
        plan_sweep(spec)


@pytest.mark.parametrize(
    "name, points, metric",
    [("sweep.yaml", 8, "consistency"), ("sweep_digits.yaml", 4, "creativity")],
)
def test_the_example_specs_plan(tmp_path, name, points, metric):
    plan = plan_sweep(load_spec(EXAMPLES / name), tmp_path / "out")
    assert (len(plan.points), plan.metric) == (points, metric)


def test_point_names_follow_the_overrides(tmp_path):
    grid = {
        "model.arch": ["cnn"],
        "train.seeds": [[0], [1, 2]],
        "sample.seed": [0],
        "data.seed": [0],
    }
    names = [p.name for p in plan_sweep(tiny_spec(tmp_path, grid)).points]
    assert names == [
        "arch=cnn__seeds=0__sample.seed=0__data.seed=0",
        "arch=cnn__seeds=1-2__sample.seed=0__data.seed=0",
    ]


def test_a_point_trained_with_another_base_is_refused_naming_the_field(tmp_path):
    from mosaicdiff.config_io import override, to_dict

    point = plan_sweep(tiny_spec(tmp_path / "out")).points[0]
    point.run_path.mkdir(parents=True)
    older = to_dict(override(point.cfg, ["train.lr=0.5"]))
    (point.run_path / "config.json").write_text(json.dumps(older))
    with pytest.raises(UserError, match=r"another config \(train.lr: 0.5 -> 0.001\)"):
        plan_sweep(tiny_spec(tmp_path / "out"))


def test_a_point_trained_on_other_images_is_refused_not_counted_finished(tmp_path):
    # A rewritten data.path (or network file) left old points "finished" beside new ones.
    from mosaicdiff.data import load_dataset
    from mosaicdiff.io import save_tensors
    from mosaicdiff.runs import RunDir, fingerprints

    point = plan_sweep(tiny_spec(tmp_path / "out")).points[0]
    now = fingerprints(load_dataset(point.cfg.data), point.cfg)
    path = RunDir(point.run_path).checkpoint_path(1)
    save_tensors(path, {"w": torch.zeros(1)}, {"epoch": 1, **now})
    plan_sweep(tiny_spec(tmp_path / "out"))  # the same images: planned as before
    save_tensors(path, {"w": torch.zeros(1)}, {"epoch": 1, "data_sha256": "0" * 64})
    with pytest.raises(UserError, match=r"sweep point arch=cnn: data.kind=pairings now gives"):
        plan_sweep(tiny_spec(tmp_path / "out"))


def test_dry_run_lists_points(tmp_path, capsys):
    spec = tmp_path / "spec.json.yaml"
    spec.write_text(json.dumps(tiny_spec(tmp_path / "out")))  # JSON is valid YAML
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(spec), "--dry-run"])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.splitlines() == [
        'arch=cnn: model.arch="cnn"',
        'arch=attn: model.arch="attn"',
    ]


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--jobs", "0"], "--jobs=0"),
        (["--time", "-5"], "--time=-5"),
        (["--retries", "-1"], "-1"),
        (
            ["--mem", "4G", "--slurm-arg", "a=b"],
            "--mem, --slurm-arg: read by --executor slurm only",
        ),
    ],
)
def test_dry_run_refuses_what_the_run_would(tmp_path, flags, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(tiny_spec(tmp_path / "out")))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(spec), "--dry-run", *flags])
    with pytest.raises(UserError, match=needle):
        args.handler(args)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_local_sweep_on_a_gpu_this_machine_lacks_is_refused_up_front(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(tiny_spec(tmp_path / "out")))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    for dry in ([], ["--dry-run"]):
        args = parser.parse_args(["sweep", str(spec), "--set", "device=cuda", *dry])
        with pytest.raises(UserError, match="arch=cnn: device='cuda' but no CUDA GPU is visible"):
            args.handler(args)
    assert not (tmp_path / "out").exists()  # and a later run on the CPU is not blocked


def test_local_sweep_runs_and_skips_finished_points(tmp_path):
    out = tmp_path / "out"
    plan = plan_sweep(tiny_spec(out))
    outcomes = sweep(plan, "local", jobs=2)
    assert {o["status"] for o in outcomes.values()} == {"done"}
    assert_all_done(out, 2)
    assert not (out / ".inductor").exists()  # the workers' compile caches went with them
    stamps = {p.name: p.done_path.stat().st_mtime_ns for p in plan.points}
    lines = []
    sweep(plan_sweep(tiny_spec(out)), "local", jobs=2, log=lines.append)
    assert "2 finished, 0 to run" in lines[0]
    assert stamps == {p.name: p.done_path.stat().st_mtime_ns for p in plan.points}
    lines = []  # a narrower grid into the same out says which folders its tables leave out
    sweep(plan_sweep(tiny_spec(out, {"model.arch": ["cnn"]})), "local", log=lines.append)
    assert "1 finished, 0 to run" in lines[0]
    assert "1 folder(s) in" in lines[1] and lines[1].endswith("of its tables: arch=attn")
    assert len(read_table(out)) == 1
    # measured by an older rule: measured again, the wall time of its work kept (probe 64)
    cnn = plan.points[0].done_path
    record = json.loads(cnn.read_text())
    for p in record["results"]["per_seed"]:
        p["ci_method"] = "student-t"
    cnn.write_text(json.dumps({**record, "wall_s": 1234.5}))
    sweep(plan_sweep(tiny_spec(out, {"model.arch": ["cnn"]})), "local", log=lines.append)
    again = json.loads(cnn.read_text())
    assert again["wall_s"] == 1234.5 and again["results"]["per_seed"][0]["ci_method"] != "student-t"


def test_a_sweep_on_digits_measures_creativity(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "out", {"model.hidden": [8, 16]})
    spec["base"] = {"data": {"kind": "digits"}, "train": {"epochs": 1, "ema_decay": 0}}
    spec["base"]["sample"] = {"steps": 5, "n_per_run": 12}
    plan = plan_sweep(spec)
    # A new run's defaults on natural data, under the base: 1 run of DDIM with x0 clipped.
    scfg = plan.points[0].cfg.sample
    assert (scfg.sampler, scfg.steps, scfg.n_runs, scfg.n_per_run, scfg.clip_x0) == (
        "ddim",
        5,
        1,
        12,
        True,
    )
    assert {o["status"] for o in sweep(plan, "local", jobs=1).values()} == {"done"}
    rows = read_table(tmp_path / "out")
    assert [r["point"] for r in rows] == ["hidden=8", "hidden=16"]
    for r, p in zip(rows, plan.points, strict=True):  # the table holds each point's evaluation
        results = json.loads((p.run_path / "samples/default/results-creativity.json").read_text())
        (seed,) = results["per_seed"]
        assert float(r["novelty"]) == pytest.approx(seed["novelty"]) and seed["novelty"] > 0
        assert int(r["n_samples"]) == 12 and 0 <= float(r["mosaic_rate"]) <= 1
        assert {"samples.png", "nearest.png"} <= {f.name for f in p.run_path.rglob("*.png")}
    with open(tmp_path / "out" / "points.csv") as f:
        points = list(csv.DictReader(f))
    assert [float(p["novelty_mean"]) for p in points] == [float(r["novelty"]) for r in rows]
    assert [p["mosaic_ratio_seeds"] for p in points] == ["1", "1"]  # the one seed measured it
    assert (tmp_path / "out" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "out" / "reasons.png").exists()  # creativity has no failure kinds
    # A point measured before mosaics had a bound on their cover distance is measured again
    # (from the samples it drew), not shown beside newer ones.
    done = plan.points[0].done_path
    record = json.loads(done.read_text())
    del record["results"]["per_seed"][0]["mosaic_atol"]
    done.write_text(json.dumps(record))
    assert not plan.points[0].finished() and plan.points[1].finished()
    chunks = {p: p.stat().st_mtime_ns for p in plan.points[0].run_path.rglob("chunk-*.npz")}
    sweep(plan, "local", jobs=1)
    assert json.loads(done.read_text())["results"]["per_seed"][0]["mosaic_atol"] == 0.1
    assert chunks == {p: p.stat().st_mtime_ns for p in chunks}  # not drawn again
    for damaged in (None, {"metric": "creativity", "per_seed": None}):  # a KeyError, before
        done.write_text(json.dumps({**record, "results": damaged}))
        assert not plan.points[0].finished()


@pytest.mark.slurm
@slurm
def test_slurm_sweep_runs_the_same_points(tmp_path):
    out = tmp_path / "out"
    opts = SlurmOptions(partition="debug", time_min=10, cpus_per_task=1, poll_s=1)
    outcomes = sweep(plan_sweep(tiny_spec(out)), "slurm", slurm=opts)
    assert {o["status"] for o in outcomes.values()} == {"done"}, outcomes
    assert_all_done(out, 2)
    assert list((out / "slurm" / "logs").glob("*_log.out")), "submitit's logs stay in OUT/slurm"


@pytest.mark.slurm
@slurm
def test_slurm_cancelled_point_is_finished_by_the_next_call(tmp_path):
    out = tmp_path / "out"
    # The long point must outlast scancel's 5 s KillWait (submitit ignores the SIGTERM): 10,000
    # one-step epochs take ~17 s on one core. At 3,000 it sometimes finished first.
    spec = tiny_spec(out, {"train.epochs": [1, 10_000]})
    opts = SlurmOptions(partition="debug", time_min=10, cpus_per_task=1, poll_s=1)
    short, long = plan_sweep(spec).points
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(sweep, plan_sweep(spec), "slurm", None, opts)
        deadline = time.monotonic() + 300
        while not (long.run_path / "metrics.jsonl").is_file():  # the long point is training
            assert time.monotonic() < deadline and not first.done(), "points did not start"
            time.sleep(0.2)
        jobs = json.loads((out / "slurm" / "jobs.json").read_text())
        subprocess.run(["scancel", jobs[long.name]], check=True)
        outcomes = first.result(timeout=120)
    assert outcomes[short.name]["status"] == "done"
    assert outcomes[long.name]["status"] == "CANCELLED"
    assert not long.finished()
    assert [r["status"] for r in read_table(out)] == ["done", "CANCELLED"]
    stamp = short.done_path.stat().st_mtime_ns

    outcomes = sweep(plan_sweep(spec), "slurm", slurm=opts)
    assert outcomes[long.name]["status"] == "done"
    assert short.done_path.stat().st_mtime_ns == stamp, "the finished point was left alone"
    again = json.loads((out / "slurm" / "jobs.json").read_text())
    assert again[short.name] == jobs[short.name] and again[long.name] != jobs[long.name]
    assert_all_done(out, 2)


class FakeJob:
    """A submitit job that ended in `state`: COMPLETED leaves a result, others none."""

    def __init__(self, job_id, state, folder):
        self.job_id, self.state = job_id, state
        self.paths = type("Paths", (), {"result_pickle": folder / f"{job_id}.pkl"})()
        if state in ("COMPLETED", "FAILED"):
            self.paths.result_pickle.write_text(state)

    def result(self):
        if self.state == "FAILED":
            raise RuntimeError("Traceback ...\nValueError: bad point")


def test_slurm_retry_resubmits_only_preempted_points(tmp_path, monkeypatch):
    """The retry policy, with sbatch and squeue replaced: PREEMPTED and TIMEOUT points are
    resubmitted in the same call; CANCELLED (a person's scancel) and FAILED are not."""
    from mosaicdiff.experiments import sweep_executors as ex

    script = {"a": ["PREEMPTED", "COMPLETED"], "b": ["CANCELLED"], "c": ["FAILED"]}
    script["d"] = ["TIMEOUT", "TIMEOUT"]
    submitted, jobs = [], {}

    class Executor:
        def __init__(self, folder, cluster):
            folder.mkdir(parents=True, exist_ok=True)
            self.folder = folder

        def update_parameters(self, **params):
            assert params["slurm_partition"] == "debug" and params["cpus_per_task"] == 1

        def map_array(self, fn, specs):
            submitted.append([s["name"] for s in specs])
            out = []
            for s in specs:
                job_id = f"{len(submitted)}_{len(out)}"
                jobs[job_id] = FakeJob(job_id, script[s["name"]].pop(0), self.folder)
                out.append(jobs[job_id])
            return out

    monkeypatch.setattr(ex, "import_submitit", lambda: type("M", (), {"AutoExecutor": Executor}))
    monkeypatch.setattr(ex, "queue_state", lambda job_id: None)
    monkeypatch.setattr(ex, "final_state", lambda job_id: jobs[job_id].state)
    specs = [{"name": n} for n in "abcd"]
    opts = SlurmOptions(partition="debug", retries=1, poll_s=0)
    outcomes = ex.run_slurm(specs, tmp_path / "slurm", opts, log=lambda line: None)
    assert submitted == [["a", "b", "c", "d"], ["a", "d"]]
    assert {n: o["status"] for n, o in outcomes.items()} == {
        "a": "done",
        "b": "CANCELLED",
        "c": "failed",
        "d": "TIMEOUT",
    }
    assert outcomes["c"]["error"] == "ValueError: bad point"
    ledger = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    assert ledger == {"a": "2_0", "b": "1_1", "c": "1_2", "d": "2_1"}

    monkeypatch.setattr(ex, "queue_state", lambda job_id: "RUNNING")  # a job from this call lives
    with pytest.raises(UserError, match="point d is still queued or running as SLURM job 2_1"):
        ex.run_slurm([{"name": "d"}], tmp_path / "slurm", opts, log=lambda line: None)


def test_slurm_points_waiting_in_the_queue_say_why_each_time_it_changes(tmp_path, monkeypatch):
    # A job asking for more than any node has (--cpus-per-task 64) waits for ever, silently.
    from mosaicdiff.experiments import sweep_executors as ex

    polls = iter(["PENDING"] * 4 + ["RUNNING", None])
    reasons = iter(["Priority", "Priority", "PartitionConfig", "PartitionConfig"])
    jobs = {"a": FakeJob("1_0", "COMPLETED", tmp_path), "b": FakeJob("1_1", "PENDING", tmp_path)}

    def queue_state(job_id):
        return next(polls) if job_id == "1_1" else None

    monkeypatch.setattr(ex, "queue_state", queue_state)
    monkeypatch.setattr(ex, "pending_reason", lambda job_id: next(reasons))
    monkeypatch.setattr(ex, "final_state", lambda job_id: "CANCELLED")
    lines = []
    outcomes = ex.wait_jobs(jobs, 0, lines.append)
    assert outcomes == {"a": {"status": "done"}, "b": {"status": "CANCELLED", "error": "no result"}}
    waiting = [line for line in lines if "waiting" in line]
    assert waiting == [
        "sweep: 1 point(s) waiting in the queue, squeue's reason: Priority",
        "sweep: 1 point(s) waiting in the queue, squeue's reason: PartitionConfig",
    ]


def test_a_failed_slurm_job_reports_the_points_error_not_the_log_path():
    # Probe 55: table.csv's error column held submitit's last line, the log file's path.
    from mosaicdiff.experiments.sweep_executors import raised_in_job

    trace = (
        "Job (task=0) failed during processing with trace:\n----------------------\n"
        'Traceback (most recent call last):\n  File "sweep.py", line 3, in run_point\n'
        "    raise UserError('model.patch=3 must divide the image size 4x4')\n"
        "mosaicdiff.errors.UserError: model.patch=3 must divide the image size 4x4\n\n"
        "----------------------\nYou can check full logs with 'job.stderr(0)' and "
        "'job.stdout(0)'or at paths:\n  - /o/logs/67_0_log.err\n  - /o/logs/67_0_log.out"
    )
    assert (
        raised_in_job(Exception(trace)) == "UserError: model.patch=3 must divide the image size 4x4"
    )
    assert raised_in_job(Exception("no trace at all")) == "no trace at all"
    # any exception's name (probe 57: TrainingDiverged, SystemExit), the last of a chain
    chained = trace.replace(
        "Traceback", "ValueError: first\n\nDuring handling, another occurred:\n\nTraceback", 1
    ).replace("mosaicdiff.errors.UserError: model.patch=3", "mosaicdiff.training.Diverged: lr")
    assert raised_in_job(Exception(chained)) == "Diverged: lr must divide the image size 4x4"
    assert raised_in_job(Exception("Traceback:\nAssertionError\n----\n  - x.out")) == (
        "AssertionError"
    )
