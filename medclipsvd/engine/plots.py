"""Figures written next to the results (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """Rendered in memory, then written atomically (a full disk leaves the previous figure)."""
    import io

    from medclipsvd.io import write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return write_bytes(path, buf.getvalue())


def plot_confusion_matrix(cm: list[list[int]], classnames: list[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Counts (left) beside the row-normalised matrix (right: each row = the true class's share of
    predictions, so the diagonal is per-class sensitivity), with scikit-learn's ConfusionMatrixDisplay."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    cm = np.asarray(cm)
    n = len(classnames)
    side = max(3.6, 0.55 * n + 2.2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.0, side + 0.6))
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    for ax, values, fmt, sub in ((axes[0], cm, "d", "counts"), (axes[1], norm, ".2f", "row-normalised (recall)")):
        disp = ConfusionMatrixDisplay(values, display_labels=classnames)
        disp.plot(ax=ax, cmap="Blues", values_format=fmt, colorbar=False, xticks_rotation=45)
        if values is norm:
            disp.im_.set_clim(0, 1)
        for t in disp.text_.ravel():
            t.set_fontsize(8)
        ax.set_title(sub, fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.suptitle(title)
    return _save(plt, fig, path)


def plot_roc_curves(probs, labels, classnames: list[str], path: str | Path, title: str = "ROC curves") -> Path:
    """One-vs-rest ROC curve per class (scikit-learn's RocCurveDisplay), AUC in the legend."""
    import numpy as np
    from sklearn.metrics import RocCurveDisplay

    plt = _pyplot()
    probs, labels = np.asarray(probs), np.asarray(labels)
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    for c, name in enumerate(classnames):
        positives = labels == c
        if positives.all() or not positives.any():  # no curve without both positives and negatives
            continue
        RocCurveDisplay.from_predictions(positives, probs[:, c], name=f"{name} vs rest", ax=ax,
                                         plot_chance_level=(c == len(classnames) - 1))
    ax.set_xlabel("1 − specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return _save(plt, fig, path)


def plot_reliability(probs, labels, path: str | Path, ece: float | None = None, n_bins: int = 15,
                     title: str = "Reliability diagram", counted: str = "images") -> Path:
    """Top-label calibration: accuracy of the predicted class against its confidence, in equal-width bins
    (the bins of the reported ECE), with scikit-learn's CalibrationDisplay; confidence histogram below."""
    import numpy as np
    from sklearn.calibration import CalibrationDisplay

    plt = _pyplot()
    probs, labels = np.asarray(probs), np.asarray(labels)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(int)
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5.2, 6.0), height_ratios=[3, 1], sharex=True)
    if correct.min() != correct.max():
        CalibrationDisplay.from_predictions(correct, conf, n_bins=n_bins, strategy="uniform", ax=ax,
                                            name="model")
    else:  # all right or all wrong: one empirical accuracy, plot it directly
        ax.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
        ax.plot(conf.mean(), correct.mean(), "s", label="model")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("")
    ax.set_ylabel("accuracy of the predicted class")
    ax.set_title(title + (f"  (ECE {ece:.3f})" if ece is not None else ""), fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    hx.hist(conf, bins=np.linspace(0, 1, n_bins + 1), color="tab:gray")
    hx.set_xlabel("confidence (max softmax probability)")
    hx.set_ylabel(counted)
    return _save(plt, fig, path)


def plot_title(pipeline_file: str | None, dataset: str, split: str, method: str, mode: str) -> str:
    """Figure title naming what a reader needs to tell figures apart: the pipeline (its YAML's name; the
    dataset alone when the run came from no pipeline, e.g. a benchmark), split, method and mode."""
    name = Path(pipeline_file).stem if pipeline_file and pipeline_file.endswith((".yaml", ".yml")) else None
    what = f"pipeline {name} ({dataset})" if name and name != dataset else f"{dataset}"
    return f"{what} {split} · {method} · {mode} mode"


def plot_evaluation(probs, labels, metrics: dict, classnames: list[str], out_dir: str | Path, label: str,
                    title: str, studies: list[str] | None = None) -> dict[str, Path]:
    """The clinical figures of one evaluation set: confusion (counts + normalised), ROC, reliability; with
    ``studies`` (each sample's study id) and study metrics, the same three per study beside them
    (``*_<label>_study.png``), from the study-level probabilities the study metrics were computed on."""
    out_dir = Path(out_dir)
    paths = _figures(probs, labels, metrics, classnames, out_dir, label, title, "image")
    if studies is not None and metrics.get("study"):
        from medclipsvd.engine.metrics import study_probs

        p, y, _ = study_probs(probs, labels, studies)
        study = _figures(p, y, metrics["study"], classnames, out_dir, f"{label}_study", title, "study")
        paths.update({f"study_{k}": v for k, v in study.items()})
    return paths


def _figures(probs, labels, metrics: dict, classnames: list[str], out_dir: Path, stem: str, title: str,
             unit: str) -> dict[str, Path]:
    head = f"{title}\nper {unit} (n={len(labels)})"
    return {
        "confusion": plot_confusion_matrix(metrics["confusion_matrix"], classnames,
                                           out_dir / f"confusion_{stem}.png", title=f"{head}: confusion"),
        "roc": plot_roc_curves(probs, labels, classnames, out_dir / f"roc_{stem}.png",
                               title=f"{head}: one-vs-rest ROC"),
        "reliability": plot_reliability(probs, labels, out_dir / f"reliability_{stem}.png", ece=metrics.get("ece"),
                                        title=f"{head}: reliability", counted="studies" if unit == "study" else "images"),
    }


def plot_training_curve(losses: list[float], lrs: list[float], path: str | Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, color="tab:blue")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(range(1, len(lrs) + 1), lrs, color="tab:orange")
    ax2.set_ylabel("learning rate", color="tab:orange")
    return _save(plt, fig, path)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")


def plot_accuracy_vs_shots(table: dict[str, dict[int, float]], path: str | Path, title: str = "",
                           errors: dict[str, dict[int, float]] | None = None,
                           baseline: tuple[str, float] | None = None) -> Path:
    """table: {series name (dataset, method or 'average'): {K: accuracy}}; one line per series.
    errors: the same layout with the std over seeds, drawn as error bars. Each series gets its own marker
    and a small horizontal offset, so series that coincide stay visible. baseline: (label, accuracy)
    drawn as a dashed horizontal reference line (the zero-shot model)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    n = len(table)
    for i, (name, points) in enumerate(table.items()):
        ks = sorted(points)
        shift = 2.0 ** (0.06 * (i - (n - 1) / 2))  # multiplicative: the K axis is log2
        err = [(errors or {}).get(name, {}).get(k, 0.0) for k in ks]
        ax.errorbar([k * shift for k in ks], [points[k] for k in ks], yerr=err if any(err) else None,
                    marker=_MARKERS[i % len(_MARKERS)], markersize=5, capsize=3, label=name,
                    linewidth=2.5 if name.lower().startswith("average") else 1.2)
    if baseline is not None:
        ax.axhline(baseline[1], color="black", linestyle="--", linewidth=1,
                   label=f"{baseline[0]} ({baseline[1]:.1f})")
    ax.set_xscale("log", base=2)
    all_k = sorted({k for p in table.values() for k in p})
    ax.set_xticks(all_k, [str(k) for k in all_k])
    ax.minorticks_off()
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel("top-1 accuracy (%)" + ("; bars: ± std over seeds" if errors else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, path)
