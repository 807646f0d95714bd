"""Calibration: the image-score decision threshold of a trained class model, from its validation
scores. One rule for every path that trains a class (``ssad train``, study trials, promotion):
:data:`CALIBRATION`, registered in :data:`CALIBRATIONS`.

A calibration is a :class:`Calibration`; adding one is a module here and one line in
:data:`CALIBRATIONS`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ssad.calibration import f1max

__all__ = ["CALIBRATION", "CALIBRATIONS", "Calibration", "threshold"]


class Calibration(Protocol):
    def threshold(self, labels: np.ndarray, scores: np.ndarray) -> float:
        """Decision threshold from validation labels (N,) (nonzero = anomalous) and image
        scores (N,); an image is anomalous when ``score >= threshold``."""
        ...


CALIBRATIONS: dict[str, Calibration] = {"f1_max": f1max.CALIBRATION}
CALIBRATION = "f1_max"  # the rule every trained detector's threshold comes from


def threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold of :data:`CALIBRATION`."""
    return float(CALIBRATIONS[CALIBRATION].threshold(labels, scores))
