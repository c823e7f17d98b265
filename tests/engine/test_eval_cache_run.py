"""Runs evaluate through the preprocessed evaluation cache without changing any result."""


def test_run_results_equal_with_and_without_cache(synthetic_root, tmp_path):
    from medclipsvd.engine.run import run_experiment, spec_from_pipeline

    def run(cache, out):
        spec = spec_from_pipeline("demo", data_root=str(synthetic_root), output=str(out), backbone="tiny-clip",
                                  device="cpu", method="linear_probe", progress=False, shots=2, cache_dir=cache)
        return run_experiment(spec)

    cache = tmp_path / "cache"
    off = run("off", tmp_path / "off")
    cold = run(str(cache), tmp_path / "cold")
    warm = run(str(cache), tmp_path / "warm")
    assert any(cache.rglob("*.npy"))
    for res in (cold, warm):  # probe training features and test predictions alike
        assert res["eval"] == off["eval"]
        assert res["train"] == off["train"]
