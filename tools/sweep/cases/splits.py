"""Split files (the benchmark format: {"train"|"val"|"test": [[path, label, classname], ...]}) that leave the
data root, lie about classes, or are not what they claim, read by `data check --split-file`, `train
--split-file` and `predict --split-file`."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from ..core import DATA_CHECK_FAILED, ANY_SAFE, ERROR, REFUSE_OR_WARN, WARN, Case, Run
from ..fixtures import CLASSES, class_folders, deep_json, fifo, png, symlink, write
from .common import FAST, no_adapter_written, predict_run, run_dir, train_check

KLASS = "splits"


def _data(ctx) -> Path:
    return class_folders(ctx.root / "data", per_class=6)


def _entries(split_of=lambda i: ("train", "train", "val", "test", "test", "train")[i]) -> dict:
    s = {"train": [], "val": [], "test": []}
    for c, cname in enumerate(CLASSES):
        for i in range(6):
            s[split_of(i)].append([f"{cname}/{cname}{i}.png", c, cname])
    return s


def _write(ctx, doc, name: str = "split.json") -> Path:
    p = ctx.root / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def report_check(path: Path, classes=CLASSES, present: dict | None = None):
    """The data check report lists exactly ``classes`` (and, when given, these present counts per split)."""
    def check(ctx, res):
        if not path.is_file():
            return f"no report {path}"
        doc = json.loads(path.read_text())
        rows = doc.get("rows", [])
        seen = sorted({r["class"] for r in rows})
        if seen != sorted(classes):
            return f"report classes {seen}, expected {sorted(classes)}"
        if present is not None:
            got = {}
            for r in rows:
                got[r["split"]] = got.get(r["split"], 0) + r["present"]
            if any(got.get(k, 0) != v for k, v in present.items()):
                return f"present per split {got}, expected {present}"
        return None

    return check


def check_route(ctx, split: Path, *extra, present=None, **kw) -> Run:
    rep = ctx.root / "report.json"
    return Run(["data", "check", "-d", "custom", "-r", str(ctx.root / "data"), "--split-file", str(split),
                "--json", str(rep), *extra], check=kw.pop("check", report_check(rep, present=present)),
               report_failed=DATA_CHECK_FAILED, **kw)


def train_route(ctx, split: Path, *extra, **kw) -> Run:
    out = ctx.root / "out"
    return Run(["train", "--pipeline", "custom", "--data-root", str(ctx.root / "data"), "--split-file", str(split),
                "--output", str(out), *FAST, *extra], check=kw.pop("check", train_check(out)), **kw)


def predict_route(ctx, split: Path, *extra, which: str = "train", **kw) -> Run:
    """`predict --split-file` on the split the bad entry was put in."""
    run = run_dir(ctx)
    kw.pop("warn_mentions", None)
    return predict_run(ctx, run / "adapter", [], "--split-file", str(split), "--data-root", str(ctx.root / "data"),
                       "--split", which, *extra, **kw)


ROUTES = {"check": check_route, "train": train_route, "predict": predict_route}


def _cases(cid, what, why, expect, make, routes=("check",), item="", warn=(), timeout=90.0, after_train=False,
           present=None, classes=CLASSES, which: str = "train") -> list[Case]:
    """``make(ctx, data) -> split file path``."""
    out = []
    for route in routes:
        def build(ctx, route=route):
            data = _data(ctx)
            split = make(ctx, data)
            kw = {"warn_mentions": list(warn), "keep": [data]}
            if route == "check":
                kw["check"] = report_check(ctx.root / "report.json", classes=classes, present=present)
            if route == "predict":
                kw["which"] = which
            r = ROUTES[route](ctx, split, **kw)
            if route == "train" and after_train:
                r.after = no_adapter_written(ctx.root / "out")
            return r

        out.append(Case(f"split-{cid}-{route}", KLASS, f"{what} ({route})", why, expect, build,
                        needs=("run",) if route == "predict" else (), timeout=timeout, item=item,
                        slow=route in ("train", "predict")))
    return out


def _with(mod):
    """A valid split changed by ``mod(ctx, data, doc)``."""
    def make(ctx, data):
        doc = _entries()
        res = mod(ctx, data, doc)
        return _write(ctx, res if res is not None else doc)

    return make


def _add_entry(rel_fn, split: str = "train", label: int = 0):
    return _with(lambda ctx, data, doc: doc[split].append([rel_fn(ctx, data), label, CLASSES[label]]))


CASES: list[Case] = []
add = CASES.extend

# traversal and confinement --------------------------------------------------------------------------------
WHY_OUT = ("every split entry is resolved and refused when it leaves the data root (docs/reliability.md); the "
           "outside file is a valid image, so reading it would silently work")
add(_cases("dotdot", "entry `../outside/secret.png`", WHY_OUT, ERROR,
           _add_entry(lambda ctx, d: "../outside/secret.png"), routes=("check", "train", "predict")))
add(_cases("inner-dotdot", "entry `benign/../../outside/secret.png`", WHY_OUT, ERROR,
           _add_entry(lambda ctx, d: "benign/../../outside/secret.png"), routes=("check", "predict")))
add(_cases("dot-dotdot", "entry `./../outside/secret.png`", WHY_OUT, ERROR,
           _add_entry(lambda ctx, d: "./../outside/secret.png")))
add(_cases("absolute", "entry with the absolute path of the outside image", WHY_OUT, ERROR,
           _add_entry(lambda ctx, d: str(ctx.outside / "secret.png"), split="test", label=1),
           routes=("check", "train", "predict"), which="test"))
add(_cases("etc-hostname", "entry `benign/../../../../../../../../etc/hostname`", WHY_OUT, ERROR,
           _add_entry(lambda ctx, d: "benign/" + "../" * 12 + "etc/hostname")))
add(_cases("symlink-file", "entry `benign/link.png`, a symlink to the outside image",
           "a symlink leading out of the root is refused unless --follow-symlinks", ERROR,
           lambda ctx, d: (symlink(d / "benign" / "link.png", ctx.outside / "secret.png"),
                           _add_entry(lambda c, dd: "benign/link.png")(ctx, d))[1],
           routes=("check", "predict")))
add(_cases("symlink-dir", "entry `linkdir/secret.png`, linkdir a symlink to the outside folder",
           "a symlinked folder leading out of the root is refused unless --follow-symlinks", ERROR,
           lambda ctx, d: (symlink(d / "linkdir", ctx.outside),
                           _add_entry(lambda c, dd: "linkdir/secret.png")(ctx, d))[1]))
add(_cases("backslashes", "entry `..\\outside\\secret.png` (Windows separators)",
           "on Linux that is one file name that does not exist: one clear line", ERROR,
           _add_entry(lambda ctx, d: "..\\outside\\secret.png")))
add(_cases("file-url", "entry `file://<abs path of the outside image>`", "not a path under the root: refused",
           ERROR, _add_entry(lambda ctx, d: "file://" + str(ctx.outside / "secret.png"))))
add(_cases("nul-byte", "entry `benign/benign0.png\\u0000.txt` (NUL inside the path)",
           "a NUL byte cannot be in a path: one clear line, not a ValueError", ERROR,
           _add_entry(lambda ctx, d: "benign/benign0.png\u0000.txt")))
add(_cases("long-name", "entry with a 5000-character file name", "no such file: one clear line", ERROR,
           _add_entry(lambda ctx, d: "benign/" + "a" * 5000 + ".png")))

# classes and splits --------------------------------------------------------------------------------------
add(_cases("one-class", "every entry labelled benign (one class)",
           "item 8: a one-class split reports 100 %; custom data with a single class is an error "
           "(docs/reliability.md table)", ERROR,
           lambda ctx, d: _write(ctx, {s: [[f"benign/benign{i}.png", 0, "benign"] for i in idx]
                                      for s, idx in (("train", (0, 1)), ("val", (2,)), ("test", (3, 4)))}),
           routes=("check", "train"), item="8"))
add(_cases("empty-test", "test split empty", "item 8: `data check` must not call it complete and `train` must "
           "stop before training", REFUSE_OR_WARN, _with(lambda ctx, d, doc: doc.update(test=[])),
           routes=("check",), item="8", warn=("test", "empty")))
add(_cases("empty-test", "test split empty", "item 8: refused before training (not after it)", ERROR,
           _with(lambda ctx, d, doc: doc.update(test=[])), routes=("train",), item="8", after_train=True))
add(_cases("empty-train", "train split empty", "nothing to train on: refused before training", ERROR,
           _with(lambda ctx, d, doc: doc.update(train=[])), routes=("check", "train"), after_train=True))
add(_cases("all-empty", "all three splits empty", "an empty dataset: refused", ERROR,
           lambda ctx, d: _write(ctx, {"train": [], "val": [], "test": []})))
add(_cases("class-untrained", "malignant only in val/test, never in train",
           "item 8: a class with no training images must not be evaluated silently", REFUSE_OR_WARN,
           _with(lambda ctx, d, doc: doc.update(train=[e for e in doc["train"] if e[1] == 0])),
           routes=("check", "train"), item="8", warn=("malignant",)))
add(_cases("dup-entry", "one train entry listed twice", "duplicated rows: counted once, with a warning "
           "(docs/reliability.md)", WARN, _with(lambda ctx, d, doc: doc["train"].append(list(doc["train"][0]))),
           warn=("duplicat",)))
add(_cases("train-test-leak", "the same file in train and test",
           "custom data: the same file in train and val/test is an error (docs/reliability.md)", ERROR,
           _with(lambda ctx, d, doc: doc["test"].append(list(doc["train"][0])))))
add(_cases("two-labels", "one file listed under both classes", "custom data: one file under two classes is an "
           "error (docs/reliability.md)", ERROR,
           _with(lambda ctx, d, doc: doc["train"].append([doc["train"][0][0], 1, "malignant"]))))
add(_cases("label-name-mismatch", "an entry's label 0 with classname `malignant`", "mislabelled: refused", ERROR,
           _with(lambda ctx, d, doc: doc["train"][0].__setitem__(2, "malignant"))))

# wrong types --------------------------------------------------------------------------------------------
WHY_TYPE = "the split file is data with a fixed format; a wrong type is one clear line naming the file"
for cid, value in [("label-float", 1.5), ("label-negative", -1), ("label-99", 99), ("label-null", None),
                   ("label-huge", 10 ** 30)]:
    add(_cases(cid, f"entry label {value!r}", WHY_TYPE, ERROR,
               _with(lambda ctx, d, doc, v=value: doc["train"].append(["benign/benign5.png", v, "benign"]))))
add(_cases("label-bool", "entry label true", "like `shots: true` (item 8) a boolean is no class index", ERROR,
           _with(lambda ctx, d, doc: doc["train"].append(["malignant/malignant5.png", True, "malignant"]))))
add(_cases("label-string", "entry label \"1\" (a string)",
           "a lenient reader may take \"1\"; then the classes must still be right", ANY_SAFE,
           _with(lambda ctx, d, doc: doc["train"].append(["malignant/malignant5.png", "1", "malignant"]))))
add(_cases("label-nan", "entry label NaN (JSON literal)", WHY_TYPE, ERROR,
           lambda ctx, d: _write(ctx, json.dumps(_entries()).replace('benign0.png", 0', 'benign0.png", NaN'))))
add(_cases("label-infinity", "entry label Infinity (JSON literal)", WHY_TYPE, ERROR,
           lambda ctx, d: _write(ctx, json.dumps(_entries()).replace('benign0.png", 0', 'benign0.png", Infinity'))))
for cid, value in [("path-null", None), ("path-number", 123), ("path-empty", ""), ("path-dot", "."),
                   ("path-dir", "benign")]:
    add(_cases(cid, f"entry path {value!r}", WHY_TYPE, ERROR,
               _with(lambda ctx, d, doc, v=value: doc["train"].append([v, 0, "benign"]))))
add(_cases("entry-dict", "entry {path: ..., label: 0} instead of a list", WHY_TYPE, ERROR,
           _with(lambda ctx, d, doc: doc["train"].append({"path": "benign/benign5.png", "label": 0}))))
add(_cases("entry-short", "entry [path] without label", WHY_TYPE, ERROR,
           _with(lambda ctx, d, doc: doc["train"].append(["benign/benign5.png"]))))
add(_cases("top-list", "split file holding a JSON list", WHY_TYPE, ERROR, lambda ctx, d: _write(ctx, "[]")))
add(_cases("no-test-key", "split file without a `test` key", "the test split is missing: refused or warned",
           REFUSE_OR_WARN, _with(lambda ctx, d, doc: doc.pop("test") and None), warn=("test",)))
add(_cases("extra-key", "split file with an extra top-level key `evil`",
           "unknown keys are refused or ignored; the three splits must still be read right", ANY_SAFE,
           _with(lambda ctx, d, doc: doc.update(evil={"cmd": "id"})), present={"train": 6, "val": 2, "test": 4}))
add(_cases("splits-not-lists", "split file {train: 'benign/benign0.png', ...}", WHY_TYPE, ERROR,
           _with(lambda ctx, d, doc: doc.update(train="benign/benign0.png"))))

# encodings, sizes and special files ----------------------------------------------------------------------
add(_cases("not-json", "split file that is not JSON", WHY_TYPE, ERROR, lambda ctx, d: _write(ctx, "train: [x]")))
add(_cases("empty-file", "split file of 0 bytes", WHY_TYPE, ERROR, lambda ctx, d: _write(ctx, "")))
add(_cases("bom", "valid split file starting with a UTF-8 BOM",
           "Excel/Notepad add a BOM: read it (or one clear line); the splits must be right if read", ANY_SAFE,
           lambda ctx, d: write(ctx.root / "split.json", b"\xef\xbb\xbf" + json.dumps(_entries()).encode()),
           present={"train": 6, "val": 2, "test": 4}))
add(_cases("utf16", "valid split file in UTF-16",
           "item 8: a non-UTF-8 file is one line naming the file (not an unexpected UnicodeDecodeError), or read "
           "right", ANY_SAFE,
           lambda ctx, d: write(ctx.root / "split.json", json.dumps(_entries()).encode("utf-16")),
           present={"train": 6, "val": 2, "test": 4}, item="8"))
add(_cases("cp1252", "split file in cp1252 with `bénign` as a class name (byte 0xE9)",
           "item 8: non-UTF-8 input is one line naming the file (not 'unexpected UnicodeDecodeError'), or decoded "
           "right", ANY_SAFE,
           lambda ctx, d: write(ctx.root / "split.json",
                                json.dumps(_entries()).replace('"benign"]', '"b\u00e9nign"]').encode("cp1252")),
           item="8", classes=("b\u00e9nign", "malignant")))
add(_cases("deep", "split file of 100000 nested arrays", "item 6: JSON depth bounded, one clear line", ERROR,
           lambda ctx, d: _write(ctx, deep_json()), item="6"))
add(_cases("many-entries", "split file with 200,000 entries (8 MB) of missing files",
           "item 6: entry counts bounded with a clear error (or a fast missing-files error), no hang", ERROR,
           lambda ctx, d: _write(ctx, '{"train": [' + ",".join(
               f'["benign/x{i}.png", 0, "benign"]' for i in range(200_000)) + '], "val": [], "test": []}'),
           item="6", timeout=120))
add(_cases("fifo", "--split-file is a FIFO", "no hang: one clear line", ERROR,
           lambda ctx, d: fifo(ctx.root / "split.json"), timeout=60))
add(_cases("dev-zero", "--split-file is a symlink to /dev/zero", "an endless file: refused, bounded", ERROR,
           lambda ctx, d: symlink(ctx.root / "split.json", "/dev/zero"), timeout=60, item="6"))
add(_cases("is-dir", "--split-file is a directory", "one clear line", ERROR,
           lambda ctx, d: (ctx.root / "split.json").mkdir() or ctx.root / "split.json"))


def _unicode_split(ctx, d):
    """Valid: class folders and files with non-ASCII names (NFC)."""
    names = (unicodedata.normalize("NFC", "bénin"), unicodedata.normalize("NFC", "maligne-ü"))
    s = {"train": [], "val": [], "test": []}
    for c, cname in enumerate(names):
        for i, sp in enumerate(("train", "train", "val", "test")):
            png(d / cname / f"ünï-{i}.png", seed=300 + 10 * c + i)
            s[sp].append([f"{cname}/ünï-{i}.png", c, cname])
    return _write(ctx, s)


add([Case("split-unicode-names-check", KLASS, "valid split with non-ASCII folder and file names (check)",
          "a valid split must be accepted and read right (a positive control)", frozenset({"accepted", "warning"}),
          lambda ctx: (lambda d: Run(["data", "check", "-d", "custom", "-r", str(d), "--split-file",
                                      str(_unicode_split(ctx, d)), "--json", str(ctx.root / "r.json")],
                                     check=report_check(ctx.root / "r.json", classes=(
                                         unicodedata.normalize("NFC", "bénin"),
                                         unicodedata.normalize("NFC", "maligne-ü")))))(ctx.root / "udata"))])
add(_cases("valid", "valid split file (positive control)", "must be accepted with the right counts",
           frozenset({"accepted", "warning"}), _with(lambda ctx, d, doc: None),
           present={"train": 6, "val": 2, "test": 4}))
