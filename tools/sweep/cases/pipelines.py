"""Pipeline YAML files: YAML's own traps (anchors, duplicate keys, python tags, encodings) and pipeline fields
that are wrong, dangerous (preprocess steps naming callables: item 1) or silently mis-read (`shots: true`,
`eta_min` > `lr`). Read by `train --pipeline FILE` (and `evaluate --pipeline FILE` for the payloads)."""
from __future__ import annotations

from pathlib import Path

from ..core import ACCEPT, ANY_SAFE, ERROR, REFUSE_OR_WARN, Case, Run
from ..fixtures import fifo, symlink
from .common import CPU, data, eval_check, no_adapter_written, run_dir, train_check

KLASS = "yaml"

BASE = """name: sweep
description: sweep pipeline
suite: custom
dataset: custom
backbone: tiny-biomedclip
protocol: few_shot
shots: 2
template: a photo of a {{}}.
hparams:
  lr: 0.002
  train_epochs: 1
  batch_size: 4
{hparams_extra}augmentation:
  random_resized_crop_scale: [0.5, 1.0]
{extra}"""


def base_yaml(hparams_extra: str = "", extra: str = "", **replace) -> str:
    text = BASE.format(hparams_extra=hparams_extra, extra=extra)
    for key, value in replace.items():  # replace a top-level or hparams line: key=value text
        lines = text.splitlines()
        for i, ln in enumerate(lines):
            if ln.strip().startswith(key + ":"):
                indent = ln[: len(ln) - len(ln.lstrip())]
                lines[i] = f"{indent}{key}: {value}"
        text = "\n".join(lines) + "\n"
    return text


def _write(ctx, content: str | bytes, name: str = "pipeline.yaml") -> Path:
    p = ctx.root / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content, encoding="utf-8")
    return p


def train_route(ctx, pipeline: Path, *, before_training: bool, warn=()) -> Run:
    d = data(ctx)
    out = ctx.root / "out"
    return Run(["train", "--pipeline", str(pipeline), "--data-root", str(d), "--output", str(out), "--no-mlflow",
                *CPU, "--max-steps", "2", "--checkpoint-every", "0"], check=train_check(out),
               after=no_adapter_written(out) if before_training else None, warn_mentions=list(warn),
               keep=[d, pipeline])


def evaluate_route(ctx, pipeline: Path, *, before_training: bool, warn=()) -> Run:
    run = run_dir(ctx)
    out = ctx.root / "evaluation"
    return Run(["evaluate", "--adapter", str(run / "adapter"), "--pipeline", str(pipeline), "--data-root",
                str(data(ctx)), "--output", str(out), "--no-mlflow", *CPU], check=eval_check(out, n=4),
               warn_mentions=list(warn), keep=[pipeline])


ROUTES = {"train": train_route, "evaluate": evaluate_route}


def _cases(cid, what, why, expect, make, routes=("train",), item="", warn=(), timeout=120.0) -> list[Case]:
    out = []
    for route in routes:
        def build(ctx, route=route):
            p = make(ctx)
            strict = "error" in expect and "accepted" not in expect and "warning" not in expect
            return ROUTES[route](ctx, p, before_training=strict, warn=warn)

        out.append(Case(f"yaml-{cid}-{route}", KLASS, f"{what} ({route})", why, expect, build,
                        needs=("run",) if route == "evaluate" else (), timeout=timeout, item=item, slow=True))
    return out


def _y(**kw):
    return lambda ctx: _write(ctx, base_yaml(**kw))


def _pre(step_fn):
    """A pipeline whose preprocess list is ``step_fn(ctx)`` (YAML text of the list items)."""
    return lambda ctx: _write(ctx, base_yaml(extra="preprocess:\n" + step_fn(ctx)))


CASES: list[Case] = []
add = CASES.extend

# YAML itself ----------------------------------------------------------------------------------------------
def _bomb(levels: int = 9, width: int = 9) -> str:
    """One flow list defining anchors a0..a{levels-1}, each a list of `width` aliases of the previous one."""
    parts = ["&a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        parts.append(f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + "]"


add(_cases("anchor-bomb", "1 KB of nested anchors (9 levels x 9) as a preprocess argument",
           "item 6: aliases expand to 387 million scalars (a results.json of GBs, then a hang): refuse anchors or "
           "cap the expansion, with one clear line", ERROR,
           _pre(lambda ctx: f"  - name: ScaleIntensityRanged\n    args: {{a_min: {_bomb()}, a_max: 1.0, "
                            "b_min: 0.0, b_max: 1.0}\n"), item="6", timeout=90))
add(_cases("anchor-bomb-key", "the same anchor bomb under an unknown top-level key",
           "item 6: refused (unknown key or anchors) without expanding it", ERROR,
           lambda ctx: _write(ctx, base_yaml(extra=f"lols: {_bomb()}\n")), item="6", timeout=90))
add(_cases("anchor-bomb-description", "the anchor bomb as the description (a string field)",
           "item 6: refused without expanding it into the message or results.json", ERROR,
           lambda ctx: _write(ctx, base_yaml(description=_bomb())), item="6", timeout=90))
add(_cases("anchor-single", "one anchor and one alias (a legitimate YAML feature: augmentation reuses a list)",
           "refusing all anchors is allowed (item 6); accepting must train normally", ANY_SAFE,
           lambda ctx: _write(ctx, base_yaml().replace("random_resized_crop_scale: [0.5, 1.0]",
                                                       "random_resized_crop_scale: &crop [0.5, 1.0]")
                              + "# reuse\n"), item="6"))
add(_cases("dup-key-top", "`shots` given twice (2, then 64)", "item 6: duplicate keys are refused (which one is "
           "meant is unknowable)", ERROR, lambda ctx: _write(ctx, base_yaml() + "shots: 64\n"), item="6"))
add(_cases("dup-key-hparams", "`lr` given twice inside hparams (0.002, then 100)", "item 6: duplicate keys refused",
           ERROR, _y(hparams_extra="  lr: 100\n"), item="6"))
add(_cases("dup-key-args", "a preprocess step's args with `a_min` twice", "item 6: duplicate keys refused", ERROR,
           _pre(lambda ctx: "  - name: ScaleIntensityRanged\n    args: {a_min: 0.0, a_min: 0.5, a_max: 1.0, "
                            "b_min: 0.0, b_max: 1.0}\n"), item="6"))
add(_cases("tag-apply", "`description: !!python/object/apply:os.system [\"touch MARKER\"]`",
           "safe YAML only: python tags are refused, nothing runs", ERROR,
           lambda ctx: _write(ctx, base_yaml(description=f'!!python/object/apply:os.system ["touch '
                                                         f'{ctx.marker("apply")}"]'))))
add(_cases("tag-name", "`backbone: !!python/name:os.system`", "safe YAML only", ERROR,
           _y(backbone="!!python/name:os.system")))
add(_cases("tag-new", "`template: !!python/object/new:subprocess.Popen [[touch, MARKER]]`", "safe YAML only",
           ERROR, lambda ctx: _write(ctx, base_yaml(template=f"!!python/object/new:subprocess.Popen "
                                                             f"[[touch, {ctx.marker('new')}]]"))))
add(_cases("tag-include", "`description: !include /etc/passwd` (unknown tag)", "unknown tags refused", ERROR,
           _y(description="!include /etc/passwd")))
add(_cases("syntax-error", "YAML with an unclosed bracket", "one line naming the file", ERROR,
           lambda ctx: _write(ctx, base_yaml() + "preprocess: [\n")))
add(_cases("not-mapping", "YAML holding a list", "one line naming the file", ERROR,
           lambda ctx: _write(ctx, "- name: sweep\n- suite: custom\n")))
add(_cases("scalar", "YAML holding a single string", "one line naming the file", ERROR,
           lambda ctx: _write(ctx, "hello\n")))
add(_cases("empty", "YAML of 0 bytes", "one line naming the file", ERROR, lambda ctx: _write(ctx, "")))
add(_cases("cp1252", "YAML in cp1252 (description `Résumé` as bytes 0xE9)",
           "item 8: not 'unexpected UnicodeDecodeError' without the file name: one clear line naming the file, "
           "or read right", ANY_SAFE, lambda ctx: _write(ctx, base_yaml(description="Résumé").encode("cp1252")),
           item="8"))
add(_cases("utf16", "YAML in UTF-16 (with BOM)", "one clear line naming the file, or read right", ANY_SAFE,
           lambda ctx: _write(ctx, base_yaml().encode("utf-16")), item="8"))
add(_cases("nul-byte", "YAML with a NUL byte in the description", "one clear line naming the file", ERROR,
           lambda ctx: _write(ctx, base_yaml(description="sweep\0pipeline").encode())))
add(_cases("deep", "YAML of 20000 nested flow lists", "item 6: bounded nesting, one clear line (no RecursionError)",
           ERROR, lambda ctx: _write(ctx, base_yaml(extra="notes: " + "[" * 20000 + "]" * 20000 + "\n")), item="6"))
add(_cases("fifo", "--pipeline names a FIFO", "no hang: one clear line", ERROR,
           lambda ctx: fifo(ctx.root / "pipeline.yaml"), timeout=60))
add(_cases("dev-zero", "--pipeline names a symlink to /dev/zero", "an endless file: refused, bounded", ERROR,
           lambda ctx: symlink(ctx.root / "pipeline.yaml", "/dev/zero"), timeout=60, item="6"))
add(_cases("is-dir", "--pipeline names a directory", "one clear line", ERROR,
           lambda ctx: (ctx.root / "pipeline.yaml").mkdir() or ctx.root / "pipeline.yaml"))
add(_cases("merge-key", "YAML merge key `<<: {...}` inside hparams (a legitimate YAML 1.1 feature)",
           "refusing merge keys is allowed; accepting must train normally", ANY_SAFE,
           lambda ctx: _write(ctx, base_yaml().replace("hparams:\n  lr: 0.002\n  train_epochs: 1\n",
                                                       "hparams:\n  <<: {lr: 0.002, train_epochs: 1}\n"))))

# preprocess: item 1 -----------------------------------------------------------------------------------------
WHY_PRE = ("item 1: preprocess steps come from an allow-list with typed arguments; a step naming an importable "
           "callable (or an I/O transform) is refused when the pipeline is loaded, before anything runs")


def _reader(reader: str, args: str):
    return _pre(lambda ctx: f"  - name: LoadImaged\n    args:\n      keys: image\n      reader: {reader}\n"
                            + "".join(f"      {ln}\n" for ln in args.format(m=ctx.marker("reader")).splitlines()))


add(_cases("pre-reader-subprocess", "LoadImaged(reader: subprocess.run, args: [touch, MARKER])", WHY_PRE, ERROR,
           _reader("subprocess.run", "args: [touch, '{m}']"), routes=("train", "evaluate"), item="1"))
add(_cases("pre-reader-os-system", "LoadImaged(reader: os.system, command: touch MARKER)", WHY_PRE, ERROR,
           _reader("os.system", "command: touch '{m}'"), routes=("train", "evaluate"), item="1"))
add(_cases("pre-reader-open", "LoadImaged(reader: builtins.open, file: MARKER, mode: w)", WHY_PRE, ERROR,
           _reader("builtins.open", "file: '{m}'\nmode: w"), item="1"))
add(_cases("pre-reader-mkdir", "LoadImaged(reader: os.makedirs, name: MARKER)", WHY_PRE, ERROR,
           _reader("os.makedirs", "name: '{m}'"), item="1"))
add(_cases("pre-reader-copyfile", "LoadImaged(reader: shutil.copyfile, src: /etc/hostname, dst: MARKER)", WHY_PRE,
           ERROR, _reader("shutil.copyfile", "src: /etc/hostname\ndst: '{m}'"), item="1"))
add(_cases("pre-reader-exec", "LoadImaged(reader: builtins.exec, source: ...)", WHY_PRE, ERROR,
           _reader("builtins.exec", "source: \"open('{m}', 'w')\""), item="1"))
add(_cases("pre-saveimaged", "SaveImaged(output_dir: a folder of the attacker's choice)",
           "item 1: I/O transforms are not on the allow-list (they write files nobody asked for)", ERROR,
           _pre(lambda ctx: f"  - name: SaveImaged\n    args: {{keys: image, output_dir: '"
                            f"{ctx.marker('saveimaged', 'write')}', separate_folder: false}}\n"), item="1"))
add(_cases("pre-saveimaged-writer", "SaveImaged(writer: subprocess.run, ...)", WHY_PRE, ERROR,
           _pre(lambda ctx: f"  - name: SaveImaged\n    args: {{keys: image, writer: subprocess.run, output_dir: '"
                            f"{ctx.marker('writer', 'write')}'}}\n"), item="1"))
add(_cases("pre-lambda", "Lambdad(func: os.system)", "item 1: callable-taking transforms are not allowed", ERROR,
           _pre(lambda ctx: "  - name: Lambdad\n    args: {func: os.system}\n"), item="1"))
add(_cases("pre-lambda-target", "Lambdad(func: {_target_: os.system, command: touch MARKER})", WHY_PRE, ERROR,
           _pre(lambda ctx: f"  - name: Lambdad\n    args: {{func: {{_target_: os.system, command: 'touch "
                            f"{ctx.marker('lt')}'}}}}\n"), item="1"))
add(_cases("pre-name-dotted", "step name `subprocess.run`", WHY_PRE, ERROR,
           _pre(lambda ctx: f"  - name: subprocess.run\n    args: {{args: [touch, '{ctx.marker('n')}']}}\n"),
           item="1"))
add(_cases("pre-compose", "step `Compose` with a list of transforms", WHY_PRE, ERROR,
           _pre(lambda ctx: "  - name: Compose\n    args: {transforms: [os.system]}\n"), item="1"))
add(_cases("pre-dtype-callable", "EnsureTyped(dtype: os.system)", "item 1: typed arguments: a dtype is one of a "
           "fixed vocabulary", ERROR, _pre(lambda ctx: "  - name: EnsureTyped\n    args: {dtype: os.system}\n"),
           item="1"))
add(_cases("pre-expression", "ScaleIntensityd(minv: \"$__import__('os').system('touch MARKER')\")",
           "item 1: a string where a number goes is refused (MONAI evaluates `$` strings in bundles)", ERROR,
           _pre(lambda ctx: f"  - name: ScaleIntensityd\n    args: {{minv: \"$__import__('os').system('touch "
                            f"{ctx.marker('expr')}')\", maxv: 1.0}}\n"), item="1"))
add(_cases("pre-target-arg", "ScaleIntensityRanged(a_min: {_target_: os.system, ...})",
           "item 1: a mapping where a number goes is refused", ERROR,
           _pre(lambda ctx: f"  - name: ScaleIntensityRanged\n    args: {{a_min: {{_target_: os.system, command: "
                            f"'touch {ctx.marker('target')}'}}, a_max: 1.0, b_min: 0.0, b_max: 1.0}}\n"), item="1"))
add(_cases("pre-device", "ToDeviced(device: 'cuda:99')", "item 1: device moves are not preprocessing", ERROR,
           _pre(lambda ctx: "  - name: ToDeviced\n    args: {device: 'cuda:99'}\n"), item="1"))
add(_cases("pre-not-list", "preprocess: a string", "one clear line naming the file", ERROR,
           lambda ctx: _write(ctx, base_yaml(extra="preprocess: ScaleIntensityd\n"))))
add(_cases("pre-args-list", "a preprocess step whose args is a list", "one clear line naming the step", ERROR,
           _pre(lambda ctx: "  - name: ScaleIntensityd\n    args: [0, 1]\n")))
add(_cases("pre-valid", "preprocess ScaleIntensityRanged with numeric arguments (positive control)",
           "an allow-listed intensity transform with typed arguments must keep working", ACCEPT,
           _pre(lambda ctx: "  - name: ScaleIntensityRanged\n    args: {a_min: 0.0, a_max: 1.0, b_min: 0.05, "
                            "b_max: 0.95, clip: true}\n")))
add(_cases("pre-valid-random", "preprocess RandGaussianNoised (positive control)",
           "an allow-listed augmentation must keep working", ACCEPT,
           _pre(lambda ctx: "  - name: RandGaussianNoised\n    args: {prob: 0.5, std: 0.01}\n")))

# fields -------------------------------------------------------------------------------------------------
add(_cases("unknown-key", "a misspelt top-level key `hparmas:`", "a typo must not be silently ignored",
           REFUSE_OR_WARN, lambda ctx: _write(ctx, base_yaml(extra="hparmas: {lr: 0.5}\n")), warn=("hparmas",)))
add(_cases("unknown-hparam", "a misspelt hparams key `lrr`", "a typo must not be silently ignored",
           REFUSE_OR_WARN, _y(hparams_extra="  lrr: 0.5\n"), warn=("lrr",)))
for cid, value, why in [
        ("shots-true", "true", "item 8: `shots: true` reads as 1; a boolean is not a count"),
        ("shots-float", "1.5", "not a whole number"), ("shots-zero", "0", "at least one image per class"),
        ("shots-huge", "1000000000000", "item 6: 10^12 images per class (sampled with replacement) exhausts memory: "
                                        "refuse it up front"),
]:
    add(_cases(cid, f"`shots: {value}`", why, ERROR, _y(shots=value), item="8" if cid == "shots-true" else ""))
add(_cases("shots-string", "`shots: \"2\"` (a quoted number)", "a lenient reading of \"2\" is harmless: train "
           "normally or one clear line", ANY_SAFE, _y(shots='"2"')))
for cid, value in [("lr-word", "fast"), ("lr-nan", ".nan"), ("lr-huge", "1.0e+308")]:
    add(_cases(cid, f"`hparams.lr: {value}`", "the learning rate must be a finite positive number of sane size; "
               "one clear line (1e308 diverges at once: stopped with the step and a --lr hint)", ERROR, _y(lr=value)))
add(_cases("eta-min-above-lr", "`hparams.eta_min: 100` with lr 0.002",
           "item 8: eta_min > lr makes the learning rate climb (to 933); refuse or warn loudly", REFUSE_OR_WARN,
           _y(hparams_extra="  eta_min: 100\n"), item="8", warn=("eta_min",)))
add(_cases("eta-min-negative", "`hparams.eta_min: -1`", "a negative minimum learning rate: refused", ERROR,
           _y(hparams_extra="  eta_min: -1\n")))
for cid, text in [("batch-zero", "  batch_size: 0\n"), ("epochs-zero", "  train_epochs: 0\n"),
                  ("wd-negative", "  weight_decay: -1\n"), ("layers-callable", "  layers: os.system\n")]:
    add(_cases(cid, f"`hparams.{text.strip()}`", "out of range or not in the vocabulary: one clear line naming "
               "the field", ERROR, lambda ctx, t=text: _write(ctx, base_yaml().replace("  batch_size: 4\n", "")
                                                              .replace("  train_epochs: 1\n", "")
                                                              .replace("hparams:\n", "hparams:\n" + t +
                                                                       ("  batch_size: 4\n" if "batch" not in t else "")
                                                                       + ("  train_epochs: 1\n" if "epochs" not in t
                                                                          else "")))))
add(_cases("batch-huge", "`hparams.batch_size: 1000000000`", "a batch larger than the data is just the whole "
           "data: train normally or one clear line", ANY_SAFE,
           lambda ctx: _write(ctx, base_yaml().replace("batch_size: 4", "batch_size: 1000000000"))))
add(_cases("template-attribute", "`template: '{0.__class__.__init__.__globals__}'`",
           "a format field reaching into attributes is refused (exactly one `{}`)", ERROR,
           _y(template="'{0.__class__.__init__.__globals__}'")))
for cid, line, value in [("backbone-callable", "backbone", "os.system"),
                         ("dataset-path", "dataset", "../../../etc"), ("protocol-bad", "protocol", "few_shots")]:
    add(_cases(cid, f"`{line}: {value}`", "not a registered name: one clear line naming the field", ERROR,
               _y(**{line: value})))
for cid, value in [("crop-zero", "[0.0, 0.0]"), ("crop-nan", "[.nan, 1.0]")]:
    add(_cases(cid, f"`augmentation.random_resized_crop_scale: {value}`", "0 < min <= max <= 1: one clear line",
               ERROR, lambda ctx, v=value: _write(ctx, base_yaml().replace("[0.5, 1.0]", v))))
add(_cases("hflip-word", "`augmentation.hflip: sometimes`", "not a boolean: one clear line", ERROR,
           lambda ctx: _write(ctx, base_yaml().replace("augmentation:\n", "augmentation:\n  hflip: sometimes\n"))))
for cid, key, value in [("window-callable", "window", "os.system"), ("slices-zero", "slices", "'slices:0'")]:
    add(_cases(cid, f"`{key}: {value}`", "a hospital option outside its vocabulary: one clear line", ERROR,
               lambda ctx, k=key, v=value: _write(ctx, base_yaml(extra=f"{k}: {v}\n"))))
