"""Per-class panels of the trials themselves: metric curves, a param's scatter, the ASHA budget."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ssad.study.dashboard.data import DashboardData
from ssad.study.dashboard.panels.common import (
    BEST,
    COLOUR,
    LINE,
    STATUSES,
    class_trials,
    final,
    finish_axes,
    note,
)
from ssad.study.dashboard.spec import Panel


def curves(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    metric = panel.metric or data.metric
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    hist = data.history[data.history["metric"] == metric]
    trials = class_trials(data, cls)
    if not hist["run_id"].isin(trials["run_id"]).any():
        return note(fig, ax, f"no {metric} logged yet")
    for _, t in trials.sort_values("best", kind="stable").iterrows():
        h = hist[hist["run_id"] == t["run_id"]].sort_values("step")
        status = t["status"] if t["status"] in COLOUR else "finished"
        style = (
            {"color": BEST, "lw": 2.4, "zorder": 5}
            if t["best"]
            else {"color": COLOUR[status], "ls": LINE[status], "lw": 1.1}
        )
        ax.plot(h["step"], h["value"], marker="." if len(h) == 1 else "", **style)
    finish_axes(ax, data, cls, metric, xlabel="epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def scatter(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    metric = panel.metric or data.metric
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    trials = class_trials(data, cls).set_index("run_id")
    x = data.params.get(panel.param, pd.Series(dtype=object)).reindex(trials.index).dropna()
    if x.empty:
        return note(fig, ax, f"{panel.param}\nnot searched for this class")
    y = final(data, metric).reindex(x.index)
    numeric = pd.to_numeric(x, errors="coerce")
    if numeric.isna().any():  # categorical values: one column each, in sorted order
        cats = sorted(x.unique(), key=str)
        numeric = x.map({c: i for i, c in enumerate(cats)}).astype(float)
        ax.set_xticks(range(len(cats)), [str(c) for c in cats])
    status, best = trials.loc[x.index, "status"], trials.loc[x.index, "best"].astype(bool)
    for name, colour in COLOUR.items():  # finished filled; stopped, failed, running hollow
        m = (status == name) & ~best
        face = colour if name == "finished" else "none"
        ax.scatter(numeric[m], y[m], s=30, linewidths=1.2, facecolors=face, edgecolors=colour)
    ax.scatter(numeric[best], y[best], s=150, marker="*", color=BEST, zorder=5)
    if panel.log_x and (numeric > 0).all():
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    finish_axes(ax, data, cls, metric, xlabel=panel.param or "")
    return fig


def budget(data: DashboardData, cls: str) -> tuple[int, int]:
    """(epochs used, epochs the class's trials would have used had none stopped early)."""
    trials = class_trials(data, cls)
    full = data.max_epochs or int(trials["epochs"].max() if len(trials) else 0)
    return int(trials["epochs"].sum()) if len(trials) else 0, full * len(trials)


def budget_caption(data: DashboardData, cls: str) -> str:
    """The share of the full budget the class's trials used (epochs: in the chart's x label)."""
    used, full = budget(data, cls)
    return f" · {used / full:.0%} of the full budget" if full else ""


def asha_budget(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    trials = class_trials(data, cls)
    n = len(trials)
    fig, ax = plt.subplots(figsize=(4.6, max(2.4, 1.0 + 0.22 * n)), layout="constrained")
    if not n:
        return note(fig, ax, "no trials yet")
    full = data.max_epochs or int(trials["epochs"].max())
    status = [s if s in COLOUR else "running" for s in trials["status"]]
    ax.barh(range(n), trials["epochs"], color=[COLOUR[s] for s in status], height=0.7)
    names = trials["trial_name"] if "trial_name" in trials else trials["config_id"]
    labels = [("★ " if b else "") + str(t) for t, b in zip(names, trials["best"])]
    ax.set_yticks(range(n), labels, fontsize=7)
    for tick, best in zip(ax.get_yticklabels(), trials["best"]):
        tick.set_color(BEST if best else "#212529")
    ax.axvline(full, color="#495057", ls="--", lw=1)
    ax.text(full, -0.7, f" max {full}", fontsize=7, va="bottom", color="#495057")
    used, total = budget(data, cls)
    ax.set(xlim=(0, full * 1.12 if full else 1), ylim=(n - 0.5, -1.1))
    ax.set_xlabel(f"epochs trained: {used} of {total} = trials x max epochs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
    shown = [s for s in STATUSES if s in status]
    ax.legend(
        handles=[Patch(color=COLOUR[s], label=s) for s in shown],
        fontsize=7,
        ncols=len(shown),
        loc="lower left",
        bbox_to_anchor=(0, 1),
        frameon=False,
    )
    return fig
