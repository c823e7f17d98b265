"""Table arithmetic on hand-made results: mean over seeds, average over datasets per K, HM both ways;
planning, sharding and skipping of runs."""
import json

import pandas as pd
import pytest

from medclipsvd.protocols.aggregate import hmean, write_tables
from medclipsvd.protocols.harness import BenchmarkSpec, has_results, plan_runs, run_dir


def _result(out, protocol, dataset, method, k, seed, summary, mode=None):
    d = run_dir(out, protocol, dataset, method, k, seed)
    d.mkdir(parents=True)
    res = {"dataset": dataset, "method": method, "shots": k, "seed": seed, "summary": summary}
    if mode:  # without one the file reads as written before modes existed (= improved)
        res["mode"] = mode
    (d / "results.json").write_text(json.dumps(res))


def test_few_shot_table(tmp_path):
    accs = {("BUSI", 1): [50, 60], ("BUSI", 2): [70, 80], ("BTMRI", 1): [30, 40], ("BTMRI", 2): [90, 90]}
    for (d, k), vals in accs.items():
        for seed, a in enumerate(vals, 1):
            _result(tmp_path, "few_shot", d, "svd", k, seed, {"test": a})
    _result(tmp_path, "few_shot", "BUSI", "zero_shot", 1, 1, {"test": 20.0})
    paths = write_tables(tmp_path, "few_shot")
    csv = pd.read_csv(paths["csv"])
    avg = csv[(csv.dataset == "average") & (csv.method == "svd")].set_index("shots")["mean"]
    assert avg[1] == pytest.approx((55 + 35) / 2) and avg[2] == pytest.approx((75 + 90) / 2)
    busi1 = csv[(csv.dataset == "BUSI") & (csv.method == "svd") & (csv.shots == 1)].iloc[0]
    assert busi1["mean"] == 55 and busi1["std"] == pytest.approx(7.0710678) and busi1["n_seeds"] == 2
    md = open(paths["markdown"]).read()
    assert "| svd | 45.00 (2) | 82.50 (2) |" in md and "| zero_shot | 20.00 (1) | – |" in md
    assert "55.00 ± 7.07" in md
    for key in ("plot_svd", "plot_zero_shot", "plot_methods"):
        assert open(paths[key], "rb").read(4) == b"\x89PNG"


def test_base2new_hm_per_dataset_and_of_means(tmp_path):
    _result(tmp_path, "base2new", "BTMRI", "svd", 16, 1, {"base": 80.0, "new": 40.0})
    _result(tmp_path, "base2new", "BTMRI", "svd", 16, 2, {"base": 90.0, "new": 60.0})
    _result(tmp_path, "base2new", "Kvasir", "svd", 16, 1, {"base": 60.0, "new": 60.0})
    csv = pd.read_csv(write_tables(tmp_path, "base2new")["csv"])
    bt = csv[csv.dataset == "BTMRI"].iloc[0]
    assert (bt.base, bt.new, bt.hm) == (85.0, 50.0, pytest.approx(hmean(85, 50)))
    avg = csv[csv.dataset == "average"].iloc[0]
    assert avg.base == 72.5 and avg.new == 55.0
    assert avg.hm == pytest.approx(hmean(72.5, 55.0))                      # HM of means
    assert avg.mean_of_hm == pytest.approx((hmean(85, 50) + 60.0) / 2)      # mean of HMs
    assert avg.hm != pytest.approx(avg.mean_of_hm)


def test_transfer_table(tmp_path):
    _result(tmp_path, "domain_generalization", "ImageNet", "svd", 16, 1,
            {"source": 70.0, "ImageNetV2": 60.0, "ImageNetA": 40.0})
    md = open(write_tables(tmp_path, "domain_generalization")["markdown"]).read()
    assert "| svd | 16 | 70.00 | 40.00 | 60.00 | 50.00 |" in md


def test_plan_shard_and_skip(tmp_path):
    bench = BenchmarkSpec(suite="BUSI,ctkidney", shots=[1, 2], seeds=[1, 2, 3], methods=["svd", "lora"],
                          output=str(tmp_path))
    runs = plan_runs(bench)
    assert len(runs) == 2 * 2 * 3 * 2
    assert {r.dataset for r in runs} == {"BUSI", "CTKidney"}
    assert runs[0].hp.lr == 2e-3 and runs[-1].hp.train_epochs == 200
    shards = [{r.output for j, r in enumerate(runs) if j % 3 == i} for i in range(3)]
    assert set().union(*shards) == {r.output for r in runs} and sum(map(len, shards)) == len(runs)
    _result(tmp_path, "few_shot", "BUSI", "svd", 1, 1, {"test": 1.0}, mode="parity")  # benchmark's default
    assert has_results(runs[0]) and not has_results(runs[1])


@pytest.mark.parametrize("kw,match", [
    ({"protocol": "zero_shot"}, "unknown protocol"),
    ({"methods": ["coop"]}, "unknown method"),
    ({"shard": (2, 2)}, "shard"),
])
def test_bad_benchmark_specs(kw, match):
    from medclipsvd.errors import MedClipSVDError

    with pytest.raises(MedClipSVDError, match=match):
        plan_runs(BenchmarkSpec(suite="BUSI", **kw))


def test_suites():
    from medclipsvd.protocols.suites import suite_datasets

    assert len(suite_datasets("biomedical", "few_shot")) == 10
    assert "BUSI" not in suite_datasets("biomedical", "base2new") and len(suite_datasets("biomedical", "base2new")) == 9
    assert suite_datasets("natural", "cross_dataset") == ["ImageNet"]
