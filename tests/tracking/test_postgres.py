"""Acceptance: the same round trip with a PostgreSQL backend store. The test starts a throwaway cluster
(initdb + pg_ctl, loopback port, trust auth, as the `postgres` user when run as root) and an `mlflow server`
on it; it skips, saying why, where Debian's postgresql binaries are not installed."""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from tracking_helpers import free_port, in_process_probs, predict_in_fresh_process, real_files, start_server
from tracking_synth import CLASSES


def _pg_bin() -> Path | None:
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _as_user() -> tuple[list[str], str | None]:
    """PostgreSQL refuses to run as root: then run its programs as the `postgres` account."""
    if os.geteuid() != 0:
        return [], None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to run the PostgreSQL server as")
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], "postgres"
    pytest.skip("running as root without `runuser` to start PostgreSQL as the postgres user")


@pytest.fixture(scope="module")
def postgres_uri():
    bindir = _pg_bin()
    if bindir is None or not (bindir / "pg_ctl").exists():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: `apt-get install -y postgresql` "
                    "(Debian/Ubuntu) to run this test")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2-binary is a medclipsvd dependency; reinstall it")
    prefix, user = _as_user()
    # /tmp directly (pytest's tmp folders are private to root, the postgres account could not enter them)
    root = Path(tempfile.mkdtemp(prefix="medclipsvd-pg-"))
    data = root / "data"
    if user:
        os.chmod(root, 0o755)
        shutil.chown(root, user=user)
    port = free_port()

    def pg(*args, **kw):
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120, **kw)

    init = pg(str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "-A", "trust", "--no-sync", "-E", "UTF8")
    assert init.returncode == 0, init.stdout + init.stderr
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    start = pg(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "pg.log"), "-w", "start")
    assert start.returncode == 0, start.stdout + start.stderr + (root / "pg.log").read_text()
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE mlflowdb")
        conn.close()
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the driver we ship is psycopg2
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflowdb"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_backend_round_trip(postgres_uri, phi_dataset, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from medclipsvd.engine.pipeline_spec import spec_from_pipeline

    from medclipsvd.engine.run import run_experiment
    from medclipsvd.tracking import make_tracker
    from medclipsvd.tracking.registry import register_run

    monkeypatch.chdir(tmp_path)
    server = start_server(postgres_uri, tmp_path / "artifacts", tmp_path / "server.log")
    try:
        tracker = make_tracker(server.uri, True)
        spec = spec_from_pipeline("demo", data_root=str(phi_dataset), output=str(tmp_path / "run"),
                                  backbone="tiny-biomedclip", shots=2, seed=2, max_steps=3, device="cpu",
                                  progress=False)
        results = run_experiment(spec, tracker=tracker)
        assert tracker.last_run_complete
        reg = register_run(tracker.last_run_id, "pg-model", alias="champion", tracking_uri=server.uri)
        client = MlflowClient(server.uri)
        assert client.get_model_version_by_alias("pg-model", "champion").version == reg.version
        assert [m.step for m in client.get_metric_history(tracker.last_run_id, "train/loss")] == [1, 2, 3]
        files = sorted(str(p) for p in (phi_dataset / "test").rglob("*") if p.is_file()) + real_files()
        frame = predict_in_fresh_process("models:/pg-model@champion", files, server.uri)
    finally:
        server.stop()
    expected = in_process_probs(tmp_path / "run" / "adapter", files, list(CLASSES), results["template"])
    np.testing.assert_allclose(frame[[f"prob_{c}" for c in CLASSES]].to_numpy(), expected, atol=1e-5)
    # the run really lives in PostgreSQL: query the tables MLflow created there
    import psycopg2

    conn = psycopg2.connect(postgres_uri.replace("+psycopg2", ""))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (tracker.last_run_id,))
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT count(*) FROM model_versions WHERE name = 'pg-model'")
        assert cur.fetchone()[0] == 1
    conn.close()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["summary"]
