"""MLflow adapter — the one module that calls MLflow: study runs, trial runs, the model registry.

Tracking: one experiment per study, a parent run per launch, one nested run per trial.

Everything goes through :class:`mlflow.MlflowClient` with explicit run ids — the fluent API keeps
one global active run per process and collides when trials log concurrently. Trial runs are found
by their ``ssad.trial_id`` tag, so a resumed or retried trial keeps its run and never gets a second
one, and per-epoch metrics already logged are not logged again.

Each launch of a study (a first run, or ``ssad study run --new``) has its own parent run and a
launch id (tag ``ssad.launch_id`` on the parent and on every trial run); a resume continues the
newest launch. Readers (leaderboard, promotion, dashboards) see the newest launch only, so runs of
an earlier launch, perhaps from another search space, never mix into its results.

Registry: a promoted detector folder is logged as an ``mlflow.pyfunc`` model (the model code is
``pyfunc_model.py``, logged by path, with the ``ssad`` package) and registered as ``ssad-<class>``
with alias ``champion``. :func:`download_detector` turns ``models:/`` / ``runs:/`` URIs back into a
detector folder; importing this module registers it with :mod:`ssad.resolve`, so
``Detector.load("models:/…")`` works without the detector core importing the study layer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from ssad import resolve
from ssad.study.spec import METRICS

__all__ = [
    "CHAMPION",
    "DEFAULT_TRACKING_URI",
    "TRACKING_ERRORS",
    "StudyTracker",
    "TrackingUnavailable",
    "artifact_location",
    "check_tracking_uri",
    "download_detector",
    "git_sha",
    "mark_reachable",
    "mark_unreachable",
    "model_name",
    "reachable",
    "runs_table_url",
    "runs_view_state",
    "save_runs_view",
    "unreachable",
]

log = logging.getLogger(__name__)

TAG_STUDY, TAG_ROLE, TAG_TRIAL, TAG_CLASS = "ssad.study", "ssad.role", "ssad.trial_id", "ssad.class"
TAG_STATUS, TAG_LAUNCH, TAG_VARIANT = "ssad.status", "ssad.launch_id", "ssad.variant"
# The experiment kind MLflow 3 keeps for its UI: classic model training, not GenAI (the UI's
# ExperimentKind.CUSTOM_MODEL_DEVELOPMENT; the other values: genai_development, finetuning, ...).
TAG_EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"
DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
CHAMPION = "champion"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PYFUNC_REQUIREMENTS = [
    "torch",
    "torchvision",
    "faiss-cpu",
    "opencv-python-headless",
    "pyyaml",
    "pandas",
]


def model_name(class_name: str) -> str:
    """The registered model of a class: ``ssad-<class>``."""
    return f"ssad-{class_name}"


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


# ---- an unreachable tracking store -------------------------------------------------------------
# What MLflow's client raises when its store is away: MlflowException ("API request to ... failed
# with exception ... Max retries exceeded ... Connection refused", or a timeout), or an OSError
# (requests' own errors are OSErrors: an artifact upload to a stopped server).
TRACKING_ERRORS = (MlflowException, OSError)
# A fail-fast client (see StudyTracker(fail_fast=True)) gives up after about 3 s on a dead server
# instead of MLflow's default of 7 retries with exponential backoff (about 4 minutes per call).
FAIL_FAST_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
PROBE_TIMEOUT_S = 3.0
_UNREACHABLE: dict[str, float] = {}  # tracking URI -> when this process found it unreachable
_ENV_LOCK = threading.Lock()


class TrackingUnavailable(ConnectionError):
    """The tracking store was found unreachable and still is (raised at once, no retries)."""


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (from an MLflow call) means the store is away, not that a request was bad.

    No answer, a timeout, a 5xx after MLflow's retries: the store. A 4xx answer (an unknown run,
    an invalid value): the request.
    """
    if isinstance(exc, RestException):
        return exc.get_http_status_code() >= 500
    if isinstance(exc, MlflowException):
        return True
    return isinstance(
        exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)
    )


def reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A tracking server answers ``/health`` within ``timeout`` s (a non-HTTP store: True)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def mark_unreachable(uri: str) -> None:
    """Remember (in this process) that ``uri`` is away: every :class:`StudyTracker` on it then
    checks ``/health`` before a call and raises :class:`TrackingUnavailable` at once while it
    fails, instead of stalling minutes in MLflow's retries."""
    _UNREACHABLE.setdefault(uri, time.time())


def mark_reachable(uri: str) -> None:
    _UNREACHABLE.pop(uri, None)


@contextmanager
def _fail_fast_http():
    """MLflow's HTTP retry settings are read from the environment at each request."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in FAIL_FAST_HTTP}
        os.environ.update(FAIL_FAST_HTTP)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class _FailFastClient:
    """An :class:`MlflowClient` whose calls give up after a few seconds on a dead server."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with _fail_fast_http():
                return attr(*args, **kwargs)

        return call


# MLflow 3.17's saved views of the runs table ("Views" above it): an experiment tag
# ``mlflow.sharedViewState.<key>`` holding {"name", "createdAt", "updatedAt", "state"}, ``state`` a
# JSON string of the runs page's search facets and table state (``selectedColumns``,
# ``columnOrder``, ...); the page opens one from ``?viewStateShareKey=<key>``. The column ids are
# the UI's canonical keys: tags.`KEY`, metrics.`KEY`.
TAG_SAVED_VIEW = "mlflow.sharedViewState."
RUNS_VIEW_KEY, RUNS_VIEW_NAME = "ssad-trials", "ssad trials"
RUNS_VIEW_TAGS = (TAG_CLASS, TAG_VARIANT, "ssad.config_id", TAG_STATUS)
# The validation metrics a trial logs, each raw value next to its moving average.
RUNS_VIEW_METRICS = tuple(m for r in METRICS if not r.endswith("_ema") for m in (r, f"{r}_ema"))


def runs_view_state() -> dict[str, Any]:
    """The trials view: sorted by run name (a flat list: sorted by date, the UI folds trials under
    their parent run); the class, variant, config id and status tags, then every validation
    metric a study may use (a spec's metrics are among them), each column wide enough for its
    name (val_image_auroc and val_image_auroc_ema differ at the end)."""
    columns = [f"tags.`{t}`" for t in RUNS_VIEW_TAGS]
    columns += [f"metrics.`{m}`" for m in RUNS_VIEW_METRICS]
    return {
        "orderByKey": "tags.`mlflow.runName`",
        "orderByAsc": True,
        "selectedColumns": columns,
        "columnOrder": columns,  # tags first (the UI's own order: metrics, params, tags)
        "columnWidths": {c: 28 + 7 * len(c.split("`")[1]) for c in columns},
    }


def save_runs_view(client: MlflowClient, experiment_id: str) -> bool:
    """Save the trials view (:func:`runs_view_state`) on the experiment, where
    :func:`runs_table_url` opens it (the UI lists it under "Views" too). Written only when
    missing or different, ``createdAt`` kept; returns whether it was written. A store that
    refuses it (or is away) costs a warning, never a trial's run: the view is for the eyes."""
    state = json.dumps(runs_view_state(), sort_keys=True)
    tag = TAG_SAVED_VIEW + RUNS_VIEW_KEY
    try:
        try:
            old = json.loads(client.get_experiment(experiment_id).tags.get(tag, "{}"))
        except ValueError:
            old = None
        old = old if isinstance(old, dict) else {}
        if old.get("state") == state and old.get("name") == RUNS_VIEW_NAME:
            return False
        now = int(time.time() * 1000)
        created = old.get("createdAt") if isinstance(old.get("createdAt"), int) else now
        view = {"name": RUNS_VIEW_NAME, "createdAt": created, "updatedAt": now, "state": state}
        client.set_experiment_tag(experiment_id, tag, json.dumps(view))
    except (MlflowException, OSError) as exc:
        log.warning(
            "MLflow: the runs table's trials view not saved on experiment %s (%s)",
            experiment_id,
            " ".join(str(exc).split())[:300],
        )
        return False
    return True


def runs_table_url(ui: str, experiment_id: str) -> str:
    """Deep link to the training-runs table in the trials view (:func:`save_runs_view`).

    MLflow 3.17's UI picks GenAI or model-training navigation from a global switch (the URL's
    ``workflowType``, else the browser's last choice, GenAI by default), not from the
    experiment's kind tag. Its runs table shows run name, date, dataset and duration unless a
    view selects columns: the saved view the study's trial runs wrote selects the class,
    variant, config id and status tags and the validation metrics, sorted by run name (every
    trial listed). The UI says it is a shared view; the user's own saved layout is untouched.
    A view's sort travels in the view: with sort keys in the URL the UI would ignore it.
    """
    query = f"viewStateShareKey={RUNS_VIEW_KEY}&workflowType=machine_learning"
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


class StudyTracker:
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
        if self.tracking_uri in _UNREACHABLE:
            if not reachable(self.tracking_uri):
                since = time.strftime("%H:%M:%S", time.localtime(_UNREACHABLE[self.tracking_uri]))
                raise TrackingUnavailable(
                    f"mlflow.tracking_uri {self.tracking_uri}: tracking server unreachable "
                    f"(since {since}); what it missed is kept in Tune's storage: once it is "
                    "back, `ssad study sync SPEC` logs it"
                )
            mark_reachable(self.tracking_uri)
        if self._client is None:
            client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
            self._client = _FailFastClient(client) if self.fail_fast else client
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
        self._create_parent(launch, f"study-{self.study}-{launch}")
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
            run = self._create_parent(launch or uuid.uuid4().hex[:12], f"study-{self.study}")
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in params.items()])
        for path in artifacts:
            self.client.log_artifact(run_id, str(path))
        return run_id

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
            run_name=tags.get("ssad.trial_name") or f"{tags.get(TAG_CLASS, 'trial')}-{trial_id}",
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

    def artifact_files(self, run_id: str, path: str | None = None) -> dict[str, int | None]:
        """Every artifact file of a run (relative path -> size), folders walked."""
        out: dict[str, int | None] = {}
        for item in self.client.list_artifacts(run_id, path):
            if item.is_dir:
                out.update(self.artifact_files(run_id, item.path))
            else:
                out[item.path] = item.file_size
        return out

    def upload_missing(self, run_id: str, folder: Path) -> int:
        """Upload the files of ``folder`` a run lacks (or has with another size); returns how many."""
        have = self.artifact_files(run_id)
        count = 0
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            rel = path.relative_to(folder)
            if have.get(rel.as_posix(), -1) == path.stat().st_size:
                continue
            parent = rel.parent.as_posix()
            self.client.log_artifact(run_id, str(path), None if parent == "." else parent)
            count += 1
        return count

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

    def log_artifacts(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's contents (under ``artifact_path``) to a run."""
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path=artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

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

    # ---- model registry ------------------------------------------------------------------------
    def find_version(self, name: str, *, key: str):
        """The version of registered model ``name`` tagged with promotion ``key``, or None.

        A missing model has no versions; any other registry error propagates (read as "no
        version" it would register a duplicate).
        """
        for version in self.client.search_model_versions(f"name = '{name}'"):
            if version.tags.get("ssad.promotion_key") == key:
                return version
        return None

    def set_champion(self, name: str, version: str) -> None:
        self.client.set_registered_model_alias(name, CHAMPION, version)

    def register_detector(
        self, *, run_id: str, folder: Path, class_name: str, tags: dict[str, str]
    ) -> str:
        """Log ``folder`` as a pyfunc model of ``run_id``, register it, alias it ``champion``.

        Client calls only (no fluent active run): the model is saved locally, logged as a
        LoggedModel of the run, then registered. Returns the new version.
        """
        import mlflow.pyfunc

        import ssad

        client = self.client
        with tempfile.TemporaryDirectory(prefix="ssad-pyfunc-") as tmp:
            local = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                str(local),
                python_model=str(PYFUNC_CODE),
                artifacts={"detector": str(folder)},
                code_paths=[str(Path(ssad.__file__).parent)],
                pip_requirements=PYFUNC_REQUIREMENTS,
            )
            model = client.create_logged_model(
                self.experiment_id, name="model", source_run_id=run_id
            )
            client.log_model_artifacts(model.model_id, str(local))
            client.finalize_logged_model(model.model_id, "READY")
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        name = model_name(class_name)
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            client.create_registered_model(
                name, description=f"ssad anomaly detector for class {class_name}"
            )
        version = client.create_model_version(
            name,
            # the artifact location, not models:/<id>: MLflow resolves that through the
            # process-wide tracking URI, not this client's
            source=model.artifact_location,
            run_id=run_id,
            tags=tags,
            model_id=model.model_id,
        )
        self.set_champion(name, version.version)
        return version.version


def artifact_location(client: MlflowClient, uri: str) -> str:
    """A ``models:/`` or ``runs:/`` URI → the artifact location it names, looked up in ``client``'s
    store.

    MLflow's own resolution of these URIs (``download_artifacts(..., tracking_uri=...)``) looks the
    model name up in the process-wide store, whatever store is passed: once anything in the
    process had set that (a promotion into another store, say), ``models:/ssad-brick@champion``
    silently came from the wrong registry.
    """
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    def join(base: str, sub: str) -> str:
        return base.rstrip("/") + "/" + sub if sub else base

    if uri.startswith("runs:/"):
        run_id, _, sub = uri[len("runs:/") :].partition("/")
        return join(client.get_run(run_id).info.artifact_uri, sub)
    if not uri.startswith("models:/"):
        return uri
    base, sub = ModelsArtifactRepository.split_models_uri(uri)
    ref = base[len("models:/") :]
    if "@" in ref:  # models:/<name>@<alias>
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    elif "/" in ref:  # models:/<name>/<version>
        name, version = ref.split("/", 1)
        if not version.isdigit():
            raise MlflowException(
                f"{uri}: stages are not supported; use models:/{name}@<alias> or "
                f"models:/{name}/<version>"
            )
    else:  # models:/<logged model id>
        return join(client.get_logged_model(ref).artifact_location, sub)
    return join(client.get_model_version_download_uri(name, version), sub)


def download_detector(uri: str, *, tracking_uri: str | None = None) -> Path:
    """A registered / logged ssad model (``models:/…``, ``runs:/…``) → its local detector folder.

    ``tracking_uri``: the store (default ``$MLFLOW_TRACKING_URI``, else the project's SQLite
    store); passed explicitly, no process-wide MLflow setting is changed.
    """
    import mlflow.artifacts

    store = check_tracking_uri(
        tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    )
    try:
        location = artifact_location(MlflowClient(tracking_uri=store, registry_uri=store), uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=store))
    except (MlflowException, OSError) as exc:  # name the URI and the store
        raise FileNotFoundError(f"{uri}: cannot download from {store} ({exc})") from None
    try:
        meta = yaml.safe_load((local / "MLmodel").read_text())
        return local / meta["flavors"]["python_function"]["artifacts"]["detector"]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise FileNotFoundError(
            f"{uri}: not an ssad model (no 'detector' artifact in {local}/MLmodel)"
        ) from None


resolve.register(("models:/", "runs:/"), download_detector)


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
