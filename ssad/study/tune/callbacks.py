"""Driver-side Tune callback: a nested MLflow run per trial, per-epoch metrics, artifacts, failures.

The callback is pickled into Tune's ``tuner.pkl`` at launch, and ``Tuner.restore`` brings back
that copy, not a new one. So it holds only the Tune experiment folder; where it logs (tracking
URI, experiment, launch, parent run), the base config and the dataset fingerprints are read from
the study record (:mod:`ssad.study.record`) when Tune sets it up, and the runner rewrites that
record before every ``fit``: a resume pointed at another tracking store logs there.

A tracking store that goes away mid-study costs no trial: every MLflow call of a hook that fails
on the store (no answer, a timeout, a 5xx) is skipped with one warning per outage, the trials
keep running, and Tune's storage keeps their results (``result.json`` with every epoch,
checkpoints with the artifacts, ``error.txt``). While the store is away the hooks make no call
at all, trying again at most every ``RETRY_S`` seconds, each try giving up within seconds; once
it is back they log new results again, and ``ssad study sync SPEC`` (:mod:`ssad.study.sync`)
logs what was missed with the same writer of trial runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ssad.study.record import read_record
from ssad.study.results.report import trial_name
from ssad.study.tracking.store import (
    TRACKING_ERRORS,
    mark_reachable,
    mark_unreachable,
    reachable,
    unreachable,
)
from ssad.study.tracking.tracker import StudyTracker, git_sha
from ssad.study.tracking.trial_runs import (
    LOGGED,
    TrialRunWriter,
    epoch_metrics,
    error_text,
    result_start_ms,
)
from ssad.study.tune.tune_internals import snapshot_trial_ids

__all__ = ["LOGGED", "RETRY_S", "MlflowTrials", "epoch_metrics", "error_text", "result_start_ms"]

log = logging.getLogger(__name__)

RETRY_S = 30.0  # while the tracking store is away, the hooks try it again at most this often


class MlflowTrials(Callback):
    """Nested MLflow run per trial (found again by trial id), metrics every epoch, artifacts.

    The runs are written by a :class:`~ssad.study.tracking.trial_runs.TrialRunWriter` (the one
    ``ssad study sync`` uses too). A trial that fails after its retries is closed as ``failed``
    with the error text as the tag ``ssad.error`` (its end) and the artifact ``error.txt``
    (whole); ``ssad.failures`` counts the failed attempts. A store that is away costs no trial
    (see the module's doc).
    """

    def __init__(self, exp_dir: Path) -> None:
        self.exp_dir = Path(exp_dir)
        self.sha = git_sha()
        self._session()

    def _session(self) -> None:
        self.writer: TrialRunWriter | None = None
        self.down_since: float | None = None  # monotonic time the store was found away
        self.retry_at = 0.0
        self.missed: set[str] = set()  # trials with a record not logged in this session
        self.warned: set[tuple[str, str]] = set()
        self.reconciled = False  # runs of lost trials retired (on_step_begin)
        self.reconcile_at = 0.0

    @property
    def tracker(self) -> StudyTracker:
        return self.writer.tracker

    def setup(self, **info: Any) -> None:
        self.open(fail_fast=True)

    def open(self, *, fail_fast: bool) -> dict[str, Any]:
        """Read the study record: where to log, the base config, the dataset fingerprints.

        ``fail_fast``: the tracker gives up within seconds on a dead server (the driver's hooks).
        """
        record = read_record(self.exp_dir)
        if record is None:
            raise RuntimeError(f"{self.exp_dir}: study record missing (written by the runner)")
        self._session()
        self.writer = TrialRunWriter.from_record(record, fail_fast=fail_fast, sha=self.sha)
        return record

    def __getstate__(self) -> dict[str, Any]:
        return {"exp_dir": self.exp_dir, "sha": self.sha}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session()

    # ---- a store that is away ---------------------------------------------------------------
    def _guard(self, what: str, trial, call: Callable[[], None]) -> None:
        """Run one hook's MLflow calls; a store that is away costs the record, not the trial."""
        uri = self.tracker.tracking_uri
        now = time.monotonic()
        if self.down_since is not None and now < self.retry_at:
            self.missed.add(trial.trial_id)
            return
        try:
            call()
        except TRACKING_ERRORS as exc:
            self.missed.add(trial.trial_id)
            brief = " ".join(str(exc).split())[:300]
            if not unreachable(exc):
                key = (what, type(exc).__name__)
                if key not in self.warned:
                    self.warned.add(key)
                    log.warning(
                        "MLflow: %s of trial %s not logged (%s: %s); its results stay in "
                        "Tune's storage (%s): `ssad study sync SPEC` logs them",
                        what,
                        trial_name(trial),
                        type(exc).__name__,
                        brief,
                        self.exp_dir,
                    )
                return
            if self.down_since is None:
                self.down_since = now
                log.warning(
                    "MLflow tracking store %s unreachable (%s of trial %s: %s): the trials "
                    "continue and their results stay in Tune's storage (%s); trying the store "
                    "again at most every %.0f s; once it is back, `ssad study sync SPEC` logs "
                    "what it missed",
                    uri,
                    what,
                    trial_name(trial),
                    brief,
                    self.exp_dir,
                    RETRY_S,
                )
            mark_unreachable(uri)
            self.retry_at = now + RETRY_S
            return
        if self.down_since is not None:
            log.warning(
                "MLflow tracking store %s reachable again after %.0f s: new results are logged; "
                "`ssad study sync SPEC` logs what it missed (%d trials)",
                uri,
                now - self.down_since,
                len(self.missed),
            )
            self.down_since = None
            mark_reachable(uri)

    # ---- Tune's hooks -----------------------------------------------------------------------
    def on_step_begin(self, iteration, trials, **info) -> None:
        """Once per driver session, first thing: retire runs of trials Tune does not know.

        At the session's first step Tune holds every trial it restored and no new one has
        started, so a run of this launch for any other trial id is one Tune lost (see
        :meth:`StudyTracker.retire_lost`). Retried at the next step while the store is away.
        """
        if self.reconciled or time.monotonic() < self.reconcile_at:
            return
        try:
            lost = self.tracker.retire_lost(snapshot_trial_ids(trials))
        except TRACKING_ERRORS as exc:
            log.warning("MLflow: runs of lost trials not checked yet (%s)", type(exc).__name__)
            self.reconcile_at = time.monotonic() + RETRY_S
            return
        self.reconciled = True
        for run in lost:
            log.warning(
                "MLflow run %s (%s): Tune has no such trial (the driver was killed before its "
                "snapshot recorded it) and runs its slot again as a new trial: the run is "
                "deleted (restorable in the MLflow UI)",
                run.info.run_id,
                run.info.run_name,
            )

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._guard("start", trial, lambda: self.writer.open(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._guard("epoch result", trial, lambda: self.writer.log_epoch(trial, result))

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._guard("retry", trial, lambda: self.writer.set_failures(trial))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        done = int((trial.last_result or {}).get("training_iteration", 0))
        status = self.writer.closing_status(trial, done)
        self._guard("end", trial, lambda: self.writer.close(trial, status))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._guard("failure", trial, lambda: self.writer.close(trial, "failed"))

    def on_experiment_end(self, trials, **info) -> None:
        """A store that went away after the last hook's call is found here (the runner's
        end-of-study logging then fails at once instead of stalling in MLflow's retries)."""
        uri = self.tracker.tracking_uri if self.writer is not None else None
        if uri is None:
            return
        if not reachable(uri):
            mark_unreachable(uri)
            if self.down_since is None:
                log.warning("MLflow tracking store %s unreachable at the end of the study", uri)
        if self.missed:
            log.warning(
                "MLflow: records of %d trials not logged (the tracking store %s was away); they "
                "are kept in Tune's storage (%s): once the store is back, `ssad study sync SPEC` "
                "logs them",
                len(self.missed),
                uri,
                self.exp_dir,
            )
