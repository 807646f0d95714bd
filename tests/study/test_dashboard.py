"""Dashboards: a real SQLite MLflow store with fake trials → collect → one self-contained HTML file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssad.study.dashboard import DEFAULT_DASHBOARD, collect, load_dashboard, log_dashboard, render
from ssad.study.spec import StudySpec, load_spec
from ssad.study.tracking import StudyTracker

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("brick", "gelcap")
# (status, epochs, memory.k, train.phase2_lr, eval.image_score); the second trial is the best
TRIALS = [
    ("finished", 4, 3, 0.005, "max"),
    ("finished", 4, 5, 0.01, "topk"),
    ("stopped", 2, 7, 0.02, "max"),
    ("failed", 1, 9, 0.03, "topk"),
]
SCALE = {"brick": 0.9, "gelcap": 0.6}  # different metric scales per class


def _spec(folder: Path, name: str) -> StudySpec:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"classes: [{', '.join(CLASSES)}]\n"
        f"data: {{root: {folder / 'data'}}}\n"
        f"search_space: {REPO / 'search_spaces' / 'seed.yaml'}\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{folder / 'mlflow.db'}', experiment: ssad-test}}\n"
        f"storage_path: {folder / 'ray'}\n"
    )
    return load_spec(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyTracker, StudySpec, str]:
    """A study 'dash' of 2 classes x 4 trials logged through the project's MLflow adapter."""
    folder = tmp_path_factory.mktemp("dashboard")
    spec = _spec(folder, "dash")
    tracker = StudyTracker(spec.tracking_uri, spec.experiment, spec.name)
    parent = tracker.parent_run(params={"classes": ",".join(CLASSES)}, artifacts=[spec.path])
    for cls in CLASSES:
        for i, (status, epochs, k, lr, score) in enumerate(TRIALS):
            params = {"memory.k": k, "train.phase2_lr": lr, "eval.image_score": score}
            run_id = tracker.trial_run(
                parent_id=parent,
                trial_id=f"{cls}-{i}",
                params={**params, "data.class_name": cls},
                tags={
                    "ssad.class": cls,
                    "ssad.config_id": f"{cls}-cfg{i}",
                    "ssad.seed": "0",
                    "ssad.searched": ",".join(sorted(params)),
                    "ssad.params": json.dumps(params, sort_keys=True),
                },
            )
            for epoch in range(1, epochs + 1):
                value = SCALE[cls] - 0.1 * abs(i - 1) - 0.02 * (4 - epoch)
                metrics = {"val_image_auroc": value, "loss": 1.0 / epoch}
                tracker.log_step(run_id, {**metrics, "training_iteration": epoch}, epoch)
            tracker.finish(run_id, status=status)
    return tracker, spec, parent


def test_collect_reads_trials_histories_and_params(study) -> None:
    tracker, spec, _ = study
    data = collect(tracker, spec, load_dashboard(DEFAULT_DASHBOARD))
    assert len(data.trials) == 8
    assert set(data.history["metric"]) == {"val_image_auroc"}
    steps = data.history.groupby("run_id")["step"].max().sort_values()
    assert sorted(steps.tolist()) == [1, 1, 2, 2, 4, 4, 4, 4]
    best = data.trials[data.trials["best"]]
    assert sorted(best["config_id"]) == ["brick-cfg1", "gelcap-cfg1"]  # per class, not global
    assert sorted(data.params["memory.k"]) == [3.0, 3.0, 5.0, 5.0, 7.0, 7.0, 9.0, 9.0]
    assert set(data.params["eval.image_score"]) == {"max", "topk"}  # non-numeric stays a string
    board = data.board.set_index("class")
    assert board.loc["brick", "best_val_image_auroc"] == pytest.approx(0.9)
    assert board.loc["gelcap", ["finished", "stopped", "failed"]].tolist() == [2, 1, 1]


def test_render_one_section_per_class(study, tmp_path: Path) -> None:
    tracker, spec, _ = study
    dash = load_dashboard(DEFAULT_DASHBOARD)
    out = render(dash, collect(tracker, spec, dash), tmp_path / "d.html")
    text = out.read_text()
    per_class = [p for p in dash.panels if p.type in ("curves", "scatter", "importance")]
    assert text.count("<section class='class'") == len(CLASSES)
    assert all(f"id='class-{c}'" in text for c in CLASSES)
    status = sum(p.type == "status" for p in dash.panels)
    assert text.count("<img ") == status + len(CLASSES) * len(per_class)
    assert text.count("src='data:image/png;base64,") == text.count("<img ")  # self-contained
    assert "<table>" in text and "0.9000" in text
    assert "Correlation with final val_image_auroc" in text


def test_empty_study_renders_placeholders(study, tmp_path: Path) -> None:
    tracker, _, _ = study
    spec = _spec(tmp_path, "empty")
    empty = StudyTracker(tracker.tracking_uri, tracker.experiment, "empty")
    dash = load_dashboard(DEFAULT_DASHBOARD)
    text = render(dash, collect(empty, spec, dash), tmp_path / "e.html").read_text()
    assert text.count("<section class='class'") == len(CLASSES)
    assert text.count("<img ") == 1 + len(CLASSES) * 4 and "· 0 trials ·" in text


def test_log_dashboard_adds_html_artifact_to_parent_run(study, tmp_path: Path) -> None:
    tracker, spec, parent = study
    artifact = log_dashboard(tracker, parent, DEFAULT_DASHBOARD, spec)
    assert artifact == Path("dashboards/study.html")
    names = {a.path for a in tracker.client.list_artifacts(parent, "dashboards")}
    assert names == {"dashboards/study.html", "dashboards/study.yaml"}
    local = tracker.client.download_artifacts(parent, "dashboards/study.html", str(tmp_path))
    assert Path(local).read_text().count("<section class='class'") == len(CLASSES)


@pytest.mark.parametrize(
    ("panels", "where"),
    [
        ("- {type: leaderboard}\n- {type: heatmap}", r"panels\[1\]\.type: unknown panel type"),
        (
            "- {type: leaderboard}\n- {type: curves, colour: red}",
            r"panels\[1\] \(curves\): unknown",
        ),
        ("- {type: scatter, param: memory.k, log_x: yes please}", r"panels\[0\]\.log_x: expected"),
        ("- {type: scatter}", r"panels\[0\]\.param: a scatter panel needs"),
        ("- {type: scatter, param: memory.kk}", r"panels\[0\]\.param: 'memory.kk' is not a config"),
        ("- {type: importance, top: 0}", r"panels\[0\]\.top: must be >= 1"),
    ],
)
def test_invalid_dashboard_names_file_and_panel(tmp_path: Path, panels: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"title: t\npanels:\n{panels}\n")
    with pytest.raises(ValueError, match=rf"bad\.yaml: {where}"):
        load_dashboard(path)


def test_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("title: t\npanel: []\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: expected a mapping with keys"):
        load_dashboard(path)


def test_metric_not_logged_names_file_and_panel(study, tmp_path: Path) -> None:
    tracker, spec, _ = study
    path = tmp_path / "metrics.yaml"
    path.write_text("panels:\n- {type: status}\n- {type: curves, metric: val_aupro}\n")
    with pytest.raises(
        ValueError, match=r"metrics\.yaml: panels\[1\]\.metric: 'val_aupro' was not"
    ):
        collect(tracker, spec, load_dashboard(path))
