"""A real two-node Ray cluster on this machine: ``ray start --head`` + ``ray start --address``.

Two raylets with one CPU each are two nodes; two concurrent one-CPU trials must use both. The
study runs as ``ssad study run --ray-address``; the MLflow callback records each trial's node.
The cluster is torn down by process group and id (``ray stop`` would stop every Ray instance of
the user on this machine, other people's included).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ssad.study.spec import load_spec

pytestmark = pytest.mark.slow

NODE_OPTS = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]


def ray_start(box, args: list[str], log: Path) -> None:
    ray = str(Path(sys.executable).parent / "ray")
    with open(log, "wb") as out:
        proc = box.popen([ray, "start", *args, *NODE_OPTS], stdout=out, stderr=subprocess.STDOUT)
        rc = proc.wait(timeout=180)
    assert rc == 0, log.read_text()[-3000:]


def alive_nodes(box, address: str) -> list[str]:
    code = (
        "import json, ray\n"
        f"ray.init(address={address!r}, log_to_driver=False)\n"
        "print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=box.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    while len(nodes := alive_nodes(ray_sandbox, address)) < 2 and time.monotonic() < deadline:
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
