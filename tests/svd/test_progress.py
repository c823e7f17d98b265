"""The SVD set-up progress bar counts one unit per adapted matrix (a fused q/k/v projection counts three)."""
import io
import re
from contextlib import redirect_stderr

from medclipsvd.backbones import load_backbone
from medclipsvd.svd import adapt
from medclipsvd.svd.adapt import adapt_state


def test_progress_counts_matrices(svd_cache, monkeypatch):
    monkeypatch.setattr("medclipsvd.io.progress.interactive", lambda: True)  # bars show on terminals only
    bb = load_backbone("tiny-clip")  # open_clip attention: q, k, v live in one in_proj weight
    err = io.StringIO()
    with redirect_stderr(err):
        adapt(bb, "attention", cache_dir=svd_cache, progress=True)
    n = len(adapt_state(bb).targets)
    final = re.findall(r"(\d+)/(\d+) \[", err.getvalue())[-1]
    assert final == (str(n), str(n)) and "matrix" in err.getvalue()
    assert n > len({t.slot for t in adapt_state(bb).targets.values()})  # fused slots really hold several
