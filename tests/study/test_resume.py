"""A study whose driver is SIGKILLed mid-way resumes with ``--resume``: nothing lost, nothing twice.

The driver runs as ``ssad study run`` in its own process group with a private local Ray. Once a
trial has finished (recorded in MLflow and in Tune's experiment snapshot) and others are still
to come, the driver alone is SIGKILLed; the test records which of its Ray processes outlive it,
then stops those by id, and resumes.
"""

from __future__ import annotations

import glob
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ssad.study.spec import load_spec

pytestmark = pytest.mark.slow


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


def run_cli(box, args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 (the child holds it; closed when the test ends)
    return box.popen(
        [sys.executable, "-m", "ssad.cli", "study", "run", *args],
        env=box.env(RAY_ADDRESS="local"),  # a private local Ray, never another test's cluster
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
            if run.data.tags.get("ssad.status") and statuses.get(tid) == "TERMINATED":
                done_before[tid] = record(client, run)

    # SIGKILL the driver only, and see which of its Ray processes outlive it
    ray_procs = ray_sandbox.processes()
    assert driver.pid in ray_procs
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    survivors = study_helpers.wait_gone(ray_procs, 20)
    print(f"Ray processes alive 20 s after the driver's SIGKILL: {len(survivors)}/{len(ray_procs)}")
    ray_sandbox.stop()  # by id; nothing may keep training trials of the killed run
    assert study_helpers.alive(ray_procs) == []
    runs_at_kill = {r.data.tags["ssad.trial_id"] for r in trial_runs(client, spec.experiment)}
    assert 1 <= len(done_before) < total

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
    assert runs_at_kill <= set(ids)
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
