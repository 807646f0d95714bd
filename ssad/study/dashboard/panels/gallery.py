"""The heatmap gallery: each class's best trial's validation heatmaps, embedded."""

from __future__ import annotations

import base64
import html

from ssad.study.dashboard.data import DashboardData
from ssad.study.dashboard.spec import Panel


def gallery_html(data: DashboardData, panel: Panel) -> str:
    esc, rows = html.escape, []
    for cls in data.classes:
        images = data.heatmaps.get(cls, ())[: panel.max_images]
        body = "".join(
            f"<figure><img alt='{esc(name)}' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode()}'><figcaption>{esc(name)}</figcaption></figure>"
            for name, png in images
        )
        run = data.board.loc[data.board["class"] == cls, "best_run_id"]
        run_id = str(run.iloc[0]) if len(run) and run.iloc[0] else ""
        where = f" · run {esc(run_id[:8])}" if run_id else ""
        rows.append(
            f"<h3>{esc(cls)}<span class='meta'>{where}</span></h3>"
            + (
                f"<div class='gallery'>{body}</div>"
                if body
                else "<p class='note'>no heatmaps logged for its best trial</p>"
            )
        )
    return "".join(rows)
