"""Every protocol end to end on a tiny backbone and synthetic data (1 iteration per run): runs, results,
skipping on a second call, and the aggregated tables."""
import pytest

from medclipsvd.engine.synthetic import write_synthetic_dataset
from medclipsvd.protocols.harness import BenchmarkSpec, run_benchmark

CLASSES4 = ("round_lesion", "striated_tissue", "smooth_tissue", "dark_background")


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    from medclipsvd.data import load_dataset

    root3 = write_synthetic_dataset(tmp_path_factory.mktemp("d3") / "data", patients_per_class=4,
                                    images_per_patient=1, size=32)
    root4 = write_synthetic_dataset(tmp_path_factory.mktemp("d4") / "data", patients_per_class=4,
                                    images_per_patient=1, size=32, classes=CLASSES4)
    cache = {}

    def provide(name, root):  # every benchmark dataset name maps to a synthetic folder
        if name not in cache:
            cache[name] = load_dataset("custom", root3 if name == "BUSI" else root4)
        return cache[name]

    return provide


def _bench(tmp_path, **kw):
    base = dict(backbone="tiny-clip", data_root="unused", output=str(tmp_path), device="cpu", max_steps=1)
    return BenchmarkSpec(**(base | kw))


def test_few_shot_side_by_side(tmp_path, provider):
    bench = _bench(tmp_path, suite="BUSI", protocol="few_shot", shots=[1], seeds=[1],
                   methods=["svd", "zero_shot", "linear_probe", "lora"])
    report = run_benchmark(bench, provider=provider, log=lambda *_: None)
    assert (report["planned"], report["ran"], report["skipped"]) == (4, 4, 0)
    md = open(report["tables"]["markdown"]).read()
    for m in ("svd", "zero_shot", "linear_probe", "lora"):
        assert f"| {m} |" in md
    again = run_benchmark(bench, provider=provider, log=lambda *_: None)
    assert (again["ran"], again["skipped"]) == (0, 4)


def test_base2new(tmp_path, provider):
    bench = _bench(tmp_path, suite="BTMRI", protocol="base2new", shots=[1], seeds=[1], methods=["svd"])
    report = run_benchmark(bench, provider=provider, log=lambda *_: None)
    md = open(report["tables"]["markdown"]).read()
    assert "| BTMRI | svd | 1 |" in md and "HM of means" in md


# benchmark default = parity mode: the reference's 9 cross-dataset targets (no EuroSAT); improved has 10
@pytest.mark.parametrize("protocol,targets", [("cross_dataset", 9), ("domain_generalization", 4)])
def test_transfer_protocols(tmp_path, provider, protocol, targets):
    bench = _bench(tmp_path, suite="natural", protocol=protocol, shots=[1], seeds=[1], methods=["svd"])
    report = run_benchmark(bench, provider=provider, log=lambda *_: None)
    assert report["ran"] == 1
    import json
    res = json.loads(next((tmp_path / "runs" / protocol).rglob("results.json")).read_text())
    assert len(res["summary"]) == 1 + targets  # source + every target
    assert "EuroSAT" not in res["summary"] and res["mode"] == "parity"
    assert "average (targets)" in open(report["tables"]["markdown"]).read()
