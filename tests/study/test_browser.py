"""The study as a user sees it in a browser: MLflow's runs table and the study's dashboards.

A real ``mlflow server`` on 127.0.0.1, a tiny real study run against it, and headless Chromium
on the UI's runs table (a React app rendered client-side: its DOM after some virtual time) and
on every dashboard the study logged to its parent run (``dashboards/<name>.html``, served by the
tracking server). Screenshots go to ``runs/ci-artifacts/screenshots/``. Skips without Chromium
(Debian: ``apt-get install chromium``).

The experiment-kind tag tests at the top are fast unit tests on a SQLite store.
"""

from __future__ import annotations

import copy
import html
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from mlflow import MlflowClient

from ssad.study.spec import load_spec
from ssad.study.tracking import (
    EXPERIMENT_KIND_TRAINING,
    RUNS_VIEW_KEY,
    RUNS_VIEW_NAME,
    TAG_EXPERIMENT_KIND,
    TAG_SAVED_VIEW,
    StudyTracker,
    runs_table_url,
    runs_view_state,
    save_runs_view,
)
from ssad.study.tune.runner import run_study

# Every dashboards/<name>.html a search study logs to its parent run: a dashboard added to the
# study must be added here (test_parent_run_logs_the_listed_dashboards fails until it is).
DASHBOARDS = ["study"]
WINDOW = (1400, 1000)
# The runs table on a full-HD screen: on a local server (127.0.0.1) MLflow 3.17 opens its
# Assistant panel on a browser's first visit, and in 1400 px beside it the table shows the tag
# columns with the metrics a scroll away.
RUNS_WINDOW = (1920, 1080)
# The runs page's search facets: with any of them in the URL, MLflow 3.17 skips the saved view.
SEARCH_FACETS = {
    "searchFilter",
    "orderByKey",
    "orderByAsc",
    "startTime",
    "lifecycleFilter",
    "modelVersionFilter",
    "datasetsFilter",
}


def visible_text(dom: str) -> str:
    """The text of an HTML document, scripts and styles left out, whitespace collapsed."""
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def wait_for_text(browser, url: str, png: Path, expected: list[str], timeout: float = 90) -> str:
    """The page's DOM once its visible text shows every string of ``expected`` (or at the
    timeout); ``png`` is a screenshot of that same page load."""
    deadline = time.monotonic() + timeout
    while True:
        dom = browser.capture(url, png)
        text = visible_text(dom)
        if all(s in text for s in expected) or time.monotonic() > deadline:
            return dom
        time.sleep(1)


def check_png(path: Path, window: tuple[int, int] = WINDOW) -> None:
    """A real picture at the window size: decodable, not one colour, not a blank page."""
    assert path.stat().st_size > 10_000, f"{path}: {path.stat().st_size} bytes"
    img = cv2.imread(str(path))
    assert img is not None, f"{path}: not a decodable image"
    assert img.shape == (window[1], window[0], 3), img.shape
    colours = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colours) > 16, f"{path}: {len(colours)} colours (blank page?)"


def table_cells(dom: str) -> tuple[set[str], dict[str, dict[str, str]]]:
    """The runs table (ag-grid) in a DOM: the column ids with a header cell, and each row's cell
    texts by row id (the run id) and column id. A row is split over the pinned and the scrolled
    part; ag-grid renders the columns in and near the viewport only."""
    headers = set(re.findall(r'role="columnheader"[^>]*\bcol-id="([^"]+)"', dom))
    rows: dict[str, dict[str, str]] = {}
    starts = list(re.finditer(r'<div[^>]*role="row"[^>]*\brow-id="([^"]+)"[^>]*>', dom))
    for here, after in zip(starts, [*starts[1:], None], strict=True):
        part = dom[here.end() : after.start() if after else len(dom)]
        row = rows.setdefault(here.group(1), {})
        for cell in part.split('role="gridcell"')[1:]:
            found = re.match(
                r'[^>]*\bcol-id="([^"]+)"[^>]*>.*?class="ag-cell-value">([^<]*)<', cell, re.S
            )
            if found:
                row[found.group(1)] = html.unescape(found.group(2))
    return headers, rows


def js_number(value: float) -> str:
    """A metric as the UI prints it (JavaScript's Number#toString: 1 for 1.0)."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


# ---- the experiment kind (unit) -----------------------------------------------------------------
def test_study_experiments_are_tagged_model_training(tmp_path: Path) -> None:
    """A new study's experiment is tagged, so is one from before the tag (an old study); a kind
    someone set by hand is kept."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    new = StudyTracker(uri, "ssad-new", "new").experiment_id
    assert client.get_experiment(new).tags[TAG_EXPERIMENT_KIND] == "custom_model_development"
    assert EXPERIMENT_KIND_TRAINING == "custom_model_development"

    old = client.create_experiment("ssad-old")
    assert TAG_EXPERIMENT_KIND not in client.get_experiment(old).tags
    assert StudyTracker(uri, "ssad-old", "old").experiment_id == old
    assert client.get_experiment(old).tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND_TRAINING

    chosen = client.create_experiment("ssad-chosen", tags={TAG_EXPERIMENT_KIND: "finetuning"})
    assert StudyTracker(uri, "ssad-chosen", "chosen").experiment_id == chosen
    assert client.get_experiment(chosen).tags[TAG_EXPERIMENT_KIND] == "finetuning"


def test_runs_table_url_opens_the_trials_view() -> None:
    url = runs_table_url("http://127.0.0.1:5000/", "7")
    base, query = url.split("?", 1)
    assert base == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert urllib.parse.parse_qs(query) == {
        "viewStateShareKey": [RUNS_VIEW_KEY],  # the saved view: columns, their order, the sort
        "workflowType": ["machine_learning"],  # model-training navigation, not GenAI
    }
    assert not SEARCH_FACETS & set(urllib.parse.parse_qs(query))  # the view's sort, not the URL's
    assert len(url) < 120, url


def test_trials_view_is_saved_on_the_experiment(tmp_path: Path) -> None:
    """The view as MLflow 3.17's UI reads it: an experiment tag holding name, createdAt and the
    state (a JSON string); saved once, rewritten only when it changed, its creation time kept."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("ssad-view")
    tag = TAG_SAVED_VIEW + RUNS_VIEW_KEY
    assert tag == "mlflow.sharedViewState.ssad-trials"
    assert save_runs_view(client, exp) is True
    view = json.loads(client.get_experiment(exp).tags[tag])
    assert view["name"] == RUNS_VIEW_NAME and isinstance(view["createdAt"], int)
    state = json.loads(view["state"])
    assert state == runs_view_state()
    assert (state["orderByKey"], state["orderByAsc"]) == ("tags.`mlflow.runName`", True)
    columns = state["selectedColumns"]
    assert columns[:4] == [
        "tags.`ssad.class`",
        "tags.`ssad.variant`",
        "tags.`ssad.config_id`",
        "tags.`ssad.status`",
    ]
    assert columns[4:6] == ["metrics.`val_image_auroc`", "metrics.`val_image_auroc_ema`"]
    assert {"metrics.`val_pixel_auroc`", "metrics.`val_aupro_ema`"} <= set(columns)
    assert state["columnOrder"] == columns and set(state["columnWidths"]) == set(columns)
    assert save_runs_view(client, exp) is False  # unchanged: not written again

    stale = {**view, "state": json.dumps({"selectedColumns": []}), "updatedAt": 1}
    client.set_experiment_tag(exp, tag, json.dumps(stale))
    assert save_runs_view(client, exp) is True
    again = json.loads(client.get_experiment(exp).tags[tag])
    assert again["createdAt"] == view["createdAt"] and json.loads(again["state"]) == state


# ---- a served study in the browser (slow) -------------------------------------------------------
@pytest.fixture(scope="module")
def browser_server(
    browser,  # first: without Chromium, skip before starting anything
    tmp_path_factory: pytest.TempPathFactory,
    study_helpers: SimpleNamespace,
) -> Iterator[SimpleNamespace]:
    """A real ``mlflow server`` on 127.0.0.1, started (not awaited: it boots while Ray does)."""
    h = study_helpers
    folder = tmp_path_factory.mktemp("browser")
    port = h.free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 (closed in teardown)
    proc = h.start_mlflow_server(
        port=port,
        backend_store=f"sqlite:///{folder / 'server.db'}",
        artifacts=folder / "artifacts",
        log=log,
    )
    try:
        yield SimpleNamespace(uri=f"http://127.0.0.1:{port}", proc=proc, folder=folder)
    finally:
        h.stop_group(proc)
        log.close()


@pytest.fixture(scope="module")
def served_study(
    browser_server: SimpleNamespace,  # before local_ray: the server starts while Ray does
    study_data: Path,
    study_helpers: SimpleNamespace,
    local_ray: Path,
) -> SimpleNamespace:
    """A tiny study (2 classes x 1 trial) run against the server."""
    h, uri, folder = study_helpers, browser_server.uri, browser_server.folder
    h.wait_http(f"{uri}/health", 120, browser_server.proc)
    path = h.write_spec(
        folder / "spec", data_root=study_data, name="browser", tracking_uri=uri, num_samples=1
    )
    spec = load_spec(path)
    out = run_study(spec)
    assert out["errors"] == 0
    client = MlflowClient(tracking_uri=uri)
    trials = client.search_runs([out["experiment_id"]], "tags.`ssad.role` = 'trial'")
    assert len(trials) == spec.total_trials() == 2
    return SimpleNamespace(
        uri=uri,
        folder=folder,
        spec=spec,
        client=client,
        experiment_id=out["experiment_id"],
        parent=client.get_run(out["parent_run_id"]),
        trial_names=sorted(r.info.run_name for r in trials),
        screenshots=h.SCREENSHOTS,
    )


@pytest.mark.slow
def test_runs_table_shows_the_trials_view(served_study: SimpleNamespace, browser) -> None:
    """The deep link ``ssad study`` prints opens the model-training table with every trial and,
    as columns, its class, config id, status and final validation metrics."""
    s = served_study
    exp = s.client.get_experiment(s.experiment_id)
    assert exp.tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND_TRAINING
    assert TAG_SAVED_VIEW + RUNS_VIEW_KEY in exp.tags  # saved by the study's trial runs
    url = runs_table_url(s.uri, s.experiment_id)
    names = [*s.trial_names, s.parent.info.run_name]
    assert s.trial_names == ["brick-0001", "gelcap-0001"]
    headers = ["ssad.class", "ssad.config_id", "ssad.status", "val_image_auroc"]
    png = s.screenshots / "runs-table.png"
    wide = copy.copy(browser)
    wide.window = RUNS_WINDOW
    trials = s.client.search_runs([s.experiment_id], "tags.`ssad.role` = 'trial'")
    values = [r.data.tags["ssad.status"] for r in trials]
    values += [js_number(r.data.metrics["val_image_auroc"]) for r in trials]
    tic = time.monotonic()
    # the view is applied after the page's first render: wait for its columns and values
    dom = wait_for_text(wide, url, png, [*names, *headers, *values])
    seconds = time.monotonic() - tic
    text = visible_text(dom)
    missing = [n for n in [*names, *headers, *values] if n not in text]
    assert not missing, f"{url} does not show {missing}; page text: {text[:3000]}"
    # the model-training navigation (GenAI's lists Observability, Sessions, Prompts instead)
    assert "Model registry" in text and "Observability" not in text, text[:1000]
    assert RUNS_VIEW_NAME in text  # the view, named in the Views menu

    columns, rows = table_cells(dom)
    tag_cols = ["tags.`ssad.class`", "tags.`ssad.config_id`", "tags.`ssad.status`"]
    metric_cols = ["metrics.`val_image_auroc`", "metrics.`val_image_auroc_ema`"]
    assert set(tag_cols + metric_cols) <= columns, sorted(columns)
    assert "tags.`ssad.variant`" not in columns  # a search study: no variants, no column
    assert "attributes.`Dataset`" not in columns  # the default layout's columns, replaced
    for run in trials:
        tags, metrics = run.data.tags, run.data.metrics  # metrics: each one's last value
        assert tags["ssad.status"] in ("finished", "stopped"), tags
        shown = rows.get(run.info.run_id, {})
        expected = {f"tags.`{k}`": tags[k] for k in ("ssad.class", "ssad.config_id", "ssad.status")}
        expected.update({c: js_number(metrics[c.split("`")[1]]) for c in metric_cols})
        assert {c: shown.get(c) for c in expected} == expected, (run.info.run_name, shown)
    check_png(png, RUNS_WINDOW)
    print(f"runs table shown after {seconds:.1f} s: {url}")


@pytest.mark.slow
def test_parent_run_logs_the_listed_dashboards(served_study: SimpleNamespace) -> None:
    s = served_study
    logged = s.client.list_artifacts(s.parent.info.run_id, "dashboards")
    html_files = sorted(Path(a.path).stem for a in logged if a.path.endswith(".html"))
    assert html_files == sorted(DASHBOARDS)


@pytest.mark.slow
@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_is_served_and_renders(served_study: SimpleNamespace, browser, name: str) -> None:
    """The dashboard as the UI's artifact view fetches it, then rendered from disk."""
    s = served_study
    run_id = s.parent.info.run_id
    query = urllib.parse.urlencode({"path": f"dashboards/{name}.html", "run_uuid": run_id})
    status, ctype, body = fetch(f"{s.uri}/get-artifact?{query}")
    assert status == 200 and ctype.startswith("text/html"), (status, ctype)
    page = body.decode("utf-8")
    assert page.lower().startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert f"study <b>{s.spec.name}</b>" in page
    # the same file through the artifact proxy (what `mlflow artifacts download` uses)
    proxied = f"{s.uri}/api/2.0/mlflow-artifacts/artifacts/{s.experiment_id}/{run_id}"
    assert fetch(f"{proxied}/artifacts/dashboards/{name}.html")[2] == body

    local = s.folder / "dashboards" / f"{name}.html"
    local.parent.mkdir(exist_ok=True)
    local.write_bytes(body)
    png = s.screenshots / f"dashboard-{name}.png"
    text = visible_text(browser.capture(local, png, budget_ms=2000))
    assert f"study {s.spec.name}" in text
    for cls in s.spec.classes:
        assert cls in text, cls
    check_png(png)
