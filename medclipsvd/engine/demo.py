"""`medclipsvd demo`: the whole flow offline on a CPU in about a minute: synthetic DICOM/PNG data with fake
patients -> tiny-biomedclip -> σ-only few-shot training -> evaluation -> privacy check of the outputs."""
from __future__ import annotations

import time
from pathlib import Path

from medclipsvd.engine.synthetic import fake_tag_values, write_synthetic_dataset

PATIENTS_PER_CLASS = 10


def scan_for_leaks(folder: str | Path, values: list[str]) -> list[str]:
    """Text-like output files that contain any of `values` (DICOM inputs under data/ are not outputs)."""
    hits = []
    for p in Path(folder).rglob("*"):
        if not p.is_file() or p.suffix.lower() not in (".json", ".md", ".csv", ".txt", ".yaml", ".log", ".html"):
            continue
        text = p.read_text(errors="ignore")
        if any(v in text for v in values):
            hits.append(str(p))
    return hits


def run_demo(output: str, device: str = "auto", log=print, progress: bool = True, seed: int = 1
             ) -> tuple[dict, Path]:
    from medclipsvd.engine.pipeline_spec import spec_from_pipeline
    from medclipsvd.engine.run import run_experiment

    t0 = time.perf_counter()
    out = Path(output)
    data = out / "data"
    if not data.exists():
        write_synthetic_dataset(data, patients_per_class=PATIENTS_PER_CLASS)
        log(f"wrote a synthetic dataset (3 classes, DICOM + PNG, fake patients) to\n  {data}")
    else:
        log(f"reusing the synthetic dataset in {data}")
    run_dir = out / "run"
    # the demo's run folder is its own scratch space: a second demo replaces the first (force)
    spec = spec_from_pipeline("demo", data_root=str(data), output=str(run_dir), device=device, seed=seed,
                              checkpoint_every=0, progress=progress, force=True)
    results = run_experiment(spec)
    leaks = scan_for_leaks(run_dir, fake_tag_values(3 * PATIENTS_PER_CLASS))
    if leaks:
        log(f"WARNING: fake patient tags found in outputs: {leaks}")
    else:
        log("privacy check: none of the fake DICOM patient tags appears in any output file")
    results["demo_seconds"] = round(time.perf_counter() - t0, 1)
    # one path per line: a long path then folds on its own instead of splitting the sentence around it
    log(f"demo finished in {results['demo_seconds']} s; the run (adapter/, results.json, plots/) is in\n"
        f"  {run_dir}")
    return results, run_dir
