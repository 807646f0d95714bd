"""MLflow adapter: one experiment per study, a parent run, one nested run per trial.

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids — the fluent API keeps
one global active run per process and collides when trials log concurrently. Trial runs are found
by their ``ssad.trial_id`` tag, so a resumed or retried trial keeps its run and never gets a second
one, and per-epoch metrics already logged are not logged again.

Each launch of a study (a first run, or ``ssad study run --new``) has its own parent run and a
launch id (tag ``ssad.launch_id`` on the parent and on every trial run); a resume continues the
newest launch. Readers (leaderboard, promotion, dashboards) see the newest launch only, so runs of
an earlier launch, perhaps from another search space, never mix into its results.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

__all__ = ["StudyTracker", "check_tracking_uri", "git_sha", "runs_table_url"]

log = logging.getLogger(__name__)

TAG_STUDY, TAG_ROLE, TAG_TRIAL, TAG_CLASS = "ssad.study", "ssad.role", "ssad.trial_id", "ssad.class"
TAG_STATUS, TAG_LAUNCH = "ssad.status", "ssad.launch_id"


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


def check_tracking_uri(uri: str) -> str:
    """Fail early, with the URI in the message, when the tracking store can't be reached.

    Relative ``sqlite:///`` paths are made absolute so Ray workers and the driver agree.
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        path = path if path.is_absolute() else Path.cwd() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
        except OSError as exc:
            raise ConnectionError(
                f"mlflow.tracking_uri {uri}: tracking server not reachable ({exc})"
            ) from None
        return uri
    raise ValueError(f"mlflow.tracking_uri {uri!r}: use sqlite:///PATH or http(s)://HOST:PORT")


def runs_table_url(ui: str, experiment_id: str) -> str:
    """Deep link to the training-runs table (MLflow 3 otherwise opens its GenAI view)."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs"


class StudyTracker:
    """The MLflow records of one study. Picklable (the client is created lazily)."""

    def __init__(
        self, tracking_uri: str, experiment: str, study: str, *, launch_id: str | None = None
    ) -> None:
        self.tracking_uri, self.experiment, self.study = tracking_uri, experiment, study
        self.launch_id = launch_id  # None: the newest launch, looked up when first needed
        self._client: MlflowClient | None = None
        self._last_step: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_last_step": {}}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            # Artifacts beside the database, not in ./mlruns of whatever the working directory is.
            db = Path(self.tracking_uri[len("sqlite:///") :])
            location = (db.parent / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=location)

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

    def launch_parent_id(self) -> str | None:
        """The parent run id of this tracker's launch, or None when the study has none."""
        launch = self.current_launch()
        found = [
            r for r in self.parents() if launch is None or r.data.tags.get(TAG_LAUNCH) == launch
        ]
        return found[-1].info.run_id if found else None

    def start_launch(self) -> str:
        """A new launch: a new parent run with a new launch id (params logged by parent_run)."""
        launch = uuid.uuid4().hex[:12]
        self.client.create_run(
            self.experiment_id,
            run_name=f"study-{self.study}-{launch}",
            tags={
                TAG_STUDY: self.study,
                TAG_ROLE: "study",
                TAG_LAUNCH: launch,
                "ssad.git_sha": git_sha(),
            },
        )
        self.launch_id = launch
        return launch

    def parent_run(self, *, params: dict[str, Any], artifacts: list[Path]) -> str:
        """The parent run of this tracker's launch: reused when it exists (resume), else created.

        Without a launch id the newest launch is continued; a study with no parent run gets its
        first launch. Params and artifacts are logged once, when the run has none yet.
        """
        launch = self.current_launch()
        found = [
            r for r in self.parents() if launch is None or r.data.tags.get(TAG_LAUNCH) == launch
        ]
        if found:
            run = found[-1]
            self.client.update_run(run.info.run_id, status="RUNNING")
            if run.data.params:
                return run.info.run_id
        else:
            launch = launch or uuid.uuid4().hex[:12]
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"study-{self.study}",
                tags={
                    TAG_STUDY: self.study,
                    TAG_ROLE: "study",
                    TAG_LAUNCH: launch,
                    "ssad.git_sha": git_sha(),
                },
            )
            self.launch_id = launch
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in params.items()])
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))
        return run_id

    def trial_run(
        self, *, parent_id: str, trial_id: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        """The nested run of a trial, found by its trial-id tag or created (params logged once)."""
        launch = self.current_launch()
        found = self._find(
            f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_STUDY}` = '{self.study}'"
            + self._launch_filter()
        )
        if found:
            return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{tags.get(TAG_CLASS, 'trial')}-{trial_id}",
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

    def log_step(self, run_id: str, metrics: dict[str, Any], step: int) -> None:
        """Log one epoch's numeric metrics, unless this step was already logged (resume/retry)."""
        if run_id not in self._last_step:
            hist = self.client.get_metric_history(run_id, "loss")
            self._last_step[run_id] = max((m.step for m in hist), default=0)
        if step <= self._last_step[run_id]:
            return
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        self.client.log_batch(run_id, metrics=items)
        self._last_step[run_id] = step

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        artifacts: Path | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Upload the trial's artifacts folder and close its run (``status``: finished/stopped/failed)."""
        if artifacts is not None and artifacts.is_dir():
            for item in sorted(artifacts.iterdir()):
                if item.is_dir():
                    self.client.log_artifacts(run_id, str(item), artifact_path=item.name)
                else:
                    self.client.log_artifact(run_id, str(item))
        self.client.set_tag(run_id, TAG_STATUS, status)
        for k, v in (tags or {}).items():
            self.client.set_tag(run_id, k, v)
        self.client.set_terminated(run_id, status="FAILED" if status == "failed" else "FINISHED")

    def trial_runs(self) -> list:
        """The trial runs of this tracker's launch (see :meth:`current_launch`)."""
        return self._find(
            f"tags.`{TAG_STUDY}` = '{self.study}' and tags.`{TAG_ROLE}` = 'trial'"
            + self._launch_filter()
        )

    def _launch_filter(self) -> str:
        launch = self.current_launch()
        return f" and tags.`{TAG_LAUNCH}` = '{launch}'" if launch else ""


def _param(value: Any) -> str:
    text = str(list(value) if isinstance(value, tuple) else value)
    return text[:6000]
