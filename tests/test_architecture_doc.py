"""docs/architecture.md, "How to add ...": each example is one file (or one entry) plus one registry row, and
does what the page says once the row is in its table. The examples run exactly as written: a file block is
loaded under the module name its first line gives, a row block is evaluated with the table's row type, and
the row is added to the real table for the duration of the test (and is absent before it)."""
from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medclipsvd.errors import DataError

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _blocks(heading: str, lang: str = "python") -> list[str]:
    """The ``lang`` code blocks of one "### heading" section of the how-to part, in order."""
    text = DOC.read_text(encoding="utf-8")
    howto = text[text.index("## How to add"):]
    start = howto.index(f"### {heading}\n")
    end = howto.find("\n### ", start + 1)
    section = howto[start:end if end != -1 else None]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _load_file(code: str, monkeypatch) -> types.ModuleType:
    """A file block (first line ``# medclipsvd/.../name.py``) as the module that path names."""
    first = code.splitlines()[0]
    m = re.fullmatch(r"# (medclipsvd/[\w/]+)\.py", first.strip())
    assert m, f"a file block starts with its path, not {first!r}"
    name = m.group(1).replace("/", ".")
    module = types.ModuleType(name)
    module.__file__ = f"<docs/architecture.md: {m.group(1)}.py>"
    exec(compile(code, module.__file__, "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def _row(code: str, **names):
    """A row block (one expression followed by a comma, as it stands in its table) evaluated."""
    return eval(code.strip().removesuffix(","), dict(names))


def test_a_reader_is_one_file_and_one_row(monkeypatch, tmp_path):
    from medclipsvd.data import load_dataset
    from medclipsvd.data.readers import formats
    from medclipsvd.data.samples import check_readable, read_sample

    file_code, row_code = _blocks("A file format (reader)")
    _load_file(file_code, monkeypatch)
    row = _row(row_code, Format=formats.Format)
    assert row.kind not in formats.FORMATS

    rng = np.random.default_rng(0)
    grey = {}
    for label in ("benign", "malignant"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            arr = rng.integers(0, 256, size=(9, 7), dtype=np.uint8)
            path = tmp_path / "data" / label / f"p{i}.npy"
            np.save(path, arr)
            grey[str(path)] = arr
    with pytest.raises(DataError, match="no image files"):  # without the row, .npy files are not images
        load_dataset("custom", tmp_path / "data")

    monkeypatch.setitem(formats.FORMATS, row.kind, row)
    splits = load_dataset("custom", tmp_path / "data")
    samples = splits.train + splits.val + splits.test
    assert sorted(s.path for s in samples) == sorted(grey) and list(splits.classnames) == ["benign", "malignant"]
    for s in samples:
        expected = np.repeat((grey[s.path] / 255.0)[:, :, None], 3, axis=2)  # 8-bit grey -> [0, 1], as RGB
        img = read_sample(s)
        assert img.dtype == np.float32 and img.shape == (9, 7, 3)
        np.testing.assert_allclose(img, expected, rtol=0, atol=1e-6)
    path = samples[0].path
    assert check_readable(path, None, "header") is None
    monkeypatch.setenv("MEDCLIPSVD_MAX_IMAGE_PIXELS", "62")  # 9 x 7 = 63: refused from the header alone
    assert "above the limit of" in check_readable(path, None, "header")


def test_a_window_preset_is_one_entry(monkeypatch, tmp_path):
    import nibabel as nib

    from medclipsvd.data.volumes import windows
    from medclipsvd.data.volumes.policy import InputPolicy
    from medclipsvd.data.volumes.read import load_volume_sample

    (entry,) = _blocks("A CT window preset")
    ((name, (width, level)),) = _row("{" + entry.strip().removesuffix(",") + "}").items()
    with pytest.raises(DataError, match="unknown window"):
        InputPolicy(window=name).validate()

    monkeypatch.setitem(windows.WINDOW_PRESETS, name, (width, level))
    InputPolicy(window=name).validate()
    lo = level - width / 2
    hu = np.array([-1000, lo - 15, lo, lo + 0.3 * width, level, lo + 0.7 * width, lo + width, 1000] * 2,
                  dtype=np.float32).reshape(4, 4)
    volume = np.repeat(hu[:, :, None], 5, axis=2)  # every axial plane holds the same HU values
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    x = load_volume_sample(path, window=name)
    assert x.shape == (3, 4, 4)
    # the window by its definition: level - width/2 -> 0, level + width/2 -> 1, clipped (the plane's orientation
    # does not change which values it holds)
    expected = np.sort(np.clip((hu.ravel() - lo) / width, 0.0, 1.0))
    np.testing.assert_allclose(np.sort(x[0].ravel()), expected, rtol=0, atol=1e-6)


def test_a_backbone_is_one_json_file(monkeypatch, tmp_path):
    from medclipsvd.backbones import list_backbones
    from medclipsvd.backbones.registry import get_spec

    (text,) = _blocks("A backbone, and a new kind of transformer block", "json")
    spec = json.loads(text)
    assert spec["name"] not in list_backbones()
    (tmp_path / f"{spec['name']}.json").write_text(text)
    monkeypatch.setenv("MEDCLIPSVD_BACKBONE_DIR", str(tmp_path))
    assert spec["name"] in list_backbones()
    got = get_spec(spec["name"])
    assert got.family == "openclip-vit" and got.pretrained.source == spec["pretrained"]["source"]


def test_a_block_kind_is_one_pattern_row(monkeypatch):
    from torch import nn

    from medclipsvd.backbones import architectures
    from medclipsvd.backbones.openclip_arch import UnsupportedArchitectureError

    (row_code,) = _blocks("A backbone, and a new kind of transformer block")
    row = _row(row_code, BlockPattern=architectures.BlockPattern)

    def module(**children):
        m = nn.Module()
        for k, v in children.items():
            setattr(m, k, v)
        return m

    def block():  # a block holding its matrices under the row's names
        attn = module(q_proj=nn.Linear(8, 8), k_proj=nn.Linear(8, 8), v_proj=nn.Linear(8, 8),
                      out_proj=nn.Linear(8, 8))
        attn.num_heads = 2
        return module(attn=attn, mlp=module(fc1=nn.Linear(8, 16), fc2=nn.Linear(16, 8)))

    model = module(visual=module(blocks=nn.ModuleList([block() for _ in range(3)])))
    with pytest.raises(UnsupportedArchitectureError):
        architectures.discover_layout(model, "vision")
    monkeypatch.setattr(architectures, "PATTERNS", architectures.PATTERNS + (row,))
    layout = architectures.discover_layout(model, "vision")
    assert layout.blocks == "visual.blocks" and layout.attention == "separate"
    assert layout.paths == {"q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.out_proj",
                            "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


def test_a_method_is_one_file_and_one_row(monkeypatch):
    import torch
    from torch import nn

    from medclipsvd.errors import AdapterError
    from medclipsvd.methods import registry

    file_code, row_code = _blocks("A method")
    _load_file(file_code, monkeypatch)
    row = _row(row_code, Method=registry.Method)
    with pytest.raises(AdapterError, match="unknown method"):
        registry.get_method(row.name)
    monkeypatch.setitem(registry.REGISTRY, row.name, row)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 3)
            self.norm = nn.LayerNorm(3)
            self.scale = nn.Parameter(torch.ones(1))  # neither a bias nor trainable after prepare

        def fingerprint(self):
            return "tiny"

    bb = Tiny()
    prepared = registry.prepare_method(row.name, bb, SimpleNamespace(lr=0.5, layers="all"))
    assert prepared.method == row.name and prepared.lr == row.default_lr  # the row's lr, not the pipeline's
    assert sorted(prepared.params) == ["norm.bias", "proj.bias"]
    assert sorted(n for n, p in bb.named_parameters() if p.requires_grad) == ["norm.bias", "proj.bias"]


def test_the_documented_contracts_are_the_configured_ones():
    """The page's table of import contracts names each contract of pyproject.toml once, and no other."""
    import tomllib

    config = tomllib.loads((DOC.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    configured = [c["name"] for c in config["tool"]["importlinter"]["contracts"]]
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("| contract | what it keeps |"):]
    table = table[:table.index("\n\n")]
    documented = [row.split("|")[1].strip() for row in table.splitlines()[2:]]
    assert len(documented) == len(configured) >= 7
    for name in documented:
        assert [c for c in configured if c.startswith(name)] != [], f"{name!r}: no such contract in pyproject.toml"
    for name in configured:
        assert len([d for d in documented if name.startswith(d)]) == 1, f"{name!r}: not documented once"
