"""Study dashboards: a declarative YAML spec → one self-contained HTML file on the study's run.

A dashboard file (``dashboards/*.yaml``) has a ``title`` and a list of ``panels``, each a ``type``
and its options (the file documents them). Study-wide panels (``leaderboard``, ``status``) come
first; per-class panels (``curves``, ``scatter``, ``importance``) form one row of small multiples per
class, each class on its own y scale (AUROC scales differ widely between classes). Charts are
matplotlib PNGs embedded as base64, so the file opens anywhere, also as an MLflow artifact.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")  # headless; must run before pyplot is imported

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ssad.config import Config, read_yaml_mapping
from ssad.study.leaderboard import leaderboard, trials_frame
from ssad.study.spec import StudySpec
from ssad.study.tracking import StudyTracker

__all__ = [
    "DEFAULT_DASHBOARD",
    "Dashboard",
    "DashboardData",
    "Panel",
    "collect",
    "load_dashboard",
    "log_dashboard",
    "render",
]

DEFAULT_DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "study.yaml"

PanelType = Literal["leaderboard", "status", "curves", "scatter", "importance"]
_OPTIONS: dict[str, dict[str, type]] = {  # panel type → option → type
    "leaderboard": {"title": str},
    "status": {"title": str},
    "curves": {"title": str, "metric": str},
    "scatter": {"title": str, "metric": str, "param": str, "log_x": bool},
    "importance": {"title": str, "metric": str, "top": int, "include_stopped": bool},
}
_STUDY_WIDE = ("leaderboard", "status")
_STATUSES = ("finished", "stopped", "failed", "running")
_COLOUR = {"finished": "#4c6ef5", "stopped": "#adb5bd", "failed": "#e03131", "running": "#74c0fc"}
_BEST = "#f08c00"
_LINE = {"finished": "-", "stopped": "--", "failed": ":", "running": "-"}
_KEY = (
    "<p class='key'>Per class:<span class='sw' style='border-top:3px solid #f08c00'></span>"
    "<span style='color:#f08c00'>★</span> best configuration"
    "<span class='sw' style='border-top:2px solid #4c6ef5'></span>● finished"
    "<span class='sw' style='border-top:2px dashed #adb5bd'></span>○ stopped early"
    "<span class='sw' style='border-top:2px dotted #e03131'></span>failed"
    " · each class on its own y scale</p>"
)


@dataclass(frozen=True)
class Panel:
    """One panel; ``index`` is its position in the file's ``panels`` list (for error messages)."""

    index: int
    type: PanelType
    title: str | None = None
    metric: str | None = None  # None: the study's metric
    param: str | None = None
    log_x: bool = False
    top: int = 10
    include_stopped: bool = True

    def caption(self, study_metric: str) -> str:
        m = self.metric or study_metric
        default = {
            "leaderboard": "Leaderboard",
            "status": "Trials per class",
            "curves": f"{m} per epoch",
            "scatter": f"{self.param} vs final {m}",
            "importance": f"Correlation with final {m}",
        }
        return self.title or default[self.type]


@dataclass(frozen=True)
class Dashboard:
    """A validated dashboard file; ``name`` (the file stem) names the HTML artifact."""

    name: str
    title: str
    panels: tuple[Panel, ...]
    source: Path


@dataclass(frozen=True)
class DashboardData:
    """What the panels draw, read from MLflow by :func:`collect`.

    ``trials``: one row per trial run (:func:`trials_frame` columns plus ``best``: in its class's
    best configuration). ``params``: run_id × searched key, numeric strings parsed to float.
    ``history``: long frame (run_id, metric, step, value) of the metrics the panels need.
    """

    study: str
    metric: str
    mode: str
    classes: tuple[str, ...]
    board: pd.DataFrame
    trials: pd.DataFrame
    params: pd.DataFrame
    history: pd.DataFrame


def load_dashboard(path: str | Path) -> Dashboard:
    """Read and validate a dashboard file; errors name the file and the panel index/key."""
    path = Path(path)
    raw = read_yaml_mapping(path, error=ValueError, what="dashboard file")
    if set(raw) - {"title", "panels"}:
        raise ValueError(f"{path}: expected a mapping with keys 'title' and 'panels'")
    title, items = raw.get("title", path.stem), raw.get("panels")
    if not isinstance(title, str):
        raise ValueError(f"{path}: title: expected a string, got {title!r}")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: panels: expected a non-empty list of panels")
    config_keys = Config().flat()
    panels = []
    for i, item in enumerate(items):
        where = f"{path}: panels[{i}]"
        if not isinstance(item, dict) or "type" not in item:
            raise ValueError(f"{where}: expected a mapping with a 'type'")
        kind, opts = item["type"], {k: v for k, v in item.items() if k != "type"}
        if kind not in _OPTIONS:
            raise ValueError(f"{where}.type: unknown panel type {kind!r}; use {sorted(_OPTIONS)}")
        allowed = _OPTIONS[kind]
        if unknown := sorted(set(opts) - set(allowed)):
            raise ValueError(f"{where} ({kind}): unknown option(s) {unknown}; use {list(allowed)}")
        for key, value in opts.items():
            typ = allowed[key]
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                raise ValueError(f"{where}.{key}: expected {typ.__name__}, got {value!r}")
        if kind == "scatter" and "param" not in opts:
            raise ValueError(f"{where}.param: a scatter panel needs a searched config key")
        if "param" in opts and opts["param"] not in config_keys:
            raise ValueError(f"{where}.param: {opts['param']!r} is not a config key")
        if opts.get("top", 1) < 1:
            raise ValueError(f"{where}.top: must be >= 1")
        panels.append(Panel(index=i, type=kind, **opts))
    return Dashboard(name=path.stem, title=title, panels=tuple(panels), source=path)


def collect(tracker: StudyTracker, spec: StudySpec, dashboard: Dashboard) -> DashboardData:
    """Read the study's trials and the metric histories its panels need from MLflow.

    Raises:
        ValueError: a panel names a metric that no trial of the study logged.
    """
    logged = set().union(*(r.data.metrics for r in tracker.trial_runs()))
    for p in dashboard.panels:
        if p.metric and logged and p.metric not in logged:
            raise ValueError(
                f"{dashboard.source}: panels[{p.index}].metric: {p.metric!r} was not logged by any"
                f" trial of study {spec.name!r}; logged: {sorted(logged)}"
            )
    board, _ = leaderboard(tracker, spec)
    trials = trials_frame(tracker, spec)
    if trials.empty:
        trials = pd.DataFrame(columns=["run_id", "class", "config_id", "status", "config"])
    best = set(zip(board["class"], board["best_run_id"]))
    keys = trials[["class", "run_id", "config_id"]].itertuples(index=False)
    best_cfg = {(c, cid) for c, rid, cid in keys if (c, rid) in best}
    trials["best"] = [(c, cid) in best_cfg for c, cid in zip(trials["class"], trials["config_id"])]
    params = pd.DataFrame([{k: _number(v) for k, v in c.items()} for c in trials["config"]])
    params.index = trials["run_id"]
    needed = {p.metric or spec.metric for p in dashboard.panels if p.type not in _STUDY_WIDE}
    rows = [
        (run_id, metric, step, value)
        for run_id in trials["run_id"]
        for metric in sorted(needed)
        for step, value in tracker.metric_history(run_id, metric)
    ]
    history = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    return DashboardData(
        spec.name, spec.metric, spec.mode, spec.classes, board, trials, params, history
    )


def render(dashboard: Dashboard, data: DashboardData, out_html: Path) -> Path:
    """Write the dashboard as one self-contained HTML file and return its path."""
    esc, metric = html.escape, data.metric
    n = len(data.trials)
    links = " ".join(f'<a href="#class-{esc(c)}">{esc(c)}</a>' for c in data.classes)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(dashboard.title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(dashboard.title)}</h1>",
        f"<p class='meta'>study <b>{esc(data.study)}</b> · metric <b>{esc(metric)}</b>"
        f" ({data.mode}) · {n} trials · {time.strftime('%Y-%m-%d %H:%M')}</p>",
        f"<nav>classes: {links}</nav><section class='overview'>",
    ]
    for p in (p for p in dashboard.panels if p.type in _STUDY_WIDE):
        body = _leaderboard_html(data) if p.type == "leaderboard" else _png(_status(data))
        parts.append(f"<figure><figcaption>{esc(p.caption(metric))}</figcaption>{body}</figure>")
    parts.append("</section>")
    per_class = [p for p in dashboard.panels if p.type not in _STUDY_WIDE]
    if per_class:
        parts.append(_KEY)
    for cls in data.classes:
        row = data.board[data.board["class"] == cls].iloc[0]
        best = row[f"best_{metric}"]
        parts.append(
            f"<section class='class' id='class-{esc(cls)}'><h2>{esc(cls)}</h2><p class='meta'>"
            f"best {esc(metric)} <b>{'–' if math.isnan(best) else f'{best:.4f}'}</b> · "
            f"{row['trials']} trials: {row['finished']} finished, {row['stopped']} stopped,"
            f" {row['failed']} failed</p><div class='row' style='grid-template-columns:"
            f"repeat({len(per_class)},minmax(0,1fr))'>"
        )
        for p in per_class:
            fig = _PLOTS[p.type](data, p, cls)
            cap = esc(p.caption(metric))
            parts.append(f"<figure><figcaption title='{cap}'>{cap}</figcaption>")
            parts.append(f"{_png(fig)}</figure>")
        parts.append("</div></section>")
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text("".join([*parts, "</body></html>"]), encoding="utf-8")
    return out_html


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
        for path in (out, dashboard.source):
            tracker.log_artifacts(parent_run_id, Path(path), artifact_path="dashboards")
    return Path("dashboards") / out.name


# ---- panels --------------------------------------------------------------------------------------
def _leaderboard_html(data: DashboardData) -> str:
    head = ["class", f"best {data.metric}", "trials", *_STATUSES[:3], "compute", "best run"]
    rows = []
    for _, r in data.board.iterrows():
        best = r[f"best_{data.metric}"]
        config = html.escape(r["best_config"].replace(", ", ",\n"))
        cells = [
            html.escape(r["class"]),
            "–" if math.isnan(best) else f"{best:.4f}",
            *(str(r[k]) for k in ("trials", *_STATUSES[:3])),
            _duration(r["compute_s"]),
            f"<details><summary>{html.escape(str(r['best_run_id'])[:8])}</summary>"
            f"<pre>{config}</pre></details>"
            if r["best_run_id"]
            else "–",
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return f"<table><tr>{th}</tr>{''.join(rows)}</table>"


def _status(data: DashboardData) -> plt.Figure:
    counts = data.trials.groupby(["class", "status"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=list(data.classes), columns=list(_STATUSES), fill_value=0)
    counts = counts.loc[:, (counts.sum() > 0) | counts.columns.isin(_STATUSES[:3])]
    fig, ax = plt.subplots(figsize=(5.5, 0.9 + 0.32 * len(counts)), layout="constrained")
    left = pd.Series(0, index=counts.index)
    for status in counts.columns:
        ax.barh(counts.index, counts[status], left=left, color=_COLOUR[status], label=status)
        left += counts[status]
    ax.invert_yaxis()
    ax.set(xlabel="trials", xlim=(0, max(1, left.max())))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(ncols=len(counts.columns), loc="lower left", bbox_to_anchor=(0, 1), frameon=False)
    return fig


def _curves(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    metric = panel.metric or data.metric
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    hist = data.history[data.history["metric"] == metric]
    trials = _class_trials(data, cls)
    if not hist["run_id"].isin(trials["run_id"]).any():
        return _note(fig, ax, f"no {metric} logged yet")
    for _, t in trials.sort_values("best", kind="stable").iterrows():
        h = hist[hist["run_id"] == t["run_id"]].sort_values("step")
        status = t["status"] if t["status"] in _COLOUR else "finished"
        style = (
            {"color": _BEST, "lw": 2.4, "zorder": 5}
            if t["best"]
            else {"color": _COLOUR[status], "ls": _LINE[status], "lw": 1.1}
        )
        ax.plot(h["step"], h["value"], marker="." if len(h) == 1 else "", **style)
    _finish_axes(ax, data, cls, metric, xlabel="epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _scatter(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    metric = panel.metric or data.metric
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    trials = _class_trials(data, cls).set_index("run_id")
    x = data.params.get(panel.param, pd.Series(dtype=object)).reindex(trials.index).dropna()
    if x.empty:
        return _note(fig, ax, f"{panel.param}\nnot searched for this class")
    y = _final(data, metric).reindex(x.index)
    numeric = pd.to_numeric(x, errors="coerce")
    if numeric.isna().any():  # categorical values: one column each, in sorted order
        cats = sorted(x.unique(), key=str)
        numeric = x.map({c: i for i, c in enumerate(cats)}).astype(float)
        ax.set_xticks(range(len(cats)), [str(c) for c in cats])
    status, best = trials.loc[x.index, "status"], trials.loc[x.index, "best"].astype(bool)
    for name, colour in _COLOUR.items():  # finished filled; stopped, failed, running hollow
        m = (status == name) & ~best
        face = colour if name == "finished" else "none"
        ax.scatter(numeric[m], y[m], s=30, linewidths=1.2, facecolors=face, edgecolors=colour)
    ax.scatter(numeric[best], y[best], s=150, marker="*", color=_BEST, zorder=5)
    if panel.log_x and (numeric > 0).all():
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    _finish_axes(ax, data, cls, metric, xlabel=panel.param or "")
    return fig


def _importance(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    metric = panel.metric or data.metric
    fig, ax = plt.subplots(figsize=(4, 3), layout="constrained")
    keep = ("finished", "stopped") if panel.include_stopped else ("finished",)
    trials = _class_trials(data, cls)
    ids = trials.loc[trials["status"].isin(keep), "run_id"]
    y = _final(data, metric).reindex(ids).dropna()
    rho: dict[str, float] = {}
    for key in data.params.columns:
        x = pd.to_numeric(data.params.loc[y.index, key], errors="coerce")
        ok = x.notna()
        if ok.sum() >= 3 and x[ok].nunique() > 1 and y[ok].nunique() > 1:
            rho[key] = float(x[ok].corr(y[ok], method="spearman"))
    if not rho:
        return _note(fig, ax, f"too few trials with a final {metric}\n(need 3 or more)")
    top = sorted(rho, key=lambda k: abs(rho[k]), reverse=True)[: panel.top]
    for i, key in enumerate(top):  # the key's name above its bar: long dotted keys stay legible
        colour = _COLOUR["finished"] if rho[key] >= 0 else _COLOUR["failed"]
        ax.barh(i, abs(rho[key]), height=0.4, color=colour)
        ax.text(0, i - 0.27, f"{key}  ({rho[key]:+.2f})", fontsize=7.5, va="bottom")
    ax.set(xlim=(0, 1), ylim=(len(top) - 0.5, -0.9), yticks=[])
    ax.set_xlabel(f"|Spearman ρ| over {len(y)} trials (blue +, red −)\nnot a causal importance")
    ax.grid(axis="x", alpha=0.3)
    return fig


_PLOTS = {"curves": _curves, "scatter": _scatter, "importance": _importance}


# ---- helpers -------------------------------------------------------------------------------------
def _class_trials(data: DashboardData, cls: str) -> pd.DataFrame:
    return data.trials[data.trials["class"] == cls]


def _final(data: DashboardData, metric: str) -> pd.Series:
    """Each run's last reported value of ``metric`` (index: run_id)."""
    h = data.history[data.history["metric"] == metric].sort_values("step")
    return h.groupby("run_id")["value"].last()


def _finish_axes(ax: plt.Axes, data: DashboardData, cls: str, metric: str, *, xlabel: str) -> None:
    """Labels, grid and the class's own y range for ``metric`` (shared by its curves and scatters)."""
    h = data.history
    values = h.loc[(h["metric"] == metric) & h["run_id"].isin(_class_trials(data, cls)["run_id"])]
    if len(values):
        lo, hi = values["value"].min(), values["value"].max()
        pad = max(0.05 * (hi - lo), 1e-3)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set(xlabel=xlabel, ylabel=metric)
    ax.grid(alpha=0.3)


def _note(fig: plt.Figure, ax: plt.Axes, text: str) -> plt.Figure:
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#868e96", transform=ax.transAxes)
    return fig


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return (
        f"<img alt='chart' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"
    )


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


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
@media (max-width:1000px){.row{grid-template-columns:1fr 1fr!important}}
"""
