"""The runs table's saved view of a study's trials, and the deep link that opens it."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ssad.study.spec import METRICS
from ssad.study.tracking.names import TAG_CLASS, TAG_STATUS, TAG_VARIANT

__all__ = [
    "RUNS_VIEW_KEY",
    "RUNS_VIEW_NAME",
    "TAG_SAVED_VIEW",
    "runs_table_url",
    "runs_view_state",
    "save_runs_view",
]

log = logging.getLogger(__name__)

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
