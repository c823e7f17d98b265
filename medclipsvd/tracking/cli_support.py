"""What `medclipsvd train --register --name NAME --alias ALIAS` needs: option checks before training starts,
and the registration of the run the tracker just closed."""
from __future__ import annotations

from typing import Callable

from medclipsvd.errors import MedClipSVDError


def check_register_options(name: str | None, no_mlflow: bool, method: str) -> None:
    if not name:
        raise MedClipSVDError("--register needs --name NAME (the registered model, e.g. --name chest-xray)")
    if no_mlflow:
        raise MedClipSVDError("--register needs MLflow tracking; drop --no-mlflow")
    if method not in ("svd", "lora", "full"):
        raise MedClipSVDError(f"--register: method {method!r} trains no adapter, so there is nothing to register; "
                              "use --method svd (default), lora or full")


def register_after_training(tracker, name: str, alias: str | None, tracking_uri: str | None,
                            log: Callable[[str], None] = print) -> None:
    """Register the tracker's last run, or say how to do it later if the server was lost during the run."""
    from medclipsvd.tracking.registry import register_run

    run_id = getattr(tracker, "last_run_id", None)
    if not run_id or not getattr(tracker, "last_run_complete", False):
        log("not registered: the run did not reach the MLflow server completely. After `medclipsvd sync`, run "
            f"`medclipsvd register --run-id RUN_ID --name {name}" + (f" --alias {alias}`" if alias else "`")
            + " with the run ID that sync prints.")
        return
    reg = register_run(run_id, name, alias=alias, tracking_uri=getattr(tracker, "tracking_uri", tracking_uri),
                       log=log)
    log(f"registered {reg.model_uri} from run {run_id} ({reg.size_bytes / 1e6:.2f} MB)"
        + (f"; alias {reg.alias_uri}" if reg.alias_uri else ""))
