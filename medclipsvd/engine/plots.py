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
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(cm)
    n = len(classnames)
    size = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classnames, rotation=45, ha="right")
    ax.set_yticks(range(n), classnames)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black", fontsize=8)
    return _save(plt, fig, path)


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


def plot_accuracy_vs_shots(table: dict[str, dict[int, float]], path: str | Path, title: str = "") -> Path:
    """table: {series name (dataset or 'average'): {K: accuracy}}; one line per series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in table.items():
        ks = sorted(points)
        ax.plot(ks, [points[k] for k in ks], marker="o", label=name,
                linewidth=2.5 if name.lower().startswith("average") else 1.2)
    ax.set_xscale("log", base=2)
    all_k = sorted({k for p in table.values() for k in p})
    ax.set_xticks(all_k, [str(k) for k in all_k])
    ax.set_xlabel("shots per class (K)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, path)
