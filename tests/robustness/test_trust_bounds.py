"""Robustness rows for issue 16 item 6 (resource bounds): inputs of a few bytes that would ask for gigabytes
(a 1x60000 PNG, a DICOM of one row, NIfTI/.npz headers claiming huge arrays), parallelism that would fork
without bound (`--num-workers 100000`, `--cpus-per-run 0.001`), list files over their size or entry limits,
and paths that are not regular files (a FIFO blocks its reader, /dev/zero never ends).

The rows are held to the harness's five rules. Safety nets keep a regression from harming the machine the
tests run on: while a row runs, forking a process fails, decoding an image more elongated than 1000:1 fails,
and a reader blocked on a FIFO is released after 30 s; each makes the row fail instead of forking 100,000
workers, allocating 36 GB or hanging."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from harness import Corpus, Row, Scenario, run_cli, run_row

ISSUE, ITEM = 16, 6
TRAIN = ["train", "--pipeline", "custom"]


def _train(c: Corpus, data, *extra: str) -> list[str]:
    return [*TRAIN, "--data-root", str(data), "--output", str(c.path("out")), *c.FAST, *extra]


def _check(data, *extra: str) -> list[str]:
    return ["data", "check", "-d", "custom", "-r", str(data), *extra]


# ---------------------------------------------------------------------------------- images and volumes
def png_1x60000(c: Corpus) -> Scenario:
    from PIL import Image

    data = c.class_folders()
    Image.new("L", (1, 60000)).save(data / "benign" / "strip.png")  # ~140 bytes; 36 GB once resized to 224
    return Scenario(_train(c, data), ["strip.png", "1x60000", "above the limit of 50:1",
                                      "MEDCLIPSVD_MAX_IMAGE_ASPECT=60000"], keep=[data])


def dicom_one_row(c: Corpus) -> Scenario:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    data = c.class_folders()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.set_pixel_data(np.zeros((1, 60000), dtype=np.uint16), "MONOCHROME2", 16)
    ds.save_as(data / "malignant" / "row.dcm", enforce_file_format=True)
    return Scenario(_train(c, data), ["row.dcm", "60000x1", "aspect ratio", "MEDCLIPSVD_MAX_IMAGE_ASPECT"],
                    keep=[data])


def nifti_claims_huge_volume(c: Corpus) -> Scenario:
    import nibabel as nib

    data = c.class_folders()
    hdr = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).header.copy()
    hdr.set_data_shape((4000, 4000, 4000))  # 128 GB of int16 claimed by a 416-byte file
    with open(data / "benign" / "claims.nii", "wb") as fh:
        hdr.write_to(fh)
        fh.write(bytes(64))
    return Scenario(_train(c, data), ["claims.nii", "4000x4000x4000", "voxels", "MEDCLIPSVD_MAX_VOLUME_VOXELS"],
                    keep=[data])


def npz_claims_huge_array(c: Corpus) -> Scenario:
    import io
    import zipfile

    from numpy.lib import format as npy

    root = c.path("data")
    root.mkdir(parents=True)
    path = root / "pneumoniamnist.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("train", 4), ("val", 2), ("test", 2)):
            buf = io.BytesIO()
            np.save(buf, np.zeros((n, 1), np.uint8))
            zf.writestr(f"{split}_labels.npy", buf.getvalue())
            head = io.BytesIO()  # the header of an N x 100000 x 100000 array, and no data
            npy.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (n, 100000, 100000)})
            zf.writestr(f"{split}_images.npy", head.getvalue())
    return Scenario(["data", "check", "-d", "PneumoniaMNIST", "-r", str(root)],
                    ["pneumoniamnist.npz", "100000x100000", "voxels", "MEDCLIPSVD_MAX_VOLUME_VOXELS"], keep=[root])


# ------------------------------------------------------------------------------------------- parallelism
def num_workers_100000(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(_train(c, data, "--num-workers", "100000"),
                    ["--num-workers 100000", "at most", "MEDCLIPSVD_MAX_WORKERS"], keep=[data])


def benchmark_num_workers_100000(c: Corpus) -> Scenario:
    data = c.busi()
    return Scenario(["benchmark", "--suite", "BUSI", "--shots", "1", "--seeds", "1", "--method", "zero_shot",
                     "--backbone", "tiny-biomedclip", "--data-root", str(data), "--output", str(c.path("bench")),
                     "--no-mlflow", "--device", "cpu", "--num-workers", "100000"],
                    ["--num-workers 100000", "at most", "MEDCLIPSVD_MAX_WORKERS"], keep=[data])


def ray_cpus_per_run_tiny(c: Corpus) -> Scenario:
    data = c.busi()
    return Scenario(["benchmark", "--suite", "BUSI", "--shots", "1", "--seeds", "1", "--method", "zero_shot",
                     "--data-root", str(data), "--output", str(c.path("bench")), "--no-mlflow",
                     "--executor", "ray", "--cpus-per-run", "0.001"],
                    ["--cpus-per-run 0.001", "from 0.25"], keep=[data])


# ----------------------------------------------------------------------------------------- list files
def _csv_rows(c: Corpus, extra: int = 0) -> Path:
    return c.csv_dataset([f"img/benign{i % 4}.png,benign,train" for i in range(extra)])


def csv_too_many_rows(c: Corpus) -> Scenario:
    csv = _csv_rows(c)  # 8 rows
    return Scenario(_train(c, csv), ["export.csv", "more than 5 rows", "MEDCLIPSVD_MAX_CSV_ROWS"],
                    env={"MEDCLIPSVD_MAX_CSV_ROWS": "5"}, keep=[csv.parent])


def csv_too_large(c: Corpus) -> Scenario:
    csv = _csv_rows(c)
    return Scenario(_train(c, csv), ["export.csv", "above the limit of 100 bytes",
                                     f"MEDCLIPSVD_MAX_CSV_BYTES={csv.stat().st_size}"],
                    env={"MEDCLIPSVD_MAX_CSV_BYTES": "100"}, keep=[csv.parent])


def csv_limit_not_a_number(c: Corpus) -> Scenario:
    csv = _csv_rows(c)
    return Scenario(_train(c, csv), ["MEDCLIPSVD_MAX_CSV_ROWS='lots'", "unset it"],
                    env={"MEDCLIPSVD_MAX_CSV_ROWS": "lots"}, keep=[csv.parent])


def csv_unclosed_quote(c: Corpus) -> Scenario:
    csv = c.csv_dataset()
    csv.write_text(csv.read_text() + '"img/benign0.png,benign,train\n' + "x" * 140_000 + "\n")
    return Scenario(_train(c, csv), ["export.csv", "not valid CSV after line 9", "field limit", "unclosed quote"],
                    keep=[csv.parent])


def _custom_split(c: Corpus) -> tuple[Path, Path]:
    data = c.class_folders()
    entries = {s: [[f"{k}/{k}{i}.png", n, k] for n, k in enumerate(("benign", "malignant")) for i in idx]
               for s, idx in (("train", (0, 1, 2)), ("val", (3,)), ("test", (4, 5)))}
    return data, c.split_json(entries, name="split.json")


def split_file_too_large(c: Corpus) -> Scenario:
    data, split = _custom_split(c)
    return Scenario(_check(data, "--split-file", str(split)),
                    ["split.json", "split file", "above the limit of 200 bytes", "MEDCLIPSVD_MAX_SPLIT_BYTES"],
                    env={"MEDCLIPSVD_MAX_SPLIT_BYTES": "200"}, keep=[data, split])


def split_file_too_many_entries(c: Corpus) -> Scenario:
    data = c.busi()  # 3 classes x 3 splits: 9 entries in the registry's split file
    return Scenario(["data", "check", "-d", "BUSI", "-r", str(data)],
                    ["split_BUSI.json", "9 entries", "above the limit of 5", "MEDCLIPSVD_MAX_SPLIT_ENTRIES"],
                    env={"MEDCLIPSVD_MAX_SPLIT_ENTRIES": "5"}, keep=[data])


# -------------------------------------------------------------------------------- not a regular file
def fifo_as_image(c: Corpus) -> Scenario:
    data = c.class_folders()
    os.mkfifo(data / "benign" / "pipe.png")
    return Scenario(_train(c, data), ["pipe.png", "is a FIFO", "regular file"], keep=[data / "malignant"])


def fifo_as_split_file(c: Corpus) -> Scenario:
    data = c.class_folders()
    fifo = c.path("split.json")
    os.mkfifo(fifo)
    return Scenario(_check(data, "--split-file", str(fifo)), ["split.json", "is a FIFO", "regular file"],
                    keep=[data])


def fifo_as_csv(c: Corpus) -> Scenario:
    fifo = c.path("data/export.csv")
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    return Scenario(_train(c, fifo), ["export.csv", "is a FIFO", "regular file"])


def dev_zero_as_csv(c: Corpus) -> Scenario:
    link = c.path("data/export.csv")
    link.parent.mkdir(parents=True)
    os.symlink("/dev/zero", link)
    return Scenario(_train(c, link), ["export.csv", "is a character device", "regular file"])


def dev_zero_as_split_file(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(_check(data, "--split-file", "/dev/zero"), ["/dev/zero", "is a character device"],
                    keep=[data])


def _row(id_: str, klass: str, input_: str, build) -> Row:
    return Row(id_, ITEM, klass, input_, build, issue=ISSUE)


ROWS = [
    _row("png-1x60000", "resource bound", "a 1x60000 PNG (~140 bytes) in a class folder", png_1x60000),
    _row("dicom-one-row", "resource bound", "a DICOM of 1 row x 60000 columns", dicom_one_row),
    _row("nifti-claims-huge", "resource bound", "a 416-byte NIfTI whose header claims 4000x4000x4000 voxels",
         nifti_claims_huge_volume),
    _row("npz-claims-huge", "resource bound", "a MedMNIST .npz whose arrays claim N x 100000 x 100000",
         npz_claims_huge_array),
    _row("num-workers-100000", "resource bound", "`train --num-workers 100000`", num_workers_100000),
    _row("benchmark-num-workers-100000", "resource bound", "`benchmark --num-workers 100000`",
         benchmark_num_workers_100000),
    _row("ray-cpus-per-run-tiny", "resource bound", "`benchmark --executor ray --cpus-per-run 0.001`",
         ray_cpus_per_run_tiny),
    _row("csv-too-many-rows", "resource bound", "a CSV over MEDCLIPSVD_MAX_CSV_ROWS rows", csv_too_many_rows),
    _row("csv-too-large", "resource bound", "a CSV over MEDCLIPSVD_MAX_CSV_BYTES bytes", csv_too_large),
    _row("csv-unclosed-quote", "resource bound", "a CSV whose unclosed quote makes a 140 KB field",
         csv_unclosed_quote),
    _row("csv-limit-nan", "resource bound", "MEDCLIPSVD_MAX_CSV_ROWS=lots", csv_limit_not_a_number),
    _row("split-too-large", "resource bound", "a custom --split-file over MEDCLIPSVD_MAX_SPLIT_BYTES",
         split_file_too_large),
    _row("split-too-many-entries", "resource bound", "a registry split file over MEDCLIPSVD_MAX_SPLIT_ENTRIES",
         split_file_too_many_entries),
    _row("fifo-image", "not a regular file", "a FIFO named pipe.png in a class folder", fifo_as_image),
    _row("fifo-split-file", "not a regular file", "a FIFO as --split-file", fifo_as_split_file),
    _row("fifo-csv", "not a regular file", "a FIFO as the CSV (--data-root export.csv)", fifo_as_csv),
    _row("dev-zero-csv", "not a regular file", "/dev/zero as the CSV (a symlink export.csv)", dev_zero_as_csv),
    _row("dev-zero-split-file", "not a regular file", "`--split-file /dev/zero`", dev_zero_as_split_file),
]


# ---------------------------------------------------------------------------------------- safety nets
class _Forked(RuntimeError):
    pass


@pytest.fixture
def no_fork(monkeypatch):
    """Starting a process fails (and is recorded): a bound that regressed cannot fork-bomb the test machine."""
    import multiprocessing.process

    started: list[str] = []

    def refuse(*args, **kwargs):
        started.append("fork")
        raise _Forked("test safety net: a process was started")

    monkeypatch.setattr(os, "fork", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails: no local Ray cluster is started either
    return started


@pytest.fixture
def no_elongated_decoding(monkeypatch):
    """Decoding an image more elongated than 1000:1 fails (and is recorded): a regressed aspect bound cannot
    reach the resize that would allocate tens of gigabytes."""
    from PIL import ImageFile

    decoded: list[str] = []
    load = ImageFile.ImageFile.load

    def guarded(self):
        w, h = self.size
        if max(w, h) > 1000 * max(1, min(w, h)):
            decoded.append(str(getattr(self, "filename", "?")))
            raise OSError("test safety net: an elongated image was decoded")
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded)
    return decoded


@pytest.fixture
def unblock_fifos(tmp_path):
    """After 30 s, a reader still blocked on a FIFO under ``tmp_path`` is released (a writer opens and closes
    it, so the reader sees an empty file): a regressed check fails its row instead of hanging the suite."""
    import stat
    import threading

    done, released = threading.Event(), []

    def watch():
        if done.wait(30):
            return
        while not done.is_set():
            for p in tmp_path.rglob("*"):
                try:
                    if stat.S_ISFIFO(p.lstat().st_mode):
                        os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO when no reader waits
                        released.append(str(p))
                except OSError:
                    pass
            done.wait(1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    yield released
    done.set()
    t.join(5)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id) for r in ROWS])
def test_row(row: Row, tmp_path, no_fork, no_elongated_decoding, unblock_fifos):
    run_row(row, tmp_path)
    assert (no_fork, no_elongated_decoding, unblock_fifos) == ([], [], [])


def test_num_workers_100000_is_refused_before_any_work_and_without_forking(tmp_path, no_fork):
    c = Corpus(tmp_path)
    sc = num_workers_100000(c)
    out = run_cli(sc.argv)
    assert out.code == 2 and no_fork == []
    assert not c.path("out").exists()  # refused before the run folder was made


def test_png_1x60000_is_refused_before_decoding_and_fast(tmp_path, no_elongated_decoding):
    import time

    from PIL import ImageFile

    c = Corpus(tmp_path)
    sc = png_1x60000(c)
    t0 = time.perf_counter()
    out = run_cli(sc.argv)
    assert out.code == 2 and "1x60000" in out.err
    assert no_elongated_decoding == []  # refused from the header: the decoder never ran on it
    assert time.perf_counter() - t0 < 120  # the refusal comes before any training step
    assert ImageFile.ImageFile.load.__name__ == "guarded"  # the net was in place


def test_huge_nifti_header_is_refused_without_a_large_allocation(tmp_path):
    """numpy reports its allocations to tracemalloc: refusing the 4000^3 claim must not allocate it."""
    import tracemalloc

    from medclipsvd.data.samples import check_readable

    c = Corpus(tmp_path)
    nifti_claims_huge_volume(c)
    path = str(c.path("data/benign/claims.nii"))
    tracemalloc.start()
    try:
        for level in ("header", "decode"):
            assert "voxels" in check_readable(path, None, level)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6, f"peak {peak / 1e6:.0f} MB"


def test_the_python_api_has_the_same_worker_bound(tmp_path, monkeypatch, no_fork):
    from medclipsvd.api import run_pipeline
    from medclipsvd.engine.config import ConfigError, HParams, RunOptions
    from medclipsvd.engine.run import RunSpec
    from medclipsvd.errors import MedClipSVDError
    from medclipsvd.protocols.harness import BenchmarkSpec

    monkeypatch.delenv("MEDCLIPSVD_MAX_WORKERS", raising=False)
    monkeypatch.setattr("medclipsvd.data.workers.available_cores", lambda: 2)
    assert RunOptions(num_workers=8).num_workers == 8  # 4 per core
    with pytest.raises(ValueError, match="at most 8 DataLoader worker processes"):
        RunOptions(num_workers=9)
    with pytest.raises(ConfigError, match="--num-workers 100000: at most 8"):
        RunSpec(dataset="custom", hp=HParams(), num_workers=100000)
    with pytest.raises(MedClipSVDError, match="--num-workers 100000: at most 8"):
        BenchmarkSpec(suite="BUSI", num_workers=100000).validate()
    with pytest.raises(ConfigError, match="--num-workers 100000"):
        run_pipeline("custom", tmp_path / "data", tmp_path / "out", num_workers=100000)
    assert not (tmp_path / "out").exists() and no_fork == []
    monkeypatch.setenv("MEDCLIPSVD_MAX_WORKERS", "100000")  # the user's explicit choice is honoured
    assert RunSpec(dataset="custom", hp=HParams(), num_workers=100000).num_workers == 100000


def test_csv_rows_are_counted_while_reading_and_reading_stops_at_the_limit(tmp_path, monkeypatch):
    from medclipsvd.data.sources.custom import read_csv
    from medclipsvd.errors import DataError

    csv = tmp_path / "export.csv"
    # rows past the limit are never parsed: a broken 200 KB field there does not matter
    csv.write_text("path,label\n" + "".join(f"img{i}.png,a\n" for i in range(3)) + '"' + "x" * 200_000 + "\n")
    monkeypatch.setenv("MEDCLIPSVD_MAX_CSV_ROWS", "2")
    with pytest.raises(DataError, match=r"export\.csv: CSV file has more than 2 rows, above the limit of 2"):
        read_csv(csv)
    monkeypatch.setenv("MEDCLIPSVD_MAX_CSV_ROWS", "10")
    with pytest.raises(DataError, match=r"not valid CSV after line 4 \(field larger than field limit"):
        read_csv(csv)


def test_split_file_limits_apply_to_every_list_file(tmp_path, monkeypatch):
    import json

    from medclipsvd.data.sources.layouts import read_split_json
    from medclipsvd.data.limits import read_list_text
    from medclipsvd.errors import DataError

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [["a.png", 0, "a"]] * 3, "val": [["b.png", 1, "b"]], "test": []}))
    assert sum(map(len, read_split_json(split).values())) == 4
    monkeypatch.setenv("MEDCLIPSVD_MAX_SPLIT_ENTRIES", "3")
    with pytest.raises(DataError, match=r"split\.json: split file has 4 entries, above the limit of 3"):
        read_split_json(split)
    monkeypatch.setenv("MEDCLIPSVD_MAX_SPLIT_BYTES", "10")
    with pytest.raises(DataError, match=r"split\.json: split file is \d+ bytes, above the limit of 10 bytes"):
        read_split_json(split)
    (tmp_path / "classnames.txt").write_text("n01 tench\n" * 5)
    with pytest.raises(DataError, match=r"classnames\.txt: class list is 50 bytes, above the limit of 10 bytes"):
        read_list_text(tmp_path / "classnames.txt", "class list")
    with pytest.raises(DataError, match=r"is a folder, not a split file"):
        read_split_json(tmp_path)
