"""Per-class leaderboard of a study, read back from MLflow (pandas)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ssad.study.results.report import config_changes, parse_value
from ssad.study.spec import StudySpec
from ssad.study.tracking import TAG_CLASS, TAG_STATUS, TAG_VARIANT, StudyTracker

__all__ = [
    "BOARD_COLUMNS",
    "best_configs",
    "comparable",
    "leaderboard",
    "summary_artifacts",
    "trials_frame",
    "write_best_configs",
]

TAG_SUMMARY = "ssad.summary"  # the trial counts the parent run's summary metrics were logged for
# The columns the console shows ({metric}: the study's metric); best_config is cut to fit.
BOARD_COLUMNS = (
    "class",
    "best_{metric}",
    "trials",
    "finished",
    "stopped",
    "failed",
    "compute_s",
    "best_config",
)


def trials_frame(
    tracker: StudyTracker, spec: StudySpec, *, metrics: list[str] | None = None
) -> pd.DataFrame:
    """One row per trial run: class, status, the study's metric (and ``metrics``: final values),
    seconds, searched params."""
    rows = []
    for run in tracker.trial_runs():
        tags, m = run.data.tags, run.data.metrics
        searched = [k for k in tags.get("ssad.searched", "").split(",") if k]
        end = run.info.end_time or run.info.start_time
        rows.append(
            {
                "run_id": run.info.run_id,
                "trial_id": tags.get("ssad.trial_id"),
                "trial_name": tags.get("ssad.trial_name") or run.info.run_name,
                "class": tags.get(TAG_CLASS),
                "config_id": tags.get("ssad.config_id"),
                "variant": tags.get(TAG_VARIANT, ""),
                "seed": tags.get("ssad.seed"),
                "status": tags.get(TAG_STATUS, "running"),
                "epochs": int(m.get("training_iteration", 0)),
                **{k: m.get(k, math.nan) for k in dict.fromkeys([spec.metric, *(metrics or [])])},
                "seconds": (end - run.info.start_time) / 1000.0,
                "config": {k: run.data.params.get(k) for k in searched},
                "params": tags.get("ssad.params", "{}"),
            }
        )
    return pd.DataFrame(rows)


def comparable(sub: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The trials of one class that may be compared with each other on ``metric``.

    Finished trials, when the class has any; else (a study still running or cut short) the
    trials that reached the deepest epoch any trial of the class reached, all judged at that
    same epoch. A trial stopped early at a lower rung never competes with one that ran longer:
    its early value is not comparable with a later epoch's. Failed trials never compete.
    """
    sub = sub[sub[metric].notna() & (sub["status"] != "failed")]
    if sub.empty:
        return sub
    done = sub[sub["status"] == "finished"]
    return done if len(done) else sub[sub["epochs"] == sub["epochs"].max()]


def best_configs(df: pd.DataFrame, spec: StudySpec) -> dict[str, str]:
    """class → its best configuration id (mean over seeds of comparable trials)."""
    out = {}
    for cls in spec.classes:
        sub = comparable(df[df["class"] == cls], spec.metric) if len(df) else df
        if len(sub):
            means = sub.groupby("config_id")[spec.metric].mean()
            out[cls] = str(means.idxmax() if spec.mode == "max" else means.idxmin())
    return out


def leaderboard(tracker: StudyTracker, spec: StudySpec) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per class: best configuration (mean over its seeds, among comparable trials — see
    :func:`comparable`), trials done/stopped/failed, compute."""
    df = trials_frame(tracker, spec)
    best_ids = best_configs(df, spec)
    rows = []
    for cls in spec.classes:
        sub = df[df["class"] == cls] if len(df) else df
        row: dict[str, Any] = {"class": cls, "trials": len(sub)}
        for status in ("finished", "stopped", "failed"):
            row[status] = int((sub["status"] == status).sum()) if len(sub) else 0
        row["compute_s"] = float(sub["seconds"].sum()) if len(sub) else 0.0
        best = math.nan
        config: dict[str, Any] = {}
        run_id = ""
        cid = best_ids.get(cls)
        if cid is not None:
            pool = comparable(sub, spec.metric)
            picks = pool[pool["config_id"] == cid]
            best = float(picks[spec.metric].mean())
            pick = picks.iloc[0]
            config, run_id = pick["config"], pick["run_id"]
        row[f"best_{spec.metric}"] = best
        row["best_run_id"] = run_id
        row["best_config"] = json.dumps(config, sort_keys=True)
        rows.append(row)
    board = pd.DataFrame(rows)
    stats = {
        "trials": len(df),
        "finished": int((df["status"] == "finished").sum()) if len(df) else 0,
        "stopped": int((df["status"] == "stopped").sum()) if len(df) else 0,
        "failed": int((df["status"] == "failed").sum()) if len(df) else 0,
        "trial_seconds": float(df["seconds"].sum()) if len(df) else 0.0,
    }
    return board, stats


def write_best_configs(board: pd.DataFrame, spec: StudySpec, path: Path | None = None) -> Path:
    """Each class's best configuration in full (the base config with the best trial's searched
    values, by dotted key), its metric, run id and changes from the base, as YAML at ``path``
    (default: ``best_configs.yaml`` in the study's Tune folder). Returns the path."""
    path = path or spec.storage_path / spec.name / "best_configs.yaml"
    base = spec.base.flat()
    out: dict[str, Any] = {}
    for _, row in board.iterrows():
        searched = json.loads(row["best_config"]) if row.get("best_config") else {}
        changes = config_changes(searched, base)
        value = row[f"best_{spec.metric}"]
        out[str(row["class"])] = {
            f"best_{spec.metric}": None if math.isnan(value) else float(value),
            "run_id": row.get("best_run_id") or None,
            "changed_from_base": changes,
            "config": {**base, **{k: parse_value(v) for k, v in searched.items()}},
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(out, sort_keys=False))
    return path


def summary_artifacts(
    tracker: StudyTracker, parent_id: str, board: pd.DataFrame, stats: dict[str, Any]
) -> None:
    """Leaderboard CSV/HTML and summary metrics on the study's parent run, then close it.

    The metrics go with a tag holding the trial counts they summarise, in one batch: a driver
    killed after it and before the close logs them again on ``--resume`` only if the counts
    changed (a resumed study that re-ran failed trials), never the same summary twice.
    """
    with tempfile.TemporaryDirectory() as tmp:
        board.to_csv(Path(tmp) / "leaderboard.csv", index=False)
        (Path(tmp) / "leaderboard.html").write_text(board.to_html(index=False))
        (Path(tmp) / "summary.json").write_text(json.dumps(stats, indent=2))
        tracker.log_artifacts(parent_id, Path(tmp))
    counts = {k: v for k, v in stats.items() if k not in ("wall_s", "parallel_efficiency")}
    key = json.dumps(counts, sort_keys=True, default=str)
    if tracker.run_tags(parent_id).get(TAG_SUMMARY) != key:
        metrics = {k: float(v) for k, v in stats.items()}
        tracker.log_metrics(parent_id, metrics, tags={TAG_SUMMARY: key})
    tracker.close(parent_id)
