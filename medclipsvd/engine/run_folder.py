"""A run folder on disk: what `train` writes there (results.json), when training into it is refused
(`check_run_folder`), and the training settings an adapter evaluation reads back from it."""
from __future__ import annotations

from pathlib import Path

from medclipsvd.errors import MedClipSVDError

RESULTS_FILE = "results.json"


class OutputExistsError(MedClipSVDError):
    """The output folder already holds a run that this one would overwrite."""


def check_run_folder(out: Path, *, force: bool = False, resume: bool = False) -> None:
    """Refuse to train into a folder holding an earlier run unless asked: a completed run (results.json)
    needs --force; an interrupted one (a checkpoint, or an adapter without results) needs --resume to go on
    or --force to start afresh. Nothing is overwritten silently."""
    if force:
        return
    from medclipsvd.engine.trainer import CHECKPOINT_FILE

    results = out / RESULTS_FILE
    if results.exists():
        what = "there is nothing to resume; " if resume else ""
        raise OutputExistsError(f"--output {out} already holds a completed run ({results.name}"
                                f"{', adapter/' if (out / 'adapter').is_dir() else ''}); {what}pass --force to "
                                "replace it, or choose another --output")
    if resume:
        return
    checkpoint = out / "checkpoint" / CHECKPOINT_FILE
    adapter = out / "adapter"
    if checkpoint.exists() or (adapter.is_dir() and any(adapter.iterdir())):
        found = "checkpoint/" if checkpoint.exists() else "adapter/"
        raise OutputExistsError(f"--output {out} holds an interrupted run ({found} without results.json); pass "
                                "--resume to continue it, --force to start afresh over it, or choose another --output")



def read_run_settings(path: Path) -> dict:
    """The `run` record of a training results.json ({} when there is none); a damaged file is an error that
    says how to go on without it."""
    from medclipsvd.errors import FileFormatError
    from medclipsvd.io.safeload import load_json

    if not path.exists():
        return {}
    try:
        data = load_json(path)  # UTF-8, bounded size and depth
    except FileFormatError as exc:
        raise MedClipSVDError(f"{path} (the training run's results, read for its settings) is damaged "
                              f"({exc.problem}); restore it, or move it away and pass --pipeline, "
                              "--data-root and --backbone") from None
    except OSError as exc:
        raise MedClipSVDError(f"{path} (the training run's results, read for its settings) cannot be read "
                              f"({str(exc).splitlines()[0]}); restore it, or move it away and pass --pipeline, "
                              "--data-root and --backbone") from None
    run = data.get("run", {}) if isinstance(data, dict) else None
    if not isinstance(run, dict):
        raise MedClipSVDError(f"{path}: its 'run' record is not an object; restore the file, or move it away and "
                              "pass --pipeline, --data-root and --backbone")
    kwargs = run.get("backbone_kwargs", {})
    types = {"weights": str, "text_dir": str, "random_init": bool, "seed": int}
    if not isinstance(kwargs, dict) or any(k not in types or not isinstance(v, types[k]) or
                                           (k == "seed" and isinstance(v, bool)) for k, v in kwargs.items()):
        raise MedClipSVDError(f"{path}: run.backbone_kwargs may only hold weights (text), text_dir (text), "
                              "random_init (true/false) and seed (integer), found "
                              f"{str(kwargs)[:80]!s}; restore the file, or move it away and pass --pipeline, "
                              "--data-root and --backbone")
    if "template" in run:  # data too: a hand-edited template could reach attributes through str.format
        from medclipsvd.engine.config import check_template

        try:
            check_template(run["template"] if isinstance(run["template"], str) else "")
        except ValueError as exc:
            raise MedClipSVDError(f"{path}: run.{exc}; restore the file from the training run, or pass "
                                  "--pipeline to take the template from a pipeline") from None
    if run.get("preprocess"):  # data, checked against the allow-list before anything else is done with it
        from medclipsvd.data.preprocess_steps import validate_steps

        run["preprocess"] = validate_steps(run["preprocess"], source=str(path))
    return run

