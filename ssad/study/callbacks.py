"""Driver-side Tune callback: a nested MLflow run per trial, per-epoch metrics, artifacts, failures.

The callback is pickled into Tune's ``tuner.pkl`` at launch, and ``Tuner.restore`` brings back
that copy, not a new one. So it holds only the Tune experiment folder; where it logs (tracking
URI, experiment, launch, parent run), the base config and the dataset fingerprints are read from
the study record (:mod:`ssad.study.record`) when Tune sets it up, and the runner rewrites that
record before every ``fit``: a resume pointed at another tracking store logs there.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ssad.study.record import read_record
from ssad.study.report import trial_name
from ssad.study.tracking import (
    TAG_CLASS,
    TAG_STATUS,
    TAG_VARIANT,
    StudyTracker,
    git_sha,
    save_runs_view,
)
from ssad.study.trial import resolve_trial_config

__all__ = ["LOGGED", "MlflowTrials", "error_text"]

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
    failed attempts.
    """

    def __init__(self, exp_dir: Path) -> None:
        self.exp_dir = Path(exp_dir)
        self.sha = git_sha()
        self._session()

    def _session(self) -> None:
        self.runs: dict[str, str] = {}
        self.nodes: dict[str, str] = {}
        self.reported: set[str] = set()  # trials with a result in this driver session
        self.tracker: StudyTracker | None = None

    def setup(self, **info: Any) -> None:
        record = read_record(self.exp_dir)
        if record is None:
            raise RuntimeError(f"{self.exp_dir}: study record missing (written by the runner)")
        self._session()
        self.tracker = StudyTracker(
            record["tracking_uri"],
            record["experiment"],
            record["study"],
            launch_id=record.get("launch_id"),
        )
        self.parent_id, self.base = record["parent_id"], record["base"]
        self.prints = record.get("prints", {})

    def __getstate__(self) -> dict[str, Any]:
        return {"exp_dir": self.exp_dir, "sha": self.sha}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session()

    def _run(self, trial) -> str:
        if trial.trial_id not in self.runs:
            if not self.runs:  # this session's first trial run: the runs table's trials view
                save_runs_view(self.tracker.client, self.tracker.experiment_id)
            cfg = resolve_trial_config(self.base, trial.config)
            tc = trial.config
            tags = {
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
            self.runs[trial.trial_id] = self.tracker.trial_run(
                parent_id=self.parent_id, trial_id=trial.trial_id, params=cfg.flat(), tags=tags
            )
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self._run(trial)
        self.reported.add(trial.trial_id)
        metrics = {k: v for k, v in result.items() if k in LOGGED or k.startswith("val_")}
        self.tracker.log_step(run_id, metrics, int(result["training_iteration"]))
        if "node_id" in result and self.nodes.get(trial.trial_id) != result["node_id"]:
            self.nodes[trial.trial_id] = result["node_id"]
            self.tracker.set_tags(run_id, {"ssad.node_id": result["node_id"]})

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.tracker.set_tags(self._run(trial), {"ssad.failures": str(_failures(trial))})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        done = int((trial.last_result or {}).get("training_iteration", 0))
        # the trial's own schedule: an ablation's variants may train for fewer epochs
        cfg = resolve_trial_config(self.base, trial.config).train
        self._finish(
            trial, "finished" if done >= cfg.phase1_epochs + cfg.phase2_epochs else "stopped"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, "failed")

    def _finish(self, trial, status: str) -> None:
        run_id = self._run(trial)
        if trial.trial_id not in self.reported:
            # Killed after the trial ended but before Tune's next snapshot, the driver's
            # restart re-runs it from its final checkpoint with nothing new: keep the record
            # (closing it again would move its end time past the downtime).
            closed = self.tracker.run_tags(run_id).get(TAG_STATUS)
            if closed in ("finished", "stopped"):
                return
        tags: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="ssad-art-") as tmp:
            folder = Path(tmp) / "artifacts"
            ckpt = trial.checkpoint
            if ckpt is not None:
                folder = Path(ckpt.to_directory(str(folder)))
                (folder / "state.pt").unlink(missing_ok=True)  # training state: Tune keeps it
                det = folder / "detector"
                if det.is_dir():  # the finished model stays in Tune's storage, not in MLflow
                    for f in ("model.pt", "bank.npy"):
                        (det / f).unlink(missing_ok=True)
                tags["ssad.checkpoint"] = str(ckpt.path)
            if status == "failed":
                text = error_text(trial) or "failed (Tune recorded no error text)"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "error.txt").write_text(text)
                tags["ssad.error"] = text[-ERROR_TAG_CHARS:]
                tags["ssad.failures"] = str(_failures(trial))
            self.tracker.finish(
                run_id,
                status=status,
                artifacts=folder if folder.is_dir() else None,
                tags=tags,
            )


def _failures(trial) -> int:
    meta = getattr(trial, "run_metadata", None)
    return int(getattr(meta, "num_failures", 0) or 0)
