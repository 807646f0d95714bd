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
The ablation panels draw the table of :func:`ssad.study.ablation.results_table`.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import matplotlib

matplotlib.use("Agg")  # headless; must run before pyplot is imported

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ssad.config import Config, read_yaml_mapping
from ssad.study.leaderboard import leaderboard, trials_frame
from ssad.study.report import p_value
from ssad.study.spec import SearchSpace, StudySpec
from ssad.study.tracking import TRACKING_ERRORS, StudyTracker

if TYPE_CHECKING:
    import optuna

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

log = logging.getLogger(__name__)

DEFAULT_DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "study.yaml"
ABLATION_DASHBOARD = DEFAULT_DASHBOARD.with_name("ablation.yaml")
HEATMAP_DIR = "val/heatmaps"  # a trial run's heatmap PNGs (ssad.evaluate.write_artifacts)

PanelType = Literal[
    "leaderboard",
    "status",
    "curves",
    "scatter",
    "importance",
    "optuna_history",
    "optuna_importance",
    "optuna_parallel",
    "asha_budget",
    "heatmap_gallery",
    "variant_bars",
    "forest",
]
_OPTUNA_OPTIONS = {"title": str, "metric": str, "include_stopped": bool}
_OPTIONS: dict[str, dict[str, type]] = {  # panel type → option → type
    "leaderboard": {"title": str},
    "status": {"title": str},
    "curves": {"title": str, "metric": str},
    "scatter": {"title": str, "metric": str, "param": str, "log_x": bool},
    "importance": {"title": str, "metric": str, "top": int, "include_stopped": bool},
    "optuna_history": _OPTUNA_OPTIONS,
    "optuna_importance": _OPTUNA_OPTIONS,
    "optuna_parallel": {**_OPTUNA_OPTIONS, "params": list, "top": int},
    "asha_budget": {"title": str},
    "heatmap_gallery": {"title": str, "max_images": int},
    "variant_bars": {"title": str, "metric": str},
    "forest": {"title": str, "metric": str},
}
_OVERVIEW = ("leaderboard", "status")  # side by side at the top
_STUDY_WIDE = (*_OVERVIEW, "variant_bars", "forest", "heatmap_gallery")  # then full width
_HISTORY = (  # per-class panels that read metric histories
    "curves",
    "scatter",
    "importance",
    "optuna_history",
    "optuna_importance",
    "optuna_parallel",
)
_TOP = {"importance": 10, "optuna_parallel": 6}  # default of ``top``
_STATUSES = ("finished", "stopped", "failed", "running")
_COLOUR = {"finished": "#4c6ef5", "stopped": "#adb5bd", "failed": "#e03131", "running": "#74c0fc"}
_BEST = "#f08c00"
_LINE = {"finished": "-", "stopped": "--", "failed": ":", "running": "-"}
_VERDICT = {"better": "#2f9e44", "worse": "#e03131", "no detectable difference": "#868e96"}
_VARIANTS = ("#4c6ef5", "#12b886", "#be4bdb", "#15aabf", "#82c91e", "#fa5252", "#7950f2")
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
    params: tuple[str, ...] = ()  # optuna_parallel: the axes (default: the ``top`` important)
    log_x: bool = False
    top: int | None = None  # None: the panel type's default (_TOP)
    include_stopped: bool | None = None  # None: True for importance, False for optuna panels
    max_images: int = 4

    @property
    def stopped(self) -> bool:
        """Whether stopped trials count (at their last reported value)."""
        return self.type == "importance" if self.include_stopped is None else self.include_stopped

    @property
    def top_n(self) -> int:
        return self.top or _TOP.get(self.type, 10)

    def caption(self, study_metric: str) -> str:
        m = self.metric or study_metric
        default = {
            "leaderboard": "Leaderboard",
            "status": "Trials per class",
            "curves": f"{m} per epoch",
            "scatter": f"{self.param} vs final {m}",
            "importance": f"Correlation with final {m}",
            "optuna_history": f"Optimization history of final {m}",
            "optuna_importance": f"fANOVA importance for final {m}",
            "optuna_parallel": f"Parallel coordinates, final {m}",
            "asha_budget": "Epochs per trial",
            "heatmap_gallery": "Heatmaps of each class's best trial",
            "variant_bars": f"{m} per variant: mean and 95 % CI over seeds",
            "forest": f"{m}: variant − baseline, paired over (class, seed), 95 % CI",
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
    ``space``: the searched distributions (optuna panels). ``max_epochs``: a trial's full budget.
    ``heatmaps``: class → (file name, PNG bytes) of its best trial run (heatmap_gallery).
    ``ablation``: an ablation study's results table (``ssad.study.ablation.results_table``: one
    row per metric, scope, variant), None for a search.
    """

    study: str
    metric: str
    mode: str
    classes: tuple[str, ...]
    board: pd.DataFrame
    trials: pd.DataFrame
    params: pd.DataFrame
    history: pd.DataFrame
    space: SearchSpace | None = None
    max_epochs: int | None = None
    heatmaps: dict[str, tuple[tuple[str, bytes], ...]] = field(default_factory=dict)
    ablation: pd.DataFrame | None = None


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
        if "params" in opts:
            keys = opts["params"]
            if not keys or not all(isinstance(k, str) for k in keys):
                raise ValueError(f"{where}.params: expected a non-empty list of config keys")
            if bad := [k for k in keys if k not in config_keys]:
                raise ValueError(f"{where}.params: {bad} not config key(s)")
            opts["params"] = tuple(keys)
        for key in ("top", "max_images"):
            if opts.get(key, 1) < 1:
                raise ValueError(f"{where}.{key}: must be >= 1")
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
    needed = {p.metric or spec.metric for p in dashboard.panels if p.type in _HISTORY}
    rows = [
        (run_id, metric, step, value)
        for run_id in trials["run_id"]
        for metric in sorted(needed)
        for step, value in tracker.metric_history(run_id, metric)
    ]
    history = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])
    gallery = [p.max_images for p in dashboard.panels if p.type == "heatmap_gallery"]
    ablation = None
    if getattr(spec, "kind", "search") == "ablation":
        from ssad.study.ablation import results_table

        ablation = results_table(tracker, spec)
    return DashboardData(
        spec.name,
        spec.metric,
        spec.mode,
        spec.classes,
        board,
        trials,
        params,
        history,
        space=spec.space,
        max_epochs=spec.max_epochs,
        heatmaps=best_heatmaps(tracker, board, max(gallery)) if gallery else {},
        ablation=ablation,
    )


def best_heatmaps(
    tracker: StudyTracker, board: pd.DataFrame, max_images: int
) -> dict[str, tuple[tuple[str, bytes], ...]]:
    """class → up to ``max_images`` (name, PNG bytes) of its best run's ``val/heatmaps``.

    With more heatmaps than ``max_images``, evenly spaced ones in name order (the validation
    images behind them are spread over defect types and good images). A run without heatmaps, or
    whose artifacts can't be read, gives an empty tuple.
    """
    out: dict[str, tuple[tuple[str, bytes], ...]] = {}
    with _no_progress_bars():
        for cls, run_id in zip(board["class"], board["best_run_id"]):
            if run_id:
                out[cls] = _run_heatmaps(tracker, run_id, max_images)
    return out


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow's per-file download bars off (they would fill a CLI's or a study's output)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _run_heatmaps(
    tracker: StudyTracker, run_id: str, max_images: int
) -> tuple[tuple[str, bytes], ...]:
    try:
        names = sorted(
            a.path
            for a in tracker.client.list_artifacts(run_id, HEATMAP_DIR)
            if not a.is_dir and a.path.lower().endswith(".png")
        )
        if len(names) > max_images:
            step = (len(names) - 1) / max(max_images - 1, 1)
            names = [names[round(i * step)] for i in range(max_images)]
        with tempfile.TemporaryDirectory(prefix="ssad-heatmaps-") as tmp:
            return tuple(
                (
                    Path(name).name,
                    Path(tracker.client.download_artifacts(run_id, name, tmp)).read_bytes(),
                )
                for name in names
            )
    except TRACKING_ERRORS:  # MLflow's errors, named by the adapter
        return ()


def render(dashboard: Dashboard, data: DashboardData, out_html: Path) -> Path:
    """Write the dashboard as one self-contained HTML file and return its path."""
    esc, metric = html.escape, data.metric
    n = len(data.trials)
    per_class = [p for p in dashboard.panels if p.type not in _STUDY_WIDE]
    links = " ".join(f'<a href="#class-{esc(c)}">{esc(c)}</a>' for c in data.classes)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(dashboard.title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(dashboard.title)}</h1>",
        f"<p class='meta'>study <b>{esc(data.study)}</b> · metric <b>{esc(metric)}</b>"
        f" ({data.mode}) · {n} trials · {time.strftime('%Y-%m-%d %H:%M')}</p>",
        f"<nav>classes: {links}</nav>" if per_class else "",
    ]
    overview = [p for p in dashboard.panels if p.type in _OVERVIEW]
    if overview:
        one = " style='grid-template-columns:minmax(300px,560px)'" if len(overview) == 1 else ""
        parts.append(f"<section class='overview'{one}>")
        for p in overview:
            body = _leaderboard_html(data) if p.type == "leaderboard" else _png(_status(data))
            parts.append(
                f"<figure><figcaption>{esc(p.caption(metric))}</figcaption>{body}</figure>"
            )
        parts.append("</section>")
    for p in (p for p in dashboard.panels if p.type in _STUDY_WIDE and p.type not in _OVERVIEW):
        if p.type == "heatmap_gallery":
            body = _gallery_html(data, p)
        else:
            body = _png(_WIDE_PLOTS[p.type](data, p), natural=True)
        parts.append(
            f"<section class='wide'><figure><figcaption>{esc(p.caption(metric))}</figcaption>"
            f"{body}</figure></section>"
        )
    if per_class:
        parts.append(_KEY)
    columns = min(len(per_class), 4)
    for cls in data.classes if per_class else ():
        row = data.board[data.board["class"] == cls].iloc[0]
        best = row[f"best_{metric}"]
        parts.append(
            f"<section class='class' id='class-{esc(cls)}'><h2>{esc(cls)}</h2><p class='meta'>"
            f"best {esc(metric)} <b>{'–' if math.isnan(best) else f'{best:.4f}'}</b> · "
            f"{row['trials']} trials: {row['finished']} finished, {row['stopped']} stopped,"
            f" {row['failed']} failed</p><div class='row' style='grid-template-columns:"
            f"repeat({columns},minmax(0,1fr))'>"
        )
        for p in per_class:
            fig = _PLOTS[p.type](data, p, cls)
            caption = p.caption(metric)
            if p.type == "asha_budget":
                caption += _budget_caption(data, cls)
            cap = esc(caption)
            parts.append(f"<figure><figcaption title='{cap}'>{cap}</figcaption>")
            parts.append(f"{_png(fig)}</figure>")
        parts.append("</div></section>")
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text("".join([*parts, "</body></html>"]), encoding="utf-8")
    return out_html


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


def dashboard_for(spec: StudySpec) -> Path:
    """The default dashboard of a study: ``ablation.yaml`` for an ablation, else ``study.yaml``."""
    return (
        ABLATION_DASHBOARD if getattr(spec, "kind", "search") == "ablation" else DEFAULT_DASHBOARD
    )


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
    keep = ("finished", "stopped") if panel.stopped else ("finished",)
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
    top = sorted(rho, key=lambda k: abs(rho[k]), reverse=True)[: panel.top_n]
    for i, key in enumerate(top):  # the key's name above its bar: long dotted keys stay legible
        colour = _COLOUR["finished"] if rho[key] >= 0 else _COLOUR["failed"]
        ax.barh(i, abs(rho[key]), height=0.4, color=colour)
        ax.text(0, i - 0.27, f"{key}  ({rho[key]:+.2f})", fontsize=7.5, va="bottom")
    ax.set(xlim=(0, 1), ylim=(len(top) - 0.5, -0.9), yticks=[])
    ax.set_xlabel(f"|Spearman ρ| over {len(y)} trials (blue +, red −)\nnot a causal importance")
    ax.grid(axis="x", alpha=0.3)
    return fig


# ---- optuna panels -------------------------------------------------------------------------------
def class_study(
    data: DashboardData, cls: str, *, metric: str | None = None, include_stopped: bool = False
) -> optuna.Study:
    """An in-memory Optuna study of one class's trials, in start order, valued by final ``metric``.

    Finished trials (and stopped ones with ``include_stopped``, at their last reported value);
    distributions from ``data.space``. MLflow params are strings: each is turned back into its
    distribution's type (categorical: the choice whose text it is; list choices as text). A trial
    with no final value or a value outside its distribution (another search space) is left out.
    """
    import optuna

    metric = metric or data.metric
    keep = ("finished", "stopped") if include_stopped else ("finished",)
    trials = _class_trials(data, cls)
    trials = trials[trials["status"].isin(keep)]
    final = _final(data, metric)
    dists = _distributions(data.space) if data.space is not None else {}
    direction = "maximize" if data.mode == "max" else "minimize"
    with _quiet_optuna():
        study = optuna.create_study(direction=direction, study_name=f"{data.study}/{cls}")
        for run_id, config in zip(trials["run_id"], trials["config"]):
            value = final.get(run_id, math.nan)
            if not math.isfinite(value):
                continue
            try:
                params = {
                    k: _param_value(v, dists[k])
                    for k, v in (config or {}).items()
                    if k in dists and v is not None
                }
                frozen = optuna.trial.create_trial(
                    params=params,
                    distributions={k: dists[k] for k in params},
                    value=float(value),
                    user_attrs={"run_id": run_id},
                )
            except ValueError:  # not in this space's distributions
                continue
            study.add_trial(frozen)
    return study


def param_importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importances (seed 0) of the study's params, most important first.

    Raises:
        ValueError: fewer than 2 trials, or neither the values nor any param vary.
    """
    import optuna

    trials = study.trials
    keys = {k for t in trials for k in t.params}
    varying = [k for k in keys if len({t.params.get(k) for t in trials}) > 1]
    if len(trials) < 2 or len({t.value for t in trials}) < 2 or not varying:
        raise ValueError(
            f"fANOVA needs 2 or more trials whose values and params vary (have {len(trials)})"
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    try:
        with _quiet_optuna():
            return optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"fANOVA: {exc}") from None


def _optuna_history(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    study, why = _optuna_study(data, panel, cls, need=1)
    if study is None:
        return _note(*plt.subplots(figsize=(4, 3)), why)
    from optuna.visualization.matplotlib import plot_optimization_history

    metric = panel.metric or data.metric
    ax = _draw(lambda: plot_optimization_history(study, target_name=metric))
    if isinstance(ax, str):
        return _note(*plt.subplots(figsize=(4, 3)), ax)
    ax.set_xlabel(f"trial ({_trials_word(panel)}, in start order)")
    ax.legend(loc="best", fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _resize(_plain(ax), 4.6, 3.4)


def _optuna_importance(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    study, why = _optuna_study(data, panel, cls, need=2)
    if study is not None:
        try:
            param_importances(study)  # the same evaluator as the plot: a clear note if it can't
        except ValueError as exc:
            study, why = None, f"{exc}"
    if study is None:
        return _note(*plt.subplots(figsize=(4, 3)), _wrap(why))
    import optuna
    from optuna.visualization.matplotlib import plot_param_importances

    metric = panel.metric or data.metric
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    ax = _draw(lambda: plot_param_importances(study, evaluator=evaluator, target_name=metric))
    if isinstance(ax, str):
        return _note(*plt.subplots(figsize=(4, 3)), ax)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.set(xlabel=f"fANOVA importance over {len(study.trials)} {_trials_word(panel)} trials")
    ax.set(ylabel="")
    for text in ax.texts:  # the value beside each bar
        text.set_fontsize(7)
    return _resize(_plain(ax), 4.6, 1.2 + 0.24 * len(ax.get_yticks()))


def _optuna_parallel(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    study, why = _optuna_study(data, panel, cls, need=2)
    if study is None:
        return _note(*plt.subplots(figsize=(4, 3)), why)
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    searched = list(dict.fromkeys(k for t in study.trials for k in t.params))
    if panel.params:
        params = [k for k in panel.params if k in searched]
        if not params:
            return _note(*plt.subplots(figsize=(4, 3)), "none of params\nsearched for this class")
    else:
        try:
            params = list(param_importances(study))[: panel.top_n]
        except ValueError:  # no importances: the first varying keys
            params = [k for k in searched if len({t.params.get(k) for t in study.trials}) > 1]
            params = (params or searched)[: panel.top_n]
    metric = panel.metric or data.metric
    ax = _draw(lambda: plot_parallel_coordinate(study, params=params, target_name=metric))
    if isinstance(ax, str):
        return _note(*plt.subplots(figsize=(4, 3)), ax)
    for other in ax.figure.axes:  # the objective's, one per param, the colour bar's
        _plain(other)
    fig = ax.figure  # twin axes per param and a colour bar: a fixed layout, not a constrained one
    fig.set_size_inches(min(max(4.6, 1.6 + 0.9 * len(params)), 7.0), 3.6)
    fig.subplots_adjust(left=0.1, right=0.84, bottom=0.28, top=0.95)
    return fig


def _optuna_study(
    data: DashboardData, panel: Panel, cls: str, *, need: int
) -> tuple[optuna.Study | None, str]:
    """The class's study, or None and why (ablation, no search space, too few trials)."""
    if data.ablation is not None:
        return None, "ablation study: no search\n(see the variant panels)"
    if data.space is None:
        return None, "no search space"
    study = class_study(data, cls, metric=panel.metric, include_stopped=panel.stopped)
    if len(study.trials) < need:
        have = len(study.trials)
        return None, f"{have} {_trials_word(panel)} trial{'s' * (have != 1)}\n(need {need} or more)"
    return study, ""


def _trials_word(panel: Panel) -> str:
    return "finished or stopped" if panel.stopped else "finished"


def _distributions(space: SearchSpace) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for d in space.dims:
        if d.kind == "categorical":
            out[d.key] = CategoricalDistribution(tuple(_choice(c) for c in d.choices))
        elif d.kind == "int":
            out[d.key] = IntDistribution(int(d.low), int(d.high))
        else:
            out[d.key] = FloatDistribution(d.low, d.high, log=d.kind == "logfloat")
    return out


def _choice(value: Any) -> Any:
    """A categorical choice as Optuna takes it: a tuple (a list in YAML) as its MLflow text."""
    return str(list(value)) if isinstance(value, (tuple, list)) else value


def _param_value(text: Any, dist: Any) -> Any:
    """An MLflow param (a string) as a value of ``dist``; ValueError when it isn't one."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        for c in dist.choices:
            if str(c) == str(text):
                return c
        number = _number(text)
        for c in dist.choices:  # "24.0" for the choice 24
            if isinstance(number, float) and isinstance(c, (int, float)) and c == number:
                return c
        raise ValueError(f"{text!r} is not one of {dist.choices}")
    value = float(text)
    if isinstance(dist, IntDistribution):
        if value != int(value):
            raise ValueError(f"{text!r} is not an integer")
        value = int(value)
    if not dist.low <= value <= dist.high:
        raise ValueError(f"{text!r} is outside [{dist.low}, {dist.high}]")
    return value


def _draw(plot: Callable[[], plt.Axes]) -> plt.Axes | str:
    """An Optuna plot's axes, or a note's text when the (experimental) plot fails: one panel must
    not cost the study its dashboard."""
    before = set(plt.get_fignums())
    try:
        with _quiet_optuna():
            return plot()
    except Exception as exc:
        log.warning("optuna plot failed: %s", exc, exc_info=True)
        for num in set(plt.get_fignums()) - before:  # the failed plot's figure
            plt.close(num)
        return _wrap(f"Optuna could not draw this: {exc}")


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's info logs and its plots' warnings off; their ggplot style kept local."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # matplotlib's, e.g. on a param with one value (singular limits) or no legend entries
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _plain(ax: plt.Axes) -> plt.Figure:
    """No title (the panel has its caption) and the dashboard's small text, on an Optuna plot."""
    for loc in ("left", "center", "right"):
        ax.set_title("", loc=loc)
    ax.tick_params(which="both", labelsize=7)
    ax.xaxis.label.set_size(8)
    ax.yaxis.label.set_size(8)
    return ax.figure


def _resize(fig: plt.Figure, width: float, height: float) -> plt.Figure:
    fig.set_size_inches(width, height)
    fig.set_layout_engine("constrained")
    return fig


def _wrap(text: str, width: int = 38) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


# ---- ASHA budget ---------------------------------------------------------------------------------
def _budget(data: DashboardData, cls: str) -> tuple[int, int]:
    """(epochs used, epochs the class's trials would have used had none stopped early)."""
    trials = _class_trials(data, cls)
    full = data.max_epochs or int(trials["epochs"].max() if len(trials) else 0)
    return int(trials["epochs"].sum()) if len(trials) else 0, full * len(trials)


def _budget_caption(data: DashboardData, cls: str) -> str:
    """The share of the full budget the class's trials used (epochs: in the chart's x label)."""
    used, full = _budget(data, cls)
    return f" · {used / full:.0%} of the full budget" if full else ""


def _asha_budget(data: DashboardData, panel: Panel, cls: str) -> plt.Figure:
    trials = _class_trials(data, cls)
    n = len(trials)
    fig, ax = plt.subplots(figsize=(4.6, max(2.4, 1.0 + 0.22 * n)), layout="constrained")
    if not n:
        return _note(fig, ax, "no trials yet")
    full = data.max_epochs or int(trials["epochs"].max())
    status = [s if s in _COLOUR else "running" for s in trials["status"]]
    ax.barh(range(n), trials["epochs"], color=[_COLOUR[s] for s in status], height=0.7)
    names = trials["trial_name"] if "trial_name" in trials else trials["config_id"]
    labels = [("★ " if b else "") + str(t) for t, b in zip(names, trials["best"])]
    ax.set_yticks(range(n), labels, fontsize=7)
    for tick, best in zip(ax.get_yticklabels(), trials["best"]):
        tick.set_color(_BEST if best else "#212529")
    ax.axvline(full, color="#495057", ls="--", lw=1)
    ax.text(full, -0.7, f" max {full}", fontsize=7, va="bottom", color="#495057")
    used, budget = _budget(data, cls)
    ax.set(xlim=(0, full * 1.12 if full else 1), ylim=(n - 0.5, -1.1))
    ax.set_xlabel(f"epochs trained: {used} of {budget} = trials x max epochs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
    shown = [s for s in _STATUSES if s in status]
    ax.legend(
        handles=[Patch(color=_COLOUR[s], label=s) for s in shown],
        fontsize=7,
        ncols=len(shown),
        loc="lower left",
        bbox_to_anchor=(0, 1),
        frameon=False,
    )
    return fig


_PLOTS: dict[str, Callable[[DashboardData, Panel, str], plt.Figure]] = {
    "curves": _curves,
    "scatter": _scatter,
    "importance": _importance,
    "optuna_history": _optuna_history,
    "optuna_importance": _optuna_importance,
    "optuna_parallel": _optuna_parallel,
    "asha_budget": _asha_budget,
}


# ---- heatmaps ------------------------------------------------------------------------------------
def _gallery_html(data: DashboardData, panel: Panel) -> str:
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


# ---- ablation ------------------------------------------------------------------------------------
def _ablation_rows(data: DashboardData, panel: Panel) -> tuple[pd.DataFrame, str]:
    """The table's rows of the panel's metric, scope ``all`` first; or empty and why."""
    metric = panel.metric or data.metric
    table = data.ablation
    if table is None:
        return pd.DataFrame(), "not an ablation study"
    rows = table[table["metric"] == metric]
    if rows.empty:
        return rows, f"no {metric} in the ablation results"
    order = {s: i for i, s in enumerate(["all", *data.classes])}
    rows = rows.assign(_order=rows["scope"].map(order).fillna(len(order)))
    return rows.sort_values("_order", kind="stable").drop(columns="_order"), ""


def _variants(rows: pd.DataFrame) -> list[str]:
    """Variant names, the baseline first."""
    names = list(dict.fromkeys(rows["variant"]))
    base = set(rows.loc[rows["verdict"] == "baseline", "variant"])
    return sorted(names, key=lambda v: v not in base)


def _variant_bars(data: DashboardData, panel: Panel) -> plt.Figure:
    rows, why = _ablation_rows(data, panel)
    if rows.empty:
        return _note(*plt.subplots(figsize=(5, 2.5)), why)
    metric = panel.metric or data.metric
    scopes, variants = list(dict.fromkeys(rows["scope"])), _variants(rows)
    base = set(rows.loc[rows["verdict"] == "baseline", "variant"])
    colour = dict(zip([v for v in variants if v not in base], _VARIANTS * len(variants)))
    colour.update({v: _BEST for v in base})
    cols = min(len(scopes), 4)
    nrows = math.ceil(len(scopes) / cols)
    width = max(2.4 + 0.35 * len(variants), 2.8)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(width * cols, 2.6 * nrows + 0.5), layout="constrained", squeeze=False
    )
    for ax in axes.flat[len(scopes) :]:
        ax.axis("off")
    for ax, scope in zip(axes.flat, scopes):
        sub = rows[rows["scope"] == scope].set_index("variant").reindex(variants)
        mean = sub["mean"].astype(float)
        err = [
            (mean - sub["ci_low"]).clip(lower=0).fillna(0),
            (sub["ci_high"] - mean).clip(lower=0).fillna(0),
        ]
        x = range(len(variants))
        ax.bar(
            x,
            mean.fillna(0),
            yerr=err,
            capsize=3,
            color=[colour[v] for v in variants],
            edgecolor="#212529",
            linewidth=[1.5 if v in base else 0 for v in variants],
            error_kw={"elinewidth": 1, "ecolor": "#343a40"},
        )
        lo = pd.concat([sub["ci_low"], mean]).min()
        hi = pd.concat([sub["ci_high"], mean]).max()
        if pd.notna(lo) and pd.notna(hi):
            pad = max(0.15 * (hi - lo), 5e-3)
            ax.set_ylim(lo - pad, hi + pad)  # zoomed: bars start at the axis, not at 0
        n = sub["n"].max()
        ax.set_title(f"{'all classes' if scope == 'all' else scope} (n={n})", fontsize=9)
        ax.set_xticks(list(x), [v for v in variants], rotation=30, ha="right", fontsize=7.5)
        ax.tick_params(axis="y", labelsize=7.5)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].set_ylabel(metric, fontsize=8)
    fig.legend(
        handles=[
            Patch(
                color=colour[v], label=v + (" (baseline)" if v in base and v != "baseline" else "")
            )
            for v in variants
        ],
        loc="outside upper left",
        ncols=min(len(variants), 6),
        fontsize=8,
        frameon=False,
    )
    return fig


def _forest(data: DashboardData, panel: Panel) -> plt.Figure:
    rows, why = _ablation_rows(data, panel)
    rows = rows[rows["verdict"] != "baseline"] if len(rows) else rows
    if rows.empty:
        return _note(*plt.subplots(figsize=(5, 2.5)), why or "no variant besides the baseline")
    metric = panel.metric or data.metric
    n = len(rows)
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.3 * n), layout="constrained")
    labels = []
    for y, r in enumerate(rows.itertuples(index=False)):
        pooled = r.scope == "all"
        colour = _VERDICT.get(r.verdict, _VERDICT["no detectable difference"])
        alpha = 1.0 if pooled else 0.45
        labels.append(r.variant if pooled else f"{r.variant} · {r.scope}")
        if pd.notna(r.diff):
            lo, hi = r.diff - r.diff_ci_low, r.diff_ci_high - r.diff
            ax.errorbar(
                r.diff,
                y,
                xerr=[[max(lo, 0) if pd.notna(lo) else 0], [max(hi, 0) if pd.notna(hi) else 0]],
                fmt="D" if pooled else "o",
                ms=6 if pooled else 4,
                color=colour,
                alpha=alpha,
                capsize=3,
                lw=2 if pooled else 1.2,
            )
        ax.text(
            1.01,
            y,
            f"p_holm {p_value(r.p_holm)} ({r.test or 'no test'}, {r.pairs} pairs)",
            transform=ax.get_yaxis_transform(),
            va="center",
            fontsize=7,
            color="#212529" if pooled else "#868e96",
        )
    ax.axvline(0, color="#212529", lw=1)
    pooled_rows = int((rows["scope"] == "all").sum())
    if 0 < pooled_rows < n:
        ax.axhline(pooled_rows - 0.5, color="#ced4da", lw=1)
    ax.set_yticks(range(n), labels, fontsize=7.5)
    for tick, scope in zip(ax.get_yticklabels(), rows["scope"]):
        if scope == "all":
            tick.set_fontweight("bold")
        else:
            tick.set_color("#868e96")
    ax.set_ylim(n - 0.5, -0.5)
    better = "right" if data.mode == "max" else "left"
    ax.set_xlabel(f"{metric}: variant − baseline (mean paired difference; {better} = better)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(
        handles=[Patch(color=c, label=v) for v, c in _VERDICT.items()],
        loc="lower left",
        bbox_to_anchor=(0, 1),
        ncols=3,
        fontsize=7.5,
        frameon=False,
    )
    return fig


_WIDE_PLOTS: dict[str, Callable[[DashboardData, Panel], plt.Figure]] = {
    "variant_bars": _variant_bars,
    "forest": _forest,
}


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


def _png(fig: plt.Figure, *, natural: bool = False) -> str:
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
h3{margin:12px 0 6px;font-size:15px} h3 .meta{font-weight:400;font-size:12px}
.note{color:#868e96;margin:0 0 8px}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:10px}
.gallery figcaption{font-weight:400;font-size:11px;color:#495057}
@media (max-width:1000px){.row{grid-template-columns:1fr 1fr!important}}
"""
