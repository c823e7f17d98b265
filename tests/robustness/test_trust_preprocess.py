"""Robustness rows for issue 16, item 1 (no code runs through a `preprocess:` list, on every route one is
read by) and item 6's file part (YAML alias bombs, duplicate YAML keys, non-UTF-8 files, JSON nesting).

The hostile steps are ones the MONAI transforms of before the allow-list executed: ``LoadImaged`` resolves its
``reader`` to any importable callable and calls it with the step's other arguments, so
``reader: subprocess.run, args: [python, -c, "open(MARKER, 'w')"]`` writes a marker file. On top of the
harness's five rules, every row checks that the marker was never written. The routes: a pipeline YAML
(`train`), the results.json beside an adapter (`predict --adapter`, `evaluate`, `export`, `interpret`), a
model folder's model_config.json (`predict --model`, `mlflow.pyfunc.load_model`), a run's results.json at
`register`, and an exported MONAI bundle's configs/inference.json (MONAI's own runner, a new process)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, Corpus, Row, Scenario, _digests, check, run_cli

MARKER = "code-ran"   # under each row's corpus root; must never exist
TEMPLATE = "a photo of a {}."


# --------------------------------------------------------------------------------------- hostile steps
def _python_writes(marker: Path) -> list[str]:
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]


def reader_step(marker: Path) -> dict:
    """`LoadImaged(reader="subprocess.run", args=[...])`: MONAI imports subprocess.run and calls it."""
    return {"name": "LoadImaged", "args": {"keys": "image", "reader": "subprocess.run", "args": _python_writes(marker)}}


def os_system_step(marker: Path) -> dict:
    return {"name": "LoadImaged", "args": {"keys": "image", "reader": "os.system", "command": f"touch '{marker}'"}}


def named_callable_step(marker: Path) -> dict:
    return {"name": "subprocess.run", "args": {"args": _python_writes(marker)}}


def lambda_step(marker: Path) -> dict:
    return {"name": "Lambdad", "args": {"keys": "image", "func": f"lambda d: open({str(marker)!r}, 'w')"}}


def code_in_argument_step(marker: Path) -> dict:
    return {"name": "Identityd", "args": {"keys": "image", "reader": "subprocess.run"}}


OK_STEP = {"name": "ScaleIntensityRanged", "args": {"a_min": 0.0, "a_max": 1.0, "b_min": 0.05, "b_max": 0.95}}


# ------------------------------------------------------------------------ a trained run, built once
_BASE: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def base_run(tmp_path_factory):
    """One tiny adapter trained for two steps (tiny-clip, random init) on synthetic images: what every
    results.json / model folder / bundle route starts from (copied into each row's corpus)."""
    import yaml

    from medclipsvd import api
    from medclipsvd.engine.synthetic import write_synthetic_dataset

    base = tmp_path_factory.mktemp("trust-preprocess")
    data = write_synthetic_dataset(base / "data", patients_per_class=3, images_per_patient=1, size=24)
    pipeline = yaml.safe_load((REPO / "pipelines" / "demo.yaml").read_text())
    pipeline.update(name="trust", preprocess=[OK_STEP])
    path = base / "trust.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    api.run_pipeline(str(path), data, base / "run", backbone="tiny-clip", shots=1, max_steps=2, device="cpu",
                     progress=False, plots=False)
    _BASE.update(run=base / "run", data=data)
    yield _BASE
    _BASE.clear()


def _run_copy(c: Corpus, steps: list | None = None, raw: bytes | None = None) -> Path:
    """The trained run copied under the corpus, its results.json's `run.preprocess` set to ``steps`` (or the
    whole file replaced by ``raw``). Returns the adapter folder."""
    run = Path(shutil.copytree(_BASE["run"], c.path("run")))
    results = run / "results.json"
    if raw is not None:
        results.write_bytes(raw)
    else:
        data = json.loads(results.read_text())
        data["run"]["preprocess"] = steps
        results.write_text(json.dumps(data, indent=1))
    return run / "adapter"


def _image(c: Corpus) -> Path:
    return c.image(c.path("inputs/scan.png"), seed=4)


def _model_folder(c: Corpus, steps: list) -> Path:
    """A model folder (what `register` uploads) whose model_config.json carries ``steps``, sealed with its own
    sha256 (as someone re-sealing a folder by hand would): only the preprocess check stands in the way."""
    from medclipsvd.serving.trained_run import read_results
    from medclipsvd.tracking.registry import build_model_config, save_pyfunc

    run = _BASE["run"]
    config = build_model_config(run / "adapter", read_results(run / "results.json"), "run-x")
    config["preprocess"] = steps
    work = c.path("model-work")
    work.mkdir()
    return save_pyfunc(config, run / "adapter", work)


# ------------------------------------------------------------------------------- item 1: the routes
def _train(c: Corpus, pipeline: Path) -> list[str]:
    data = c.class_folders()
    return ["train", "--pipeline", str(pipeline), "--data-root", str(data), "--output", str(c.path("out")), *c.FAST]


def _pipeline_route(step_fn, *mentions: str):
    def build(c: Corpus) -> Scenario:
        p = c.pipeline({"preprocess": [OK_STEP, step_fn(c.path(MARKER))]})
        return Scenario(_train(c, p), [f"{p}: preprocess step 2", *mentions], keep=[p])

    return build


def results_predict(c: Corpus) -> Scenario:
    adapter = _run_copy(c, [reader_step(c.path(MARKER))])
    results = adapter.parent / "results.json"
    return Scenario(["predict", "--adapter", str(adapter), str(_image(c)), "--device", "cpu"],
                    [f"{results}: preprocess step 1 'LoadImaged' is not allowed"], keep=[adapter.parent])


def results_evaluate(c: Corpus) -> Scenario:
    adapter = _run_copy(c, [OK_STEP, os_system_step(c.path(MARKER))])
    results = adapter.parent / "results.json"
    return Scenario(["evaluate", "--adapter", str(adapter), "--device", "cpu", "--no-mlflow", "--cache-dir", "off"],
                    [f"{results}: preprocess step 2 'LoadImaged' is not allowed"], keep=[adapter.parent])


def results_export(c: Corpus) -> Scenario:
    adapter = _run_copy(c, [reader_step(c.path(MARKER))])
    results = adapter.parent / "results.json"
    return Scenario(["export", "--adapter", str(adapter), "--output", str(c.path("bundle"))],
                    [f"{results}: preprocess step 1 'LoadImaged' is not allowed"], keep=[adapter.parent])


def results_interpret(c: Corpus) -> Scenario:
    adapter = _run_copy(c, [code_in_argument_step(c.path(MARKER))])
    results = adapter.parent / "results.json"
    images = c.class_folders("images", per_class=2)
    return Scenario(["interpret", "--adapter", str(adapter), "--images", str(images), "--output",
                     str(c.path("report")), "--device", "cpu", "--no-mlflow"],
                    [f"{results}: preprocess step 1 'Identityd': argument 'reader' is not allowed"],
                    keep=[adapter.parent, images])


def model_folder_predict(c: Corpus) -> Scenario:
    model = _model_folder(c, [reader_step(c.path(MARKER))])
    return Scenario(["predict", "--model", str(model), str(_image(c)), "--device", "cpu", "--trust-unverified"],
                    [f"{model / 'artifacts'}", "model_config.json: preprocess step 1 'LoadImaged' is not allowed"],
                    keep=[model])


def register_run(c: Corpus) -> Scenario:
    """A run in a local MLflow store (SQLite) whose results.json artefact carries the step: `register` stops
    before logging or registering anything."""
    from mlflow import MlflowClient

    adapter = _run_copy(c, [reader_step(c.path(MARKER))])
    uri = f"sqlite:///{c.path('store/mlflow.db')}"
    c.path("store").mkdir()
    client = MlflowClient(uri)
    exp = client.create_experiment("medclipsvd", artifact_location=c.path("store/artifacts").as_uri())
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(adapter), "adapter")
    client.log_artifact(run.info.run_id, str(adapter.parent / "results.json"))
    client.set_terminated(run.info.run_id)

    def nothing_registered():
        assert not MlflowClient(uri).search_registered_models(), "a model was registered"
        assert not MlflowClient(uri).search_logged_models([exp]), "a model was logged"

    c.after = nothing_registered
    return Scenario(["register", "--run-id", run.info.run_id, "--name", "hostile", "--tracking-uri", uri],
                    [f"run {run.info.run_id}'s results.json: preprocess step 1 'LoadImaged' is not allowed"])


# ---------------------------------------------------------------------- item 6: YAML and JSON files
BILLION_LAUGHS = """name: bomb
description: nine levels of nested aliases
suite: custom
dataset: custom
backbone: tiny-biomedclip
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
preprocess: *i
"""


def _yaml_pipeline(text: str | bytes, *mentions: str):
    def build(c: Corpus) -> Scenario:
        p = c.path("pipeline.yaml")
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return Scenario(_train(c, p), [str(p), *mentions], keep=[p])

    return build


DUPLICATE_KEY = """name: dup
description: the backbone given twice
suite: custom
dataset: custom
backbone: tiny-biomedclip
hparams: {lr: 0.002, train_epochs: 1, batch_size: 4}
backbone: clip-vit-b16
"""
CP1252 = ("name: excel\ndescription: Échographie du sein, exportée par Excel\nsuite: custom\ndataset: custom\n"
          "backbone: tiny-biomedclip\n").encode("cp1252")
RECURSIVE = "name: loop\ndescription: an alias inside its own anchor\nsuite: custom\ndataset: custom\n" \
            "backbone: tiny-biomedclip\npreprocess: &p [*p]\n"


def results_deep(c: Corpus) -> Scenario:
    adapter = _run_copy(c, raw=("[" * 100_000 + "]" * 100_000).encode())
    results = adapter.parent / "results.json"
    return Scenario(["evaluate", "--adapter", str(adapter), "--device", "cpu", "--no-mlflow", "--cache-dir", "off"],
                    [str(results), "more than 64 levels deep"], keep=[adapter.parent])


def results_cp1252(c: Corpus) -> Scenario:
    good = json.loads((_BASE["run"] / "results.json").read_text())
    good["classnames"] = ["bénin", "malin"]
    adapter = _run_copy(c, raw=json.dumps(good, ensure_ascii=False).encode("cp1252"))
    results = adapter.parent / "results.json"
    return Scenario(["predict", "--adapter", str(adapter), str(_image(c)), "--device", "cpu"],
                    [str(results), "not UTF-8", "0xe9", "save it as UTF-8"], keep=[adapter.parent])


def split_file_deep(c: Corpus) -> Scenario:
    data = c.class_folders()
    split = c.path("data/split.json")
    split.write_text('{"train": ' + "[" * 5000 + "]" * 5000 + ', "val": [], "test": []}')
    return Scenario(["data", "check", "-d", "custom", "-r", str(data), "--split-file", str(split)],
                    [str(split), "more than 64 levels deep"], keep=[data])


def _row(rid: str, item: int, klass: str, text: str, build, slow: bool = False) -> Row:
    return Row(rid, item, klass, text, build, slow=slow, issue=16)


ROWS = [
    _row("preprocess-yaml-loadimaged-reader", 1, "code in preprocess", "pipeline YAML step `LoadImaged` with "
         "`reader: subprocess.run` (train)", _pipeline_route(reader_step, "'LoadImaged' is not allowed")),
    _row("preprocess-yaml-os-system", 1, "code in preprocess", "pipeline YAML step `LoadImaged` with "
         "`reader: os.system` (train)", _pipeline_route(os_system_step, "'LoadImaged' is not allowed")),
    _row("preprocess-yaml-dotted-name", 1, "code in preprocess", "pipeline YAML step named `subprocess.run` "
         "(train)", _pipeline_route(named_callable_step, "'subprocess.run' is not allowed")),
    _row("preprocess-yaml-lambda", 1, "code in preprocess", "pipeline YAML step `Lambdad` with `func:` (train)",
         _pipeline_route(lambda_step, "'Lambdad' is not allowed")),
    _row("preprocess-yaml-code-argument", 1, "code in preprocess", "pipeline YAML step `Identityd` with a "
         "`reader:` argument (train)", _pipeline_route(code_in_argument_step, "argument 'reader' is not allowed")),
    _row("preprocess-results-predict", 1, "code in preprocess", "results.json beside an adapter: `LoadImaged` "
         "reader step (`predict --adapter`)", results_predict, slow=True),
    _row("preprocess-results-evaluate", 1, "code in preprocess", "results.json beside an adapter: `os.system` "
         "reader step (`evaluate`)", results_evaluate, slow=True),
    _row("preprocess-results-export", 1, "code in preprocess", "results.json beside an adapter: `LoadImaged` "
         "reader step (`export`)", results_export, slow=True),
    _row("preprocess-results-interpret", 1, "code in preprocess", "results.json beside an adapter: `reader:` "
         "argument (`interpret`)", results_interpret, slow=True),
    _row("preprocess-model-folder", 1, "code in preprocess", "model folder's model_config.json (re-sealed): "
         "`LoadImaged` reader step (`predict --model DIR`)", model_folder_predict, slow=True),
    _row("preprocess-register", 1, "code in preprocess", "MLflow run whose results.json has a `LoadImaged` "
         "reader step (`register`, SQLite store)", register_run, slow=True),
    _row("yaml-billion-laughs", 6, "YAML bomb", "1 KB pipeline YAML of 9 levels of nested aliases (10⁹ values)",
         _yaml_pipeline(BILLION_LAUGHS, "anchors and aliases", "write the values out")),
    _row("yaml-recursive-alias", 6, "YAML bomb", "pipeline YAML `preprocess: &p [*p]`",
         _yaml_pipeline(RECURSIVE, "anchors and aliases")),
    _row("yaml-duplicate-key", 6, "YAML duplicate key", "pipeline YAML giving `backbone:` twice",
         _yaml_pipeline(DUPLICATE_KEY, "duplicate key 'backbone' (line 7)", "remove or rename one")),
    _row("yaml-cp1252", 6, "encoding", "pipeline YAML saved as cp1252 (Excel) with `É`",
         _yaml_pipeline(CP1252, "not UTF-8", "0xc9", "save it as UTF-8")),
    _row("json-results-cp1252", 6, "encoding", "results.json beside an adapter in cp1252 (`predict --adapter`)",
         results_cp1252),
    _row("json-results-deep", 6, "JSON depth", "results.json of 100,000 nested arrays (`evaluate`)", results_deep),
    _row("json-split-deep", 6, "JSON depth", "custom --split-file with 5,000 nested arrays (`data check`)",
         split_file_deep),
]


@pytest.mark.parametrize("row", [pytest.param(r, marks=[pytest.mark.slow] if r.slow else [], id=r.id) for r in ROWS])
def test_row(row: Row, tmp_path):
    corpus = Corpus(tmp_path)
    sc = row.build(corpus)
    before = _digests(sc.keep)
    outcome = run_cli(sc.argv, sc.env, cwd=corpus.root)
    check(outcome, sc, before)
    assert not corpus.path(MARKER).exists(), "the hostile step ran"
    after = getattr(corpus, "after", None)
    if after is not None:
        after()


# ------------------------------------------------- routes outside the medclipsvd CLI: MLflow, MONAI's runner
def test_pyfunc_load_refuses_a_model_config_naming_code(tmp_path):
    """`mlflow.pyfunc.load_model` (what `mlflow models serve` does) on a re-sealed model folder whose
    model_config.json carries a hostile step: one-line error naming the file and the step, no marker."""
    import mlflow

    from medclipsvd.data.preprocess_steps import PreprocessConfigError

    c = Corpus(tmp_path)
    model = _model_folder(c, [OK_STEP, reader_step(c.path(MARKER))])
    with pytest.raises(PreprocessConfigError) as e:
        mlflow.pyfunc.load_model(str(model))
    msg = str(e.value)
    assert "model_config.json: preprocess step 2 'LoadImaged' is not allowed" in msg and "\n" not in msg
    assert not c.path(MARKER).exists()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from medclipsvd.export.monai_bundle import export_monai_bundle

    return export_monai_bundle(_BASE["run"] / "adapter", tmp_path_factory.mktemp("bundle") / "b")


def _tampered_bundle(bundle: Path, dest: Path, edit) -> Path:
    out = Path(shutil.copytree(bundle, dest))
    cfg = out / "configs" / "inference.json"
    data = json.loads(cfg.read_text())
    edit(data)
    cfg.write_text(json.dumps(data, indent=2))
    return out


def _run_bundle(folder: Path, image: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(folder / "configs" / "inference.json"), "--bundle_root", str(folder),
                           "--input", str(image), "--output_dir", str(cwd / "out")],
                          capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})


def _insert_step(step):
    return lambda data: data["preprocessing"]["transforms"].insert(1, step)


@pytest.mark.slow
@pytest.mark.parametrize("case,edit,mentions", [
    ("loadimaged-step", lambda m: _insert_step({"_target_": "monai.transforms.LoadImaged", "keys": "image",
                                                "reader": "subprocess.run", "args": _python_writes(m)}),
     ["preprocess step 1 'LoadImaged' is not allowed"]),
    ("lambda-step", lambda m: _insert_step({"_target_": "monai.transforms.Lambdad", "keys": "image",
                                            "func": f"$lambda d: open({str(m)!r}, 'w') and d"}),
     ["preprocess step 1 'Lambdad' is not allowed"]),
    ("device-expression", lambda m: (lambda data: data.update(device=f"$open({str(m)!r}, 'w') and 'cpu'")),
     ["item 'device' differs from what `medclipsvd export` writes"]),
    ("run-expression", lambda m: (lambda data: data.update(run=[f"$open({str(m)!r}, 'w')"])),
     ["item 'run' differs from what `medclipsvd export` writes"]),
])
def test_tampered_bundle_config_runs_nothing(bundle, tmp_path, case, edit, mentions):
    """MONAI's own runner on a bundle whose inference.json was edited: exit 2, one `error:` line naming the
    file and the step or item, no traceback, no marker (each edit ran code before the runtime's check)."""
    marker = tmp_path / MARKER
    folder = _tampered_bundle(bundle, tmp_path / "bundle", edit(marker))
    image = Corpus(tmp_path).image(tmp_path / "scan.png", seed=4)
    proc = _run_bundle(folder, image, tmp_path)
    shown = f"\n--- exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    assert proc.returncode == 2, shown
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(folder / "configs" / "inference.json") in errors[0], shown
    assert all(m in errors[0] for m in mentions), shown
    assert not marker.exists(), "the tampered config ran code" + shown
