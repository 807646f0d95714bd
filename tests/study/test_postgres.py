"""A study and a promotion through an ``mlflow server`` on a real PostgreSQL (the cluster set-up).

PostgreSQL comes from Debian's ``postgresql`` package (``.ci/run`` installs it); the test runs a
private instance (``initdb`` + ``pg_ctl`` on a temp data dir, 127.0.0.1 and a free port, as the
``postgres`` user when run as root, which PostgreSQL refuses), an ``mlflow server`` with served
artifacts on it, then a tiny study on local Ray and ``promote``. Everything is read back with
``MlflowClient`` through the server, and the rows are checked in PostgreSQL itself.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ssad.detector import Detector
from ssad.study.promote import promote
from ssad.study.spec import load_spec
from ssad.study.tune.runner import run_study

pytestmark = pytest.mark.slow

PG_MISSING = (
    "PostgreSQL is not installed: the test needs the Debian package `postgresql` "
    "(apt-get update && apt-get install -y postgresql; .ci/run does this)"
)


def _pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and pg_ctl, if any."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    found = [p for p in found if (p / "pg_ctl").is_file()]
    return found[-1] if found else None


def _as_db_user() -> list[str]:
    """Command prefix: PostgreSQL refuses to run as root, so root runs it as ``postgres``."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        runuser = None
    if runuser is None:
        pytest.skip("running as root without a `postgres` user or runuser: " + PG_MISSING)
    return [runuser, "-u", "postgres", "--"]


@pytest.fixture
def postgres(study_helpers) -> Iterator[str]:
    """A private PostgreSQL on 127.0.0.1:<free port>; yields its ``postgresql://`` DSN."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip(PG_MISSING)
    pytest.importorskip("psycopg2", reason="pip install '.[postgres]' (psycopg2-binary)")
    prefix = _as_db_user()
    folder = Path(tempfile.mkdtemp(prefix="ssad-pg-", dir="/tmp"))  # reachable by `postgres`
    data = folder / "data"
    if prefix:
        shutil.chown(folder, user="postgres")
    port = study_helpers.free_port()

    def pg_run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    started = False
    try:
        pg_run(str(pg / "initdb"), "-D", str(data), "-U", "ssad", "--auth=trust", "-E", "UTF8")
        pg_run(
            str(pg / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(folder / "postgres.log"),
            "-o",
            f"-h 127.0.0.1 -p {port} -k {folder}",
            "-w",
            "start",
        )
        started = True
        pg_run(str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ssad", "mlflow")
        yield f"postgresql://ssad@127.0.0.1:{port}/mlflow"
    finally:
        if started:
            subprocess.run(
                [*prefix, str(pg / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_server(postgres: str, tmp_path: Path, study_helpers) -> Iterator[str]:
    """``mlflow server`` on the PostgreSQL store, artifacts served from a local folder."""
    port = study_helpers.free_port()
    log = open(tmp_path / "mlflow-server.log", "wb")  # noqa: SIM115 (closed in teardown)
    proc = study_helpers.start_mlflow_server(
        port=port,
        # the driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3
        backend_store=postgres.replace("postgresql://", "postgresql+psycopg2://", 1),
        artifacts=tmp_path / "artifacts",
        log=log,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        try:
            study_helpers.wait_http(f"{uri}/health", 180, proc)  # creates the schema first
        except (RuntimeError, TimeoutError) as exc:
            tail = (tmp_path / "mlflow-server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}; server log:\n{tail}") from None
        yield uri
    finally:
        study_helpers.stop_group(proc)
        log.close()


def test_study_and_promotion_through_postgres_server(
    postgres: str,
    postgres_server: str,
    local_ray: Path,
    make_spec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg2

    uri = postgres_server
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    spec = load_spec(
        make_spec(tmp_path / "study", name="pg", tracking_uri=uri, classes=["brick"], num_samples=2)
    )
    out = run_study(spec)
    assert out["errors"] == 0 and out["tracking_uri"] == uri
    report = promote(spec, out_root=tmp_path / "promoted", models_root=tmp_path / "models")
    assert list(report["class"]) == ["brick"]

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(spec.experiment)
    trials = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'trial'")
    assert len(trials) == 2
    assert {r.data.tags["ssad.class"] for r in trials} == {"brick"}
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == out["parent_run_id"]
        epochs = int(run.data.metrics["training_iteration"])
        history = client.get_metric_history(run.info.run_id, spec.metric)
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))
        assert 0.0 <= run.data.metrics[spec.metric] <= 1.0
        assert run.data.params["data.class_name"] == "brick"
        top = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "val"} <= top  # served by the tracking server
    champion = client.get_model_version_by_alias("ssad-brick", "champion")
    assert champion.tags["ssad.study"] == "pg"
    assert 0.0 <= float(champion.tags["test_image_auroc"]) <= 1.0
    promoted = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'promotion'")
    assert [r.info.run_id for r in promoted] == [champion.run_id]
    assert "test_image_auroc" in promoted[0].data.metrics
    local = Path(client.download_artifacts(champion.run_id, "", str(tmp_path / "dl")))
    assert (local / "brick.yaml").is_file() and (local / "test").is_dir()
    # the champion loads through the registry and the served artifacts
    assert Detector.load("models:/ssad-brick@champion").threshold is not None

    # the records live in PostgreSQL itself, not in some fallback store
    with psycopg2.connect(postgres) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (exp.experiment_id,))
        assert cur.fetchone()[0] == 1 + 2 + 1  # study parent, trials, promotion run
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'ssad-brick'")
        assert cur.fetchall() == [("champion", int(champion.version))]
