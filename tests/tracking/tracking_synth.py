"""Tiny synthetic hospital datasets for the tracking tests: PNG and DICOM files in class folders, where the
DICOM patient tags hold recognisable fake values (the PHI test searches the MLflow store for them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Fake patient data. Each value is distinctive enough that finding it anywhere means a leak.
PHI = {
    "PatientName": "Zebulon^Quetzalcoatl",
    "PatientID": "PHI-ID-7731904",
    "PatientBirthDate": "19310217",
    "AccessionNumber": "ACC99887766",
    "InstitutionName": "Saint Wilhelmina Infirmary",
    "ReferringPhysicianName": "Drusilla^Fenwickshire",
    "StudyDate": "20190823",
}
# strings to look for in the store and logs (DICOM names are also searched in their "Given Family" form)
PHI_NEEDLES = ["Zebulon", "Quetzalcoatl", "PHI-ID-7731904", "19310217", "ACC99887766", "Wilhelmina",
               "Drusilla", "Fenwickshire"]
CLASSES = ("benign", "malignant")


def _pattern(label: int, i: int, size: int = 40) -> np.ndarray:
    """Class 0: bright disc in the centre; class 1: horizontal stripes. Small noise varies by i."""
    rng = np.random.default_rng(1000 * label + i)
    yy, xx = np.mgrid[:size, :size]
    if label == 0:
        img = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2).astype(np.float32)
    else:
        img = ((yy // 4) % 2).astype(np.float32)
    return np.clip(0.8 * img + 0.1 + 0.05 * rng.standard_normal((size, size)), 0, 1)


def write_png(path: Path, img: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def write_dicom(path: Path, img: np.ndarray, phi: dict | None = None) -> Path:
    """A 16-bit MONOCHROME2 CT-like DICOM with the given patient tags."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    for key, value in (phi or PHI).items():
        setattr(ds, key, value)
    pixels = (img * 4000).astype(np.uint16)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def make_dataset(root: Path, per_split: dict[str, int] | None = None, dicom_every: int = 2) -> Path:
    """root/<split>/<class>/img_<i>.(png|dcm); every `dicom_every`-th image is a DICOM with PHI tags."""
    per_split = per_split or {"train": 4, "val": 1, "test": 3}
    for split, n in per_split.items():
        for label, cls in enumerate(CLASSES):
            for i in range(n):
                img = _pattern(label, 100 * ("train", "val", "test").index(split) + i)
                stem = root / split / cls / f"img_{i}"
                if i % dicom_every == 0:
                    write_dicom(stem.with_suffix(".dcm"), img)
                else:
                    write_png(stem.with_suffix(".png"), img)
    return root
