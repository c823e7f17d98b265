"""A CT series with a mask drawn on it: a DICOM SEG (highdicom writes it) or an RTSTRUCT (pydicom), at voxels
the test chooses, so expected planes and boxes come from numpy on the known mask.

The series is ``volume_synth.write_series`` (slice j at ``-50 * normal + j * step * normal``, voxel
(j, row, col) at ``position_j + col * 0.8 * r + row * 0.8 * c``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from export_synth import retag
from volume_synth import AXIAL, PATIENT, write_series

SPACING = 0.8
FRAME_OF_REFERENCE = "1.2.826.0.1.99.77"


def write_ct(folder: Path, n: int = 8, rows: int = 10, cols: int = 12, *, uid: str = "1.2.826.0.1.99.1",
             orientation=AXIAL, step: float = 2.0, **kw) -> list[Path]:
    """A CT series whose files carry what a SEG's source images need (frame of reference, study, dates)."""
    files = write_series(folder, n=n, rows=rows, cols=cols, uid=uid, orientation=orientation, step=step,
                         names="ordered", **kw)
    retag(files, FrameOfReferenceUID=FRAME_OF_REFERENCE, StudyID="1", StudyDate="20240101", StudyTime="120000",
          ReferringPhysicianName="", AccessionNumber=PATIENT["AccessionNumber"], PatientSex="O",
          SeriesNumber="1", Manufacturer="synth", PositionReferenceIndicator="", SliceThickness=f"{step:g}")
    return files


def _datasets(files):
    import pydicom

    return [pydicom.dcmread(str(f)) for f in files]


def write_seg(path: Path, ct_files: list[Path], mask: np.ndarray, *, shift_mm=(0.0, 0.0, 0.0),
              fractional: bool = False, labels=("lesion",)) -> Path:
    """A SEG of ``mask`` (slices, rows, cols) in ``ct_files`` order (slice j = ct_files[j]); with several
    ``labels`` ``mask`` is a label map (value i = segment i, labelled labels[i - 1]); ``shift_mm`` moves every
    frame's position afterwards (a mask that lies elsewhere)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = _datasets(ct_files)
    descs = [hd.seg.SegmentDescription(
        segment_number=i, segment_label=name, segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for i, name in enumerate(labels, start=1)]
    pixels = mask.astype(np.float32 if fractional else (np.uint8 if len(labels) > 1 else bool))
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=100, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="synth", manufacturer_model_name="synth", software_versions="0",
        device_serial_number="0", omit_empty_frames=False)
    if any(shift_mm):
        for frame in seg.PerFrameFunctionalGroupsSequence:
            pp = frame.PlanePositionSequence[0]
            pp.ImagePositionPatient = [float(v) + s for v, s in zip(pp.ImagePositionPatient, shift_mm)]
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(str(path))
    assert pydicom.dcmread(str(path)).Modality == "SEG"
    return path


def write_rtstruct(path: Path, ct_files: list[Path], rois: list[list[tuple[int, np.ndarray]]], *,
                   series_uid: str | None = None) -> Path:
    """An RTSTRUCT: each ROI a list of (slice j, polygon (m, 2) of (row, col) pixel coordinates) contours,
    written in patient millimetres on ct_files[j]'s plane."""
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sources = _datasets(ct_files)
    sop = "1.2.840.10008.5.1.4.1.1.481.3"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.StudyInstanceUID = sources[0].StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ser = Dataset()
    ser.SeriesInstanceUID = series_uid or sources[0].SeriesInstanceUID
    ser.ContourImageSequence = Sequence([_image_ref(s) for s in sources])
    study = Dataset()
    study.ReferencedSOPInstanceUID = sources[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([ser])
    frame = Dataset()
    frame.FrameOfReferenceUID = FRAME_OF_REFERENCE
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    structure, contours = [], []
    for n, roi in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber, item.ROIName = n, f"roi{n}"
        structure.append(item)
        rc = Dataset()
        rc.ReferencedROINumber = n
        seq = []
        for j, poly in roi:
            s = sources[j]
            ipp = np.array(s.ImagePositionPatient, dtype=float)
            ori = np.array(s.ImageOrientationPatient, dtype=float)
            pts = ipp + np.outer(poly[:, 1] * SPACING, ori[:3]) + np.outer(poly[:, 0] * SPACING, ori[3:])
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
            c.ContourImageSequence = Sequence([_image_ref(s)])
            seq.append(c)
        rc.ContourSequence = Sequence(seq)
        contours.append(rc)
    ds.StructureSetROISequence = Sequence(structure)
    ds.ROIContourSequence = Sequence(contours)
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def _image_ref(s):
    from pydicom.dataset import Dataset

    ref = Dataset()
    ref.ReferencedSOPClassUID = s.SOPClassUID
    ref.ReferencedSOPInstanceUID = s.SOPInstanceUID
    return ref


def square(r0: float, r1: float, c0: float, c1: float) -> np.ndarray:
    """A rectangle's corners in (row, col) pixel coordinates."""
    return np.array([(r0, c0), (r0, c1), (r1, c1), (r1, c0)], dtype=float)
