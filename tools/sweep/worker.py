"""A worker process: imports medclipsvd once, then runs cases one after another, each in-process through
``medclipsvd.cli.app.run`` (like tests/robustness/harness.py) or as a real ``python -m medclipsvd`` child.

Guards that keep a bad case from hurting the (shared) machine: an address-space limit, a fork budget (an
audit hook refuses the 17th ``os.fork`` of one case: ``--num-workers 100000`` must not fork 100000
DataLoader workers), and the parent's time and memory watchdog, which kills the whole process group."""
from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .core import Ctx, Result, digests, judge, last_lines

ADDRESS_SPACE = 12 << 30     # bytes of virtual memory per process (torch alone maps ~6 GB)
FORK_BUDGET = 16             # os.fork calls one case may make (DataLoader workers, payloads)

_REC: dict = {"on": False, "opened": [], "spawned": [], "forks": 0, "fork_stop": ""}


def _audit(event: str, args) -> None:
    if not _REC["on"]:
        return
    if event == "open":
        if args and isinstance(args[0], (str, bytes, os.PathLike)):
            _REC["opened"].append(os.fsdecode(args[0]))
    elif event == "os.fork":
        _REC["forks"] += 1
        if _REC["forks"] > FORK_BUDGET:
            _REC["fork_stop"] = f"fork budget exceeded: more than {FORK_BUDGET} os.fork calls in one case"
            raise RuntimeError("sweep guard: " + _REC["fork_stop"])
    elif event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"):
        _REC["spawned"].append(f"{event}: {str(args)[:200]}")


def case_env(workdir: Path, repo: Path) -> dict[str, str]:
    """Environment every case starts from (its own values on top)."""
    return {
        "MEDCLIPSVD_DEBUG": "", "NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb",
        "MEDCLIPSVD_CACHE": str(workdir / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg", "GIT_PYTHON_REFRESH": "quiet", "PYTHONPATH": str(repo),
    }


_DROP_ENV = ("MLFLOW_TRACKING_URI", "MEDCLIPSVD_OUTBOX", "MEDCLIPSVD_MAX_IMAGE_PIXELS",
             "MEDCLIPSVD_WORK_IMAGE_PIXELS", "MEDCLIPSVD_BACKBONE_WEIGHTS", "MEDCLIPSVD_TEXT_DIR",
             "MLFLOW_EXPERIMENT_NAME")


@contextlib.contextmanager
def _case_process_state(values: dict[str, str], cwd: Path, output: Path):
    """Environment, cwd and file descriptors 1 and 2 (pointed at ``output``) for one run; restored after.

    sys.stdout and sys.stderr stay the worker's one stream over fd 1 (``use_fd_streams``), never closed: a
    logging handler that keeps the stream it saw in one case still writes, into the next case's output."""
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    for k in _DROP_ENV:
        os.environ.pop(k, None)
    os.environ.update(values)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    fd1, fd2 = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(cwd)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os.dup2(fd1, 1)
        os.dup2(fd2, 2)
        os.close(fd1)
        os.close(fd2)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def use_fd_streams() -> None:
    """One text stream over fd 1 as sys.stdout and sys.stderr for the worker's life (keeps output in order)."""
    import io

    stream = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace",
                              line_buffering=True, write_through=True)
    sys.stdout = sys.stderr = stream


def _reap_children() -> None:
    """DataLoader workers or anything else a case left running in this process."""
    import multiprocessing

    for child in multiprocessing.active_children():
        with contextlib.suppress(Exception):
            child.kill()
            child.join(2)


def execute(run, ctx: Ctx, timeout: float, workdir: Path, repo: Path, output: Path) -> Result:
    values = {**case_env(workdir, repo), **run.env}
    t0 = time.monotonic()
    if run.mode == "subprocess":
        env = dict(os.environ)
        for k in _DROP_ENV:
            env.pop(k, None)
        env.update(values)
        with open(output, "ab") as fh:
            try:
                p = subprocess.run([sys.executable, "-m", "medclipsvd", *run.argv], cwd=ctx.root, env=env,
                                   stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
                code, hang = p.returncode, ""
            except subprocess.TimeoutExpired:
                code, hang = None, f"time limit: no exit after {timeout:.0f} s"
        text = output.read_text(encoding="utf-8", errors="replace")
        return Result(code, text, time.monotonic() - t0, hang=hang)

    from medclipsvd.cli.app import run as cli_run

    _REC.update(opened=[], spawned=[], forks=0, fork_stop="")
    code = None
    with _case_process_state(values, ctx.root, output):
        _REC["on"] = True
        try:
            code = cli_run(list(run.argv))
        except BaseException:  # noqa: BLE001 - what escaped the CLI's own handler is a traceback for users
            sys.stderr.write(traceback.format_exc())
        finally:
            _REC["on"] = False
        _reap_children()
    text = output.read_text(encoding="utf-8", errors="replace")
    return Result(code, text, time.monotonic() - t0, opened=list(_REC["opened"]), hang=_REC["fork_stop"],
                  spawned=list(_REC["spawned"]))


def run_case(case, workdir: Path, repo: Path, send) -> dict:
    ctx = Ctx(case.id, workdir)
    output = workdir / "outputs" / f"{case.id}.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("")
    base = {"id": case.id, "class": case.klass, "what": case.what, "why": case.why,
            "expect": sorted(case.expect), "item": case.item}
    saved_cwd = os.getcwd()
    try:
        os.chdir(ctx.root)
        run = case.build(ctx)
    except Exception:  # noqa: BLE001 - a case that cannot be built is the sweep's defect, reported as such
        return {**base, "argv": [], "status": "sweep error", "outcome": "", "flags": [], "exit": None,
                "seconds": 0.0, "notes": ["building the case failed"],
                "last_lines": traceback.format_exc().splitlines()[-8:]}
    finally:
        os.chdir(saved_cwd)
    send(("started", {"id": case.id, "argv": run.argv, "output": str(output)}))
    before = digests(run.keep)
    res = execute(run, ctx, case.timeout, workdir, repo, output)
    verdict = judge(case, run, res, ctx, before)
    if res.spawned:
        verdict["notes"].append(f"spawned in-process: {res.spawned[:3]}")
    return {**base, "argv": run.argv, "mode": run.mode, "exit": res.code, "seconds": round(res.seconds, 2),
            **verdict, "last_lines": last_lines(res.text)}


def main(conn, workdir: str, repo: str) -> None:
    """Entry point of a worker process (multiprocessing, spawn)."""
    os.setpgrp()  # the parent kills this group (and whatever a case started) on a time or memory limit
    workdir, repo = Path(workdir), Path(repo)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = ADDRESS_SPACE if hard == resource.RLIM_INFINITY else min(ADDRESS_SPACE, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    log = os.open(workdir / f"worker-{os.getpid()}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    use_fd_streams()
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    sys.addaudithook(_audit)
    import torch  # noqa: F401 - paid once per worker, not per case

    import medclipsvd.cli.app  # noqa: F401

    from . import fixtures
    from .cases import all_cases

    cases = {c.id: c for c in all_cases()}
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        kind, arg = msg
        if kind == "stop":
            return
        if kind == "fixture":
            try:
                info = fixtures.build_fixture(arg, workdir, repo)
                conn.send(("done", {"fixture": arg, "ok": True, "info": info}))
            except Exception:  # noqa: BLE001
                conn.send(("done", {"fixture": arg, "ok": False, "info": traceback.format_exc()[-3000:]}))
            continue
        result = run_case(cases[arg], workdir, repo, conn.send)
        conn.send(("done", result))
