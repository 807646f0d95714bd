"""The panels, one module per kind, and the registries :func:`~ssad.study.dashboard.render` reads.

A per-class panel is ``(data, panel, class) -> Figure``; a study-wide one ``(data, panel) ->
Figure``. Adding a panel type: its function in a module here, one line in a registry below, and its
options in :mod:`ssad.study.dashboard.spec`.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt

from ssad.study.dashboard.data import DashboardData
from ssad.study.dashboard.panels.ablation import forest, variant_bars
from ssad.study.dashboard.panels.correlation import importance
from ssad.study.dashboard.panels.optuna_panels import (
    optuna_history,
    optuna_importance,
    optuna_parallel,
)
from ssad.study.dashboard.panels.trials import asha_budget, curves, scatter
from ssad.study.dashboard.spec import Panel

__all__ = ["PLOTS", "WIDE_PLOTS"]

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
