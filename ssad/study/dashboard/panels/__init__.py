"""The panels, one module per kind, and the registries :func:`~ssad.study.dashboard.render` reads.

A per-class panel is ``(data, panel, class) -> Figure``; a study-wide one ``(data, panel) ->
Figure``. A panel whose statistic needs more data than it has draws a note saying so instead
(``MIN_N``). Adding a panel type: its function in a module here, one line in a registry below, and its
options in :mod:`ssad.study.dashboard.spec`.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt

from ssad.study.dashboard.data import DashboardData
from ssad.study.dashboard.panels.ablation import (
    CI_MIN_RUNS,
    FOREST_MIN_PAIRS,
    forest,
    variant_bars,
)
from ssad.study.dashboard.panels.correlation import SPEARMAN_MIN_TRIALS, importance
from ssad.study.dashboard.panels.optuna_panels import (
    FANOVA_MIN_TRIALS,
    optuna_history,
    optuna_importance,
    optuna_parallel,
)
from ssad.study.dashboard.panels.trials import asha_budget, curves, scatter
from ssad.study.dashboard.spec import Panel

__all__ = ["MIN_N", "PLOTS", "WIDE_PLOTS"]

PLOTS: dict[str, Callable[[DashboardData, Panel, str], plt.Figure]] = {  # per class
    "curves": curves,
    "scatter": scatter,
    "importance": importance,
    "optuna_history": optuna_history,
    "optuna_importance": optuna_importance,
    "optuna_parallel": optuna_parallel,
    "asha_budget": asha_budget,
}
WIDE_PLOTS: dict[str, Callable[[DashboardData, Panel], plt.Figure]] = {  # study-wide charts
    "variant_bars": variant_bars,
    "forest": forest,
}

# The panels whose statistic has a minimum n (each defined, and its reason given, in its module):
# fewer trials per class (importance, optuna_importance), runs per variant and scope
# (variant_bars) or (class, seed) pairs (forest), and the panel says so instead of drawing it.
MIN_N = {
    "importance": SPEARMAN_MIN_TRIALS,
    "optuna_importance": FANOVA_MIN_TRIALS,
    "variant_bars": CI_MIN_RUNS,
    "forest": FOREST_MIN_PAIRS,
}
