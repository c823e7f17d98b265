"""What the MLflow pyfunc (`pyfunc_model.py`, run by `mlflow.pyfunc.load_model` and `mlflow models serve`)
does, kept in the installed package so that the code file stored in each model folder stays two calls.

Loading: the data files are checked against MLmodel's hashes (and a digest the loader pins with
`model_config={"sha256": HEX}`), then the predictor is built with the model's path policy: no file paths, or
paths under the serving root recorded at registration (`register --serve-root`, model_config.json
`serve_root`; `model_config={"serve_root": DIR}` at load time overrides it, for in-process use).

Answering: a bad input becomes a `ServingInputError`, which MLflow's scoring server turns into a JSON error
response: one line, no traceback, no server path; anything unexpected is logged on the server and answered
with a fixed line."""
from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from medclipsvd.errors import MedClipSVDError

_log = logging.getLogger("medclipsvd.serving")
INTERNAL_MESSAGE = "the model could not classify this input (an internal error; the server's log has the details)"


class ServingInputError(MlflowException):
    """A request the model refuses; its message is all the client sees."""

    def __init__(self, message: str, internal: bool = False):
        super().__init__(message, error_code=INTERNAL_ERROR if internal else INVALID_PARAMETER_VALUE)

    # MLflow's scoring server rewrites an MlflowException's message to "Failed to predict data '<the whole
    # input DataFrame>' ...": the client's paths and payload echoed back, so answers to two paths differ. The
    # message is therefore fixed once set.
    @property
    def message(self) -> str:
        return self.__dict__["_message"]

    @message.setter
    def message(self, value: str) -> None:
        self.__dict__.setdefault("_message", value)


def load(context):
    """The Predictor for a pyfunc's `load_context`."""
    from medclipsvd.tracking.model_files import verify_served_files
    from medclipsvd.serving.inputs import PathPolicy, check_serve_root
    from medclipsvd.serving.predictor import Predictor
    from medclipsvd.serving.trained_run import load_model_config

    arts = context.artifacts
    options = {k: v for k, v in (context.model_config or {}).items() if v}  # saved as "": not set
    verify_served_files(arts["config"], sha256=options.get("sha256"))
    root = options.get("serve_root") or load_model_config(arts["config"]).get("serve_root")
    overrides = {k: v for k, v in options.items() if k in ("weights", "text_dir")}
    return Predictor.from_files(arts["config"], arts["adapter"], bundle=arts.get("backbone"),
                                tokenizer_dir=arts.get("tokenizer"), overrides=overrides,
                                device=options.get("device", "cpu"), paths=PathPolicy.under(check_serve_root(root)))


def predict(predictor, model_input):
    """predictor.predict_frame, with errors a client may see."""
    try:
        return predictor.predict_frame(model_input)
    except MedClipSVDError as exc:
        raise ServingInputError(str(exc).splitlines()[0] if str(exc) else "the input was refused") from None
    except Exception:
        _log.exception("medclipsvd: prediction failed")
        raise ServingInputError(INTERNAL_MESSAGE, internal=True) from None
