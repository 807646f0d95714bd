"""Fault suite: trial faults, bad specs, impossible resources, MLflow down, concurrent studies.

Real components only: an in-process local Ray (or a real ``ray start`` head for the concurrent
case), real MLflow stores (SQLite, or a real ``mlflow server`` started and stopped by the test),
real trials on the tiny data set. Trial faults are injected through ``SSAD_FAULT_INJECT``
(test-only, see :mod:`ssad.study.faults`); the NaN fault makes the real loss NaN so that
``ssad.train`` raises its own FloatingPointError.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ssad.study.runner import run_study
from ssad.study.spec import SpecError, load_spec

HEAD_OPTS = ["--num-cpus=2", "--object-store-memory=100000000", "--disable-usage-stats"]


def _runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'", max_results=1000)


# ---- trial faults (real Ray, real trials, SQLite MLflow) ---------------------------------------


@pytest.mark.slow
def test_failing_trials_are_retried_then_recorded(
    local_ray, make_spec, tmp_path: Path, monkeypatch
) -> None:
    """One trial raises at epoch 2, one diverges (NaN loss): each is retried max_failures times,
    then closed as failed with its error text; the other trials and the study complete."""
    monkeypatch.setenv("SSAD_FAULT_INJECT", "raise@2:brick/1,nan:gelcap/1")
    path = make_spec(tmp_path, name="faults", num_samples=1, seeds_per_config=2, max_failures=1)
    spec = load_spec(path)
    out = run_study(spec)

    assert out["errors"] == 2
    assert out["stats"]["trials"] == 4 and out["stats"]["failed"] == 2
    board = out["leaderboard"].set_index("class")
    assert list(board["failed"]) == [1, 1] and list(board["trials"]) == [2, 2]
    assert board[f"best_{spec.metric}"].notna().all()  # each class still has a best trial

    client = MlflowClient(spec.tracking_uri)
    runs = {
        (r.data.tags["ssad.class"], int(r.data.tags["ssad.seed"]) - spec.base.train.seed): r
        for r in _runs(client, spec.experiment)
    }
    assert len(runs) == 4  # one run per trial: retries reuse it
    raised, diverged = runs["brick", 1], runs["gelcap", 1]
    for run, text in ((raised, "injected fault"), (diverged, "FloatingPointError")):
        tags = run.data.tags
        assert tags["ssad.status"] == "failed" and run.info.status == "FAILED"
        assert text in tags["ssad.error"], tags["ssad.error"][-500:]
        assert tags["ssad.failures"] == str(spec.max_failures + 1)
        error = client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path / "dl"))
        assert text in Path(error).read_text()
    assert "diverged" in diverged.data.tags["ssad.error"]
    # the trial that raised at epoch 2 kept epoch 1 (logged once, across its retries)
    steps = [m.step for m in client.get_metric_history(raised.info.run_id, "loss")]
    assert steps == [1]
    for key in (("brick", 0), ("gelcap", 0)):
        assert runs[key].data.tags["ssad.status"] in ("finished", "stopped")
    parent = client.get_run(out["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.metrics["failed"] == 2


# ---- specs that can never run: refused before any trial ---------------------------------------


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"searcher": {"type": "hyperopt"}}, "searcher.type"),
        ({"scheduler": {"type": "pbt"}}, "scheduler.type"),
    ],
)
def test_unknown_searcher_or_scheduler(make_spec, tmp_path: Path, fields, fragment) -> None:
    path = make_spec(tmp_path, **fields)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("text", ["{}\n", "# nothing searched\n"])
def test_empty_search_space(make_spec, tmp_path: Path, text: str) -> None:
    path = make_spec(tmp_path)
    (tmp_path / "space.yaml").write_text(text)
    with pytest.raises(SpecError, match="empty search space") as info:
        load_spec(path)
    assert "space.yaml" in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("resources", "key"), [({"cpu": 64}, "cpu"), ({"cpu": 1, "gpu": 1}, "gpu")]
)
def test_resources_no_node_has_are_refused(
    local_ray, make_spec, tmp_path: Path, resources: dict, key: str
) -> None:
    """Tune would keep such trials pending forever; the preflight refuses them instead."""
    import ray

    if key == "gpu" and ray.cluster_resources().get("GPU", 0) >= 1:
        pytest.skip("this machine's local Ray has a GPU")
    path = make_spec(tmp_path, name=f"res-{key}", resources=resources)
    spec = load_spec(path)
    tic = time.monotonic()
    with pytest.raises(SpecError) as info:
        run_study(spec)
    msg = str(info.value)
    assert f"resources.{key}" in msg and "wait forever" in msg and str(path) in msg
    assert time.monotonic() - tic < 60
    assert not (spec.storage_path / spec.name / "tuner.pkl").exists()  # nothing launched


# ---- bad data: refused in the preflight, before Ray starts ------------------------------------


def test_preflight_refuses_a_bad_file_before_launch(
    study_data: Path, study_helpers, tmp_path: Path
) -> None:
    """`ssad study run` stops in its preflight, naming the spec and the file; nothing launched."""
    import shutil

    from ssad.study.runner import preflight

    data = tmp_path / "data"
    shutil.copytree(study_data, data)
    bad = sorted((data / "gelcap" / "test").rglob("*.png"))[-1]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    path = study_helpers.write_spec(tmp_path / "s", data_root=data, name="badfile")
    with pytest.raises(SpecError) as info:
        preflight(load_spec(path))
    assert str(bad) in str(info.value) and str(path) in str(info.value)
    assert not (tmp_path / "s" / "ray").exists()


# ---- MLflow tracking server down at start ------------------------------------------------------


@pytest.mark.slow
def test_mlflow_server_down_at_start(make_spec, tmp_path: Path, study_helpers) -> None:
    """A real server, stopped: `ssad study run` fails at once, naming the URI, before Ray."""
    port = study_helpers.free_port()
    uri = f"http://127.0.0.1:{port}"
    folder = tmp_path / "server"
    folder.mkdir()
    server = study_helpers.start_mlflow_server(
        port=port, backend_store=f"sqlite:///{folder / 'server.db'}", artifacts=folder / "artifacts"
    )
    try:
        study_helpers.wait_http(f"{uri}/health", 120, server)
    finally:
        study_helpers.stop_group(server)
    path = make_spec(tmp_path, name="down", tracking_uri=uri)
    proc = subprocess.run(
        [sys.executable, "-m", "ssad.cli", "study", "run", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={**study_helpers.ray_env(tmp_path / "no-ray"), "RAY_ADDRESS": "127.0.0.1:1"},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert uri in proc.stderr and "not reachable" in proc.stderr
    assert not (tmp_path / "ray").exists()  # nothing launched, no Tune folder
    assert not (tmp_path / "no-ray").exists()  # Ray was never started


# ---- two studies at once, one MLflow server, one Ray cluster -----------------------------------


@pytest.mark.slow
def test_concurrent_studies_do_not_interfere(
    tmp_path: Path, make_spec, mlflow_server: str, ray_sandbox, study_helpers
) -> None:
    ray_bin = str(study_helpers.VENV_BIN / "ray")
    port = study_helpers.free_port()
    address = f"127.0.0.1:{port}"
    head = ray_sandbox.popen(
        [ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false", *HEAD_OPTS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    assert head.wait(timeout=180) == 0
    specs, procs = {}, {}
    for name in ("alpha", "beta"):
        path = make_spec(
            tmp_path / name,
            name=name,
            tracking_uri=mlflow_server,
            num_samples=1,
            max_concurrent=1,
            classes=["brick"] if name == "alpha" else ["gelcap"],
        )
        specs[name] = load_spec(path)
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (the child keeps a copy)
        procs[name] = ray_sandbox.popen(
            [sys.executable, "-m", "ssad.cli", "study", "run", str(path), "--ray-address", address],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path / name,
        )
        log.close()
    for name, proc in procs.items():
        rc = proc.wait(timeout=480)
        assert rc == 0, (tmp_path / f"{name}.log").read_text()[-4000:]

    client = MlflowClient(mlflow_server)
    for name, spec in specs.items():
        exp = client.get_experiment_by_name(spec.experiment)
        parents = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'study'")
        assert len(parents) == 1 and parents[0].data.tags["ssad.study"] == name
        launch = parents[0].data.tags["ssad.launch_id"]
        runs = _runs(client, spec.experiment)
        assert len(runs) == 1
        tags = runs[0].data.tags
        assert tags["ssad.study"] == name and tags["ssad.launch_id"] == launch
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["ssad.class"] == spec.classes[0]
        # its leaderboard (the parent's summary) lists its own class and trial only
        board = client.download_artifacts(
            parents[0].info.run_id, "leaderboard.csv", str(tmp_path / "dl" / name)
        )
        text = Path(board).read_text().splitlines()
        assert len(text) == 2 and text[1].startswith(spec.classes[0] + ",")
    spans = [
        (p.info.start_time, p.info.end_time)
        for spec in specs.values()
        for p in client.search_runs(
            [client.get_experiment_by_name(spec.experiment).experiment_id],
            "tags.`ssad.role` = 'study'",
        )
    ]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans  # they overlapped
    other = {"alpha": "beta", "beta": "alpha"}
    for name, spec in specs.items():  # no run of one study in the other's experiment
        exp = client.get_experiment_by_name(spec.experiment)
        found = client.search_runs([exp.experiment_id], f"tags.`ssad.study` = '{other[name]}'")
        assert found == []
    assert yaml.safe_load((tmp_path / "alpha" / "alpha.yaml").read_text())["name"] == "alpha"
