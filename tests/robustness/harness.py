"""Harness of the robustness suite (issue 10): every class of bad input is one table row, run through the
real command line (``medclipsvd.cli.app.run``, in-process) and held to the same five rules:

1. the exit status is the expected one (2 for our errors, 1 for file-system errors; 0 only for rows whose
   bad input must be survived with a warning, e.g. ``--allow-missing``);
2. exactly one ``error:`` line (``warning:`` for exit-0 rows) that mentions every string in ``mentions``
   (the file or option it is about, and the fix), case-insensitively;
3. no ``Traceback`` anywhere in stdout/stderr;
4. no file under ``forbidden`` (paths outside the data root: ``Corpus.secret`` ...) is opened, checked by
   an audit hook on ``open`` (``sys.addaudithook``; it sees Python's ``open``/``os.open``, which Pillow,
   pydicom, nibabel and numpy use), symlinks resolved;
5. every file under ``keep`` still exists with the same bytes afterwards (nothing already on disk lost).

Adding rows (e.g. in ``tests/robustness/test_safety_*.py``)::

    from harness import Row, Scenario, rows_table, run_row      # this folder is on sys.path (conftest)

    def _nan_adapter(c):                         # c: Corpus, a fresh tmp folder with helpers
        data = c.class_folders()                 # data/<class>/<image>.png, 2 classes x 6 images
        return Scenario(["train", "--pipeline", "custom", "--data-root", str(data), "--lr", "nan",
                         "--output", str(c.path("out")), *c.FAST],
                        mentions=["--lr"], forbidden=[c.outside], keep=[data])

    ROWS = [Row("lr-nan", item=10, klass="option validation", input="--lr nan", build=_nan_adapter)]

    @pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
    def test_row(row, tmp_path):
        run_row(row, tmp_path)

``Row.item`` is the item of the issue the row belongs to (``Row.issue``, default 10; hospital-volume rows
are issue 9's "bad input"); ``klass`` the bad-input class (the docs table groups by it). docs/reliability.md holds the table of every row in every ``test_*.py`` of this folder: regenerate
it with ``python tests/robustness/harness.py`` after adding rows (``test_reliability_doc`` fails while the
table is stale).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DOC = REPO / "docs" / "reliability.md"


# ------------------------------------------------------------------------------------------------ rows
@dataclass
class Scenario:
    """What one row runs and what it promises."""

    argv: list[str]                                   # arguments after `medclipsvd`
    mentions: list[str]                               # the line must contain each (file/option, and the fix)
    exit_code: int = 2
    forbidden: list[Path] = field(default_factory=list)   # must not be opened (outside the data root)
    keep: list[Path] = field(default_factory=list)        # files/folders that must survive byte for byte
    env: dict[str, str] = field(default_factory=dict)
    line: str = ""                                    # "error:" (default for exit != 0) or "warning:"

    def __post_init__(self) -> None:
        self.line = self.line or ("error:" if self.exit_code != 0 else "warning:")


@dataclass(frozen=True)
class Row:
    id: str
    item: int | str           # item of the issue (issue 10: its numbered items; issue 9: "bad input")
    klass: str                # bad-input class (docs table groups by it)
    input: str                # the bad input, for the docs table
    build: Callable[["Corpus"], Scenario]
    slow: bool = False        # trains or evaluates a model (seconds): marked @pytest.mark.slow
    issue: int = 10           # the issue whose promise the row checks


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    opened: list[str]

    @property
    def text(self) -> str:
        return self.out + self.err


# ----------------------------------------------------------------------------------------- the guard
_OPENED: list[str] | None = None
_HOOKED = False


def _audit(event: str, args) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


@contextlib.contextmanager
def record_opens():
    """Collect every path opened in this process while active (audit hooks cannot be removed, so one hook
    is installed once and switched on and off)."""
    global _OPENED, _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    _OPENED = opened = []
    try:
        yield opened
    finally:
        _OPENED = None


def _under(path: str, roots: list[Path]) -> bool:
    real = os.path.realpath(path)
    for r in roots:
        rr = os.path.realpath(r)
        if real == rr or real.startswith(rr.rstrip(os.sep) + os.sep):
            return True
    return False


def _digests(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.exists() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@contextlib.contextmanager
def _env(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_cli(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Outcome:
    """``medclipsvd ARGV`` in this process: exit status, stdout, stderr and the files it opened."""
    try:
        from medclipsvd.cli.app import run
    except ImportError:  # a CLI from before issue 10 (only main()): lets the rows be replayed against it
        run = _run_via_main

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    with _env({"MEDCLIPSVD_DEBUG": "", "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), record_opens() as opened:
        try:
            if cwd is not None:
                os.chdir(cwd)
            code = run(list(argv))
        finally:
            os.chdir(here)
    return Outcome(code, out.getvalue(), err.getvalue(), list(opened))


def _run_via_main(argv: list[str]) -> int:
    import traceback

    from medclipsvd.cli.app import main

    saved = sys.argv
    sys.argv = ["medclipsvd", *argv]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved
    return 0


def check(outcome: Outcome, sc: Scenario, before: dict[str, str]) -> None:
    """The five rules (see the module docstring); the assertion message shows the output."""
    shown = f"\n--- exit {outcome.code}\n--- stdout\n{outcome.out[-3000:]}\n--- stderr\n{outcome.err[-3000:]}"
    assert "Traceback" not in outcome.text, "traceback in the output" + shown
    assert outcome.code == sc.exit_code, f"exit status {outcome.code}, expected {sc.exit_code}" + shown
    lines = [l for l in outcome.text.splitlines() if l.startswith(sc.line)]
    if sc.line == "error:":
        assert len(lines) == 1, f"expected exactly one '{sc.line}' line, got {len(lines)}" + shown
    else:
        assert lines, f"silent: no '{sc.line}' line" + shown
    hit = [l for l in lines if all(m.lower() in l.lower() for m in sc.mentions)]
    assert hit, f"no '{sc.line}' line mentions all of {sc.mentions}" + shown
    leaked = sorted({p for p in outcome.opened if _under(p, sc.forbidden)})
    assert not leaked, f"opened outside the data root: {leaked}" + shown
    after = _digests(sc.keep)
    lost = [p for p, d in before.items() if after.get(p) != d]
    assert not lost, f"lost or changed on disk: {lost}" + shown


def run_row(row: Row, tmp_path: Path) -> Outcome:
    """Build the row's corpus in ``tmp_path``, run it, apply the five rules. Returns the outcome."""
    corpus = Corpus(tmp_path)
    sc = row.build(corpus)
    before = _digests(sc.keep)
    outcome = run_cli(sc.argv, sc.env, cwd=corpus.root)
    check(outcome, sc, before)
    return outcome


# --------------------------------------------------------------------------------- the bad-input corpus
@functools.lru_cache(maxsize=4)
def _bomb_bytes(side: int) -> bytes:
    import struct
    import zlib

    z = zlib.compressobj(9)
    row = b"\x00" + bytes(side)  # filter byte + one row of black pixels
    raw = b"".join(z.compress(row) for _ in range(side)) + z.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


class Corpus:
    """Builds small inputs, good and bad, under one tmp folder. ``outside/`` holds files that must never be
    opened (a valid image, so that reading it would silently work); the data lives under ``data/``."""

    FAST = ["--backbone", "tiny-biomedclip", "--shots", "2", "--max-steps", "2", "--no-mlflow", "--device", "cpu"]

    def __init__(self, root: Path):
        self.root = Path(root)
        self.outside = self.root / "outside"
        self.secret = self.image(self.outside / "secret.png", seed=99)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def image(self, path: Path, seed: int = 0, size: int = 32, mode: str = "RGB") -> Path:
        from PIL import Image

        rng = np.random.default_rng(seed)
        shape = (size, size, 3) if mode == "RGB" else (size, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
        return path

    def class_folders(self, name: str = "data", classes=("benign", "malignant"), per_class: int = 6) -> Path:
        """``name/<class>/<class><i>.png``; every image distinct."""
        root = self.root / name
        for c, cname in enumerate(classes):
            for i in range(per_class):
                self.image(root / cname / f"{cname}{i}.png", seed=100 * c + i)
        return root

    def csv(self, rows: list[str], name: str = "data/export.csv", header: str = "path,label,split") -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join([header, *rows]) + "\n")
        return p

    def csv_dataset(self, extra: list[str] = (), name: str = "data/export.csv", images: int = 4) -> Path:
        """A valid two-class CSV dataset (train/val/test given) plus ``extra`` rows."""
        rows = []
        for c, cname in enumerate(("benign", "malignant")):
            for i in range(images):
                rel = f"img/{cname}{i}.png"
                self.image((self.root / name).parent / rel, seed=100 * c + i)
                rows.append(f"{rel},{cname},{('train', 'train', 'val', 'test')[i % 4]}")
        return self.csv([*rows, *extra], name)

    def split_json(self, entries: dict[str, list[list]], name: str = "data/split.json") -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(entries))
        return p

    def busi(self, extra: dict[str, list[list]] | None = None) -> Path:
        """A registry-shaped BUSI root (``data/BUSI/`` + its split file and images, one per class and split),
        with ``extra`` split entries (paths relative to ``busi_base``). Returns the data root ``data/``."""
        from medclipsvd.data.registry import dataset_info

        info = dataset_info("BUSI")
        layout = info.layouts[0]
        base = self.busi_base
        split = {"train": [], "val": [], "test": []}
        n = 0
        for label, cname in enumerate(info.classnames):
            for s in split:
                rel = f"{cname.replace(' ', '_')}/{s}{label}.png"
                self.image(base / rel, seed=n)
                n += 1
                split[s].append([rel, label, cname])
        for s, items in (extra or {}).items():
            split[s].extend(items)
        (self.root / "data" / layout.dir / layout.split_file).write_text(json.dumps(split))
        return self.root / "data"

    @property
    def busi_base(self) -> Path:
        """The folder BUSI's split entries are relative to."""
        from medclipsvd.data.registry import dataset_info

        layout = dataset_info("BUSI").layouts[0]
        ddir = self.root / "data" / layout.dir
        return ddir / layout.image_dir if layout.image_dir else ddir

    def rel_to_secret(self, base: Path) -> str:
        """``../..`` path from ``base`` to the secret outside the data root."""
        return os.path.relpath(self.secret, base)

    def truncated_png(self, path: Path, seed: int = 7) -> Path:
        self.image(path, seed=seed, size=64)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # the header parses, decoding fails
        return path

    def bomb_png(self, path: Path, side: int = 10000) -> Path:
        """A small PNG of ``side``² black grey pixels (zlib compresses it ~1000:1): a decompression bomb."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_bomb_bytes(side))
        return path

    def dicom(self, path: Path, size: int = 32, cut: int | None = None) -> Path:
        """A CT DICOM with (fake) patient tags; ``cut`` keeps only the first ``cut`` bytes."""
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID = "Doe^Jane", "PID-93125"
        ds.set_pixel_data(np.arange(size * size, dtype=np.uint16).reshape(size, size), "MONOCHROME2", 16)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        if cut is not None:
            path.write_bytes(path.read_bytes()[:cut])
        return path

    def pipeline(self, body: dict, name: str = "bad_pipeline.yaml") -> Path:
        import yaml

        base = {"name": "bad", "description": "robustness row", "suite": "custom", "dataset": "custom",
                "backbone": "tiny-biomedclip", "hparams": {"lr": 0.002, "train_epochs": 1, "batch_size": 4}}
        base.update(body)
        p = self.root / name
        p.write_text(yaml.safe_dump(base))
        return p


# ------------------------------------------------------------------------------------------- docs table
def all_rows() -> list[Row]:
    """Every ``ROWS`` list of every ``test_*.py`` in this folder (imported by path, in name order)."""
    rows = []
    for f in sorted(HERE.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"robustness_rows_{f.stem}", f)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses defined in a row file look their module up here
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        spec.loader.exec_module(mod)
        rows += [(f.name, r) for r in getattr(mod, "ROWS", [])]
    return rows


BEGIN, END = "<!-- rows:begin (generated by tests/robustness/harness.py) -->", "<!-- rows:end -->"


def rows_table() -> str:
    rows = all_rows()
    lines = [BEGIN, "", "| # | issue item | class | row id | bad input | file |", "|---|---|---|---|---|---|"]
    order = sorted(rows, key=lambda x: (x[0], str(x[1].item).zfill(3), x[1].klass, x[1].id))  # per file
    for n, (fname, r) in enumerate(order, 1):
        bad_input = r.input.replace("|", "\\|")
        item = r.item if r.issue == 10 else f"{r.issue}: {r.item}"  # a bare number is an item of issue 10
        lines.append(f"| {n} | {item} | {r.klass} | `{r.id}` | {bad_input} | {fname} |")
    by_issue: dict[int, dict] = {}
    for _, r in order:
        items = by_issue.setdefault(r.issue, {})
        items[r.item] = items.get(r.item, 0) + 1
    per = "; ".join(f"issue {i}: " + ", ".join(f"item {k}: {v}" if isinstance(k, int) else f"{k}: {v}"
                                              for k, v in items.items())
                    for i, items in sorted(by_issue.items(), reverse=True))
    lines += ["", f"**{len(rows)} rows** ({per}). Each row asserts its exit status, one message line naming "
              f"the file or option and the fix, no traceback, no file outside the data root opened, and nothing "
              f"on disk lost; with the suite green that is **0 tracebacks and 0 silent** over these rows.", "",
              END]
    return "\n".join(lines)


def write_doc() -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + rows_table() + text[end:])


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    write_doc()
    print(f"wrote the rows table of {DOC}")
