"""The MLflow pyfunc model, logged as code ("models from code"): MLflow stores this file, not a pickle.

Artefacts of a registered model (see registry.py): `config` (model_config.json: classes, prompt template,
base backbone name + fingerprint, optional serving root), `adapter` (adapter_config.json + safetensors),
optionally `backbone` (bundled base weights, safetensors) and `tokenizer` (bundled tokenizer files).
Load-time options (`mlflow.pyfunc.load_model(uri, model_config={...})`): `weights` (a weight source for the
base backbone when it is not bundled, e.g. local-dir:/models/biomedclip), `text_dir`, `device`, `sha256`
(the digest the model files must have), `serve_root` (the folder under which inputs may name files).
Everything else is in medclipsvd.tracking.pyfunc_serving."""
from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MedClipSVDModel(PythonModel):
    def load_context(self, context):
        from medclipsvd.tracking import pyfunc_serving

        self.predictor = pyfunc_serving.load(context)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """A DataFrame with a column `image` (pixel arrays; PNG/JPEG/DICOM files as base64 or data: URIs;
        paths only under the model's serving root) and optionally `index` (DICOM frame / NIfTI slice) -> a
        DataFrame: label, label_index, score, prob_<class> for every class."""
        from medclipsvd.tracking import pyfunc_serving

        return pyfunc_serving.predict(self.predictor, model_input)


mlflow.models.set_model(MedClipSVDModel())
