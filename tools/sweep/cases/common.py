"""Command lines and result checks shared by the case modules."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..core import Run
from ..fixtures import CLASSES, FAST, class_folders, png, predictions, train_result

CPU = ["--device", "cpu"]


def data(ctx, name: str = "data", classes=CLASSES, per_class: int = 6) -> Path:
    return class_folders(ctx.root / name, classes, per_class)


def probe(ctx) -> Path:
    """The image whose baseline prediction the `run` fixture recorded (baseline.csv)."""
    import shutil

    dst = ctx.root / "probe.png"
    if not dst.exists():
        shutil.copy(ctx.fixture("data") / "probe.png", dst)
    return dst


def run_dir(ctx) -> Path:
    return ctx.copy_fixture("run")


def baseline(ctx) -> dict[str, float]:
    with open(ctx.fixture("run") / "baseline.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    return {k.removeprefix("prob_"): float(v) for k, v in row.items() if k.startswith("prob_")}


def same_as_baseline(csv_path: Path, tol: float = 1e-4):
    def check(ctx, res):
        problem = predictions(csv_path)
        if problem:
            return problem
        with open(csv_path, newline="") as fh:
            row = next(csv.DictReader(fh))
        got = {k.removeprefix("prob_"): float(v) for k, v in row.items() if k.startswith("prob_")}
        base = baseline(ctx)
        if any(abs(got[k] - base[k]) > tol for k in base):
            return f"probabilities {got} differ from the unaltered adapter's {base}"
        return None

    return check


def preds_check(csv_path: Path, rows: int | None = None, classes=CLASSES):
    return lambda ctx, res: predictions(csv_path, classes, rows)


def predict_run(ctx, adapter: Path, files: list | None = None, *extra: str, same: bool = False, **kw) -> Run:
    """`predict --adapter` on the probe image (or ``files``); accepted only with sane predictions (equal to
    the unaltered adapter's when ``same``)."""
    out = ctx.root / "pred.csv"
    files = [str(f) for f in (files if files is not None else [probe(ctx)])]
    check = same_as_baseline(out) if same else preds_check(out, rows=len(files) or None)
    return Run(["predict", "--adapter", str(adapter), *files, "--output", str(out), *CPU, *extra],
               check=kw.pop("check", check), **kw)


def eval_check(out: Path, n: int = 4, classes=CLASSES):
    def check(ctx, res):
        f = out / "evaluation.json"
        if not f.is_file():
            return f"no {f}"
        doc = json.loads(f.read_text())
        m = doc["eval"]["test"]
        if m.get("n") != n:
            return f"evaluated {m.get('n')} images, expected {n}"
        acc = m.get("accuracy")
        if acc is None or not math.isfinite(acc):
            return f"accuracy {acc}"
        if sorted(m.get("classnames") or doc.get("classnames") or []) != sorted(classes):
            return f"classes {m.get('classnames')}"
        return None

    return check


def evaluate_run(ctx, adapter: Path, *extra: str, **kw) -> Run:
    out = ctx.root / "evaluation"
    return Run(["evaluate", "--adapter", str(adapter), "--output", str(out), "--no-mlflow", *CPU, *extra],
               check=kw.pop("check", eval_check(out)), **kw)


def bundle_check(out: Path):
    def check(ctx, res):
        inf = out / "configs" / "inference.json"
        if not inf.is_file() or not (out / "models" / "model.safetensors").is_file():
            return f"no bundle in {out}"
        return None

    return check


def no_code_in_bundle(out: Path, needles=("__import__", "os.system", "subprocess", "builtins")):
    """A MONAI bundle config runs `_target_`s and `$` expressions when it is run: a payload copied into it is
    code waiting for the next `monai.bundle run`."""
    def after(ctx, res):
        inf = out / "configs" / "inference.json"
        if inf.is_file():
            text = inf.read_text()
            found = [n for n in needles if n in text]
            if found:
                return f"the exported bundle's inference.json carries the payload ({found})"
        return None

    return after


def export_run(ctx, adapter: Path, *extra: str, **kw) -> Run:
    out = ctx.root / "bundle"
    return Run(["export", "--adapter", str(adapter), "--output", str(out), *extra],
               check=kw.pop("check", bundle_check(out)), **kw)


def report_check(out: Path):
    def check(ctx, res):
        if not (out / "report.md").is_file() or not (out / "summary.json").is_file():
            return f"no report in {out}"
        return None

    return check


INTERPRET_FAST = ["--max-images", "4", "--heads", "1", "--texts", "1", "--batch-size", "4", "--no-mlflow",
                  "--device", "cpu", "--precision", "fp32"]


def interpret_run(ctx, adapter: Path, images: Path | None = None, *extra: str, **kw) -> Run:
    out = ctx.root / "report"
    images = images if images is not None else data(ctx, "images", per_class=2)
    return Run(["interpret", "--adapter", str(adapter), "--images", str(images), "--output", str(out),
                *INTERPRET_FAST, *extra], check=kw.pop("check", report_check(out)), **kw)


def train_argv(ctx, data_root, *extra: str, out: str = "out", fast: bool = True) -> list[str]:
    argv = ["train", "--pipeline", "custom", "--data-root", str(data_root), "--output", str(ctx.root / out)]
    return argv + (FAST if fast else []) + list(extra)


def train_check(out: Path, classes=CLASSES):
    return lambda ctx, res: train_result(out, classes)


def no_adapter_written(out: Path):
    """For inputs that must be refused before any work: when the run was refused, no training may have run, so
    no adapter may exist (an exit 0 is judged by the outcome itself)."""
    def after(ctx, res):
        if res.code not in (0, None) and (Path(out) / "adapter" / "adapter.safetensors").exists():
            return f"an adapter was written to {out}/adapter: the input was refused only after training"
        return None

    return after


def check_json(path: Path, fn):
    def check(ctx, res):
        if not Path(path).is_file():
            return f"no {path}"
        return fn(json.loads(Path(path).read_text()))

    return check


__all__ = ["CPU", "FAST", "CLASSES", "Run", "data", "png", "probe", "run_dir", "predict_run", "evaluate_run",
           "export_run", "interpret_run", "train_argv", "train_check", "no_adapter_written", "eval_check",
           "bundle_check", "no_code_in_bundle", "report_check", "check_json", "same_as_baseline", "preds_check"]
