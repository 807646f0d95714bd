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
logs what was missed with this module's own code.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ssad.study.record import read_record
from ssad.study.report import trial_name
from ssad.study.tracking import (
    TAG_CLASS,
    TAG_STATUS,
    TAG_VARIANT,
    TRACKING_ERRORS,
    StudyTracker,
    git_sha,
    mark_reachable,
    mark_unreachable,
    reachable,
    save_runs_view,
    unreachable,
)
from ssad.study.trial import resolve_trial_config
from ssad.study.tune_internals import snapshot_trial_ids
from ssad.train import scheduled_epochs

__all__ = ["LOGGED", "RETRY_S", "MlflowTrials", "epoch_metrics", "error_text", "result_start_ms"]

log = logging.getLogger(__name__)

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
RETRY_S = 30.0  # while the tracking store is away, the hooks try it again at most this often


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


class MlflowTrials(Callback):
    """Nested MLflow run per trial (found again by trial id), metrics every epoch, artifacts.

    A trial that fails after its retries is closed as ``failed`` with the error text as the tag
    ``ssad.error`` (its end) and the artifact ``error.txt`` (whole); ``ssad.failures`` counts the
    failed attempts. A store that is away costs no trial (see the module's doc).
    """

    def __init__(self, exp_dir: Path) -> None:
        self.exp_dir = Path(exp_dir)
        self.sha = git_sha()
        self._session()

    def _session(self) -> None:
        self.runs: dict[str, str] = {}
        self.nodes: dict[str, str] = {}
        self.logged: set[str] = set()  # trials with a new epoch logged in this driver session
        self.tracker: StudyTracker | None = None
        self.down_since: float | None = None  # monotonic time the store was found away
        self.retry_at = 0.0
        self.missed: set[str] = set()  # trials with a record not logged in this session
        self.warned: set[tuple[str, str]] = set()
        self.reconciled = False  # runs of lost trials retired (on_step_begin)
        self.reconcile_at = 0.0

    def setup(self, **info: Any) -> None:
        self.open(fail_fast=True)

    def open(self, *, fail_fast: bool) -> dict[str, Any]:
        """Read the study record: where to log, the base config, the dataset fingerprints.

        ``fail_fast``: the tracker gives up within seconds on a dead server (the driver's hooks);
        ``ssad study sync`` uses MLflow's patient default.
        """
        record = read_record(self.exp_dir)
        if record is None:
            raise RuntimeError(f"{self.exp_dir}: study record missing (written by the runner)")
        self._session()
        self.tracker = StudyTracker(
            record["tracking_uri"],
            record["experiment"],
            record["study"],
            launch_id=record.get("launch_id"),
            fail_fast=fail_fast,
        )
        self.parent_id, self.base = record["parent_id"], record["base"]
        self.prints = record.get("prints", {})
        return record

    def __getstate__(self) -> dict[str, Any]:
        return {"exp_dir": self.exp_dir, "sha": self.sha}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session()

    # ---- what a trial's run holds (the hooks and ``ssad study sync`` alike) -------------------
    def trial_tags(self, trial) -> dict[str, str]:
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

    def trial_params(self, trial) -> dict[str, Any]:
        return resolve_trial_config(self.base, trial.config).flat()

    def closing_status(self, trial, epochs: int) -> str:
        """``finished`` when the trial ran its own schedule (an ablation's variants may train
        for fewer epochs), else ``stopped`` (by the scheduler)."""
        cfg = resolve_trial_config(self.base, trial.config)
        return "finished" if epochs >= scheduled_epochs(cfg) else "stopped"

    @contextmanager
    def final_artifacts(self, trial, status: str) -> Iterator[tuple[Path | None, dict[str, str]]]:
        """The folder of a closing trial's artifacts (or None) and its closing tags.

        Its last checkpoint without the training state and the saved model (Tune keeps those);
        a failed trial's error text as ``error.txt``.
        """
        tags: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="ssad-art-") as tmp:
            folder = Path(tmp) / "artifacts"
            ckpt = trial.checkpoint
            if ckpt is not None:
                folder = Path(ckpt.to_directory(str(folder)))
                (folder / "state.pt").unlink(missing_ok=True)  # training state: Tune keeps it
                det = folder / "detector"
                if det.is_dir():  # the finished model stays in Tune's storage, not in MLflow
                    for f in ("model.pt", "bank.npy", "bank_positions.npy"):
                        (det / f).unlink(missing_ok=True)
                tags["ssad.checkpoint"] = str(ckpt.path)
            if status == "failed":
                text = error_text(trial) or "failed (Tune recorded no error text)"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "error.txt").write_text(text)
                tags["ssad.error"] = text[-ERROR_TAG_CHARS:]
                tags["ssad.failures"] = str(_failures(trial))
            yield (folder if folder.is_dir() else None), tags

    def _run(self, trial, start_time: int | None = None) -> str:
        if trial.trial_id not in self.runs:
            if not self.runs:  # this session's first trial run: the runs table's trials view
                save_runs_view(self.tracker.client, self.tracker.experiment_id)
            self.runs[trial.trial_id] = self.tracker.trial_run(
                parent_id=self.parent_id,
                trial_id=trial.trial_id,
                params=self.trial_params(trial),
                tags=self.trial_tags(trial),
                start_time=start_time,
            )
        return self.runs[trial.trial_id]

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
        self._guard("start", trial, lambda: self._run(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._guard("epoch result", trial, lambda: self._log_result(trial, result))

    def _log_result(self, trial, result: dict[str, Any]) -> None:
        run_id = self._run(trial, result_start_ms(result))
        if self.tracker.log_step(run_id, epoch_metrics(result), int(result["training_iteration"])):
            self.logged.add(trial.trial_id)
        if "node_id" in result and self.nodes.get(trial.trial_id) != result["node_id"]:
            self.tracker.set_tags(run_id, {"ssad.node_id": result["node_id"]})
            self.nodes[trial.trial_id] = result["node_id"]

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._guard(
            "retry",
            trial,
            lambda: self.tracker.set_tags(
                self._run(trial), {"ssad.failures": str(_failures(trial))}
            ),
        )

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        done = int((trial.last_result or {}).get("training_iteration", 0))
        status = self.closing_status(trial, done)
        self._guard("end", trial, lambda: self._finish(trial, status))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._guard("failure", trial, lambda: self._finish(trial, "failed"))

    def on_experiment_end(self, trials, **info) -> None:
        """A store that went away after the last hook's call is found here (the runner's
        end-of-study logging then fails at once instead of stalling in MLflow's retries)."""
        uri = self.tracker.tracking_uri if self.tracker is not None else None
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

    def _finish(self, trial, status: str) -> None:
        run_id = self._run(trial)
        if trial.trial_id not in self.logged:
            # Killed after the trial ended but before Tune's next snapshot, the driver's
            # restart re-runs it from the snapshot's checkpoint (the final one, or an earlier
            # one whose later epochs are replayed and already logged): nothing new, so keep the
            # record (closing it again would move its end time past the downtime).
            closed = self.tracker.run_tags(run_id).get(TAG_STATUS)
            if closed in ("finished", "stopped"):
                return
        with self.final_artifacts(trial, status) as (folder, tags):
            self.tracker.finish(run_id, status=status, artifacts=folder, tags=tags)


def _failures(trial) -> int:
    meta = getattr(trial, "run_metadata", None)
    return int(getattr(meta, "num_failures", 0) or 0)
