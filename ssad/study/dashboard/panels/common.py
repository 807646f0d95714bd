"""What the panels share: colours, a class's trials and final values, notes, PNG embedding."""

from __future__ import annotations

import base64
import io
import textwrap

import matplotlib.pyplot as plt
import pandas as pd

from ssad.study.dashboard.data import DashboardData

STATUSES = ("finished", "stopped", "failed", "running")
COLOUR = {"finished": "#4c6ef5", "stopped": "#adb5bd", "failed": "#e03131", "running": "#74c0fc"}
BEST = "#f08c00"
LINE = {"finished": "-", "stopped": "--", "failed": ":", "running": "-"}
VERDICT = {"better": "#2f9e44", "worse": "#e03131", "no detectable difference": "#868e96"}
VARIANTS = ("#4c6ef5", "#12b886", "#be4bdb", "#15aabf", "#82c91e", "#fa5252", "#7950f2")


def class_trials(data: DashboardData, cls: str) -> pd.DataFrame:
    return data.trials[data.trials["class"] == cls]


def final(data: DashboardData, metric: str) -> pd.Series:
    """Each run's last reported value of ``metric`` (index: run_id)."""
    h = data.history[data.history["metric"] == metric].sort_values("step")
    return h.groupby("run_id")["value"].last()


def finish_axes(ax: plt.Axes, data: DashboardData, cls: str, metric: str, *, xlabel: str) -> None:
    """Labels, grid and the class's own y range for ``metric`` (shared by its curves and scatters)."""
    h = data.history
    values = h.loc[(h["metric"] == metric) & h["run_id"].isin(class_trials(data, cls)["run_id"])]
    if len(values):
        lo, hi = values["value"].min(), values["value"].max()
        pad = max(0.05 * (hi - lo), 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set(xlabel=xlabel, ylabel=metric)
    ax.grid(alpha=0.3)


def note(fig: plt.Figure, ax: plt.Axes, text: str) -> plt.Figure:
    """The panel as a grey note instead of a chart (the axes off)."""
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#868e96", transform=ax.transAxes)
    return fig


def too_few(statistic: str, need: int, what: str, have: int, *, where: str = "this class") -> str:
    """The note of a panel whose statistic needs more data than it has, wrapped to fit a panel.

    E.g. ``fANOVA importance needs at least 10 finished trials per class; this class has 3``.
    """
    return wrap(f"{statistic} needs at least {need} {what}; {where} has {have}")


def wrap(text: str, width: int = 38) -> str:
    return "\n".join(textwrap.wrap(text, width))


def png(fig: plt.Figure, *, natural: bool = False) -> str:
    """The figure as an embedded PNG; ``natural``: shown at most at its own size."""
    dpi = 120
    size = f" style='max-width:{round(fig.get_figwidth() * dpi)}px'" if natural else ""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return (
        f"<img alt='chart'{size} "
        f"src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"
    )
