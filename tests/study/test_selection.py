"""A search selects among comparable trials only (finished ones, or those at the same epoch)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd

from ssad.study.promote import candidates
from ssad.study.results.leaderboard import best_configs, comparable

M = "val_image_auroc_ema"


def _frame(rows: list[tuple[str, str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "class": c,
                "config_id": cid,
                "trial_id": cid,
                "trial_name": cid,
                "status": st,
                "epochs": ep,
                M: v,
                "params": "{}",
            }
            for c, cid, st, ep, v in rows
        ]
    )


SPEC = SimpleNamespace(classes=("brick", "gelcap"), metric=M, mode="max", path="spec.yaml")


def test_a_stopped_trials_early_value_never_beats_a_finished_one() -> None:
    df = _frame(
        [
            ("brick", "lucky", "stopped", 3, 0.99),  # a high value at rung 3, then stopped
            ("brick", "steady", "finished", 12, 0.90),
            ("brick", "weak", "finished", 12, 0.80),
            ("brick", "broken", "failed", 12, 0.999),
        ]
    )
    assert list(comparable(df, M)["config_id"]) == ["steady", "weak"]
    assert best_configs(df, SPEC)["brick"] == "steady"
    assert [c.config_id for c in candidates(df, SPEC, "brick", top_k=3)] == ["steady", "weak"]


def test_without_finished_trials_compare_at_the_deepest_epoch() -> None:
    df = _frame(
        [
            ("gelcap", "a", "stopped", 3, 0.95),
            ("gelcap", "b", "running", 6, 0.85),
            ("gelcap", "c", "stopped", 6, 0.88),
            ("gelcap", "d", "running", 6, math.nan),  # no value yet
        ]
    )
    assert sorted(comparable(df, M)["config_id"]) == ["b", "c"]
    assert best_configs(df, SPEC) == {"gelcap": "c"}  # brick has no trials: absent


def test_summary_metrics_are_logged_once_per_summary(tmp_path) -> None:
    """A driver killed between the summary and the parent's close re-logs nothing on --resume;
    a resume that changed the counts (failed trials re-run) logs the new summary."""
    from mlflow import MlflowClient

    from ssad.study.results.leaderboard import summary_artifacts
    from ssad.study.tracking import StudyTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(uri, "exp", "study")
    parent = tracker.parent_run(params={"a": 1}, artifacts=[])
    board = pd.DataFrame([{"class": "brick", "trials": 2}])
    stats = {"trials": 2, "finished": 1, "failed": 1, "trial_seconds": 10.0, "wall_s": 30.0}
    summary_artifacts(tracker, parent, board, stats)
    summary_artifacts(tracker, parent, board, {**stats, "wall_s": 0.2})  # the resume's re-run
    client = MlflowClient(uri)
    assert [m.value for m in client.get_metric_history(parent, "wall_s")] == [30.0]
    assert len(client.get_metric_history(parent, "trials")) == 1
    summary_artifacts(tracker, parent, board, {**stats, "finished": 2, "failed": 0})
    assert [m.value for m in client.get_metric_history(parent, "failed")] == [1.0, 0.0]
    assert client.get_run(parent).info.status == "FINISHED"


def test_defects_search_with_synthetic_validation_is_judged_on_fixed_defects(tmp_path) -> None:
    """data.val_source synthetic draws validation defects with fixed ranges, not the trial's
    defects.*; so a space over defects.* is accepted (tests/data/test_pretext.py checks that two
    trials with different defects.* get the same validation images)."""
    import inspect

    from ssad.config import load_config
    from ssad.data import pretext
    from ssad.study.spec import load_search_space
    from ssad.study.spec.rules import search_refusal

    assert "defects" not in inspect.signature(pretext.synthetic_anomalies).parameters
    base = load_config(overrides={"data.val_source": "synthetic"})
    path = tmp_path / "space.yaml"
    path.write_text(
        "defects.big.area_max: {type: float, low: 0.1, high: 0.3}\n"
        "defects.fills: {type: categorical, choices: [[mean], [cutpaste, random]]}\n"
    )
    assert load_search_space(path, base=base).keys == ["defects.big.area_max", "defects.fills"]
    assert search_refusal("defects.big.area_max") is None
    assert search_refusal("data.val_draws") is not None  # how many defects: refused
