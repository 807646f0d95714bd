"""The study-wide overview: the leaderboard table and the trials per class and status."""

from __future__ import annotations

import html
import math

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ssad.study.dashboard.data import DashboardData
from ssad.study.dashboard.panels.common import COLOUR, STATUSES


def leaderboard_html(data: DashboardData) -> str:
    head = ["class", f"best {data.metric}", "trials", *STATUSES[:3], "compute", "best run"]
    rows = []
    for _, r in data.board.iterrows():
        best = r[f"best_{data.metric}"]
        config = html.escape(r["best_config"].replace(", ", ",\n"))
        cells = [
            html.escape(r["class"]),
            "–" if math.isnan(best) else f"{best:.4f}",
            *(str(r[k]) for k in ("trials", *STATUSES[:3])),
            _duration(r["compute_s"]),
            f"<details><summary>{html.escape(str(r['best_run_id'])[:8])}</summary>"
            f"<pre>{config}</pre></details>"
            if r["best_run_id"]
            else "–",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><tr>{th}</tr>{''.join(rows)}</table>"


def status(data: DashboardData) -> plt.Figure:
    counts = data.trials.groupby(["class", "status"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=list(data.classes), columns=list(STATUSES), fill_value=0)
    counts = counts.loc[:, (counts.sum() > 0) | counts.columns.isin(STATUSES[:3])]
    fig, ax = plt.subplots(figsize=(5.5, 0.9 + 0.32 * len(counts)), layout="constrained")
    left = pd.Series(0, index=counts.index)
    for name in counts.columns:
        ax.barh(counts.index, counts[name], left=left, color=COLOUR[name], label=name)
        left += counts[name]
    ax.invert_yaxis()
    ax.set(xlabel="trials", xlim=(0, max(1, left.max())))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(ncols=len(counts.columns), loc="lower left", bbox_to_anchor=(0, 1), frameon=False)
    return fig


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
