"""Hospital CSV exports (path,label[,split][,patient_id]) as spreadsheets really write them: duplicate
columns, BOMs and Windows code pages, NUL bytes, confusable labels, traversal, sizes; read by `data check`,
`data split` and `train`."""
from __future__ import annotations

import json
from pathlib import Path

from ..core import DATA_CHECK_FAILED, ACCEPT, ANY_SAFE, ERROR, REFUSE_OR_WARN, WARN, Case, Run
from ..fixtures import CLASSES, fifo, png, symlink
from .common import FAST, no_adapter_written, train_check

KLASS = "csv"
SPLITS = ("train", "train", "val", "test", "test", "train")
PRESENT = {"train": 6, "val": 2, "test": 4}


def _images(ctx) -> Path:
    folder = ctx.root / "data"
    for c, cname in enumerate(CLASSES):
        for i in range(6):
            png(folder / "img" / f"{cname}{i}.png", seed=100 * c + i)
    return folder


def _rows(label_of=lambda c, i: CLASSES[c]) -> list[list[str]]:
    return [[f"img/{cname}{i}.png", label_of(c, i), SPLITS[i]] for c, cname in enumerate(CLASSES) for i in range(6)]


def _text(rows, header=("path", "label", "split"), sep=",", nl="\n") -> str:
    return nl.join([sep.join(header), *(sep.join(r) for r in rows)]) + nl


def _write(ctx, data: str | bytes) -> Path:
    p = ctx.root / "data" / "export.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        p.write_text(data, encoding="utf-8")
    else:
        p.write_bytes(data)
    return p


def report_check(path: Path, classes=CLASSES, present=PRESENT, warned_ok: bool = False):
    """The report lists exactly ``classes`` with ``present`` images per split; with ``warned_ok`` a run that
    printed a warning naming the label problem also passes (the 'loud warning' of item 8)."""
    def check(ctx, res):
        if warned_ok and any(ln.startswith("warning:") and any(k in ln.lower() for k in (
                "confusab", "look-alike", "lookalike", "homoglyph", "zero-width", "invisible", "format char",
                "normali", "similar", "unicode")) for ln in res.text.splitlines()):
            return None
        if not path.is_file():
            return f"no report {path}"
        doc = json.loads(path.read_text())
        rows = doc.get("rows", [])
        seen = sorted({r["class"] for r in rows})
        if seen != sorted(classes):
            return f"report classes {[c.encode('unicode_escape').decode() for c in seen]}, expected {sorted(classes)}"
        got: dict = {}
        for r in rows:
            got[r["split"]] = got.get(r["split"], 0) + r["present"]
        if present and any(got.get(k, 0) != v for k, v in present.items()):
            return f"present per split {got}, expected {present}"
        return None

    return check


def check_route(ctx, csv: Path, **kw) -> Run:
    rep = ctx.root / "report.json"
    return Run(["data", "check", "-d", "custom", "-r", str(csv), "--json", str(rep)],
               check=kw.pop("check", report_check(rep)), report_failed=DATA_CHECK_FAILED, **kw)


def split_route(ctx, csv: Path, **kw) -> Run:
    out = ctx.root / "split.json"

    def check(ctx, res):
        if not out.is_file():
            return f"no split file {out}"
        doc = json.loads(out.read_text())
        labels = sorted({e[2] for s in ("train", "val", "test") for e in doc.get(s, [])})
        return None if labels == sorted(CLASSES) else f"split classes {labels}"

    kw.pop("check", None)
    return Run(["data", "split", "--data-root", str(csv), "--output", str(out)], check=check, **kw)


def train_route(ctx, csv: Path, **kw) -> Run:
    out = ctx.root / "out"
    kw.pop("check", None)
    return Run(["train", "--pipeline", "custom", "--data-root", str(csv), "--output", str(out), *FAST],
               check=train_check(out), after=no_adapter_written(out) if kw.pop("before_training", False) else None,
               **kw)


ROUTES = {"check": check_route, "split": split_route, "train": train_route}


def _cases(cid, what, why, expect, make, routes=("check",), item="", warn=(), classes=CLASSES, present=PRESENT,
           warned_ok=False, timeout=90.0, forbidden_etc=False) -> list[Case]:
    out = []
    for route in routes:
        def build(ctx, route=route):
            folder = _images(ctx)
            csv = make(ctx, folder)
            kw = {"warn_mentions": list(warn), "keep": [folder]}
            if route == "check":
                kw["check"] = report_check(ctx.root / "report.json", classes, present, warned_ok)
            if route == "train" and "error" in expect and "accepted" not in expect:
                kw["before_training"] = True
            return ROUTES[route](ctx, csv, **kw)

        out.append(Case(f"csv-{cid}-{route}", KLASS, f"{what} ({route})", why, expect, build, timeout=timeout,
                        item=item, slow=route == "train"))
    return out


def _rows_csv(label_of=lambda c, i: CLASSES[c], extra=(), header=("path", "label", "split"), **kw):
    return lambda ctx, folder: _write(ctx, _text([*_rows(label_of), *extra], header, **kw))


CASES: list[Case] = []
add = CASES.extend

# columns ------------------------------------------------------------------------------------------------
add(_cases("dup-label-column", "two `label` columns (the second with the classes swapped)",
           "item 8: a CSV with two label columns silently uses the second; which one is meant is unknowable", ERROR,
           lambda ctx, f: _write(ctx, _text([[*r, CLASSES[1 - CLASSES.index(r[1])]] for r in _rows()],
                                            ("path", "label", "split", "label"))), routes=("check", "split", "train"),
           item="8"))
add(_cases("dup-path-column", "two `path` columns naming different files", "ambiguous: refused", ERROR,
           lambda ctx, f: _write(ctx, _text([[*r, r[0].replace("0.png", "1.png")] for r in _rows()],
                                            ("path", "label", "split", "path")))))
add(_cases("header-case", "header `Path,Label,Split`", "refused naming the columns, or read right", ANY_SAFE,
           _rows_csv(header=("Path", "Label", "Split"))))
add(_cases("semicolons", "semicolon-separated (European Excel)", "refused naming the columns, or read right",
           ANY_SAFE, _rows_csv(sep=";")))
add(_cases("tabs", "tab-separated", "refused naming the columns, or read right", ANY_SAFE, _rows_csv(sep="\t")))
add(_cases("extra-column", "an extra column `comment`", "medclipsvd refuses unknown columns by design (one line "
           "listing the allowed ones); ignoring them and reading the rest right would be fine too", ANY_SAFE,
           lambda ctx, f: _write(ctx, _text([[*r, "ok"] for r in _rows()], ("path", "label", "split", "comment")))))
add(_cases("short-row", "one row with only a path", "a row without a label: refused naming the row", ERROR,
           _rows_csv(extra=[["img/benign5.png"]])))
add(_cases("long-row", "one row with two extra fields", "refused, or the extra fields ignored and read right",
           ANY_SAFE, lambda ctx, f: _write(ctx, _text(_rows()[:-1] + [[*_rows()[-1], "x", "y"]]))))
add(_cases("empty-path", "a row with an empty path", "refused naming the row", ERROR,
           _rows_csv(extra=[["", "benign", "train"]])))
add(_cases("empty-label", "a row with an empty label", "refused naming the row", ERROR,
           _rows_csv(extra=[["img/benign5.png", "", "train"]])))

# encodings and bytes ----------------------------------------------------------------------------------------
add(_cases("bom", "UTF-8 CSV starting with a BOM (Excel 'CSV UTF-8')", "a BOM must not rename the first column: "
           "read right (or one clear line)", ANY_SAFE,
           lambda ctx, f: _write(ctx, b"\xef\xbb\xbf" + _text(_rows()).encode())))
add(_cases("cp1252", "cp1252 CSV (Excel 'CSV'), label `bénin` as byte 0xE9",
           "item 8: not 'unexpected UnicodeDecodeError' without the file name: one clear line naming the file and "
           "the encoding, or decoded right", ANY_SAFE,
           lambda ctx, f: _write(ctx, _text(_rows(lambda c, i: ("bénin", "malin")[c])).encode("cp1252")),
           classes=("bénin", "malin"), routes=("check", "split"), item="8"))
add(_cases("utf16", "UTF-16 CSV (Excel 'Unicode text')", "item 8: one clear line naming the file, or decoded right",
           ANY_SAFE, lambda ctx, f: _write(ctx, _text(_rows()).encode("utf-16")), item="8"))
add(_cases("nul-in-row", "a NUL byte inside a path", "one clear line (csv raises on NUL), not a traceback", ERROR,
           lambda ctx, f: _write(ctx, _text(_rows()).replace("img/benign0.png", "img/ben\0ign0.png").encode())))
add(_cases("nul-in-header", "a NUL byte in the header", "one clear line", ERROR,
           lambda ctx, f: _write(ctx, _text(_rows()).replace("label", "la\0bel", 1).encode())))
add(_cases("empty-file", "CSV of 0 bytes", "one clear line", ERROR, lambda ctx, f: _write(ctx, "")))
add(_cases("header-only", "CSV with only its header", "no images: one clear line", ERROR,
           lambda ctx, f: _write(ctx, "path,label,split\n")))
add(_cases("cr-only", "old-Mac line endings (CR only)", "read right or one clear line", ANY_SAFE,
           _rows_csv(nl="\r")))
add(_cases("unbalanced-quote", "a row with an unbalanced double quote", "one clear line naming the file", ERROR,
           lambda ctx, f: _write(ctx, _text(_rows()) + '"img/benign5.png,benign,train\n')))
add(_cases("newline-in-path", "a quoted path containing a newline", "no such file: one clear line", ERROR,
           lambda ctx, f: _write(ctx, _text(_rows()) + '"img/benign5\n.png",benign,train\n')))
add(_cases("huge-field", "one field of 10 MB", "csv's field limit: one clear line, not a traceback", ERROR,
           lambda ctx, f: _write(ctx, _text(_rows()) + "img/" + "a" * (10 << 20) + ".png,benign,train\n"), item="6"))
add(_cases("many-rows", "200,000 rows (6 MB) naming missing files",
           "item 6: row counts bounded with a clear error (or a fast missing-files error), no hang", ERROR,
           lambda ctx, f: _write(ctx, "path,label,split\n" + "".join(
               f"img/x{i}.png,{CLASSES[i % 2]},train\n" for i in range(200_000))), item="6", timeout=120))

# labels ----------------------------------------------------------------------------------------------------
add(_cases("one-class", "every row labelled benign", "a single class is an error for custom data "
           "(docs/reliability.md); item 8", ERROR, _rows_csv(label_of=lambda c, i: "benign"),
           routes=("check", "split", "train"), item="8"))
add(_cases("zero-width", "half of the benign rows labelled `be\\u200bnign` (zero-width space)",
           "item 8: format characters are stripped (2 classes) or flagged; never a silent third class", ANY_SAFE,
           _rows_csv(label_of=lambda c, i: "be\u200bnign" if c == 0 and i % 2 else CLASSES[c]),
           routes=("check", "train"), item="8", warned_ok=True))
add(_cases("cyrillic-e", "half of the benign rows labelled `bеnign` with a Cyrillic е",
           "item 8: confusable letters are flagged (or refused); never a silent third class", ANY_SAFE,
           _rows_csv(label_of=lambda c, i: "b\u0435nign" if c == 0 and i % 2 else CLASSES[c]), item="8",
           warned_ok=True))
add(_cases("nbsp", "half of the benign rows labelled `benign\\u00a0` (no-break space)",
           "item 8: NFKC makes it `benign ` (2 classes, or an error for near-duplicates); never a silent third class",
           ANY_SAFE, _rows_csv(label_of=lambda c, i: "benign\u00a0" if c == 0 and i % 2 else CLASSES[c]), item="8",
           warned_ok=True))
add(_cases("fullwidth", "half of the benign rows labelled `ｂｅｎｉｇｎ` (full-width letters)",
           "item 8: NFKC folds full-width letters: 2 classes, or flagged", ANY_SAFE,
           _rows_csv(label_of=lambda c, i: "ｂｅｎｉｇｎ" if c == 0 and i % 2 else CLASSES[c]), item="8",
           warned_ok=True))
add(_cases("rtl-override", "half of the benign rows labelled `\\u202ebenign` (right-to-left override)",
           "item 8: format characters are stripped or flagged; never a silent third class", ANY_SAFE,
           _rows_csv(label_of=lambda c, i: "\u202ebenign" if c == 0 and i % 2 else CLASSES[c]), item="8",
           warned_ok=True))
add(_cases("nfd", "labels `bénin` composed (NFC) and decomposed (NFD) in different rows",
           "item 8: Unicode normalisation makes them one class (or flags them)", ANY_SAFE,
           _rows_csv(label_of=lambda c, i: ("be\u0301nin" if i % 2 else "b\u00e9nin") if c == 0 else "malin"),
           classes=("b\u00e9nin", "malin"), item="8", warned_ok=True))
add(_cases("upper-case", "half of the benign rows labelled `BENIGN`", "class names equal up to case are an error "
           "for custom data (docs/reliability.md)", ERROR,
           _rows_csv(label_of=lambda c, i: "BENIGN" if c == 0 and i % 2 else CLASSES[c])))
add(_cases("dup-rows", "one row repeated", "duplicated rows: counted once, with a warning (docs/reliability.md)",
           WARN, _rows_csv(extra=[["img/benign0.png", "benign", "train"]]), warn=("duplicat",)))
add(_cases("split-unknown", "split value `validation` in some rows", "refused, or mapped to val with the right "
           "counts", ANY_SAFE,
           lambda ctx, f: _write(ctx, _text([[p, l, "validation" if s == "val" else s] for p, l, s in _rows()]))))
add(_cases("all-test", "every row in split `test`", "nothing to train on: refused before training", ERROR,
           lambda ctx, f: _write(ctx, _text([[p, l, "test"] for p, l, s in _rows()])), routes=("check", "train")))
add(_cases("patient-leak", "patient P1 has images in train and in test (patient_id column)",
           "a patient in two splits leaks: refused or warned", REFUSE_OR_WARN,
           lambda ctx, f: _write(ctx, _text([[*r, "P1" if r[0].endswith(("benign0.png", "benign3.png")) else
                                              f"P{n + 2}"] for n, r in enumerate(_rows())],
                                            ("path", "label", "split", "patient_id"))), warn=("patient", "P1")))

# paths -----------------------------------------------------------------------------------------------------
WHY_OUT = "every CSV path is confined to the CSV's folder (docs/reliability.md)"
add(_cases("traversal", "row `../outside/secret.png`", WHY_OUT, ERROR,
           _rows_csv(extra=[["../outside/secret.png", "benign", "train"]]), routes=("check", "split", "train")))
add(_cases("inner-traversal", "row `img/../../outside/secret.png`", WHY_OUT, ERROR,
           _rows_csv(extra=[["img/../../outside/secret.png", "malignant", "test"]])))
add(_cases("absolute", "row with the absolute path of the outside image", WHY_OUT, ERROR,
           lambda ctx, f: _write(ctx, _text([*_rows(), [str(ctx.outside / "secret.png"), "benign", "test"]])),
           routes=("check", "split")))
add(_cases("symlink", "row naming img/link.png, a symlink to the outside image",
           "a symlink leading out is refused unless --follow-symlinks", ERROR,
           lambda ctx, f: (symlink(f / "img" / "link.png", ctx.outside / "secret.png"),
                           _write(ctx, _text([*_rows(), ["img/link.png", "benign", "train"]])))[1]))
add(_cases("self-row", "a row naming the CSV itself as an image", "not an image: one clear line", ERROR,
           _rows_csv(extra=[["export.csv", "benign", "train"]])))
add(_cases("dir-row", "a row naming the img/ folder", "a folder without DICOM/images: one clear line", ERROR,
           _rows_csv(extra=[["img", "benign", "train"]])))

# the file itself -----------------------------------------------------------------------------------------
add(_cases("is-dir", "--data-root export.csv that is an empty directory", "no images: one clear line", ERROR,
           lambda ctx, f: (ctx.root / "data" / "export.csv").mkdir() or ctx.root / "data" / "export.csv"))
add(_cases("fifo", "--data-root export.csv that is a FIFO", "no hang: one clear line", ERROR,
           lambda ctx, f: fifo(ctx.root / "data" / "export.csv"), timeout=60))
add(_cases("dev-zero", "--data-root export.csv, a symlink to /dev/zero", "an endless file: refused, bounded", ERROR,
           lambda ctx, f: symlink(ctx.root / "data" / "export.csv", "/dev/zero"), timeout=60, item="6"))
add(_cases("valid", "valid CSV (positive control)", "must be read right", ACCEPT, _rows_csv(),
           routes=("check", "split")))
