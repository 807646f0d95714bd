"""Dashboards that know their n: a panel whose statistic needs more data than it has says so (a
note naming the minimum and what it has) and draws no bars; with enough data it draws them."""

from __future__ import annotations

from dataclasses import replace

import matplotlib.pyplot as plt
import pytest
from dashboard_handmade import ablation_table, handmade, note_text

from ssad.study.dashboard import Panel
from ssad.study.dashboard.panels import MIN_N, PLOTS, WIDE_PLOTS
from ssad.study.dashboard.panels.ablation import CI_MIN_RUNS, FOREST_MIN_PAIRS
from ssad.study.dashboard.panels.correlation import SPEARMAN_MIN_TRIALS
from ssad.study.dashboard.panels.optuna_panels import FANOVA_MIN_TRIALS


def _bars(fig: plt.Figure) -> int:
    """Bars drawn on the panel's first axes (0 for a note)."""
    ax = fig.axes[0]
    return sum(p.get_width() > 0 for p in ax.patches) if ax.axison else 0


def _finished(data, cls: str, keep: int):
    """``data`` with only the first ``keep`` finished trials of class ``cls`` left finished."""
    trials = data.trials
    done = trials.index[(trials["class"] == cls) & (trials["status"] == "finished")]
    return replace(data, trials=trials.drop(done[keep:]))


def test_the_minimums() -> None:
    assert MIN_N == {
        "importance": SPEARMAN_MIN_TRIALS,
        "optuna_importance": FANOVA_MIN_TRIALS,
        "variant_bars": CI_MIN_RUNS,
        "forest": FOREST_MIN_PAIRS,
    }
    assert (SPEARMAN_MIN_TRIALS, FANOVA_MIN_TRIALS, CI_MIN_RUNS, FOREST_MIN_PAIRS) == (5, 10, 2, 2)


@pytest.mark.parametrize("finished", [3, FANOVA_MIN_TRIALS - 1, FANOVA_MIN_TRIALS])
def test_fanova_importance_needs_its_minimum_of_finished_trials(finished: int) -> None:
    data = _finished(handmade(n=24), "a", finished)  # 12 finished trials per class
    fig = PLOTS["optuna_importance"](data, Panel(0, "optuna_importance"), "a")
    if finished < FANOVA_MIN_TRIALS:
        assert note_text(fig) == (
            f"fANOVA importance needs at least {FANOVA_MIN_TRIALS} finished trials per class;"
            f" this class has {finished}"
        )
        assert _bars(fig) == 0
    else:
        assert not note_text(fig)
        assert _bars(fig) == 5  # one bar per searched key
        assert f"over {finished} finished trials" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_fanova_importance_counts_stopped_trials_when_asked() -> None:
    data = _finished(handmade(n=24), "a", 8)  # 8 finished + 6 stopped in class a
    panel = Panel(0, "optuna_importance", include_stopped=True)
    fig = PLOTS["optuna_importance"](data, panel, "a")
    assert not note_text(fig) and "over 14 finished or stopped trials" in fig.axes[0].get_xlabel()
    plt.close(fig)
    fig = PLOTS["optuna_importance"](data, Panel(0, "optuna_importance"), "a")
    assert "this class has 8" in note_text(fig)
    plt.close(fig)


def test_fanova_importance_with_enough_trials_that_do_not_vary() -> None:
    data = handmade(n=24)
    flat = data.history.assign(value=0.7)
    fig = PLOTS["optuna_importance"](replace(data, history=flat), Panel(0, "optuna_importance"), "a")
    assert "fANOVA needs 2 or more trials whose values and params vary" in note_text(fig)
    plt.close(fig)


def test_parallel_axes_without_enough_trials_for_fanova_are_the_first_varying_keys() -> None:
    data = _finished(handmade(n=24), "a", FANOVA_MIN_TRIALS - 1)
    fig = PLOTS["optuna_parallel"](data, Panel(0, "optuna_parallel", top=2), "a")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["val_image_auroc", "memory.k", "train.phase2_lr"]  # searched order
    plt.close(fig)


@pytest.mark.parametrize("n", [5, 6])  # 4 and 5 finished or stopped trials per class
def test_spearman_needs_its_minimum_of_trials(n: int) -> None:
    data = handmade(n=n)
    have = n - 1  # the 4th trial failed
    fig = PLOTS["importance"](data, Panel(0, "importance"), "a")
    if have < SPEARMAN_MIN_TRIALS:
        assert note_text(fig) == (
            f"Spearman correlation needs at least {SPEARMAN_MIN_TRIALS} finished or stopped"
            f" trials per class; this class has {have}"
        )
        assert _bars(fig) == 0
    else:
        assert not note_text(fig) and _bars(fig) > 0
        assert f"over {have} trials" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_spearman_of_finished_trials_only() -> None:
    fig = PLOTS["importance"](handmade(n=8), Panel(0, "importance", include_stopped=False), "a")
    assert note_text(fig).endswith("5 finished trials per class; this class has 4")
    plt.close(fig)


def _one_seed(pairs_all: int = 2):
    """An ablation of one seed: one run per variant and class, so per-class rows have 1 pair."""
    table = ablation_table()
    per_class = table["scope"] != "all"
    table.loc[per_class, "n"] = 1
    table.loc[per_class & (table["verdict"] != "baseline"), "pairs"] = 1
    table.loc[~per_class, "n"] = pairs_all
    table.loc[~per_class & (table["verdict"] != "baseline"), "pairs"] = pairs_all
    return handmade(ablation=table)


def test_forest_rows_with_too_few_pairs_say_so() -> None:
    fig = WIDE_PLOTS["forest"](_one_seed(), Panel(0, "forest"))
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts[:3] == ["p_holm 0.030 (paired t, 2 pairs)"] * 3  # pooled: drawn
    assert texts[3:] == ["a paired test needs at least 2 pairs; this row has 1"] * 6
    assert len(ax.containers) == 3  # error bars for the pooled rows only
    plt.close(fig)


def test_forest_with_no_row_to_test_is_a_note() -> None:
    fig = WIDE_PLOTS["forest"](_one_seed(pairs_all=1), Panel(0, "forest"))
    assert note_text(fig) == (
        "A paired test needs at least 2 (class, seed) pairs per variant; this study has 1"
    )
    assert not fig.axes[0].containers
    plt.close(fig)


def test_variant_bars_scopes_with_one_run_say_so() -> None:
    fig = WIDE_PLOTS["variant_bars"](_one_seed(), Panel(0, "variant_bars"))
    shown = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in shown] == ["all classes (n=2)", "a (n=1)", "b (n=1)"]
    assert len(shown[0].patches) == 4 and shown[0].axison  # the pooled scope: bars
    for ax in shown[1:]:
        assert not ax.axison and not ax.patches
        text = " ".join(ax.texts[0].get_text().split())
        assert text == "A 95 % CI needs at least 2 runs per variant; this scope has 1"
    plt.close(fig)
