"""Building blocks of the bad inputs (images, DICOM, NIfTI, bombs, pickles, safetensors, FIFOs) and the shared
fixtures some cases start from: a class-folder dataset, a trained tiny run, a sealed model folder and an
MLflow store with a registered model. Each case copies a fixture; none changes the original."""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np

CLASSES = ("benign", "malignant")
FAST = ["--backbone", "tiny-biomedclip", "--shots", "2", "--max-steps", "2", "--no-mlflow", "--device", "cpu"]
MODEL_NAME, ALIAS = "sweep-model", "champion"
PHI = ("Doe^Jane", "PID-93125")   # fake patient tags written into every DICOM the sweep makes


# --------------------------------------------------------------------------------------------- images
def png(path: Path, seed: int = 0, size: int = 32, mode: str = "RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path


def class_folders(root: Path, classes=CLASSES, per_class: int = 6, seed0: int = 0) -> Path:
    """``root/<class>/<class><i>.png``, each image distinct; class c's images are brighter for c = 1 so a
    model can in principle tell them apart."""
    root = Path(root)
    for c, cname in enumerate(classes):
        for i in range(per_class):
            png(root / cname / f"{cname}{i}.png", seed=seed0 + 100 * c + i)
    return root


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, rows: bytes | None = None, bit_depth: int = 8, colour: int = 0,
            extra_chunks: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A PNG written by hand: any declared size (black pixels, compressed ~1000:1), so a few hundred bytes
    can declare 60000 rows."""
    if rows is None:
        z = zlib.compressobj(9)
        row = b"\x00" + bytes(width * max(1, bit_depth // 8) * (3 if colour == 2 else 1))
        rows = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    body = b"".join(_chunk(k, v) for k, v in extra_chunks)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + body + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def write(path: Path, data: bytes | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def fifo(path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def symlink(path: Path, target: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


def dicom(path: Path, size: int = 32, pixels=None, **tags) -> Path:
    """A CT slice with fake patient tags; ``tags`` override or add elements (``None`` deletes one)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = PHI
    ds.Modality = "CT"
    arr = pixels if pixels is not None else (np.arange(size * size, dtype=np.uint16).reshape(size, size) * 7)
    ds.set_pixel_data(arr.astype(np.uint16), "MONOCHROME2", 16)
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    for k, v in tags.items():
        if k == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = v
        elif v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def nifti(path: Path, data: np.ndarray, header_dims: tuple | None = None) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(data, np.eye(4))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    if header_dims is not None:  # declare other dimensions than the data holds (a header-only bomb)
        raw = bytearray(path.read_bytes())
        dims = [len(header_dims), *header_dims] + [1] * (7 - len(header_dims))
        raw[40:56] = struct.pack("<8h", *dims)
        path.write_bytes(bytes(raw))
    return path


# ---------------------------------------------------------------------------------------------- payloads
class _Payload:
    """Unpickling it calls ``fn(*args)``: the classic pickle attack."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def pickle_payload(marker: str) -> bytes:
    return pickle.dumps({"sigma": _Payload(os.system, f"touch {marker}")}, protocol=2)


def torch_payload(marker: str) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"state_dict": _Payload(os.system, f"touch {marker}")}, buf)
    return buf.getvalue()


def yaml_bomb(levels: int = 9, width: int = 9) -> str:
    """Nested aliases: a few hundred bytes that expand to width**levels scalars."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def deep_json(depth: int = 100000) -> str:
    return "[" * depth + "]" * depth


# ------------------------------------------------------------------------------------------- safetensors
def read_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def write_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict | None = None) -> Path:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def raw_safetensors(header: dict | bytes, payload: bytes = b"", length: int | None = None) -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + payload


def reseal_adapter(adapter: Path) -> None:
    """Write the safetensors' sha256 into adapter_config.json, as someone editing both files would."""
    import hashlib

    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    data = (adapter / "adapter.safetensors").read_bytes() if (adapter / "adapter.safetensors").is_file() else b""
    cfg["weights_sha256"] = hashlib.sha256(data).hexdigest()
    cfg_path.write_text(json.dumps(cfg, indent=2))


def reseal_model(model_dir: Path) -> None:
    """Recompute MLmodel's recorded sha256 of the model files by hand (what an attacker with write access to
    the folder does after editing it)."""
    import hashlib

    import yaml

    mlmodel = model_dir / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    arts = doc["flavors"]["python_function"]["artifacts"]
    files = [model_dir / arts["config"]["path"]]
    adapter = model_dir / arts["adapter"]["path"]
    files += sorted(p for p in adapter.rglob("*") if p.is_file())
    doc.setdefault("metadata", {})["medclipsvd_sha256"] = {
        p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    mlmodel.write_text(yaml.safe_dump(doc))


# ------------------------------------------------------------------------------------------ result checks
def predictions(csv_path: Path, classes=CLASSES, rows: int | None = None) -> str | None:
    """None if ``predict --output`` wrote sane predictions: finite probabilities in [0, 1] summing to 1, a
    label among the classes that is the most probable one; else what is wrong."""
    import csv

    if not Path(csv_path).is_file():
        return f"no predictions file {csv_path}"
    with open(csv_path, newline="") as fh:
        table = list(csv.DictReader(fh))
    if not table:
        return "the predictions file has no rows"
    if rows is not None and len(table) != rows:
        return f"{len(table)} prediction rows, expected {rows}"
    for r in table:
        probs = {k.removeprefix("prob_"): float(v) for k, v in r.items() if k.startswith("prob_")}
        if set(probs) != set(classes):
            return f"probability columns {sorted(probs)}, expected {sorted(classes)}"
        vals = np.array(list(probs.values()))
        if not np.isfinite(vals).all():
            return f"non-finite probabilities {probs} for {r.get('file')}"
        if (vals < -1e-6).any() or (vals > 1 + 1e-6).any() or abs(vals.sum() - 1) > 1e-3:
            return f"probabilities {probs} are not a distribution"
        if r["label"] not in classes or probs[r["label"]] < vals.max() - 1e-6:
            return f"label {r['label']!r} is not the most probable class of {probs}"
    return None


def train_result(out: Path, classes=CLASSES) -> str | None:
    """None if a training run wrote an adapter and a results.json with finite metrics over ``classes``."""
    res = Path(out) / "results.json"
    if not res.is_file() or not (Path(out) / "adapter" / "adapter_config.json").is_file():
        return f"no results.json/adapter in {out}"
    data = json.loads(res.read_text())
    if sorted(data.get("classnames", [])) != sorted(classes):
        return f"classes {data.get('classnames')}, expected {sorted(classes)}"
    for split, m in (data.get("eval") or {}).items():
        acc = m.get("accuracy")
        if acc is None or not np.isfinite(acc):
            return f"{split} accuracy {acc}"
    return None


# --------------------------------------------------------------------------------------- shared fixtures
def _cli(argv: list[str], cwd: Path, log: Path, workdir: Path, repo: Path) -> int:
    from medclipsvd.cli.app import run

    from .worker import _case_process_state, case_env

    with _case_process_state(case_env(workdir, repo), cwd, log):
        return run(argv)


def rewrite_store_paths(db: Path, old: str, new: str) -> None:
    """Point a copied SQLite MLflow store at its copied artefact folder (every text column that holds the old
    absolute path)."""
    con = sqlite3.connect(db)
    try:
        for (table,) in con.execute("select name from sqlite_master where type='table'").fetchall():
            cols = [r[1] for r in con.execute(f"pragma table_info('{table}')").fetchall()
                    if (r[2] or "").upper().startswith(("VARCHAR", "TEXT", "STRING"))]
            for c in cols:
                con.execute(f'update "{table}" set "{c}" = replace("{c}", ?, ?) where "{c}" like ?',
                            (old, new, f"%{old}%"))
        con.commit()
    finally:
        con.close()


def build_fixture(name: str, workdir: Path, repo: Path) -> dict:
    fx = workdir / "fixtures"
    fx.mkdir(parents=True, exist_ok=True)
    target = fx / name
    if (target / ".done").exists():
        return json.loads((target / ".done").read_text() or "{}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    log = fx / f"{name}.log"
    info: dict = {}
    if name == "data":
        class_folders(target / "images")
        png(target / "probe.png", seed=4242)
    elif name == "run":
        code = _cli(["train", "--pipeline", "custom", "--data-root", str(fx / "data" / "images"),
                     "--output", str(target), *FAST, "--checkpoint-every", "0"], fx, log, workdir, repo)
        if code != 0:
            raise RuntimeError(f"training the fixture run failed (exit {code}); see {log}")
        code = _cli(["predict", "--adapter", str(target / "adapter"), str(fx / "data" / "probe.png"),
                     "--output", str(target / "baseline.csv"), "--device", "cpu"], fx, log, workdir, repo)
        if code != 0:
            raise RuntimeError(f"the baseline prediction of the fixture run failed (exit {code}); see {log}")
    elif name == "model":
        from medclipsvd.tracking.registry import build_model_config, save_pyfunc

        results = json.loads((fx / "run" / "results.json").read_text())
        work = fx / "model-work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        config = build_model_config(fx / "run" / "adapter", results, "run-sweep")
        made = Path(save_pyfunc(config, fx / "run" / "adapter", work))
        shutil.rmtree(target)
        shutil.move(str(made), str(target))
        shutil.rmtree(work, ignore_errors=True)
    elif name == "store":
        uri = f"sqlite:///{target / 'mlruns' / 'mlflow.db'}"
        code = _cli(["train", "--pipeline", "custom", "--data-root", str(fx / "data" / "images"),
                     "--output", str(target / "run"), "--backbone", "tiny-biomedclip", "--shots", "2",
                     "--max-steps", "2", "--device", "cpu", "--checkpoint-every", "0", "--tracking-uri", uri,
                     "--no-system-metrics", "--register", "--name", MODEL_NAME, "--alias", ALIAS],
                    target, log, workdir, repo)
        if code != 0:
            raise RuntimeError(f"training + registering the fixture store failed (exit {code}); see {log}")
        from mlflow import MlflowClient

        client = MlflowClient(uri, registry_uri=uri)
        mv = client.get_model_version(MODEL_NAME, "1")
        model_id = getattr(mv, "model_id", None) or str(mv.source).removeprefix("models:/")
        if not model_id.startswith("m-"):
            raise RuntimeError(f"the registered version's source {mv.source!r} is not a LoggedModel")
        info = {"uri": uri, "root": str(target), "name": MODEL_NAME, "alias": ALIAS, "run_id": mv.run_id,
                "model_id": model_id}
        (target / "store.json").write_text(json.dumps(info))
    else:
        raise ValueError(f"unknown fixture {name}")
    (target / ".done").write_text(json.dumps(info))
    return info


def store_copy(ctx) -> dict:
    """A private copy of the fixture store for one case: {uri, root, name, alias, run_id, model_id}."""
    src = ctx.fixture("store")
    info = json.loads((src / "store.json").read_text())
    dst = ctx.root / "store"
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(".done"))
    rewrite_store_paths(dst / "mlruns" / "mlflow.db", str(src), str(dst))
    info = {**info, "uri": f"sqlite:///{dst / 'mlruns' / 'mlflow.db'}", "root": str(dst)}
    return info
