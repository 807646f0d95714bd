"""A trial's run, primitive by primitive: found or created, epochs, params, artifacts, closing.

These are :class:`~ssad.study.tracking.tracker.StudyTracker`'s methods for trial runs (a mixin:
they use the tracker's ``client``, ``experiment_id``, ``study``, ``current_launch`` and
``_find``). What a trial's run holds, and when it is closed, is decided by the one writer of trial
runs, :class:`ssad.study.tracking.trial_runs.TrialRunWriter`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param

from ssad.study.tracking.names import (
    TAG_LAUNCH,
    TAG_ROLE,
    TAG_STATUS,
    TAG_STUDY,
    TAG_TRIAL,
    trial_run_name,
)

__all__ = ["TrialRunRecords"]


class TrialRunRecords:
    """The trial-run methods of a study tracker (runs found by their ``ssad.trial_id`` tag)."""

    _steps: dict[str, set[int]]  # run id -> the steps its ``loss`` has (see log_step)

    def trial_runs_of(self, trial_id: str) -> list:
        """Every run of this launch tagged with ``trial_id``, oldest first (one, or none)."""
        return self._find(
            f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_STUDY}` = '{self.study}'"
            + self._launch_filter()
        )

    def trial_run(
        self,
        *,
        parent_id: str,
        trial_id: str,
        params: dict[str, Any],
        tags: dict[str, str],
        start_time: int | None = None,
    ) -> str:
        """The nested run of a trial, found by its trial-id tag or created (params logged once).

        ``start_time`` (ms): of a run created after the fact (by ``ssad study sync``).
        """
        launch = self.current_launch()
        found = self.trial_runs_of(trial_id)
        if found:
            return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            start_time=start_time,
            run_name=trial_run_name(tags, trial_id),
            tags={
                "mlflow.parentRunId": parent_id,
                TAG_STUDY: self.study,
                TAG_ROLE: "trial",
                TAG_TRIAL: trial_id,
                **({TAG_LAUNCH: launch} if launch else {}),
                **tags,
            },
        )
        items = [Param(k, _param(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=items[i : i + 100])
        return run.info.run_id

    def log_step(self, run_id: str, metrics: dict[str, Any], step: int) -> bool:
        """Log one epoch's numeric metrics, unless this step was already logged (resume/retry);
        return whether it logged.

        A step counts as logged when the run's ``loss`` has it (a gap left while the store was
        away is filled when the step is reported again, never logged twice).
        """
        if run_id not in self._steps:
            hist = self.client.get_metric_history(run_id, "loss")
            self._steps[run_id] = {m.step for m in hist}
        if step in self._steps[run_id]:
            return False
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in _numeric(metrics).items()]
        self.client.log_batch(run_id, metrics=items)
        self._steps[run_id].add(step)
        return True

    def fill_steps(self, run_id: str, epochs: list[tuple[int, dict[str, Any], int]]) -> int:
        """Log what a run misses of ``epochs`` (step, metrics, timestamp ms), key by key.

        A (key, step) the run has is never logged again, whatever else is missing; returns the
        number of steps that got anything.
        """
        present = set(self.client.get_run(run_id).data.metrics)
        keys = {k for _, metrics, _ in epochs for k in _numeric(metrics)}
        have = {
            k: {m.step for m in self.client.get_metric_history(run_id, k)}
            for k in sorted(keys & present)
        }
        items, steps = [], set()
        for step, metrics, stamp in epochs:
            for k, v in _numeric(metrics).items():
                if step not in have.get(k, ()):
                    items.append(Metric(k, v, stamp, step))
                    have.setdefault(k, set()).add(step)
                    steps.add(step)
        for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=items[i : i + 1000])
        self._steps.pop(run_id, None)
        return len(steps)

    def log_missing_params(self, run_id: str, params: dict[str, Any]) -> int:
        """Log the params a run lacks (one already logged is never changed); returns how many."""
        have = self.client.get_run(run_id).data.params
        items = [Param(k, _param(v)) for k, v in params.items() if k not in have]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
        return len(items)

    def run_closing(self, run_id: str) -> dict[str, str] | None:
        """The tags of a closed run: MLflow shows it ended and it has an ``ssad.status``; else
        None (open, or left half-closed by a store that went away while closing it)."""
        run = self.client.get_run(run_id)
        if run.info.status == "RUNNING" or TAG_STATUS not in run.data.tags:
            return None
        return dict(run.data.tags)

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        artifacts: Path | None = None,
        tags: dict[str, str] | None = None,
        end_time: int | None = None,
    ) -> None:
        """Upload the trial's artifacts folder and close its run (``status``: finished/stopped/failed).

        ``end_time`` (ms): of a run closed after the fact (by ``ssad study sync``).
        """
        if artifacts is not None and artifacts.is_dir():
            for item in sorted(artifacts.iterdir()):
                if item.is_dir():
                    self.client.log_artifacts(run_id, str(item), artifact_path=item.name)
                else:
                    self.client.log_artifact(run_id, str(item))
        self.client.set_tag(run_id, TAG_STATUS, status)
        for k, v in (tags or {}).items():
            self.client.set_tag(run_id, k, v)
        self.client.set_terminated(
            run_id, status="FAILED" if status == "failed" else "FINISHED", end_time=end_time
        )


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a result (no bools, strings, NaN)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _param(value: Any) -> str:
    text = str(list(value) if isinstance(value, tuple) else value)
    return text[:6000]
