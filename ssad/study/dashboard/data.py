"""What a dashboard's panels draw, read from the study's MLflow runs (:func:`collect`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ssad.study.dashboard.spec import HISTORY, Dashboard
from ssad.study.results.leaderboard import leaderboard, trials_frame
from ssad.study.spec import SearchSpace, StudySpec
from ssad.study.tracking import TRACKING_ERRORS, StudyTracker

__all__ = ["HEATMAP_DIR", "DashboardData", "best_heatmaps", "collect", "number"]

HEATMAP_DIR = "val/heatmaps"  # a trial run's heatmap PNGs (ssad.evaluate.write_artifacts)


@dataclass(frozen=True)
class DashboardData:
    """What the panels draw, read from MLflow by :func:`collect`.

    ``trials``: one row per trial run (:func:`trials_frame` columns plus ``best``: in its class's
    best configuration). ``params``: run_id × searched key, numeric strings parsed to float.
    ``history``: long frame (run_id, metric, step, value) of the metrics the panels need.
    ``space``: the searched distributions (optuna panels). ``max_epochs``: a trial's full budget.
    ``heatmaps``: class → (file name, PNG bytes) of its best trial run (heatmap_gallery).
    ``ablation``: an ablation study's results table (``ssad.study.results.ablation.results_table``: one
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
    trials = _trials(tracker, spec, board)
    params = pd.DataFrame([{k: number(v) for k, v in c.items()} for c in trials["config"]])
    params.index = trials["run_id"]
    needed = {p.metric or spec.metric for p in dashboard.panels if p.type in HISTORY}
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
        from ssad.study.results.ablation import results_table

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


def _trials(tracker: StudyTracker, spec: StudySpec, board: pd.DataFrame) -> pd.DataFrame:
    """The study's trial runs, ``best`` marking those in their class's best configuration."""
    trials = trials_frame(tracker, spec)
    if trials.empty:
        trials = pd.DataFrame(columns=["run_id", "class", "config_id", "status", "config"])
    best = set(zip(board["class"], board["best_run_id"]))
    keys = trials[["class", "run_id", "config_id"]].itertuples(index=False)
    best_cfg = {(c, cid) for c, rid, cid in keys if (c, rid) in best}
    trials["best"] = [(c, cid) in best_cfg for c, cid in zip(trials["class"], trials["config_id"])]
    return trials


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


def number(value: Any) -> Any:
    """An MLflow param (a string) as a float where it is one, else unchanged."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
