"""The options every command spells the same way, defined once.

`--data-root`, `--output` (`-o`, never empty), `--force`, `--weights`, `--text-dir`, `--random-init`, `--seed`
(default 1), `--device` (default auto), `--allow-missing`, `--tracking-uri`, `--no-mlflow`,
`--no-system-metrics`. Each factory takes the command's own help text where the meaning differs (a run folder
vs. a report folder). Old spellings
(`--root`, `--out`, `--backbone-weights`) stay accepted as hidden aliases: a command declares
`root_alias: Optional[Path] = options.alias("--root", "-r")` and merges it with `options.pick`.
`--pipeline` (`-p`) names what to train, evaluate, check or interpret on, everywhere: a pipeline name or YAML,
or a registered dataset name; `--dataset` is its old spelling (hidden, warns), merged by `pick_pipeline`.
Hospital options (`--split-file`, `--slices`, `--window`, `--dicom-frames`) belong here too."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

DEFAULT_SEED = 1
DEVICE_HELP = "auto (CUDA if available, else CPU), cpu, cuda or cuda:N."


def data_root(help: str = "Folder holding the dataset (e.g. ../shared/data/biomedical, which contains BUSI/).",
              required: bool = False) -> Any:
    return typer.Option(... if required else None, "--data-root", help=help)


def output_path(value: Any) -> Any:
    """`--output` as typed. Typer would turn '' into Path('') == '.', the current folder, so a blank value
    (an unset shell variable: `--output "$OUT"`) is refused here, before the conversion hides it."""
    if value is None or isinstance(value, Path):  # defaults arrive converted already
        return value
    if not str(value).strip():
        what = "empty" if not str(value) else "only spaces"
        raise typer.BadParameter(f"{str(value)!r} is {what}: it would write into the current folder; name the "
                                 "folder or file to write, e.g. --output runs/busi-k4")
    return Path(value)


def output(help: str, default: Any = None, required: bool = False) -> Any:
    return typer.Option(... if required else default, "--output", "-o", help=help, parser=output_path,
                        metavar="PATH")


def force(help: str = "Replace what an earlier run wrote to --output (refused otherwise).") -> Any:
    return typer.Option(False, "--force", help=help)


def weights_value(value: Optional[str]) -> Optional[str]:
    """`--weights` as typed, checked when the command line is read: a file that is no weights file (a text
    file, a device, a typo) would otherwise fail only after the data were scanned, in a message naming the
    file but not the option."""
    if value is None:
        return None
    from medclipsvd.backbones.weight_formats import FIX, weights_option_problem

    problem = weights_option_problem(value)
    if problem:
        raise typer.BadParameter(f"{value!r} {problem}; {FIX}")
    return value


def weights(help: str = "Weight source: hf-hub:ORG/REPO, local-dir:DIR or a file (default: the backbone's "
                        "registered source).") -> Any:
    return typer.Option(None, "--weights", help=help, callback=weights_value)


def text_dir(help: str = "Local folder with the text tokenizer (BiomedCLIP's BiomedBERT) for offline use.") -> Any:
    return typer.Option(None, "--text-dir", help=help)


def random_init() -> Any:
    return typer.Option(False, "--random-init", help="Full-size architecture with random weights (no download; "
                                                     "for timing, not for accuracy).")


def seed(help: str = "Seed for the few-shot subset, data order, augmentation and init.") -> Any:
    return typer.Option(DEFAULT_SEED, "--seed", help=help)


def device(help: str = DEVICE_HELP) -> Any:
    return typer.Option("auto", "--device", help=help)


def precision() -> Any:
    """`--precision auto|fp32|bf16|fp16`, the same meaning in every command (medclipsvd/device.py)."""
    from medclipsvd.device import PRECISION_HELP

    return typer.Option("auto", "--precision", help=PRECISION_HELP)


def allow_missing(help: str = "Drop split entries whose file is absent (partial datasets) instead of "
                              "failing.") -> Any:
    return typer.Option(False, "--allow-missing", help=help)


def tracking_uri(help: str = "MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlruns).") -> Any:
    return typer.Option(None, "--tracking-uri", help=help)


def no_mlflow(help: str = "Do not log to MLflow.") -> Any:
    return typer.Option(False, "--no-mlflow", help=help)


def no_system_metrics() -> Any:
    return typer.Option(False, "--no-system-metrics", help="Do not record CPU, memory, disk, network and GPU use "
                                                           "as system/* metrics of the MLflow run.")


PIPELINE_HELP = ("Pipeline name (see `medclipsvd pipelines`) or YAML path, or a registered dataset name (see "
                 "`medclipsvd data list`), e.g. breast_ultrasound or BUSI.")


def pipeline(help: str = PIPELINE_HELP, required: bool = False) -> Any:
    return typer.Option(... if required else None, "--pipeline", "-p", help=help)


def dataset_alias() -> Any:
    """`--dataset` / `-d`: the old spelling of --pipeline in `data check` and `interpret` (hidden, warns)."""
    return typer.Option(None, "--dataset", "-d", hidden=True)


def pick_pipeline(value: Optional[str], old_value: Optional[str], required: bool = False) -> Optional[str]:
    """--pipeline, or its deprecated spelling --dataset (with a warning that names the new one)."""
    import warnings

    if old_value is not None:
        warnings.warn("--dataset is deprecated; use --pipeline (it takes a pipeline or a registered dataset "
                      "name)", FutureWarning, stacklevel=2)
    return pick(value, old_value, "--pipeline", "--dataset", required=required)


def dataset_of(name: str) -> tuple[str, dict]:
    """(registered dataset, the pipeline's hospital options) of a --pipeline value: a pipeline name or YAML
    gives its dataset and input policy; anything else is taken as a dataset name (checked by the loader)."""
    from medclipsvd.engine.config import list_pipelines, load_pipeline

    if name in list_pipelines() or name.endswith((".yaml", ".yml")):
        p = load_pipeline(name)
        return p.dataset, p.load_options()
    return name, {}


def alias(*names: str, path_output: bool = False) -> Any:
    """A hidden old spelling of an option (still parsed, not shown in --help); `path_output`: an old spelling
    of --output, held to the same rule (no empty path)."""
    return typer.Option(None, *names, hidden=True, **({"parser": output_path} if path_output else {}))


def pick(value: Optional[Any], old_value: Optional[Any], name: str, old_name: str,
         required: bool = False) -> Optional[Any]:
    """The value of option `name`, given either as `name` or as its old spelling `old_name`."""
    from medclipsvd.errors import MedClipSVDError

    if value is not None and old_value is not None and value != old_value:
        raise MedClipSVDError(f"{name} and {old_name} (its old spelling) disagree; pass only {name}")
    result = value if value is not None else old_value
    if required and result is None:
        raise MedClipSVDError(f"missing option {name}")
    return result


def hide_flag_types() -> None:
    """Show boolean flags as `--resume`, not `--resume <bool>`: Typer prints a type for every option, which
    for a flag reads as if it took a value."""
    from typer.core import TyperOption

    if getattr(TyperOption, "_medclipsvd_flags", False):
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich
    TyperOption._medclipsvd_flags = True


def reflow(doc: str | None) -> str | None:
    """A command docstring as help text: prose paragraphs joined into one line each (the terminal wraps
    them), indented paragraphs (example commands) kept line for line so they stay copyable."""
    import inspect

    if not doc:
        return doc
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    out = []
    for para in paragraphs:
        lines = para.split("\n")
        if all(line.startswith(" ") for line in lines if line.strip()):
            out.append(para)
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def literal(text: str | None) -> str | None:
    """Help text shown as written: Typer renders help as rich markup, where `[ray]` in
    `pip install 'medclipsvd[ray]'` is a style tag and vanishes; escaped, it prints."""
    from rich.markup import escape

    return text if text is None else escape(text)


def reflow_help(app: typer.Typer, _done: set | None = None) -> None:
    """Apply `reflow` to every command of `app` and its sub-apps that has no explicit help, and make every
    command's and option's help literal text (`literal`). Options shared between commands are one object:
    each is escaped once."""
    import inspect

    done = set() if _done is None else _done
    for info in app.registered_commands:
        if info.help is None and info.callback is not None:
            info.help = literal(reflow(info.callback.__doc__))
        for param in inspect.signature(info.callback).parameters.values() if info.callback else ():
            default = param.default
            if isinstance(default, typer.models.ParameterInfo) and id(default) not in done:
                done.add(id(default))
                default.help = literal(default.help)
    for group in app.registered_groups:
        reflow_help(group.typer_instance, done)
