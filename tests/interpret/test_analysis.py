"""Acceptance: a tiny backbone is adapted with deliberately changed σ in known layers, matrices and
heads, and the analysis (and the written report) ranks exactly those first. Both backbone families."""
import copy
import re

import pytest
import torch

from medclipsvd.backbones import load_backbone
from medclipsvd.interpret.analysis import interpret, pair_from_adapted
from medclipsvd.interpret.contributions import attention_weights
from medclipsvd.interpret.images import ImageRef
from medclipsvd.interpret.report import write_report
from medclipsvd.svd import adapt, adapted_modules, sigma_parameters

FAMILIES = ["tiny-clip", "tiny-biomedclip"]
V_LAYER, V_HEAD, V_SCALE = 4, 2, 1.8     # vision layer 4, head 2: value rows of that head x1.8
O_LAYER, O_HEAD, O_SCALE = 1, 0, 1.4     # vision layer 1, head 0: output columns of that head x1.4


def _head_aligned(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct scales (one per row) and a random orthogonal matrix."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.rand(d, generator=g) * 0.5 + 0.5
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    return scales, q


def _plant(bb):
    """Give W_V (layer V_LAYER) and W_O (layer O_LAYER) singular vectors that are standard basis
    vectors, so that moving chosen singular values touches exactly one head. Returns the σ indices
    (ranks in the descending spectrum) that belong to the planted heads."""
    blocks = bb.blocks("vision")
    wv = attention_weights(blocks[V_LAYER])
    hd = wv.head_dim
    with torch.no_grad():
        s, q = _head_aligned(wv.v.shape[0], 1)
        wv.v.copy_(s[:, None] * q)          # W_V = diag(s)·Q: left singular vectors e_row
        v_rows = torch.argsort(s, descending=True)
        wo = attention_weights(blocks[O_LAYER])
        s2, q2 = _head_aligned(wo.o.shape[1], 2)
        wo.o.copy_(q2 * s2[None, :])        # W_O = Q·diag(s): right singular vectors e_col
        o_cols = torch.argsort(s2, descending=True)
    in_head = lambda idx, h: ((idx >= h * hd) & (idx < (h + 1) * hd)).nonzero().flatten()
    return in_head(v_rows, V_HEAD), in_head(o_cols, O_HEAD)


def _target(bb, tower, layer, matrix):
    [name] = [n for n, i in adapted_modules(bb).items()
              if (i.tower, i.layer, i.matrix) == (tower, layer, matrix)]
    return name


@pytest.fixture(scope="module", params=FAMILIES)
def planted(request):
    bb = load_backbone(request.param)
    v_idx, o_idx = _plant(bb)
    base = copy.deepcopy(bb)
    adapt(bb, "paper", cache_dir=False)
    sig = sigma_parameters(bb)
    names = {
        "v": _target(bb, "vision", V_LAYER, "v"),
        "o": _target(bb, "vision", O_LAYER, "o"),
        "fc1": _target(bb, "vision", 2, "fc1"),
        "q": _target(bb, "text", 3, "q"),
    }
    with torch.no_grad():
        sig[names["v"]][v_idx] *= V_SCALE
        sig[names["o"]][o_idx] *= O_SCALE
        sig[names["fc1"]].mul_(1.3)
        sig[names["q"]][:5] *= 0.5
    return request.param, pair_from_adapted(bb, base=base, adapter="planted"), names


def test_matrices_with_changed_sigma_rank_first(planted):
    _, pair, names = planted
    res = interpret(pair)
    top = [m.target for m in res.matrices[:4]]
    assert set(top) == set(names.values())
    assert all(m.rel_change == 0.0 for m in res.matrices[4:])
    fc1 = next(m for m in res.matrices if m.target == names["fc1"])
    assert fc1.rel_change == pytest.approx(0.3, rel=1e-5)


def test_planted_heads_rank_first(planted):
    _, pair, _ = planted
    res = interpret(pair)
    vision = [h for h in res.heads if h.tower == "vision"]
    assert [(h.layer, h.head) for h in vision[:2]] == [(V_LAYER, V_HEAD), (O_LAYER, O_HEAD)]
    assert vision[0].ov_change == pytest.approx(V_SCALE - 1, rel=1e-3)
    assert vision[1].ov_change == pytest.approx(O_SCALE - 1, rel=1e-3)
    assert max(h.ov_change for h in vision[2:]) < 1e-4
    # the text tower's q change moves query-key maps only, in layer 3
    text = [h for h in res.heads if h.tower == "text"]
    assert max(h.ov_change for h in text) < 1e-4
    assert {h.layer for h in text if h.qk_change > 1e-4} == {3}


def test_report_lists_planted_heads_first(planted, tmp_path):
    name, pair, names = planted
    paths = write_report(interpret(pair), tmp_path)
    md = paths["markdown"].read_text()
    heads_section = md[md.index("## Most changed attention heads"):]
    rows = re.findall(r"^\| (\d+) \| (\w+ L\d+ H\d+) \|", heads_section, flags=re.M)
    assert rows[:2] == [("1", f"vision L{V_LAYER} H{V_HEAD}"), ("2", f"vision L{O_LAYER} H{O_HEAD}")]
    assert paths["figure_heatmap"].stat().st_size > 1000


def test_textspan_runs_on_images_for_planted_heads(planted, tmp_path):
    """With images, the two planted heads are described before and after adaptation."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    refs = []
    for i in range(12):
        arr = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        path = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(path)
        refs.append(ImageRef(str(path)))
    _, pair, _ = planted
    res = interpret(pair, refs, pool="biomedical", n_heads=2, n_texts=3, batch_size=5)
    assert [d.head.key for d in res.described] == [f"vision L{V_LAYER} H{V_HEAD}", f"vision L{O_LAYER} H{O_HEAD}"]
    for d in res.described:
        assert len(d.before.choices) == len(d.after.choices) == 3
        assert 0 < d.after.explained <= 1.0 + 1e-6
    assert res.n_images == 12


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_forward_gives_the_same_contributions(family):
    """The CLI's default on bf16-capable hardware: forward in bf16, decomposition in float32."""
    from medclipsvd.interpret.analysis import head_contributions

    bb = load_backbone(family).requires_grad_(False)   # frozen, like every merged adapted model
    x = [torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))]
    heads = [(5, 1), (2, 0)]
    exact = head_contributions(bb, x, heads, precision="fp32")
    fast = head_contributions(bb, x, heads, precision="bf16")
    assert not any(p.requires_grad for p in bb.parameters())   # the autocast weight-cache trick is undone
    for k in heads:
        assert float((fast[k] - exact[k]).norm() / exact[k].norm()) < 2e-2


def test_unknown_precision_is_an_error():
    from medclipsvd.device import PrecisionError
    from medclipsvd.interpret.analysis import resolve_precision

    with pytest.raises(PrecisionError, match="use auto, fp32, bf16 or fp16"):
        resolve_precision("fp8", "cpu")
    assert resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_text_embeddings_match_fp32(family):
    from medclipsvd.interpret.analysis import encode_texts
    from medclipsvd.interpret.descriptions import load_descriptions

    bb = load_backbone(family).requires_grad_(False)
    texts = load_descriptions("biomedical")[:40]
    exact = encode_texts(bb, texts, precision="fp32")
    fast = encode_texts(bb, texts, precision="bf16")
    assert float((exact * fast).sum(dim=1).min()) > 0.98
    assert not any(p.requires_grad for p in bb.parameters())


def test_mlp_only_adapter_is_reported_without_claiming_changed_heads(tmp_path):
    from PIL import Image

    from medclipsvd.svd import TargetSpec

    base = load_backbone("tiny-clip")
    bb = adapt(copy.deepcopy(base), TargetSpec(towers="vision", matrices=["fc1"]), cache_dir=False)
    with torch.no_grad():
        for p in sigma_parameters(bb).values():
            p.mul_(1.1)
    refs = []
    for i in range(3):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / f"{i}.png")
        refs.append(ImageRef(str(tmp_path / f"{i}.png")))
    res = interpret(pair_from_adapted(bb, base=base), refs, n_heads=1, n_texts=1)
    assert {m.matrix for m in res.matrices} == {"fc1"}
    assert all(h.ov_change < 1e-5 for h in res.heads)
    assert any("did not change" in n for n in res.notes)
    assert len(res.described) == 1
    no_heads = interpret(pair_from_adapted(bb, base=base), refs, n_heads=0)
    assert no_heads.described == [] and any("--heads 0" in n for n in no_heads.notes)
