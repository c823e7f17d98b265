"""Adapters: the adapter folder of a training run (adapter.safetensors, adapter_config.json, the results.json
beside it) altered, damaged or hostile, read by `predict --adapter` and, for the dangerous ones, also by
`evaluate`, `export` and `interpret`.

"Re-sealed" means the safetensors' sha256 in adapter_config.json was recomputed after the edit (what anyone
editing both files does), so the case exercises the content checks rather than the hash check."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core import ANY_SAFE, ERROR, REFUSE_OR_WARN, Case
from ..fixtures import (deep_json, fifo, pickle_payload, raw_safetensors, read_tensors, reseal_adapter, symlink,
                        torch_payload, write_tensors)
from .common import evaluate_run, export_run, interpret_run, no_code_in_bundle, predict_run, run_dir

KLASS = "adapters"


# ------------------------------------------------------------------------------------------- mutations
def _sigma(fn):
    def mutate(ctx, run: Path):
        st = run / "adapter" / "adapter.safetensors"
        tensors = fn(read_tensors(st))
        write_tensors(st, tensors)
        reseal_adapter(run / "adapter")

    return mutate


def _first(t):
    return sorted(t)[0]


def _st_bytes(make, reseal: bool = True):
    def mutate(ctx, run: Path):
        st = run / "adapter" / "adapter.safetensors"
        st.write_bytes(make(ctx, st.read_bytes()))
        if reseal:
            reseal_adapter(run / "adapter")

    return mutate


def _cfg(fn):
    def mutate(ctx, run: Path):
        p = run / "adapter" / "adapter_config.json"
        cfg = json.loads(p.read_text())
        out = fn(ctx, cfg)
        p.write_text(out if isinstance(out, str) else json.dumps(cfg, indent=1))

    return mutate


def _cfg_text(text_fn):
    def mutate(ctx, run: Path):
        (run / "adapter" / "adapter_config.json").write_text(text_fn(ctx))

    return mutate


def _results(fn):
    def mutate(ctx, run: Path):
        p = run / "results.json"
        doc = json.loads(p.read_text())
        out = fn(ctx, doc)
        p.write_text(out if isinstance(out, str) else json.dumps(doc, indent=1))

    return mutate


def _preprocess(steps_fn):
    """results.json's recorded MONAI preprocess (run.preprocess): what predict/evaluate/export/interpret apply."""
    def fn(ctx, doc):
        doc["run"]["preprocess"] = steps_fn(ctx)
        doc["spec"]["preprocess"] = json.dumps(doc["run"]["preprocess"])

    return _results(fn)


def _file(rel: str, make):
    def mutate(ctx, run: Path):
        target = run / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            if target.is_dir() and not target.is_symlink():
                import shutil

                shutil.rmtree(target)
            else:
                target.unlink()
        make(ctx, target)

    return mutate


def _compose(*fns):
    def mutate(ctx, run):
        for f in fns:
            f(ctx, run)

    return mutate


def _fingerprint(ctx) -> str:
    return json.loads((ctx.fixture("run") / "adapter" / "adapter_config.json").read_text())["backbone"]["fingerprint"]


# ----------------------------------------------------------------------------------------------- cases
ROUTES = {
    "predict": lambda ctx, run, same: predict_run(ctx, run / "adapter", same=same),
    "evaluate": lambda ctx, run, same: evaluate_run(ctx, run / "adapter"),
    "export": lambda ctx, run, same: export_run(ctx, run / "adapter", after=no_code_in_bundle(ctx.root / "bundle")),
    "interpret": lambda ctx, run, same: interpret_run(ctx, run / "adapter"),
}
ALL_ROUTES = ("predict", "evaluate", "export", "interpret")


def _cases(cid: str, what: str, why: str, expect, mutate, routes=("predict",), same: bool = False, item: str = "",
           timeout: float = 90.0, mentions=(), secrets=(), route_why: dict | None = None) -> list[Case]:
    """One case per route; ``route_why`` = {route: (expect, why)} where a route's expectation differs."""
    out = []
    for route in routes:
        r_expect, r_why = (route_why or {}).get(route, (expect, why))
        def build(ctx, route=route):
            run = run_dir(ctx)
            mutate(ctx, run)
            r = ROUTES[route](ctx, run, same)
            r.mentions = list(mentions)
            r.secrets = list(secrets)
            return r

        out.append(Case(f"adapter-{cid}-{route}", KLASS, f"{what} ({route})", r_why, r_expect, build, needs=("run",),
                        timeout=timeout, item=item, slow=route in ("evaluate", "interpret")))
    return out


def _reader_step(reader: str, **kwargs):
    return lambda ctx: [{"name": "LoadImaged", "args": {"keys": "image", "reader": reader,
                                                         **{k: (v(ctx) if callable(v) else v)
                                                            for k, v in kwargs.items()}}}]


WHY_NOT_ST = "not a safetensors file; the adapter must be refused with one line naming the file"
WHY_PRE = ("item 1: a recorded preprocess step may only name allow-listed transforms with typed arguments; "
           "a reader/writer naming an importable callable is code execution and must be refused before it runs")
# interpret does not apply the recorded preprocess (medclipsvd/interpret reads images with the backbone's own
# transform): ignoring the list runs nothing; if it starts reading the list, it must refuse the payload
INTERPRET_PRE = {"interpret": (ANY_SAFE, "interpret does not apply results.json's preprocess (it uses the "
                               "backbone's own transform), so ignoring the list is safe; reading it must refuse "
                               "the payload (item 1)")}

CASES: list[Case] = []
add = CASES.extend

# safetensors bytes ---------------------------------------------------------------------------------------
add(_cases("st-garbage", "adapter.safetensors = 1 KB of random bytes, re-sealed", WHY_NOT_ST, ERROR,
           _st_bytes(lambda ctx, b: os.urandom(1024))))
add(_cases("st-garbage-unsealed", "adapter.safetensors = random bytes, hash in the config left as it was",
           "the file no longer matches the sha256 recorded beside it: refused", ERROR,
           _st_bytes(lambda ctx, b: os.urandom(2048), reseal=False)))
add(_cases("st-empty", "adapter.safetensors of 0 bytes, re-sealed", WHY_NOT_ST, ERROR, _st_bytes(lambda ctx, b: b"")))
add(_cases("st-truncated", "adapter.safetensors cut in half, re-sealed", "a damaged tensor file must be refused",
           ERROR, _st_bytes(lambda ctx, b: b[: len(b) // 2])))
add(_cases("st-header-length-huge", "safetensors header length field = 2**62, re-sealed",
           "a header claiming exabytes must be refused without allocating it", ERROR,
           _st_bytes(lambda ctx, b: raw_safetensors(b"{}", length=2 ** 62))))
add(_cases("st-header-not-json", "safetensors header of valid length that is not JSON, re-sealed", WHY_NOT_ST,
           ERROR, _st_bytes(lambda ctx, b: raw_safetensors(b"{not json!!}" + b" " * 4))))
add(_cases("st-offsets-past-end", "safetensors header whose tensor offsets point past the end, re-sealed",
           "a tensor reaching past the file is damage, not data", ERROR,
           _st_bytes(lambda ctx, b: raw_safetensors({"x": {"dtype": "F32", "shape": [1000000],
                                                            "data_offsets": [0, 4000000]}}, b"\0" * 16))))
add(_cases("st-pickle", "adapter.safetensors replaced by a pickle whose unpickling runs `touch MARKER`, re-sealed",
           "adapters are safetensors only; a pickle must never be unpickled (code execution)", ERROR,
           _st_bytes(lambda ctx, b: pickle_payload(ctx.marker("pickle"))), routes=("predict", "evaluate", "export")))
add(_cases("st-torch-zip", "adapter.safetensors replaced by a torch.save zip whose pickle runs `touch MARKER`",
           "torch checkpoints are pickles: never loaded from an adapter", ERROR,
           _st_bytes(lambda ctx, b: torch_payload(ctx.marker("torchzip")))))
add(_cases("st-fifo", "adapter.safetensors is a FIFO nobody writes to",
           "reading it would block forever: refuse non-regular files, no hang", ERROR,
           _file("adapter/adapter.safetensors", lambda ctx, p: fifo(p)), timeout=60))
add(_cases("st-dev-zero", "adapter.safetensors is a symlink to /dev/zero",
           "an endless file must be refused, not hashed or read forever", ERROR,
           _file("adapter/adapter.safetensors", lambda ctx, p: symlink(p, "/dev/zero")), timeout=60))
add(_cases("st-is-dir", "adapter.safetensors is a directory", "not a tensor file: one clear line", ERROR,
           _file("adapter/adapter.safetensors", lambda ctx, p: p.mkdir())))
add(_cases("st-missing", "adapter.safetensors deleted", "an incomplete adapter folder is refused", ERROR,
           _file("adapter/adapter.safetensors", lambda ctx, p: None)))

# sigma values --------------------------------------------------------------------------------------------
WHY_NONFINITE = "non-finite σ give NaN logits: refused when loaded (docs/reliability.md, issue 10 item 4)"
add(_cases("sigma-nan", "one σ value NaN, re-sealed", WHY_NONFINITE, ERROR,
           _sigma(lambda t: {**t, _first(t): np.where(np.arange(t[_first(t)].size) == 0, np.nan, t[_first(t)])
                             .astype(np.float32)})))
add(_cases("sigma-inf", "one σ value +inf, re-sealed", WHY_NONFINITE, ERROR,
           _sigma(lambda t: {**t, _first(t): np.full_like(t[_first(t)], np.inf)})))
add(_cases("sigma-neg-inf", "one σ tensor -inf, re-sealed", WHY_NONFINITE, ERROR,
           _sigma(lambda t: {**t, _first(t): np.full_like(t[_first(t)], -np.inf)})))
add(_cases("sigma-1e30", "every σ = 1e30 (finite), re-sealed",
           "item 8: σ = 1e30 makes predict print a label with NaN probabilities; out-of-range σ / non-finite "
           "logits must be refused", ERROR, _sigma(lambda t: {k: np.full_like(v, 1e30) for k, v in t.items()}),
           routes=("predict", "evaluate"), item="8"))
add(_cases("sigma-1e30-one", "one σ tensor = 1e30, the rest intact, re-sealed",
           "item 8: the same overflow from a single matrix", ERROR,
           _sigma(lambda t: {**t, _first(t): np.full_like(t[_first(t)], 1e30)}), item="8"))
add(_cases("sigma-1e6x", "every σ multiplied by 1e6, re-sealed",
           "either refused as out of range, or the probabilities printed must still be finite and sum to 1",
           ANY_SAFE, _sigma(lambda t: {k: (v * 1e6).astype(np.float32) for k, v in t.items()}), item="8"))
add(_cases("sigma-zero", "every σ = 0, re-sealed",
           "zero weights give zero features; refused or a finite distribution, never NaN", ANY_SAFE,
           _sigma(lambda t: {k: np.zeros_like(v) for k, v in t.items()})))
add(_cases("sigma-negative", "every σ negated, re-sealed",
           "nothing clamps σ during training, so negative σ can be legitimate; the output must be a finite "
           "distribution (or a clear refusal)", ANY_SAFE, _sigma(lambda t: {k: -v for k, v in t.items()})))
add(_cases("sigma-float64", "σ stored as float64 (same values), re-sealed",
           "the same σ in another float type is the same adapter: the prediction must equal the original's",
           ANY_SAFE, _sigma(lambda t: {k: v.astype(np.float64) for k, v in t.items()}), same=True))
add(_cases("sigma-float16", "σ stored as float16, re-sealed",
           "a float adapter in half precision: refused or a finite distribution", ANY_SAFE,
           _sigma(lambda t: {k: v.astype(np.float16) for k, v in t.items()})))
add(_cases("sigma-int32", "σ stored as int32, re-sealed",
           "integer σ lose the trained values: refused (docs/reliability.md safety table)", ERROR,
           _sigma(lambda t: {k: v.astype(np.int32) for k, v in t.items()})))
add(_cases("sigma-bool", "σ stored as bool, re-sealed", "not floating point: refused", ERROR,
           _sigma(lambda t: {k: v > 0 for k, v in t.items()})))
add(_cases("sigma-longer", "one σ tensor one element longer, re-sealed", "shape differs from the matrix: refused",
           ERROR, _sigma(lambda t: {**t, _first(t): np.append(t[_first(t)], 1.0).astype(np.float32)})))
add(_cases("sigma-2d", "one σ tensor reshaped to 2-D, re-sealed", "shape differs from the matrix: refused", ERROR,
           _sigma(lambda t: {**t, _first(t): t[_first(t)].reshape(1, -1)})))
add(_cases("sigma-scalar", "one σ tensor replaced by a 0-d scalar, re-sealed", "shape differs: refused", ERROR,
           _sigma(lambda t: {**t, _first(t): np.array(1.0, dtype=np.float32)})))
add(_cases("sigma-empty", "one σ tensor with 0 elements, re-sealed", "shape differs: refused", ERROR,
           _sigma(lambda t: {**t, _first(t): np.zeros((0,), dtype=np.float32)})))
add(_cases("sigma-missing-key", "one σ tensor removed, re-sealed", "a matrix without its σ: refused", ERROR,
           _sigma(lambda t: {k: v for k, v in t.items() if k != _first(t)})))
add(_cases("sigma-extra-key", "an extra tensor `visual.evil` in the file, re-sealed",
           "a tensor no target names: refused, or ignored with the original prediction unchanged", ANY_SAFE,
           _sigma(lambda t: {**t, "visual.evil": np.ones(4, dtype=np.float32)}), same=True))
add(_cases("st-metadata-huge", "safetensors metadata with a 5 MB string, re-sealed",
           "metadata is not used: refused as oversized, or ignored with the original prediction", ANY_SAFE,
           lambda ctx, run: (write_tensors(run / "adapter" / "adapter.safetensors",
                                           read_tensors(run / "adapter" / "adapter.safetensors"),
                                           {"format": "medclipsvd.sigma-adapter", "note": "x" * (5 << 20)}),
                             reseal_adapter(run / "adapter")), same=True))

# adapter_config.json -------------------------------------------------------------------------------------
WHY_CFG = "a damaged or edited adapter_config.json: one line naming the file (and the field)"
add(_cases("cfg-empty", "adapter_config.json of 0 bytes", WHY_CFG, ERROR, _cfg_text(lambda ctx: ""),
           mentions=["adapter_config.json"]))
add(_cases("cfg-not-json", "adapter_config.json that is not JSON", WHY_CFG, ERROR,
           _cfg_text(lambda ctx: "{'format': medclipsvd"), mentions=["adapter_config.json"]))
add(_cases("cfg-array", "adapter_config.json holding a JSON array", WHY_CFG, ERROR, _cfg_text(lambda ctx: "[1, 2]"),
           mentions=["adapter_config.json"]))
add(_cases("cfg-format-other", "adapter_config.json format 'peft-lora'", WHY_CFG, ERROR,
           _cfg(lambda ctx, c: c.update(format="peft-lora"))))
add(_cases("cfg-format-version-999", "adapter_config.json format_version 999", "a newer format: refused (upgrade)",
           ERROR, _cfg(lambda ctx, c: c.update(format_version=999))))
add(_cases("cfg-format-version-huge", "adapter_config.json format_version = 10**400 (a 401-digit integer)",
           "a number no writer produces: refused without overflow errors", ERROR,
           _cfg(lambda ctx, c: json.dumps(c).replace('"format_version": 1', '"format_version": 1' + "0" * 400))))
add(_cases("cfg-format-version-nan", "adapter_config.json format_version NaN (non-standard JSON literal)",
           "NaN is no version: refused", ERROR,
           _cfg(lambda ctx, c: json.dumps(c).replace('"format_version": 1', '"format_version": NaN'))))
add(_cases("cfg-format-version-string", "adapter_config.json format_version \"1\" (a string)",
           "a lenient reading of '1' is harmless; either way the prediction must be the original's", ANY_SAFE,
           _cfg(lambda ctx, c: c.update(format_version="1")), same=True))
add(_cases("cfg-backbone-missing", "adapter_config.json without `backbone`", WHY_CFG, ERROR,
           _cfg(lambda ctx, c: c.pop("backbone"))))
add(_cases("cfg-fingerprint-wrong", "adapter_config.json base fingerprint of another model",
           "an adapter is never applied to a base it was not made from (AdapterMismatchError)", ERROR,
           _cfg(lambda ctx, c: c["backbone"].update(fingerprint="0123456789abcdef0123456789abcdef")),
           routes=("predict", "export")))
add(_cases("cfg-backbone-other", "adapter_config.json backbone renamed to tiny-clip (fingerprint kept)",
           "the fingerprint belongs to another backbone: refused", ERROR,
           _cfg(lambda ctx, c: c["backbone"].update(name="tiny-clip"))))
add(_cases("cfg-backbone-unknown", "adapter_config.json backbone name 'no-such-backbone'",
           "unknown backbone: one line, no KeyError", ERROR,
           _cfg(lambda ctx, c: c["backbone"].update(name="no-such-backbone"))))
add(_cases("cfg-backbone-callable", "adapter_config.json backbone name 'os.system'",
           "a name that resolves to a callable is refused (nothing in a file runs code)", ERROR,
           _cfg(lambda ctx, c: c["backbone"].update(name="os.system"))))
add(_cases("cfg-targets-subset", "adapter_config.json targets.layers = [0] (tensors for all layers)",
           "targets and tensors disagree: refused", ERROR,
           _cfg(lambda ctx, c: c["targets"].update(layers=[0]))))
add(_cases("cfg-targets-callable", "adapter_config.json targets.matrices = ['os.system']",
           "an unknown matrix name: refused", ERROR, _cfg(lambda ctx, c: c["targets"].update(matrices=["os.system"]))))
add(_cases("cfg-targets-towers", "adapter_config.json targets.towers = 'everything'", WHY_CFG, ERROR,
           _cfg(lambda ctx, c: c["targets"].update(towers="everything"))))
add(_cases("cfg-targets-modules", "adapter_config.json targets.modules = [\"__import__('os').system('id')\"]",
           "module patterns are names, never evaluated: refused", ERROR,
           _cfg(lambda ctx, c: c["targets"].update(modules=["__import__('os').system('id')"]))))
add(_cases("cfg-targets-string", "adapter_config.json targets = 'all'", WHY_CFG, ERROR,
           _cfg(lambda ctx, c: c.update(targets="all"))))
add(_cases("cfg-input-window-callable", "adapter_config.json extra.input.window = 'os.system'",
           "an input policy naming no window: refused (or ignored for 2-D images with the original result)",
           ANY_SAFE, _cfg(lambda ctx, c: c.setdefault("extra", {}).setdefault("input", {}).update(window="os.system")),
           same=True))
add(_cases("cfg-deep-json", "adapter_config.json with 100000 nested arrays in an added key",
           "item 6: JSON depth must be bounded with one clear line (not a RecursionError)", ERROR,
           # an added top-level key: trained configs have no `extra` key to nest it in
           _cfg(lambda ctx, c: json.dumps(c)[:-1] + ', "deep": ' + deep_json() + '}'),
           item="6"))
add(_cases("cfg-padding-5mb", "adapter_config.json padded with 5 MB of spaces (valid JSON)",
           "valid JSON: refused as oversized or read with the original result", ANY_SAFE,
           _cfg(lambda ctx, c: json.dumps(c) + " " * (5 << 20)), same=True))
add(_cases("cfg-sha256-number", "adapter_config.json weights_sha256 = 12345 (a number)", WHY_CFG, ERROR,
           _cfg(lambda ctx, c: c.update(weights_sha256=12345))))
add(_cases("cfg-sha256-wrong", "adapter_config.json weights_sha256 of other bytes",
           "the tensors do not match the recorded sha256: refused", ERROR,
           _cfg(lambda ctx, c: c.update(weights_sha256="0" * 64))))
add(_cases("cfg-is-dir", "adapter_config.json is a directory", WHY_CFG, ERROR,
           _file("adapter/adapter_config.json", lambda ctx, p: p.mkdir())))
add(_cases("cfg-fifo", "adapter_config.json is a FIFO", "no hang: non-regular files are refused", ERROR,
           _file("adapter/adapter_config.json", lambda ctx, p: fifo(p)), timeout=60))
add(_cases("cfg-dev-zero", "adapter_config.json is a symlink to /dev/zero",
           "an endless file must not be read into memory: refused", ERROR,
           _file("adapter/adapter_config.json", lambda ctx, p: symlink(p, "/dev/zero")), timeout=60))
add(_cases("cfg-source-pickle", "adapter_config.json backbone.source = a torch.save pickle with a payload",
           "a weight source is loaded as safetensors or torch.load(weights_only=True): nothing unpickled", ANY_SAFE,
           _cfg(lambda ctx, c: (Path(ctx.root / "evil.pt").write_bytes(torch_payload(ctx.marker("source"))),
                                c["backbone"].update(source=str(ctx.root / "evil.pt")))), same=True))
def _elsewhere(ctx) -> Path:
    """A folder of someone else's files whose names must not be listed in a message (item 5)."""
    d = ctx.root / "elsewhere"
    d.mkdir(exist_ok=True)
    for name in ("ward7-patient-list.csv", "id_rsa-backup"):
        (d / name).write_text("private\n")
    return d


add(_cases("cfg-source-local-dir", "adapter_config.json backbone.source = local-dir: a folder of someone else's files",
           "item 5: refused or ignored for a seeded tiny backbone; an error names the folder and what is missing, "
           "never the folder's contents", ANY_SAFE,
           _cfg(lambda ctx, c: c["backbone"].update(source="local-dir:" + str(_elsewhere(ctx)))), same=True,
           item="5", secrets=("ward7-patient-list", "id_rsa-backup")))

# adapter folder ------------------------------------------------------------------------------------------
add(_cases("dir-missing", "--adapter names a folder that does not exist", "one line naming it", ERROR,
           lambda ctx, run: __import__("shutil").rmtree(run / "adapter")))
add(_cases("dir-empty", "--adapter names an empty folder", "not an adapter folder: one line", ERROR,
           lambda ctx, run: [p.unlink() for p in (run / "adapter").iterdir()]))
add(_cases("dir-is-file", "--adapter names a regular file", "not an adapter folder: one line", ERROR,
           _compose(lambda ctx, run: __import__("shutil").rmtree(run / "adapter"),
                    lambda ctx, run: (run / "adapter").write_text("adapter"))))
add(_cases("extra-pickle-file", "a pytorch_model.bin pickle with a payload added to the adapter folder",
           "extra files are never unpickled; refused or ignored with the original prediction", ANY_SAFE,
           lambda ctx, run: (run / "adapter" / "pytorch_model.bin").write_bytes(torch_payload(ctx.marker("bin"))),
           same=True))
add(_cases("method-json-pickle", "method.json {method: full, fingerprint: the base's} + weights.safetensors "
           "that is a pickle with a payload", "the LoRA/full path reads safetensors only: refused, nothing unpickled",
           ERROR, lambda ctx, run: ((run / "adapter" / "method.json").write_text(json.dumps(
               {"method": "full", "backbone": "tiny-biomedclip", "fingerprint": _fingerprint(ctx)})),
               (run / "adapter" / "weights.safetensors").write_bytes(pickle_payload(ctx.marker("method"))))))
add(_cases("method-json-callable", "method.json {method: 'os.system'}", "unknown method: refused", ERROR,
           lambda ctx, run: (run / "adapter" / "method.json").write_text(json.dumps(
               {"method": "os.system", "fingerprint": _fingerprint(ctx)}))))
add(_cases("method-json-deep", "method.json of 100000 nested arrays", "item 6: bounded JSON depth, one line", ERROR,
           lambda ctx, run: (run / "adapter" / "method.json").write_text(deep_json()), item="6"))

# results.json beside the adapter ---------------------------------------------------------------------------
add(_cases("results-missing", "no results.json beside the adapter",
           "the classes and prompt are unknown: one line saying so", ERROR,
           lambda ctx, run: (run / "results.json").unlink()))
add(_cases("results-deep", "results.json of 100000 nested arrays", "item 6: bounded JSON depth, one line", ERROR,
           lambda ctx, run: (run / "results.json").write_text(deep_json()), item="6"))
add(_cases("results-one-class", "results.json classnames = ['benign']",
           "a one-class 'classifier' gives every image probability 1 for that class: silently wrong unless refused",
           REFUSE_OR_WARN, _results(lambda ctx, d: d.update(classnames=["benign"])), item="8"))
add(_cases("results-no-classes", "results.json classnames = []", "nothing to classify: refused", ERROR,
           _results(lambda ctx, d: d.update(classnames=[]))))
add(_cases("results-dup-classes", "results.json classnames = ['benign', 'benign']",
           "two identical classes split one probability arbitrarily: refused or warned", REFUSE_OR_WARN,
           _results(lambda ctx, d: d.update(classnames=["benign", "benign"]))))
add(_cases("results-template-attr", "results.json template '{0.__class__.__mro__}'",
           "a format field reaching into attributes is not a prompt template: refused (one `{}` only)", ERROR,
           _results(lambda ctx, d: (d.update(template="{0.__class__.__mro__}"),
                                    d["run"].update(template="{0.__class__.__mro__}")))))
add(_cases("results-template-none", "results.json template without {}", "the class name has no slot: refused",
           ERROR, _results(lambda ctx, d: (d.update(template="a photo"), d["run"].update(template="a photo")))))
add(_cases("results-window-callable", "results.json run.window = 'os.system'",
           "an unknown HU window: refused (or ignored for 2-D images with the original result)", ANY_SAFE,
           _results(lambda ctx, d: d["run"].update(window="os.system")), same=True))
add(_cases("results-backbone-kwargs", "results.json run.backbone_kwargs = {model_factory: 'os.system'}",
           "keyword arguments from a file are not passed on blindly: refused with one line", ERROR,
           _results(lambda ctx, d: d["run"].update(backbone_kwargs={"model_factory": "os.system"})),
           routes=("evaluate",)))

# results.json preprocess: item 1's code execution --------------------------------------------------------
add(_cases("pre-reader-subprocess", "results.json preprocess LoadImaged(reader='subprocess.run', args=[touch, MARKER])",
           WHY_PRE, ERROR, _preprocess(_reader_step("subprocess.run", args=lambda ctx: ["touch", ctx.marker("sp")])),
           routes=ALL_ROUTES, item="1", route_why=INTERPRET_PRE))
add(_cases("pre-reader-os-system", "results.json preprocess LoadImaged(reader='os.system', command='touch MARKER')",
           WHY_PRE, ERROR, _preprocess(_reader_step("os.system", command=lambda ctx: f"touch {ctx.marker('os')}")),
           routes=("predict", "evaluate", "export"), item="1"))
add(_cases("pre-reader-open", "results.json preprocess LoadImaged(reader='builtins.open', file=MARKER, mode='w')",
           WHY_PRE, ERROR, _preprocess(_reader_step("builtins.open", file=lambda ctx: ctx.marker("open"), mode="w")),
           routes=("predict", "export"), item="1"))
add(_cases("pre-reader-mkdir", "results.json preprocess LoadImaged(reader='os.mkdir', path=MARKER)", WHY_PRE, ERROR,
           _preprocess(_reader_step("os.mkdir", path=lambda ctx: ctx.marker("mkdir"))), routes=("predict",), item="1"))
add(_cases("pre-save-imaged", "results.json preprocess SaveImaged(output_dir=a folder of the attacker's choice)",
           "item 1: I/O transforms are not allowed in preprocess (they write where nobody asked)", ERROR,
           _preprocess(lambda ctx: [{"name": "SaveImaged", "args": {"keys": "image",
                                                                     "output_dir": ctx.marker("saveimaged", "write"),
                                                                     "separate_folder": False}}]),
           routes=("predict", "evaluate"), item="1"))
add(_cases("pre-monai-expression", "results.json preprocess ScaleIntensityd(minv=\"$__import__('os').system(...)\")",
           "item 1: typed arguments (numbers, fixed vocabularies): a string where a number goes is refused, so no "
           "MONAI `$` expression reaches an exported bundle", ERROR,
           _preprocess(lambda ctx: [{"name": "ScaleIntensityd", "args": {
               "minv": f"$__import__('os').system('touch {ctx.marker('expr')}')", "maxv": 1.0}}]),
           routes=("predict", "export"), item="1"))
add(_cases("pre-target-key", "results.json preprocess ScaleIntensityRanged(a_min={_target_: os.system, ...})",
           "item 1: a mapping where a number goes is refused, so no `_target_` reaches an exported bundle", ERROR,
           _preprocess(lambda ctx: [{"name": "ScaleIntensityRanged", "args": {
               "a_min": {"_target_": "os.system", "command": f"touch {ctx.marker('target')}"}, "a_max": 1.0,
               "b_min": 0.0, "b_max": 1.0}}]), routes=("predict", "export"), item="1"))
add(_cases("pre-lambda", "results.json preprocess Lambdad(func='os.system')",
           "item 1: callable-taking transforms are not on the allow-list", ERROR,
           _preprocess(lambda ctx: [{"name": "Lambdad", "args": {"func": "os.system"}}]), item="1"))
add(_cases("pre-dotted-name", "results.json preprocess step named 'subprocess.run'",
           "item 1: only allow-listed MONAI transform names", ERROR,
           _preprocess(lambda ctx: [{"name": "subprocess.run", "args": {"args": ["touch", ctx.marker("name")]}}]),
           item="1"))
