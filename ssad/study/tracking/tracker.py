"""The MLflow records of one study: its experiment, a parent run per launch, plain run records.

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids — the fluent API keeps
one global active run per process and collides when trials log concurrently.

Each launch of a study (a first run, or ``ssad study run --new``) has its own parent run and a
launch id (tag ``ssad.launch_id`` on the parent and on every trial run); a resume continues the
newest launch. Readers (leaderboard, promotion, dashboards) see the newest launch only, so runs of
an earlier launch, perhaps from another search space, never mix into its results.

:class:`StudyTracker` gathers the trial-run primitives (:mod:`.runs`), a run's artifacts
(:mod:`.artifacts`) and the model registry (:mod:`.registry`) as mixins, so one object serves a
study's records.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from ssad.study.tracking.artifacts import RunArtifacts
from ssad.study.tracking.names import (
    EXPERIMENT_KIND_TRAINING,
    TAG_EXPERIMENT_KIND,
    TAG_LAUNCH,
    TAG_ROLE,
    TAG_STATUS,
    TAG_STUDY,
    TAG_TRIAL,
    parent_run_name,
)
from ssad.study.tracking.registry import ModelRegistry
from ssad.study.tracking.runs import TrialRunRecords, _param
from ssad.study.tracking.store import check_available, connect

__all__ = ["StudyTracker", "git_sha"]


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class StudyTracker(TrialRunRecords, RunArtifacts, ModelRegistry):
    """The MLflow records of one study. Picklable (the client is created lazily).

    ``fail_fast``: each call gives up after a few seconds on a dead server (MLflow's own retries
    take minutes), for callers that keep going without the store (the driver's Tune callback).
    Once a store was found unreachable in this process (:func:`mark_unreachable`), every tracker
    on it checks ``/health`` first and raises :class:`TrackingUnavailable` at once while it is away.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        study: str,
        *,
        launch_id: str | None = None,
        fail_fast: bool = False,
    ) -> None:
        self.tracking_uri, self.experiment, self.study = tracking_uri, experiment, study
        self.launch_id = launch_id  # None: the newest launch, looked up when first needed
        self.fail_fast = fail_fast
        self._client: MlflowClient | None = None
        self._steps: dict[str, set[int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_steps": {}}

    @property
    def client(self) -> MlflowClient:
        check_available(self.tracking_uri)
        if self._client is None:
            self._client = connect(self.tracking_uri, fail_fast=self.fail_fast)
        return self._client

    @property
    def experiment_id(self) -> str:
        """The study's experiment, created on first use, tagged as a model-training experiment.

        ``mlflow.experimentKind = custom_model_development`` tells MLflow 3's UI it holds
        training runs, not GenAI traces; an experiment created before the tag (an old study)
        gets it here, a kind already set is kept. (MLflow 3.17's UI navigation follows its global
        GenAI / Model training switch instead: :func:`runs_table_url` sets that.)
        """
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.tags.get(TAG_EXPERIMENT_KIND) is None:
                self.client.set_experiment_tag(
                    exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING
                )
            return exp.experiment_id
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            # Artifacts beside the database, not in ./mlruns of whatever the working directory is.
            db = Path(self.tracking_uri[len("sqlite:///") :])
            location = (db.parent / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(
            self.experiment,
            artifact_location=location,
            tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING},
        )

    # ---- runs ------------------------------------------------------------------------------------
    def _find(self, filter_string: str) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=filter_string,
            max_results=10000,
            order_by=["attributes.start_time ASC"],
        )

    def parents(self) -> list:
        """The study's parent runs (one per launch), oldest first."""
        return self._find(f"tags.`{TAG_STUDY}` = '{self.study}' and tags.`{TAG_ROLE}` = 'study'")

    def current_launch(self) -> str | None:
        """This tracker's launch id: the one it was given or started, else the newest launch's.

        ``None`` when the study has no launch yet, or only a parent run from before launch ids
        (then readers see all of the study's trial runs, as they did).
        """
        if getattr(self, "launch_id", None) is None:
            found = self.parents()
            self.launch_id = found[-1].data.tags.get(TAG_LAUNCH) if found else None
        return self.launch_id

    def _launch_parents(self, launch: str | None) -> list:
        """Parent runs of ``launch`` (all of the study's when None), oldest first."""
        return [
            r for r in self.parents() if launch is None or r.data.tags.get(TAG_LAUNCH) == launch
        ]

    def _create_parent(self, launch: str, run_name: str):
        """A new parent run tagged with ``launch``; it becomes this tracker's launch."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={
                TAG_STUDY: self.study,
                TAG_ROLE: "study",
                TAG_LAUNCH: launch,
                "ssad.git_sha": git_sha(),
            },
        )
        self.launch_id = launch
        return run

    def launch_parent_id(self) -> str | None:
        """The parent run id of this tracker's launch, or None when the study has none."""
        found = self._launch_parents(self.current_launch())
        return found[-1].info.run_id if found else None

    def start_launch(self) -> str:
        """A new launch: a new parent run with a new launch id (params logged by parent_run)."""
        launch = uuid.uuid4().hex[:12]
        self._create_parent(launch, parent_run_name(self.study, launch))
        return launch

    def parent_run(self, *, params: dict[str, Any], artifacts: list[Path]) -> str:
        """The parent run of this tracker's launch: reused when it exists (resume), else created.

        Without a launch id the newest launch is continued; a study with no parent run gets its
        first launch. Params and artifacts are logged once, when the run has none yet.
        """
        launch = self.current_launch()
        found = self._launch_parents(launch)
        if found:
            run = found[-1]
            self.client.update_run(run.info.run_id, status="RUNNING")
            if run.data.params:
                return run.info.run_id
        else:
            run = self._create_parent(launch or uuid.uuid4().hex[:12], parent_run_name(self.study))
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in params.items()])
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))
        return run_id

    def trial_runs(self) -> list:
        """The trial runs of this tracker's launch (see :meth:`current_launch`)."""
        return self._find(
            f"tags.`{TAG_STUDY}` = '{self.study}' and tags.`{TAG_ROLE}` = 'trial'"
            + self._launch_filter()
        )

    def retire_lost(self, known: set[str]) -> list:
        """Close and delete this launch's trial runs whose trial Tune no longer knows; return them.

        A driver killed after a trial started (its run created) but before Tune's next
        experiment snapshot leaves a run that Tune, restored from that snapshot, has never heard
        of: the searcher hands the slot out again as a new trial. The old run is tagged
        ``ssad.status = lost``, closed as KILLED and deleted (MLflow keeps it, restorable), so
        every reader sees one run per Tune trial.
        """
        if self.current_launch() is None:  # a study from before launch ids: runs not told apart
            return []
        lost = [r for r in self.trial_runs() if r.data.tags.get(TAG_TRIAL) not in known]
        why = (
            "the driver was killed before Tune recorded this trial; the resumed study ran its "
            "slot again as a new trial"
        )
        for run in lost:
            rid = run.info.run_id
            self.client.log_batch(rid, tags=[RunTag(TAG_STATUS, "lost"), RunTag("ssad.lost", why)])
            if run.info.status == "RUNNING":
                self.client.set_terminated(rid, status="KILLED")
            self.client.delete_run(rid)
        return lost

    def _launch_filter(self) -> str:
        launch = self.current_launch()
        return f" and tags.`{TAG_LAUNCH}` = '{launch}'" if launch else ""

    # ---- plain run records (promotion runs, summaries, dashboards) -----------------------------
    def create_run(self, *, run_name: str, tags: dict[str, str]) -> str:
        return self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], *, tags: dict[str, str] | None = None
    ) -> None:
        """Metrics (step 0) and ``tags`` in one batch: one request, stored together or not."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        self.client.log_batch(
            run_id, metrics=items, tags=[RunTag(k, v) for k, v in (tags or {}).items()]
        )

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every logged value of one metric of a run."""
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def close(self, run_id: str, *, failed: bool = False) -> None:
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
