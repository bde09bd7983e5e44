"""The logged tabular model as an MLflow pyfunc, defined by code (MLflow's "models from code").

:func:`tabular.serving.log_tabular_model` logs this file as the model's code, the native Booster
(``model.lgb``) and ``tabular_model.json`` as its artifacts, and the ``tabular`` and ``common``
packages as its code paths. Loading it (``mlflow.pyfunc.load_model``, ``mlflow models serve``) runs
this file, which rebuilds the project's :class:`tabular.model.LandslideClassifier` from the two
artifacts: nothing is unpickled, and the pyfunc scores exactly as ``predict_tabular`` and the service
do, from the same raw input (categorical columns as level names, e.g. ``"sandstone"`` or ``"312"``;
levels not seen in training are treated as missing). It returns ``p_landslide`` (probability,
prior-corrected as the model says) and ``label`` (0/1 at the model's threshold).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class TabularPyfunc(PythonModel):
    """``predict(df) -> DataFrame[p_landslide, label]`` with the project's preprocessing (module docstring)."""

    def load_context(self, context: Any) -> None:
        from tabular.serving import model_from_files  # noqa: PLC0415 - the code paths are importable only now

        self.model = model_from_files(Path(context.artifacts["booster"]), Path(context.artifacts["metadata"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        p = np.asarray(self.model.predict_proba(pd.DataFrame(model_input))[:, 1], dtype=np.float64)
        return pd.DataFrame({"p_landslide": p, "label": (p >= self.model.threshold_).astype(np.int64)})


mlflow.models.set_model(TabularPyfunc())
