"""A study whose driver is SIGKILLed mid-way resumes with ``--resume``: nothing lost, nothing twice.

The driver runs as ``ssad study run`` in its own process group with a private local Ray. Once a
trial has finished (recorded in MLflow and in Tune's experiment snapshot) and others are still
to come, the driver alone is SIGKILLed; the test records which of its Ray processes outlive it,
then stops those by id, and resumes. Two more kill points are made exact with the test-only
driver rules of :mod:`ssad.study.tune.faults` (that driver runs as ``python -m ssad.study.tune.faults
RULES SPEC``, the same ``run_study`` with fault hooks): the driver stalls between two trials (``stall:between``), or in the final logging after the dashboard and before the
leaderboard and summary (``stall:final``), and is SIGKILLed there.
"""

from __future__ import annotations

import glob
import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ssad.study.spec import load_spec
from ssad.study.tracking import StudyTracker
from ssad.study.tune.tune_internals import optuna_study

pytestmark = pytest.mark.slow

AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def tune_statuses(exp_dir: Path) -> dict[str, str]:
    """trial id → status in Tune's newest experiment snapshot (empty before the first one)."""
    files = sorted(glob.glob(str(exp_dir / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        state = json.loads(Path(files[-1]).read_text())
    except (OSError, json.JSONDecodeError):  # being replaced right now
        return {}
    out = {}
    for trial_json, _meta in state["trial_data"]:
        trial = json.loads(trial_json)
        out[trial["trial_id"]] = trial["status"]
    return out


def set_tune_status(exp_dir: Path, trial_id: str, status: str) -> None:
    """Rewrite one trial's status in Tune's newest experiment snapshot."""
    path = Path(sorted(glob.glob(str(exp_dir / "experiment_state-*.json")))[-1])
    state = json.loads(path.read_text())
    for row in state["trial_data"]:
        trial = json.loads(row[0])
        if trial["trial_id"] == trial_id:
            trial["status"] = status
            row[0] = json.dumps(trial)
    path.write_text(json.dumps(state))


def trial_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'", max_results=1000)


def record(client: MlflowClient, run) -> dict:
    """What must not change for a trial that finished before the kill."""
    rid = run.info.run_id
    history = {
        key: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(rid, key))
        for key in run.data.metrics
    }
    return {
        "end_time": run.info.end_time,
        "status": run.data.tags.get("ssad.status"),
        "history": history,
        "artifacts": sorted(a.path for a in client.list_artifacts(rid)),
    }


def _title(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    try:  # a Python script: its name
        return next(Path(a.decode()).name for a in argv[1:] if a.endswith(b".py"))
    except StopIteration:
        return argv[0].decode().strip()


def run_cli(
    box, args: list[str], log: Path, cwd: Path, faults: str | None = None
) -> subprocess.Popen:
    """``ssad study run ARGS``; with ``faults``, the fault driver with those rules instead."""
    main = ["ssad.study.tune.faults", faults] if faults else ["ssad.cli", "study", "run"]
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return box.popen(
            [sys.executable, "-m", *main, *args],
            env=box.env(RAY_ADDRESS="local"),  # a private local Ray, never another test's
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


def test_killed_study_resumes(tmp_path: Path, make_spec, ray_sandbox, study_helpers) -> None:
    path = make_spec(tmp_path, name="resume", num_samples=3, max_concurrent=2)
    spec = load_spec(path)
    total = spec.total_trials()
    assert total == 6
    exp_dir = spec.storage_path / spec.name
    client = MlflowClient(tracking_uri=spec.tracking_uri)
    log = tmp_path / "study.log"

    driver = run_cli(ray_sandbox, [str(path)], log, tmp_path)
    done_before: dict[str, dict] = {}
    deadline = time.monotonic() + 300
    while not done_before:
        assert driver.poll() is None, "study ended before the kill:\n" + log.read_text()[-4000:]
        assert time.monotonic() < deadline, "no trial finished in time:\n" + log.read_text()[-4000:]
        time.sleep(1)
        statuses = tune_statuses(exp_dir)
        if sum(s == "TERMINATED" for s in statuses.values()) >= total:
            continue  # too late to kill mid-way; the assert above will report it
        for run in trial_runs(client, spec.experiment):
            tid = run.data.tags["ssad.trial_id"]
            closed = run.info.status == "FINISHED" and run.data.tags.get("ssad.status")
            if closed and statuses.get(tid) == "TERMINATED":
                done_before[tid] = record(client, run)

    # SIGKILL the driver only, and see which of its Ray processes outlive it
    ray_procs = ray_sandbox.processes()
    assert driver.pid in [pid for pid, _ in ray_procs]
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    survivors = study_helpers.wait_gone(ray_procs, 10)
    titles = [_title(pid) for pid, _ in survivors]
    print("alive 10 s after the driver's SIGKILL:", titles)
    # GCS, raylet and the trial actors share the driver's fate; the node's agents linger
    # (orphaned, idle) and a worker caught starting up may too, but no task or actor runs on
    running = [t for t in titles if t.startswith("ray::") and t not in AGENTS]
    assert running == [], titles
    ray_sandbox.stop()  # by id
    assert study_helpers.alive(ray_procs) == []
    runs_at_kill = {r.data.tags["ssad.trial_id"] for r in trial_runs(client, spec.experiment)}
    assert 1 <= len(done_before) < total
    # A trial started (its run created) but not yet in Tune's snapshot when the driver died is
    # one Tune never heard of: its slot runs again as a new trial. Make one such run for sure.
    tracker = StudyTracker(spec.tracking_uri, spec.experiment, spec.name)
    parent_id = tracker.launch_parent_id()
    ghost = tracker.trial_run(
        parent_id=parent_id,
        trial_id="ghost000",
        params={},
        tags={"ssad.class": spec.classes[0], "ssad.trial_name": f"{spec.classes[0]}-ghost"},
    )
    known_at_kill = set(tune_statuses(exp_dir))
    lost_at_kill = runs_at_kill - known_at_kill | {"ghost000"}

    # a second run without --resume refuses to start over
    plain = subprocess.run(
        [sys.executable, "-m", "ssad.cli", "study", "run", str(path)],
        env=ray_sandbox.env(RAY_ADDRESS="local"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert plain.returncode == 2 and "--resume" in plain.stderr

    resumed = run_cli(ray_sandbox, [str(path), "--resume"], log, tmp_path)
    rc = resumed.wait(timeout=420)
    text = log.read_text()
    assert rc == 0, text[-6000:]

    runs = trial_runs(client, spec.experiment)
    ids = [r.data.tags["ssad.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == total, sorted(ids)  # no duplicate run for any trial
    assert runs_at_kill - lost_at_kill <= set(ids)
    # the lost runs are closed, tagged and deleted (restorable), not counted anywhere
    lost = client.get_run(ghost)
    assert lost.info.lifecycle_stage == "deleted" and lost.info.status == "KILLED"
    assert lost.data.tags["ssad.status"] == "lost"
    per_class = {c: sum(r.data.tags["ssad.class"] == c for r in runs) for c in spec.classes}
    assert per_class == dict.fromkeys(spec.classes, spec.num_samples)
    statuses = [r.data.tags.get("ssad.status") for r in runs]
    assert sorted(statuses) == sorted(s for s in statuses if s in ("finished", "stopped"))
    assert set(tune_statuses(exp_dir).values()) == {"TERMINATED"}
    parents = client.search_runs(
        [runs[0].info.experiment_id], "tags.`ssad.role` = 'study'", max_results=10
    )
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}

    for run in runs:
        tid, rid = run.data.tags["ssad.trial_id"], run.info.run_id
        epochs = int(run.data.metrics["training_iteration"])
        for key in ("loss", "val_image_auroc", "training_iteration"):
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (tid, key, steps)
        assert {"config.yaml", "val"} <= {a.path for a in client.list_artifacts(rid)}
        if tid in done_before:  # finished before the kill: not re-run, not re-logged
            assert record(client, run) == done_before[tid], tid
    # the per-class searcher was restored, not started afresh: it knows every trial of both
    # sessions and each class's sampler was told each of its configurations once
    newest = sorted(glob.glob(str(exp_dir / "searcher-state-*.pkl")))[-1]
    with open(newest, "rb") as f:
        searcher = pickle.load(f)
    assert set(searcher["trials"]) == set(ids)
    assert searcher["suggested"] == dict.fromkeys(spec.classes, spec.num_samples)
    assert len(searcher["told"]) == total
    for cls, sub in searcher["subs"].items():
        states = [t.state.name for t in optuna_study(sub).trials]
        assert states == ["COMPLETE"] * spec.num_samples, (cls, states)
    # trials interrupted by the kill went on from their last checkpoint, not from epoch 1
    for folder in exp_dir.glob("tune_trainable_*"):
        lines = (folder / "result.json").read_text().splitlines()
        iterations = [json.loads(line)["training_iteration"] for line in lines]
        assert iterations == list(range(1, len(iterations) + 1)), (folder.name, iterations)

    # A kill may also land after a trial ended but before Tune's next experiment snapshot, which
    # then still calls it RUNNING: --resume re-runs it from its final checkpoint. Recreate that
    # state for a finished trial: its record must stay as it was.
    victim = next(r for r in runs if r.data.tags["ssad.status"] == "finished")
    tid = victim.data.tags["ssad.trial_id"]
    before = record(client, victim)
    set_tune_status(exp_dir, tid, "RUNNING")
    again = run_cli(ray_sandbox, [str(path), "--resume"], log, tmp_path)
    assert again.wait(timeout=300) == 0, log.read_text()[-4000:]
    assert record(client, client.get_run(victim.info.run_id)) == before
    assert len(trial_runs(client, spec.experiment)) == total


def kill_at_stall(box, driver: subprocess.Popen, log: Path, stage: str, timeout: float) -> None:
    """Wait until the driver stalls at ``stage`` (its marker line), then SIGKILL it and stop the
    rest of its private Ray by id."""
    marker = f"ssad-fault: driver stalls at {stage}"
    deadline = time.monotonic() + timeout
    while marker not in log.read_text(errors="replace"):
        assert driver.poll() is None, f"driver ended before {stage}:\n" + log.read_text()[-4000:]
        assert time.monotonic() < deadline, f"no stall at {stage}:\n" + log.read_text()[-4000:]
        time.sleep(0.5)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    box.stop()


def test_driver_killed_between_trials_and_in_final_logging(
    tmp_path: Path, make_spec, ray_sandbox, study_helpers
) -> None:
    """Two trials one after the other. Launch 1 is SIGKILLed after the first trial completed,
    before the second was asked for; its --resume is SIGKILLed in the final logging (dashboard
    logged, leaderboard and summary not); a last --resume finishes. One run per trial, every
    epoch once, the first trial's record untouched, the parent's summary logged exactly once."""
    tic = time.monotonic()
    path = make_spec(tmp_path, name="stall", classes=["brick"], num_samples=2, max_concurrent=1)
    spec = load_spec(path)
    total = spec.total_trials()
    assert total == 2
    exp_dir = spec.storage_path / spec.name
    client = MlflowClient(tracking_uri=spec.tracking_uri)

    # 1. between trials
    log1 = tmp_path / "launch1.log"
    driver = run_cli(ray_sandbox, [str(path)], log1, tmp_path, faults="stall:between")
    kill_at_stall(ray_sandbox, driver, log1, "between", 300)
    (first,) = trial_runs(client, spec.experiment)  # the second trial was never started
    first_tid = first.data.tags["ssad.trial_id"]
    assert first.info.status == "FINISHED" and first.data.tags["ssad.status"] == "finished"
    first_record = record(client, first)
    print("Tune's snapshot at the kill between trials:", tune_statuses(exp_dir))
    print(f"launch 1 killed after {time.monotonic() - tic:.0f} s")

    # 2. --resume: the second trial runs; killed mid-way through the final logging
    log2 = tmp_path / "launch2.log"
    driver = run_cli(
        ray_sandbox, [str(path), "--resume"], log2, tmp_path, faults="stall:final"
    )
    kill_at_stall(ray_sandbox, driver, log2, "final", 300)
    assert "driver stalls at between" not in log2.read_text()  # the rule is read per launch
    (parent,) = client.search_runs(
        [first.info.experiment_id], "tags.`ssad.role` = 'study'", max_results=10
    )
    pid = parent.info.run_id
    assert parent.info.status == "RUNNING"
    top = {a.path for a in client.list_artifacts(pid)}
    assert "dashboards" in top and not {"leaderboard.csv", "summary.json"} & top, top
    assert "trials" not in parent.data.metrics
    dashboards = sorted(a.path for a in client.list_artifacts(pid, "dashboards"))
    runs = trial_runs(client, spec.experiment)
    assert len(runs) == total
    at_final = {r.data.tags["ssad.trial_id"]: record(client, r) for r in runs}
    print(f"launch 2 killed after {time.monotonic() - tic:.0f} s")

    # 3. --resume: nothing left to train; the final logging completes, once
    log3 = tmp_path / "launch3.log"
    rc = run_cli(ray_sandbox, [str(path), "--resume"], log3, tmp_path).wait(timeout=300)
    assert rc == 0, log3.read_text()[-6000:]
    print(f"launch 3 done after {time.monotonic() - tic:.0f} s")

    runs = trial_runs(client, spec.experiment)
    ids = [r.data.tags["ssad.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == total, ids  # no duplicate run
    for run in runs:
        tid, rid = run.data.tags["ssad.trial_id"], run.info.run_id
        assert run.data.tags["ssad.status"] in ("finished", "stopped"), tid
        epochs = int(run.data.metrics["training_iteration"])
        for key in ("loss", "val_image_auroc", "training_iteration"):
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (tid, key, steps)
        assert record(client, run) == at_final[tid], tid  # launch 3 trained and logged nothing
    # the trial that completed before the first kill: not re-run, not re-logged
    assert at_final[first_tid] == first_record
    assert set(tune_statuses(exp_dir).values()) == {"TERMINATED"}
    for folder in exp_dir.glob("brick-*"):  # one result per epoch, none replayed
        lines = (folder / "result.json").read_text().splitlines()
        iterations = [json.loads(line)["training_iteration"] for line in lines]
        assert iterations == list(range(1, len(iterations) + 1)), (folder.name, iterations)
    # the searcher was told each trial once, across both kills
    newest = sorted(glob.glob(str(exp_dir / "searcher-state-*.pkl")))[-1]
    with open(newest, "rb") as f:
        searcher = pickle.load(f)
    assert set(searcher["trials"]) == set(ids)
    assert searcher["suggested"] == {"brick": spec.num_samples}
    assert len(searcher["told"]) == total
    states = [t.state.name for t in optuna_study(searcher["subs"]["brick"]).trials]
    assert states == ["COMPLETE"] * spec.num_samples, states

    # the parent run: one, finished, its leaderboard, summary and dashboard exactly once
    parents = client.search_runs(
        [first.info.experiment_id], "tags.`ssad.role` = 'study'", max_results=10
    )
    assert [p.info.run_id for p in parents] == [pid]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    top = sorted(a.path for a in client.list_artifacts(pid))
    assert {"leaderboard.csv", "leaderboard.html", "summary.json", "dashboards"} <= set(top), top
    assert sorted(a.path for a in client.list_artifacts(pid, "dashboards")) == dashboards
    assert sum(p.endswith(".html") for p in dashboards) == 1, dashboards
    for key in ("trials", "finished", "stopped", "failed", "trial_seconds", "wall_s"):
        assert len(client.get_metric_history(pid, key)) == 1, key
    assert parent.data.metrics["trials"] == total
    board = client.download_artifacts(pid, "leaderboard.csv", str(tmp_path / "dl"))
    lines = Path(board).read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("brick,"), lines
    summary = json.loads(
        Path(client.download_artifacts(pid, "summary.json", str(tmp_path / "dl"))).read_text()
    )
    assert summary["trials"] == total
    print(f"driver-loss test (3 launches): {time.monotonic() - tic:.0f} s")
