"""MLflow "model from code" entry: logged by path, so no pickled Python object is stored."""

import mlflow

from ssad.study.registry import SsadPyfunc

mlflow.models.set_model(SsadPyfunc())
