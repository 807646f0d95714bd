"""``ssad study sync SPEC``: log to MLflow what a study kept only in Tune's storage.

While the tracking store is away, the driver's MLflow callback (:mod:`ssad.study.tune.callbacks`)
skips its records and the trials go on; Tune's experiment folder (``<storage_path>/<name>``)
keeps everything: each trial's config, every epoch's result (``result.json``), its checkpoints
(the artifacts) and ``error.txt``. Once the store is back, :func:`sync_study` walks that folder
and, trial by trial, with the callback's writer of trial runs
(:class:`~ssad.study.tracking.trial_runs.TrialRunWriter`: tags, params, closing, artifacts):

* finds the trial's run by its ``ssad.trial_id`` tag (this launch's, from the study record), or
  creates it, dated by the trial's first result;
* logs the params it lacks, and every epoch's metrics it lacks, key by key and step by step
  (a gap is filled, a (key, step) the run has is never logged again);
* closes a trial Tune ended (``finished``/``stopped``, or ``failed`` with its error text) that the
  run does not show closed so (the writer's one rule), with the artifacts it lacks, dated by the
  trial's last result; a trial still running (a study cut short) is left open for its
  ``--resume``;

then, when every trial of a complete study has ended and the launch's parent run has no
leaderboard, logs the end-of-study records the runner would have (ablation table, dashboard,
leaderboard and summary) and closes the parent. Idempotent: a second sync logs nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssad.study.record import read_record
from ssad.study.results.report import trial_name
from ssad.study.spec import SpecError, StudySpec
from ssad.study.tracking.store import check_tracking_uri
from ssad.study.tracking.tracker import git_sha
from ssad.study.tracking.trial_runs import TrialRunWriter, result_start_ms

__all__ = ["SyncReport", "TuneTrial", "sync_study", "trial_results"]

log = logging.getLogger(__name__)

ENDED = {"TERMINATED": None, "ERROR": "failed"}  # Tune's end states (None: finished or stopped)


@dataclass
class SyncReport:
    """What one sync logged."""

    study: str
    trials: int = 0
    runs_created: int = 0
    epochs_logged: int = 0
    runs_closed: int = 0
    params_logged: int = 0
    artifacts_uploaded: int = 0
    summary_logged: bool = False
    open_trials: int = 0  # not ended in Tune (a study cut short): left open
    complete: bool = True  # every trial of the study ended: its summary can be logged
    duplicates: list[str] = field(default_factory=list)  # trials with more than one run

    @property
    def logged_anything(self) -> bool:
        return bool(
            self.runs_created
            or self.epochs_logged
            or self.runs_closed
            or self.params_logged
            or self.artifacts_uploaded
            or self.summary_logged
        )

    def line(self) -> str:
        summary = "leaderboard and summary logged" if self.summary_logged else "summary present"
        if not self.complete:
            summary = (
                f"study not complete ({self.open_trials} trials open): its summary is left to "
                "its --resume"
            )
        return (
            f"sync {self.study}: {self.trials} trials; runs created {self.runs_created}, "
            f"epochs logged {self.epochs_logged}, runs closed {self.runs_closed}, "
            f"params logged {self.params_logged}, artifacts uploaded {self.artifacts_uploaded}; "
            f"{summary}"
        )


def trial_results(folder: Path) -> list[dict[str, Any]]:
    """A trial's results as Tune wrote them (``result.json``: one JSON object a line).

    A retried trial may report an epoch again: the first report of each epoch is kept (the one
    the callback logged). A line cut short by a killed driver is skipped.
    """
    path = Path(folder) / "result.json"
    if not path.is_file():
        return []
    seen: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "training_iteration" in row:
            seen.setdefault(int(row["training_iteration"]), row)
    return [seen[k] for k in sorted(seen)]


@dataclass
class TuneTrial:
    """What the writer of trial runs reads of a Tune trial, from the experiment folder alone (a
    restored ``Trial`` needs a Ray session for its local paths)."""

    trial_id: str
    config: dict[str, Any]
    status: str  # Tune's: TERMINATED, ERROR, RUNNING, PENDING, PAUSED
    path: str
    checkpoint: Any  # ray.tune.Checkpoint of its newest checkpoint, or None
    run_metadata: Any  # num_failures
    error_file: str | None = None

    def get_error(self) -> None:
        return None  # error_text reads error_file


def _load_trials(exp_dir: Path) -> list[TuneTrial]:
    """The trials of Tune's newest experiment snapshot in ``exp_dir``, by name."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(Path(exp_dir).resolve()))
    except ValueError as exc:  # no experiment snapshot: Tune never started there
        raise FileNotFoundError(f"{exp_dir}: no Tune experiment to sync ({exc})") from None
    trials = []
    for t in analysis.trials:
        meta = t.run_metadata
        error = Path(t.path) / (meta.error_filename or "error.txt")
        trials.append(
            TuneTrial(
                trial_id=t.trial_id,
                config=t.config,
                status=t.status,
                path=t.path,
                checkpoint=t.checkpoint,
                run_metadata=meta,
                error_file=str(error) if error.is_file() else None,
            )
        )
    return sorted(trials, key=lambda t: (trial_name(t), t.trial_id))


def sync_study(spec: StudySpec) -> SyncReport:
    """Log to the study's tracking store what its Tune folder has and the store lacks.

    Raises:
        FileNotFoundError: no launched study under ``spec.storage_path / spec.name``.
        ConnectionError: the tracking store (the one the study logs to) is unreachable.
        SpecError: the spec names another study than the folder's record.
    """
    exp_dir = spec.storage_path / spec.name
    record = read_record(exp_dir)
    if record is None:
        raise FileNotFoundError(
            f"{exp_dir}: no study record (ssad_study.json): study {spec.name!r} was not launched "
            "with this storage_path"
        )
    if record.get("study") != spec.name or record.get("experiment") != spec.experiment:
        raise SpecError(
            f"{spec.path}: the study record in {exp_dir} is of study {record.get('study')!r} "
            f"(experiment {record.get('experiment')!r})"
        )
    check_tracking_uri(record["tracking_uri"])  # unreachable: a ConnectionError naming it
    trials = _load_trials(exp_dir)
    # MLflow's patient retries (not fail-fast): the store should be back
    writer = TrialRunWriter.from_record(record, fail_fast=False, sha="")
    launch_tags = writer.tracker.client.get_run(writer.parent_id).data.tags
    # the launch's commit
    writer.sha = launch_tags["ssad.git_sha"] if "ssad.git_sha" in launch_tags else git_sha()
    report = SyncReport(study=spec.name, trials=len(trials))
    spans: list[tuple[float, float]] = []
    for trial in trials:
        rows = trial_results(Path(trial.path))
        if not rows and trial.status not in ENDED:
            continue  # never started: the callback had no run for it either
        start, end = _start_time(trial, rows), _end_time(trial, rows)
        if start is not None and end is not None:
            spans.append((start, end))
        _sync_trial(writer, trial, rows, report)
    report.complete = report.open_trials == 0 and len(trials) >= spec.total_trials()
    if report.complete:
        report.summary_logged = _sync_summary(writer, spec, spans)
    return report


def _sync_trial(writer: TrialRunWriter, trial, rows: list[dict[str, Any]], report) -> None:
    tracker = writer.tracker
    found = tracker.trial_runs_of(trial.trial_id)
    if len(found) > 1:
        report.duplicates.append(trial_name(trial))
        log.warning(
            "trial %s has %d runs in %s; syncing the oldest",
            trial_name(trial),
            len(found),
            tracker.tracking_uri,
        )
    if found:
        run = found[0]
    else:
        run = tracker.client.get_run(writer.open(trial, _start_time(trial, rows)))
        report.runs_created += 1
    params, epochs = writer.fill(trial, run, rows)
    report.params_logged += params
    report.epochs_logged += epochs
    if trial.status not in ENDED:
        report.open_trials += 1
        return
    epochs_done = int(rows[-1]["training_iteration"]) if rows else 0
    status = ENDED[trial.status] or writer.closing_status(trial, epochs_done)
    uploaded = writer.close(trial, status, end_time=_end_time(trial, rows))
    if uploaded is not None:
        report.artifacts_uploaded += uploaded
        report.runs_closed += 1


def _start_time(trial, rows: list[dict[str, Any]]) -> int | None:
    """When the trial started (ms): from its first result, else its folder's ``params.json``."""
    if rows:
        return result_start_ms(rows[0])
    params = Path(trial.path) / "params.json"
    return int(params.stat().st_mtime * 1000) if params.is_file() else None


def _end_time(trial, rows: list[dict[str, Any]]) -> int | None:
    """When the trial ended (ms): its last result, or its error file when written later."""
    times = [float(rows[-1].get("timestamp", 0))] if rows else []
    error = getattr(trial, "error_file", None)
    if error and Path(error).is_file():
        times.append(Path(error).stat().st_mtime)
    return int(max(times) * 1000) if times else None


def _sync_summary(
    writer: TrialRunWriter, spec: StudySpec, spans: list[tuple[float, float]]
) -> bool:
    """The runner's end-of-study records on the launch's parent run, those it lacks."""
    from ssad.study.tune.runner import finish_study

    tracker, parent_id = writer.tracker, writer.parent_id
    have = tracker.artifact_files(parent_id)
    if "leaderboard.csv" in have:
        return False
    # the runner measures its fit; here: from the first trial's start to the last one's end
    wall = (max(e for _, e in spans) - min(s for s, _ in spans)) / 1000 if spans else 0.0
    finish_study(tracker, parent_id, spec, wall, have=set(have))
    return True
