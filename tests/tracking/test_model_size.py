"""Acceptance: a clip-vit-b16 σ-adapter registered without --bundle-backbone is a model folder under 2 MB
(the adapter holds 92,160 singular values; the 150 M backbone weights are referenced, not copied)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest



@pytest.mark.slow
def test_clip_vit_b16_registered_model_under_2mb(mlflow_server, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from medclipsvd.backbones import load_backbone
    from medclipsvd.svd import adapt, save_adapter
    from medclipsvd.tracking.registry import folder_size, register_run

    bb = load_backbone("clip-vit-b16", random_init=True)
    adapt(bb, "paper")
    adapter = save_adapter(bb, tmp_path / "run" / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["trainable_parameters"] == 92_160
    results = tmp_path / "run" / "results.json"
    results.write_text(json.dumps({"classnames": ["normal", "pneumonia"], "template": "a chest xray of {}.",
                                   "dataset": "chest", "run": {"backbone": "clip-vit-b16"}}))
    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("size-check") or client.get_experiment(client.create_experiment("size-check"))
    run = client.create_run(exp.experiment_id, run_name="clip-size")
    client.log_artifacts(run.info.run_id, str(adapter), "adapter")
    client.log_artifact(run.info.run_id, str(results))
    client.set_terminated(run.info.run_id)
    reg = register_run(run.info.run_id, "clip-size", alias="champion", tracking_uri=mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)  # models:/<id> resolves through the process-wide URI
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=reg.source, dst_path=str(tmp_path / "dl"))
    finally:
        mlflow.set_tracking_uri(None)
    # MLflow's download of a models:/ URI adds `registered_model_meta` (name and version, ~40 bytes) next to
    # the files; it is not part of what the registry stores
    size = folder_size(local) - sum(p.stat().st_size for p in Path(local).glob("registered_model_meta"))
    print(f"registered clip-vit-b16 model folder: {size} bytes ({size / 2**20:.3f} MiB); adapter "
          f"{folder_size(adapter)} bytes")
    assert size == reg.size_bytes
    assert size < 2 * 2**20
    assert folder_size(adapter) > 92_160 * 4  # the σ really are in there
