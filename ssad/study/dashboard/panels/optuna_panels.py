"""Per-class panels drawn by ``optuna.visualization.matplotlib`` from :func:`class_study`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from ssad.study.dashboard.data import DashboardData
from ssad.study.dashboard.panels.common import note, too_few, wrap
from ssad.study.dashboard.panels.optuna_study import class_study, param_importances, quiet_optuna
from ssad.study.dashboard.spec import Panel

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# fANOVA fits a random forest to the class's trials. With fewer than 10, its importances follow
# which trials happened to run more than the params: on studies of 5 searched keys, one of which
# alone sets the value, it ranked that key first about as often as chance from 3 trials, and
# reliably only from about 10. Below this the importance panel says so, and the parallel-coordinate
# panel takes the first varying keys as its default axes instead of the most important.
FANOVA_MIN_TRIALS = 10


def optuna_history(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    study, why = _optuna_study(data, panel, cls, need=1)
    if study is None:
        return note(*plt.subplots(figsize=(4, 3)), why)
    from optuna.visualization.matplotlib import plot_optimization_history

    metric = panel.metric or data.metric
    ax = _draw(lambda: plot_optimization_history(study, target_name=metric))
    if isinstance(ax, str):
        return note(*plt.subplots(figsize=(4, 3)), ax)
    ax.set_xlabel(f"trial ({panel.trials_word}, in start order)")
    ax.legend(loc="best", fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _resize(_plain(ax), 4.6, 3.4)


def optuna_importance(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    study, why = _optuna_study(data, panel, cls, need=0)
    if study is not None and len(study.trials) < FANOVA_MIN_TRIALS:
        what = f"{panel.trials_word} trials per class"
        study, why = None, too_few("fANOVA importance", FANOVA_MIN_TRIALS, what, len(study.trials))
    if study is not None:
        try:
            param_importances(study)  # the same evaluator as the plot: a clear note if it can't
        except ValueError as exc:
            study, why = None, f"{exc}"
    if study is None:
        return note(*plt.subplots(figsize=(4, 3)), wrap(why))
    import optuna
    from optuna.visualization.matplotlib import plot_param_importances

    metric = panel.metric or data.metric
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    ax = _draw(lambda: plot_param_importances(study, evaluator=evaluator, target_name=metric))
    if isinstance(ax, str):
        return note(*plt.subplots(figsize=(4, 3)), ax)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.set(xlabel=f"fANOVA importance over {len(study.trials)} {panel.trials_word} trials")
    ax.set(ylabel="")
    for text in ax.texts:  # the value beside each bar
        text.set_fontsize(7)
    return _resize(_plain(ax), 4.6, 1.2 + 0.24 * len(ax.get_yticks()))


def optuna_parallel(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    study, why = _optuna_study(data, panel, cls, need=2)
    if study is None:
        return note(*plt.subplots(figsize=(4, 3)), why)
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    searched = list(dict.fromkeys(k for t in study.trials for k in t.params))
    if panel.params:
        params = [k for k in panel.params if k in searched]
        if not params:
            return note(*plt.subplots(figsize=(4, 3)), "none of params\nsearched for this class")
    else:
        params = _default_axes(study, searched, panel.top_n)
    metric = panel.metric or data.metric
    ax = _draw(lambda: plot_parallel_coordinate(study, params=params, target_name=metric))
    if isinstance(ax, str):
        return note(*plt.subplots(figsize=(4, 3)), ax)
    for other in ax.figure.axes:  # the objective's, one per param, the colour bar's
        _plain(other)
    fig = ax.figure  # twin axes per param and a colour bar: a fixed layout, not a constrained one
    fig.set_size_inches(min(max(4.6, 1.6 + 0.9 * len(params)), 7.0), 3.6)
    fig.subplots_adjust(left=0.1, right=0.84, bottom=0.28, top=0.95)
    return fig


def _default_axes(study: optuna.Study, searched: list[str], top: int) -> list[str]:
    """The ``top`` most important keys; the first varying ones without enough trials for fANOVA
    (or when it can't rank them)."""
    if len(study.trials) >= FANOVA_MIN_TRIALS:
        try:
            return list(param_importances(study))[:top]
        except ValueError:
            pass
    varying = [k for k in searched if len({t.params.get(k) for t in study.trials}) > 1]
    return (varying or searched)[:top]


def _optuna_study(
    data: DashboardData, panel: Panel, cls: str, *, need: int
) -> tuple[optuna.Study | None, str]:
    """The class's study, or None and why (ablation, no search space, too few trials)."""
    if data.ablation is not None:
        return None, "ablation study: no search\n(see the variant panels)"
    if data.space is None:
        return None, "no search space"
    study = class_study(data, cls, metric=panel.metric, include_stopped=panel.stopped)
    if len(study.trials) < need:
        have = len(study.trials)
        return None, f"{have} {panel.trials_word} trial{'s' * (have != 1)}\n(need {need} or more)"
    return study, ""


def _draw(plot: Callable[[], plt.Axes]) -> plt.Axes | str:
    """An Optuna plot's axes, or a note's text when the (experimental) plot fails: one panel must
    not cost the study its dashboard."""
    before = set(plt.get_fignums())
    try:
        with quiet_optuna():
            return plot()
    except Exception as exc:
        log.warning("optuna plot failed: %s", exc, exc_info=True)
        for num in set(plt.get_fignums()) - before:  # the failed plot's figure
            plt.close(num)
        return wrap(f"Optuna could not draw this: {exc}")


def _plain(ax: plt.Axes) -> plt.Figure:
    """No title (the panel has its caption) and the dashboard's small text, on an Optuna plot."""
    for loc in ("left", "center", "right"):
        ax.set_title("", loc=loc)
    ax.tick_params(which="both", labelsize=7)
    ax.xaxis.label.set_size(8)
    ax.yaxis.label.set_size(8)
    return ax.figure


def _resize(fig: plt.Figure, width: float, height: float) -> plt.Figure:
    fig.set_size_inches(width, height)
    fig.set_layout_engine("constrained")
    return fig
