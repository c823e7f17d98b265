"""Aggregate per-run results into the paper's table layout (reference doc section 5, "Aggregation"):
mean over seeds per dataset, then the average over datasets per K; base / new / HM with HM = 2BN/(B+N)
both per dataset and as the HM of the averaged base and new accuracies. Markdown + CSV + plots."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from medclipsvd.engine.modes import mode_settings, results_mode
from medclipsvd.engine.plots import plot_accuracy_vs_shots

COLUMNS = ["dataset", "method", "shots", "seed", "split", "accuracy", "mode"]


def hmean(b: float, n: float) -> float:
    return 2 * b * n / (b + n) if (b + n) > 0 else 0.0


def collect(output: str | Path, protocol: str) -> pd.DataFrame:
    """One row per (run, evaluation set): dataset, method, shots, seed, split, accuracy."""
    rows = []
    for path in sorted((Path(output) / "runs" / protocol).glob("*/*/*/results.json")):
        try:
            res = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for split, acc in res.get("summary", {}).items():
            if split == "hm":
                continue
            rows.append({"dataset": res["dataset"], "method": res["method"], "shots": int(res["shots"]),
                         "seed": int(res["seed"]), "split": split, "accuracy": float(acc),
                         "mode": results_mode(res)})
    return pd.DataFrame(rows, columns=COLUMNS)


def table_mode(df: pd.DataFrame) -> str:
    """The mode of the runs in a table ("mixed" if several: the harness refuses to write that)."""
    modes = sorted(set(df["mode"])) if "mode" in df else []
    return modes[0] if len(modes) == 1 else ("mixed" if modes else "improved")


def _ddof(df: pd.DataFrame) -> int:
    """Std over seeds: ddof 0 in parity mode (numpy's default, as the reference), 1 (sample std) otherwise."""
    mode = table_mode(df)
    return mode_settings(mode).std_ddof if mode in ("parity", "improved") else 1


def _seed_stats(df: pd.DataFrame) -> pd.DataFrame:
    ddof = _ddof(df)
    g = df.groupby(["dataset", "method", "shots", "split"])["accuracy"]
    out = g.agg(mean="mean", std=lambda x: x.std(ddof=ddof), count="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out.rename(columns={"count": "n_seeds"})


def _fmt(mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
def few_shot_tables(df: pd.DataFrame) -> tuple[str, pd.DataFrame, dict]:
    """Markdown, CSV frame, and curves {method: {series: {K: (mean, std over seeds)}}} for the plots."""
    stats = _seed_stats(df[df["split"] == "test"])
    ks = sorted(stats["shots"].unique())
    methods = list(dict.fromkeys(stats["method"]))
    datasets = sorted(stats["dataset"].unique())
    # average over datasets of the per-dataset seed means, per method and K
    avg = stats.groupby(["method", "shots"])["mean"].agg(["mean", "count"]).reset_index()
    mode, ddof = table_mode(df), _ddof(df)
    md = [f"Mode: **{mode}** (std over seeds with ddof {ddof}).", "",
          f"## Few-shot, {mode} mode: average over datasets (top-1 %; mean over seeds per dataset, then over datasets)",
          ""]
    rows = []
    for m in methods:
        cells = []
        for k in ks:
            hit = avg[(avg["method"] == m) & (avg["shots"] == k)]
            cells.append(_fmt(float(hit["mean"].iloc[0])) + (f" ({int(hit['count'].iloc[0])})"
                                                              if len(datasets) > 1 else "") if len(hit) else "–")
        rows.append([m] + cells)
    md.append(_markdown(["method"] + [f"K={k}" for k in ks], rows))
    if len(datasets) > 1:
        md.append("\n(n) = number of datasets averaged.")
    md += ["", f"## Few-shot, {mode} mode: per dataset (mean ± std over seeds)", ""]
    rows = []
    for d in datasets:
        for m in methods:
            cells = []
            for k in ks:
                hit = stats[(stats["dataset"] == d) & (stats["method"] == m) & (stats["shots"] == k)]
                cells.append(_fmt(float(hit["mean"].iloc[0]), float(hit["std"].iloc[0])) if len(hit) else "–")
            rows.append([d, m] + cells)
    md.append(_markdown(["dataset", "method"] + [f"K={k}" for k in ks], rows))
    csv = stats.drop(columns="split").copy()
    avg_rows = avg.rename(columns={"count": "n_datasets"}).assign(dataset="average", std=float("nan"))
    csv = pd.concat([csv, avg_rows], ignore_index=True)
    # std of the dataset average: average over datasets per seed, then the spread of that over seeds
    per_seed = df[df["split"] == "test"].groupby(["method", "shots", "seed"])["accuracy"].mean().reset_index()
    avg_std = per_seed.groupby(["method", "shots"])["accuracy"].agg(lambda x: x.std(ddof=ddof)).fillna(0.0)
    curves = {}
    for m in methods:
        sm = stats[stats["method"] == m]
        series = {d: {int(r.shots): (float(r["mean"]), float(r["std"])) for _, r in sm[sm["dataset"] == d].iterrows()}
                  for d in datasets}
        series["average"] = {int(r.shots): (float(r["mean"]), float(avg_std.get((m, r.shots), 0.0)))
                             for _, r in avg[avg["method"] == m].iterrows()}
        curves[m] = series
    return "\n".join(md), csv, curves


def base2new_tables(df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    stats = _seed_stats(df[df["split"].isin(["base", "new"])])
    wide = stats.pivot_table(index=["dataset", "method", "shots"], columns="split", values="mean").reset_index()
    for col in ("base", "new"):
        if col not in wide:
            wide[col] = float("nan")
    wide["hm"] = [hmean(b, n) if not (math.isnan(b) or math.isnan(n)) else float("nan")
                  for b, n in zip(wide["base"], wide["new"])]
    md = [f"## Base-to-novel, {table_mode(df)} mode (top-1 %, mean over seeds; HM = 2BN/(B+N))", ""]
    rows = [[r.dataset, r.method, str(r.shots), _fmt(r.base), _fmt(r.new), _fmt(r.hm)] for r in wide.itertuples()]
    md.append(_markdown(["dataset", "method", "K", "base", "new", "HM"], rows))
    md += ["", "## Base-to-novel: average over datasets", "",
           "HM of means = HM(mean base, mean new) (the paper's natural table); mean of HMs = average of the "
           "per-dataset HMs.", ""]
    avg_rows, csv_avg = [], []
    for (m, k), g in wide.groupby(["method", "shots"], sort=False):
        b, n = g["base"].mean(), g["new"].mean()
        hm_means, mean_hms = hmean(b, n), g["hm"].mean()
        avg_rows.append([m, str(k), _fmt(b), _fmt(n), _fmt(hm_means), _fmt(mean_hms), str(len(g))])
        csv_avg.append({"dataset": "average", "method": m, "shots": k, "base": b, "new": n, "hm": hm_means,
                        "mean_of_hm": mean_hms, "n_datasets": len(g)})
    md.append(_markdown(["method", "K", "base", "new", "HM of means", "mean of HMs", "datasets"], avg_rows))
    csv = pd.concat([wide, pd.DataFrame(csv_avg)], ignore_index=True)
    return "\n".join(md), csv


def transfer_tables(df: pd.DataFrame, protocol: str) -> tuple[str, pd.DataFrame]:
    """Cross-dataset / domain generalisation: one row per method, source + each target + target average."""
    stats = _seed_stats(df)
    wide = stats.pivot_table(index=["method", "shots"], columns="split", values="mean").reset_index()
    targets = [c for c in wide.columns if c not in ("method", "shots", "source")]
    wide["average (targets)"] = wide[targets].mean(axis=1) if targets else float("nan")
    cols = ["source"] + targets + ["average (targets)"]
    title = "Cross-dataset transfer" if protocol == "cross_dataset" else "Domain generalisation"
    md = [f"## {title}, {table_mode(df)} mode (top-1 %, mean over seeds; trained on the source only)", ""]
    rows = [[r["method"], str(r["shots"])] + [_fmt(r.get(c, float("nan"))) for c in cols] for _, r in wide.iterrows()]
    md.append(_markdown(["method", "K"] + cols, rows))
    return "\n".join(md), wide


def write_tables(output: str | Path, protocol: str) -> dict[str, str]:
    """Write <output>/tables/<protocol>.{md,csv} (+ plots); returns their paths. Empty dict without results."""
    df = collect(output, protocol)
    if df.empty:
        return {}
    tdir = Path(output) / "tables"
    tdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    if protocol == "few_shot":
        md, csv, curves = few_shot_tables(df)
        paths.update(_few_shot_plots(curves, tdir, table_mode(df)))
    elif protocol == "base2new":
        md, csv = base2new_tables(df)
    else:
        md, csv = transfer_tables(df, protocol)
    from medclipsvd.io import write_text

    write_text(tdir / f"{protocol}.md", md + "\n")  # atomic: parallel shards may aggregate at once
    write_text(tdir / f"{protocol}.csv", csv.to_csv(index=False))
    paths["markdown"] = str(tdir / f"{protocol}.md")
    paths["csv"] = str(tdir / f"{protocol}.csv")
    return paths


def _few_shot_plots(curves: dict, tdir: Path, mode: str) -> dict[str, str]:
    """Accuracy vs K per method (one line per dataset + the average) and the methods compared; mean ±
    std over seeds as error bars; the zero-shot model as a dashed reference line where it was run."""
    def split(series: dict) -> tuple[dict, dict]:
        return ({name: {k: v[0] for k, v in pts.items()} for name, pts in series.items()},
                {name: {k: v[1] for k, v in pts.items()} for name, pts in series.items()})

    zs = curves.get("zero_shot", {}).get("average")
    baseline = ("zero-shot, dataset average", sum(v[0] for v in zs.values()) / len(zs)) if zs else None
    paths = {}
    for m, series in curves.items():
        means, stds = split(series)
        p = plot_accuracy_vs_shots(means, tdir / f"few_shot_{m}.png", title=f"{m}: accuracy vs K ({mode} mode)",
                                   errors=stds, baseline=None if m == "zero_shot" else baseline)
        paths[f"plot_{m}"] = str(p)
    compare = {m: c["average"] for m, c in curves.items() if not (m == "zero_shot" and baseline and len(curves) > 1)}
    means, stds = split(compare)
    paths["plot_methods"] = str(plot_accuracy_vs_shots(
        means, tdir / "few_shot_methods.png", title=f"average over datasets ({mode} mode)", errors=stds,
        baseline=baseline))
    return paths
