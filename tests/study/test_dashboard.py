"""Dashboards: a real SQLite MLflow store with fake trials → collect → one self-contained HTML file;
each panel type on hand-made data; ``ssad dashboard render``."""

from __future__ import annotations

import base64
import json
import math
import random
import re
import time
import warnings
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from ssad.cli import main
from ssad.plots import heatmap_overlays
from ssad.study.dashboard import (
    ABLATION_DASHBOARD,
    DEFAULT_DASHBOARD,
    DashboardData,
    Panel,
    best_heatmaps,
    class_study,
    collect,
    load_dashboard,
    log_dashboard,
    param_importances,
    render,
)
from ssad.study.dashboard.panels import PLOTS, WIDE_PLOTS
from ssad.study.dashboard.panels.ablation import forest, variant_bars
from ssad.study.dashboard.panels.common import VERDICT
from ssad.study.dashboard.panels.optuna_panels import (
    optuna_history,
    optuna_importance,
    optuna_parallel,
)
from ssad.study.dashboard.panels.trials import asha_budget, budget, budget_caption
from ssad.study.spec import Dimension, SearchSpace, StudySpec, load_spec
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


def test_new_panels_render_from_real_trials(study) -> None:
    """The optuna panels draw from the trials read back from MLflow, not notes."""
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
    for trials in (data.trials, same_k):
        for kind in ("optuna_history", "optuna_importance", "optuna_parallel"):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # Optuna's experimental and plot warnings kept in
                fig = PLOTS[kind](replace(data, trials=trials), Panel(0, kind), "brick")
            assert not _note_text(fig), f"{kind}: {_note_text(fig)}"
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


# ---- panels on hand-made data (no MLflow) --------------------------------------------------------
SPACE = SearchSpace(
    (
        Dimension("memory.k", "int", 1, 9),
        Dimension("train.phase2_lr", "logfloat", 0.003, 0.03),
        Dimension("eval.image_score", "categorical", choices=("max", "topk")),
        Dimension("pretext.patch_size", "categorical", choices=(24, 32)),
        Dimension("defects.fills", "categorical", choices=(("mean",), ("mean", "noise"))),
    )
)
CYCLE = ("finished", "finished", "stopped", "failed")  # trial i has status CYCLE[i % 4]
EPOCHS = {"finished": 8, "stopped": 3, "failed": 1}


def _k_value(k: int) -> float:
    return 0.5 + 0.05 * k  # the value is determined by memory.k alone


def _handmade(
    n: int = 12,
    classes: tuple[str, ...] = ("a", "b"),
    *,
    ablation: pd.DataFrame | None = None,
    heatmaps: dict | None = None,
) -> DashboardData:
    """``n`` trials per class with MLflow-like string params; status cycles through CYCLE."""
    rng = random.Random(0)
    trials, history, board = [], [], []
    for cls in classes:
        rows = []
        for i in range(n):
            k, status = rng.randint(1, 9), CYCLE[i % 4]
            lr = 10 ** rng.uniform(math.log10(0.003), math.log10(0.03))
            config = {
                "memory.k": str(k),
                "train.phase2_lr": str(lr),
                "eval.image_score": rng.choice(["max", "topk"]),
                "pretext.patch_size": rng.choice(["24", "32"]),
                "defects.fills": rng.choice(["['mean']", "['mean', 'noise']"]),
            }
            run_id = f"{cls}-run{i}"
            rows.append(
                {
                    "run_id": run_id,
                    "trial_name": f"{cls}-t{i}",
                    "class": cls,
                    "config_id": f"{cls}-c{i}",
                    "status": status,
                    "epochs": EPOCHS[status],
                    "val_image_auroc": _k_value(k),
                    "seconds": 10.0,
                    "config": config,
                }
            )
            for epoch in range(1, EPOCHS[status] + 1):
                history.append((run_id, "val_image_auroc", epoch, _k_value(k)))
        done = [r for r in rows if r["status"] == "finished"]
        best = max(done, key=lambda r: r["val_image_auroc"])
        for r in rows:
            r["best"] = r is best
        trials += rows
        board.append(
            {
                "class": cls,
                "trials": n,
                **{
                    s: sum(r["status"] == s for r in rows)
                    for s in ("finished", "stopped", "failed")
                },
                "compute_s": 10.0 * n,
                "best_val_image_auroc": best["val_image_auroc"],
                "best_run_id": best["run_id"],
                "best_config": "{}",
            }
        )
    frame = pd.DataFrame(trials)
    params = pd.DataFrame(list(frame["config"]), index=frame["run_id"])
    return DashboardData(
        "hand",
        "val_image_auroc",
        "max",
        classes,
        pd.DataFrame(board),
        frame,
        params,
        pd.DataFrame(history, columns=["run_id", "metric", "step", "value"]),
        space=SPACE,
        max_epochs=8,
        heatmaps=heatmaps or {},
        ablation=ablation,
    )


# variant → (mean, diff to the baseline or None, verdict)
VARIANTS = {
    "base": (0.80, None, "baseline"),
    "no_jitter": (0.75, -0.05, "worse"),
    "big_bank": (0.81, 0.01, "no detectable difference"),
    "more_epochs": (0.86, 0.06, "better"),
}


def _ablation(classes: tuple[str, ...] = ("a", "b")) -> pd.DataFrame:
    """A results table shaped like ssad.study.ablation.results_table's (per-class scopes first)."""
    nan, rows = math.nan, []
    for metric, shift in (("val_image_auroc", 0.0), ("val_pixel_auroc", 0.1)):
        for j, scope in enumerate([*classes, "all"]):
            for variant, (mean, diff, verdict) in VARIANTS.items():
                mean += shift + 0.01 * j
                paired = diff is not None
                rows.append(
                    {
                        "metric": metric,
                        "scope": scope,
                        "variant": variant,
                        "n": 6 if scope == "all" else 3,
                        "mean": mean,
                        "std": 0.01,
                        "ci_low": mean - 0.02,
                        "ci_high": mean + 0.02,
                        "pairs": (6 if scope == "all" else 3) if paired else 0,
                        "diff": diff if paired else nan,
                        "diff_ci_low": diff - 0.02 if paired else nan,
                        "diff_ci_high": diff + 0.02 if paired else nan,
                        "p": 0.01 if paired else nan,
                        "p_holm": 0.03 if paired else nan,
                        "test": "paired t" if paired else "",
                        "verdict": verdict,
                    }
                )
    return pd.DataFrame(rows)


def _note_text(fig: plt.Figure) -> str:
    """The text of a panel's note ("" when it drew a chart)."""
    ax = fig.axes[0]
    return "" if ax.axison else " ".join(t.get_text() for t in ax.texts)


def test_class_study_turns_mlflow_strings_into_the_space_types() -> None:
    data = _handmade(n=8)
    study = class_study(data, "a")
    finished = data.trials[(data.trials["class"] == "a") & (data.trials["status"] == "finished")]
    assert [t.user_attrs["run_id"] for t in study.trials] == list(finished["run_id"])
    for trial, config in zip(study.trials, finished["config"]):
        p = trial.params
        assert p["memory.k"] == int(config["memory.k"]) and isinstance(p["memory.k"], int)
        assert p["train.phase2_lr"] == float(config["train.phase2_lr"])
        assert p["pretext.patch_size"] in (24, 32)  # the choice itself, not "24"
        assert p["defects.fills"] in ("['mean']", "['mean', 'noise']")  # list choices as text
        assert trial.value == pytest.approx(_k_value(p["memory.k"]))
    assert study.direction.name == "MAXIMIZE"
    assert len(class_study(data, "a", include_stopped=True).trials) == 6  # 4 finished + 2 stopped


def test_class_study_leaves_out_values_outside_the_space() -> None:
    data = _handmade(n=8)
    trials = data.trials.copy()
    first = trials.index[0]  # a finished trial of class a
    trials.at[first, "config"] = {**trials.at[first, "config"], "memory.k": "12"}  # high is 9
    trials.at[trials.index[1], "config"] = {**trials.at[1, "config"], "eval.image_score": "mean"}
    study = class_study(replace(data, trials=trials), "a")
    assert len(study.trials) == len(class_study(data, "a").trials) - 2


def test_fanova_ranks_the_param_that_determines_the_value_first() -> None:
    data = _handmade(n=40)  # 20 finished trials per class
    importances = param_importances(class_study(data, "a"))
    assert next(iter(importances)) == "memory.k"
    assert importances["memory.k"] > 0.8
    assert set(importances) == {d.key for d in SPACE.dims}
    fig = optuna_importance(data, Panel(0, "optuna_importance"), "a")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert set(labels) == set(importances) and labels[-1] == "memory.k"  # drawn on top
    assert "over 20 finished trials" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_fanova_needs_two_varying_trials() -> None:
    data = _handmade(n=2)  # 2 finished trials per class
    one = class_study(replace(data, trials=data.trials.iloc[:1]), "a")
    with pytest.raises(ValueError, match=r"2 or more trials .*\(have 1\)"):
        param_importances(one)
    same = data.trials.copy()
    same["config"] = [data.trials["config"].iloc[0]] * len(same)
    flat = data.history.assign(value=0.7)
    with pytest.raises(ValueError, match="vary"):
        param_importances(class_study(replace(data, trials=same, history=flat), "a"))
    for kind in ("optuna_importance", "optuna_parallel", "optuna_history"):
        fig = PLOTS[kind](replace(data, trials=data.trials.iloc[:1]), Panel(0, kind), "a")
        note = _note_text(fig)
        assert (
            ("1 finished trial" in note and "need 2" in note)
            if kind != "optuna_history"
            else not note
        )
        plt.close(fig)


def test_optuna_panels_show_notes_for_ablations_and_without_a_space() -> None:
    ablation = _handmade(ablation=_ablation())
    no_space = replace(_handmade(), space=None)
    for kind in ("optuna_history", "optuna_importance", "optuna_parallel"):
        for data, text in ((ablation, "ablation study: no search"), (no_space, "no search space")):
            fig = PLOTS[kind](data, Panel(0, kind), "a")
            assert text in _note_text(fig)
            plt.close(fig)


def test_optuna_history_plots_every_finished_trial_in_order() -> None:
    data = _handmade(n=12)
    fig = optuna_history(data, Panel(0, "optuna_history"), "b")
    ax = fig.axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    values = [t.value for t in class_study(data, "b").trials]
    assert sorted(map(tuple, points)) == sorted(enumerate(values))
    best = next(line for line in ax.get_lines() if line.get_label() == "Best Value")
    assert list(best.get_ydata()) == list(np.maximum.accumulate(values))
    plt.close(fig)


def test_optuna_parallel_axes_are_the_most_important_params() -> None:
    data = _handmade(n=40)
    fig = optuna_parallel(data, Panel(0, "optuna_parallel", top=2), "a")
    top2 = list(param_importances(class_study(data, "a")))[:2]
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["val_image_auroc", *sorted(top2)] and "memory.k" in labels
    plt.close(fig)
    chosen = Panel(0, "optuna_parallel", params=("eval.image_score", "train.phase2_lr"))
    fig = optuna_parallel(data, chosen, "a")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["val_image_auroc", "eval.image_score", "train.phase2_lr"]
    plt.close(fig)


def test_asha_budget_bars_and_share() -> None:
    data = _handmade(n=12)
    fig = asha_budget(data, Panel(0, "asha_budget"), "a")
    ax = fig.axes[0]
    bars = [b for b in ax.patches if b.get_width() > 0]
    assert [b.get_width() for b in bars] == [EPOCHS[CYCLE[i % 4]] for i in range(12)]
    colours = {CYCLE[i % 4]: bars[i].get_facecolor() for i in range(4)}
    assert len(set(colours.values())) == 3  # finished, stopped, failed apart
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert sum(label.startswith("★") for label in labels) == 1
    assert [line.get_xdata()[0] for line in ax.get_lines()] == [8]  # the max epochs
    # 6 finished x 8 + 3 stopped x 3 + 3 failed x 1 = 60 of 12 x 8 = 96 epochs
    assert budget(data, "a") == (60, 96)
    assert budget_caption(data, "a") == " · 62% of the full budget"
    assert ax.get_xlabel() == "epochs trained: 60 of 96 = trials x max epochs"
    plt.close(fig)


def test_forest_rows_labels_and_colours() -> None:
    data = _handmade(ablation=_ablation())
    fig = forest(data, Panel(0, "forest"))
    ax = fig.axes[0]
    variants = ["no_jitter", "big_bank", "more_epochs"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == variants + [f"{v} · {c}" for c in ("a", "b") for v in variants]
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "p_holm 0.030 (paired t, 6 pairs)" and texts[3].endswith("3 pairs)")
    bars = [c for c in ax.containers]  # one errorbar per row, in row order
    assert len(bars) == 9
    x, _ = bars[0].lines[0].get_data()
    assert x[0] == pytest.approx(-0.05)
    colour = {v: bars[i].lines[0].get_color() for i, v in enumerate(variants)}
    assert colour == {
        "no_jitter": VERDICT["worse"],
        "big_bank": VERDICT["no detectable difference"],
        "more_epochs": VERDICT["better"],
    }
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.get_lines())  # the zero line
    plt.close(fig)


def test_variant_bars_per_scope_baseline_first() -> None:
    table = _ablation()
    data = _handmade(ablation=table)
    fig = variant_bars(data, Panel(0, "variant_bars", metric="val_pixel_auroc"))
    axes = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in axes] == ["all classes (n=6)", "a (n=3)", "b (n=3)"]
    rows = table[(table["metric"] == "val_pixel_auroc") & (table["scope"] == "all")]
    heights = [b.get_height() for b in axes[0].patches]
    assert heights == pytest.approx(list(rows["mean"]))
    assert [t.get_text() for t in axes[0].get_xticklabels()] == list(VARIANTS)
    assert axes[0].patches[0].get_linewidth() > 0 and axes[0].patches[1].get_linewidth() == 0
    assert next(t.get_text() for t in fig.legends[0].get_texts()) == "base (baseline)"
    plt.close(fig)


def test_ablation_panels_note_without_a_table_or_metric() -> None:
    for kind in ("variant_bars", "forest"):
        fig = WIDE_PLOTS[kind](_handmade(), Panel(0, kind))
        assert "not an ablation study" in _note_text(fig)
        fig = WIDE_PLOTS[kind](
            _handmade(ablation=_ablation()), Panel(0, kind, metric="val_aupro")
        )
        assert "no val_aupro in the ablation results" in _note_text(fig)
        plt.close("all")


def test_ablation_dashboard_renders_study_wide_panels_only(tmp_path: Path) -> None:
    pngs = {c: tuple((f"{c}{i}.png", b"\x89PNG-" + bytes([i])) for i in range(6)) for c in "ab"}
    data = _handmade(ablation=_ablation(), heatmaps=pngs)
    dash = load_dashboard(ABLATION_DASHBOARD)
    assert dash.title == "Ablation dashboard"
    assert [(p.type, p.metric) for p in dash.panels if p.type != "status"] == [
        ("variant_bars", "val_image_auroc"),
        ("variant_bars", "val_pixel_auroc"),
        ("forest", "val_image_auroc"),
        ("heatmap_gallery", None),
    ]
    text = render(dash, data, tmp_path / "a.html").read_text()
    assert "<section class='class'" not in text and "<nav>" not in text
    assert text.count("<section class='wide'>") == 4
    assert text.count("alt='chart'") == 4  # status, 2 x variant_bars, forest
    shown = re.findall(r"alt='(\w+\.png)' src='data:image/png;base64,([^']+)'", text)
    assert [name for name, _ in shown] == [f"{c}{i}.png" for c in "ab" for i in range(4)]
    assert base64.b64decode(shown[0][1]) == pngs["a"][0][1]


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
    assert "ablation study: no search" in _note_text(fig)
    plt.close(fig)
    text = render(dash, data, tmp_path / "abl.html").read_text()
    assert text.count("alt='chart'") == 4 and "<section class='class'" not in text


def test_cli_renders_the_ablation_dashboard_by_default(ablation_study, tmp_path: Path, capsys):
    _, spec = ablation_study
    assert main(["dashboard", "render", str(spec.path), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{tmp_path / 'ablation.html'}  (logged to run ")
    assert "Ablation dashboard" in (tmp_path / "ablation.html").read_text()


def test_a_failing_optuna_plot_is_a_note(monkeypatch) -> None:
    import optuna.visualization.matplotlib as ovm

    def broken(*args, **kwargs):
        plt.subplots()  # a figure left behind, as a plot failing halfway would
        raise RuntimeError("boom")

    monkeypatch.setattr(ovm, "plot_optimization_history", broken)
    open_before = len(plt.get_fignums())
    fig = optuna_history(_handmade(), Panel(0, "optuna_history"), "a")
    assert "Optuna could not draw this: boom" in _note_text(fig)
    plt.close(fig)
    assert len(plt.get_fignums()) == open_before
