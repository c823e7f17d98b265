"""What a case is, what one run of it produced, and how the two are compared (no medclipsvd import here)."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

# the outcomes a case may expect
ERROR = frozenset({"error"})
WARN = frozenset({"warning"})
ACCEPT = frozenset({"accepted", "warning"})          # a valid input: must work (warnings about it are fine)
REFUSE_OR_WARN = frozenset({"error", "warning"})      # must not pass silently
ANY_SAFE = frozenset({"error", "warning", "accepted"})  # either is right; what matters is the result check

EXIT_OK = {0, 1, 2, 130}      # medclipsvd's documented exit statuses
UNEXPECTED = "error: unexpected "
DATA_CHECK_FAILED = "result: FAILED"


@dataclass
class Run:
    """One command line of a case, built by its `build(ctx)`."""

    argv: list[str]                                          # after `medclipsvd`
    env: dict[str, str] = field(default_factory=dict)
    mode: str = "inproc"                                     # "inproc" (audit hook) or "subprocess" (real CLI)
    mentions: list[str] = field(default_factory=list)        # the error line must contain each (case-insensitive)
    warn_mentions: list[str] = field(default_factory=list)   # a warning line with any of these is "the" warning
    check: Optional[Callable[["Ctx", "Result"], Optional[str]]] = None   # result check when exit 0
    after: Optional[Callable[["Ctx", "Result"], Optional[str]]] = None   # post-condition, whatever the outcome
    keep: list[Path] = field(default_factory=list)           # must survive byte for byte
    forbidden: list[str] = field(default_factory=list)       # must not be opened (besides ctx.outside)
    secrets: list[str] = field(default_factory=list)         # must not appear in the output
    # `data check` reports data problems as a per-class table ending in this line (no `error:` line): with a
    # non-zero exit that report is the clear error
    report_failed: str = ""


@dataclass
class Case:
    id: str
    klass: str          # input class: the summary table's rows
    what: str           # the bad input, one line
    why: str            # why the expected outcome is the right one
    expect: frozenset
    build: Callable[["Ctx"], Run]
    needs: tuple = ()   # shared fixtures: "run" (trained adapter), "model" (sealed model folder), "store"
    timeout: float = 90.0
    item: str = ""      # the item of issue 16 it exercises, if any
    slow: bool = False  # trains, evaluates or interprets a model (tens of seconds)


@dataclass
class Result:
    code: Optional[int]
    text: str                      # stdout and stderr, in order
    seconds: float
    opened: list[str] = field(default_factory=list)
    hang: str = ""                 # why the run was stopped (time limit, memory, fork budget, worker died)
    spawned: list[str] = field(default_factory=list)  # subprocess/os.system audit events seen in-process


# ------------------------------------------------------------------------------------------- the context
class Ctx:
    """A case's folders: ``root`` (the cwd of the run), ``outside`` (must never be opened), ``markers`` (a
    payload's proof of execution), and copies of the shared fixtures."""

    def __init__(self, case_id: str, workdir: Path):
        self.case_id = case_id
        self.workdir = Path(workdir)
        self.root = self.workdir / "cases" / case_id
        self.markers = self.workdir / "markers" / case_id
        self.fixtures = self.workdir / "fixtures"
        for d in (self.root, self.markers):
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
        self.outside = self.root / "outside"
        self.outside.mkdir()
        self.secret_text = f"SWEEP-SECRET-{case_id}"
        (self.outside / "secret.txt").write_text(self.secret_text + "\n")
        (self.outside / "secret-token-6f1d.json").write_text('{"token": "%s"}\n' % self.secret_text)
        # a valid image: reading it would silently work, so only the audit hook can tell it was read
        (self.outside / "secret.png").write_bytes(grey_png(32, 32, seed=len(case_id)))
        self.store_info: dict | None = None

    def path(self, rel: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def marker(self, name: str, kind: str = "exec") -> str:
        """Absolute path a payload creates when it runs: ``exec-*`` = code ran, ``write-*`` = a file was
        written where no file may be written."""
        return str(self.markers / f"{kind}-{name}")

    def fixture(self, name: str) -> Path:
        return self.fixtures / name

    def copy_fixture(self, name: str, dest: str | None = None) -> Path:
        src = self.fixture(name)
        if not (src / ".done").exists():
            raise RuntimeError(f"fixture {name} was not built")
        target = self.root / (dest or name)
        shutil.copytree(src, target, symlinks=True, ignore=shutil.ignore_patterns(".done"))
        return target


def grey_png(width: int, height: int, seed: int = 0) -> bytes:
    """A valid 8-bit grey PNG with pseudo-random pixels, written without any imaging library."""
    import random
    import struct
    import zlib

    rnd = random.Random(seed)
    raw = b"".join(b"\x00" + bytes(rnd.randrange(256) for _ in range(width)) for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------- judging
def digests(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        p = Path(p)
        if p.is_symlink() or not p.exists():
            continue
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        for f in files:
            try:
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
            except OSError:
                out[str(f)] = "unreadable"
    return out


def under(path: str, roots: list[str]) -> bool:
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return False
    for r in roots:
        rr = os.path.realpath(r)
        if real == rr or real.startswith(rr.rstrip(os.sep) + os.sep):
            return True
    return False


def classify(res: Result, run: Run) -> tuple[str, str]:
    """(outcome, note) from the exit status and the output only."""
    if res.hang:
        return "hang", res.hang
    if "Traceback" in res.text:
        return "traceback", "'Traceback' in the output"
    if res.code not in EXIT_OK:
        return "traceback", f"exit status {res.code} (not 0/1/2/130)"
    lines = res.text.splitlines()
    errors = [ln for ln in lines if ln.startswith("error:")]
    if res.code != 0:
        if not errors and run.report_failed and run.report_failed in res.text:
            return "error", ""
        if len(errors) != 1:
            return "unclear", f"{len(errors)} 'error:' lines"
        line = errors[0]
        if line.startswith(UNEXPECTED):
            return "unclear", "the 'unexpected error' fallback"
        missing = [m for m in run.mentions if m.lower() not in line.lower()]
        if missing:
            return "unclear", f"the error line does not name {missing}"
        return "error", ""
    if errors:
        return "unclear", "exit 0 with an 'error:' line"
    warns = [ln for ln in lines if ln.startswith("warning:")]
    if any(m.lower() in w.lower() for m in run.warn_mentions for w in warns):
        return "warning", ""
    return "accepted", ""


def judge(case: Case, run: Run | None, res: Result, ctx: Ctx | None, before: dict, build_error: str = "") -> dict:
    """The verdict of one case: its primary status and the independent flags."""
    flags: list[str] = []
    notes: list[str] = []
    if build_error:
        return {"status": "sweep error", "outcome": "", "flags": [], "notes": [build_error]}
    outcome, note = classify(res, run)
    if note:
        notes.append(note)
    if outcome in ("hang", "traceback"):
        status = "traceback/hang"
    elif outcome in ("error", "unclear"):
        if "error" not in case.expect:
            status = "wrongly refused"
        else:
            status = "clear error" if outcome == "error" else "unclear"
    else:  # exit 0
        allowed = outcome in case.expect or (outcome == "warning" and "accepted" in case.expect)
        if not allowed:
            status = "silently wrong"
            notes.append(f"exit 0 ({outcome}), expected {'/'.join(sorted(case.expect))}")
        else:
            problem = None
            if run.check is not None:
                try:
                    problem = run.check(ctx, res)
                except Exception as exc:  # noqa: BLE001 - a check that cannot read the result: the result is wrong
                    problem = f"result check failed: {type(exc).__name__}: {exc}"
            if problem:
                status = "silently wrong"
                notes.append(problem)
            else:
                status = "warning" if outcome == "warning" and "warning" in case.expect else "accepted"
    # independent checks
    markers = sorted(os.listdir(ctx.markers)) if ctx.markers.exists() else []
    if any(m.startswith("exec-") for m in markers):
        flags.append("code execution")
        notes.append(f"payload marker(s) present: {markers}")
    if any(m.startswith("write-") for m in markers):
        flags.append("side effect")
        notes.append(f"payload wrote file(s): {markers}")
    forbidden = [str(ctx.outside), *run.forbidden]
    leaked = sorted({p for p in res.opened if under(p, forbidden)})
    if leaked:
        flags.append("outside read")
        notes.append(f"opened outside the data root: {leaked[:3]}")
    secrets = [s for s in [ctx.secret_text, *run.secrets] if s and s in res.text]
    if secrets:
        flags.append("outside read")
        notes.append(f"output shows {secrets[:2]}")
    after = digests(run.keep)
    lost = [p for p, d in before.items() if after.get(p) != d]
    if lost:
        flags.append("side effect")
        notes.append(f"lost or changed on disk: {lost[:3]}")
    if run.after is not None:
        try:
            problem = run.after(ctx, res)
        except Exception as exc:  # noqa: BLE001
            problem = f"post-condition check failed: {type(exc).__name__}: {exc}"
        if problem:
            flags.append("side effect")
            notes.append(problem)
    return {"status": status, "outcome": outcome, "flags": sorted(set(flags)), "notes": notes}


PASSING = {"clear error", "accepted", "warning"}
# the acceptance of issue 16: none of these
FAILING_HARD = {"traceback/hang", "silently wrong"}
HARD_FLAGS = {"code execution"}


def last_lines(text: str, n: int = 12) -> list[str]:
    # progress bars redraw with \r: keep what the terminal would show
    lines = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
    return [re.sub(r"\s+$", "", ln)[:400] for ln in lines if ln.strip()][-n:]
