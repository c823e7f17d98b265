"""A `RunSpec` from a pipeline (pipelines/<name>.yaml), the method configs (configs/) and the options
given on the command line or to the Python API: what `train`, `demo` and `api.run_pipeline` run."""
from __future__ import annotations

from medclipsvd.engine.spec import RunSpec
from medclipsvd.errors import MedClipSVDError


def spec_from_pipeline(pipeline: str, *, data_root: str, output: str, backbone: str | None = None,
                       shots: int | None = None, seed: int = 1, method: str = "svd", protocol: str | None = None,
                       volume: dict | None = None, **overrides) -> RunSpec:
    """A RunSpec from a pipeline (pipelines/<name>.yaml) and the method configs (configs/). ``volume``: the
    hospital options given on the command line (`cli.hospital_options.InputFlags.load_kwargs`: split_file,
    series, on_bad_series and the InputPolicy keys given), which override the pipeline's."""
    from medclipsvd.engine.config import load_pipeline

    p = load_pipeline(pipeline)
    protocol = protocol or p.protocol
    if protocol not in ("few_shot", "base2new"):
        raise MedClipSVDError(f"`train` runs few_shot or base2new; for {protocol} use `medclipsvd benchmark "
                              f"--protocol {protocol}` (it trains on ImageNet and evaluates the targets)")
    hp = p.method_hparams(protocol)
    return RunSpec(dataset=p.dataset, hp=hp, backbone=backbone or p.backbone, method=method, protocol=protocol,
                   shots=next(k for k in (shots, hp.shots, p.shots) if k is not None), seed=seed, data_root=data_root, output=output,
                   hflip=p.augmentation.hflip, crop_scale=tuple(p.augmentation.random_resized_crop_scale),
                   **{"preprocess": [s.model_dump() for s in p.preprocess], "preprocess_source": p.source,
                      # the pipeline's input policy; policy keys given loose in `volume` are applied over it
                      "policy": p.input, "split_file": p.split_file, "series": p.series,
                      "on_bad_series": p.on_bad_series, **{k: v for k, v in (volume or {}).items() if v is not None},
                      **overrides})

