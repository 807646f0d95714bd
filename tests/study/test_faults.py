"""Fault suite: trial faults, bad specs, impossible resources, MLflow down, concurrent studies.

Real components only: an in-process local Ray (or a real ``ray start`` head for the concurrent
case), real MLflow stores (SQLite, or a real ``mlflow server`` started and stopped by the test),
real trials on the tiny data set. Trial faults are injected through the study's hooks
(``run_study(spec, hooks=FaultHooks(RULES))``, see :mod:`ssad.study.tune.faults`); the NaN fault
makes the real loss NaN so that ``ssad.train`` raises its own FloatingPointError.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from ssad.cli import main
from ssad.study.spec import SpecError, load_spec
from ssad.study.tune.faults import FaultHooks
from ssad.study.tune.runner import run_study

HEAD_OPTS = ["--num-cpus=2", "--object-store-memory=100000000", "--disable-usage-stats"]


def _runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'", max_results=1000)


# ---- trial faults (real Ray, real trials, SQLite MLflow) ---------------------------------------


@pytest.mark.slow
def test_failing_trials_are_retried_then_recorded(
    local_ray, make_spec, tmp_path: Path
) -> None:
    """One trial raises at epoch 2, one diverges (NaN loss): each is retried max_failures times,
    then closed as failed with its error text; the other trials and the study complete."""
    path = make_spec(tmp_path, name="faults", num_samples=1, seeds_per_config=2, max_failures=1)
    spec = load_spec(path)
    out = run_study(spec, hooks=FaultHooks("raise@2:brick/1,nan:gelcap/1"))

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

    from ssad.study.tune.runner import preflight

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


# ---- the driver's MLflow callback and the tracker without their store (no Ray, no server) ------


class _DeadStore:
    """A tracker whose MLflow calls fail as MLflow's client does on a stopped server (until up)."""

    tracking_uri = "http://127.0.0.1:9"

    def __init__(self) -> None:
        self.calls, self.up, self.logged, self.finished = 0, False, [], None

    def _call(self) -> None:
        self.calls += 1
        if not self.up:
            raise MlflowException(
                f"API request to {self.tracking_uri}/api/2.0/mlflow/runs/create failed with "
                "exception HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
                "(Caused by NewConnectionError: [Errno 111] Connection refused)"
            )

    @property
    def client(self) -> SimpleNamespace:
        self._call()
        return SimpleNamespace(
            get_experiment=lambda _id: SimpleNamespace(tags={}),
            set_experiment_tag=lambda *args: None,
        )

    @property
    def experiment_id(self) -> str:
        self._call()
        return "1"

    def trial_run(self, **kwargs) -> str:
        self._call()
        return "run-1"

    def log_step(self, run_id: str, metrics: dict, step: int) -> bool:
        self._call()
        self.logged.append(step)
        return True

    def set_tags(self, run_id: str, tags: dict) -> None:
        self._call()

    def run_closing(self, run_id: str) -> None:  # an open run
        self._call()

    def finish(self, run_id: str, **kwargs) -> None:
        self._call()
        self.finished = kwargs["status"]


def test_callback_survives_a_dead_tracking_store(tmp_path: Path, caplog) -> None:
    """Every hook's MLflow failure is swallowed with one warning per outage; while the store is
    away the hooks make no call until the retry time; once it answers they log again."""
    from ssad.config import load_config
    from ssad.study import tracking
    from ssad.study.tracking.trial_runs import TrialRunWriter
    from ssad.study.tune import callbacks

    cb = callbacks.MlflowTrials(tmp_path)
    store = _DeadStore()
    cb.writer = TrialRunWriter(store, "parent", load_config(preset="seed").to_dict(), {}, cb.sha)
    config = {"class_name": "brick", "config_id": "c1", "seed": 0, "params": {}}
    trial = SimpleNamespace(
        trial_id="t1", config=config, checkpoint=None, last_result={"training_iteration": 3}
    )
    try:
        with caplog.at_level(logging.WARNING, logger="ssad.study.tune.callbacks"):
            cb.on_trial_start(0, [], trial)
            for step in (1, 2):
                cb.on_trial_result(0, [], trial, {"training_iteration": step, "loss": 1.0})
            assert store.calls == 1  # one try, then nothing until the retry time
            assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
            assert store.tracking_uri in tracking._UNREACHABLE
            cb.retry_at = 0.0  # the retry time has come: the store is back
            store.up = True
            cb.on_trial_result(0, [], trial, {"training_iteration": 3, "loss": 1.0})
            cb.on_trial_complete(0, [], trial)
    finally:
        tracking.mark_reachable(store.tracking_uri)
    assert store.logged == [3] and store.finished == cb.writer.closing_status(trial, 3)
    assert "reachable again" in caplog.text and cb.missed == {"t1"}


def test_replayed_epochs_keep_a_closed_record(tmp_path: Path) -> None:
    """A driver killed after a trial ended but before Tune's snapshot recorded it: the resumed
    driver replays the trial's last epochs from the snapshot's checkpoint. Nothing new is logged,
    so the closed run keeps its status and end time."""
    from ssad.config import load_config
    from ssad.study.tracking import StudyTracker
    from ssad.study.tracking.trial_runs import TrialRunWriter
    from ssad.study.tune import callbacks

    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", "s")
    tracker.start_launch()
    parent = tracker.launch_parent_id()
    config = {"class_name": "brick", "config_id": "c1", "seed": 0, "params": {}}
    epochs = {"train.phase1_epochs": 1, "train.phase2_epochs": 2}
    base = load_config(preset="seed", overrides=epochs)

    def session() -> callbacks.MlflowTrials:  # a driver session's callback
        cb = callbacks.MlflowTrials(tmp_path)
        cb.writer = TrialRunWriter(tracker, parent, base.to_dict(), {}, cb.sha)
        tracker._steps.clear()
        return cb

    def run_through(cb, steps, last: int) -> None:
        trial = SimpleNamespace(
            trial_id="t1", config=config, checkpoint=None, last_result={"training_iteration": last}
        )
        cb.on_trial_start(0, [], trial)
        for step in steps:
            cb.on_trial_result(0, [], trial, {"training_iteration": step, "loss": 1.0})
        cb.on_trial_complete(0, [], trial)

    run_through(session(), (1, 2, 3), 3)
    (run,) = tracker.trial_runs()
    first = (run.info.status, run.data.tags["ssad.status"], run.info.end_time)
    assert first[:2] == ("FINISHED", "finished")
    time.sleep(0.05)
    run_through(session(), (2, 3), 3)  # replayed from epoch 1's checkpoint
    (run,) = tracker.trial_runs()
    assert (run.info.status, run.data.tags["ssad.status"], run.info.end_time) == first
    assert sorted(s for s, _ in tracker.metric_history(run.info.run_id, "loss")) == [1, 2, 3]


def test_known_dead_server_fails_at_once(study_helpers) -> None:
    """A tracker on a server this process found away raises TrackingUnavailable (a
    ConnectionError naming `ssad study sync`) at once instead of MLflow's minutes of retries."""
    from ssad.study import tracking

    uri = f"http://127.0.0.1:{study_helpers.free_port()}"
    tracker = tracking.StudyTracker(uri, "e", "s")
    tracking.mark_unreachable(uri)
    tic = time.monotonic()
    try:
        with pytest.raises(tracking.TrackingUnavailable, match="ssad study sync"):
            tracker.trial_runs()
    finally:
        tracking.mark_reachable(uri)
    assert time.monotonic() - tic < 10
    assert tracking.unreachable(MlflowException("API request failed: Connection refused"))
    assert not tracking.unreachable(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST"}))


def test_fill_steps_fills_gaps_key_by_key(tmp_path: Path) -> None:
    """`fill_steps` logs each (metric, step) a run lacks, never one it has; `log_step` fills a
    gap too and never logs a step twice."""
    from ssad.study.tracking import StudyTracker

    tracker = StudyTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", "s")
    run_id = tracker.create_run(run_name="t", tags={})
    tracker.log_step(run_id, {"loss": 1.0, "val_x": 0.1}, 1)
    tracker.log_step(run_id, {"loss": 3.0}, 3)  # step 2 missing; val_x missing at 3
    epochs = [
        (s, {"loss": float(s), "val_x": s / 10, "phase": "x"}, 1000 * s) for s in (1, 2, 3, 4)
    ]
    assert tracker.fill_steps(run_id, epochs) == 3  # steps 2, 3 (val_x) and 4
    for key in ("loss", "val_x"):
        assert sorted(s for s, _ in tracker.metric_history(run_id, key)) == [1, 2, 3, 4]
    assert tracker.fill_steps(run_id, epochs) == 0
    tracker.log_step(run_id, {"loss": 9.0}, 2)  # logged since: skipped
    assert sorted(s for s, _ in tracker.metric_history(run_id, "loss")) == [1, 2, 3, 4]
    assert tracker.log_missing_params(run_id, {"a": 1, "b": (1, 2)}) == 2
    assert tracker.log_missing_params(run_id, {"a": 1, "b": (1, 2)}) == 0


# ---- MLflow tracking server down mid-study, then `ssad study sync` -----------------------------


@pytest.mark.slow
def test_mlflow_server_down_mid_study_then_sync(
    make_spec, tmp_path: Path, study_helpers, ray_sandbox, capsys
) -> None:
    """A real server, stopped once the first trial's first epoch is logged: the study runs to its
    end (the trials keep their results in Tune's storage; the driver warns once, never stalls in
    MLflow's retries) and exits 2 naming `ssad study sync`. The server restarted on the same port
    and store, `ssad study sync SPEC` logs the rest: one run per trial, each trial's epochs
    1..n of `val_image_auroc` and `loss` exactly once, statuses as the callback sets them, the
    parent's leaderboard; a second sync logs nothing."""
    port = study_helpers.free_port()
    uri = f"http://127.0.0.1:{port}"
    folder = tmp_path / "server"
    folder.mkdir()
    store = {
        "port": port,
        "backend_store": f"sqlite:///{folder / 'server.db'}",
        "artifacts": folder / "artifacts",
    }
    server_log = open(folder / "server.log", "ab")  # noqa: SIM115 (closed at the end)
    server = study_helpers.start_mlflow_server(**store, log=server_log)
    try:
        study_helpers.wait_http(f"{uri}/health", 120, server)
        # one trial at a time: the second one (the other class) runs wholly without the server
        path = make_spec(
            tmp_path, name="downmid", tracking_uri=uri, num_samples=1, max_concurrent=1
        )
        spec = load_spec(path)
        study_log = tmp_path / "study.log"
        with open(study_log, "wb") as out:
            study = ray_sandbox.popen(
                [sys.executable, "-m", "ssad.cli", "study", "run", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        client = MlflowClient(uri)
        deadline = time.monotonic() + 240
        while not (
            client.get_experiment_by_name(spec.experiment) is not None
            and any("loss" in r.data.metrics for r in _runs(client, spec.experiment))
        ):
            assert study.poll() is None, study_log.read_text()[-4000:]
            assert time.monotonic() < deadline, "no epoch logged in 240 s"
            time.sleep(0.3)
        study_helpers.stop_group(server)
        rc = study.wait(timeout=300)
        text = study_log.read_text()
        # the end-of-study leaderboard needs the store: a clear error, no traceback, no stall
        assert rc == 2, text[-4000:]
        assert "unreachable" in text and "ssad study sync" in text, text[-4000:]
        assert text.count("the trials continue") == 1, text[-4000:]  # warned once
        assert "Traceback" not in text, text[-4000:]

        server = study_helpers.start_mlflow_server(**store, log=server_log)
        study_helpers.wait_http(f"{uri}/health", 120, server)
        capsys.readouterr()
        assert main(["study", "sync", str(path)]) == 0  # `ssad study sync SPEC`, in-process
        line = capsys.readouterr().out.strip().splitlines()[-1]
        found = re.search(r"runs created (\d+), epochs logged (\d+), runs closed (\d+)", line)
        assert found, line
        created, epochs, closed = map(int, found.groups())
        assert created >= 1 and epochs >= 1 and closed >= created, line
        assert "leaderboard and summary logged" in line, line

        # Tune's storage: every trial and epoch; the store now: the same, once
        tune: dict[str, list[int]] = {}
        for result in (spec.storage_path / spec.name).glob("*/result.json"):
            rows = [json.loads(r) for r in result.read_text().splitlines() if r.strip()]
            tune[rows[0]["trial_id"]] = sorted({r["training_iteration"] for r in rows})
        assert len(tune) == spec.total_trials()
        runs = _runs(client, spec.experiment)
        assert sorted(r.data.tags["ssad.trial_id"] for r in runs) == sorted(tune)  # no duplicate
        history = {}
        for run in runs:
            run_id, tags = run.info.run_id, run.data.tags
            steps = tune[tags["ssad.trial_id"]]
            assert steps == list(range(1, steps[-1] + 1))
            for key in ("val_image_auroc", "loss"):
                got = sorted(m.step for m in client.get_metric_history(run_id, key))
                assert got == steps, (tags["ssad.trial_name"], key, got, steps)
                history[run_id, key] = got
            status = "finished" if steps[-1] == study_helpers.MAX_EPOCHS else "stopped"
            assert tags["ssad.status"] == status and run.info.status == "FINISHED", tags
            assert run.info.start_time <= run.info.end_time
            assert "memory.k" in run.data.params and tags["ssad.class"] in spec.classes
            assert "config.yaml" in {a.path for a in client.list_artifacts(run_id)}
        exp_id = client.get_experiment_by_name(spec.experiment).experiment_id
        (parent,) = client.search_runs([exp_id], "tags.`ssad.role` = 'study'")
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["trials"] == spec.total_trials()
        board = client.download_artifacts(parent.info.run_id, "leaderboard.csv", str(tmp_path))
        assert len(Path(board).read_text().splitlines()) == 1 + len(spec.classes)

        # a second sync logs nothing
        assert main(["study", "sync", str(path)]) == 0
        again = capsys.readouterr().out
        assert (
            "runs created 0, epochs logged 0, runs closed 0, params logged 0, "
            "artifacts uploaded 0; summary present"
        ) in again, again
        assert len(_runs(client, spec.experiment)) == len(runs)
        for (run_id, key), got in history.items():
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == got
        assert len(client.get_metric_history(parent.info.run_id, "trials")) == 1
    finally:
        study_helpers.stop_group(server)
        server_log.close()


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
