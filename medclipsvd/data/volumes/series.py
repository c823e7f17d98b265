"""Finding the 3-D volumes of a folder or a sample path: DICOM series (any depth), enhanced multi-frame
DICOMs and NIfTI files, from their headers only (``read`` decodes them).

* **Finding series.** pydicom reads the *headers* of the DICOM files of a folder (never the pixels here;
  of the patient tags only PatientID and StudyInstanceUID, turned at once into salted pseudonyms). Files are grouped per folder by SeriesInstanceUID; files whose UID is empty or
  absent (real exports do this) are grouped by a geometry signature instead (modality, series number,
  matrix, orientation). A group of two or more files with ImagePositionPatient/ImageOrientationPatient is a
  series; single files and files without geometry stay 2-D images, read as before.
* **Ordering.** Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product
  of the two ImageOrientationPatient directions) - never by file name or InstanceNumber, which exports get
  wrong. Duplicated or missing positions, irregular steps and mixed orientation, pixel spacing or matrix
  within a series are errors that name the folder and the files.

Addressing: a sample's path is the series folder, ``<folder>#series=<key>`` when a folder holds several
series (key: a short hash, not the UID), a NIfTI file, or a multi-frame DICOM file. Messages name folders,
files, modality and geometry only."""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medclipsvd.errors import DataError

SERIES_SEP = "#series="
HEADER_TAGS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "Rows", "Columns", "ImagePositionPatient",
               "ImageOrientationPatient", "PixelSpacing", "NumberOfFrames", "WindowCenter", "WindowWidth",
               "SamplesPerPixel", "RescaleSlope", "RescaleIntercept")
# read for series selection and patient grouping (selection.py); PatientID/StudyInstanceUID leave read_header
# only as salted pseudonyms, SeriesDescription is matched against a filter and never shown
SELECT_TAGS = ("SOPClassUID", "ImageType", "SeriesDescription", "SliceThickness", "PatientID", "StudyInstanceUID")


@dataclass(frozen=True)
class SliceHeader:
    """The geometry of one DICOM file (no patient data)."""

    file: str
    group: str  # per-folder series key (UID, or a geometry signature when the UID is empty)
    modality: str
    rows: int
    cols: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    frames: int
    window: tuple[float, float] | None
    sop: str = ""  # SOP Class UID
    image_type: tuple[str, ...] = ()
    description: str = ""  # SeriesDescription: for the series filter only, never printed
    thickness: float | None = None
    patient: str = ""  # pseudonym of PatientID (pseudonyms.py), "" when absent
    study: str = ""  # pseudonym of StudyInstanceUID
    error: str = ""  # the one-line reason when the file's header cannot be used (then group = "bad:<file>")


@dataclass(frozen=True)
class SeriesRef:
    """A found volume: ``path`` is what a ``Sample`` stores; ``files`` are in slice order (series)."""

    path: str
    kind: str  # series | nifti | multiframe
    files: tuple[str, ...] = ()
    modality: str = ""
    n_slices: int = 0
    window: tuple[float, float] | None = None
    step: float | None = None  # slice step along the normal (mm), series only
    patient: str = ""  # pseudonym of the headers' PatientID ("" when absent: folder names decide)
    study: str = ""  # pseudonym of StudyInstanceUID
    thickness: float | None = None  # SliceThickness, else the step


# ------------------------------------------------------------------------------------------- headers
def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n and all(np.isfinite(vals)) else None


def _words(value) -> tuple[str, ...]:
    """A multi-valued code string (one value arrives as a plain string) as upper-case words."""
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, (str, bytes)) else list(value)
    return tuple(str(v).strip().upper() for v in values)


def read_header(path: str, keep_errors: bool = False) -> SliceHeader:
    """Geometry tags of one DICOM file (DataError naming the file if it is not DICOM). ``keep_errors``: a
    readable file whose rescale blanks it comes back with ``error`` set (its series is refused, naming it)."""
    import pydicom

    from medclipsvd.data.pseudonyms import pseudonym

    from medclipsvd.data.readers.dicom import _first, _quiet_pydicom, check_rescale

    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                 specific_tags=list(HEADER_TAGS + SELECT_TAGS))
            uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
            modality = str(ds.get("Modality", "") or "").strip().upper()
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            pos = _floats(ds.get("ImagePositionPatient"), 3) if "ImagePositionPatient" in ds else None
            ori = _floats(ds.get("ImageOrientationPatient"), 6) if "ImageOrientationPatient" in ds else None
            sp = _floats(ds.get("PixelSpacing"), 2) if "PixelSpacing" in ds else None
            try:
                frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
            except (TypeError, ValueError):
                frames = 1
            number = str(ds.get("SeriesNumber", "") or "")
            win = None
            if "WindowCenter" in ds and "WindowWidth" in ds:
                c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
                if c is not None and w is not None and np.isfinite(c) and np.isfinite(w) and w > 0:
                    win = (w, c)
            slope, inter = _first(ds.get("RescaleSlope", 1.0)), _first(ds.get("RescaleIntercept", 0.0))
            sop = str(ds.get("SOPClassUID", "") or "").strip()
            itype = _words(ds.get("ImageType"))
            desc = str(ds.get("SeriesDescription", "") or "")
            thick = _first(ds.get("SliceThickness"))
            patient = pseudonym(str(ds.get("PatientID", "") or ""), "patient")
            study = pseudonym(str(ds.get("StudyInstanceUID", "") or ""), "study")
    except Exception as exc:  # message withheld: pydicom's can quote element values
        raise DataError(f"{path}: not a readable DICOM file (pydicom: {type(exc).__name__}).") from None
    # SimpleITK applies the rescale of every slice of a series: a blanking one is refused here, naming the file
    error = ""
    try:
        check_rescale(path, 1.0 if slope is None else slope, 0.0 if inter is None else inter)
    except DataError as exc:
        if not keep_errors:
            raise
        error = str(exc)
    if uid:
        group = "uid:" + uid
    else:  # empty UIDs: files of one folder that look alike form one series
        sig = (modality, number, rows, cols, tuple(round(v, 3) for v in ori) if ori else None)
        group = "sig:" + repr(sig)
    thick = thick if thick is not None and np.isfinite(thick) and thick > 0 else None
    return SliceHeader(path, group, modality, rows, cols, pos, ori, sp, frames, win, sop, itype, desc, thick,
                       patient, study, error)


def _key(group: str) -> str:
    return hashlib.sha1(group.encode("utf-8")).hexdigest()[:10]


def _is_dicom(p: Path) -> bool:
    from medclipsvd.data.readers.formats import DICOM_EXTS, file_kind

    name = p.name.lower()
    if name.startswith(".") or name == "dicomdir":
        return False
    return os.path.splitext(name)[1] in DICOM_EXTS or (not os.path.splitext(name)[1] and file_kind(p) == "dicom")


def _stamp(folder: str) -> tuple:
    try:
        entries = sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(folder) if e.is_file())
    except OSError:
        entries = []
    return tuple(entries)


@functools.lru_cache(maxsize=256)
def _folder_groups(folder: str, stamp: tuple) -> tuple[tuple[str, tuple[SliceHeader, ...]], ...]:
    """DICOM headers of the files directly in ``folder``, grouped by series key (cached per folder state)."""
    groups: dict[str, list[SliceHeader]] = {}
    for name, *_ in stamp:
        p = Path(folder) / name
        if _is_dicom(p):
            try:
                h = read_header(str(p), keep_errors=True)
            except DataError as exc:  # listed with its reason by the survey (selection.py), not the end of the scan
                h = SliceHeader(str(p), "bad:" + str(p), "", 0, 0, None, None, None, 1, None, error=str(exc))
            groups.setdefault(h.group, []).append(h)
    return tuple((g, tuple(hs)) for g, hs in groups.items())


def folder_groups(folder: str) -> list[tuple[str, list[SliceHeader]]]:
    return [(g, list(hs)) for g, hs in _folder_groups(os.fspath(folder), _stamp(os.fspath(folder)))]


def _is_series(headers: list[SliceHeader]) -> bool:
    return len(headers) >= 2 and any(h.position is not None for h in headers) and all(h.frames == 1 for h in headers)


def _describe(folder: str, i: int, n: int, headers: list[SliceHeader]) -> str:
    mod = headers[0].modality or "unknown modality"
    which = f"series {i + 1} of {n}, " if n > 1 else ""
    return f"{folder} ({which}{mod}, {len(headers)} files)"


def order_series(headers: list[SliceHeader], where: str) -> list[SliceHeader]:
    """Slice order by position along the normal; DataError for anything that is not one regular stack."""
    no_geo = [h for h in headers if h.position is None or h.orientation is None]
    if no_geo:
        raise DataError(f"{where}: {len(no_geo)} file(s) lack ImagePositionPatient/ImageOrientationPatient (first: "
                        f"{Path(no_geo[0].file).name}), so the slices cannot be ordered; re-export the series with "
                        f"geometry, or remove those files.")
    ori = np.array([h.orientation for h in headers])
    if np.abs(ori - ori[0]).max() > 1e-3:
        bad = headers[int(np.abs(ori - ori[0]).max(axis=1).argmax())]
        raise DataError(f"{where}: inconsistent ImageOrientationPatient within the series ({Path(headers[0].file).name} "
                        f"vs {Path(bad.file).name}); split the files into one folder per orientation.")
    shapes = {(h.rows, h.cols, h.spacing) for h in headers}
    if len(shapes) > 1:
        raise DataError(f"{where}: inconsistent matrix size or PixelSpacing within the series ({len(shapes)} "
                        f"different); a series must be one regular stack - split or resample the files.")
    r, c = np.array(ori[0][:3]), np.array(ori[0][3:])
    normal = np.cross(r, c)
    if np.linalg.norm(normal) < 0.5:
        raise DataError(f"{where}: ImageOrientationPatient does not hold two orthogonal directions; the "
                        f"series geometry is broken - re-export it.")
    pos = np.array([np.dot(h.position, normal) for h in headers])
    order = np.argsort(pos, kind="stable")
    hs = [headers[i] for i in order]
    z = pos[order]
    steps = np.diff(z)
    dup = np.nonzero(steps < 1e-3)[0]
    if len(dup):
        i = int(dup[0])
        raise DataError(f"{where}: duplicated slice position {z[i]:.2f} mm ({Path(hs[i].file).name} and "
                        f"{Path(hs[i + 1].file).name}); remove the duplicate file (or split two series that "
                        f"share a folder and a UID).")
    med = float(np.median(steps))
    gap = np.nonzero(steps > 1.5 * med)[0]
    if len(gap):
        i = int(gap[0])
        raise DataError(f"{where}: missing slice(s) between {Path(hs[i].file).name} and {Path(hs[i + 1].file).name} "
                        f"(gap {steps[i]:.2f} mm, usual step {med:.2f} mm); restore the missing files or re-export "
                        f"the full series.")
    if np.abs(steps - med).max() > 0.1 * med + 0.01:
        raise DataError(f"{where}: inconsistent slice spacing ({steps.min():.2f}..{steps.max():.2f} mm); a series "
                        f"must have regular steps - resample it (or export it as NIfTI).")
    return hs


def _normal(h: SliceHeader) -> np.ndarray:
    return np.cross(np.array(h.orientation[:3]), np.array(h.orientation[3:]))


def _series_ref(path: str, headers: list[SliceHeader], where: str) -> SeriesRef:
    ordered = order_series(headers, where)
    z = [float(np.dot(h.position, _normal(ordered[0]))) for h in ordered]
    step = float(np.median(np.diff(z)))
    mid = ordered[len(ordered) // 2]
    return SeriesRef(path, "series", tuple(h.file for h in ordered), headers[0].modality, len(headers),
                     mid.window, step, _common(h.patient for h in headers), _common(h.study for h in headers),
                     mid.thickness or step)


def _common(values) -> str:
    """The most frequent non-empty value (a pseudonym), "" when none."""
    from collections import Counter

    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""


def _nifti_size(path: str) -> tuple[int, ...]:
    """A NIfTI file's dimensions from its header (nothing decoded)."""
    import SimpleITK as sitk

    from medclipsvd.data.readers.common import check_file

    check_file(path)
    r = sitk.ImageFileReader()
    r.SetFileName(path)
    try:
        r.ReadImageInformation()
    except RuntimeError:
        raise DataError(f"{path}: not a readable NIfTI file; check that it is complete (.nii or .nii.gz).") from None
    return tuple(int(n) for n in r.GetSize())


def _nifti_depth(path: str) -> int:
    size = _nifti_size(path)
    return int(size[2]) if len(size) >= 3 else 1


def check_extent(ref: SeriesRef) -> None:
    """Refuse, from the headers alone, a volume with more voxels than MEDCLIPSVD_MAX_VOLUME_VOXELS: it is
    decoded whole (a compressed series or multi-frame file can claim far more than memory holds)."""
    from medclipsvd.data.readers.common import check_volume_size

    if ref.kind == "nifti":
        dims = _nifti_size(ref.path)  # every dimension: a 4-D file is decoded whole before its first volume is taken
    else:
        h = read_header(ref.files[0] if ref.kind == "series" else ref.path)
        dims = (len(ref.files) if ref.kind == "series" else h.frames, h.rows, h.cols)
    check_volume_size(ref.path, dims)


def is_volume_file(path: str) -> bool:
    """A NIfTI file with more than one slice (2-D NIfTI stays a 2-D image)."""
    from medclipsvd.data.readers.formats import file_kind

    return file_kind(path) == "nifti" and _nifti_depth(path) > 1


def walk(folder: str | os.PathLike):
    """``os.walk`` of ``folder`` that enters symlinked sub-folders (each real folder once: no loops) and skips
    hidden ones. Whether a link may lead out of the data root is the RootGuard's decision, taken before."""
    seen = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        keep = []
        for d in dirnames:
            real = os.path.realpath(os.path.join(dirpath, d))
            if not d.startswith(".") and real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        yield dirpath, dirnames, filenames


