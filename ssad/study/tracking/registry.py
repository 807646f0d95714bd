"""The model registry: a promoted detector as an ``mlflow.pyfunc`` model, and back.

A promoted detector folder is logged as an ``mlflow.pyfunc`` model (the model code is
``pyfunc_model.py`` beside this file, logged by path, with the ``ssad`` package) and registered as
``ssad-<class>`` with alias ``champion``. :func:`download_detector` turns ``models:/`` and
``runs:/`` URIs back into a detector folder; :mod:`ssad.study.tracking` registers it with
:mod:`ssad.resolve`, so ``Detector.load("models:/…")`` works without the detector core importing
the study layer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from ssad.study.tracking.names import CHAMPION, default_tracking_uri, model_name
from ssad.study.tracking.store import check_tracking_uri

__all__ = ["PYFUNC_CODE", "ModelRegistry", "artifact_location", "download_detector"]

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PYFUNC_REQUIREMENTS = [
    "torch",
    "torchvision",
    "faiss-cpu",
    "opencv-python-headless",
    "pyyaml",
    "pandas",
]


class ModelRegistry:
    """The registry methods of a study tracker (a mixin: they use its ``client`` and
    ``experiment_id``)."""

    def find_version(self, name: str, *, key: str):
        """The version of registered model ``name`` tagged with promotion ``key``, or None.

        A missing model has no versions; any other registry error propagates (read as "no
        version" it would register a duplicate).
        """
        for version in self.client.search_model_versions(f"name = '{name}'"):
            if version.tags.get("ssad.promotion_key") == key:
                return version
        return None

    def set_champion(self, name: str, version: str) -> None:
        self.client.set_registered_model_alias(name, CHAMPION, version)

    def register_detector(
        self, *, run_id: str, folder: Path, class_name: str, tags: dict[str, str]
    ) -> str:
        """Log ``folder`` as a pyfunc model of ``run_id``, register it, alias it ``champion``.

        Client calls only (no fluent active run): the model is saved locally, logged as a
        LoggedModel of the run, then registered. Returns the new version.
        """
        import mlflow.pyfunc

        import ssad

        client = self.client
        with tempfile.TemporaryDirectory(prefix="ssad-pyfunc-") as tmp:
            local = Path(tmp) / "model"
            mlflow.pyfunc.save_model(
                str(local),
                python_model=str(PYFUNC_CODE),
                artifacts={"detector": str(folder)},
                code_paths=[str(Path(ssad.__file__).parent)],
                pip_requirements=PYFUNC_REQUIREMENTS,
            )
            model = client.create_logged_model(
                self.experiment_id, name="model", source_run_id=run_id
            )
            client.log_model_artifacts(model.model_id, str(local))
            client.finalize_logged_model(model.model_id, "READY")
            client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        name = model_name(class_name)
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise
            client.create_registered_model(
                name, description=f"ssad anomaly detector for class {class_name}"
            )
        version = client.create_model_version(
            name,
            # the artifact location, not models:/<id>: MLflow resolves that through the
            # process-wide tracking URI, not this client's
            source=model.artifact_location,
            run_id=run_id,
            tags=tags,
            model_id=model.model_id,
        )
        self.set_champion(name, version.version)
        return version.version


def artifact_location(client: MlflowClient, uri: str) -> str:
    """A ``models:/`` or ``runs:/`` URI → the artifact location it names, looked up in ``client``'s
    store.

    MLflow's own resolution of these URIs (``download_artifacts(..., tracking_uri=...)``) looks the
    model name up in the process-wide store, whatever store is passed: once anything in the
    process had set that (a promotion into another store, say), ``models:/ssad-brick@champion``
    silently came from the wrong registry.
    """
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    def join(base: str, sub: str) -> str:
        return base.rstrip("/") + "/" + sub if sub else base

    if uri.startswith("runs:/"):
        run_id, _, sub = uri[len("runs:/") :].partition("/")
        return join(client.get_run(run_id).info.artifact_uri, sub)
    if not uri.startswith("models:/"):
        return uri
    base, sub = ModelsArtifactRepository.split_models_uri(uri)
    ref = base[len("models:/") :]
    if "@" in ref:  # models:/<name>@<alias>
        name, alias = ref.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
    elif "/" in ref:  # models:/<name>/<version>
        name, version = ref.split("/", 1)
        if not version.isdigit():
            raise MlflowException(
                f"{uri}: stages are not supported; use models:/{name}@<alias> or "
                f"models:/{name}/<version>"
            )
    else:  # models:/<logged model id>
        return join(client.get_logged_model(ref).artifact_location, sub)
    return join(client.get_model_version_download_uri(name, version), sub)


def download_detector(uri: str, *, tracking_uri: str | None = None) -> Path:
    """A registered / logged ssad model (``models:/…``, ``runs:/…``) → its local detector folder.

    ``tracking_uri``: the store (default ``$MLFLOW_TRACKING_URI``, else the project's SQLite
    store); passed explicitly, no process-wide MLflow setting is changed.
    """
    import mlflow.artifacts

    store = check_tracking_uri(tracking_uri or default_tracking_uri())
    try:
        location = artifact_location(MlflowClient(tracking_uri=store, registry_uri=store), uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, tracking_uri=store))
    except (MlflowException, OSError) as exc:  # name the URI and the store
        raise FileNotFoundError(f"{uri}: cannot download from {store} ({exc})") from None
    try:
        meta = yaml.safe_load((local / "MLmodel").read_text())
        return local / meta["flavors"]["python_function"]["artifacts"]["detector"]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise FileNotFoundError(
            f"{uri}: not an ssad model (no 'detector' artifact in {local}/MLmodel)"
        ) from None
