"""Study dashboards: a declarative YAML spec → one self-contained HTML file on the study's run.

A dashboard file (``dashboards/*.yaml``) has a ``title`` and a list of ``panels``, each a ``type``
and its options (``dashboards/study.yaml`` documents them). Study-wide panels come first
(``leaderboard`` and ``status`` side by side, then ``variant_bars``, ``forest`` and
``heatmap_gallery`` full width); per-class panels (``curves``, ``scatter``, ``importance``, the
``optuna_*`` panels, ``asha_budget``) form one row of small multiples per class, each class on its
own y scale (AUROC scales differ widely between classes). Charts are matplotlib PNGs embedded as
base64, so the file opens anywhere, also as an MLflow artifact.

The ``optuna_*`` panels rebuild one in-memory :class:`optuna.Study` per class from the class's
trial runs (:func:`class_study`; distributions from the spec's search space) and draw it with
``optuna.visualization.matplotlib``; parameter importances are fANOVA's (:func:`param_importances`).
The ablation panels draw the table of :func:`ssad.study.results.ablation.results_table`.

Modules: :mod:`.spec` (the file and its panels), :mod:`.data` (what the panels draw, read from
MLflow), :mod:`.panels` (one module per kind of panel), :mod:`.render` (the HTML, and logging it).
"""

import matplotlib

matplotlib.use("Agg")  # headless; must run before pyplot is imported (by any module below)

from ssad.study.dashboard.data import HEATMAP_DIR, DashboardData, best_heatmaps, collect
from ssad.study.dashboard.panels.optuna_study import class_study, param_importances
from ssad.study.dashboard.render import log_dashboard, publish, render, study_parent
from ssad.study.dashboard.spec import (
    ABLATION_DASHBOARD,
    DEFAULT_DASHBOARD,
    Dashboard,
    Panel,
    dashboard_for,
    load_dashboard,
)

__all__ = [
    "ABLATION_DASHBOARD",
    "DEFAULT_DASHBOARD",
    "HEATMAP_DIR",
    "Dashboard",
    "DashboardData",
    "Panel",
    "best_heatmaps",
    "class_study",
    "collect",
    "dashboard_for",
    "load_dashboard",
    "log_dashboard",
    "param_importances",
    "publish",
    "render",
    "study_parent",
]
