"""Study integrity: launches never mix, and nothing a spec names escapes the study's folders.

Real MLflow stores (SQLite) and, for the end-to-end case, a real local Ray: a study launched
again over an existing one is refused until ``--resume`` or ``--new`` says what is meant, and a
new launch's leaderboard and promotion see only its own trial runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from ssad.cli import main
from ssad.study.results.leaderboard import leaderboard, trials_frame
from ssad.study.spec import SpecError, load_spec
from ssad.study.tracking import TAG_LAUNCH, StudyTracker
from ssad.study.tune.launch import prepare_launch


def _tracker(spec) -> StudyTracker:
    return StudyTracker(spec.tracking_uri, spec.experiment, spec.name)


def _fake_launch(spec, trial_ids: list[str]) -> str:
    """What a finished launch leaves in MLflow: a parent run and its trial runs."""
    tracker = _tracker(spec)
    parent = tracker.parent_run(params={"space": "old.yaml"}, artifacts=[])
    for tid in trial_ids:
        run = tracker.trial_run(
            parent_id=parent, trial_id=tid, params={"memory.k": 3}, tags={"ssad.class": "brick"}
        )
        tracker.log_step(run, {"val_image_auroc": 0.9}, 1)
        tracker.finish(run, status="finished")
    return tracker.current_launch()


# ---- launch decisions (real SQLite MLflow, no Ray) ---------------------------------------------


def test_first_launch_needs_no_flag(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec(tmp_path / "s"))
    assert prepare_launch(spec, _tracker(spec)) is None


def test_relaunch_is_refused_even_after_removing_the_tune_folder(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec(tmp_path / "s"))
    _fake_launch(spec, ["t1", "t2"])
    exp_dir = spec.storage_path / spec.name
    exp_dir.mkdir(parents=True)
    for remove in (True, False):  # with the Tune folder, then without it (the old advice)
        with pytest.raises(SpecError) as info:
            prepare_launch(spec, _tracker(spec))
        msg = str(info.value)
        assert "--resume" in msg and "--new" in msg and str(spec.path) in msg
        if remove:
            exp_dir.rmdir()


def test_resume_without_tune_state_and_both_flags_are_refused(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec(tmp_path / "s"))
    # nothing at all yet: --resume is the first launch (make demo always passes it)
    assert prepare_launch(spec, _tracker(spec), resume=True) is None
    _fake_launch(spec, ["t1"])
    with pytest.raises(SpecError, match="--new"):
        prepare_launch(spec, _tracker(spec), resume=True)
    with pytest.raises(SpecError, match="exclude"):
        prepare_launch(spec, _tracker(spec), resume=True, new=True)


def test_new_launch_keeps_old_runs_apart(make_spec, tmp_path: Path) -> None:
    spec = load_spec(make_spec(tmp_path / "s"))
    old = _fake_launch(spec, ["t1", "t2", "t3"])
    exp_dir = spec.storage_path / spec.name
    exp_dir.mkdir(parents=True)
    (exp_dir / "marker").write_text("old launch")

    tracker = _tracker(spec)
    new = prepare_launch(spec, tracker, new=True)
    assert new and new != old
    assert not exp_dir.exists()  # the old Tune folder is kept aside, not reused
    assert (spec.storage_path / f"{spec.name}.launch-{old}" / "marker").is_file()
    parent = tracker.parent_run(params={"space": "new.yaml"}, artifacts=[])
    run = tracker.trial_run(parent_id=parent, trial_id="t1", params={}, tags={})
    assert run not in {r.info.run_id for r in _old_runs(spec, old)}  # same trial id, new run

    # a reader (study show, promote) sees the newest launch only
    reader = _tracker(spec)
    assert reader.current_launch() == new
    assert [r.info.run_id for r in reader.trial_runs()] == [run]
    assert reader.launch_parent_id() == parent
    client = MlflowClient(spec.tracking_uri)
    assert client.get_run(parent).data.params["space"] == "new.yaml"
    assert len(_old_runs(spec, old)) == 3  # the old launch's runs are still there, untouched
    # and the old launch stays readable on its own
    by_id = StudyTracker(spec.tracking_uri, spec.experiment, spec.name, launch_id=old)
    assert len(by_id.trial_runs()) == 3


def _old_runs(spec, launch: str) -> list:
    client = MlflowClient(spec.tracking_uri)
    exp = client.get_experiment_by_name(spec.experiment)
    return client.search_runs(
        [exp.experiment_id], f"tags.`{TAG_LAUNCH}` = '{launch}' and tags.`ssad.role` = 'trial'"
    )


# ---- the reproduction, end to end (real Ray + MLflow) ------------------------------------


@pytest.mark.slow
def test_relaunch_over_a_finished_study(local_ray, make_spec, tmp_path: Path, capsys) -> None:
    """Run, re-run (refused, with and without the Tune folder), --new: nothing mixes."""
    import shutil

    path = make_spec(tmp_path / "s", name="relaunch", num_samples=2)
    assert main(["study", "run", str(path)]) == 0
    spec = load_spec(path)
    first = _tracker(spec).current_launch()
    assert first and len(_tracker(spec).trial_runs()) == 4

    capsys.readouterr()
    assert main(["study", "run", str(path), "--set", "num_samples=1"]) == 2
    assert "--new" in capsys.readouterr().err
    shutil.rmtree(spec.storage_path / spec.name)  # what the runner used to advise
    assert main(["study", "run", str(path), "--set", "num_samples=1"]) == 2
    assert "--resume" in capsys.readouterr().err

    assert main(["study", "run", str(path), "--new", "--set", "num_samples=1"]) == 0
    tracker = _tracker(spec)
    second = tracker.current_launch()
    assert second != first
    runs = tracker.trial_runs()
    assert len(runs) == 2  # one configuration per class: the 4 old trials are not counted
    parent = tracker.launch_parent_id()
    for run in runs:
        assert run.data.tags[TAG_LAUNCH] == second
        assert run.data.tags["mlflow.parentRunId"] == parent
    board, stats = leaderboard(tracker, spec)
    assert stats["trials"] == 2 and list(board["trials"]) == [1, 1]
    assert set(trials_frame(tracker, spec)["run_id"]) == {r.info.run_id for r in runs}
    assert len(_old_runs(spec, first)) == 4
    capsys.readouterr()
    assert main(["study", "show", str(path)]) == 0
    assert "trials: 2 " in capsys.readouterr().out


# ---- promotion -----------------------------------------------------------------------------------


def test_reseeding_uses_seeds_the_study_did_not_use(make_spec, tmp_path: Path) -> None:
    from ssad.study.promote import reseed_offsets
    from ssad.study.tune.trial import resolve_trial_config

    spec = load_spec(make_spec(tmp_path / "s", seeds_per_config=3))
    study_seeds = {
        resolve_trial_config(spec.base, {"class_name": "brick", "seed": s, "params": {}}).train.seed
        for s in range(spec.seeds_per_config)  # what ClassRoutedSearcher hands out
    }
    offsets = reseed_offsets(spec, 4)
    assert len(set(offsets)) == 4
    assert not {spec.base.train.seed + s for s in offsets} & study_seeds


def test_registry_error_is_not_read_as_no_version(tmp_path: Path) -> None:
    """A missing model has no versions; a broken registry raises (no duplicate registration)."""
    import sqlite3

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "ssad-x", "x")
    assert tracker.find_version("ssad-brick", key="abc") is None
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("DROP TABLE model_versions")
    with pytest.raises(Exception, match="model_versions"):
        StudyTracker(uri, "ssad-x", "x").find_version("ssad-brick", key="abc")


@pytest.mark.slow
def test_one_failing_class_does_not_discard_the_others(
    local_ray, study_data: Path, study_helpers, tmp_path: Path, monkeypatch
) -> None:
    """gelcap's images break after the study: brick is still re-seeded, trained and registered."""
    import shutil

    from ssad.metrics import f1_max
    from ssad.study.promote import PromotionError, promote
    from ssad.study.tune.runner import run_study

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    shutil.copytree(study_data, data)
    path = study_helpers.write_spec(tmp_path / "s", data_root=data, name="onefails", num_samples=1)
    spec = load_spec(path)
    assert run_study(spec)["errors"] == 0
    for image in (data / "gelcap" / "test").rglob("*.png"):
        image.write_bytes(b"not an image any more")

    with pytest.raises(PromotionError, match="gelcap") as info:
        promote(spec, seeds=2, out_root=tmp_path / "promoted", models_root=tmp_path / "models")
    report = info.value.report
    assert list(report["class"]) == ["brick", "gelcap"]
    assert report.set_index("class").loc["gelcap", "error"]
    client = MlflowClient(spec.tracking_uri, registry_uri=spec.tracking_uri)
    champion = client.get_model_version_by_alias("ssad-brick", "champion")
    assert not client.search_registered_models("name = 'ssad-gelcap'")

    # re-seeding used seeds the study did not use
    promo = client.search_runs(
        [client.get_experiment_by_name(spec.experiment).experiment_id],
        "tags.`ssad.role` = 'promotion'",
    )
    assert len(promo) == 1 and promo[0].info.run_id == champion.run_id
    reseeds = set(promo[0].data.tags["ssad.reseed_seeds"].split(","))
    study_seeds = {r.data.tags["ssad.seed"] for r in _tracker(spec).trial_runs()}
    assert len(reseeds) == 2 and not reseeds & study_seeds

    # the champion's threshold is the one calibration rule: its validation F1-max threshold
    val = np.load(tmp_path / "models" / "onefails" / "brick" / "val" / "scores.npz")
    det = json.loads((tmp_path / "models" / "onefails" / "brick" / "detector.json").read_text())
    assert det["threshold"] == pytest.approx(f1_max(val["labels"], val["scores"])[1])
    assert float(champion.tags["ssad.threshold"]) == pytest.approx(det["threshold"], abs=1e-6)


# ---- one adapter per library; the core never imports the study layer ----------------------------

PACKAGE = Path(__file__).resolve().parents[2] / "ssad"


def _imports(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_mlflow_is_called_from_one_module() -> None:
    users = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if any(n == "mlflow" or n.startswith("mlflow.") for n in _imports(p))
    }
    # the tracking package is the adapter (with pyfunc_model.py, the code MLflow itself loads)
    assert users and all(u.startswith("study/tracking/") for u in users), users


def test_core_does_not_import_the_study_layer() -> None:
    core = [p for p in PACKAGE.rglob("*.py") if "study" not in p.relative_to(PACKAGE).parts]
    core = [p for p in core if "cli" not in p.relative_to(PACKAGE).parts]  # wires both
    for path in core:
        bad = {n for n in _imports(path) if n.startswith(("ssad.study", "mlflow", "ray"))}
        assert not bad, (path, bad)


def test_models_uri_resolution_is_injected(tmp_path: Path) -> None:
    """Without the MLflow adapter, a models:/ URI fails with advice; importing it registers it."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from ssad.detector import Detector\n"
        "from ssad.resolve import ResolveError\n"
        "try:\n"
        "    Detector.load('models:/ssad-brick@champion')\n"
        "except ResolveError as exc:\n"
        "    print('refused:', exc)\n"
        "assert not [m for m in sys.modules if m.startswith(('ssad.study', 'mlflow'))]\n"
        "import mlflow\n"
        "before = dict(os.environ)  # (MLflow sets its own telemetry variable on import)\n"
        "import ssad.study.tracking\n"
        "assert dict(os.environ) == before, 'os.environ changed at import'\n"
        "try:\n"
        "    Detector.load('models:/ssad-brick@champion')\n"
        "except FileNotFoundError as exc:\n"
        "    print('resolved by:', exc)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "ssad.study.tracking" in out.stdout
    assert "resolved by:" in out.stdout and "cannot download" in out.stdout


def test_models_uri_is_looked_up_in_the_given_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models:/`` and ``runs:/`` come from the store passed, even when the process-wide MLflow
    store is another one holding a model of the same name (MLflow's own resolution used that)."""
    import mlflow
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import yaml

    from ssad.study.tracking import download_detector

    def store(name: str) -> tuple[str, str]:
        uri = f"sqlite:///{tmp_path / name}.db"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = client.create_experiment("e", artifact_location=(tmp_path / f"{name}-art").as_uri())
        run = client.create_run(exp).info.run_id
        model = tmp_path / f"{name}-model"
        (model / "detector").mkdir(parents=True)
        (model / "detector" / "which").write_text(name)
        flavor = {"python_function": {"artifacts": {"detector": {"path": "detector"}}}}
        (model / "MLmodel").write_text(yaml.safe_dump({"flavors": flavor}))
        client.log_artifacts(run, str(model), artifact_path="model")
        client.create_registered_model("ssad-x")
        source = f"{client.get_run(run).info.artifact_uri}/model"
        version = client.create_model_version("ssad-x", source=source, run_id=run).version
        client.set_registered_model_alias("ssad-x", "champion", version)
        return uri, run

    (a, _), (b, run_b) = store("a"), store("b")
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)  # restored after the test
    mlflow.set_tracking_uri(a)
    for uri in ("models:/ssad-x@champion", "models:/ssad-x/1", f"runs:/{run_b}/model"):
        folder = download_detector(uri, tracking_uri=b)
        assert (folder / "which").read_text() == "b", uri
    with pytest.raises(FileNotFoundError, match="stages are not supported"):
        download_detector("models:/ssad-x/Production", tracking_uri=b)


# ---- security --------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a shell command (what a tampered model.pt would carry)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_in_model_pt_is_refused(tmp_path: Path) -> None:
    import torch

    from ssad.config import Config
    from ssad.detector import Detector, DetectorError

    folder = tmp_path / "detector"
    folder.mkdir()
    Config().with_overrides({"model.weights": "none"}).save(folder / "config.yaml")
    np.save(folder / "bank.npy", np.ones((4, Config().model.embedding_dim), np.float32))
    marker = tmp_path / "pwned"
    torch.save({"backbone.weight": _Payload(marker)}, folder / "model.pt")
    with pytest.raises(DetectorError, match=r"model\.pt: .*UnpicklingError: [Ww]eights only"):
        Detector.load(folder)
    assert not marker.exists()  # the payload never ran


def test_untrusted_formats_are_read_safely() -> None:
    """YAML only through safe_load; torch.load only with weights_only=True; no pickled arrays."""
    import re

    yaml_load = re.compile(
        r"yaml\.(load|load_all|full_load|unsafe_load)\s*\(|yaml\.(Unsafe|Full)?Loader\b"
    )
    torch_load = re.compile(r"torch\.load\(([^)]*)\)", re.S)
    found_torch = 0
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not yaml_load.search(text), f"{path}: read YAML with yaml.safe_load"
        assert "allow_pickle=True" not in text, path
        for call in torch_load.finditer(text):
            found_torch += 1
            assert "weights_only=True" in call.group(1), f"{path}: {call.group(0)}"
    assert found_torch >= 2  # detector, trial state (and model weights)


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"name": "../escape"}, "name"),
        ({"name": ".."}, "name"),
        ({"name": "a/b"}, "name"),
        ({"classes": ["brick", "../../etc"]}, "classes[1]"),
        ({"storage_path": "runs/../../elsewhere"}, "storage_path"),
        ({"mlflow": {"tracking_uri": "sqlite:///runs/../../x.db"}}, "mlflow.tracking_uri"),
    ],
)
def test_spec_paths_cannot_leave_the_output_folders(
    tmp_path: Path, study_helpers, fields: dict, key: str
) -> None:
    import yaml

    path = study_helpers.write_spec(tmp_path / "s", data_root=tmp_path / "data")
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, **fields}))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert key in str(info.value) and str(path) in str(info.value)
