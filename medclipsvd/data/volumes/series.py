"""Finding the 3-D volumes of a folder or a sample path: DICOM series (any depth), enhanced multi-frame
DICOMs and NIfTI files, from their headers only (``read`` decodes them).

* **Finding series.** GDCM's Scanner (pydicom for what it cannot give identically: gdcm_headers.py) reads the
  *headers* of the DICOM files of a folder (never the pixels here; of the patient tags only PatientID and
  StudyInstanceUID, turned at once into salted pseudonyms). Files are grouped per folder by SeriesInstanceUID;
  files whose UID is empty or absent (real exports do this) are grouped by a geometry signature instead
  (modality, series number, matrix, orientation). A group of two or more files with ImagePositionPatient/ImageOrientationPatient is a
  series; single files and files without geometry stay 2-D images, read as before.
* **Ordering.** Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product
  of the two ImageOrientationPatient directions) - never by file name or InstanceNumber, which exports get
  wrong. Variable slice spacing and gantry tilt are resampled when read (``geometry``); duplicated
  positions, a missing slice in a regular stack and mixed orientation, pixel spacing or matrix within a
  series are errors that name the folder and the files.
* **One series, one volume.** A series split across folders (same SeriesInstanceUID and patient) is one
  volume (``series_units``); a 4-D series (DCE time points, DWI b-values: positions repeated, told apart by
  PHASE_TAGS) and a 4-D NIfTI are one volume per phase.

Addressing: a sample's path is the series folder, ``<folder>#series=<key>`` when a folder holds several
series (key: a short hash, not the UID) or for a series split across sub-folders of ``<folder>``, a NIfTI
file, or a multi-frame DICOM file; ``@t<k>`` after the key picks phase k (0-based) of a 4-D series, and
``<file.nii.gz>#series=@t<k>`` volume k of a 4-D NIfTI. Messages name folders,
files, modality and geometry only."""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medclipsvd.data.volumes.geometry import StackGeometry, stack_geometry
from medclipsvd.errors import DataError

SERIES_SEP = "#series="
PHASE_SEP = "@t"  # <folder>#series=<key>@t<k>: phase k of a 4-D series; <file.nii>#series=@t<k>: volume k
# what tells the phases of a 4-D series apart (DCE: temporal position; DWI: b-value), tried in this order
PHASE_TAGS = ("TemporalPositionIdentifier", "DiffusionBValue", "TriggerTime", "AcquisitionNumber")
HEADER_TAGS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "Rows", "Columns", "ImagePositionPatient",
               "ImageOrientationPatient", "PixelSpacing", "NumberOfFrames", "WindowCenter", "WindowWidth",
               "SamplesPerPixel", "RescaleSlope", "RescaleIntercept", *PHASE_TAGS)
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
    phase: tuple[str, ...] = ()  # values of PHASE_TAGS


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
    geometry: StackGeometry | None = None  # series only: the grid (resampled when irregular or tilted)
    phase: int | None = None  # 4-D: which phase (DICOM) or volume (NIfTI) this sample is


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
    readable file whose rescale blanks it comes back with ``error`` set (its series is refused, naming it).
    Cached per file state, as reading a series asks again for headers its discovery has read."""
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (-1, -1)
    from medclipsvd.data.pseudonyms import SALT_ENV

    # the pseudonyms in a header depend on the salt: a changed salt is a new cache entry
    salt = (os.environ.get(SALT_ENV), os.environ.get("XDG_CONFIG_HOME"))
    return _read_header(os.fspath(path), (*stamp, *salt), keep_errors)


@functools.cache
def _wanted_tags() -> dict:
    """HEADER_TAGS and SELECT_TAGS by tag number (resolving keywords once, not per file and lookup)."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    return {Tag(tag_for_keyword(k)): k for k in dict.fromkeys(HEADER_TAGS + SELECT_TAGS)}


def _past_group_0028(tag, vr, length) -> bool:
    return tag.group > 0x0028


_SCANNED: dict[str, dict[str, str]] = {}  # GDCM's values of the files read_headers is reading (gdcm_headers.py)


@functools.lru_cache(maxsize=8192)
def _read_header(path: str, stamp: tuple, keep_errors: bool) -> SliceHeader:
    from medclipsvd.data.volumes.gdcm_headers import clean

    raw = _SCANNED.get(path)
    v = clean(raw) if raw is not None else None
    f = _gdcm_fields(v) if v is not None else None
    return _header(path, _pydicom_fields(path) if f is None else f, keep_errors)


def read_headers(paths: list[str], keep_errors: bool = False) -> list[SliceHeader | DataError]:
    """read_header of each file (a DataError in its place when it has none): the files are scanned together by
    GDCM first, and pydicom reads each one GDCM cannot give identically (gdcm_headers.py)."""
    from medclipsvd.data.volumes.gdcm_headers import scan

    _SCANNED.update(scan([os.fspath(p) for p in paths], HEADER_TAGS + SELECT_TAGS))
    try:
        out: list[SliceHeader | DataError] = []
        for p in paths:
            try:
                out.append(read_header(p, keep_errors=keep_errors))
            except DataError as exc:
                out.append(exc)
        return out
    finally:
        _SCANNED.clear()


def _pydicom_fields(path: str) -> dict:
    """The header fields of one file as pydicom reads them (DataError naming the file if it is not DICOM)."""
    from pydicom.filereader import read_partial

    from medclipsvd.data.readers.dicom import _first, _quiet_pydicom

    tags = _wanted_tags()
    try:
        with _quiet_pydicom(), open(path, "rb") as fh:
            # the tags needed all lie in groups up to 0028: the private groups and sequences after them (often
            # most of a header) are not parsed; each wanted element is converted once, looked up by tag
            ds = read_partial(fh, stop_when=_past_group_0028, force=True, specific_tags=list(tags))
            v = {tags[e.tag]: e.value for e in ds if e.tag in tags}
            try:
                frames = max(1, int(v.get("NumberOfFrames", 1) or 1))
            except (TypeError, ValueError):
                frames = 1
            both = "WindowCenter" in v and "WindowWidth" in v
            return dict(
                uid=str(v.get("SeriesInstanceUID", "") or "").strip(),
                modality=str(v.get("Modality", "") or "").strip().upper(),
                rows=int(v.get("Rows", 0) or 0), cols=int(v.get("Columns", 0) or 0),
                pos=_floats(v["ImagePositionPatient"], 3) if "ImagePositionPatient" in v else None,
                ori=_floats(v["ImageOrientationPatient"], 6) if "ImageOrientationPatient" in v else None,
                sp=_floats(v["PixelSpacing"], 2) if "PixelSpacing" in v else None,
                frames=frames, number=str(v.get("SeriesNumber", "") or ""),
                center=_first(v["WindowCenter"]) if both else None, width=_first(v["WindowWidth"]) if both else None,
                slope=_first(v.get("RescaleSlope", 1.0)), inter=_first(v.get("RescaleIntercept", 0.0)),
                sop=str(v.get("SOPClassUID", "") or "").strip(), itype=_words(v.get("ImageType")),
                desc=str(v.get("SeriesDescription", "") or ""), thick=_first(v.get("SliceThickness")),
                patient_id=str(v.get("PatientID", "") or ""), study_uid=str(v.get("StudyInstanceUID", "") or ""),
                # b = 0 counts
                phase=tuple("" if x is None else str(x).strip() for x in (v.get(t) for t in PHASE_TAGS)))
    except Exception as exc:  # message withheld: pydicom's can quote element values
        raise DataError(f"{path}: not a readable DICOM file (pydicom: {type(exc).__name__}).") from None


def _gdcm_first(s: str | None) -> float | None:
    if s is None:
        return None
    s = s.split("\\")[0].strip()
    return float(s) if s else None


def _gdcm_fields(v: dict[str, str]) -> dict | None:
    """The header fields of one file's GDCM values (gdcm_headers.clean: checked to read as pydicom reads
    them), None when pydicom must read the file."""
    rows, cols = v.get("Rows", ""), v.get("Columns", "")
    if not all(x == "" or x.isdigit() for x in (rows, cols)):
        return None  # binary US as anything but one number

    def num(k, n):
        return _floats(v[k].split("\\"), n) if k in v else None

    frames = v.get("NumberOfFrames", "").strip()
    both = "WindowCenter" in v and "WindowWidth" in v
    return dict(
        uid=v.get("SeriesInstanceUID", "").strip(), modality=v.get("Modality", "").strip().upper(),
        rows=int(rows or 0), cols=int(cols or 0),
        pos=num("ImagePositionPatient", 3), ori=num("ImageOrientationPatient", 6), sp=num("PixelSpacing", 2),
        frames=max(1, int(frames)) if frames else 1, number=v.get("SeriesNumber", "").strip(),
        center=_gdcm_first(v["WindowCenter"]) if both else None, width=_gdcm_first(v["WindowWidth"]) if both else None,
        slope=_gdcm_first(v.get("RescaleSlope", "1")), inter=_gdcm_first(v.get("RescaleIntercept", "0")),
        sop=v.get("SOPClassUID", "").strip(), itype=_words(v["ImageType"].split("\\")) if v.get("ImageType") else (),
        desc=v.get("SeriesDescription", ""), thick=_gdcm_first(v.get("SliceThickness")),
        patient_id=v.get("PatientID", ""), study_uid=v.get("StudyInstanceUID", ""),
        phase=tuple(v.get(t, "").strip() for t in PHASE_TAGS))


def _header(path: str, f: dict, keep_errors: bool) -> SliceHeader:
    """A SliceHeader from one file's fields (whichever reader gave them); patient tags become pseudonyms here."""
    from medclipsvd.data.pseudonyms import pseudonym
    from medclipsvd.data.readers.dicom import check_rescale

    c, w = f["center"], f["width"]
    win = (w, c) if c is not None and w is not None and np.isfinite(c) and np.isfinite(w) and w > 0 else None
    slope, inter = f["slope"], f["inter"]
    # SimpleITK applies the rescale of every slice of a series: a blanking one is refused here, naming the file
    error = ""
    try:
        check_rescale(path, 1.0 if slope is None else slope, 0.0 if inter is None else inter)
    except DataError as exc:
        if not keep_errors:
            raise
        error = str(exc)
    ori = f["ori"]
    if f["uid"]:
        group = "uid:" + f["uid"]
    else:  # empty UIDs: files of one folder that look alike form one series
        sig = (f["modality"], f["number"], f["rows"], f["cols"], tuple(round(v, 3) for v in ori) if ori else None)
        group = "sig:" + repr(sig)
    thick = f["thick"]
    thick = thick if thick is not None and np.isfinite(thick) and thick > 0 else None
    return SliceHeader(path, group, f["modality"], f["rows"], f["cols"], f["pos"], ori, f["sp"], f["frames"], win,
                       f["sop"], f["itype"], f["desc"], thick, pseudonym(f["patient_id"], "patient"),
                       pseudonym(f["study_uid"], "study"), error, f["phase"])


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
    files = [str(p) for p in (Path(folder) / name for name, *_ in stamp) if _is_dicom(p)]
    for p, h in zip(files, read_headers(files, keep_errors=True)):
        if isinstance(h, DataError):  # listed with its reason by the survey (selection.py), not the end of the scan
            h = SliceHeader(p, "bad:" + p, "", 0, 0, None, None, None, 1, None, error=str(h))
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
    multi = len({os.path.dirname(h.file) for h in headers}) > 1  # a series split across folders

    def name(h: SliceHeader) -> str:
        return h.file if multi else Path(h.file).name

    pos = np.array([np.dot(h.position, normal) for h in headers])
    order = np.argsort(pos, kind="stable")
    hs = [headers[i] for i in order]
    z = pos[order]
    steps = np.diff(z)
    dup = np.nonzero(steps < 1e-3)[0]
    if len(dup):
        i = int(dup[0])
        raise DataError(f"{where}: duplicated slice position {z[i]:.2f} mm ({name(hs[i])} and {name(hs[i + 1])}); "
                        f"remove the duplicate file (or split two series that share a folder and a UID; a 4-D "
                        f"series needs {' or '.join(PHASE_TAGS[:2])} to tell its phases apart).")
    med = float(np.median(steps))
    gap = _missing_slice(steps, med)
    if gap is not None:
        i = gap
        raise DataError(f"{where}: missing slice(s) between {name(hs[i])} and {name(hs[i + 1])} "
                        f"(gap {steps[i]:.2f} mm, usual step {med:.2f} mm); restore the missing files or re-export "
                        f"the full series.")
    return hs


def _missing_slice(steps: np.ndarray, med: float) -> int | None:
    """The first gap that is a whole multiple (2x, 3x ...) of the usual step between two usual steps: slices
    lost from a regular stack. A spacing that changes and stays changed (4 mm, then 7 or 8 mm) is variable
    spacing, which is resampled (``geometry``), not a loss."""
    tol = 0.1 * med + 0.01
    usual = np.abs(steps - med) <= tol
    for i in np.nonzero(steps > 1.5 * med)[0]:
        k = round(float(steps[i]) / med)
        if abs(steps[i] - k * med) <= k * tol and (i == 0 or usual[i - 1]) and (i == len(steps) - 1 or usual[i + 1]):
            return int(i)
    return None


def _normal(h: SliceHeader) -> np.ndarray:
    return np.cross(np.array(h.orientation[:3]), np.array(h.orientation[3:]))


def _series_ref(path: str, headers: list[SliceHeader], where: str, phase: int | None = None) -> SeriesRef:
    ordered = order_series(headers, where)
    h0, mid = ordered[0], ordered[len(ordered) // 2]
    geo = stack_geometry([h.position for h in ordered], h0.orientation, h0.spacing, where)
    return SeriesRef(path, "series", tuple(h.file for h in ordered), h0.modality, geo.depth, mid.window, geo.step,
                     patient=_common(h.patient for h in headers), study=_common(h.study for h in headers),
                     thickness=mid.thickness or geo.step, geometry=geo, phase=phase)


def _phase_order(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def split_phases(headers: list[SliceHeader]) -> list[list[SliceHeader]] | None:
    """The phases of a 4-D series (DCE time points, DWI b-values: each position acquired several times),
    told apart by the first of PHASE_TAGS that splits the files into stacks of distinct positions, in the
    order of that tag's value; None when no position repeats (or no tag tells the repeats apart)."""
    if len(headers) < 4 or any(h.position is None or h.orientation is None or not h.phase for h in headers):
        return None
    normal = _normal(headers[0])
    z = [round(float(np.dot(h.position, normal)), 2) for h in headers]
    if len(set(z)) == len(z):
        return None
    for i in range(len(PHASE_TAGS)):
        groups: dict[str, list[tuple[float, SliceHeader]]] = {}
        for zz, h in zip(z, headers):
            groups.setdefault(h.phase[i], []).append((zz, h))
        if len(groups) >= 2 and all(len(g) >= 2 and len({zz for zz, _ in g}) == len(g) for g in groups.values()):
            return [[h for _, h in groups[v]] for v in sorted(groups, key=_phase_order)]
    return None


def _series_refs(folder: str, key: str, single: bool, headers: list[SliceHeader], where: str) -> list[SeriesRef]:
    """The volume(s) of one series: one, or one per phase of a 4-D series (``...#series=<key>@t<k>``)."""
    phases = split_phases(headers)
    if phases is None:
        return [_series_ref(folder if single else f"{folder}{SERIES_SEP}{key}", headers, where)]
    n = len(phases)
    return [_series_ref(f"{folder}{SERIES_SEP}{key}{PHASE_SEP}{k}", hs, f"{where} phase t{k} of {n}", k)
            for k, hs in enumerate(phases)]


def _common(values) -> str:
    """The most frequent non-empty value (a pseudonym), "" when none."""
    from collections import Counter

    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""


def _nifti_size(path: str) -> tuple[int, ...]:
    """A NIfTI file's dimensions from its header (nothing decoded)."""
    import SimpleITK as sitk

    from medclipsvd.data.readers.nifti import check_nifti

    check_nifti(path)  # before ITK, which zero-fills short files and guesses around broken headers
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
        dims = _nifti_size(ref.files[0])  # every dimension: a 4-D file is decoded whole before one volume is taken
    else:
        h = read_header(ref.files[0] if ref.kind == "series" else ref.path)
        dims = (max(len(ref.files), ref.n_slices) if ref.kind == "series" else h.frames, h.rows, h.cols)
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




def nifti_phases(path: str) -> int:
    """Volumes in a NIfTI file: the product of its dimensions beyond the third (1 for a 3-D file)."""
    size = _nifti_size(path)
    return int(np.prod(size[3:])) if len(size) > 3 else 1


def nifti_refs(path: str) -> list[SeriesRef]:
    """A 3-D NIfTI is one volume; each volume of a 4-D NIfTI (time points, b-values) is its own sample."""
    depth, n = _nifti_depth(path), nifti_phases(path)
    if n == 1:
        return [SeriesRef(path, "nifti", (path,), "", depth)]
    return [SeriesRef(f"{path}{SERIES_SEP}{PHASE_SEP}{k}", "nifti", (path,), "", depth, phase=k) for k in range(n)]


def series_units(top: str, found: list[tuple[str, str, list[SliceHeader]]]) -> list[tuple[str, str, bool, list, str]]:
    """The series of a tree as (folder, key, alone in its folder, headers, where), from ``found``: the image
    series of each folder as (folder, group, headers). A series whose files lie in several folders (same
    SeriesInstanceUID, same patient: an export split into parts) is one unit, addressed from the folders'
    common ancestor (``<ancestor>#series=<key>``) and listed with that ancestor."""
    by_uid: dict[str, list[int]] = {}
    for i, (_, g, _hs) in enumerate(found):
        if g.startswith("uid:"):
            by_uid.setdefault(g, []).append(i)
    merged: dict[int, list[int]] = {}
    for idx in by_uid.values():
        patients = {h.patient for i in idx for h in found[i][2] if h.patient}
        if len(idx) > 1 and len(patients) <= 1:  # one UID of two patients is not one series: kept apart
            merged[idx[0]] = idx
    skip = {i for idx in merged.values() for i in idx[1:]}
    kept_in: dict[str, list[str]] = {}  # the series left in each folder, in key order (for "series i of n")
    for i, (d, g, _) in enumerate(found):
        if i not in skip and i not in merged:
            kept_in.setdefault(d, []).append(g)
    for groups in kept_in.values():
        groups.sort(key=_key)
    out = []
    for i, (d, g, hs) in enumerate(found):
        if i in skip:
            continue
        if i in merged:
            parts = [found[j][0] for j in merged[i]]
            common = []
            for names in zip(*(Path(os.path.relpath(x, top)).parts for x in parts)):
                if len(set(names)) != 1:
                    break
                common.append(names[0])
            anc = os.path.join(top, *common) if common and common != ["."] else top
            files = [h for j in merged[i] for h in found[j][2]]
            where = (f"{anc} (series split across {len(parts)} folders, {files[0].modality or 'unknown modality'}, "
                     f"{len(files)} files)")
            out.append((anc, _key(g), False, files, where))
        else:
            same = kept_in[d]
            out.append((d, _key(g), len(same) == 1, hs, _describe(d, same.index(g), len(same), hs)))
    out.sort(key=lambda t: t[1])
    return out
