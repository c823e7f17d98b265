"""Checks on what the model registry is asked to use, made before any work:

- registered model names, aliases and version tags follow MLflow's own rules (its validation functions,
  so the rules cannot drift from the server's), checked before training so that a bad `--alias` does not
  fail after training with a half-made registration left behind;
- a run in MLflow's trash (lifecycle_stage 'deleted') is neither registered nor served nor synced into:
  MLflow itself would register it, and serve a version made from it, without a word."""
from __future__ import annotations

from medclipsvd.tracking import store

DELETED = "deleted"


def check_registry_names(name: str | None, alias: str | None = None, tags: dict[str, str] | None = None) -> None:
    """Raise TrackingError naming the option (--name / --alias / --tag) when MLflow would refuse it."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import (_validate_model_alias_name, _validate_model_alias_name_reserved,
                                         _validate_model_name, _validate_model_version_tag)

    checks = [("--name", name, lambda: _validate_model_name(name))]
    if name is not None and "@" in name:  # MLflow accepts it, but models:/NAME@ALIAS could not be read back
        raise store.TrackingError(f"--name {name!r}: a registered model name may not contain '@' (models:/NAME@ALIAS "
                                  "URIs would be ambiguous). Nothing was run; choose another name (e.g. --name "
                                  "chest-xray).")
    for option, value in (("--name", name), ("--alias", alias)):
        if value is not None and any(not ch.isprintable() for ch in value):
            # MLflow stores a newline or tab in a name, but no models:/ URI or command line can name it again
            raise store.TrackingError(f"--{option[2:]} {value!r}: contains a control character (newline, tab, ...), "
                                      f"which no models:/ URI can name. Nothing was run; choose another "
                                      f"{option[2:]} (e.g. {_EXAMPLES[option]}).")
    if alias is not None:
        checks.append(("--alias", alias, lambda: (_validate_model_alias_name(alias),
                                                  _validate_model_alias_name_reserved(alias))))
    for key, value in (tags or {}).items():
        checks.append(("--tag", f"{key}={value}", lambda k=key, v=value: _validate_model_version_tag(k, v)))
    for option, value, check in checks:
        try:
            check()
        except MlflowException as exc:
            raise store.TrackingError(f"{option} {value!r}: {_first_line(exc.message)} Nothing was run; choose "
                                      f"another {option[2:]} (e.g. {_EXAMPLES[option]}).") from None


_EXAMPLES = {"--name": "--name chest-xray", "--alias": "--alias champion", "--tag": "--tag reviewed_by=radiology"}


def _first_line(text: str) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else "invalid"
    return line if line.endswith(".") else line + "."


def check_run_not_deleted(run, uri: str, action: str = "used", via: str | None = None,
                          otherwise: str = "use another run") -> None:
    """Refuse a run in MLflow's trash (restorable with `mlflow runs restore`, purged by `mlflow gc`)."""
    if getattr(run.info, "lifecycle_stage", None) == DELETED:
        subject = f"{via} comes from run {run.info.run_id}, which" if via else f"run {run.info.run_id}"
        raise store.TrackingError(f"{subject} is deleted in {store.display_uri(uri)} (lifecycle_stage 'deleted'), "
                                  f"so it is not {action}; restore it with `mlflow runs restore --run-id "
                                  f"{run.info.run_id}` if that was a mistake, or {otherwise}")


def check_model_source(model: str, uri: str) -> None:
    """A `runs:/ID/...` URI, or a `models:/NAME/VERSION` / `models:/NAME@ALIAS` version, whose run is
    deleted is refused (deleted versions and logged models are already "not found" in MLflow)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri, registry_uri=uri)
    run_id = None
    try:
        if model.startswith("runs:/"):
            run_id = model.removeprefix("runs:/").split("/", 1)[0]
        elif model.startswith("models:/") and not model.removeprefix("models:/").startswith("m-"):
            rest = model.removeprefix("models:/")
            if "@" in rest:
                name, alias = rest.split("@", 1)
                run_id = client.get_model_version_by_alias(name, alias).run_id
            else:
                name, _, version = rest.rpartition("/")
                if name and version.isdigit():
                    run_id = client.get_model_version(name, version).run_id
        if not run_id:
            return
        run = client.get_run(run_id)
    except MlflowException:  # an unknown name, version or run: the loader reports it with its own words
        return
    check_run_not_deleted(run, uri, "used", via=model)
