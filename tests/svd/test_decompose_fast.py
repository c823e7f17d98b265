"""The SVD and its on-disk cache on small matrices (milliseconds each; mutation testing of svd/decompose.py
runs these). Expected factors come from torch.linalg.svd here, expected hashes from xxhash directly."""
from pathlib import Path

import pytest
import torch
import xxhash
from safetensors import safe_open
from safetensors.torch import save_file

from medclipsvd.svd import decompose
from medclipsvd.svd.decompose import (CACHE_FORMAT, Factors, SVDCache, default_cache_dir, factors_checksum,
                                      probe_error, probe_tolerance, svd_factors)


def _w(rows=7, cols=5, seed=0, dtype=torch.float32):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _xxh(t: torch.Tensor) -> str:
    h = xxhash.xxh3_128()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("rows, cols", [(7, 5), (5, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factors_are_the_reduced_svd_in_the_weights_dtype(rows, cols, dtype):
    w = _w(rows, cols, dtype=dtype)
    f = svd_factors(w)
    r = min(rows, cols)
    assert (f.U.shape, f.S.shape, f.Vh.shape) == ((rows, r), (r,), (r, cols))
    assert {f.U.dtype, f.S.dtype, f.Vh.dtype} == {dtype}
    assert f.U.is_contiguous() and f.S.is_contiguous() and f.Vh.is_contiguous()
    _, S, _ = torch.linalg.svd(w.double(), full_matrices=False)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(f.S.double(), S, rtol=tol, atol=tol)
    torch.testing.assert_close((f.U.double() * f.S.double()) @ f.Vh.double(), w.double(), rtol=tol * 10, atol=tol * 10)


def test_factors_of_a_transposed_view_and_of_a_weight_that_needs_grad():
    w = _w(5, 7).T.requires_grad_(True)  # not contiguous
    f = svd_factors(w)
    assert not f.U.requires_grad and f.U.is_contiguous() and f.Vh.is_contiguous()
    torch.testing.assert_close((f.U * f.S) @ f.Vh, w.detach(), rtol=1e-5, atol=1e-5)


def test_factors_are_computed_in_float64():
    # a float32 SVD of this matrix reconstructs it to ~1e-7 only; float64 factors rounded to float32 agree
    # with the float64 SVD's rounding exactly
    w = _w(40, 30)
    U, S, Vh = torch.linalg.svd(w.double(), full_matrices=False)
    f = svd_factors(w)
    torch.testing.assert_close(f.S, S.float(), rtol=0, atol=0)


def test_a_decomposition_that_does_not_reconstruct_is_refused(monkeypatch):
    w = _w()
    real = {size: torch.linalg.svd(size * w.double(), full_matrices=False) for size in (1.0, 1e-3)}
    U, S, Vh = real[1.0]
    monkeypatch.setattr(torch.linalg, "svd", lambda a, full_matrices=True: (U, S * 1.5, Vh))
    with pytest.raises(ArithmeticError, match=r"^SVD reconstruction error \d\.\d\de-0\d for a \(7, 5\) matrix$"):
        svd_factors(w)
    # an error just above the limit (1e-5 of the largest entry) is refused too, one below it accepted, also for
    # a matrix whose entries are all far below 1 (the limit is relative)
    for size in (1.0, 1e-3):
        U, S, Vh = real[size]
        top = float(size * w.double().abs().max())
        bump = torch.zeros_like(S)
        for scale, refused in ((3e-5, True), (3e-6, False)):
            bump[0] = scale * top
            monkeypatch.setattr(torch.linalg, "svd", lambda a, full_matrices=True, b=bump.clone(), U=U, S=S, Vh=Vh:
                                (U, S + b, Vh))
            if refused:
                with pytest.raises(ArithmeticError):
                    svd_factors(size * w)
            else:
                svd_factors(size * w)


def test_zero_matrix_decomposes():
    f = svd_factors(torch.zeros(3, 4))
    torch.testing.assert_close((f.U * f.S) @ f.Vh, torch.zeros(3, 4))


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDCLIPSVD_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "medclipsvd"
    monkeypatch.setenv("XDG_CACHE_HOME", "~/xdg")
    assert default_cache_dir() == tmp_path / "home" / "xdg" / "medclipsvd"
    monkeypatch.setenv("MEDCLIPSVD_CACHE", "~/mine")
    assert default_cache_dir() == tmp_path / "home" / "mine"
    monkeypatch.setenv("MEDCLIPSVD_CACHE", "")  # empty: as if unset
    assert default_cache_dir() == tmp_path / "home" / "xdg" / "medclipsvd"


def test_checksum_is_the_three_tensor_hashes():
    f = svd_factors(_w())
    assert factors_checksum(f.U, f.S, f.Vh) == _xxh(f.U) + _xxh(f.S) + _xxh(f.Vh)


def _probe_by_hand(w, U, S, Vh, n=4):
    v = torch.randn(w.shape[1], n, generator=torch.Generator().manual_seed(0))
    wv = w.float() @ v
    return float((wv - U.float() @ torch.diag(S.float()) @ Vh.float() @ v).norm() / wv.norm())


def test_probe_error_on_fixed_random_vectors():
    w = _w(9, 6)
    f = svd_factors(w)
    assert probe_error(w, f) < 1e-6
    bad = Factors(f.U, f.S * torch.linspace(1.0, 1.1, 6), f.Vh)
    assert probe_error(w, bad) == pytest.approx(_probe_by_hand(w, bad.U, bad.S, bad.Vh), rel=1e-4)
    assert probe_error(w, bad, n=7) == pytest.approx(_probe_by_hand(w, bad.U, bad.S, bad.Vh, n=7), rel=1e-4)
    assert probe_error(w.double(), Factors(*(t.double() for t in (bad.U, bad.S, bad.Vh)))) == \
        pytest.approx(_probe_by_hand(w, bad.U, bad.S, bad.Vh), rel=1e-4)
    small = Factors(bad.U, bad.S * 1e-3, bad.Vh)  # relative to ‖W·v‖ also when that is below 1
    assert probe_error(w * 1e-3, small) == pytest.approx(_probe_by_hand(w, bad.U, bad.S, bad.Vh), rel=1e-3)


@pytest.mark.parametrize("which", ["U rows", "U columns", "Vh rows", "Vh columns"])
def test_probe_error_of_misshapen_factors_is_infinite(which):
    w = _w(9, 6)
    f = svd_factors(w)
    U, S, Vh = f.U, f.S, f.Vh
    U = {"U rows": U[:-1], "U columns": U[:, :-1]}.get(which, U)
    Vh = {"Vh rows": Vh[:-1], "Vh columns": Vh[:, :-1]}.get(which, Vh)
    assert probe_error(w, Factors(U, S, Vh)) == float("inf")


def test_probe_error_of_a_zero_matrix_is_finite():
    f = svd_factors(torch.zeros(3, 4))
    assert probe_error(torch.zeros(3, 4), f) == 0.0


@pytest.mark.parametrize("dtype, tolerance", [
    (torch.float64, 1e-4), (torch.float32, 1e-4), (torch.float16, 50 * 2 ** -10), (torch.bfloat16, 50 * 2 ** -7)])
def test_probe_tolerance(dtype, tolerance):
    assert probe_tolerance(dtype) == pytest.approx(tolerance, rel=1e-12)


# --- the cache ------------------------------------------------------------------------------------
def _entry(root: Path, w: torch.Tensor) -> Path:
    key = _xxh(w)
    return root / "svd" / "v1" / key[:2] / f"{key}.safetensors"


def test_cache_writes_a_verified_entry_and_reuses_it(tmp_path):
    w = _w()
    cache = SVDCache(tmp_path)
    assert cache.root == tmp_path / "svd" / "v1"
    f1 = cache.get(w)
    path = _entry(tmp_path, w)
    assert path.is_file() and (cache.hits, cache.misses, cache.rejected) == (0, 1, 0)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        stored = {k: fh.get_tensor(k) for k in ("U", "S", "Vh")}
    assert meta == {"format": "medclipsvd.svd-cache", "weight": _xxh(w),
                    "checksum": _xxh(stored["U"]) + _xxh(stored["S"]) + _xxh(stored["Vh"])}
    assert CACHE_FORMAT == "medclipsvd.svd-cache"
    torch.testing.assert_close(stored["S"], f1.S, rtol=0, atol=0)
    f2 = SVDCache(tmp_path).get(w)
    again = SVDCache(tmp_path)
    again.get(w)
    assert (again.hits, again.misses, again.rejected) == (1, 0, 0)
    again.get(w)
    again.get(_w(seed=9))
    again.get(_w(seed=9))
    assert (again.hits, again.misses, again.rejected) == (3, 1, 0)
    for a, b in zip((f1.U, f1.S, f1.Vh), (f2.U, f2.S, f2.Vh)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cache_returns_the_weights_dtype():
    w = _w(dtype=torch.float64)
    f = SVDCache(False).get(w)
    assert {f.U.dtype, f.S.dtype, f.Vh.dtype} == {torch.float64}


def test_cache_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLIPSVD_CACHE", str(tmp_path / "default"))
    cache = SVDCache(False)
    assert cache.root is None
    cache.get(_w())
    cache.get(_w())
    assert (cache.hits, cache.misses) == (0, 2) and not (tmp_path / "default").exists()
    for default in (None, True):
        assert SVDCache(default).root == tmp_path / "default" / "svd" / "v1"


def _rewrite(path: Path, tensors: dict, meta: dict) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)


def _stored(path: Path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in ("U", "S", "Vh")}, fh.metadata()


def _altered(kind: str, tensors: dict, meta: dict, other: Path):
    t, m = dict(tensors), dict(meta)
    if kind == "format":
        m["format"] = "something-else"
    elif kind == "no record":
        m = {}
    elif kind == "other matrix":
        t, m = _stored(other)
    elif kind == "checksum":
        t["S"] = t["S"] * 1.01
    elif kind == "valid checksum, wrong σ":  # a consistent file whose factors do not give the weight
        t["S"] = t["S"] * 1.01
        m["checksum"] = _xxh(t["U"]) + _xxh(t["S"]) + _xxh(t["Vh"])
    elif kind == "NaN":
        t["S"] = t["S"] * float("nan")
        m["checksum"] = _xxh(t["U"]) + _xxh(t["S"]) + _xxh(t["Vh"])
    return t, m


@pytest.mark.parametrize("kind", ["garbage", "format", "no record", "other matrix", "checksum",
                                  "valid checksum, wrong σ", "NaN"])
def test_an_entry_that_does_not_verify_is_recomputed_and_rewritten(tmp_path, capsys, kind):
    w, other_w = _w(seed=1), _w(seed=2)
    cache = SVDCache(tmp_path)
    good = cache.get(w)
    cache.get(other_w)
    path = _entry(tmp_path, w)
    if kind == "garbage":
        path.write_bytes(b"not a safetensors file")
    else:
        tensors, meta = _stored(path)
        _rewrite(path, *_altered(kind, tensors, meta, _entry(tmp_path, other_w)))
    capsys.readouterr()
    again = SVDCache(tmp_path)
    f = again.get(w)
    assert (again.hits, again.misses, again.rejected) == (0, 1, 1)
    torch.testing.assert_close(f.S, good.S, rtol=0, atol=0)
    _entry(tmp_path, other_w).write_bytes(b"damaged too")
    again.get(other_w)
    assert (again.hits, again.misses, again.rejected) == (0, 2, 2)
    stored, meta = _stored(path)  # rewritten: the next run hits
    torch.testing.assert_close(stored["S"], good.S, rtol=0, atol=0)
    assert meta["weight"] == _xxh(w)
    root = tmp_path / "svd" / "v1"
    assert capsys.readouterr().err == (
        f"medclipsvd: an SVD cache entry in {root} did not verify against its weight matrix (damaged, altered "
        "or from an older version); recomputing such entries\n")


def test_the_rejection_is_told_once_per_cache_folder(tmp_path, capsys):
    ws = [_w(seed=s) for s in range(3)]
    SVDCache(tmp_path / "a").get(ws[0])
    SVDCache(tmp_path / "a").get(ws[1])
    SVDCache(tmp_path / "b").get(ws[2])
    for root, w in ((tmp_path / "a", ws[0]), (tmp_path / "a", ws[1]), (tmp_path / "b", ws[2])):
        _entry(root, w).write_bytes(b"x")
    capsys.readouterr()
    for root, w in ((tmp_path / "a", ws[0]), (tmp_path / "a", ws[1]), (tmp_path / "b", ws[2])):
        SVDCache(root).get(w)
    err = capsys.readouterr().err
    assert err.count("did not verify") == 2 and str(tmp_path / "a") in err and str(tmp_path / "b") in err


def test_a_float16_entry_within_its_round_off_is_accepted(tmp_path):
    w = _w(dtype=torch.float16)
    SVDCache(tmp_path).get(w)
    again = SVDCache(tmp_path)
    again.get(w)
    assert again.hits == 1


def test_an_unwritable_cache_only_costs_time(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    cache = SVDCache(blocker)
    f = cache.get(_w())
    torch.testing.assert_close((f.U * f.S) @ f.Vh, _w(), rtol=1e-5, atol=1e-5)
    assert cache.misses == 1 and blocker.read_text() == "a file where the cache folder would go"


def test_factors_are_moved_to_the_weights_dtype_and_device_from_the_cpu_entry(tmp_path, monkeypatch):
    seen = []
    real = decompose.svd_factors
    monkeypatch.setattr(decompose, "svd_factors", lambda w: seen.append((w.device.type, w.dtype)) or real(w))
    w = _w(dtype=torch.float64)
    f = SVDCache(tmp_path).get(w)
    assert seen == [("cpu", torch.float64)] and f.U.device == w.device and f.S.dtype == torch.float64
