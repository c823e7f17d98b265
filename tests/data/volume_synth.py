"""Synthetic DICOM series and NIfTI volumes with known HU values (pydicom / nibabel write them).

Slice j of a series (j = order along the slice normal, 0 = lowest) holds ``hu(j, rows, cols)``; the files
can be named, numbered and ordered to mislead, so readers must order by geometry."""
from __future__ import annotations

from pathlib import Path

import numpy as np

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows +y (posterior), columns -z (down): normal -x
PATIENT = {"PatientName": "Ozymandias^Thistlewood", "PatientID": "PHI-SERIES-424242",
           "PatientBirthDate": "19270704", "AccessionNumber": "ACC31415926"}
PATIENT_NEEDLES = ["Ozymandias", "Thistlewood", "PHI-SERIES-424242", "19270704", "ACC31415926"]


def slice_hu(j: int, rows: int, cols: int) -> np.ndarray:
    """Slice j: constant -500 + 100 j, with one marker voxel (row 0, col 1) at +1000 to check orientation."""
    a = np.full((rows, cols), -500.0 + 100.0 * j)
    a[0, 1] = 1000.0
    return a


def write_slice(path: Path, hu: np.ndarray, position, orientation=AXIAL, *, uid: str | None = "1.2.826.0.1.99.1",
                modality: str = "CT", spacing=(0.8, 0.8), slope: float = 1.0, intercept: float = -1024.0,
                instance: int = 1, window=None, phi: dict | None = None) -> Path:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = uid if uid is not None else ""
    ds.StudyInstanceUID = "" if uid in (None, "") else uid + ".0"
    ds.InstanceNumber = instance
    for k, v in (phi or PATIENT).items():
        setattr(ds, k, v)
    stored = np.round((np.asarray(hu, dtype=np.float64) - intercept) / slope).astype(np.int16)
    ds.Rows, ds.Columns = stored.shape
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if window is not None:
        ds.WindowWidth, ds.WindowCenter = f"{window[0]:g}", f"{window[1]:g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = stored.tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def write_series(folder: Path, n: int = 6, rows: int = 6, cols: int = 7, step: float = 2.0, *,
                 orientation=AXIAL, tilt_mm: float = 0.0, names: str = "shuffled", skip: int | None = None,
                 duplicate: bool = False, uid: str | None = "1.2.826.0.1.99.1", modality: str = "CT",
                 prefix: str = "IMG", hu=slice_hu, seed: int = 0, **kw) -> list[Path]:
    """n slices at normal positions j*step (j = 0..n-1), named so that name order != slice order.

    names: "shuffled" (random names), "reversed" (name order = descending position), "ordered".
    tilt_mm: in-plane shift per slice along the column direction (gantry tilt). skip: leave out slice j.
    duplicate: write slice 1's position twice."""
    if "phi" not in kw:  # each series folder its own patient, as a PACS export would give distinct PatientIDs
        import hashlib

        kw["phi"] = {**PATIENT, "PatientID": PATIENT["PatientID"] + "-" + hashlib.sha1(str(folder).encode()).hexdigest()[:8]}
    r, c = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(r, c)
    js = [j for j in range(n) if j != skip]
    order = {"ordered": js, "reversed": js[::-1],
             "shuffled": list(np.random.default_rng(seed).permutation(js))}[names]
    out = []
    for rank, j in enumerate(order):
        pos = -50.0 * normal + j * step * normal + j * tilt_mm * c
        out.append(write_slice(folder / f"{prefix}{rank:03d}.dcm", hu(j, rows, cols), pos, orientation, uid=uid,
                               modality=modality, instance=1, **kw))
    if duplicate:
        pos = -50.0 * normal + 1 * step * normal
        out.append(write_slice(folder / f"{prefix}dup.dcm", hu(1, rows, cols), pos, orientation, uid=uid,
                               modality=modality, **kw))
    return out


def write_nifti(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([*spacing, 1.0])), str(path))
    return path


def write_multiframe(path: Path, n: int = 5, rows: int = 6, cols: int = 7, step: float = 2.0,
                     slopes=None, reverse: bool = True) -> Path:
    """Enhanced CT multi-frame: per-frame plane positions and per-frame rescale (frame order reversed)."""
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

    slopes = slopes or [(1.0, 2.0, 4.0)[j % 3] for j in range(n)]  # exact in int16 for slice_hu values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    po, pm = Dataset(), Dataset()
    po.ImageOrientationPatient = list(AXIAL)
    pm.PixelSpacing = [0.8, 0.8]
    pm.SliceThickness = step
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, per = [], []
    js = list(range(n))[::-1] if reverse else list(range(n))
    for j in js:
        f = Dataset()
        pp, pv = Dataset(), Dataset()
        pp.ImagePositionPatient = [0.0, 0.0, j * step]
        pv.RescaleSlope, pv.RescaleIntercept, pv.RescaleType = slopes[j], -1024.0, "HU"
        f.PlanePositionSequence = Sequence([pp])
        f.PixelValueTransformationSequence = Sequence([pv])
        per.append(f)
        frames.append(np.round((slice_hu(j, rows, cols) + 1024.0) / slopes[j]).astype(np.int16))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = np.stack(frames).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def strip_preamble(path, *, keep_meta: bool):
    """Rewrite a DICOM file without the 128-byte preamble and 'DICM' (with its file meta group, or as a bare
    implicit-VR data set, as old ACR-NEMA style exports are), under a name without extension."""
    import io

    import pydicom
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    ds = pydicom.dcmread(path)
    out = path.with_suffix("")
    if keep_meta:
        ds.preamble = None
        pydicom.dcmwrite(out, ds, enforce_file_format=False)
    else:
        del ds.file_meta
        buf = io.BytesIO()
        fp = DicomFileLike(buf)
        fp.is_little_endian, fp.is_implicit_VR = True, True
        write_dataset(fp, ds)
        out.write_bytes(buf.getvalue())
    assert out.read_bytes()[128:132] != b"DICM"
    path.unlink()
    return out
