"""MLflow Model Registry adapter: promoted detectors as ``mlflow.pyfunc`` models.

A registered model ``ssad-<class>`` version holds the detector folder (config, weights, memory bank,
threshold) as a pyfunc artifact together with the ``ssad`` code, so ``mlflow.pyfunc.load_model``
works without knowing ssad's internals. ``Detector.load("models:/ssad-<class>@champion")`` and
``ssad predict models:/...`` download the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.pyfunc import PythonModel

__all__ = ["DEFAULT_TRACKING_URI", "SsadPyfunc", "download_detector", "log_detector", "model_name"]

DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
CHAMPION = "champion"


def model_name(class_name: str) -> str:
    return f"ssad-{class_name}"


def _tracking_uri() -> str:
    from ssad.study.tracking import check_tracking_uri

    return check_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))


def download_detector(uri: str, *, tracking_uri: str | None = None) -> Path:
    """Download a registered / logged ssad model (``models:/…``, ``runs:/…``) → detector folder."""
    uri_store = tracking_uri or _tracking_uri()
    mlflow.set_tracking_uri(uri_store)
    mlflow.set_registry_uri(uri_store)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as exc:  # MlflowException, connection errors: name the URI
        raise FileNotFoundError(f"{uri}: cannot download from {uri_store} ({exc})") from None
    try:
        meta = yaml.safe_load((local / "MLmodel").read_text())
        folder = local / meta["flavors"]["python_function"]["artifacts"]["detector"]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise FileNotFoundError(
            f"{uri}: not an ssad model (no 'detector' artifact in {local}/MLmodel)"
        ) from None
    return folder


class SsadPyfunc(PythonModel):
    """pyfunc wrapper: images in, anomaly scores (and decisions) out.

    Input: an array (N, H, W, 3) / (H, W, 3) of RGB uint8, a list of such arrays, or a DataFrame
    with a ``path`` column of image files. Output: a DataFrame with ``score`` and ``anomalous``.
    """

    def load_context(self, context) -> None:
        from ssad.detector import Detector

        self.detector = Detector.load(context.artifacts["detector"])

    def predict(
        self, context, model_input: Any, params: dict[str, Any] | None = None
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


def log_detector(
    *,
    tracking_uri: str,
    run_id: str,
    folder: Path,
    class_name: str,
    tags: dict[str, str],
) -> str:
    """Log ``folder`` as a pyfunc model in ``run_id``, register it and alias it ``champion``.

    Returns the new registered version.
    """
    import ssad

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    name = model_name(class_name)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"detector": str(folder)},
            code_paths=[str(Path(ssad.__file__).parent)],
            pip_requirements=[
                "torch",
                "torchvision",
                "faiss-cpu",
                "opencv-python-headless",
                "pyyaml",
                "pandas",
            ],
        )
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(
            name, description=f"ssad anomaly detector for class {class_name}"
        )
    version = client.create_model_version(
        name, source=info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id
    )
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return version.version
