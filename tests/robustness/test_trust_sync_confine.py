"""Robustness rows for issue 16 items 3 (`medclipsvd sync` uploads only the outbox's own copies, to the
configured server unless --to) and 5 (one confinement: `interpret --images` and `predict` series folders
refuse symlinks leading out; a `local-dir:` error names the folder, not its contents). Item 7 (the verified
evaluation cache) is kept by tests/data/test_eval_cache.py and tests/engine/test_eval_cache_run.py.

Every sync row plants a journal in ./mlruns/outbox/<id>/ (as a hostile colleague with write access to the
folder could) and, on top of the harness's five rules, checks the MLflow store afterwards: no run in its
SQLite database, no file in its artefact folder."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from harness import Corpus, Row, Scenario, run_cli, run_row

ISSUE = 16
OTHER_SERVER = "http://127.0.0.1:9"  # the discard port: nothing may be sent there


# ------------------------------------------------------------------------------------ item 3: sync
def _store_uri(c: Corpus) -> str:
    return f"sqlite:///{c.root / 'mlruns' / 'mlflow.db'}"


def _env(c: Corpus) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": _store_uri(c), "MEDCLIPSVD_OUTBOX": str(c.root / "mlruns" / "outbox")}


def _journal(c: Corpus, events: list[dict], uri: str | None = None, local_id: str = "planted") -> Path:
    """An outbox journal as the tracker writes it (meta.json, events.jsonl, sent) with these events."""
    d = c.root / "mlruns" / "outbox" / local_id
    d.mkdir(parents=True, exist_ok=True)
    meta = {"local_id": local_id, "name": f"run-{local_id}", "tags": {}, "tracking_uri": uri or _store_uri(c),
            "experiment": "medclipsvd", "parent_local_id": None, "created_ms": 1, "pid": None,
            "server_run_id": None}
    (d / "meta.json").write_text(json.dumps(meta))
    lines = [{"seq": i, "ts": 1, **e} for i, e in enumerate(events)]
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (d / "sent").write_text("0")
    return d


def _kept(d: Path, seq: int, name: str, text: str = "{}") -> str:
    """A file kept by the outbox (files/<seq>/<name>), as the tracker copies it; returns its `copy` entry."""
    f = d / "files" / str(seq) / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(text)
    return f"files/{seq}/{name}"


def _art(copy, src: str = "/work/run/results.json", artifact_path=None) -> dict:
    return {"t": "artifact", "src": src, "copy": copy, "artifact_path": artifact_path}


PARAMS = {"t": "params", "data": {"lr": "0.002"}}
END = {"t": "end", "status": "FINISHED"}


def _sync(c: Corpus, d: Path, mentions: list[str], *extra: str) -> Scenario:
    return Scenario(["sync", *extra], ["refused", str(d), *mentions], forbidden=[c.outside, Path("/etc/passwd")],
                    keep=[d], env=_env(c))


def sync_etc_passwd(c: Corpus) -> Scenario:
    d = _journal(c, [PARAMS, _art(None, src="/etc/passwd"), END])
    return _sync(c, d, ["/etc/passwd", "not kept in the outbox"])


def sync_absolute_copy(c: Corpus) -> Scenario:
    d = _journal(c, [PARAMS, _art(str(c.secret)), END])
    return _sync(c, d, [str(c.secret), "outside the copies"])


def sync_traversal_copy(c: Corpus) -> Scenario:
    d = c.root / "mlruns" / "outbox" / "planted"
    rel = "files/0/" + os.path.relpath(c.secret, d / "files" / "0")  # files/0/../../../../../outside/secret.png
    d = _journal(c, [_art(rel), END])
    return _sync(c, d, [rel, "outside the copies"])


def sync_symlinked_file(c: Corpus) -> Scenario:
    d = _journal(c, [_art("files/0/results.json"), END])
    (d / "files" / "0").mkdir(parents=True)
    os.symlink(c.secret, d / "files" / "0" / "results.json")
    return _sync(c, d, ["results.json", "outside the copies"])


def sync_symlink_in_folder(c: Corpus) -> Scenario:
    d = _journal(c, [_art("files/0/adapter", src="/work/run/adapter", artifact_path="adapter"), END])
    _kept(d, 0, "adapter/adapter_config.json")
    os.symlink(c.secret, d / "files" / "0" / "adapter" / "adapter.safetensors")
    return _sync(c, d, ["adapter.safetensors", "symlink leading outside"])


def sync_symlinked_files_folder(c: Corpus) -> Scenario:
    (c.outside / "0").mkdir()
    (c.outside / "0" / "id_rsa").write_text("PRIVATE KEY")
    d = _journal(c, [_art("files/0/id_rsa"), END])
    os.symlink(c.outside, d / "files")  # the journal's files/ folder itself leads out
    return _sync(c, d, ["files/0/id_rsa", "outside the copies"])


def sync_artifact_path_traversal(c: Corpus) -> Scenario:
    d = _journal(c, [_art("files/0/results.json", artifact_path="../../../other-run"), END])
    _kept(d, 0, "results.json")
    return _sync(c, d, ["../../../other-run", "not a plain relative path"])


def sync_other_server(c: Corpus) -> Scenario:
    d = _journal(c, [PARAMS, _art("files/1/results.json"), END], uri=OTHER_SERVER)
    _kept(d, 1, "results.json")
    return _sync(c, d, [OTHER_SERVER, "--to"])


def sync_malformed_events(c: Corpus) -> Scenario:
    d = _journal(c, [{"t": "metrics", "data": {"loss": "DROP TABLE runs"}, "step": 0}, END])
    return _sync(c, d, ["event 0", "not written by medclipsvd"])


def sync_dry_run_planted(c: Corpus) -> Scenario:
    d = _journal(c, [PARAMS, _art(None, src="/etc/passwd"), END])
    return _sync(c, d, ["/etc/passwd"], "--dry-run")


SYNC_ROWS = [
    Row("sync-etc-passwd", 3, "outbox journal", "journal artefact event naming /etc/passwd (no outbox copy)",
        sync_etc_passwd, issue=ISSUE),
    Row("sync-absolute-copy", 3, "outbox journal", "artefact `copy` = absolute path of a file outside the outbox",
        sync_absolute_copy, issue=ISSUE),
    Row("sync-traversal-copy", 3, "outbox journal", "artefact `copy` = files/0/../../../outside/secret.png",
        sync_traversal_copy, issue=ISSUE),
    Row("sync-symlinked-file", 3, "outbox journal", "kept copy is a symlink to a file outside the outbox",
        sync_symlinked_file, issue=ISSUE),
    Row("sync-symlink-in-folder", 3, "outbox journal", "kept adapter folder holds a symlink leading out",
        sync_symlink_in_folder, issue=ISSUE),
    Row("sync-symlinked-files-folder", 3, "outbox journal", "the journal's files/ folder is a symlink leading out",
        sync_symlinked_files_folder, issue=ISSUE),
    Row("sync-artifact-path-traversal", 3, "outbox journal", "artefact path ../../../other-run on the server",
        sync_artifact_path_traversal, issue=ISSUE),
    Row("sync-other-server", 3, "outbox journal", "journal recorded for another tracking server, no --to",
        sync_other_server, issue=ISSUE),
    Row("sync-malformed-events", 3, "outbox journal", "metrics event holding a string", sync_malformed_events,
        issue=ISSUE),
    Row("sync-dry-run-planted", 3, "outbox journal", "`sync --dry-run` over a journal naming /etc/passwd",
        sync_dry_run_planted, issue=ISSUE),
]


def _runs_in_store(root: Path) -> int:
    db = root / "mlruns" / "mlflow.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from runs").fetchone()[0]


def _artefacts(root: Path) -> list[Path]:
    return sorted(p for p in (root / "mlruns" / "artifacts").rglob("*") if p.is_file())


@pytest.mark.parametrize("row", SYNC_ROWS, ids=lambda r: r.id)
def test_sync_row(row, tmp_path):
    run_row(row, tmp_path)
    assert _runs_in_store(tmp_path) == 0 and _artefacts(tmp_path) == []


def test_other_server_goes_only_with_to_and_only_kept_copies(tmp_path):
    """--to names the target explicitly: the journal recorded for another server is uploaded there, and what
    arrives is exactly the outbox's copies (a file and a folder), under their artefact paths."""
    c = Corpus(tmp_path)
    d = _journal(c, [PARAMS, _art("files/1/results.json"),
                     _art("files/2/adapter", src="/work/run/adapter", artifact_path="adapter"), END],
                 uri=OTHER_SERVER)
    _kept(d, 1, "results.json", '{"acc": 1}')
    _kept(d, 2, "adapter/adapter_config.json", '{"rank": 0}')
    _kept(d, 2, "adapter/sub/notes.txt", "n")
    target = f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    (tmp_path / "elsewhere").mkdir()

    dry = run_cli(["sync", "--to", target, "--dry-run"], env=_env(c), cwd=tmp_path)
    assert dry.code == 0 and "Traceback" not in dry.text, dry.text
    for local, dest in ((d / "files/1/results.json", "results.json"),
                        (d / "files/2/adapter/adapter_config.json", "adapter/adapter_config.json"),
                        (d / "files/2/adapter/sub/notes.txt", "adapter/sub/notes.txt")):
        assert f"{local} -> {dest}" in dry.out, dry.out
    assert "3 file(s)" in dry.out and target in dry.out and d.is_dir()

    done = run_cli(["sync", "--to", target], env=_env(c), cwd=tmp_path)
    assert done.code == 0 and "1 run(s) uploaded" in done.out, done.text
    assert not d.exists()  # uploaded runs leave the outbox
    stored = sorted(p.relative_to(tmp_path / "elsewhere" / "artifacts").as_posix()
                    for p in (tmp_path / "elsewhere" / "artifacts").rglob("*") if p.is_file())
    assert [s.split("/artifacts/", 1)[1] for s in stored] == ["adapter/adapter_config.json",
                                                             "adapter/sub/notes.txt", "results.json"]
    assert _runs_in_store(tmp_path) == 0  # nothing went to the configured store


def test_good_journal_still_syncs_and_the_planted_one_stays(tmp_path):
    """A planted journal beside a good one: the good one is uploaded to the configured store, the planted one
    is refused (exit 2, one error line) and left untouched."""
    c = Corpus(tmp_path)
    good = _journal(c, [PARAMS, _art("files/1/results.json"), END], local_id="good")
    _kept(good, 1, "results.json", '{"acc": 1}')
    bad = _journal(c, [PARAMS, _art(None, src="/etc/passwd"), END], local_id="planted")
    out = run_cli(["sync"], env=_env(c), cwd=tmp_path)
    assert out.code == 2 and "Traceback" not in out.text, out.text
    assert len([l for l in out.text.splitlines() if l.startswith("error:")]) == 1
    assert "1 run(s) uploaded, 1 left in the outbox" in out.out
    assert not good.exists() and (bad / "events.jsonl").is_file()
    assert _runs_in_store(tmp_path) == 1
    assert [p.name for p in _artefacts(tmp_path)] == ["results.json"]
    assert not any(p.endswith("passwd") for p in out.opened)


# ------------------------------------------------------------------------------- item 5: confinement
def interpret_images_symlink(c: Corpus) -> Scenario:
    imgs = c.class_folders("imgs")
    os.symlink(c.secret, imgs / "benign" / "link.png")
    return Scenario(["interpret", "--adapter", str(c.path("adapter")), "--images", str(imgs), "--no-mlflow",
                     "--output", str(c.path("report"))], ["--images", "link.png", "--follow-symlinks"],
                    forbidden=[c.outside], keep=[imgs])


def interpret_images_symlinked_folder(c: Corpus) -> Scenario:
    imgs = c.class_folders("imgs")
    for i in range(2):
        c.image(c.outside / "more" / f"m{i}.png", seed=60 + i)
    os.symlink(c.outside / "more", imgs / "more")
    return Scenario(["interpret", "--adapter", str(c.path("adapter")), "--images", str(imgs), "--no-mlflow",
                     "--output", str(c.path("report"))], ["--images", "more", "--follow-symlinks"],
                    forbidden=[c.outside], keep=[imgs])


def predict_series_folder_symlink(c: Corpus) -> Scenario:
    series = c.path("study/series1")
    c.dicom(series / "s1.dcm")
    os.symlink(c.secret, series / "s2.dcm")
    return Scenario(["predict", "--adapter", str(c.path("adapter")), str(series)], ["s2.dcm", "--follow-symlinks"],
                    forbidden=[c.outside], keep=[series])


FOREIGN = ("patient_DOE_JANE_notes.txt", "salaries-2025.xlsx")


def local_dir_names_no_foreign_files(c: Corpus) -> Scenario:
    folder = c.path("someone-elses-folder")
    folder.mkdir()
    for name in FOREIGN:
        (folder / name).write_text("private")
    return Scenario(["summary", "--backbone", "clip-vit-b16", "--weights", f"local-dir:{folder}"],
                    [str(folder), "open_clip_model.safetensors"], keep=[folder])


CONFINE_ROWS = [
    Row("interpret-images-symlink", 5, "root confinement", "`interpret --images DIR` holding a symlink to a file "
        "outside DIR", interpret_images_symlink, issue=ISSUE),
    Row("interpret-images-symlinked-folder", 5, "root confinement", "`interpret --images DIR` holding a symlinked "
        "folder outside DIR", interpret_images_symlinked_folder, issue=ISSUE),
    Row("predict-series-folder-symlink", 5, "root confinement", "`predict` on a series folder holding a symlink "
        "leading out", predict_series_folder_symlink, issue=ISSUE),
    Row("local-dir-foreign-names", 5, "weights", "`--weights local-dir:DIR` of a folder without weights (other "
        "files in it)", local_dir_names_no_foreign_files, issue=ISSUE),
]


@pytest.mark.parametrize("row", CONFINE_ROWS, ids=lambda r: r.id)
def test_confine_row(row, tmp_path):
    outcome = run_row(row, tmp_path)
    for name in FOREIGN:  # the local-dir row: another folder's file names are none of the message's business
        assert name not in outcome.text


def test_interpret_follows_the_link_with_follow_symlinks(tmp_path):
    """The refusal is the policy, not a broken scan: with --follow-symlinks the linked image is used."""
    from medclipsvd.interpret.images import folder_images

    c = Corpus(tmp_path)
    imgs = c.class_folders("imgs")
    os.symlink(c.secret, imgs / "benign" / "link.png")
    refs = folder_images(imgs, follow_symlinks=True)
    assert str(imgs / "benign" / "link.png") in [r.path for r in refs] and len(refs) == 13


ROWS = SYNC_ROWS + CONFINE_ROWS


def test_journal_may_not_reopen_an_ended_run(tmp_path):
    """A journal naming a run that has ended in the store (here: FINISHED) is refused: it cannot add files,
    tags or metrics to a finished run, e.g. a registered model's training run."""
    from mlflow import MlflowClient

    c = Corpus(tmp_path)
    client = MlflowClient(_store_uri(c))
    exp = client.create_experiment("medclipsvd", artifact_location=(tmp_path / "mlruns" / "artifacts").as_uri())
    run = client.create_run(exp, run_name="trained")
    client.set_terminated(run.info.run_id, "FINISHED")
    d = _journal(c, [{"t": "tags", "data": {"medclipsvd.sha256": "forged"}}, _art("files/1/adapter.safetensors",
                     artifact_path="adapter"), END])
    _kept(d, 1, "adapter.safetensors", "forged weights")
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "server_run_id": run.info.run_id}))
    out = run_cli(["sync"], env=_env(c), cwd=tmp_path)
    assert out.code == 2 and "Traceback" not in out.text, out.text
    [line] = [l for l in out.text.splitlines() if l.startswith("error:")]
    assert run.info.run_id in line and "ended" in line and str(d) in line
    after = client.get_run(run.info.run_id)
    assert "medclipsvd.sha256" not in after.data.tags and not client.list_artifacts(run.info.run_id)
    assert d.is_dir()
