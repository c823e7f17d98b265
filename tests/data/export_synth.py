"""A PACS-style study export written by pydicom: CT series plus the objects that travel with them (RT
structure sets, dose grids and plans, segmentations, structured reports, key objects, presentation states,
directory files, localizers, secondary captures, derived series), with PatientID / StudyInstanceUID set."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from volume_synth import PATIENT, write_series, write_slice

# kind -> (SOP Class UID, Modality, pixel data?)
OBJECTS = {
    "rtstruct": ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", False),
    "rtdose": ("1.2.840.10008.5.1.4.1.1.481.2", "RTDOSE", True),
    "rtplan": ("1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN", False),
    "seg": ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", True),
    "sr": ("1.2.840.10008.5.1.4.1.1.88.33", "SR", False),
    "ko": ("1.2.840.10008.5.1.4.1.1.88.59", "KO", False),
    "pr": ("1.2.840.10008.5.1.4.1.1.11.1", "PR", False),
    "dirfile": ("1.2.840.10008.1.3.10", "", False),
}


def retag(files, **tags) -> None:
    """Set header elements of written files (ImageType, SeriesDescription, SliceThickness, SOPClassUID ...)."""
    import pydicom

    for f in files:
        ds = pydicom.dcmread(str(f))
        for k, v in tags.items():
            setattr(ds, k, v)
            if k == "SOPClassUID":
                ds.file_meta.MediaStorageSOPClassUID = v
        ds.save_as(str(f), enforce_file_format=True)


def write_object(path: Path, kind: str, *, patient_id: str = PATIENT["PatientID"], study: str = "1.2.826.0.1.5",
                 series: str | None = None, frames: int = 3) -> Path:
    """One non-image object (``OBJECTS``); dose grids and segmentations carry multi-frame pixel data and
    plane positions, as real ones do (they used to become training images)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop, modality, pixels = OBJECTS[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    if modality:
        ds.Modality = modality
    for k, v in {**PATIENT, "PatientID": patient_id}.items():
        setattr(ds, k, v)
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or generate_uid()
    if pixels:
        ds.Rows, ds.Columns, ds.NumberOfFrames = 6, 7, frames
        ds.ImagePositionPatient = ["0", "0", "-50"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["0.8", "0.8"]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ones((frames, 6, 7), np.uint16).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def write_ct(folder: Path, *, patient_id: str, study: str, uid: str, n: int = 4, thickness: float | None = None,
             description: str = "AXIAL 2MM", image_type=("ORIGINAL", "PRIMARY", "AXIAL"), step: float = 2.0,
             **kw) -> list[Path]:
    files = write_series(folder, n=n, uid=uid, step=step, phi={**PATIENT, "PatientID": patient_id}, **kw)
    retag(files, StudyInstanceUID=study, SeriesDescription=description, ImageType=list(image_type),
          SliceThickness=f"{thickness if thickness is not None else step:g}")
    return files


def write_localizer(folder: Path, *, patient_id: str, study: str, uid: str) -> list[Path]:
    """A 3-plane scout: three single images in three orientations under one series UID."""
    out = []
    for i, ori in enumerate([(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), (0, 1, 0, 0, 0, -1)]):
        out.append(write_slice(folder / f"LOC{i}.dcm", np.zeros((6, 7)), (0.0, 0.0, 0.0), tuple(map(float, ori)),
                               uid=uid, phi={**PATIENT, "PatientID": patient_id}))
    retag(out, StudyInstanceUID=study, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], SeriesDescription="SCOUT")
    return out


def write_secondary_capture(path: Path, *, patient_id: str, study: str) -> Path:
    f = write_slice(path, np.zeros((6, 7)), (0.0, 0.0, 0.0), uid="1.2.826.0.1.77." + str(abs(hash(str(path))) % 997),
                    phi={**PATIENT, "PatientID": patient_id})
    retag([f], SOPClassUID="1.2.840.10008.5.1.4.1.1.7", StudyInstanceUID=study, ImageType=["DERIVED", "SECONDARY"])
    return f


def write_study(folder: Path, *, patient_id: str, study: str, uid: str, extras=("rtstruct", "rtdose", "sr"),
                localizer: bool = True) -> Path:
    """``folder/ct`` (a 4-slice CT) with ``extras`` beside it (``folder/<kind>.dcm``) and a 3-plane localizer
    in ``folder/scout``. Returns the CT series folder."""
    write_ct(folder / "ct", patient_id=patient_id, study=study, uid=uid)
    for kind in extras:
        name = "DIRFILE" if kind == "dirfile" else f"{kind}.dcm"
        write_object(folder / name, kind, patient_id=patient_id, study=study)
    if localizer:
        write_localizer(folder / "scout", patient_id=patient_id, study=study, uid=uid + ".9")
    return folder / "ct"
