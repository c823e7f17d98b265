"""MLflow: deleted runs, invalid registry names and aliases, every registry URI form of a model whose files
were altered (and re-sealed by hand), tracking URIs that lead nowhere, and outbox journals planted for
`medclipsvd sync`. Each case works on its own copy of a SQLite store holding one trained, registered run."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..core import ACCEPT, ANY_SAFE, ERROR, Case, Run
from ..fixtures import ALIAS, MODEL_NAME, reseal_model, store_copy
from .common import CPU, data, no_adapter_written, predict_run, probe

KLASS = "mlflow"


def _client(info):
    from mlflow import MlflowClient

    return MlflowClient(info["uri"], registry_uri=info["uri"])


def _case(cid, what, why, expect, build, item="", timeout=120.0, slow=False) -> Case:
    return Case(f"mlflow-{cid}", KLASS, what, why, expect, build, needs=("store",), timeout=timeout, item=item,
                slow=slow)


def _models(info) -> list[str]:
    return sorted(m.name for m in _client(info).search_registered_models())


def _no_new_models(info, before=(MODEL_NAME,)):
    """Nothing registered besides the fixture's model (no partial registration left behind)."""
    def after(ctx, res):
        extra = sorted(set(_models(info)) - set(before))
        return f"registered models left behind: {extra}" if extra else None

    return after


def _predict_model(ctx, info, model_uri: str, **kw) -> Run:
    r = predict_run(ctx, Path("unused"), None, **kw)
    i = r.argv.index("--adapter")
    r.argv[i:i + 2] = ["--model", model_uri, "--tracking-uri", info["uri"]]
    return r


CASES: list[Case] = []
add = CASES.append


# deleted runs ----------------------------------------------------------------------------------------------
def _deleted(ctx):
    info = store_copy(ctx)
    _client(info).delete_run(info["run_id"])
    return info


add(_case("register-deleted-run", "register --run-id of a deleted run",
          "item 8: deleted MLflow runs must not be registered", ERROR,
          lambda ctx: (lambda info: Run(["register", "--run-id", info["run_id"], "--name", "from-deleted",
                                         "--tracking-uri", info["uri"]], after=_no_new_models(info)))(_deleted(ctx)),
          item="8"))
add(_case("predict-deleted-run", "predict --model runs:/<deleted run>/model",
          "item 8: a deleted run's model is not served", ERROR,
          lambda ctx: (lambda info: _predict_model(ctx, info, f"runs:/{info['run_id']}/model"))(_deleted(ctx)),
          item="8"))

# registry names and aliases ----------------------------------------------------------------------------------
for cid, name in [("name-empty", ""), ("name-slash", "a/b"), ("name-dotdot", "../x"), ("name-newline", "x\ny")]:
    add(_case(f"register-{cid}", f"register --name {name!r}",
              "item 8: an invalid registered-model name (MLflow refuses '/' and ':'; an empty name or a control "
              "character cannot be written in a models:/ URI) is refused before anything is registered", ERROR,
              lambda ctx, n=name: (lambda info: Run(["register", "--run-id", info["run_id"], "--name", n,
                                                     "--tracking-uri", info["uri"]], after=_no_new_models(info)))(
                  store_copy(ctx)), item="8"))
for cid, alias in [("alias-latest", "latest"), ("alias-v1", "v1"), ("alias-empty", ""), ("alias-space", "a b")]:
    add(_case(f"register-{cid}", f"register --alias {alias!r}",
              "item 8: an alias MLflow refuses (reserved `latest`/`vN`, empty, spaces) is refused before a "
              "version is created", ERROR,
              lambda ctx, a=alias: (lambda info: Run(["register", "--run-id", info["run_id"], "--name", "aliased",
                                                      "--alias", a, "--tracking-uri", info["uri"]],
                                                     after=_no_new_models(info)))(store_copy(ctx)), item="8"))
add(_case("register-unknown-run", "register --run-id of a run that does not exist", "one line naming the run",
          ERROR, lambda ctx: (lambda info: Run(["register", "--run-id", "0" * 32, "--name", "x", "--tracking-uri",
                                                info["uri"]]))(store_copy(ctx))))
add(_case("register-run-traversal", "register --run-id ../../etc", "not a run id: one line", ERROR,
          lambda ctx: (lambda info: Run(["register", "--run-id", "../../etc", "--name", "x", "--tracking-uri",
                                         info["uri"]]))(store_copy(ctx))))
add(_case("register-tag-no-value", "register --tag novalue", "KEY=VALUE: one line naming --tag", ERROR,
          lambda ctx: (lambda info: Run(["register", "--run-id", info["run_id"], "--name", "tagged", "--tag",
                                         "novalue", "--tracking-uri", info["uri"]], mentions=["--tag"],
                                        after=_no_new_models(info)))(store_copy(ctx))))


def _train_register(ctx, *extra):
    info = store_copy(ctx)
    out = ctx.root / "out"
    return Run(["train", "--pipeline", "custom", "--data-root", str(data(ctx)), "--output", str(out),
                "--backbone", "tiny-biomedclip", "--shots", "2", "--max-steps", "2", *CPU, "--tracking-uri",
                info["uri"], "--no-system-metrics", "--register", *extra],
               after=lambda c, r: no_adapter_written(out)(c, r) or _no_new_models(info)(c, r))


add(_case("train-register-bad-name", "train --register --name 'bad/name'",
          "item 8: invalid names fail after training with partial registrations; validate before training", ERROR,
          lambda ctx: _train_register(ctx, "--name", "bad/name"), item="8", slow=True))
add(_case("train-register-bad-alias", "train --register --name ok --alias v1",
          "item 8: a reserved alias is refused before training", ERROR,
          lambda ctx: _train_register(ctx, "--name", "ok-name", "--alias", "v1"), item="8", slow=True))
add(_case("train-register-no-name", "train --register without --name", "refused before training", ERROR,
          lambda ctx: _train_register(ctx), slow=True))


# URI forms: positive controls, then altered models -------------------------------------------------------------
def _uris(info) -> dict[str, str]:
    return {"alias": f"models:/{MODEL_NAME}@{ALIAS}", "version": f"models:/{MODEL_NAME}/1",
            "latest": f"models:/{MODEL_NAME}/latest", "model-id": f"models:/{info['model_id']}",
            "run": f"runs:/{info['run_id']}/model"}


for form in ("alias", "version", "latest", "model-id", "run"):
    add(_case(f"uri-{form}-valid", f"predict --model ({form} form) of the intact registered model",
              "a positive control: every URI form of an intact model works", ACCEPT,
              lambda ctx, f=form: (lambda info: _predict_model(ctx, info, _uris(info)[f]))(store_copy(ctx))))


def _logged_model_dir(info) -> Path:
    root = Path(info["root"]) / "mlruns" / "artifacts" / "medclipsvd" / "models" / info["model_id"] / "artifacts"
    if not root.is_dir():
        raise RuntimeError(f"no logged model folder at {root}")
    return root


def _tamper(info, reseal: bool) -> None:
    """Swap the class names of the stored model (every prediction's label flips); optionally re-seal MLmodel."""
    mdir = _logged_model_dir(info)
    cfg_path = mdir / "artifacts" / "model_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["classnames"] = cfg["classnames"][::-1]
    cfg_path.write_text(json.dumps(cfg))
    if reseal:
        reseal_model(mdir)


for form in ("alias", "version", "latest", "model-id", "run"):
    add(_case(f"uri-{form}-resealed", f"predict --model ({form} form) after swapping the class names in the stored "
              "model and re-sealing MLmodel by hand",
              "item 2: every URI form verifies the files against a digest stored outside them (version, "
              "logged-model or run tag); a self-sealed folder is not verified", ERROR,
              lambda ctx, f=form: (lambda info: (_tamper(info, True), _predict_model(ctx, info, _uris(info)[f]))[1])(
                  store_copy(ctx)), item="2"))
    add(_case(f"uri-{form}-altered", f"predict --model ({form} form) after swapping the class names, MLmodel "
              "left as it was", "the files differ from MLmodel's recorded sha256: refused", ERROR,
              lambda ctx, f=form: (lambda info: (_tamper(info, False), _predict_model(ctx, info, _uris(info)[f]))[1])(
                  store_copy(ctx)), item="2"))


def _forge_tag(info):
    from medclipsvd.tracking.model_files import HASHES_TAG

    forged = json.dumps({"artifacts/model_config.json": "0" * 64})
    _client(info).set_model_version_tag(MODEL_NAME, "1", HASHES_TAG, forged)
    return info


add(_case("uri-forged-tag", "predict --model @alias whose version tag medclipsvd.sha256 was forged",
          "the registry's record disagrees with the files: refused", ERROR,
          lambda ctx: (lambda info: _predict_model(ctx, info, _uris(info)["alias"]))(_forge_tag(store_copy(ctx)))))
def _registered_payload(ctx):
    """A registered model whose model_config.json carries a preprocess payload and whose records all agree:
    MLmodel re-sealed and the version's sha256 tag rewritten (a model registered from a tampered run, or by
    someone with write access to the registry)."""
    import yaml

    from medclipsvd.tracking.model_files import HASHES_KEY, HASHES_TAG

    info = store_copy(ctx)
    mdir = _logged_model_dir(info)
    cfg_path = mdir / "artifacts" / "model_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["preprocess"] = [{"name": "LoadImaged", "args": {"keys": "image", "reader": "subprocess.run",
                                                         "args": ["touch", ctx.marker("registered")]}}]
    cfg_path.write_text(json.dumps(cfg))
    reseal_model(mdir)
    hashes = yaml.safe_load((mdir / "MLmodel").read_text())["metadata"][HASHES_KEY]
    _client(info).set_model_version_tag(MODEL_NAME, "1", HASHES_TAG, json.dumps(hashes, separators=(",", ":")))
    return _predict_model(ctx, info, _uris(info)["alias"])


add(_case("uri-preprocess-payload", "predict --model @alias of a registered model whose model_config.json names "
          "LoadImaged(reader=subprocess.run) and whose MLmodel and version tag were updated to match",
          "item 1: a preprocess list is validated wherever it is read, registered models included: refused before "
          "anything runs, even when every digest agrees", ERROR, _registered_payload, item="1"))
for cid, uri in [("uri-unknown-name", "models:/no-such-model@champion"), ("uri-unknown-alias",
                 f"models:/{MODEL_NAME}@nope"), ("uri-unknown-version", f"models:/{MODEL_NAME}/99"),
                 ("uri-empty", "models:/"), ("uri-traversal", "models:/../../etc"),
                 ("uri-run-traversal", "runs:/../model")]:
    add(_case(cid, f"predict --model {uri}", "nothing to load: one line naming the model", ERROR,
              lambda ctx, u=uri: (lambda info: _predict_model(ctx, info, u))(store_copy(ctx))))

# tracking URIs that lead nowhere ---------------------------------------------------------------------------------
for cid, uri in [("ftp", "ftp://example.invalid/x"), ("closed-port", "http://127.0.0.1:9"),
                 ("sqlite-proc", "sqlite:////proc/sweep/mlflow.db"),
                 ("postgres-closed", "postgresql+psycopg2://u@127.0.0.1:9/x")]:
    add(Case(f"mlflow-tracking-{cid}", KLASS, f"predict --model models:/x@y --tracking-uri {uri}",
             "item 8: an unusable tracking URI fails fast with one line naming it (no 109 s of retries, no "
             "'start the server' for a read-only disk)", ERROR,
             lambda ctx, u=uri: Run(["predict", "--model", f"models:/{MODEL_NAME}@{ALIAS}", str(probe(ctx)),
                                     "--tracking-uri", u, *CPU]), needs=("data",), timeout=60, item="8"))
add(Case("mlflow-tracking-not-a-db", KLASS, "train --tracking-uri sqlite:///<a text file>",
         "not a database: one line before any work", ERROR,
         lambda ctx: (lambda p: Run(["train", "--pipeline", "custom", "--data-root", str(data(ctx)), "--output",
                                     str(ctx.root / "out"), "--backbone", "tiny-biomedclip", "--shots", "2",
                                     "--max-steps", "2", *CPU, "--tracking-uri", f"sqlite:///{p}"], keep=[p],
                                    after=no_adapter_written(ctx.root / "out")))(
             (ctx.root / "notes.db").write_text("not sqlite\n") and ctx.root / "notes.db"), timeout=90))
add(Case("mlflow-tracking-readonly-train", KLASS, "train with --tracking-uri sqlite:////proc/sweep/mlflow.db",
         "item 8: a store on a disk that cannot be written fails before training with one line (not after 109 s "
         "of retries)", ERROR,
         lambda ctx: Run(["train", "--pipeline", "custom", "--data-root", str(data(ctx)), "--output",
                          str(ctx.root / "out"), "--backbone", "tiny-biomedclip", "--shots", "2", "--max-steps", "2",
                          *CPU, "--tracking-uri", "sqlite:////proc/sweep/mlflow.db"],
                         after=no_adapter_written(ctx.root / "out")), timeout=60, item="8"))
add(Case("mlflow-env-closed-port", KLASS, "train with MLFLOW_TRACKING_URI=http://127.0.0.1:9 (no server)",
         "documented: the server is checked first; exit 2 before loading data", ERROR,
         lambda ctx: Run(["train", "--pipeline", "custom", "--data-root", str(data(ctx)), "--output",
                          str(ctx.root / "out"), "--backbone", "tiny-biomedclip", "--shots", "2", "--max-steps", "2",
                          *CPU], env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
                         after=no_adapter_written(ctx.root / "out")), timeout=90))


# outbox journals planted for `sync` ---------------------------------------------------------------------------
def _journal(ctx, events: list[dict], meta: dict | None = None, files: dict | None = None) -> Path:
    box = ctx.root / "outbox"
    j = box / "planted0001"
    j.mkdir(parents=True)
    meta = {"local_id": "planted0001", "name": "planted", "experiment": "medclipsvd", "created_ms": 1,
            "tags": {}, **(meta or {})}
    (j / "meta.json").write_text(json.dumps(meta))
    lines = [json.dumps({"seq": i, "ts": 1, **e}) for i, e in enumerate(events)]
    (j / "events.jsonl").write_text("\n".join(lines) + "\n")
    (j / "sent").write_text("0")
    for rel, content in (files or {}).items():
        p = j / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return box


def _store_holds(info, text: str):
    def after(ctx, res):
        root = Path(info["root"]) / "mlruns"
        for f in root.rglob("*"):
            if f.is_file() and f.stat().st_size < (1 << 20):
                try:
                    if text in f.read_text(errors="ignore"):
                        return f"the secret was uploaded into the store ({f.relative_to(root)})"
                except OSError:
                    pass
        return None

    return after


def _sync_outside(ctx):
    info = store_copy(ctx)
    box = _journal(ctx, [{"t": "artifact", "src": str(ctx.outside / "secret.txt"), "artifact_path": "x",
                          "copy": None}, {"t": "end", "status": "FINISHED"}], {"tracking_uri": info["uri"]})
    return Run(["sync", "--outbox", str(box), "--tracking-uri", info["uri"]], after=_store_holds(info, ctx.secret_text))


def _sync_copy_traversal(ctx):
    info = store_copy(ctx)
    rel = os.path.relpath(ctx.outside / "secret.txt", ctx.root / "outbox" / "planted0001")
    box = _journal(ctx, [{"t": "artifact", "src": "/nonexistent/x.txt", "artifact_path": "x", "copy": rel},
                         {"t": "end", "status": "FINISHED"}], {"tracking_uri": info["uri"]})
    return Run(["sync", "--outbox", str(box), "--tracking-uri", info["uri"]], after=_store_holds(info, ctx.secret_text))


def _sync_other_uri(ctx):
    info = store_copy(ctx)
    other = ctx.root / "elsewhere" / "mlflow.db"
    box = _journal(ctx, [{"t": "params", "data": {"a": "1"}}, {"t": "end", "status": "FINISHED"}],
                   {"tracking_uri": f"sqlite:///{other}"})

    def after(c, r):
        return f"sync wrote to the journal's own tracking URI {other}" if other.exists() else None

    return Run(["sync", "--outbox", str(box)], after=after, env={"MLFLOW_TRACKING_URI": ""})


def _sync_artifact_path(ctx):
    info = store_copy(ctx)
    box = _journal(ctx, [{"t": "artifact", "src": "/nonexistent/r.txt", "artifact_path": "../../../../escaped",
                          "copy": "files/0/r.txt"}, {"t": "end", "status": "FINISHED"}],
                   {"tracking_uri": info["uri"]}, files={"files/0/r.txt": "report\n"})

    def after(c, r):
        inside = re.compile(r"/artifacts/[^/]+/[0-9a-f]{32}/artifacts/")  # a run's own artefact folder
        hits = [p for p in ctx.root.rglob("escaped*") if not inside.search(p.as_posix())]
        return f"an artefact landed outside the artefact store: {hits}" if hits else None

    return Run(["sync", "--outbox", str(box), "--tracking-uri", info["uri"]], after=after)


def _sync_dry_run(ctx):
    info = store_copy(ctx)
    box = _journal(ctx, [{"t": "artifact", "src": "/gone/results.json", "artifact_path": "",
                          "copy": "files/0/results.json"}, {"t": "end", "status": "FINISHED"}],
                   {"tracking_uri": info["uri"]}, files={"files/0/results.json": "{}\n"})

    def check(c, r):
        return None if "results.json" in r.text else "--dry-run did not list the file results.json"

    return Run(["sync", "--outbox", str(box), "--tracking-uri", info["uri"], "--dry-run"], check=check)


add(_case("sync-outside-file", "planted outbox journal whose artefact event names a file outside any run output",
          "item 3: sync uploads only files of the journal's own run output; the secret must not reach the store",
          ERROR, _sync_outside, item="3"))
add(_case("sync-copy-traversal", "planted journal whose artefact copy path is ../../outside/secret.txt",
          "item 3: a copy path leaving the journal folder is refused", ERROR, _sync_copy_traversal, item="3"))
add(_case("sync-other-uri", "planted journal naming another tracking URI, sync without --tracking-uri",
          "item 3: a journal's own tracking URI other than the configured one is refused (or needs an explicit "
          "target)", ERROR, _sync_other_uri, item="3"))
add(_case("sync-artifact-path", "planted journal with artifact_path ../../../../escaped",
          "item 3: an artefact path leaving the run's artefact folder is refused", ERROR, _sync_artifact_path,
          item="3"))
add(_case("sync-dry-run-lists", "sync --dry-run on a journal with one artefact file",
          "item 3: --dry-run lists every file and where it would go", ACCEPT, _sync_dry_run, item="3"))
add(_case("sync-torn-journal", "outbox journal whose events.jsonl is binary garbage",
          "a damaged journal is skipped with a message or refused; never a traceback", ANY_SAFE,
          lambda ctx: (lambda info: Run(["sync", "--outbox", str((lambda b: ((b / "planted0001" / "events.jsonl")
                                                                             .write_bytes(os.urandom(512)), b)[1])(
              _journal(ctx, [], {"tracking_uri": info["uri"]}))), "--tracking-uri", info["uri"]]))(store_copy(ctx))))
add(_case("sync-deep-meta", "outbox journal whose meta.json is 100000 nested arrays",
          "item 6: bounded JSON depth; skipped with a message or refused, never a traceback", ANY_SAFE,
          lambda ctx: (lambda info: Run(["sync", "--outbox", str((lambda b: ((b / "planted0001" / "meta.json")
                                                                             .write_text("[" * 100000 + "]" * 100000),
                                                                             b)[1])(
              _journal(ctx, [], {"tracking_uri": info["uri"]}))), "--tracking-uri", info["uri"]]))(store_copy(ctx)),
          item="6"))
