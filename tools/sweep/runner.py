"""Schedules cases over worker processes: shared fixtures first, then the cases that need them; a time and
memory watchdog kills a worker's whole process group when a case runs away, and a fresh worker takes over."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing.connection import wait
from pathlib import Path

from .core import last_lines

FIXTURE_DEPS = {"data": (), "run": ("data",), "model": ("run",), "store": ("data",)}
MEMORY_LIMIT = 3 << 30        # resident bytes of one worker's process group
RECYCLE_AFTER = 40            # cases per worker process (torch and MLflow state accumulate)
MARGIN = 45.0                 # seconds on top of a case's limit for building it and checking its result


def _expand(needs: set[str]) -> list[str]:
    order: list[str] = []

    def add(name: str) -> None:
        for dep in FIXTURE_DEPS[name]:
            add(dep)
        if name not in order:
            order.append(name)

    for n in sorted(needs):
        add(n)
    return order


def _group_rss(pgid: int) -> int:
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command name: state, ppid, pgrp, ..., rss at index 21
            total += int(fields[21]) * page
    return total


class Worker:
    def __init__(self, workdir: Path, repo: Path):
        from . import worker

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        # not a daemon: a daemonic process may not start children, and the cases must meet the DataLoader's
        # real behaviour (the worker's fork budget is what stops a fork bomb); it exits when the pipe closes
        self.proc = ctx.Process(target=worker.main, args=(child, str(workdir), str(repo)), daemon=False)
        self.proc.start()
        child.close()
        self.task: tuple | None = None
        self.deadline = 0.0
        self.started: dict = {}
        self.done = 0
        self.ready = False

    def send(self, kind: str, arg: str, limit: float) -> None:
        self.task = (kind, arg)
        self.deadline = time.monotonic() + limit
        self.started = {}
        self.conn.send((kind, arg))

    def kill(self) -> None:
        pid = self.proc.pid
        try:
            if pid and os.getpgid(pid) == pid:  # its own group (set first thing in the worker): all of it
                os.killpg(pid, signal.SIGKILL)
            else:
                self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.join(5)

    def stop(self) -> None:
        try:
            self.conn.send(("stop", ""))
            self.proc.join(10)
        except (OSError, EOFError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.kill()


def _stopped_result(case, w: Worker, workdir: Path, why: str) -> dict:
    out = Path(w.started.get("output", workdir / "outputs" / f"{case.id}.txt"))
    text = out.read_text(encoding="utf-8", errors="replace") if out.exists() else ""
    markers_dir = workdir / "markers" / case.id
    markers = sorted(os.listdir(markers_dir)) if markers_dir.exists() else []
    flags = (["code execution"] if any(m.startswith("exec-") for m in markers) else []) + \
            (["side effect"] if any(m.startswith("write-") for m in markers) else [])
    notes = [why] + ([f"payload marker(s) present: {markers}"] if markers else [])
    return {"id": case.id, "class": case.klass, "what": case.what, "why": case.why, "expect": sorted(case.expect),
            "item": case.item, "argv": w.started.get("argv", []), "exit": None, "seconds": None,
            "status": "traceback/hang", "outcome": "hang", "flags": flags, "notes": notes,
            "last_lines": last_lines(text)}


def run_sweep(cases: list, workdir: Path, repo: Path, jobs: int = 1, progress=print) -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    fixtures_todo = _expand({n for c in cases for n in c.needs})
    fixtures_state: dict[str, str] = {}           # name -> "running" | "ok" | "failed: ..."
    pending = list(cases)
    results: list[dict] = []
    workers: list[Worker] = []
    by_id = {c.id: c for c in cases}
    total = len(cases)

    def ready_fixture() -> str | None:
        for f in fixtures_todo:
            if f not in fixtures_state and all(fixtures_state.get(d) == "ok" for d in FIXTURE_DEPS[f]):
                return f
        return None

    def fail_dependents() -> None:
        for c in list(pending):
            bad = [n for n in _expand(set(c.needs)) if fixtures_state.get(n, "").startswith("failed")]
            if bad:
                pending.remove(c)
                results.append({"id": c.id, "class": c.klass, "what": c.what, "why": c.why,
                                "expect": sorted(c.expect), "item": c.item, "argv": [], "exit": None,
                                "seconds": None, "status": "sweep error", "outcome": "", "flags": [],
                                "notes": [f"fixture {bad[0]} could not be built"], "last_lines": []})

    def next_case():
        for c in pending:
            if all(fixtures_state.get(n) == "ok" for n in _expand(set(c.needs))):
                pending.remove(c)
                return c
        return None

    def report(res: dict) -> None:
        results.append(res)
        mark = "ok " if res["status"] in ("clear error", "accepted", "warning") and not res["flags"] else "!! "
        flags = f" [{', '.join(res['flags'])}]" if res["flags"] else ""
        progress(f"{mark}{len(results):4d}/{total} {res['id']}: {res['status']}{flags} "
                 f"({res.get('seconds') or 0:.1f} s)")

    for _ in range(max(1, jobs)):
        workers.append(Worker(workdir, repo))
    dead_starts = 0
    try:
        while True:
            fail_dependents()
            if not pending and not any(w.task for w in workers):
                break
            # hand out work
            for w in workers:
                if not w.ready or w.task is not None:
                    continue
                f = ready_fixture()
                if f is not None:
                    fixtures_state[f] = "running"
                    progress(f"building fixture {f} ...")
                    w.send("fixture", f, 900.0)
                    continue
                c = next_case()
                if c is not None:
                    w.send("case", c.id, c.timeout + MARGIN)
            conns = {w.conn: w for w in workers}
            for conn in wait(list(conns), timeout=0.5):
                w = conns[conn]
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    w.proc.join(1)
                    if not w.ready:
                        dead_starts += 1
                        if dead_starts > 3:
                            raise RuntimeError(f"worker processes die while starting (see {workdir}/worker-*.log)")
                    why = f"the worker process died (exit status {w.proc.exitcode})"
                    _replace(workers, w, workdir, repo, why, by_id, report, fixtures_state, progress)
                    continue
                if kind == "ready":
                    w.ready = True
                elif kind == "started":
                    w.started = payload
                elif kind == "done":
                    task, w.task = w.task, None
                    if task[0] == "fixture":
                        fixtures_state[task[1]] = "ok" if payload["ok"] else f"failed: {payload['info']}"
                        progress(f"fixture {task[1]}: {'ok' if payload['ok'] else 'FAILED'}"
                                 + ("" if payload["ok"] else "\n" + payload["info"]))
                    else:
                        w.done += 1
                        report(payload)
                        if w.done >= RECYCLE_AFTER or _group_rss(w.proc.pid) > MEMORY_LIMIT * 0.8:
                            w.stop()
                            workers[workers.index(w)] = Worker(workdir, repo)
            # watchdog: time and memory of the busy workers
            now = time.monotonic()
            for w in list(workers):
                if w.task is None:
                    continue
                why = ""
                if now > w.deadline:
                    why = "time limit: the case did not finish in its time (hang)"
                else:
                    rss = _group_rss(w.proc.pid)
                    if rss > MEMORY_LIMIT:
                        why = f"memory limit: {rss / 2**30:.1f} GB resident (limit {MEMORY_LIMIT / 2**30:.0f} GB)"
                if why:
                    _replace(workers, w, workdir, repo, why, by_id, report, fixtures_state, progress)
    finally:
        for w in workers:
            w.stop()
    return results


def _replace(workers, w, workdir, repo, why, by_id, report, fixtures_state, progress) -> None:
    task = w.task
    w.kill()
    workers[workers.index(w)] = Worker(workdir, repo)
    if task is None:
        return
    if task[0] == "fixture":
        fixtures_state[task[1]] = f"failed: {why}"
        progress(f"fixture {task[1]}: FAILED ({why})")
        return
    report(_stopped_result(by_id[task[1]], w, workdir, why))
