"""Write an interpretation as a Markdown file and a self-contained HTML page, with figures."""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from medclipsvd.interpret.spectra import HeadChange, MatrixChange, extreme_directions, heatmap_grid
from medclipsvd.interpret.textspan import TextSpanResult


@dataclass
class HeadDescription:
    """TextSpan descriptions of one head, computed on the base model and on the adapted model."""

    head: HeadChange
    before: TextSpanResult
    after: TextSpanResult


@dataclass
class InterpretResult:
    backbone: str
    adapter: str
    matrices: list[MatrixChange]
    heads: list[HeadChange]
    num_layers: dict[str, int]
    described: list[HeadDescription] = field(default_factory=list)
    images: str = ""              # where the images came from (folder / dataset), "" if none
    n_images: int = 0
    pool: str = ""
    precision: str = ""           # of the image forward passes (fp32 / bf16)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Small machine-readable summary (also logged as MLflow metrics)."""
        out: dict = {"backbone": self.backbone, "adapter": self.adapter, "n_images": self.n_images,
                     "pool": self.pool, "precision": self.precision, "timings_s": self.timings}
        for tower in sorted({m.tower for m in self.matrices}):
            rel = [m.rel_change for m in self.matrices if m.tower == tower]
            out[f"{tower}_mean_rel_sigma_change"] = sum(rel) / len(rel)
            out[f"{tower}_max_rel_sigma_change"] = max(rel)
        out["top_matrices"] = [{"target": m.target, "rel_change": m.rel_change} for m in self.matrices[:10]]
        out["top_heads"] = [{"head": h.key, "ov_change": h.ov_change, "qk_change": h.qk_change}
                            for h in self.heads[:10]]
        out["described_heads"] = [{"head": d.head.key, "before": d.before.texts, "after": d.after.texts}
                                  for d in self.described]
        return out


# ------------------------------------------------------------------------------------------------
# Figures


def _figures(result: InterpretResult, fig_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # headless: reports are written on servers
    import matplotlib.pyplot as plt
    import numpy as np

    fig_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    towers = [t for t in ("vision", "text") if any(m.tower == t for m in result.matrices)]
    if towers:
        fig, axes = plt.subplots(1, len(towers), figsize=(4.2 * len(towers), 0.35 * max(
            result.num_layers.get(t, 1) for t in towers) + 2.2), squeeze=False)
        from matplotlib.colors import LogNorm

        # Log colour scale: relative changes span decades (1e-4 ... 1e-1), a linear scale shows one colour.
        positive = [m.rel_change for m in result.matrices if m.rel_change > 0]
        vmax = max(positive, default=1e-12)
        vmin = min(min(positive, default=vmax), vmax / 10)
        norm = LogNorm(vmin=vmin, vmax=vmax)
        for ax, tower in zip(axes[0], towers):
            layers, kinds, grid = heatmap_grid(result.matrices, tower, result.num_layers.get(tower))
            values = grid.numpy()
            data = np.ma.masked_where(~(values > 0), values)  # NaN (not adapted) and exact zeros: blank
            im = ax.imshow(data, aspect="auto", cmap="magma", norm=norm)
            ax.set_xticks(range(len(kinds)), kinds)
            ax.set_yticks(range(len(layers)), [str(i) for i in layers])
            ax.set_xlabel("matrix")
            ax.set_ylabel("layer")
            ax.set_title(f"{tower} tower")
            for (i, j), v in np.ndenumerate(values):
                if not math.isnan(v) and len(layers) <= 24:  # two significant digits, whatever the decade
                    ax.text(j, i, _sig(v), ha="center", va="center", fontsize=6,
                            color="white" if v <= 0 or norm(v) < 0.6 else "black")
        fig.colorbar(im, ax=axes[0].tolist(), label="‖σ−σ₀‖ / ‖σ₀‖ (log scale)", shrink=0.85)
        fig.suptitle("Relative change of singular values per adapted matrix", y=1.04)
        figs["heatmap"] = fig_dir / "sigma_change_heatmap.png"
        fig.savefig(figs["heatmap"], dpi=130, bbox_inches="tight")
        plt.close(fig)

    top = result.heads[:15]
    if top:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1.5))
        labels = [h.key for h in top][::-1]
        pos = np.arange(len(labels))
        ax.barh(pos + 0.2, [h.ov_change for h in top][::-1], height=0.4, color="#c0392b", label="W_O·W_V (ranked)")
        ax.barh(pos - 0.2, [h.qk_change for h in top][::-1], height=0.4, color="#2980b9", label="W_Qᵀ·W_K")
        ax.set_yticks(pos, labels)
        ax.set_xlabel("relative change of the head's singular spectrum")
        ax.set_title("Most changed attention heads")
        ax.legend(loc="lower right")
        figs["heads"] = fig_dir / "head_change.png"
        fig.savefig(figs["heads"], dpi=130, bbox_inches="tight")
        plt.close(fig)

        fig, axes = plt.subplots(1, min(4, len(top)), figsize=(3.2 * min(4, len(top)), 2.8), squeeze=False)
        for ax, h in zip(axes[0], top):
            ax.semilogy(h.ov_before.numpy(), label="before", color="#7f8c8d")
            ax.semilogy(h.ov_after.numpy(), label="after", color="#c0392b", linestyle="--")
            ax.set_title(h.key, fontsize=9)
            ax.set_xlabel("index")
        axes[0][0].set_ylabel("singular value of W_O^h·W_V^h")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        figs["spectra"] = fig_dir / "head_spectra.png"
        fig.savefig(figs["spectra"], dpi=130, bbox_inches="tight")
        plt.close(fig)
    return figs


# ------------------------------------------------------------------------------------------------
# Text


def _sig(x: float) -> str:
    """Two significant digits: 0.0012, 0.034, 1.2e-05."""
    return "0" if x == 0 else f"{x:.2g}"


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _tables(result: InterpretResult, top: int) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table; shared by the Markdown and HTML writers."""
    tables = []
    tables.append((
        "Most changed matrices", ["rank", "target", "tower", "layer", "matrix", "‖σ−σ₀‖/‖σ₀‖"],
        [[str(i + 1), m.target, m.tower, str(m.layer), m.matrix, _fmt(m.rel_change)]
         for i, m in enumerate(result.matrices[:top])]))
    amp, sup = extreme_directions(result.matrices, top=top)
    for title, dirs in (("Most amplified singular directions", amp), ("Most suppressed singular directions", sup)):
        tables.append((title, ["target", "direction (rank in σ₀)", "σ₀", "σ", "(σ−σ₀)/‖σ₀‖", "σ/σ₀"],
                       [[d.target, str(d.index), _fmt(d.sigma0), _fmt(d.sigma), _fmt(d.rel_delta),
                         _fmt(d.ratio)] for d in dirs]))
    tables.append((
        "Most changed attention heads (spectrum of W_O^h·W_V^h; W_Q^hᵀ·W_K^h alongside)",
        ["rank", "head", "OV change", "QK change", "top σ before", "top σ after"],
        [[str(i + 1), h.key, _fmt(h.ov_change), _fmt(h.qk_change), _fmt(float(h.ov_before[0])),
          _fmt(float(h.ov_after[0]))] for i, h in enumerate(result.heads[:top])]))
    return tables


def _span_rows(desc: HeadDescription) -> list[list[str]]:
    rows = []
    n = max(len(desc.before.choices), len(desc.after.choices))
    for i in range(n):
        b = desc.before.choices[i] if i < len(desc.before.choices) else None
        a = desc.after.choices[i] if i < len(desc.after.choices) else None
        rows.append([str(i + 1), b.text if b else "", f"{b.fraction:.1%}" if b else "",
                     a.text if a else "", f"{a.fraction:.1%}" if a else ""])
    return rows


_SPAN_HEADER = ["#", "before adaptation", "var.", "after adaptation", "var."]


def _intro(result: InterpretResult) -> list[str]:
    lines = [
        f"Backbone `{result.backbone}`, adapter `{result.adapter}`.",
        f"{len(result.matrices)} adapted matrices; {len(result.heads)} attention heads compared.",
    ]
    if result.n_images:
        lines.append(f"Head descriptions from {result.n_images} images ({result.images}) and the "
                     f"`{result.pool}` description pool, following TextSpan (Gandelsman et al., ICLR 2024); "
                     f"image forward passes in {result.precision or 'fp32'}.")
    if result.timings:
        lines.append("Timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items()) + ".")
    return lines + result.notes


_HOW_TO_READ = (
    "How to read this: σ-only adaptation rescales the singular values of each adapted weight matrix "
    "while its singular vectors stay fixed. The heat map shows, per layer and matrix type, the relative "
    "change ‖σ−σ₀‖/‖σ₀‖; single singular directions are ranked by (σ−σ₀)/‖σ₀‖. A head is what W_O^h·W_V^h writes into the residual stream, so heads are ranked "
    "by the change of that product's singular spectrum (computed from the adapted effective weights), not "
    "by slices of a matrix's spectrum. For the most changed vision heads, the descriptions are the texts "
    "from the pool that explain most of the variance of the head's direct contribution to the image "
    "embedding (greedy, each chosen direction projected out before the next pick); 'var.' is the share "
    "of the head's variance along each chosen description."
)


def write_markdown(result: InterpretResult, path: Path, figs: dict[str, Path], top: int = 10) -> Path:
    rel = {k: v.relative_to(path.parent).as_posix() for k, v in figs.items()}
    path.write_text(_markdown(result, rel, top), encoding="utf-8")
    return path


def _markdown(result: InterpretResult, rel: dict[str, str], top: int) -> str:
    """The report as CommonMark + tables; `rel` maps figure keys to link targets (paths or data URIs)."""
    out = ["# What σ-only adaptation changed", ""] + [f"{line}  " for line in _intro(result)] + ["", _HOW_TO_READ, ""]
    if "heatmap" in rel:
        out += ["## Relative σ change (layers × matrix types)", "", f"![σ change heat map]({rel['heatmap']})", ""]
    for title, header, rows in _tables(result, top):
        out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows] + [""]
        if title.startswith("Most changed attention heads"):
            for key in ("heads", "spectra"):
                if key in rel:
                    out += [f"![{key}]({rel[key]})", ""]
    if result.described:
        out += ["## What the most changed vision heads encode (TextSpan)", ""]
        for d in result.described:
            out += [f"### {d.head.key} (OV change {_fmt(d.head.ov_change)})", "",
                    f"Explained variance: before {d.before.explained:.1%}, after {d.after.explained:.1%}.", "",
                    "| " + " | ".join(_SPAN_HEADER) + " |", "|" + "---|" * len(_SPAN_HEADER)]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _span_rows(d)] + [""]
    return "\n".join(out)


def _data_uri(path: Path) -> str:
    # Inline the PNG so the page is one self-contained file (MLflow artifact view, e-mail).
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #c0392b;padding-bottom:.2em}
h2{margin-top:1.6em;color:#2c3e50}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;margin:.5em 0}
.note{color:#555;font-size:.92em}
code{background:#f2f2f2;padding:0 .25em;border-radius:3px;font-size:.92em}
"""


def write_html(result: InterpretResult, path: Path, figs: dict[str, Path], top: int = 10) -> Path:
    """The Markdown report rendered by markdown-it-py (CommonMark + tables; raw HTML in the text is
    escaped, never passed through), figures inlined, in a styled page."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(
        _markdown(result, {k: _data_uri(v) for k, v in figs.items()}, top))
    page = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
            "<title>medclipsvd interpretation</title>", f"<style>{_CSS}</style></head><body>", body,
            "</body></html>"]
    path.write_text("\n".join(page), encoding="utf-8")
    return path


def write_report(result: InterpretResult, out_dir: str | Path, top: int = 10) -> dict[str, Path]:
    """Write report.md, report.html, summary.json and figures/*.png under out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = _figures(result, out / "figures")
    paths = {"markdown": write_markdown(result, out / "report.md", figs, top),
             "html": write_html(result, out / "report.html", figs, top)}
    summary = out / "summary.json"
    summary.write_text(json.dumps(result.summary(), indent=2), encoding="utf-8")
    paths["summary"] = summary
    paths.update({f"figure_{k}": v for k, v in figs.items()})
    return paths
