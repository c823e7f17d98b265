"""Command-line options and environment variables out of range, of the wrong kind or hostile: every command
must refuse them with one line naming the option, before any work (and without forking 100000 workers)."""
from __future__ import annotations

import json
from pathlib import Path

from ..core import ANY_SAFE, ERROR, REFUSE_OR_WARN, Case, Run
from ..fixtures import write
from .common import CPU, FAST, INTERPRET_FAST, data, no_adapter_written, probe, run_dir, train_check

KLASS = "options"


def _train(option: str, value: str, mentions=(), item: str = "", why: str = "", expect=ERROR, env=None,
           timeout: float = 90.0, cid: str | None = None, secrets=(), one_epoch: bool = False) -> Case:
    """`train` on a valid dataset with one option set (replacing FAST's value when FAST sets it); with
    ``one_epoch`` through a pipeline of one epoch, so an option that lifts FAST's step cap still ends fast."""
    def build(ctx):
        d = data(ctx)
        out = ctx.root / "out"
        pipeline = "custom"
        if one_epoch:
            from .pipelines import base_yaml

            pipeline = str(ctx.root / "one-epoch.yaml")
            Path(pipeline).write_text(base_yaml())
        argv = ["train", "--pipeline", pipeline, "--data-root", str(d), "--output", str(out), *FAST,
                "--checkpoint-every", "0"]
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
        return Run(argv, env=dict(env or {}), mentions=list(mentions), check=train_check(out),
                   after=no_adapter_written(out) if expect == ERROR else None, keep=[d], secrets=list(secrets))

    name = cid or f"train{option}-{_slug(value)}"
    return Case(f"opt-{name}", KLASS, f"train {option} {value!r}" + (f" with {env}" if env else ""),
                why or f"{option} {value!r} is out of range or not a value of its kind: one line naming {option}, "
                "before any work", expect, build, timeout=timeout, item=item, slow=expect != ERROR)


def _slug(v: str) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in v)[:24]
    return keep or "empty"


def _cmd(cid: str, what: str, why: str, argv_fn, expect=ERROR, mentions=(), needs=(), item="", check=None,
         timeout: float = 90.0, slow: bool = False, env=None, warn=()) -> Case:
    def build(ctx):
        return Run(argv_fn(ctx), mentions=list(mentions), check=check(ctx) if check else None, env=dict(env or {}),
                   warn_mentions=list(warn))

    return Case(f"opt-{cid}", KLASS, what, why, expect, build, needs=needs, timeout=timeout, item=item, slow=slow)


CASES: list[Case] = []
add = CASES.append

# train options ----------------------------------------------------------------------------------------------
for v in ("-1", "1000000000000"):
    add(_train("--shots", v, ["--shots"], item="6" if v != "-1" else ""))
for v in ("1e3",):
    add(_train("--shots", v, ["--shots"], why="not an integer: a usage error naming --shots"))
for v in ("-1", "-inf", "nan", "1e400"):
    add(_train("--lr", v, ["--lr"]))
add(_train("--lr", "1e308", ["--lr"], why="a learning rate of 1e308 diverges at the first step: stopped with the "
           "step and a --lr hint, no adapter (docs/reliability.md safety table)"))
for v in ("-1", "1.5"):
    add(_train("--max-steps", v, ["--max-steps"]))
add(_train("--max-steps", "100000000000000000000", why="a cap larger than the run is no cap: train normally "
           "(the pipeline's single epoch ends it) or one clear line", expect=ANY_SAFE, one_epoch=True))
add(_train("--seed", "-5", ["--seed"]))
add(_train("--seed", "18446744073709551616", why="a seed beyond numpy's 2**32 range: one clear line naming --seed, "
           "or a deterministic run", expect=ANY_SAFE))
for v in ("100000", "1000"):
    add(_train("--num-workers", v, ["--num-workers"], item="6",
               why="item 6: --num-workers 100000 forks until the OOM killer fires; cap it (e.g. 4 x CPUs) with one "
                   "clear line (the sweep's fork budget stops a real fork bomb)"))
add(_train("--checkpoint-every", "-5", ["--checkpoint-every"]))
add(_train("--device", "cpu:1", why="torch may accept an index on the CPU device: train normally or one clear "
           "line", expect=ANY_SAFE))
for v in ("cuda:99", "", "cpu;id", "meta", "cuda"):
    add(_train("--device", v, ["--device"], why="not a device of this machine (no GPU here): one line naming "
               "--device; `meta` would compute nothing and report garbage"))
for v in ("parity2",):
    add(_train("--mode", v, ["--mode"]))
for v in ("os.system",):
    add(_train("--protocol", v, ["--protocol"]))
for v in ("svd,full",):
    add(_train("--method", v, ["--method"]))
for v in ("os.path", "../../etc/passwd"):
    add(_train("--backbone", v, ["--backbone"]))
for v in ("0/0", "-400/40", "multi:lung,os.system"):
    add(_train("--window", v, ["--window"]))
for v in ("slices:0", "mip:nan"):
    add(_train("--slices", v, ["--slices"]))
add(_train("--slices", "slices:99999999999999999999", why="a slice count only volumes use (this data is 2-D): one "
           "clear line or a normal run", expect=ANY_SAFE))
add(_train("--axis", "diagonal", ["--axis"]))
add(_train("--dicom-frames", "some", ["--dicom-frames"]))
add(_train("--cache-dir", "/dev/null", why="a cache folder that is a device: one clear line, or run without the "
           "cache (it only costs time)", expect=ANY_SAFE, cid="train--cache-dir-devnull"))
add(_train("--weights", "hf-hub:../../etc", ["--weights"], cid="train--weights-hub-traversal"))
add(_train("--weights", "/etc/passwd", ["--weights"], cid="train--weights-etc-passwd",
           why="not a weight file: one clear line; its content never shown", secrets=("root:x:0",)))
add(_train("--text-dir", "/proc/self", cid="train--text-dir-proc", expect=ANY_SAFE,
           why="the tiny backbone brings its own vocabulary: ignored, or one clear line"))
for name, value in [("MEDCLIPSVD_MAX_IMAGE_PIXELS", "-1"), ("MEDCLIPSVD_MAX_IMAGE_PIXELS", "1e999"),
                    ("MEDCLIPSVD_WORK_IMAGE_PIXELS", "0")]:
    add(_train("--seed", "1", [name], env={name: value}, cid=f"env-{name.lower()}-{_slug(value)}",
               why=f"a limit of {value} pixels makes no sense: one line naming {name}"))


def _local_dir_weights(ctx):
    """item 5: `--weights local-dir:` a folder of someone else's files, for a backbone that needs them."""
    d = data(ctx)
    other = ctx.root / "elsewhere"
    other.mkdir()
    for name in ("ward7-patient-list.csv", "id_rsa-backup", "salaries-2025.xlsx"):
        (other / name).write_text("private\n")
    return ["train", "--pipeline", "custom", "--data-root", str(d), "--output", str(ctx.root / "out"),
            "--backbone", "clip-vit-b16", "--weights", f"local-dir:{other}", "--shots", "2", "--max-steps", "1",
            "--no-mlflow", *CPU]


def _local_dir_case() -> Case:
    def build(ctx):
        return Run(_local_dir_weights(ctx), mentions=["elsewhere"],
                   secrets=["ward7-patient-list", "id_rsa-backup", "salaries-2025"])

    return Case("opt-weights-local-dir-listing", KLASS, "train --backbone clip-vit-b16 --weights local-dir: a folder "
                "of someone else's files", "item 5: the error names the folder and what is missing, never the "
                "folder's contents", ERROR, build, item="5")


add(_local_dir_case())

# other commands ----------------------------------------------------------------------------------------------
add(_cmd("data-root-empty", "train --data-root ''", "an empty path is not the current folder: one clear line",
         lambda ctx: ["train", "--pipeline", "custom", "--data-root", "", "--output", str(ctx.root / "out"), *FAST]))
add(_cmd("pipeline-empty", "train --pipeline ''", "one clear line naming --pipeline",
         lambda ctx: ["train", "--pipeline", "", "--data-root", str(data(ctx)), "--output", str(ctx.root / "out"),
                      *FAST]))
add(_cmd("pipeline-dev-zero", "train --pipeline /dev/zero", "an endless file: refused, bounded",
         lambda ctx: ["train", "--pipeline", "/dev/zero", "--data-root", str(data(ctx)), "--output",
                      str(ctx.root / "out"), *FAST], timeout=60))
add(_cmd("split-fractions-0_5_0_5_0_5", "data split --fractions 0.5,0.5,0.5",
         "fractions summing to 1.5: refused naming --fractions, or rescaled with a warning saying so",
         lambda ctx: ["data", "split", "--data-root", str(data(ctx)), "--output", str(ctx.root / "s.json"),
                      "--fractions", "0.5,0.5,0.5"], expect=REFUSE_OR_WARN, warn=("fraction",)))
for v in ("-1,1,1", "nan,0,0", "1,0,0"):
    add(_cmd(f"split-fractions-{_slug(v)}", f"data split --fractions {v}", "fractions are three finite, "
             "non-negative numbers summing to 1 that leave a test split (an empty one fails only after training, "
             "item 8): one line naming --fractions",
             lambda ctx, v=v: ["data", "split", "--data-root", str(data(ctx)), "--output", str(ctx.root / "s.json"),
                               "--fractions", v], mentions=["--fractions"]))
for v in ("1/0", "5/2", "-1/2"):
    add(_cmd(f"bench-shard-{_slug(v)}", f"benchmark --shard {v}", "0 <= i < n: one line naming --shard",
             lambda ctx, v=v: ["benchmark", "--suite", "BUSI", "--data-root", str(ctx.root), "--output",
                               str(ctx.root / "bench"), "--shard", v, "--no-mlflow", *CPU], mentions=["--shard"]))
for opt, v in [("--shots", "1,,2"), ("--suite", "../../etc"), ("--method", "os.system"), ("--seeds", "-1")]:
    add(_cmd(f"bench{opt}-{_slug(v)}", f"benchmark {opt} {v}", f"one line naming {opt}",
             lambda ctx, o=opt, v=v: ["benchmark", "--suite", "BUSI" if o != "--suite" else v, "--data-root",
                                      str(ctx.root), "--output", str(ctx.root / "bench"), "--no-mlflow", *CPU,
                                      *([o, v] if o != "--suite" else [])], mentions=[opt]))
for opt, v in [("--precision", "fp8"), ("--batch-size", "0"), ("--max-images", "1"), ("--device", "cuda:7"),
               ("--pool", "/dev/zero")]:
    add(_cmd(f"interpret{opt}-{_slug(v)}", f"interpret {opt} {v!r}", f"one line naming {opt}",
             lambda ctx, o=opt, v=v: ["interpret", "--adapter", str(run_dir(ctx) / "adapter"), "--images",
                                      str(data(ctx, "imgs", per_class=2)), "--output", str(ctx.root / "rep"),
                                      *[a for a in INTERPRET_FAST], o, v], needs=("run",), timeout=60,
             mentions=[opt] if v != "/dev/zero" else []))
for opt, v in [("--split", "../x"), ("--subsample", "evil"), ("--device", "gpu")]:
    add(_cmd(f"evaluate{opt}-{_slug(v)}", f"evaluate {opt} {v}", f"one line naming {opt}",
             lambda ctx, o=opt, v=v: ["evaluate", "--adapter", str(run_dir(ctx) / "adapter"), "--no-mlflow",
                                      "--output", str(ctx.root / "ev"), o, v], needs=("run",), mentions=[opt]))
for opt, v in [("--format", "pickle"), ("--format", "../x")]:
    add(_cmd(f"export{opt}-{_slug(v)}", f"export {opt} {v}", f"one line naming {opt}",
             lambda ctx, o=opt, v=v: ["export", "--adapter", str(run_dir(ctx) / "adapter"), "--output",
                                      str(ctx.root / "b"), o, v], needs=("run",), mentions=[opt]))
for opt, v in [("--device", "cuda:99"), ("--window", "0/0"), ("--slices", "slices:0")]:
    add(_cmd(f"predict{opt}-{_slug(v)}", f"predict {opt} {v}", f"one line naming {opt}",
             lambda ctx, o=opt, v=v: ["predict", "--adapter", str(run_dir(ctx) / "adapter"), str(probe(ctx)), o, v],
             needs=("run",)))
add(_cmd("predict-no-inputs", "predict --adapter A with nothing to classify", "one clear line",
         lambda ctx: ["predict", "--adapter", str(run_dir(ctx) / "adapter")], needs=("run",)))
add(_cmd("predict-model-and-adapter", "predict with both --model and --adapter", "one clear line",
         lambda ctx: ["predict", "--adapter", str(run_dir(ctx) / "adapter"), "--model", str(ctx.root),
                      str(probe(ctx))], needs=("run",)))
add(_cmd("unknown-option", "train --lr-max 1", "a usage error naming the option",
         lambda ctx: ["train", "--lr-max", "1"], mentions=["--lr-max"]))
add(_cmd("unknown-command", "medclipsvd trian", "a usage error naming the command", lambda ctx: ["trian"]))
add(_cmd("debug-env-zero", "MEDCLIPSVD_DEBUG=0 with a bad --shots",
         "debug switched off explicitly: one line, no traceback",
         lambda ctx: ["train", "--pipeline", "custom", "--data-root", str(data(ctx)), "--output",
                      str(ctx.root / "out"), "--shots", "0", "--no-mlflow"], env={"MEDCLIPSVD_DEBUG": "0"}))


# the real console entry point (a fresh `python -m medclipsvd` process, not the in-process runner) -------------
def _real(cid: str, what: str, argv_fn, needs=()) -> Case:
    def build(ctx):
        return Run(argv_fn(ctx), mode="subprocess")

    return Case(f"opt-process-{cid}", KLASS, f"{what} (a separate `python -m medclipsvd` process)",
                "the installed entry point turns bad input into one line and exit 2 like the in-process runner "
                "(no reads are audited in this mode; markers and output are)", ERROR, build, needs=needs,
                timeout=120)


add(_real("lr-nan", "train --lr nan", lambda ctx: ["train", "--pipeline", "custom", "--data-root", str(data(ctx)),
                                                    "--output", str(ctx.root / "out"), *FAST, "--lr", "nan"]))
add(_real("adapter-missing", "predict --adapter of a folder that does not exist",
          lambda ctx: ["predict", "--adapter", str(ctx.root / "nope"), str(probe(ctx))], needs=("data",)))
add(_real("split-traversal", "data check --split-file with an entry ../outside/secret.png",
          lambda ctx: ["data", "check", "-d", "custom", "-r", str(data(ctx)), "--split-file", str(write(
              ctx.root / "split.json", json.dumps({"train": [["../outside/secret.png", 0, "benign"]], "val": [],
                                                   "test": []})))]))
