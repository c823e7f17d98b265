"""Local model folders (what `register` logs: MLmodel, pyfunc_model.py, artifacts/model_config.json,
artifacts/adapter/) given to `predict --model DIR`: self-sealed only, re-sealed by hand, hostile MLmodel,
code in the folder, a preprocess payload in model_config.json.

Item 2 makes a folder whose only digest is inside itself load only with an explicit option. Cases that test
something else (a preprocess payload, code files) pass that option when this medclipsvd has one
(``--trust-unverified``), so they keep testing their own point after item 2 lands."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from ..core import ANY_SAFE, ERROR, REFUSE_OR_WARN, Case
from ..fixtures import deep_json, fifo, pickle_payload, reseal_adapter, reseal_model, symlink, torch_payload
from .common import predict_run

KLASS = "model-folders"
TRUST_OPTION = "--trust-unverified"


@functools.lru_cache(maxsize=1)
def trust_flag() -> tuple[str, ...]:
    """(TRUST_OPTION,) when `medclipsvd predict` has it, else ()."""
    import inspect

    from medclipsvd.cli.tracking import predict

    for p in inspect.signature(predict).parameters.values():
        decls = getattr(p.default, "param_decls", None) or ()
        if TRUST_OPTION in decls:
            return (TRUST_OPTION,)
    return ()


def _model(ctx) -> Path:
    return ctx.copy_fixture("model")


def _cfg(mdir: Path) -> Path:
    return mdir / "artifacts" / "model_config.json"


def _edit_cfg(mdir: Path, fn) -> None:
    cfg = json.loads(_cfg(mdir).read_text())
    out = fn(cfg)
    _cfg(mdir).write_text(out if isinstance(out, str) else json.dumps(cfg))


def _case(cid, what, why, expect, mutate, trusted: bool = False, item: str = "", timeout: float = 90.0,
          secrets=()) -> Case:
    def build(ctx):
        mdir = _model(ctx)
        target = mutate(ctx, mdir)
        r = predict_run(ctx, Path("unused"), None, *(trust_flag() if trusted else ()), secrets=list(secrets))
        i = r.argv.index("--adapter")
        r.argv[i:i + 2] = ["--model", str(target if isinstance(target, (str, Path)) else mdir)]
        return r

    return Case(f"model-{cid}", KLASS, what, why, expect, build, needs=("model", "data"), timeout=timeout, item=item)


def _then_reseal(fn):
    def mutate(ctx, mdir):
        fn(ctx, mdir)
        reseal_model(mdir)

    return mutate


def _mlmodel(fn):
    def mutate(ctx, mdir):
        p = mdir / "MLmodel"
        p.write_text(fn(ctx, p.read_text()))

    return mutate


CASES: list[Case] = []
add = CASES.append

# item 2: who vouches for the files ---------------------------------------------------------------------------
add(_case("self-sealed", "an intact model folder whose only digest is its own MLmodel",
          "item 2: a folder that vouches for itself is not verified; it loads only with an explicit option "
          f"({TRUST_OPTION} or --sha256) and says so", ERROR, lambda ctx, m: None, item="2"))
add(_case("resealed-classes", "class names swapped in model_config.json, MLmodel re-sealed by hand",
          "item 2: re-sealing by hand must not make altered files 'verified' (the labels silently flip)", ERROR,
          _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c.update(classnames=c["classnames"][::-1]))), item="2"))
add(_case("altered-classes", "class names swapped, MLmodel left as it was",
          "the files differ from the recorded sha256: refused", ERROR,
          lambda ctx, m: _edit_cfg(m, lambda c: c.update(classnames=c["classnames"][::-1]))))
add(_case("extra-adapter-file", "an extra file in artifacts/adapter/, MLmodel left as it was",
          "documented: an extra file in the adapter folder is refused", ERROR,
          lambda ctx, m: (m / "artifacts" / "adapter" / "notes.txt").write_text("x")))

# item 1 in model_config.json ---------------------------------------------------------------------------------
WHY_PRE = ("item 1: a preprocess list is validated wherever it is read, model_config.json included: a step "
           "naming a callable is refused before anything runs")
add(_case("pre-reader-subprocess", "model_config.json preprocess LoadImaged(reader=subprocess.run, args=[touch, "
          "MARKER]), re-sealed, loaded with the explicit trust option when there is one", WHY_PRE, ERROR,
          _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c.update(preprocess=[{"name": "LoadImaged", "args": {
              "keys": "image", "reader": "subprocess.run", "args": ["touch", ctx.marker("model")]}}]))),
          trusted=True, item="1"))
add(_case("pre-reader-os-system", "model_config.json preprocess LoadImaged(reader=os.system, command=touch MARKER), "
          "re-sealed, trusted", WHY_PRE, ERROR,
          _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c.update(preprocess=[{"name": "LoadImaged", "args": {
              "keys": "image", "reader": "os.system", "command": f"touch {ctx.marker('os')}"}}]))),
          trusted=True, item="1"))
add(_case("pre-saveimaged", "model_config.json preprocess SaveImaged(output_dir=elsewhere), re-sealed, trusted",
          "item 1: I/O transforms are not allowed", ERROR,
          _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c.update(preprocess=[{"name": "SaveImaged", "args": {
              "keys": "image", "output_dir": ctx.marker("save", "write"), "separate_folder": False}}]))),
          trusted=True, item="1"))
add(_case("pre-untrusted", "model_config.json preprocess payload, re-sealed, no trust option",
          "refused (unverified folder, or the payload), nothing runs", ERROR,
          _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c.update(preprocess=[{"name": "LoadImaged", "args": {
              "keys": "image", "reader": "subprocess.run", "args": ["touch", ctx.marker("untrusted")]}}]))),
          item="1"))

# code in the folder ------------------------------------------------------------------------------------------
add(_case("pyfunc-code", "lines appended to pyfunc_model.py and a conftest.py, each creating a marker, trusted",
          "predict builds the model from the installed package: nothing from the folder is imported (refused as "
          "unverified or accepted, never run)", ANY_SAFE,
          lambda ctx, m: ((m / "pyfunc_model.py").open("a").write(f"\nopen({ctx.marker('pyfunc')!r}, 'w')\n"),
                          (m / "conftest.py").write_text(f"open({ctx.marker('conftest')!r}, 'w')\n")), trusted=True))
add(_case("loader-module", "MLmodel python_function.loader_module = 'os' and code: a payload folder, trusted",
          "MLmodel is parsed as data: no module named in it is imported", ANY_SAFE,
          _mlmodel(lambda ctx, t: t.replace("python_function:", "python_function:\n    loader_module: os\n"
                                            "    code: payload", 1)), trusted=True))
add(_case("mlmodel-python-tag", "MLmodel with `!!python/object/apply:os.system [touch MARKER]`",
          "MLmodel is parsed as plain YAML: refused, nothing runs", ERROR,
          _mlmodel(lambda ctx, t: t + f"evil: !!python/object/apply:os.system ['touch {ctx.marker('tag')}']\n")))
add(_case("mlmodel-anchor-bomb", "MLmodel with a 9x9 anchor bomb under an unused key",
          "item 6: refused (anchors) or accepted as long as nothing expands it (the prediction must be right)",
          ANY_SAFE,
          _mlmodel(lambda ctx, t: t + "lols: [&a0 [l,l,l,l,l,l,l,l,l], " + ", ".join(
              f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)) + "]\n"),
          item="6", timeout=90))
add(_case("mlmodel-missing", "MLmodel deleted", "not a model folder: one line", ERROR,
          lambda ctx, m: (m / "MLmodel").unlink()))
add(_case("mlmodel-garbage", "MLmodel of random bytes", "one line naming MLmodel", ERROR,
          lambda ctx, m: (m / "MLmodel").write_bytes(bytes(range(256)) * 4)))
add(_case("mlmodel-deep", "MLmodel of 20000 nested flow lists", "item 6: bounded nesting, one line", ERROR,
          lambda ctx, m: (m / "MLmodel").write_text("x: " + "[" * 20000 + "]" * 20000 + "\n"), item="6"))
add(_case("mlmodel-fifo", "MLmodel is a FIFO", "no hang: one line", ERROR,
          lambda ctx, m: ((m / "MLmodel").unlink(), fifo(m / "MLmodel")), timeout=60))
add(_case("artifact-traversal", "MLmodel artefact `config` path ../../outside/secret-token-6f1d.json",
          "documented: artefact paths may not leave the model folder", ERROR,
          _mlmodel(lambda ctx, t: t.replace("path: artifacts/model_config.json",
                                            "path: ../outside/secret-token-6f1d.json"))))
add(_case("artifact-absolute", "MLmodel artefact `adapter` path = an absolute folder elsewhere",
          "documented: artefact paths may not leave the model folder", ERROR,
          _mlmodel(lambda ctx, t: t.replace("path: artifacts/adapter", f"path: {ctx.outside}"))))
add(_case("artifact-symlink", "artifacts/model_config.json replaced by a symlink to a config outside the folder",
          "a symlink leaving the model folder is refused", ERROR,
          lambda ctx, m: ((ctx.outside / "model_config.json").write_text(_cfg(m).read_text()), _cfg(m).unlink(),
                          symlink(_cfg(m), ctx.outside / "model_config.json"))))
add(_case("config-dev-zero", "artifacts/model_config.json is a symlink to /dev/zero",
          "an endless file: refused, bounded", ERROR,
          lambda ctx, m: (_cfg(m).unlink(), symlink(_cfg(m), "/dev/zero")), timeout=60))

# model_config.json contents (re-sealed, trusted) ----------------------------------------------------------
add(_case("config-deep", "model_config.json of 100000 nested arrays, re-sealed, trusted",
          "item 6: bounded JSON depth, one line", ERROR,
          _then_reseal(lambda ctx, m: _cfg(m).write_text(deep_json())), trusted=True, item="6"))
add(_case("config-one-class", "model_config.json classnames ['benign'], re-sealed, trusted",
          "a one-class model gives probability 1 to every image: refuse or warn", REFUSE_OR_WARN,
          _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c.update(classnames=["benign"]))), trusted=True))
add(_case("config-template-attr", "model_config.json template '{0.__class__.__mro__}', re-sealed, trusted",
          "not a prompt template: refused", ERROR,
          _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c.update(template="{0.__class__.__mro__}"))),
          trusted=True))
add(_case("config-backbone-callable", "model_config.json backbone name 'os.system', re-sealed, trusted",
          "not a registered backbone: refused", ERROR,
          _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c["backbone"].update(name="os.system"))), trusted=True))
add(_case("config-format", "model_config.json format 'pickle', re-sealed, trusted", "not a medclipsvd model: refused",
          ERROR, _then_reseal(lambda ctx, m: _edit_cfg(m, lambda c: c.update(format="pickle"))), trusted=True))
add(_case("config-source-local-dir", "model_config.json backbone.source local-dir: someone else's folder, re-sealed",
          "item 5: refused or ignored for a seeded tiny backbone; an error never lists the folder's files", ANY_SAFE,
          _then_reseal(lambda ctx, m: ((ctx.root / "elsewhere").mkdir(),
                                       (ctx.root / "elsewhere" / "ward7-patient-list.csv").write_text("x"),
                                       _edit_cfg(m, lambda c: c["backbone"].update(
                                           source=f"local-dir:{ctx.root / 'elsewhere'}")))),
          trusted=True, item="5", secrets=("ward7-patient-list",)))
add(_case("adapter-pickle", "artifacts/adapter/adapter.safetensors replaced by a pickle with a payload, "
          "adapter_config and MLmodel re-sealed, trusted", "adapters are safetensors only: refused, nothing unpickled",
          ERROR, _then_reseal(lambda ctx, m: (
              (m / "artifacts" / "adapter" / "adapter.safetensors").write_bytes(pickle_payload(ctx.marker("pk"))),
              reseal_adapter(m / "artifacts" / "adapter"))), trusted=True))


def _bundle_backbone(payload):
    def mutate(ctx, m):
        (m / "artifacts" / "backbone.safetensors").write_bytes(payload(ctx))
        p = m / "MLmodel"
        p.write_text(p.read_text().replace("      config:", "      backbone:\n        path: artifacts/backbone."
                                           "safetensors\n      config:", 1))
        reseal_model(m)

    return mutate


add(_case("bundle-garbage", "a bundled backbone.safetensors of random bytes declared in MLmodel, trusted",
          "not a weight file: refused", ERROR, _bundle_backbone(lambda ctx: bytes(range(256)) * 40), trusted=True))
add(_case("bundle-pickle", "a bundled backbone.safetensors that is a torch pickle with a payload, trusted",
          "weights load as safetensors or torch.load(weights_only=True): refused, nothing unpickled", ERROR,
          _bundle_backbone(lambda ctx: torch_payload(ctx.marker("bundle"))), trusted=True))


def _path_case(cid, what, target_fn):
    def build(ctx):
        r = predict_run(ctx, Path("unused"), None)
        i = r.argv.index("--adapter")
        r.argv[i:i + 2] = ["--model", target_fn(ctx)]
        return r

    return Case(f"model-{cid}", KLASS, what, "not a model folder or URI: one clear line", ERROR, build,
                needs=("data",))


add(_path_case("path-empty", "predict --model ''", lambda ctx: ""))
add(_path_case("path-file", "predict --model naming a regular file",
               lambda ctx: str((ctx.root / "m.txt").write_text("x") and ctx.root / "m.txt")))
add(_path_case("path-dev-null", "predict --model /dev/null", lambda ctx: "/dev/null"))
