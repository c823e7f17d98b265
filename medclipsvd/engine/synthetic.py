"""Synthetic hospital-style datasets for the demo and tests: a folder of class folders with one sub-folder
per (fake) patient, images as DICOM (12-bit, with recognisably fake patient tags) and PNG.

The classes differ in texture (a bright round lesion, stripes, smooth tissue), so an adapted model can
learn them; nothing here is medical data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("round_lesion", "striated_tissue", "smooth_tissue")
# Recognisably fake identifiers: the demo checks that none of them appears in any output.
FAKE_TAGS = {
    "PatientName": "FAKE^DEMO^PATIENT{n:03d}",
    "PatientID": "FAKEID-{n:05d}",
    "PatientBirthDate": "19000101",
    "StudyDate": "19000102",
    "AccessionNumber": "FAKEACC{n:05d}",
    "InstitutionName": "Nowhere Demo Hospital",
}


def fake_tag_values(n_patients: int) -> list[str]:
    """Every fake identifying value written, for leak checks."""
    vals = set()
    for n in range(n_patients):
        for tpl in FAKE_TAGS.values():
            v = tpl.format(n=n)
            vals.add(v)
            if "^" in v:
                vals.add(v.replace("^", " "))
    return sorted(vals)


def _image(cls: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """float image in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 0.3 + 0.1 * rng.standard_normal((size, size))
    if cls == "round_lesion":
        cy, cx = rng.uniform(0.3, 0.7, 2)
        r = rng.uniform(0.12, 0.2)
        base += 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    elif cls == "striated_tissue":
        theta = rng.uniform(0, np.pi)
        freq = rng.uniform(6, 10)
        base += 0.3 * np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 6.3))
    else:
        low = rng.standard_normal((4, 4))
        up = np.kron(low, np.ones((size // 4, size // 4)))
        base += 0.08 * up
    return np.clip(base, 0, 1)


def _write_dicom(path: Path, img: np.ndarray, patient: int) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.round(img * 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for tag, tpl in FAKE_TAGS.items():
        setattr(ds, tag, tpl.format(n=patient))
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_synthetic_dataset(root: str | Path, patients_per_class: int = 10, images_per_patient: int = 2,
                            size: int = 64, seed: int = 0, classes=CLASSES, dicom_fraction: float = 0.5) -> Path:
    """<root>/<class>/case_<n>/img_<i>.{dcm,png}; returns root. Patient folders keep a patient's images in
    one split when the data layer computes a grouped split."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    n = 0
    for cls in classes:
        for _ in range(patients_per_class):
            pdir = root / cls / f"case_{n:03d}"
            pdir.mkdir(parents=True, exist_ok=True)
            for i in range(images_per_patient):
                img = _image(cls, rng, size)
                if rng.uniform() < dicom_fraction:
                    _write_dicom(pdir / f"img_{i}.dcm", img, n)
                else:
                    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(pdir / f"img_{i}.png")
            n += 1
    return root
