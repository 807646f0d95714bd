"""A killed study resumed with an edited spec: refused, naming the keys; a new tracking URI is
honoured; per-class ASHA rung records survive the kill.

The driver runs as ``ssad study run`` with a private local Ray and is SIGKILLed once a trial has
finished and others are still to come (as in ``test_resume.py``).
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

from ssad.study.record import RECORD_FILE
from ssad.study.spec import load_spec
from ssad.study.tune.routing import ClassRoutedScheduler, asha_factory

pytestmark = pytest.mark.slow

EDITS = ["--set", "num_samples=4", "--set", "base.overrides.eval.heatmaps=1"]


def tune_statuses(exp_dir: Path) -> dict[str, str]:
    files = sorted(glob.glob(str(exp_dir / "experiment_state-*.json")))
    try:
        state = json.loads(Path(files[-1]).read_text()) if files else {"trial_data": []}
    except (OSError, json.JSONDecodeError):  # being replaced right now
        return {}
    return {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in state["trial_data"]}


def rung_records(exp_dir: Path, spec) -> dict[str, list]:
    """The per-class ASHA rung records in Tune's newest snapshot (callback-states-*.pkl)."""
    files = sorted(
        glob.glob(str(exp_dir / "callback-states-*.pkl")), key=lambda f: Path(f).stat().st_mtime
    )
    if not files:
        return {}
    with open(files[-1], "rb") as f:
        states = pickle.load(f)
    found = [s["scheduler"] for s in states.values() if isinstance(s, dict) and "scheduler" in s]
    sched = ClassRoutedScheduler(
        asha_factory(max_t=spec.max_epochs, grace_period=1, reduction_factor=2),
        metric=spec.metric,
        mode=spec.mode,
    )
    sched.set_state(found[0])
    return sched.rung_records()


def trial_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'", max_results=1000)


def cli(box, args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return box.popen(
            [sys.executable, "-m", "ssad.cli", "study", "run", *args],
            env=box.env(RAY_ADDRESS="local"),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


def test_resume_refuses_edits_honours_new_store_keeps_asha(
    tmp_path: Path, make_spec, ray_sandbox
) -> None:
    path = make_spec(tmp_path, name="edit", num_samples=3, max_concurrent=2)
    spec = load_spec(path)
    exp_dir = spec.storage_path / spec.name
    old = MlflowClient(spec.tracking_uri)
    log = tmp_path / "study.log"

    # launch, then SIGKILL the driver once a trial is done and ASHA has records to lose
    driver = cli(ray_sandbox, [str(path)], log, tmp_path)
    deadline = time.monotonic() + 300
    while True:
        assert driver.poll() is None, "study ended before the kill:\n" + log.read_text()[-4000:]
        assert time.monotonic() < deadline, "no trial finished in time:\n" + log.read_text()[-4000:]
        time.sleep(1)
        statuses = tune_statuses(exp_dir)
        done = [t for t, s in statuses.items() if s == "TERMINATED"]
        if done and len(done) < spec.total_trials() - 1:
            before = rung_records(exp_dir, spec)
            if any(rec for rungs in before.values() for _, rec in rungs):
                break
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    ray_sandbox.stop()
    before = rung_records(exp_dir, spec)  # the last snapshot the killed driver wrote
    record = json.loads((exp_dir / RECORD_FILE).read_text())
    parent = old.get_run(record["parent_id"])
    assert parent.data.tags["ssad.spec_hash"] == record["spec_hash"]
    old_runs = {r.info.run_id: r.info.end_time for r in trial_runs(old, spec.experiment)}

    # an edited spec is refused, naming what changed, before Ray starts
    edited = subprocess.run(
        [sys.executable, "-m", "ssad.cli", "study", "run", str(path), "--resume", *EDITS],
        env=ray_sandbox.env(RAY_ADDRESS="local"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert edited.returncode == 2, edited.stderr[-3000:]
    assert "num_samples: 3 -> 4" in edited.stderr and "base.eval.heatmaps: 2 -> 1" in edited.stderr
    assert "--new" in edited.stderr

    # resuming with only a new tracking URI works, and the new store gets the records
    new_uri = f"sqlite:///{tmp_path / 'moved' / 'mlflow.db'}"
    resumed = cli(
        ray_sandbox,
        [str(path), "--resume", "--set", f"mlflow.tracking_uri={new_uri}"],
        log,
        tmp_path,
    )
    assert resumed.wait(timeout=420) == 0, log.read_text()[-6000:]
    assert set(tune_statuses(exp_dir).values()) == {"TERMINATED"}

    new = MlflowClient(new_uri)
    new_parents = new.search_runs(
        [new.get_experiment_by_name(spec.experiment).experiment_id], "tags.`ssad.role` = 'study'"
    )
    assert len(new_parents) == 1
    tags = new_parents[0].data.tags
    assert tags["ssad.launch_id"] == record["launch_id"]  # the same launch, in the new store
    assert tags["ssad.spec_hash"] == record["spec_hash"]
    moved = trial_runs(new, spec.experiment)
    assert moved, "nothing was logged to the new tracking store"
    for run in moved:
        assert run.data.tags["ssad.launch_id"] == record["launch_id"]
        assert run.data.tags["mlflow.parentRunId"] == new_parents[0].info.run_id
    # the old store got nothing after the kill: no new run, no run closed or changed
    assert {r.info.run_id: r.info.end_time for r in trial_runs(old, spec.experiment)} == old_runs
    assert json.loads((exp_dir / RECORD_FILE).read_text())["tracking_uri"] == new_uri

    # ASHA's per-class rung records of before the kill are all still there after the resume
    after = rung_records(exp_dir, spec)
    assert set(after) == set(before)
    for cls, rungs in before.items():
        later = dict(after[cls])
        for milestone, recorded in rungs:
            assert recorded.items() <= later[milestone].items(), (cls, milestone)
    # (whether the resumed trials reach a further rung depends on how far they got before the
    # kill — on an idle machine they may all be past the last milestone — so the guarantee tested
    # is "nothing lost", above, not "more recorded")
