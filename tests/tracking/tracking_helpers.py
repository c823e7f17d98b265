"""Helpers of the tracking tests (imported by name: `from tracking_helpers import ...`; conftest.py puts this
folder on the path): starting a real `mlflow server`, running the CLI, predicting in a fresh process, and the
engine's own evaluation path for comparison. The fixtures built on them are in conftest.py."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"
PYTHON = sys.executable
MODEL_NAME = "tiny-chest"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    uri: str
    backend: str
    artifacts: Path
    log: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        """Kill the server's whole process group (it starts workers), as a crash would."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)


def server_env() -> dict:
    env = dict(os.environ)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background job workers: less CPU in tests
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def start_server(backend: str, artifacts: Path, log: Path, timeout: float = 180.0) -> Server:
    import requests

    port = free_port()
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [PYTHON, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend, "--artifacts-destination", str(artifacts), "--workers", "1"]
    fh = open(log, "ab")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=server_env(), start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    server = Server(uri, backend, artifacts, log, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}; log:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(uri + "/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"mlflow server did not answer within {timeout} s; log:\n{log.read_text()[-3000:]}")


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop("MLFLOW_TRACKING_URI", None)
    full_env.update(env or {})
    return subprocess.run([PYTHON, "-m", "medclipsvd.cli.app", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@dataclass
class TrainedRun:
    server: Server
    data: Path
    output: Path
    workdir: Path
    run_id: str
    log: str  # everything the CLI printed (stdout + stderr)


def train_args(data: Path, output: Path, tracking_uri: str, *extra: str) -> list[str]:
    return ["train", "--pipeline", "demo", "--data-root", str(data), "--backbone", "tiny-biomedclip",
            "--shots", "2", "--max-steps", "4", "--device", "cpu", "--output", str(output),
            "--tracking-uri", tracking_uri, *extra]


FRESH_PREDICT = r"""
import base64, json, sys, warnings
warnings.simplefilter("ignore")
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
files = json.loads(sys.argv[2])
encoded = [base64.b64encode(open(f, "rb").read()).decode() for f in files]
out = model.predict(pd.DataFrame({"image": encoded}))
print("RESULT" + out.to_json(orient="split"))
"""


def encoded(path: str) -> str:
    """A file as a client of a served model sends it: its bytes in base64 (served models read no paths)."""
    import base64

    return base64.b64encode(Path(path).read_bytes()).decode()


def predict_in_fresh_process(model_uri: str, files: list[str], tracking_uri: str) -> "object":
    """Load `model_uri` with mlflow.pyfunc.load_model in a new Python process and send it the files' bytes
    (base64); returns its DataFrame."""
    import io

    import pandas as pd

    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri)
    proc = subprocess.run([PYTHON, "-c", FRESH_PREDICT, model_uri, json.dumps(files)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    payload = proc.stdout.split("RESULT", 1)[1]
    return pd.read_json(io.StringIO(payload), orient="split")


def real_files() -> list[str]:
    """A real DICOM and a real PNG from ../shared/data, when present."""
    files = []
    dcm = SHARED_DATA / "dicom" / "CT_small.dcm"
    if dcm.exists():
        files.append(str(dcm.resolve()))
    busi = SHARED_DATA / "biomedical" / "BUSI" / "BUSI"
    if busi.is_dir():
        png = next(iter(sorted(busi.rglob("*.png"))), None)
        if png is not None:
            files.append(str(png.resolve()))
    return files


def in_process_probs(adapter_dir: Path, files: list[str], classnames: list[str], template: str):
    """The engine's own evaluation path: base backbone + saved adapter, merged, `predict_probs` over an
    ImageDataset with the eval transform."""
    from medclipsvd.backbones import load_backbone
    from medclipsvd.data import ImageDataset, Sample, build_transform
    from medclipsvd.engine.evaluator import predict_probs
    from medclipsvd.methods.registry import load_trained

    bb = load_backbone("tiny-biomedclip")
    if load_trained(bb, adapter_dir) == "svd":
        from medclipsvd.svd import merge

        merge(bb)
    tf = build_transform(bb.image_size, bb.mean, bb.std, train=False)
    ds = ImageDataset([Sample(f, 0, classnames[0]) for f in files], tf, cache=False)
    probs, _ = predict_probs(bb, ds, classnames, template, device="cpu")
    return probs
