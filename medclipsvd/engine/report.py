"""The metrics tables printed after `train`, `evaluate` and `demo` (rich): the headline metrics with their
bootstrap 95 % confidence intervals, and per-class sensitivity / specificity / PPV / NPV."""
from __future__ import annotations


def _num(x, digits: int = 2) -> str:
    return "–" if x is None or x != x else f"{x:.{digits}f}"


def _with_ci(m: dict, key: str, digits: int) -> str:
    value = _num(m.get(key), digits)
    ci = m.get("ci95", {}).get(key)
    if not ci or value == "–":
        return value
    return f"{value}\n{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"  # CI on a second line keeps the table narrow


def results_resamples(results: dict) -> int | None:
    return next((m["ci95"].get("n_resamples") for m in results.get("eval", {}).values() if m.get("ci95")), None)


def metrics_tables(results: dict) -> list:
    from rich.table import Table

    mode = results.get("mode")
    title = (f"{results.get('dataset')} · {results.get('method')} · K={results.get('shots')} · "
             f"seed {results.get('seed')}" + (f" · {mode} mode" if mode else ""))
    level = next((int(round(100 * m["ci95"]["level"])) for m in results.get("eval", {}).values()
                  if m.get("ci95", {}).get("level")), None)
    summary = Table(title=title, caption=(f"second line: {level} % confidence interval (stratified bootstrap, "
                                          f"{results_resamples(results)} resamples)") if level else None)
    for col in ("split", "n", "accuracy", "balanced acc.", "AUROC (OvR)", "macro-F1", "ECE"):
        summary.add_column(col, justify="right")
    per_class = Table(title="per class (one-vs-rest, %)")
    for col in ("split", "class", "n", "sensitivity", "specificity", "PPV", "NPV"):
        per_class.add_column(col, justify="right" if col not in ("split", "class") else "left")
    any_class = False
    for split, m in results.get("eval", {}).items():
        if "accuracy" not in m:
            summary.add_row(split, "–", m.get("skipped", "–"), "", "", "", "")
            continue
        summary.add_row(split, str(m["n"]), _with_ci(m, "accuracy", 1), _with_ci(m, "balanced_accuracy", 1),
                        _with_ci(m, "auroc_ovr", 3), _num(m.get("macro_f1"), 1), _num(m.get("ece"), 3))
        study = m.get("study")
        if study:  # hospital data: the study-level row (mean probability over each study's samples)
            summary.add_row(f"{split} (per study)", str(study["n"]), _with_ci(study, "accuracy", 1),
                            _with_ci(study, "balanced_accuracy", 1), _with_ci(study, "auroc_ovr", 3),
                            _num(study.get("macro_f1"), 1), _num(study.get("ece"), 3))
        for name, r in m.get("per_class", {}).items():
            any_class = True
            per_class.add_row(split, name, str(r["support"]), _num(r["sensitivity"], 1),
                              _num(r["specificity"], 1), _num(r["ppv"], 1), _num(r["npv"], 1))
    return [summary, per_class] if any_class else [summary]
