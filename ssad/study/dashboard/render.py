"""A dashboard as one self-contained HTML file, and that file logged to the study's parent run."""

from __future__ import annotations

import html
import math
import tempfile
import time
from pathlib import Path

from ssad.study.dashboard.data import DashboardData, collect
from ssad.study.dashboard.panels import PLOTS, WIDE_PLOTS
from ssad.study.dashboard.panels.common import png
from ssad.study.dashboard.panels.gallery import gallery_html
from ssad.study.dashboard.panels.overview import leaderboard_html, status
from ssad.study.dashboard.panels.trials import budget_caption
from ssad.study.dashboard.spec import OVERVIEW, STUDY_WIDE, Dashboard, Panel, load_dashboard
from ssad.study.spec import StudySpec
from ssad.study.tracking import StudyTracker

__all__ = ["log_dashboard", "publish", "render", "study_parent"]

_KEY = (
    "<p class='key'>Per class:<span class='sw' style='border-top:3px solid #f08c00'></span>"
    "<span style='color:#f08c00'>★</span> best configuration"
    "<span class='sw' style='border-top:2px solid #4c6ef5'></span>● finished"
    "<span class='sw' style='border-top:2px dashed #adb5bd'></span>○ stopped early"
    "<span class='sw' style='border-top:2px dotted #e03131'></span>failed"
    " · each class on its own y scale</p>"
)


def render(dashboard: Dashboard, data: DashboardData, out_html: Path) -> Path:
    """Write the dashboard as one self-contained HTML file and return its path."""
    esc, metric = html.escape, data.metric
    per_class = [p for p in dashboard.panels if p.type not in STUDY_WIDE]
    links = " ".join(f'<a href="#class-{esc(c)}">{esc(c)}</a>' for c in data.classes)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(dashboard.title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(dashboard.title)}</h1>",
        f"<p class='meta'>study <b>{esc(data.study)}</b> · metric <b>{esc(metric)}</b>"
        f" ({data.mode}) · {len(data.trials)} trials · {time.strftime('%Y-%m-%d %H:%M')}</p>",
        f"<nav>classes: {links}</nav>" if per_class else "",
        *_study_wide(dashboard, data),
    ]
    if per_class:
        parts.append(_KEY)
    for cls in data.classes if per_class else ():
        parts += _class_section(per_class, data, cls)
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text("".join([*parts, "</body></html>"]), encoding="utf-8")
    return out_html


def _study_wide(dashboard: Dashboard, data: DashboardData) -> list[str]:
    """The overview (leaderboard and status side by side), then the other study-wide panels."""
    esc, metric, parts = html.escape, data.metric, []
    overview = [p for p in dashboard.panels if p.type in OVERVIEW]
    if overview:
        one = " style='grid-template-columns:minmax(300px,560px)'" if len(overview) == 1 else ""
        parts.append(f"<section class='overview'{one}>")
        for p in overview:
            body = leaderboard_html(data) if p.type == "leaderboard" else png(status(data))
            parts.append(
                f"<figure><figcaption>{esc(p.caption(metric))}</figcaption>{body}</figure>"
            )
        parts.append("</section>")
    for p in (p for p in dashboard.panels if p.type in STUDY_WIDE and p.type not in OVERVIEW):
        if p.type == "heatmap_gallery":
            body = gallery_html(data, p)
        else:
            body = png(WIDE_PLOTS[p.type](data, p), natural=True)
        parts.append(
            f"<section class='wide'><figure><figcaption>{esc(p.caption(metric))}</figcaption>"
            f"{body}</figure></section>"
        )
    return parts


def _class_section(per_class: list[Panel], data: DashboardData, cls: str) -> list[str]:
    """One class's row of small multiples under its best value and trial counts."""
    esc, metric = html.escape, data.metric
    row = data.board[data.board["class"] == cls].iloc[0]
    best = row[f"best_{metric}"]
    columns = min(len(per_class), 4)
    parts = [
        f"<section class='class' id='class-{esc(cls)}'><h2>{esc(cls)}</h2><p class='meta'>"
        f"best {esc(metric)} <b>{'–' if math.isnan(best) else f'{best:.4f}'}</b> · "
        f"{row['trials']} trials: {row['finished']} finished, {row['stopped']} stopped,"
        f" {row['failed']} failed</p><div class='row' style='grid-template-columns:"
        f"repeat({columns},minmax(0,1fr))'>"
    ]
    for p in per_class:
        fig = PLOTS[p.type](data, p, cls)
        caption = p.caption(metric)
        if p.type == "asha_budget":
            caption += budget_caption(data, cls)
        cap = esc(caption)
        parts.append(f"<figure><figcaption title='{cap}'>{cap}</figcaption>")
        parts.append(f"{png(fig)}</figure>")
    parts.append("</div></section>")
    return parts


def publish(tracker: StudyTracker, parent_run_id: str, html_path: Path, source: Path) -> Path:
    """Log a rendered dashboard and its file to a run under ``dashboards/``; its artifact path."""
    for path in (html_path, source):
        tracker.log_artifacts(parent_run_id, Path(path), artifact_path="dashboards")
    return Path("dashboards") / Path(html_path).name


def log_dashboard(
    tracker: StudyTracker, parent_run_id: str, dashboard_path: str | Path, spec: StudySpec
) -> Path:
    """Render a dashboard and log it (and its spec) to the study's parent run under ``dashboards/``.

    Returns:
        The HTML's artifact path inside the run, ``dashboards/<name>.html``.
    """
    dashboard = load_dashboard(dashboard_path)
    data = collect(tracker, spec, dashboard)
    with tempfile.TemporaryDirectory(prefix="ssad-dashboard-") as tmp:
        out = render(dashboard, data, Path(tmp) / f"{dashboard.name}.html")
        return publish(tracker, parent_run_id, out, dashboard.source)


def study_parent(tracker: StudyTracker) -> str:
    """The parent run id of the study's newest launch, creating nothing.

    Raises:
        ValueError: the store, the experiment or the study's runs do not exist.
    """
    uri = tracker.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise ValueError(f"{uri}: no MLflow store there (run the study first)")
    where = f"experiment {tracker.experiment!r} of {uri}"
    if tracker.client.get_experiment_by_name(tracker.experiment) is None:
        raise ValueError(f"study {tracker.study!r}: no {where} (run the study first)")
    parent = tracker.launch_parent_id()
    if parent is None:
        raise ValueError(f"study {tracker.study!r}: no runs in {where} (run the study first)")
    return parent

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#212529;background:#f1f3f5}
h1{margin:0 0 4px} h2{margin:0 0 2px;font-size:18px} nav{margin:0 0 16px} nav a{margin-right:10px}
.meta,.key{color:#495057;margin:0 0 10px} .sw{display:inline-block;width:22px;margin:0 4px 3px 12px}
section{background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:14px 18px;margin:0 0 16px}
.overview{display:grid;grid-template-columns:auto minmax(300px,560px);gap:32px;align-items:start}
.row{display:grid;gap:14px} figure{margin:0} img{width:100%;height:auto}
figcaption{font-weight:600;font-size:13px;margin:0 0 6px;white-space:nowrap;overflow:hidden;
  text-overflow:ellipsis}
table{border-collapse:collapse;font-size:13px} th{background:#f8f9fa}
th,td{padding:5px 10px;border-bottom:1px solid #dee2e6;text-align:right;vertical-align:top}
th:first-child,td:first-child,th:last-child,td:last-child{text-align:left}
pre{font-size:11px;margin:4px 0} summary{cursor:pointer;font-family:monospace}
h3{margin:12px 0 6px;font-size:15px} h3 .meta{font-weight:400;font-size:12px}
.note{color:#868e96;margin:0 0 8px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:10px}
.gallery figcaption{font-weight:400;font-size:11px;color:#495057}
@media (max-width:1000px){.row{grid-template-columns:1fr 1fr!important}}
"""
