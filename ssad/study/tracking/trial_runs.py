"""The one writer of trial runs, for the driver's Tune callback and for ``ssad study sync``.

A trial's run holds its params (the resolved config), tags (class, config id, seed, dataset
fingerprint, ...), every epoch's metrics, its closing status (``finished``/``stopped``/``failed``)
and closing tags, and its final artifacts (the last checkpoint without the training state and
the saved model; a failed trial's ``error.txt``). The callback writes it as Tune reports
(:meth:`TrialRunWriter.log_epoch`, :meth:`TrialRunWriter.close`); ``ssad study sync`` writes what
the store missed from Tune's storage (:meth:`TrialRunWriter.fill`, then the same ``close``).

One rule says when a run is already closed (:func:`already_closed`), so writing the same ended
trial twice, from either path, changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ssad.study.results.report import trial_name
from ssad.study.tracking.artifacts import final_artifacts
from ssad.study.tracking.names import TAG_CLASS, TAG_STATUS, TAG_VARIANT
from ssad.study.tracking.tracker import StudyTracker
from ssad.study.tracking.views import save_runs_view
from ssad.study.tune.trial import resolve_trial_config
from ssad.train import scheduled_epochs

__all__ = [
    "LOGGED",
    "TrialRunWriter",
    "already_closed",
    "epoch_metrics",
    "error_text",
    "failures",
    "result_start_ms",
]

LOGGED = {
    "loss",
    "accuracy",
    "lr",
    "seconds",
    "bank_size",
    "phase",
    "training_iteration",
    "time_total_s",
}
ERROR_TAG_CHARS = 4000  # the end of the traceback (MLflow tag values are limited)
ENDED_WELL = ("finished", "stopped")
# What tells two closings apart: the status and a failed trial's error. (Not the checkpoint's
# path, which Tune's storage and the driver may spell differently, nor the failure count, which
# a retry and ``ssad study sync`` tag on an open run too.)
CLOSING_KEYS = (TAG_STATUS, "ssad.error")


def epoch_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """What of a Tune result is logged as the epoch's metrics."""
    return {k: v for k, v in result.items() if k in LOGGED or k.startswith("val_")}


def result_start_ms(result: dict[str, Any]) -> int | None:
    """When the trial of a Tune result started (ms), from its timestamp and total time."""
    if "timestamp" not in result:
        return None
    return int((float(result["timestamp"]) - float(result.get("time_total_s", 0.0))) * 1000)


def error_text(trial) -> str:
    """The error Tune recorded for a trial (its ``error.txt``), or ``""``."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    try:
        err = trial.get_error()
    except Exception:
        err = None
    return "" if err is None else str(err)


def failures(trial) -> int:
    """How many attempts of a trial failed (Tune's count)."""
    meta = getattr(trial, "run_metadata", None)
    return int(getattr(meta, "num_failures", 0) or 0)


def already_closed(closed: dict[str, str] | None, closing: dict[str, str]) -> bool:
    """Whether a run with tags ``closed`` (None: open) already records ``closing``.

    The one rule for both paths (callback and sync). An open run (MLflow shows it running, or it has no
    ``ssad.status``: a closing cut short) is not closed. A run that ended well
    (``finished``/``stopped``) is final: a driver killed after a trial ended but before Tune's
    snapshot recorded it replays the trial, and the replay adds nothing (closing it again would
    move its end time past the downtime). A run closed as ``failed`` is closed again only by a
    different closing: the trial, resumed, ended otherwise or failed with another error.
    """
    if closed is None:
        return False
    if closed.get(TAG_STATUS) in ENDED_WELL:
        return True
    return all(closed.get(k) == closing.get(k) for k in CLOSING_KEYS)


class TrialRunWriter:
    """Writes the runs of one launch's trials (``trial``: a Tune ``Trial``, or anything with its
    ``trial_id``, ``config``, ``checkpoint``, ``run_metadata`` and error).

    ``base``: the study's base config (dict); ``prints``: dataset fingerprints by class;
    ``sha``: the commit tagged on the runs.
    """

    def __init__(
        self,
        tracker: StudyTracker,
        parent_id: str,
        base: dict[str, Any],
        prints: dict[str, str],
        sha: str,
    ) -> None:
        self.tracker = tracker
        self.parent_id = parent_id
        self.base, self.prints, self.sha = base, prints, sha
        self.runs: dict[str, str] = {}  # trial id -> run id, as found or created
        self.nodes: dict[str, str] = {}  # trial id -> the node it was last tagged with

    @classmethod
    def from_record(cls, record: dict[str, Any], *, fail_fast: bool, sha: str) -> TrialRunWriter:
        """The writer of a study record (:mod:`ssad.study.record`): where to log, the base
        config, the dataset fingerprints. ``fail_fast``: see :class:`StudyTracker`."""
        tracker = StudyTracker(
            record["tracking_uri"],
            record["experiment"],
            record["study"],
            launch_id=record.get("launch_id"),
            fail_fast=fail_fast,
        )
        return cls(tracker, record["parent_id"], record["base"], record.get("prints", {}), sha)

    # ---- what a trial's run holds ----------------------------------------------------------
    def tags(self, trial) -> dict[str, str]:
        cfg = resolve_trial_config(self.base, trial.config)
        tc = trial.config
        return {
            TAG_CLASS: tc["class_name"],
            "ssad.trial_name": trial_name(trial),  # also the run's name
            "ssad.seed": str(cfg.train.seed),
            "ssad.config_id": tc["config_id"],
            "ssad.git_sha": self.sha,
            "ssad.dataset_fingerprint": self.prints.get(tc["class_name"], ""),
            "ssad.searched": ",".join(sorted(tc["params"])),
            "ssad.params": json.dumps(tc["params"], sort_keys=True),
            **({TAG_VARIANT: tc["variant"]} if "variant" in tc else {}),
        }

    def params(self, trial) -> dict[str, Any]:
        return resolve_trial_config(self.base, trial.config).flat()

    def closing_status(self, trial, epochs: int) -> str:
        """``finished`` when the trial ran its own schedule (an ablation's variants may train
        for fewer epochs), else ``stopped`` (by the scheduler)."""
        cfg = resolve_trial_config(self.base, trial.config)
        return "finished" if epochs >= scheduled_epochs(cfg) else "stopped"

    def closing(self, trial, status: str) -> tuple[dict[str, str], str | None]:
        """A closing's tags besides its status (the checkpoint; a failed trial's error and
        failure count) and a failed trial's whole error text (else None)."""
        tags: dict[str, str] = {}
        if trial.checkpoint is not None:
            tags["ssad.checkpoint"] = str(trial.checkpoint.path)
        if status != "failed":
            return tags, None
        text = error_text(trial) or "failed (Tune recorded no error text)"
        tags["ssad.error"] = text[-ERROR_TAG_CHARS:]
        tags["ssad.failures"] = str(failures(trial))
        return tags, text

    # ---- writing ---------------------------------------------------------------------------
    def open(self, trial, start_time: int | None = None) -> str:
        """The trial's run, found by its trial id or created with its tags and params.

        ``start_time`` (ms): of a run created after the fact. This writer's first run saves the
        runs table's trials view on the experiment.
        """
        if trial.trial_id not in self.runs:
            if not self.runs:
                save_runs_view(self.tracker.client, self.tracker.experiment_id)
            self.runs[trial.trial_id] = self.tracker.trial_run(
                parent_id=self.parent_id,
                trial_id=trial.trial_id,
                params=self.params(trial),
                tags=self.tags(trial),
                start_time=start_time,
            )
        return self.runs[trial.trial_id]

    def log_epoch(self, trial, result: dict[str, Any]) -> bool:
        """One Tune result: its epoch's metrics (a step already logged is not logged again) and
        the node it ran on when that changed; returns whether the epoch was logged."""
        run_id = self.open(trial, result_start_ms(result))
        step = int(result["training_iteration"])
        logged = self.tracker.log_step(run_id, epoch_metrics(result), step)
        if "node_id" in result and self.nodes.get(trial.trial_id) != result["node_id"]:
            self.tracker.set_tags(run_id, {"ssad.node_id": result["node_id"]})
            self.nodes[trial.trial_id] = result["node_id"]
        return logged

    def set_failures(self, trial) -> None:
        """Tag the run with the trial's failed attempts so far (a retry)."""
        self.tracker.set_tags(self.open(trial), {"ssad.failures": str(failures(trial))})

    def fill(self, trial, run, rows: list[dict[str, Any]]) -> tuple[int, int]:
        """What ``run`` (the trial's) lacks of Tune's record: params, epochs (``rows``: the
        trial's results, one per epoch), the node it ran on last and its failure count.

        Returns the params and the epochs logged; a (key, step) the run has is never logged
        again.
        """
        run_id = run.info.run_id
        self.runs[trial.trial_id] = run_id
        params = self.tracker.log_missing_params(run_id, self.params(trial))
        epochs = [
            (
                int(r["training_iteration"]),
                epoch_metrics(r),
                int(float(r.get("timestamp", 0)) * 1000),
            )
            for r in rows
        ]
        logged = self.tracker.fill_steps(run_id, epochs)
        have, extra = dict(run.data.tags), {}
        node = next((r["node_id"] for r in reversed(rows) if "node_id" in r), None)
        if node is not None and have.get("ssad.node_id") != node:
            extra["ssad.node_id"] = node  # where it ran last, as log_epoch tags it
        count = failures(trial)
        if count and have.get("ssad.failures") != str(count):
            extra["ssad.failures"] = str(count)
        if extra:
            self.tracker.set_tags(run_id, extra)
        return params, logged

    def close(self, trial, status: str, *, end_time: int | None = None) -> int | None:
        """Close the trial's run as ``status`` with its closing tags and final artifacts, unless
        it is already closed (:func:`already_closed`); returns the artifact files uploaded, or
        None when the run was left as it was.

        A first closing uploads the files the run lacks (an earlier closing cut short may have
        uploaded some); a closing that replaces an earlier one uploads them all. ``end_time``
        (ms): of a run closed after the fact (now when None).
        """
        run_id = self.open(trial)
        tags, error = self.closing(trial, status)
        closed = self.tracker.run_closing(run_id)
        if already_closed(closed, {TAG_STATUS: status, **tags}):
            return None
        uploaded = 0
        with final_artifacts(trial.checkpoint, error) as folder:
            if folder is not None:
                replace = closed is not None
                uploaded = self.tracker.upload_missing(run_id, folder, replace=replace)
            self.tracker.finish(run_id, status=status, tags=tags, end_time=end_time)
        return uploaded
