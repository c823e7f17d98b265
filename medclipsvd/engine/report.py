"""The metrics tables printed after `train`, `evaluate` and `demo` (rich): the headline metrics with their
bootstrap 95 % confidence intervals, per-class sensitivity / specificity / PPV / NPV with their Wilson 95 %
intervals (per image, and per study for hospital data), and the operating points of a binary task.

An interval sits on the second line of its cell (the table stays within 80 columns); "n/e" marks one that
cannot be estimated, and the table's caption says why (the small-sample note of the metrics)."""
from __future__ import annotations

NOT_ESTIMABLE = "n/e"


def _num(x, digits: int = 2) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _cell(value, ci, digits: int, has_ci: bool = True) -> str:
    text = _num(value, digits)
    if text == "–" or not has_ci:
        return text
    if not ci:
        return f"{text}\n{NOT_ESTIMABLE}"
    return f"{text}\n{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def _with_ci(m: dict, key: str, digits: int) -> str:
    ci95 = m.get("ci95") or {}
    return _cell(m.get(key), ci95.get(key), digits, has_ci=key in ci95)


def results_resamples(results: dict) -> int | None:
    return next((m["ci95"].get("n_resamples") for m in results.get("eval", {}).values() if m.get("ci95")), None)


def _levels(results: dict) -> list[tuple[str, dict]]:
    """(row label, metrics) of every evaluation set, its study level right after it."""
    rows = []
    for split, m in results.get("eval", {}).items():
        rows.append((split, m))
        if m.get("study"):  # hospital data: mean probability over each study's samples
            rows.append((f"{split} (per study)", m["study"]))
    return rows


def _notes(rows: list[tuple[str, dict]], key: str) -> list[str]:
    return [f"{label}: {m[key]['note']}" for label, m in rows if (m.get(key) or {}).get("note")]


def summary_table(results: dict):
    from rich.table import Table

    mode = results.get("mode")
    title = (f"{results.get('dataset')} · {results.get('method')} · K={results.get('shots')} · "
             f"seed {results.get('seed')}" + (f" · {mode} mode" if mode else ""))
    rows = _levels(results)
    level = next((int(round(100 * m["ci95"]["level"])) for _, m in rows if (m.get("ci95") or {}).get("level")), None)
    caption = [f"second line: {level} % confidence interval (stratified bootstrap, {results_resamples(results)} "
               f"resamples); {NOT_ESTIMABLE}: not estimable"] if level else []
    table = Table(title=title, caption="\n".join(caption + _notes(rows, "ci95")) or None, caption_justify="left")
    for col in ("split", "n", "accuracy", "balanced acc.", "AUROC (OvR)", "macro-F1", "ECE"):
        table.add_column(col, justify="right")
    for label, m in rows:
        if "accuracy" not in m:
            table.add_row(label, "–", m.get("skipped", "–"), "", "", "", "")
            continue
        table.add_row(label, str(m["n"]), _with_ci(m, "accuracy", 1), _with_ci(m, "balanced_accuracy", 1),
                      _with_ci(m, "auroc_ovr", 3), _with_ci(m, "macro_f1", 1), _num(m.get("ece"), 3))
    return table


def per_class_table(label: str, m: dict):
    """Sensitivity, specificity, PPV and NPV of each class of one evaluation set (or its study level)."""
    from rich.table import Table

    meta = m.get("per_class_ci") or {}
    caption = [f"second line: {int(round(100 * meta['level']))} % {meta.get('method', 'interval')}; "
               f"{NOT_ESTIMABLE}: not estimable (no images in the denominator)"] if meta.get("level") else []
    if meta.get("note"):
        caption.append(meta["note"])
    table = Table(title=f"per class, {label} (one-vs-rest, %)", caption="\n".join(caption) or None,
                  caption_justify="left")
    for col in ("class", "n", "sensitivity", "specificity", "PPV", "NPV"):
        table.add_column(col, justify="left" if col == "class" else "right", overflow="fold")
    for name, r in m.get("per_class", {}).items():
        ci = r.get("ci95") or {}
        table.add_row(name, str(r["support"]), *(_cell(r[k], ci.get(k), 1, has_ci="ci95" in r)
                                                 for k in ("sensitivity", "specificity", "ppv", "npv")))
    return table


def operating_points_table(label: str, ops: dict):
    """Binary tasks: the thresholds that reach a fixed specificity (or sensitivity), and the rates there."""
    from rich.table import Table

    table = Table(title=f"operating points, {label} (positive: {ops['positive_class']})",
                  caption="positive when P(positive) >= threshold; apply one with `medclipsvd predict --threshold`",
                  caption_justify="left")
    for col in ("target", "threshold", "sensitivity", "specificity"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for key, fixed in (("sensitivity_at_specificity", "specificity"), ("specificity_at_sensitivity", "sensitivity")):
        for target, point in ops[key].items():
            t = point["threshold"]
            table.add_row(f"{fixed} >= {target} %", "none" if t is None else f"{t:.4f}",
                          _num(point["sensitivity"], 1), _num(point["specificity"], 1))
    return table


def metrics_tables(results: dict) -> list:
    tables = [summary_table(results)]
    for label, m in _levels(results):
        if m.get("per_class"):
            tables.append(per_class_table(label, m))
        if m.get("operating_points"):
            tables.append(operating_points_table(label, m["operating_points"]))
    return tables
