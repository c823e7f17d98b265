"""The cases, one module per input class. Each module has ``CASES``: a list of ``core.Case``."""
from __future__ import annotations

CLASS_ORDER = ["adapters", "splits", "csv", "yaml", "options", "images", "outputs", "mlflow", "model-folders",
               "interpret"]
_MODULES = ["adapters", "splits", "csvs", "pipelines", "options", "images", "outputs", "mlflow_cases",
            "model_folders", "interpret"]


def all_cases() -> list:
    import importlib

    cases = []
    for name in _MODULES:
        cases += importlib.import_module(f"{__name__}.{name}").CASES
    ids = [c.id for c in cases]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"duplicate case ids: {dup}")
    bad = sorted({c.klass for c in cases} - set(CLASS_ORDER))
    if bad:
        raise ValueError(f"cases of unknown classes: {bad}")
    return cases
