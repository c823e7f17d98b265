"""`medclipsvd register | predict | sync`: the MLflow model registry, serving-side prediction and the upload
of runs that were kept on disk while the tracking server was away. Heavy imports stay inside the commands."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from medclipsvd.cli import hospital_options
from medclipsvd.cli import options as opt

_uri_opt = typer.Option(None, "--tracking-uri", help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, "
                                                     "else the local store ./mlruns/mlflow.db).")


def _parse_tags(tags: list[str]) -> dict[str, str]:
    from medclipsvd.errors import MedClipSVDError

    out = {}
    for t in tags or []:
        key, sep, value = t.partition("=")
        if not sep or not key:
            raise MedClipSVDError(f"--tag {t!r}: write tags as KEY=VALUE, e.g. --tag reviewed_by=radiology")
        out[key.strip()] = value.strip()
    return out


def register_model(
    run_id: str = typer.Option(..., "--run-id", help="MLflow run ID of a `medclipsvd train` run (it has an adapter/ "
                                                     "artefact); shown by `train` and in the MLflow UI."),
    name: str = typer.Option(..., "--name", help="Registered model name, e.g. chest-xray."),
    alias: Optional[str] = typer.Option(None, "--alias", help="Alias to point at the new version, e.g. champion "
                                                               "(aliases replace MLflow's deprecated stages)."),
    tag: List[str] = typer.Option([], "--tag", help="KEY=VALUE tag on the model version (repeatable)."),
    bundle_backbone: bool = typer.Option(False, "--bundle-backbone", help="Also store the base backbone weights "
                                         "(safetensors) in the model, for servers that cannot fetch them "
                                         "(adds the backbone's size: ~600 MB for clip-vit-b16)."),
    weights: Optional[str] = opt.weights("With --bundle-backbone: where to read the base weights (hf-hub:ORG/REPO, "
                                         "local-dir:DIR or a file); default: the source recorded in the adapter."),
    text_dir: Optional[str] = typer.Option(None, "--text-dir", help="With --bundle-backbone: local tokenizer folder "
                                           "(BiomedCLIP's BiomedBERT) to bundle."),
    serve_root: Optional[str] = typer.Option(None, "--serve-root", help="Absolute folder on the serving machine "
                                             "under which the served model (mlflow models serve) may read files "
                                             "that clients name; without it clients send the images themselves "
                                             "(pixel arrays, base64 PNG/JPEG/DICOM)."),
    tracking_uri: Optional[str] = _uri_opt,
) -> None:
    """Register a trained run as a new version of an MLflow model.

    The version points at the run's MLflow model (logged now if the run has none): a pyfunc with the
    adapter and its configuration; the base backbone is referenced by name and weight fingerprint unless
    --bundle-backbone. Load it anywhere with mlflow.pyfunc.load_model("models:/chest-xray@champion") or
    `medclipsvd predict`.

    Example:

      medclipsvd register --run-id RUN_ID --name chest-xray --alias champion"""
    from medclipsvd.tracking.registry import register_run

    reg = register_run(run_id, name, alias=alias, tags=_parse_tags(tag), bundle_backbone=bundle_backbone,
                       tracking_uri=tracking_uri, weights=weights, text_dir=text_dir, serve_root=serve_root,
                       log=typer.echo)
    typer.echo(f"registered {reg.model_uri} ({reg.size_bytes / 1e6:.2f} MB"
               f"{', backbone bundled' if reg.bundled else ''}) from run {run_id}")
    if reg.alias_uri:
        typer.echo(f"alias: {reg.alias_uri}")
    if reg.digest:
        typer.echo(f"files sha256: {reg.digest} (a copy of the model folder loads with `medclipsvd predict "
                   "--sha256` and this digest)")


def predict(
    files: Optional[List[Path]] = typer.Argument(None, help="What to classify: image files (DICOM, NIfTI, "
                                                 "PNG/JPEG/TIFF), DICOM series folders (one series each) or NIfTI "
                                                 "volumes. Or none, with --split-file."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="models:/NAME@ALIAS, models:/NAME/VERSION, "
                                        "models:/<model_id>, runs:/ID/model or a local model folder."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", "-a", help="Instead of --model: the adapter/ folder "
                                           "of a `medclipsvd train` output (no MLflow needed)."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="With --model: the digest the model's files must "
                                         "have (printed by `register`); needed for a model folder, whose own "
                                         "MLmodel digest proves nothing."),
    trust_unverified: bool = typer.Option(False, "--trust-unverified", help="With --model: load a model folder (or "
                                          "a registered model without a recorded digest) whose files cannot be "
                                          "checked, with a warning."),
    split_file: Optional[Path] = hospital_options.split_file_opt,
    data_root: Optional[Path] = opt.data_root("With --split-file: the folder its entries are relative to "
                                              "(the --data-root the split was written for)."),
    split: str = typer.Option("test", "--split", help="With --split-file: which split to classify (test, val "
                              "or train); the table then has the true label too."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks", help="Allow split entries that are symlinks "
                                         "leading outside the data root, and files in a series folder that are "
                                         "symlinks leading out of it (refused by default)."),
    slices: Optional[str] = hospital_options.slices_opt,
    window: Optional[str] = hospital_options.window_opt,
    axis: Optional[str] = hospital_options.axis_opt,
    dicom_frames: Optional[str] = hospital_options.dicom_frames_opt,
    modality: Optional[str] = hospital_options.modality_opt,
    tracking_uri: Optional[str] = _uri_opt,
    weights: Optional[str] = opt.weights("Base backbone weights when the model does not bundle them and their "
                                         "recorded source is not reachable from here."),
    text_dir: Optional[str] = typer.Option(None, "--text-dir", help="Local tokenizer folder for --weights."),
    output: Optional[Path] = opt.output("Also write the predictions as CSV."),
    force: bool = opt.force("Replace an existing --output CSV (refused otherwise)."),
    device: str = opt.device(),
    precision: str = opt.precision(),
    probabilities: bool = typer.Option(True, "--probabilities/--no-probabilities",
                                       help="Show one probability column per class."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Two-class models: call the second class "
                                              "when its probability is >= this (an operating point from the run's "
                                              "results.json, e.g. sensitivity at 95 % specificity) instead of "
                                              "taking the most probable class."),
) -> None:
    """Classify images, DICOM series and NIfTI volumes.

    Give a registered model (--model) or a local adapter (--adapter). Prints a table (input, predicted label, score, per-class probabilities); --output also writes it as CSV.
    A volume is classified through the views the model was trained on (its slices/window/axis, or the
    flags with --adapter); its row is the mean of their probabilities (the study-level rule of `evaluate`).
    The model is built from the installed medclipsvd and the model's data files (JSON + safetensors, checked
    against the sha256 recorded in the registry at registration, or the digest given with --sha256); no code
    from the model folder is run. A model folder with no digest outside it needs --sha256 or
    --trust-unverified.

    With --split-file (and --data-root) it classifies every entry of one split of a split file, e.g. the
    test split `medclipsvd data split` wrote, and adds the true label to the table.

    With --threshold (two-class models) the label is the second class when its probability reaches the
    threshold: the operating points `train` and `evaluate` report (sensitivity at 90/95 % specificity and
    the reverse) each give one.

    Examples:

      medclipsvd predict --model models:/chest-xray@champion scan1.dcm scan2.png
      medclipsvd predict --adapter runs/ct/adapter study/series_3/ ct.nii.gz \\
        --output preds.csv
      medclipsvd predict --adapter runs/ct/adapter \\
        --split-file ct-split.json --data-root hospital/ct"""
    from medclipsvd.errors import DataError, MedClipSVDError

    if output is not None and output.exists() and not force:  # before any work
        raise MedClipSVDError(f"--output {output} already exists; pass --force to replace it, or choose another "
                              "--output")
    if threshold is not None and not 0.0 <= threshold <= 1.0:  # before any work; the class count is checked later
        raise MedClipSVDError(f"--threshold must be a probability between 0 and 1, got {threshold}; take one from "
                              "the operating points of the run's results.json")
    files = list(files or [])
    indices, truth = None, None
    if split_file is not None:
        if files:
            raise MedClipSVDError("give either image files or --split-file, not both")
        files, indices, truth = _split_inputs(split_file, data_root, split, follow_symlinks)
    elif not files:
        raise MedClipSVDError("nothing to classify: give image files, series folders or volumes, or --split-file "
                              "FILE --data-root DIR")
    elif data_root is not None:
        raise MedClipSVDError("--data-root goes with --split-file; image files are given as paths")
    missing = [str(f) for f in files if not os.path.exists(str(f).split("#series=")[0])]
    if missing:
        raise DataError(f"file(s) not found: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}"
                        + (f" (listed in {split_file}; check --data-root)" if split_file is not None else ""))
    if split_file is None:
        _confine_folders(files, follow_symlinks)
    if (model is None) == (adapter is None):
        raise MedClipSVDError("give either --model (a registered model) or --adapter (a train output's adapter/ "
                              "folder)")
    if adapter is not None and (sha256 is not None or trust_unverified):
        raise MedClipSVDError("--sha256 and --trust-unverified go with --model (a registered model or model "
                              "folder)")
    from medclipsvd.device import precision_plan, resolve_device

    precision_plan(precision, resolve_device(device))  # refused before any model is loaded
    views = hospital_options.input_flags(slices=slices, window=window, axis=axis, dicom_frames=dicom_frames,
                                         modality=modality).policy
    overrides = {k: v for k, v in (("weights", weights), ("text_dir", text_dir)) if v}
    if adapter is not None:
        from medclipsvd.serving.predictor import Predictor

        predictor = Predictor.from_adapter(adapter, overrides=overrides, device=device, precision=precision, **views)
        probs = predictor.predict_proba([str(f) for f in files], indices)
        frame = predictor.output_frame(probs)
        _show_predictions(frame, files, str(adapter), output, probabilities, truth, threshold)
        return
    if views:
        raise MedClipSVDError("--slices/--window/--axis/--dicom-frames/--modality go with --adapter; a registered model "
                              "uses the settings it was trained with")
    frame = _registered_predictions(model, files, tracking_uri, overrides, indices, device,
                                    trust_unverified=trust_unverified, sha256=sha256, precision=precision)
    _show_predictions(frame, files, model, output, probabilities, truth, threshold)


def _split_inputs(split_file: Path, data_root: Optional[Path], split: str, follow_symlinks: bool):
    """(paths, frame/slice indices, true class names) of one split of a split file, every entry confined to
    the data root (read before anything listed is opened)."""
    from medclipsvd.data.sources.confine import RootGuard
    from medclipsvd.data.sources.layouts import read_split_json
    from medclipsvd.data.volumes.series import SERIES_SEP
    from medclipsvd.errors import MedClipSVDError

    if data_root is None:
        raise MedClipSVDError(f"--split-file {split_file} needs --data-root: the folder its entries are relative "
                              "to (the --data-root the split was written for)")
    if split not in ("train", "val", "test"):
        raise MedClipSVDError(f"--split must be train, val or test, got {split!r}")
    entries = read_split_json(split_file)[split]
    if not entries:
        raise MedClipSVDError(f"{split_file}: its {split} split is empty; choose another --split")
    root = data_root.expanduser().absolute()
    guard = RootGuard.for_root(root, follow_symlinks)
    paths, indices, truth = [], [], []
    for item in entries:
        rel = item[0]
        path = str(root / rel)
        guard.check(path.split(SERIES_SEP)[0], entry=rel, source=str(split_file))
        if os.path.isdir(path.split(SERIES_SEP)[0]):  # a series folder: its files are read too
            guard.check_tree(path.split(SERIES_SEP)[0], base=root, source=str(split_file))
        extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
        paths.append(Path(path))
        indices.append(extra.get("index"))
        truth.append(str(item[2]))
    return paths, indices, truth


def _confine_folders(files: list[Path], follow_symlinks: bool) -> None:
    """A series folder given to classify is scanned (DICOM headers read) like a data root: nothing in it may
    be a symlink leading out of it unless --follow-symlinks."""
    from medclipsvd.data.sources.confine import RootGuard
    from medclipsvd.data.volumes.series import SERIES_SEP

    for f in files:
        folder = str(f).split(SERIES_SEP)[0]
        if os.path.isdir(folder):
            RootGuard.for_root(folder, follow_symlinks).check_tree(folder, source=folder)


def _registered_predictions(model: str, files: list[Path], tracking_uri, overrides: dict, indices=None,
                            device: str = "auto", trust_unverified: bool = False, sha256: Optional[str] = None,
                            precision: str = "auto"):
    import pandas as pd

    from medclipsvd.tracking import store
    from medclipsvd.tracking.model_files import load_predictor

    uri = store.resolve_tracking_uri(tracking_uri)
    store.configure_http()
    if model.startswith(("models:/", "runs:/")) and uri.startswith(("http://", "https://")):
        # a server that does not answer fails here with the fix; a local store needs no probe (opening it costs
        # ~1 s of CPU and the model lookup below reports a wrong name or store as clearly)
        store.probe(uri)
    predictor = load_predictor(model, uri, overrides=overrides, device=device, log=lambda m: typer.echo(m, err=True),
                               trust_unverified=trust_unverified, sha256=sha256, precision=precision)
    inputs = {"image": [str(f) for f in files]}
    if indices is not None and any(i is not None for i in indices):
        inputs["index"] = indices
    return predictor.predict_frame(pd.DataFrame(inputs))


def _short_names(paths: list[str]) -> list[str]:
    """What the table's file column shows: the file names when they are unique, else the paths below the
    folder they all share (a split file's entries below its data root), so that a path folds into a few
    readable pieces at 80 columns instead of many fragments of a long absolute prefix."""
    names = [os.path.basename(p.rstrip("/")) or p for p in paths]
    if len(set(names)) == len(names):
        return names
    try:
        common = os.path.commonpath([os.path.dirname(p.rstrip("/")) for p in paths])
    except ValueError:  # relative and absolute paths mixed: nothing shared
        return paths
    return [os.path.relpath(p, common) if common else p for p in paths]


def _show_predictions(frame, files: list[Path], model: str, output: Optional[Path], probabilities: bool,
                      truth: Optional[list] = None, threshold: Optional[float] = None) -> None:
    if threshold is not None:
        from medclipsvd.serving.predictor import apply_threshold

        frame = apply_threshold(frame, threshold)
    frame.insert(0, "file", [str(f) for f in files])
    if truth is not None:
        frame.insert(1, "true_label", truth)
    if output is not None:
        from medclipsvd.io import write_text

        write_text(output, frame.to_csv(index=False))
    from rich.console import Console
    from rich.table import Table

    prob_cols = [c for c in frame.columns if c.startswith("prob_")] if probabilities else []
    table = Table(title=f"predictions of {model}")
    first = ["file", "true_label"] if truth is not None else ["file"]
    for col in [*first, "label", "score", *prob_cols]:
        table.add_column(col.removeprefix("prob_") if col.startswith("prob_") else col,
                         justify="left" if col in ("file", "true_label", "label") else "right", overflow="fold")
    # the table shows file names when they are unique (long paths fold into unreadable columns at 80 columns);
    # the CSV keeps the paths as given
    shown = _short_names([str(f) for f in files])
    for n, (_, row) in enumerate(frame.iterrows()):
        table.add_row(shown[n], *(str(row[c]) for c in first[1:]), str(row["label"]), f"{row['score']:.4f}",
                      *(f"{row[c]:.4f}" for c in prob_cols))
    Console().print(table)
    if truth is not None and len(frame):
        correct = int((frame["true_label"] == frame["label"]).sum())
        typer.echo(f"{correct}/{len(frame)} correct ({100.0 * correct / len(frame):.1f} %) on the {len(frame)} "
                   "listed entries")
    if output is not None:
        typer.echo(f"written: {output}")


def sync(
    to: Optional[str] = typer.Option(None, "--to", "--tracking-uri", help="Upload every waiting run to this "
                                     "tracking URI, whatever server it was started with. Without it, runs go to "
                                     "the configured one (MLFLOW_TRACKING_URI, else ./mlruns) and a run started "
                                     "with another server is refused."),
    outbox: Optional[Path] = typer.Option(None, "--outbox", help="Outbox folder (default: ./mlruns/outbox, or "
                                          "MEDCLIPSVD_OUTBOX)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list each waiting run, its target and every file "
                                 "it would upload (with its artefact path); upload nothing."),
) -> None:
    """Upload runs kept on disk while the MLflow server was away.

    Runs the server already knows are completed; the others are created. Uploaded runs leave the outbox.
    Only the copies of the artefacts kept in the outbox are uploaded: a journal that names a file anywhere
    else, or that was recorded for another server than the configured one (without --to), is refused and
    left where it is; the command then exits with status 2.

    Examples:

      medclipsvd sync --dry-run
      medclipsvd sync --to http://mlflow.hospital.local:5000"""
    from medclipsvd.tracking.sync import SyncRefused, sync_outbox

    def summary(results) -> None:
        uploaded = [r for r in results if r.status == "uploaded"]
        if results and not dry_run:
            typer.echo(f"{len(uploaded)} run(s) uploaded, {len(results) - len(uploaded)} left in the outbox")

    try:
        results = sync_outbox(outbox, to, log=typer.echo, dry_run=dry_run)
    except SyncRefused as exc:
        summary(exc.results)
        raise
    summary(results)


def register(app: typer.Typer) -> None:
    app.command("register")(register_model)
    app.command("predict")(predict)
    app.command("sync")(sync)
