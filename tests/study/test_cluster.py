"""A real two-node Ray cluster on this machine: ``ray start --head`` + ``ray start --address``.

Two raylets with one CPU each are two nodes; two concurrent one-CPU trials must use both. The
study runs as ``ssad study run --ray-address``; the MLflow callback records each trial's node.
The cluster is torn down by process group and id (``ray stop`` would stop every Ray instance of
the user on this machine, other people's included). Node loss: the worker node's processes (its
``ray start`` process group and their children) are SIGKILLed while it trains a trial.
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

NODE_OPTS = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
# The GCS declares a node dead after 3 missed 1 s health checks (default: 5 of 3 s, ~20 s).
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def ray_start(box, args: list[str], log: Path, **env: str) -> int:
    """``ray start`` in its own process group; returns the group (= the node's processes)."""
    ray = str(Path(sys.executable).parent / "ray")
    with open(log, "wb") as out:
        proc = box.popen(
            [ray, "start", *args, *NODE_OPTS],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=box.env(**env),
        )
        rc = proc.wait(timeout=180)
    assert rc == 0, log.read_text()[-3000:]
    return proc.pid


def alive_nodes(helpers, box, address: str) -> list[str]:
    return [n["id"] for n in helpers.ray_nodes(box, address)]


def head_node(helpers, box, address: str) -> tuple[str, list[str]]:
    """(the head's node id, the ids of every live node) of the cluster at ``address``."""
    nodes = helpers.ray_nodes(box, address)
    (head,) = [n["id"] for n in nodes if n["head"]]
    return head, [n["id"] for n in nodes]


def test_study_on_two_node_cluster(tmp_path: Path, make_spec, ray_sandbox, study_helpers) -> None:
    port = study_helpers.free_port()
    address = f"127.0.0.1:{port}"
    ray_start(
        ray_sandbox,
        ["--head", f"--port={port}", "--include-dashboard=false"],
        tmp_path / "head.log",
    )
    ray_start(ray_sandbox, [f"--address={address}"], tmp_path / "worker.log")
    deadline = time.monotonic() + 60
    while (
        len(nodes := alive_nodes(study_helpers, ray_sandbox, address)) < 2
        and time.monotonic() < deadline
    ):
        time.sleep(1)
    assert len(nodes) == 2, nodes

    path = make_spec(tmp_path, name="cluster", num_samples=2, max_concurrent=2)
    spec = load_spec(path)
    with open(tmp_path / "study.log", "wb") as log:
        proc = ray_sandbox.popen(
            [sys.executable, "-m", "ssad.cli", "study", "run", str(path), "--ray-address", address],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        rc = proc.wait(timeout=480)
    out = (tmp_path / "study.log").read_text()
    assert rc == 0, out[-5000:]
    assert "brick" in out and "gelcap" in out

    client = MlflowClient(tracking_uri=spec.tracking_uri)
    exp = client.get_experiment_by_name(spec.experiment)
    parent = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'study'")[0]
    runs = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'")
    assert len(runs) == spec.total_trials() == 4
    assert len({r.data.tags["ssad.trial_id"] for r in runs}) == 4
    # the trials ran on both nodes, and only on this cluster's nodes
    used = {r.data.tags["ssad.node_id"] for r in runs}
    assert used == set(nodes), (used, nodes)
    for run in runs:  # each record is complete, whichever node trained it
        tags, rid = run.data.tags, run.info.run_id
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["ssad.status"] in ("finished", "stopped")
        assert run.info.status == "FINISHED"
        epochs = int(run.data.metrics["training_iteration"])
        steps = [m.step for m in client.get_metric_history(rid, "val_image_auroc")]
        assert sorted(steps) == list(range(1, epochs + 1))
        assert (tags["ssad.status"] == "finished") == (epochs == spec.max_epochs)
        top = {a.path for a in client.list_artifacts(rid)}
        assert {"config.yaml", "val"} <= top
        assert "val/roc.png" in {a.path for a in client.list_artifacts(rid, "val")}
        assert client.list_artifacts(rid, "val/heatmaps")
        assert run.data.params["data.class_name"] == tags["ssad.class"]

    # teardown leaves nothing of this cluster behind
    ray_sandbox.stop()
    assert ray_sandbox.processes() == []


def metric_rows(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def test_node_loss_mid_trial_resumes_on_the_other_node(
    tmp_path: Path, make_spec, ray_sandbox, study_helpers
) -> None:
    """The worker node dies (raylet and workers SIGKILLed) while it trains a trial: Tune retries
    the trial (``max_failures: 1``) from its last checkpoint on the head node, once the head's
    CPU is free; the trial keeps its one MLflow run and every epoch is logged exactly once."""
    tic = time.monotonic()
    port = study_helpers.free_port()
    address = f"127.0.0.1:{port}"
    ray_start(
        ray_sandbox,
        ["--head", f"--port={port}", "--include-dashboard=false"],
        tmp_path / "head.log",
        **FAST_HEALTH_CHECKS,
    )
    worker_group = ray_start(ray_sandbox, [f"--address={address}"], tmp_path / "worker.log")
    deadline = time.monotonic() + 60
    while (
        len((found := head_node(study_helpers, ray_sandbox, address))[1]) < 2
        and time.monotonic() < deadline
    ):
        time.sleep(1)
    head, nodes = found
    assert len(nodes) == 2, nodes
    (worker,) = set(nodes) - {head}
    print(f"cluster up: {time.monotonic() - tic:.0f} s")

    # one trial per class, one CPU each: one trial trains on each node; no early stopping
    path = make_spec(
        tmp_path,
        name="nodeloss",
        num_samples=1,
        max_concurrent=2,
        max_failures=1,
        scheduler={"type": "none"},
    )
    spec = load_spec(path)
    client = MlflowClient(tracking_uri=spec.tracking_uri)
    log = tmp_path / "study.log"
    with open(log, "wb") as out:
        driver = ray_sandbox.popen(
            [sys.executable, "-m", "ssad.cli", "study", "run", str(path), "--ray-address", address],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )

    # wait until the worker node's trial has reported an epoch (its MLflow run says where it ran)
    victim = None
    deadline = time.monotonic() + 240
    while victim is None:
        assert driver.poll() is None, "study ended before the kill:\n" + log.read_text()[-4000:]
        assert time.monotonic() < deadline, "no epoch from the worker:\n" + log.read_text()[-4000:]
        time.sleep(0.5)
        exp = client.get_experiment_by_name(spec.experiment)
        if exp is None:
            continue
        for run in client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'"):
            if run.data.tags.get("ssad.node_id") == worker and "ssad.status" not in run.data.tags:
                victim = run
    vid = victim.info.run_id

    # node loss: SIGKILL the worker node's raylet, agents and workers (by id, never `ray stop`)
    procs = study_helpers.process_tree({worker_group})
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid, _ in procs]
    assert any(b"raylet" in c for c in cmdlines), cmdlines
    killed_at = time.time() * 1000
    study_helpers.kill_procs(procs, signal.SIGKILL)
    assert study_helpers.wait_gone(procs, 15) == []
    before = {key: metric_rows(client, vid, key) for key in ("loss", "val_image_auroc")}
    done = len(before["loss"])  # epochs the driver had logged when the node died
    print(f"{time.monotonic() - tic:.0f} s: killed the worker node ({len(procs)} processes)")
    print(f"after epoch {done}")
    assert 1 <= done < spec.max_epochs, before

    rc = driver.wait(timeout=420)
    text = log.read_text()
    assert rc == 0, text[-6000:]
    print(f"study done: {time.monotonic() - tic:.0f} s")
    assert alive_nodes(study_helpers, ray_sandbox, address) == [head]

    exp = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'")
    ids = [r.data.tags["ssad.trial_id"] for r in runs]
    assert len(ids) == len(set(ids)) == spec.total_trials() == 2  # one run per trial
    for run in runs:
        rid, tags = run.info.run_id, run.data.tags
        assert tags["ssad.status"] == "finished" and run.info.status == "FINISHED", tags
        for key in ("loss", "val_image_auroc", "training_iteration"):
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert sorted(steps) == list(range(1, spec.max_epochs + 1)), (key, steps)
    after = client.get_run(vid)
    tags = after.data.tags
    assert tags["ssad.node_id"] == head  # it moved: the head trained the rest
    assert tags["ssad.failures"] == "1"
    assert {r.data.tags["ssad.node_id"] for r in runs} == {head}
    for key, rows in before.items():  # the epochs before the kill: kept as logged, not re-run
        assert metric_rows(client, vid, key)[:done] == rows, key

    # Tune's own record: one result per epoch, no restart from epoch 1, the node changed once
    exp_dir = spec.storage_path / spec.name
    victim_tid = tags["ssad.trial_id"]
    results = None
    for file in glob.glob(str(exp_dir / "*" / "result.json")):
        rows = [json.loads(line) for line in Path(file).read_text().splitlines()]
        if rows and rows[0]["trial_id"] == victim_tid:
            results = rows
    assert results is not None
    assert [r["training_iteration"] for r in results] == list(range(1, spec.max_epochs + 1))
    assert [r["epoch"] for r in results] == list(range(1, spec.max_epochs + 1))
    where = [r["node_id"] for r in results]
    moved = where.index(head)  # epochs trained on the worker; the retry went on from there
    assert done <= moved < spec.max_epochs, (done, where)
    assert where == [worker] * moved + [head] * (spec.max_epochs - moved), where
    # the retry's first epoch came after the kill: trained on the head, not replayed
    assert results[moved]["timestamp"] * 1000 >= killed_at - 1000, (results[moved], killed_at)
    print(f"node loss test: {time.monotonic() - tic:.0f} s")

    ray_sandbox.stop()
    assert ray_sandbox.processes() == []
