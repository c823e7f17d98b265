"""The MLflow pyfunc model, logged as code ("models from code"): MLflow stores this file, not a pickle.

Artefacts of a registered model (see registry.py): `config` (model_config.json: classes, prompt template,
base backbone name + fingerprint), `adapter` (adapter_config.json + safetensors), optionally `backbone`
(bundled base weights, safetensors) and `tokenizer` (bundled tokenizer files). Load-time options
(`mlflow.pyfunc.load_model(uri, model_config={...})`): `weights` (a weight source for the base backbone when
it is not bundled, e.g. local-dir:/models/biomedclip), `text_dir`, `device`."""
from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MedClipSVDModel(PythonModel):
    def load_context(self, context):
        from medclipsvd.tracking.model_files import verify_served_files
        from medclipsvd.tracking.predictor import Predictor

        arts = context.artifacts
        verify_served_files(arts["config"])  # the data files are the ones registered (sha256 in MLmodel)
        options = dict(context.model_config or {})
        self.predictor = Predictor.from_files(arts["config"], arts["adapter"], bundle=arts.get("backbone"),
                                              tokenizer_dir=arts.get("tokenizer"), overrides=options,
                                              device=options.get("device", "cpu"))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """A DataFrame with a column `image` (file paths or arrays; optional `index`: DICOM frame / NIfTI
        slice) -> a DataFrame: label, label_index, score, prob_<class> for every class."""
        return self.predictor.predict_frame(model_input)


mlflow.models.set_model(MedClipSVDModel())
