"""The ASHA-facing moving average: computed from the whole history, so a resume continues it."""

from __future__ import annotations

import itertools

import pytest

from ssad.study.spec import METRICS
from ssad.study.tune.trial import EMA_DECAY, ema_metrics
from ssad.train import EpochReport


def _rep(epoch: int, **metrics: float) -> EpochReport:
    return EpochReport(
        epoch=epoch,
        phase=2,
        loss=1.0,
        accuracy=0.5,
        lr=0.01,
        seconds=1.0,
        bank_size=1,
        metrics=metrics,
    )


def _largest_jump(xs: list[float]) -> float:
    return max(abs(b - a) for a, b in itertools.pairwise(xs))


def test_ema_matches_hand_computed_values_and_skips_unvalidated_epochs() -> None:
    history = [
        _rep(1),  # no validation this epoch: the average starts at the first validated one
        _rep(2, image_auroc=0.4, aupro=0.2, image_threshold=0.3),
        _rep(3, image_auroc=0.8, aupro=0.6),
        _rep(4, image_auroc=0.6, aupro=0.4),
    ]
    d = EMA_DECAY
    ema = ema_metrics(history)
    expected = d * (d * 0.4 + (1 - d) * 0.8) + (1 - d) * 0.6
    assert ema["val_image_auroc_ema"] == pytest.approx(expected)
    assert ema["val_aupro_ema"] == pytest.approx(d * (d * 0.2 + (1 - d) * 0.6) + (1 - d) * 0.4)
    assert "val_image_threshold_ema" not in ema  # only the selectable metrics
    assert set(ema) <= set(METRICS)
    # a jumpy series: the average moves less than the raw metric between epochs
    raw = [0.3, 0.7, 0.35, 0.75, 0.4]
    series = [
        ema_metrics([_rep(i + 1, image_auroc=v) for i, v in enumerate(raw[: n + 1])])
        for n in range(len(raw))
    ]
    smooth = [s["val_image_auroc_ema"] for s in series]
    assert _largest_jump(smooth) < _largest_jump(raw)
    assert ema_metrics([]) == {}
