"""The pyfunc model of a promoted detector — MLflow's "model from code" file.

MLflow logs this file by path (no pickled Python object is stored) and runs it when the model is
loaded; ``set_model`` tells it which object serves ``predict``. The detector folder is the model's
``detector`` artifact, so the model needs no tracking store once downloaded. Input: an array
(N, H, W, 3) / (H, W, 3) of RGB uint8, a list of such arrays, or a DataFrame with a ``path``
column of image files. Output: a DataFrame with ``score`` and, with a threshold, ``anomalous``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class SsadPyfunc(PythonModel):
    """pyfunc wrapper around :class:`ssad.detector.Detector`: images in, scores out."""

    def load_context(self, context) -> None:
        from ssad.detector import Detector

        self.detector = Detector.load(context.artifacts["detector"])

    # model_input: a DataFrame (MLflow's serving input), or in Python an image array or a list of
    # arrays. The DataFrame hint is one MLflow infers no schema from, so it validates nothing (by
    # design: three input kinds) and does not advise adding a type hint at every save and load.
    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            if "path" not in model_input.columns:
                raise ValueError("DataFrame input needs a 'path' column of image files")
            images = list(model_input["path"])
        elif isinstance(model_input, np.ndarray) and model_input.ndim == 3:
            images = [model_input]
        else:
            images = list(model_input)
        scores, _ = self.detector.predict(images)
        out = pd.DataFrame({"score": scores.astype(np.float64)})
        if self.detector.threshold is not None:
            out["anomalous"] = self.detector.decide(scores)
        return out


mlflow.models.set_model(SsadPyfunc())
