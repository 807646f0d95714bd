"""A search selects among comparable trials only (finished ones, or those at the same epoch)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd

from ssad.study.leaderboard import best_configs, comparable
from ssad.study.promote import candidates

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
