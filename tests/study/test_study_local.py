"""A real, tiny study on local Ray: per-class Optuna + ASHA, every trial recorded in MLflow.

Runs twice on one in-process Ray: with a SQLite tracking store, and against a real ``mlflow
server`` over HTTP (records and artifacts read back through the server).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ssad.cli import main
from ssad.config import Config
from ssad.study.results.report import short_number
from ssad.study.spec import load_spec
from ssad.study.tune.runner import run_study

pytestmark = pytest.mark.slow

# Pixel AUROC is continuous (image AUROC on a handful of validation images ties at 1.0), so
# ASHA has something to cut: with 4 configurations per class a trial below its rung's median
# is stopped.
METRIC = "val_pixel_auroc"


def trial_runs(client: MlflowClient, experiment_id: str) -> list:
    return client.search_runs([experiment_id], "tags.`ssad.role` = 'trial'", max_results=1000)


def last_value(client: MlflowClient, run_id: str, key: str) -> tuple[int, float]:
    hist = client.get_metric_history(run_id, key)
    last = max(hist, key=lambda m: m.step)
    return last.step, last.value


def check_trial_records(client: MlflowClient, spec, parent_id: str, runs: list) -> dict[str, int]:
    """Every trial run is complete: nested, tagged, params, per-epoch history, artifacts."""
    max_t = spec.max_epochs
    counts: dict[str, int] = defaultdict(int)
    prints: dict[str, set[str]] = defaultdict(set)
    assert len({r.data.tags["ssad.trial_id"] for r in runs}) == len(runs)  # one run per trial
    for run in runs:
        tags, params, rid = run.data.tags, run.data.params, run.info.run_id
        assert tags["mlflow.parentRunId"] == parent_id
        assert tags["ssad.class"] in spec.classes
        assert tags["ssad.trial_id"] and tags["ssad.config_id"]
        assert tags["ssad.seed"] == str(spec.base.train.seed)
        assert tags["ssad.git_sha"]
        assert tags["ssad.dataset_fingerprint"]
        prints[tags["ssad.class"]].add(tags["ssad.dataset_fingerprint"])
        status = tags["ssad.status"]
        counts[status] += 1
        assert status in ("finished", "stopped"), status
        assert run.info.status == "FINISHED" and run.info.end_time
        # params: the whole resolved config, the trial's class and searched values included
        assert set(Config().flat()) <= set(params)
        assert params["data.class_name"] == tags["ssad.class"]
        assert params["data.root"] == str(Path(spec.data_root).resolve())
        for key, value in json.loads(tags["ssad.params"]).items():
            assert params[key] == str(value), key
        # per-epoch history: steps 1..n, once each; stopped trials ran fewer epochs
        epochs = int(run.data.metrics["training_iteration"])
        for key in ("val_image_auroc", METRIC, "loss"):
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert sorted(steps) == list(range(1, epochs + 1)), (key, steps)
        assert (epochs == max_t) if status == "finished" else (1 <= epochs < max_t)
        assert 0.0 <= run.data.metrics[METRIC] <= 1.0
        # artifacts: config, validation ROC and heatmaps; no training state
        top = {a.path for a in client.list_artifacts(rid)}
        assert {"config.yaml", "val", "history.json"} <= top, top
        assert "state.pt" not in top
        val = {a.path for a in client.list_artifacts(rid, "val")}
        assert {"val/roc.png", "val/heatmaps", "val/metrics.json"} <= val, val
        assert len(client.list_artifacts(rid, "val/heatmaps")) == 2
        assert tags["ssad.checkpoint"]
    # one fingerprint per class, different between the classes
    assert all(len(v) == 1 for v in prints.values())
    assert len(set().union(*prints.values())) == len(spec.classes)
    return counts


@pytest.mark.parametrize(
    ("store", "num_samples"),
    [("sqlite", 4), ("http", 2)],
)
def test_local_study_records_every_trial(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_spec,
    local_ray: Path,
    capsys: pytest.CaptureFixture,
    store: str,
    num_samples: int,
) -> None:
    uri = request.getfixturevalue("mlflow_server") if store == "http" else None
    path = make_spec(
        tmp_path,
        name=f"local-{store}",
        tracking_uri=uri,
        num_samples=num_samples,
        metric=METRIC,
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        max_concurrent=2,
    )
    spec = load_spec(path)
    out = run_study(spec)
    total = spec.total_trials()
    assert total == 2 * num_samples
    assert out["errors"] == 0
    if store == "http":
        assert out["tracking_uri"] == uri

    client = MlflowClient(tracking_uri=out["tracking_uri"])
    exp = client.get_experiment(out["experiment_id"])
    assert exp.name == spec.experiment
    parents = client.search_runs([exp.experiment_id], "tags.`ssad.role` = 'study'")
    assert [p.info.run_id for p in parents] == [out["parent_run_id"]]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["classes"] == "brick,gelcap"
    assert int(parent.data.metrics["trials"]) == total
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {path.name, "space.yaml", "leaderboard.csv", "summary.json"} <= parent_files

    runs = trial_runs(client, exp.experiment_id)
    assert len(runs) == total
    assert {r.data.tags["ssad.class"] for r in runs} == set(spec.classes)
    # trials are named <class>-<number within the class>, in MLflow and in Tune's folder
    names = {r.info.run_name for r in runs}
    assert names == {f"{c}-{n:04d}" for c in spec.classes for n in range(1, num_samples + 1)}
    assert names <= {p.name for p in (spec.storage_path / spec.name).iterdir()}
    counts = check_trial_records(client, spec, parent.info.run_id, runs)
    assert counts["finished"] + counts["stopped"] == total
    assert counts["finished"] >= 1  # the first trial at every rung always continues
    if num_samples >= 4:
        assert counts["stopped"] >= 1, "ASHA stopped nothing"
    assert out["stats"]["trials"] == total
    assert out["stats"]["stopped"] == counts["stopped"]

    # the leaderboard's best per class, recomputed from the runs' metric histories: among the
    # finished trials only (a trial ASHA stopped at a low rung has an early value that may be
    # higher, but it is not comparable with a last epoch's and must never win)
    board = out["leaderboard"].set_index("class")
    for cls in spec.classes:
        by_config: dict[str, list[float]] = defaultdict(list)
        for r in runs:
            if r.data.tags["ssad.class"] == cls and r.data.tags["ssad.status"] == "finished":
                step, value = last_value(client, r.info.run_id, METRIC)
                assert step == spec.max_epochs
                by_config[r.data.tags["ssad.config_id"]].append(value)
        assert by_config, f"{cls}: no finished trial (its ASHA's first trial always continues)"
        best = max(sum(v) / len(v) for v in by_config.values())
        assert board.loc[cls, f"best_{METRIC}"] == pytest.approx(best)
        assert board.loc[cls, "trials"] == num_samples
        best_run = client.get_run(board.loc[cls, "best_run_id"])
        assert best_run.data.tags["ssad.class"] == cls
        assert not math.isnan(board.loc[cls, "compute_s"])

    # an artifact downloaded through the store (HTTP: served by the tracking server)
    run = runs[0]
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl"))
    cfg = yaml.safe_load(Path(local).read_text())
    assert cfg["data"]["class_name"] == run.data.tags["ssad.class"]
    assert str(cfg["memory"]["k"]) == run.data.params["memory.k"]
    roc = client.download_artifacts(run.info.run_id, "val/roc.png", str(tmp_path / "dl"))
    assert Path(roc).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # `ssad study show` prints both classes from the same records
    capsys.readouterr()
    assert main(["study", "show", str(path)]) == 0
    shown = capsys.readouterr().out
    for cls in spec.classes:
        line = next(ln for ln in shown.splitlines() if ln.strip().startswith(cls))
        assert short_number(board.loc[cls, f"best_{METRIC}"]) in line
    assert f"trials: {total} " in shown
    assert f"#/experiments/{exp.experiment_id}/runs" in shown
