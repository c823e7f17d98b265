"""Report writer on synthetic analysis results: Markdown, self-contained HTML, figures, summary."""
import json
import re
from types import SimpleNamespace

import pytest
import torch

from medclipsvd.interpret.report import HeadDescription, InterpretResult, write_report
from medclipsvd.interpret.spectra import AttentionWeights, head_changes, matrix_changes
from medclipsvd.interpret.textspan import textspan


def _result():
    s0 = torch.linspace(3, 1, 6)
    infos, sig = {}, {}
    for tower, n in (("vision", 3), ("text", 2)):
        for layer in range(n):
            for m in ("q", "v", "fc1"):
                name = f"{tower}.{layer}.{m}"
                infos[name] = SimpleNamespace(tower=tower, layer=layer, matrix=m, sigma0=s0)
                sig[name] = s0 * (1 + 0.01 * layer)
    sig["vision.2.v"] = s0 * torch.tensor([1, 1, 2.0, 1, 1, 0.5])
    g = torch.Generator().manual_seed(0)
    w = AttentionWeights(*(torch.randn(12, 12, generator=g) for _ in range(4)), num_heads=3)
    w2 = AttentionWeights(w.q, w.k, w.v * 1.2, w.o, num_heads=3)
    heads = head_changes({("vision", 0): w}, {("vision", 0): w2})
    pool = torch.randn(20, 8, generator=g)
    texts = [f"text <{i}> & | pipe" for i in range(20)]
    data = torch.randn(30, 2, generator=g) @ pool[:2]
    span = textspan(data, pool, texts, n_select=2)
    return InterpretResult("tiny", "adapter/x", matrix_changes(infos, sig), heads, {"vision": 3, "text": 2},
                           [HeadDescription(heads[0], span, span)], images="folder", n_images=30, pool="test",
                           timings={"total": 1.0})


def test_report_files(tmp_path):
    res = _result()
    paths = write_report(res, tmp_path / "rep")
    md = paths["markdown"].read_text()
    page = paths["html"].read_text()
    for key in ("heatmap", "heads", "spectra"):
        png = paths[f"figure_{key}"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{png.name}" in md                       # relative link from report.md
    assert md.index("vision.2.v") < md.index("Most amplified")    # the changed matrix ranks first
    first = res.described[0].before.texts[0]                      # e.g. "text <3> & | pipe"
    assert first.replace("|", "\\|") in md                        # pipes escaped in Markdown tables
    # HTML: figures inlined, user text escaped
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3
    assert first.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
    assert first not in page                                       # never unescaped in HTML
    summary = json.loads(paths["summary"].read_text())
    assert summary["top_matrices"][0]["target"] == "vision.2.v"
    assert summary["described_heads"][0]["before"] == res.described[0].before.texts


def test_markdown_renders_tables_and_linked_figures(tmp_path):
    """report.md parses as CommonMark with tables, and every image link resolves to a written PNG."""
    markdown_it = pytest.importorskip("markdown_it")
    paths = write_report(_result(), tmp_path / "rep")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(paths["markdown"].read_text())
    images = [c.attrs["src"] for t in tokens if t.type == "inline" for c in (t.children or []) if c.type == "image"]
    assert len(images) == 3
    assert all((paths["markdown"].parent / src).is_file() for src in images)
    assert sum(t.type == "table_open" for t in tokens) == 5   # matrices, 2 direction tables, heads, 1 TextSpan


def test_html_renders_markdown_no_raw_backticks(tmp_path):
    page = write_report(_result(), tmp_path / "rep")["html"].read_text()
    assert "`" not in page                                      # inline code became <code>, not backticks
    assert "<code>tiny</code>" in page and "<table>" in page and "<h2>" in page


def test_heatmap_labels_keep_significant_digits():
    from medclipsvd.interpret.report import _sig

    labels = [_sig(v) for v in (0.00123, 0.00149, 0.0451, 2.3e-5, 0.0)]
    assert labels == ["0.0012", "0.0015", "0.045", "2.3e-05", "0"]
    assert len(set(labels)) == len(labels)                      # not every cell reads "0.001"
