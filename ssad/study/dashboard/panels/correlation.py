"""The per-class Spearman panel (``importance``): how each searched key ranks with the metric."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from ssad.study.dashboard.data import DashboardData
from ssad.study.dashboard.panels.common import COLOUR, class_trials, final, note, too_few
from ssad.study.dashboard.spec import Panel

# Below 5 trials no Spearman correlation can be told apart from chance at alpha = 0.05: with n
# trials, the exact permutation test's smallest two-sided p-value is 2 / n!, 2 / 24 = 0.083 at 4.
SPEARMAN_MIN_TRIALS = 5


def importance(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    metric = panel.metric or data.metric
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    keep = ("finished", "stopped") if panel.stopped else ("finished",)
    trials = class_trials(data, cls)
    ids = trials.loc[trials["status"].isin(keep), "run_id"]
    y = final(data, metric).reindex(ids).dropna()
    if len(y) < SPEARMAN_MIN_TRIALS:
        what = f"{panel.trials_word} trials per class"
        return note(fig, ax, too_few("Spearman correlation", SPEARMAN_MIN_TRIALS, what, len(y)))
    rho: dict[str, float] = {}
    for key in data.params.columns:
        x = pd.to_numeric(data.params.loc[y.index, key], errors="coerce")
        ok = x.notna()
        if ok.sum() >= SPEARMAN_MIN_TRIALS and x[ok].nunique() > 1 and y[ok].nunique() > 1:
            rho[key] = float(x[ok].corr(y[ok], method="spearman"))
    if not rho:
        return note(fig, ax, f"{len(y)} trials, but no numeric searched key\nand {metric} both vary")
    top = sorted(rho, key=lambda k: abs(rho[k]), reverse=True)[: panel.top_n]
    for i, key in enumerate(top):  # the key's name above its bar: long dotted keys stay legible
        colour = COLOUR["finished"] if rho[key] >= 0 else COLOUR["failed"]
        ax.barh(i, abs(rho[key]), height=0.4, color=colour)
        ax.text(0, i - 0.27, f"{key}  ({rho[key]:+.2f})", fontsize=7.5, va="bottom")
    ax.set(xlim=(0, 1), ylim=(len(top) - 0.5, -0.9), yticks=[])
    ax.set_xlabel(f"|Spearman ρ| over {len(y)} trials (blue +, red −)\nnot a causal importance")
    ax.grid(axis="x", alpha=0.3)
    return fig
