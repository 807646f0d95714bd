"""Dashboard panels on hand-made data (no MLflow): each panel type draws what it should."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from dashboard_handmade import (
    CYCLE,
    EPOCHS,
    SPACE,
    VARIANTS,
    ablation_table,
    handmade,
    k_value,
    note_text,
)

from ssad.study.dashboard import (
    ABLATION_DASHBOARD,
    Panel,
    class_study,
    load_dashboard,
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


def test_class_study_turns_mlflow_strings_into_the_space_types() -> None:
    data = handmade(n=8)
    study = class_study(data, "a")
    finished = data.trials[(data.trials["class"] == "a") & (data.trials["status"] == "finished")]
    assert [t.user_attrs["run_id"] for t in study.trials] == list(finished["run_id"])
    for trial, config in zip(study.trials, finished["config"]):
        p = trial.params
        assert p["memory.k"] == int(config["memory.k"]) and isinstance(p["memory.k"], int)
        assert p["train.phase2_lr"] == float(config["train.phase2_lr"])
        assert p["pretext.patch_size"] in (24, 32)  # the choice itself, not "24"
        assert p["defects.fills"] in ("['mean']", "['mean', 'noise']")  # list choices as text
        assert trial.value == pytest.approx(k_value(p["memory.k"]))
    assert study.direction.name == "MAXIMIZE"
    assert len(class_study(data, "a", include_stopped=True).trials) == 6  # 4 finished + 2 stopped


def test_class_study_leaves_out_values_outside_the_space() -> None:
    data = handmade(n=8)
    trials = data.trials.copy()
    first = trials.index[0]  # a finished trial of class a
    trials.at[first, "config"] = {**trials.at[first, "config"], "memory.k": "12"}  # high is 9
    trials.at[trials.index[1], "config"] = {**trials.at[1, "config"], "eval.image_score": "mean"}
    study = class_study(replace(data, trials=trials), "a")
    assert len(study.trials) == len(class_study(data, "a").trials) - 2


def test_fanova_ranks_the_param_that_determines_the_value_first() -> None:
    data = handmade(n=40)  # 20 finished trials per class
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
    data = handmade(n=2)  # 2 finished trials per class
    one = class_study(replace(data, trials=data.trials.iloc[:1]), "a")
    with pytest.raises(ValueError, match=r"2 or more trials .*\(have 1\)"):
        param_importances(one)
    same = data.trials.copy()
    same["config"] = [data.trials["config"].iloc[0]] * len(same)
    flat = data.history.assign(value=0.7)
    with pytest.raises(ValueError, match="vary"):
        param_importances(class_study(replace(data, trials=same, history=flat), "a"))
    expected = {
        "optuna_importance": "needs at least 10 finished trials per class; this class has 1",
        "optuna_parallel": "1 finished trial (need 2 or more)",
        "optuna_history": "",
    }
    for kind, text in expected.items():
        fig = PLOTS[kind](replace(data, trials=data.trials.iloc[:1]), Panel(0, kind), "a")
        assert text in note_text(fig) and bool(text) == bool(note_text(fig))
        plt.close(fig)


def test_optuna_panels_show_notes_for_ablations_and_without_a_space() -> None:
    ablation = handmade(ablation=ablation_table())
    no_space = replace(handmade(), space=None)
    for kind in ("optuna_history", "optuna_importance", "optuna_parallel"):
        for data, text in ((ablation, "ablation study: no search"), (no_space, "no search space")):
            fig = PLOTS[kind](data, Panel(0, kind), "a")
            assert text in note_text(fig)
            plt.close(fig)


def test_optuna_history_plots_every_finished_trial_in_order() -> None:
    data = handmade(n=12)
    fig = optuna_history(data, Panel(0, "optuna_history"), "b")
    ax = fig.axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    values = [t.value for t in class_study(data, "b").trials]
    assert sorted(map(tuple, points)) == sorted(enumerate(values))
    best = next(line for line in ax.get_lines() if line.get_label() == "Best Value")
    assert list(best.get_ydata()) == list(np.maximum.accumulate(values))
    plt.close(fig)


def test_optuna_parallel_axes_are_the_most_important_params() -> None:
    data = handmade(n=40)
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
    data = handmade(n=12)
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
    data = handmade(ablation=ablation_table())
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
    table = ablation_table()
    data = handmade(ablation=table)
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
        fig = WIDE_PLOTS[kind](handmade(), Panel(0, kind))
        assert "not an ablation study" in note_text(fig)
        fig = WIDE_PLOTS[kind](
            handmade(ablation=ablation_table()), Panel(0, kind, metric="val_aupro")
        )
        assert "no val_aupro in the ablation results" in note_text(fig)
        plt.close("all")


def test_ablation_dashboard_renders_study_wide_panels_only(tmp_path: Path) -> None:
    pngs = {c: tuple((f"{c}{i}.png", b"\x89PNG-" + bytes([i])) for i in range(6)) for c in "ab"}
    data = handmade(ablation=ablation_table(), heatmaps=pngs)
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


def test_a_failing_optuna_plot_is_a_note(monkeypatch) -> None:
    import optuna.visualization.matplotlib as ovm

    def broken(*args, **kwargs):
        plt.subplots()  # a figure left behind, as a plot failing halfway would
        raise RuntimeError("boom")

    monkeypatch.setattr(ovm, "plot_optimization_history", broken)
    open_before = len(plt.get_fignums())
    fig = optuna_history(handmade(), Panel(0, "optuna_history"), "a")
    assert "Optuna could not draw this: boom" in note_text(fig)
    plt.close(fig)
    assert len(plt.get_fignums()) == open_before
