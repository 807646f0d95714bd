"""``f1_max``: the threshold at which the validation F1 is highest (the highest such threshold
among ties; :func:`ssad.metrics.f1_max`), the ``image_threshold`` validation reports."""

from __future__ import annotations

import numpy as np

from ssad.metrics import f1_max


class F1Max:
    def threshold(self, labels: np.ndarray, scores: np.ndarray) -> float:
        return f1_max(labels, scores)[1]


CALIBRATION = F1Max()
