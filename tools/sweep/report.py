"""The summary table (Markdown, by input class) and the per-case report (JSON)."""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from .core import PASSING

COLUMNS = [("cases", None), ("clear errors", "clear error"), ("accepted (correct)", "accepted"),
           ("warnings", "warning"), ("unclear", "unclear"), ("wrongly refused", "wrongly refused"),
           ("tracebacks/hangs", "traceback/hang"), ("silently wrong", "silently wrong"),
           ("code executions", "code execution"), ("outside reads/leaks", "outside read"),
           ("side effects", "side effect"), ("sweep errors", "sweep error")]
FLAG_COLUMNS = {"code execution", "outside read", "side effect"}


def _count(rows: list[dict], key) -> int:
    if key is None:
        return len(rows)
    if key in FLAG_COLUMNS:
        return sum(1 for r in rows if key in r["flags"])
    return sum(1 for r in rows if r["status"] == key)


def summary_table(results: list[dict], class_order: list[str]) -> str:
    head = "| input class | " + " | ".join(c for c, _ in COLUMNS) + " |"
    lines = [head, "|---|" + "---:|" * len(COLUMNS)]
    seen = [k for k in class_order if any(r["class"] == k for r in results)]
    seen += sorted({r["class"] for r in results} - set(seen))
    for k in seen:
        rows = [r for r in results if r["class"] == k]
        lines.append(f"| {k} | " + " | ".join(str(_count(rows, key)) for _, key in COLUMNS) + " |")
    lines.append("| **all** | " + " | ".join(f"**{_count(results, key)}**" for _, key in COLUMNS) + " |")
    return "\n".join(lines)


def is_pass(r: dict) -> bool:
    return r["status"] in PASSING and not r["flags"]


def acceptance(results: list[dict]) -> dict:
    """Issue 16's acceptance counts."""
    return {"cases": len(results),
            "code executions": _count(results, "code execution"),
            "tracebacks/hangs": _count(results, "traceback/hang"),
            "silently wrong": _count(results, "silently wrong"),
            "sweep errors": _count(results, "sweep error"),
            "passing": sum(1 for r in results if is_pass(r))}


def write_report(path: Path, results: list[dict], class_order: list[str], seconds: float, argv: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = {k: i for i, k in enumerate(class_order)}
    results = sorted(results, key=lambda r: (order.get(r["class"], 99), r["id"]))
    doc = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": argv,
        "python": platform.python_version(),
        "seconds": round(seconds, 1),
        "acceptance": acceptance(results),
        "table": summary_table(results, class_order),
        "failures": [_brief(r) for r in results if not is_pass(r)],
        "cases": results,
    }
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    md = path.with_suffix(".md")
    md.write_text(markdown(results, class_order, seconds))
    return path


def _brief(r: dict) -> dict:
    return {k: r.get(k) for k in ("id", "class", "status", "flags", "expect", "outcome", "exit", "argv", "notes",
                                  "last_lines")}


def markdown(results: list[dict], class_order: list[str], seconds: float) -> str:
    acc = acceptance(results)
    out = [f"# Bad-input sweep ({acc['cases']} cases, {seconds / 60:.1f} min)", "",
           summary_table(results, class_order), "",
           f"**{acc['code executions']} code executions, {acc['tracebacks/hangs']} tracebacks/hangs, "
           f"{acc['silently wrong']} silently wrong**; {acc['passing']} of {acc['cases']} cases pass.", ""]
    fails = [r for r in results if not is_pass(r)]
    if fails:
        out += ["## Cases that do not pass", "", "| case | class | status | flags | expected | note |",
                "|---|---|---|---|---|---|"]
        for r in fails:
            note = "; ".join(r["notes"])[:300].replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{r['id']}` | {r['class']} | {r['status']} | {', '.join(r['flags'])} | "
                       f"{'/'.join(r['expect'])} | {note} |")
    return "\n".join(out) + "\n"
