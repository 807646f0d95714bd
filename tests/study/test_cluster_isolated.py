"""A two-node study whose nodes share nothing but ``storage_path``.

Two machines are simulated on this one with a mount namespace for the worker node
(``unshare -m``, root only). Inside it the spec's data root shows the worker's own copy of the
data, the driver's working directory is an empty folder and Ray's temp dir is the worker's own;
the worker node runs from a working directory of its own. The head node has no CPU, so every
trial runs on the worker: a trial that read the driver's working directory, a file only the
driver has, or the driver's Ray session files would fail or write where the test looks. The spec
names its backbone weights file relative to the driver's cwd (a copy lives beside each node's
data): the spec loader must make it absolute, as it does the data root, since a trial runs in
Tune's working directory, never in the driver's. A negative control removes one mask from the
worker's copy only: the driver's preflight passes, the trial fails naming the file.

Layout under ``tmp_path``: ``driver/`` (the driver's cwd: spec, search space, MLflow SQLite),
``data/`` (the driver's copy of the tiny data set: the spec's data root), ``worker/`` (the worker
node's cwd), ``worker-data/`` (its copy, mounted on ``data/`` in its namespace), ``shared/``
(``storage_path``), ``empty/`` (mounted on ``driver/`` in its namespace), ``worker-ray/``
(mounted on the Ray temp dir in its namespace), ``logs/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from ssad.data.mvtec import fingerprint, load_class
from ssad.model import SSADNet
from ssad.study.spec import load_spec

UNSHARE = ["unshare", "-m", "--propagation", "private"]
NODE_OPTS = ["--object-store-memory=100000000", "--disable-usage-stats"]

# Runs as: sh -c WORKER_NODE sh <data> <worker-data> <driver> <empty> <ray tmp> <worker-ray>
#          <worker cwd> <ray> <ray start args...>, inside `unshare -m --propagation private`.
WORKER_NODE = """set -e
mount --bind "$2" "$1"
mount --bind "$4" "$3"
mount --bind "$6" "$5"
cd "$7"
ray=$8
shift 8
exec "$ray" start "$@"
"""


def mount_namespaces_usable(folder: Path) -> str | None:
    """Why a private mount namespace with bind mounts cannot be had here (None: it can)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "no unshare/mount on PATH (util-linux)"
    src, dst = folder / "probe-src", folder / "probe-dst"
    src.mkdir()
    dst.mkdir()
    (src / "seen").touch()
    probe = subprocess.run(
        [*UNSHARE, "sh", "-c", 'mount --bind "$1" "$2" && test -e "$2/seen"', "sh", src, dst],
        capture_output=True,
        text=True,
        timeout=30,
    )
    shutil.rmtree(src)
    shutil.rmtree(dst)
    if probe.returncode != 0:
        return f"unshare -m with a bind mount failed (needs root or CAP_SYS_ADMIN): {probe.stderr}"
    return None


def group_processes(pgid: int, program: bytes) -> list[int]:
    """Live pids of process group ``pgid`` running ``program`` (the end of argv[0])."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) == pgid and (entry / "cmdline").read_bytes().split(b"\0")[0].endswith(
                program
            ):
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def identity(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def ns_identity(pid: int, path: Path) -> str:
    """``device:inode`` of the folder at ``path`` as process ``pid`` sees it (its namespace)."""
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "stat", "-c", "%d:%i", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def working_dirs(ray_tmpdir: Path, study: str) -> dict[str, list[str]]:
    """Tune's trial working directories of ``study`` under a node's Ray temp dir → their files."""
    pattern = f"ray/session_*/artifacts/*/{study}/working_dirs/*"
    return {p.name: os.listdir(p) for p in Path(ray_tmpdir).glob(pattern)}


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path → (size, mtime in ns)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_study(box, spec_path: Path, address: str, cwd: Path, log: Path, timeout: float) -> int:
    cli = [sys.executable, "-m", "ssad.cli", "study", "run", str(spec_path)]
    with open(log, "wb") as out:
        proc = box.popen(
            [*cli, "--ray-address", address],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
        return proc.wait(timeout=timeout)


def test_spec_resolves_the_weights_file_against_the_loading_cwd(
    tmp_path: Path, study_data: Path, study_helpers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial runs in Tune's working directory (on whichever node): a relative weights path
    valid in the driver's cwd is made absolute when the spec is loaded, as the data root is."""
    (tmp_path / "weights").mkdir()
    torch.save({"stem.1.weight": torch.ones(64)}, tmp_path / "weights" / "bn1.pt")
    base = study_helpers.TINY_BASE
    path = study_helpers.write_spec(
        tmp_path / "spec",
        data_root=study_data,
        base={**base, "overrides": {**base["overrides"], "model.weights": "weights/bn1.pt"}},
    )
    monkeypatch.chdir(tmp_path)
    spec = load_spec(path)
    assert spec.base.model.weights == str(tmp_path / "weights" / "bn1.pt")


@pytest.mark.slow
def test_nodes_share_only_storage_path(
    tmp_path: Path, study_data: Path, ray_sandbox, study_helpers
) -> None:
    tic = time.monotonic()
    marks: dict[str, float] = {}
    why = mount_namespaces_usable(tmp_path)
    if why:
        pytest.skip(f"cannot simulate a second machine with a mount namespace: {why}")
    dirs = {
        name: tmp_path / name
        for name in ("driver", "worker", "shared", "empty", "worker-ray", "logs")
    }
    for folder in dirs.values():
        folder.mkdir()
    data, worker_data = tmp_path / "data", tmp_path / "worker-data"
    shutil.copytree(study_data, data)
    # backbone weights beside the data (a seeded ResNet-18 in timm's names), named in the spec
    # relative to the driver's cwd
    torch.manual_seed(0)
    torch.save(SSADNet(backbone="resnet18").encoder.state_dict(), data / "bn1.pt")
    shutil.copytree(data, worker_data)
    driver, worker, shared, logs = dirs["driver"], dirs["worker"], dirs["shared"], dirs["logs"]
    ray = str(study_helpers.VENV_BIN / "ray")

    # head node: no CPU (nothing trains there), started from the driver's folder
    port = study_helpers.free_port()
    address = f"127.0.0.1:{port}"
    head_args = ["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false"]
    with open(logs / "head.log", "wb") as out:
        rc = ray_sandbox.popen(
            [ray, "start", *head_args, *NODE_OPTS], stdout=out, stderr=subprocess.STDOUT, cwd=driver
        ).wait(timeout=180)
    assert rc == 0, (logs / "head.log").read_text()[-3000:]

    # worker node: its own mount namespace (data root = its copy, driver folder empty, own Ray
    # temp dir) and its own cwd; `ray start` daemonizes the raylet, which stays in the namespace
    worker_args = [f"--address={address}", "--num-cpus=2", *NODE_OPTS]
    mounts = [data, worker_data, driver, dirs["empty"], ray_sandbox.tmpdir, dirs["worker-ray"]]
    with open(logs / "worker.log", "wb") as out:
        starter = ray_sandbox.popen(
            [*UNSHARE, "sh", "-c", WORKER_NODE, "sh"]
            + [str(p) for p in mounts]
            + [str(worker), ray, *worker_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=worker,
        )
        rc = starter.wait(timeout=180)
    assert rc == 0, (logs / "worker.log").read_text()[-3000:]
    deadline = time.monotonic() + 60
    while (
        len(nodes := {n["id"]: n["cpus"] for n in study_helpers.ray_nodes(ray_sandbox, address)})
        < 2
        and time.monotonic() < deadline
    ):
        time.sleep(1)
    assert sorted(nodes.values()) == [0.0, 2.0], nodes
    (worker_node,) = [n for n, cpus in nodes.items() if cpus == 2.0]

    # the isolation is real: the worker's raylet lives in another mount namespace, in worker/,
    # and there sees its own data copy, an empty driver folder and its own Ray temp dir
    (raylet,) = group_processes(starter.pid, b"/raylet")
    assert os.readlink(f"/proc/{raylet}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert os.readlink(f"/proc/{raylet}/cwd") == str(worker)
    for path, shows in ((data, worker_data), (driver, dirs["empty"])):
        assert ns_identity(raylet, path) == identity(shows), path
    assert ns_identity(raylet, ray_sandbox.tmpdir) == identity(dirs["worker-ray"])
    assert identity(data) != identity(worker_data)  # and this process sees the driver's copy

    # the study, driven from driver/; storage_path is the only folder both nodes see
    marks["cluster up"] = time.monotonic() - tic
    base = study_helpers.TINY_BASE
    weights = {**base["overrides"], "train.phase2_epochs": 1, "model.weights": "../data/bn1.pt"}
    path = study_helpers.write_spec(
        driver,
        data_root=data,
        name="iso",
        base={**base, "overrides": weights},
        num_samples=1,
        max_concurrent=2,
        scheduler={"type": "none"},
        storage_path=str(shared),
    )
    with pytest.MonkeyPatch.context() as mp:  # its relative paths are the driver's
        mp.chdir(driver)
        spec = load_spec(path)
    before = {"data": tree(data), "worker-data": tree(worker_data)}
    rc = run_study(ray_sandbox, path, address, driver, logs / "study.log", 420)
    out = (logs / "study.log").read_text()
    assert rc == 0, out[-5000:]
    marks["study run"] = time.monotonic() - tic

    client = MlflowClient(tracking_uri=spec.tracking_uri)
    exp = client.get_experiment_by_name(spec.experiment)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'study'")
    runs = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'")
    assert len(runs) == spec.total_trials() == 2
    assert {r.data.tags["ssad.class"] for r in runs} == set(study_helpers.CLASSES)
    for run in runs:
        tags, rid = run.data.tags, run.info.run_id
        assert tags["ssad.node_id"] == worker_node, tags  # trained on the worker node
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["ssad.status"] == "finished" and run.info.status == "FINISHED", tags
        for key in ("loss", "val_image_auroc", "training_iteration"):
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert sorted(steps) == list(range(1, spec.max_epochs + 1)), (key, steps)
        top = {a.path for a in client.list_artifacts(rid)}
        assert {"config.yaml", "val"} <= top, top
        assert "val/roc.png" in {a.path for a in client.list_artifacts(rid, "val")}
        assert client.list_artifacts(rid, "val/heatmaps")
        assert run.data.params["data.root"] == str(data)
        assert run.data.params["model.weights"] == str(data / "bn1.pt")
        name = tags["ssad.class"]
        assert tags["ssad.dataset_fingerprint"] == fingerprint(load_class(data, name))
        assert tags["ssad.dataset_fingerprint"] == fingerprint(load_class(worker_data, name))
        assert Path(tags["ssad.checkpoint"]).is_relative_to(shared / spec.name)

    # nothing written where it must not be: no data copy changed, the worker node's folder is
    # empty, the driver's holds only what the driver writes, storage_path only the study
    assert tree(data) == before["data"]
    assert tree(worker_data) == before["worker-data"]
    assert os.listdir(worker) == []
    assert os.listdir(dirs["empty"]) == []
    expected = {"iso.yaml", "space.yaml", "mlflow.db", "mlartifacts"}
    assert set(os.listdir(driver)) == expected, os.listdir(driver)
    assert os.listdir(shared) == ["iso"]
    # the trials' working directories (Tune's chdir) are in the worker's own Ray temp dir, empty
    assert working_dirs(dirs["worker-ray"], "iso") == {"brick-0001": [], "gelcap-0001": []}
    assert working_dirs(ray_sandbox.tmpdir, "iso") == {}
    marks["checked"] = time.monotonic() - tic

    # negative control: the worker's copy lacks a mask the driver's has. The driver's preflight
    # passes (it checks its own copy); the trial, on the worker, fails naming the file.
    gone = sorted((worker_data / "gelcap" / "ground_truth").rglob("*_mask.png"))[0]
    gone.unlink()
    missing = data / gone.relative_to(worker_data)
    assert missing.is_file()
    path = study_helpers.write_spec(
        driver,
        data_root=data,
        name="iso-missing",
        classes=["gelcap"],
        num_samples=1,
        scheduler={"type": "none"},
        storage_path=str(shared),
    )
    spec = load_spec(path)
    rc = run_study(ray_sandbox, path, address, driver, logs / "missing.log", 300)
    out = (logs / "missing.log").read_text()
    assert rc == 1, out[-5000:]
    marks["negative control run"] = time.monotonic() - tic
    exp = client.get_experiment_by_name(spec.experiment)
    (run,) = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'")
    tags = run.data.tags
    assert tags["ssad.status"] == "failed", tags  # before its first epoch: no node tag
    assert f"ground-truth mask missing (expected {missing})" in tags["ssad.error"], tags
    assert working_dirs(dirs["worker-ray"], "iso-missing") == {"gelcap-0001": []}  # it ran there
    assert os.listdir(worker) == []
    assert set(os.listdir(driver)) == expected | {"iso-missing.yaml"}
    print("isolated two-node study:", ", ".join(f"{k} {v:.0f} s" for k, v in marks.items()))

    ray_sandbox.stop()
    assert ray_sandbox.processes() == []
