"""Dashboards: a real SQLite MLflow store with fake trials → collect → one self-contained HTML file;
``ssad dashboard render``. Panels on hand-made data: test_dashboard_panels.py and
test_dashboard_min_n.py."""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from dashboard_handmade import note_text

from ssad.cli import main
from ssad.plots import heatmap_overlays
from ssad.study.dashboard import (
    ABLATION_DASHBOARD,
    DEFAULT_DASHBOARD,
    Panel,
    best_heatmaps,
    class_study,
    collect,
    load_dashboard,
    log_dashboard,
    param_importances,
    render,
)
from ssad.study.dashboard.panels import PLOTS, optuna_panels
from ssad.study.dashboard.panels.ablation import forest
from ssad.study.dashboard.panels.common import VERDICT
from ssad.study.dashboard.panels.optuna_panels import optuna_importance
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
HEATMAPS = ("crack_000", "crack_001", "good_000", "good_001", "hole_000", "hole_001")


def _spec(folder: Path, name: str) -> StudySpec:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"classes: [{', '.join(CLASSES)}]\n"
        f"data: {{root: {folder / 'data'}}}\n"
        "base: {preset: seed}\n"
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
            # the best trial's artifacts hold heatmaps as a trial writes them (evaluate.py)
            art = folder / f"art-{cls}-{i}"
            if i == 1:
                _heatmaps(art / "val" / "heatmaps")
            tracker.finish(run_id, status=status, artifacts=art if i == 1 else None)
    return tracker, spec, parent


def _heatmaps(out: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    n = len(HEATMAPS)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]
    maps = [rng.random((32, 32)).astype(np.float32) for _ in range(n)]
    return heatmap_overlays(images, maps, [None] * n, out, names=list(HEATMAPS))


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


PER_CLASS = {"curves", "scatter", "importance", "asha_budget"} | {
    f"optuna_{k}" for k in ("history", "importance", "parallel")
}


def test_render_one_section_per_class(study, tmp_path: Path) -> None:
    tracker, spec, _ = study
    dash = load_dashboard(DEFAULT_DASHBOARD)
    tic = time.perf_counter()
    out = render(dash, collect(tracker, spec, dash), tmp_path / "d.html")
    seconds = time.perf_counter() - tic
    text = out.read_text()
    per_class = [p for p in dash.panels if p.type in PER_CLASS]
    assert {p.type for p in per_class} == PER_CLASS  # study.yaml shows every per-class panel
    assert text.count("<section class='class'") == len(CLASSES)
    assert all(f"id='class-{c}'" in text for c in CLASSES)
    status = sum(p.type == "status" for p in dash.panels)
    gallery = len(CLASSES) * 4  # max_images of the best run's 6 heatmaps per class
    assert text.count("<img ") == status + gallery + len(CLASSES) * len(per_class)
    assert text.count("src='data:image/png;base64,") == text.count("<img ")  # self-contained
    assert "<table>" in text and "0.9000" in text
    assert "Correlation with final val_image_auroc" not in text  # study.yaml retitles it
    assert "Spearman correlation (finished and stopped trials)" in text
    assert "fANOVA importance for final val_image_auroc" in text
    # per class: 2 finished x 4 + 1 stopped x 2 + 1 failed x 1 = 11 epochs of 4 x max epochs
    share = f"Epochs per trial · {11 / (4 * spec.max_epochs):.0%} of the full budget"
    assert text.count(f">{share}</figcaption>") == len(CLASSES)
    assert text.count("alt='crack_000.png'") == len(CLASSES)
    assert seconds < 30, f"rendering took {seconds:.1f} s"


def test_new_panels_render_from_real_trials(study, monkeypatch) -> None:
    """The optuna panels draw from the trials read back from MLflow, not notes (the importance
    panel once its minimum of trials is lowered to the study's 2 finished per class)."""
    tracker, spec, _ = study
    data = collect(tracker, spec, load_dashboard(DEFAULT_DASHBOARD))
    brick = class_study(data, "brick")
    assert [t.user_attrs["run_id"] for t in brick.trials] == list(
        data.trials.loc[
            (data.trials["class"] == "brick") & (data.trials["status"] == "finished"), "run_id"
        ]
    )
    assert [t.params for t in brick.trials] == [  # MLflow's strings as the space's types
        {"memory.k": 3, "train.phase2_lr": 0.005, "eval.image_score": "max"},
        {"memory.k": 5, "train.phase2_lr": 0.01, "eval.image_score": "topk"},
    ]
    assert [t.value for t in brick.trials] == pytest.approx([0.8, 0.9])
    assert len(class_study(data, "brick", include_stopped=True).trials) == 3
    assert set(param_importances(brick)) == {"memory.k", "train.phase2_lr", "eval.image_score"}
    same_k = data.trials.copy()  # one value of memory.k: Optuna's plots warn (silenced)
    same_k["config"] = [{**c, "memory.k": "5"} for c in same_k["config"]]
    fig = optuna_importance(data, Panel(0, "optuna_importance"), "brick")
    assert "needs at least 10 finished trials per class; this class has 2" in note_text(fig)
    plt.close(fig)
    monkeypatch.setattr(optuna_panels, "FANOVA_MIN_TRIALS", 2)
    for trials in (data.trials, same_k):
        for kind in ("optuna_history", "optuna_importance", "optuna_parallel"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # Optuna's experimental and plot warnings kept in
                fig = PLOTS[kind](replace(data, trials=trials), Panel(0, kind), "brick")
            assert not note_text(fig), f"{kind}: {note_text(fig)}"
            plt.close(fig)
    assert [name for name, _ in data.heatmaps["brick"]] == [  # 4 of 6, evenly spread
        f"{n}.png" for n in ("crack_000", "good_000", "good_001", "hole_001")
    ]
    assert all(png.startswith(b"\x89PNG") for _, png in data.heatmaps["gelcap"])


def test_empty_study_renders_placeholders(study, tmp_path: Path) -> None:
    tracker, _, _ = study
    spec = _spec(tmp_path, "empty")
    empty = StudyTracker(tracker.tracking_uri, tracker.experiment, "empty")
    dash = load_dashboard(DEFAULT_DASHBOARD)
    text = render(dash, collect(empty, spec, dash), tmp_path / "e.html").read_text()
    per_class = sum(p.type in PER_CLASS for p in dash.panels)
    assert text.count("<section class='class'") == len(CLASSES)
    assert text.count("<img ") == 1 + len(CLASSES) * per_class and "· 0 trials ·" in text
    assert text.count("no heatmaps logged for its best trial") == len(CLASSES)


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
        ("- {type: heatmap_gallery, max_images: 0}", r"panels\[0\]\.max_images: must be >= 1"),
        ("- {type: optuna_parallel, params: memory.k}", r"panels\[0\]\.params: expected list"),
        ("- {type: optuna_parallel, params: [memory.kk]}", r"panels\[0\]\.params: \['memory.kk'\]"),
        ("- {type: status}\n- {type: forest, top: 3}", r"panels\[1\] \(forest\): unknown"),
        ("- {type: optuna_history, include_stopped: 1}", r"panels\[0\]\.include_stopped: expected"),
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


def test_best_heatmaps_without_a_run_or_artifacts(study) -> None:
    tracker, _, _ = study
    board = pd.DataFrame({"class": ["brick", "gelcap"], "best_run_id": ["", "no-such-run"]})
    assert best_heatmaps(tracker, board, 4) == {"gelcap": ()}


# ---- ssad dashboard render -----------------------------------------------------------------------
def test_cli_dashboard_render_writes_and_logs(study, tmp_path: Path, capsys) -> None:
    tracker, spec, parent = study
    custom = tmp_path / "mini.yaml"
    custom.write_text("title: Mini\npanels:\n- {type: status}\n- {type: asha_budget}\n")
    args = ["dashboard", "render", str(spec.path), "--out", str(tmp_path / "out")]
    assert main([*args, "--dashboard", str(custom), "--no-log"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / "mini.html")]
    assert "Epochs per trial" in Path(printed[0]).read_text()
    assert main([*args, "--dashboard", str(custom)]) == 0
    assert f"logged to run {parent} as dashboards/mini.html" in capsys.readouterr().out
    names = {a.path for a in tracker.client.list_artifacts(parent, "dashboards")}
    assert {"dashboards/mini.html", "dashboards/mini.yaml"} <= names


@pytest.mark.parametrize("problem", ["no store", "no study", "bad dashboard"])
def test_cli_dashboard_render_errors_are_one_line(
    study, tmp_path: Path, capsys, problem: str
) -> None:
    _tracker, spec, _ = study
    if problem == "no store":
        spec_path = _spec(tmp_path, "nowhere").path
        expected = r"mlflow\.db: no MLflow store there"
    elif problem == "no study":
        text = spec.path.read_text().replace("name: dash", "name: ghost")
        spec_path = tmp_path / "ghost.yaml"
        spec_path.write_text(text)
        expected = r"study 'ghost': no runs in experiment 'ssad-test'"
    else:
        spec_path = spec.path
        bad = tmp_path / "bad.yaml"
        bad.write_text("title: t\npanels:\n- {type: forest, metric: 3}\n")
    extra = ["--dashboard", str(tmp_path / "bad.yaml")] if problem == "bad dashboard" else []
    if problem == "bad dashboard":
        expected = r"bad\.yaml: panels\[0\]\.metric: expected str, got 3"
    assert main(["dashboard", "render", str(spec_path), "--no-log", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert re.search(expected, err), err
    assert not (tmp_path / "mlflow.db").exists()  # nothing created in a store that wasn't there


# ---- an ablation's records → the real results table → its dashboard ------------------------------
# short: 0.10, 0.11, 0.12 worse than the baseline for seeds 0, 1, 2 (differences that vary: a
# t-test on equal ones warns of precision loss)
ABLATION_SHIFT = {"baseline": 0.0, "twin": 0.0, "short": -0.1}


@pytest.fixture(scope="module")
def ablation_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyTracker, StudySpec]:
    """An ablation 'abl' (3 variants x 2 classes x 3 seeds) logged as its trials log it."""
    folder = tmp_path_factory.mktemp("ablation")
    path = folder / "abl.yaml"
    path.write_text(
        "kind: ablation\nname: abl\n"
        f"classes: [{', '.join(CLASSES)}]\n"
        f"data: {{root: {folder / 'data'}}}\n"
        "variants: {twin: {}, short: {train.phase2_epochs: 1}}\n"
        "seeds: 3\nmetrics: [val_image_auroc, val_pixel_auroc]\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{folder / 'mlflow.db'}', experiment: ssad-abl}}\n"
        f"storage_path: {folder / 'ray'}\n"
    )
    spec = load_spec(path)
    tracker = StudyTracker(spec.tracking_uri, spec.experiment, spec.name)
    parent = tracker.parent_run(params={"kind": "ablation"}, artifacts=[spec.path])
    for variant, shift in ABLATION_SHIFT.items():
        for cls in CLASSES:
            for seed in range(3):
                run_id = tracker.trial_run(
                    parent_id=parent,
                    trial_id=f"{variant}-{cls}-{seed}",
                    params={"data.class_name": cls},
                    tags={
                        "ssad.class": cls,
                        "ssad.variant": variant,
                        "ssad.config_id": f"{cls}-{variant}",
                        "ssad.seed": str(seed),
                    },
                )
                value = SCALE[cls] + 0.01 * seed + shift * (1 + 0.1 * seed)
                metrics = {"val_image_auroc": value, "val_pixel_auroc": value - 0.05}
                tracker.log_step(run_id, {**metrics, "loss": 1.0, "training_iteration": 1}, 1)
                tracker.finish(run_id, status="finished")
    return tracker, spec


def test_ablation_dashboard_from_the_real_results_table(ablation_study, tmp_path: Path) -> None:
    tracker, spec = ablation_study
    dash = load_dashboard(ABLATION_DASHBOARD)
    data = collect(tracker, spec, dash)
    assert data.ablation is not None and set(data.ablation["metric"]) == set(spec.metrics)
    fig = forest(data, Panel(0, "forest"))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["twin", "short"] + [f"{v} · {c}" for c in CLASSES for v in ("twin", "short")]
    short = ax.containers[1].lines[0]
    assert short.get_xdata()[0] == pytest.approx(-0.11)
    assert short.get_color() == VERDICT["worse"]
    assert ax.containers[0].lines[0].get_color() == VERDICT["no detectable difference"]
    assert ax.texts[1].get_text().endswith("(paired t, 6 pairs)")
    plt.close(fig)
    fig = optuna_importance(data, Panel(0, "optuna_importance"), "brick")
    assert "ablation study: no search" in note_text(fig)
    plt.close(fig)
    text = render(dash, data, tmp_path / "abl.html").read_text()
    assert text.count("alt='chart'") == 4 and "<section class='class'" not in text


def test_cli_renders_the_ablation_dashboard_by_default(ablation_study, tmp_path: Path, capsys):
    _, spec = ablation_study
    assert main(["dashboard", "render", str(spec.path), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'ablation.html'}  (logged to run ")
    assert "Ablation dashboard" in (tmp_path / "ablation.html").read_text()
