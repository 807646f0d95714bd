"""What a person reads: trial names, Tune's live-table columns, short tables, progress lines."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest
from ray.tune.experimental.output import _infer_user_metrics

from ssad.study.results.report import (
    Progress,
    config_changes,
    format_changes,
    leading,
    p_value,
    readable,
    short_number,
    trial_name,
)

LONG_FLOAT = re.compile(r"\d\.0*[1-9]\d{5,}")  # six or more significant digits


def test_trial_name_carries_class_and_number() -> None:
    trial = SimpleNamespace(
        trial_id="3f2a1_00004", config={"class_name": "brick", "trial_number": 7}
    )
    assert trial_name(trial) == "brick-0007"
    # unnumbered (a trial config from before numbering): the trial id keeps it unique
    old = SimpleNamespace(trial_id="3f2a1_00004", config={"class_name": "brick"})
    assert trial_name(old) == "brick-3f2a1_00004"
    # a class name that would not make a folder name
    odd = SimpleNamespace(trial_id="x", config={"class_name": "a/b:c", "trial_number": 12})
    assert trial_name(odd) == "a_b_c-0012"


def test_tune_table_shows_metric_epoch_phase_first() -> None:
    # one epoch's report as run_trial hands it over: the metric last, after many others
    metrics = {
        "epoch": 3,
        "phase": 2,
        "loss": 0.41,
        "accuracy": 0.93,
        "lr": 1e-3,
        "seconds": 1.2,
        "bank_size": 640,
        "val_image_auroc": 0.9,
        "val_image_auroc_ema": 0.88,
    }
    report = leading(metrics, ("val_image_auroc_ema", "epoch", "phase"))
    assert report == metrics
    trial = SimpleNamespace(last_result={**report, "node_id": "n1", "training_iteration": 3})
    assert _infer_user_metrics([trial]) == ["val_image_auroc_ema", "epoch", "phase", "loss"]
    assert list(leading(metrics, (None, "epoch"))) == list(metrics)  # no metric: order kept


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.912345678901234, "0.9123"),
        (0.91256, "0.9126"),
        (123.456, "123.5"),
        (12345.6, "12346"),
        (3, "3"),
        (1.2345678e-5, "1.235e-05"),
        (float("nan"), "nan"),
        (True, "True"),
        ("resnet18", "resnet18"),
    ],
)
def test_short_number(value, text: str) -> None:
    assert short_number(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.38712, "0.387"),
        (0.0206, "0.021"),
        (1.0, "1.000"),
        (0.00049, "<0.001"),
        (0.0, "<0.001"),
        (float("nan"), "–"),
        (None, "–"),
    ],
)
def test_p_values_print_alike_in_tables_and_dashboards(value, text: str) -> None:
    assert p_value(value) == text


def test_config_changes_reads_mlflow_strings() -> None:
    base = {"train.lr": 0.001, "memory.k": 3, "model.backbone": "resnet18", "train.amp": False}
    searched = {  # MLflow params come back as strings
        "train.lr": "0.0012345678901234567",
        "memory.k": "3",
        "model.backbone": "resnet18",
        "train.amp": "True",
    }
    changes = config_changes(searched, base)
    assert changes == {"train.amp": True, "train.lr": pytest.approx(0.0012345678901234567)}
    assert format_changes(changes) == "train.amp=True, train.lr=0.001235"
    assert format_changes({}) == "(as base)"
    assert format_changes(json.dumps({"memory.k": 5})) == "memory.k=5"


def test_readable_table_is_short() -> None:
    config = {"train.lr": "0.0012345678901234567", "memory.k": "3", "defects.p": "0.3333333333"}
    board = pd.DataFrame(
        {
            "class": ["brick", "gelcap"],
            "best_val_image_auroc_ema": [0.912345678901234, float("nan")],
            "trials": [4, 4],
            "compute_s": [1234.5678, 56.789123],
            "best_config": [json.dumps(config), json.dumps({})],
        }
    )
    text = readable(board, config_columns={"best_config": {"memory.k": 3, "train.lr": 0.001}})
    assert not LONG_FLOAT.search(text), text
    brick, gelcap = text.splitlines()[1:]
    assert "0.9123" in brick and "1235" in brick
    assert "defects.p=0.3333, train.lr=0.001235" in brick
    assert "memory.k" not in text  # as in the base config
    assert "(as base)" in gelcap and "56.79" in gelcap


def test_progress_lines_have_elapsed_time() -> None:
    out = io.StringIO()
    progress = Progress(out)
    progress("brick", "final training started")
    progress("brick", "registered version 2")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[\s*\d+\.\ds\] brick: final training started", lines[0])
    assert lines[1].endswith("brick: registered version 2")
