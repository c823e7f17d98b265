"""Runs evaluate through the preprocessed evaluation cache without changing any result."""


def test_run_results_equal_with_and_without_cache(synthetic_root, tmp_path):
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.run import run_experiment

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


def test_tampered_cache_entries_are_recomputed_not_served(synthetic_root, tmp_path, monkeypatch):
    """Entries rotated on disk (each file holds another image's pixels, digests left in place) give the same
    results as no cache; served without the check, the same rotation changes them (so the check is what holds)."""
    import numpy as np

    import medclipsvd.data.eval_cache as ec
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.run import run_experiment

    def run(cache, out):
        spec = spec_from_pipeline("demo", data_root=str(synthetic_root), output=str(out), backbone="tiny-clip",
                                  device="cpu", method="linear_probe", progress=False, shots=2, cache_dir=cache)
        return run_experiment(spec)

    def rotate(folder):
        entries = sorted(folder.rglob("*.npy"))
        contents = [e.read_bytes() for e in entries]
        for e, data in zip(entries, contents[1:] + contents[:1]):
            e.write_bytes(data)

    cache = tmp_path / "cache"
    off = run("off", tmp_path / "off")
    run(str(cache), tmp_path / "cold")
    rotate(cache)
    monkeypatch.setattr(ec, "_warned", False)
    checked = run(str(cache), tmp_path / "checked")
    assert checked["eval"] == off["eval"] and checked["train"] == off["train"]

    rotate(cache)  # the cache was healed by the checked run; tamper again and read without the check
    monkeypatch.setattr(ec.PreprocessedDataset, "_cached",
                        lambda self, key, path: np.load(path, allow_pickle=False))
    unchecked = run(str(cache), tmp_path / "unchecked")
    assert unchecked["eval"] != off["eval"] or unchecked["train"] != off["train"]
