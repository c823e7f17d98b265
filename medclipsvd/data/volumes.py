"""3-D volumes as samples: DICOM series (any depth), enhanced multi-frame DICOMs and NIfTI files.

* **Finding series.** pydicom reads the *headers* of the DICOM files of a folder (never the pixels here,
  never a patient tag). Files are grouped per folder by SeriesInstanceUID; files whose UID is empty or
  absent (real exports do this) are grouped by a geometry signature instead (modality, series number,
  matrix, orientation). A group of two or more files with ImagePositionPatient/ImageOrientationPatient is a
  series; single files and files without geometry stay 2-D images, read as before.
* **Ordering.** Slices are ordered by ImagePositionPatient projected on the slice normal (the cross product
  of the two ImageOrientationPatient directions) - never by file name or InstanceNumber, which exports get
  wrong. Duplicated or missing positions, irregular steps and mixed orientation, pixel spacing or matrix
  within a series are errors that name the folder and the files.
* **Reading.** SimpleITK (GDCM: uncompressed, JPEG lossless, JPEG 2000, RLE) reads the ordered files with
  Rescale Slope/Intercept applied (HU for CT), keeping spacing, origin and direction; NIfTI files go
  through SimpleITK too. Every volume is reoriented to the closest canonical orientation (``LPS``: the
  array axes run superior, posterior, left), so axial/coronal/sagittal mean the same for every input.

Addressing: a sample's path is the series folder, ``<folder>#series=<key>`` when a folder holds several
series (key: a short hash, not the UID), a NIfTI file, or a multi-frame DICOM file. Messages name folders,
files, modality and geometry only."""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medclipsvd.errors import DataError

SERIES_SEP = "#series="
HEADER_TAGS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "Rows", "Columns", "ImagePositionPatient",
               "ImageOrientationPatient", "PixelSpacing", "NumberOfFrames", "WindowCenter", "WindowWidth",
               "SamplesPerPixel", "RescaleSlope", "RescaleIntercept")
NIFTI_CT_MIN_HU = -500.0  # NIfTI has no modality tag: a volume reaching below this (air, padding) is CT


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


@dataclass
class Volume:
    """A volume in canonical LPS orientation: ``array[z, y, x]`` (z superior, y posterior, x left), values
    in physical units (HU for CT); ``spacing`` in mm as (x, y, z)."""

    path: str
    array: np.ndarray
    spacing: tuple[float, float, float]
    modality: str
    is_ct: bool
    stored_window: tuple[float, float] | None = None
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    _range: tuple[float, float] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    def value_range(self) -> tuple[float, float]:
        """0.5th..99.5th percentile of the volume (computed once, on a regular subsample for speed)."""
        if self._range is None:
            from medclipsvd.data.windows import percentile_range

            step = max(1, int(round((self.array.size / 2_000_000) ** (1 / 3))))
            self._range = percentile_range(self.array[::step, ::step, ::step])
        return self._range


# ------------------------------------------------------------------------------------------- headers
def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n and all(np.isfinite(vals)) else None


def read_header(path: str) -> SliceHeader:
    """Geometry tags of one DICOM file (DataError naming the file if it is not DICOM)."""
    import pydicom

    from medclipsvd.data.dicom import _first, _quiet_pydicom, check_rescale

    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=list(HEADER_TAGS))
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
    except Exception as exc:  # message withheld: pydicom's can quote element values
        raise DataError(f"{path}: not a readable DICOM file (pydicom: {type(exc).__name__}).") from None
    # SimpleITK applies the rescale of every slice of a series: a blanking one is refused here, naming the file
    check_rescale(path, 1.0 if slope is None else slope, 0.0 if inter is None else inter)
    if uid:
        group = "uid:" + uid
    else:  # empty UIDs: files of one folder that look alike form one series
        sig = (modality, number, rows, cols, tuple(round(v, 3) for v in ori) if ori else None)
        group = "sig:" + repr(sig)
    return SliceHeader(path, group, modality, rows, cols, pos, ori, sp, frames, win)


def _key(group: str) -> str:
    return hashlib.sha1(group.encode("utf-8")).hexdigest()[:10]


def _is_dicom(p: Path) -> bool:
    from medclipsvd.data.formats import file_kind
    from medclipsvd.data.read_common import DICOM_EXTS

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
            h = read_header(str(p))
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
    return SeriesRef(path, "series", tuple(h.file for h in ordered), headers[0].modality, len(headers),
                     ordered[len(ordered) // 2].window, float(np.median(np.diff(z))))


def _nifti_size(path: str) -> tuple[int, ...]:
    """A NIfTI file's dimensions from its header (nothing decoded)."""
    import SimpleITK as sitk

    from medclipsvd.data.read_common import _check_file

    _check_file(path)
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
    from medclipsvd.data.read_common import check_volume_size

    if ref.kind == "nifti":
        dims = _nifti_size(ref.path)  # every dimension: a 4-D file is decoded whole before its first volume is taken
    else:
        h = read_header(ref.files[0] if ref.kind == "series" else ref.path)
        dims = (len(ref.files) if ref.kind == "series" else h.frames, h.rows, h.cols)
    check_volume_size(ref.path, dims)


def is_volume_file(path: str) -> bool:
    """A NIfTI file with more than one slice (2-D NIfTI stays a 2-D image)."""
    from medclipsvd.data.formats import file_kind

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


def scan_folder(folder: str | os.PathLike, recursive: bool = True) -> tuple[list[SeriesRef], list[str]]:
    """Volumes under ``folder`` (series, 3-D NIfTI) and the remaining 2-D image files, both sorted.

    Series live in one folder each; a folder with several series gives ``<folder>#series=<key>`` paths."""
    from medclipsvd.data.formats import image_suffixes

    volumes: list[SeriesRef] = []
    flat: list[str] = []
    tree = walk(folder) if recursive else [(os.fspath(folder), [], sorted(os.listdir(folder)))]
    for dirpath, dirnames, filenames in tree:
        groups = folder_groups(dirpath)
        series = [(g, hs) for g, hs in groups if _is_series(hs)]
        in_series = {h.file for _, hs in series for h in hs}
        for i, (g, hs) in enumerate(sorted(series, key=lambda gh: _key(gh[0]))):
            path = dirpath if len(series) == 1 else f"{dirpath}{SERIES_SEP}{_key(g)}"
            volumes.append(_series_ref(path, hs, _describe(dirpath, i, len(series), hs)))
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            low = fn.lower()
            if fn.startswith(".") or p in in_series:
                continue
            if low.endswith((".nii", ".nii.gz")) and is_volume_file(p):
                volumes.append(SeriesRef(p, "nifti", (p,), "", _nifti_depth(p)))
            elif low.endswith(image_suffixes()) or _is_dicom(Path(p)):
                flat.append(p)
    return volumes, flat


def resolve(path: str | os.PathLike) -> SeriesRef:
    """The one volume a sample path names; DataError (with the fix) when it names none or several."""
    p = os.fspath(path)
    folder, sep, key = p.rpartition(SERIES_SEP)
    if sep:
        groups = [(g, hs) for g, hs in folder_groups(folder) if _is_series(hs)]
        for i, (g, hs) in enumerate(sorted(groups, key=lambda gh: _key(gh[0]))):
            if _key(g) == key:
                return _series_ref(p, hs, _describe(folder, i, len(groups), hs))
        raise DataError(f"{folder}: no longer holds series {key} (files changed since the split was written); "
                        f"write the split again with `medclipsvd data split`.")
    if not os.path.exists(p):
        raise DataError(f"{p}: not found. Check the data root and the split file's relative paths.")
    if os.path.isdir(p):
        vols, flat = scan_folder(p, recursive=True)
        if len(vols) == 1:
            return vols[0]
        if not vols:
            dicoms = [f for f in flat if _is_dicom(Path(f))]
            if dicoms:
                raise DataError(f"{p}: holds {len(dicoms)} DICOM file(s) but no series of two or more slices with "
                                f"ImagePositionPatient (a series of one slice, or 2-D images); a volume is expected "
                                f"here - point to a 2-D file instead, or add the missing slices.")
            raise DataError(f"{p}: study folder without DICOM series or NIfTI volumes; point the row/folder at a "
                            f"series folder (or a .nii/.nii.gz file).")
        raise DataError(f"{p}: holds {len(vols)} volumes (mixed SeriesInstanceUIDs or several NIfTI files) where one "
                        f"sample is expected; point to one series folder, or list the folder's parent as a "
                        f"class/patient folder so that each series becomes its own sample.")
    from medclipsvd.data.formats import file_kind

    kind = file_kind(p)
    if kind == "nifti":
        depth = _nifti_depth(p)
        if depth < 2:
            raise DataError(f"{p}: a 2-D NIfTI image where a volume is expected; use it as a 2-D image, or "
                            f"export the whole volume.")
        return SeriesRef(p, "nifti", (p,), "", depth)
    if kind == "dicom":
        h = read_header(p)
        if h.frames > 1:
            return SeriesRef(p, "multiframe", (p,), h.modality, h.frames, h.window)
        raise DataError(f"{p}: a single 2-D DICOM image where a volume is expected; point to the folder of its "
                        f"series (all slices), or use the file as a 2-D image.")
    raise DataError(f"{p}: a 2-D image file where a volume is expected (a DICOM series folder, a multi-frame "
                    f"DICOM or a .nii/.nii.gz file).")


# ------------------------------------------------------------------------------------------- reading
def _sitk_quiet():
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK/GDCM warnings can quote header values
    return sitk


def _canonical(img, path: str, modality: str, is_ct: bool | None, window) -> Volume:
    sitk = _sitk_quiet()
    if img.GetDimension() == 4:  # 4-D NIfTI (time/channels): first volume
        size = list(img.GetSize())
        img = sitk.Extract(img, size[:3] + [0], [0, 0, 0, 0])
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: a colour/vector volume ({img.GetNumberOfComponentsPerPixel()} components); only "
                        f"grey volumes are supported.")
    if img.GetDimension() != 3 or img.GetSize()[2] < 2:
        raise DataError(f"{path}: a 2-D image where a volume is expected.")
    img = sitk.DICOMOrient(img, "LPS")
    arr = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise DataError(f"{path}: volume contains {bad} NaN/inf voxels; fill or mask them in the export (e.g. set "
                        f"the background to the minimum) and retry.")
    if is_ct is None:
        is_ct = bool(arr.size) and float(arr.min()) <= NIFTI_CT_MIN_HU
    return Volume(path, arr, tuple(float(s) for s in img.GetSpacing()), modality or ("CT" if is_ct else "unknown"),
                  is_ct, window, tuple(img.GetOrigin()), tuple(img.GetDirection()))


def _read_series(ref: SeriesRef) -> Volume:
    sitk = _sitk_quiet()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(ref.files))
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else ""
        raise DataError(f"{ref.path}: the series cannot be decoded by SimpleITK/GDCM ({first.split(':')[0]}); "
                        f"check that every file is complete, or convert the series with `gdcmconv --raw`.") from None
    if ref.step is not None:
        # ITK takes the distance between slice origins as the spacing, which gantry tilt inflates; the
        # stack runs along the normal with the step measured on it (tilted slices are not resampled)
        h = read_header(ref.files[0])
        r, c = np.array(h.orientation[:3]), np.array(h.orientation[3:])
        sx, sy = img.GetSpacing()[:2]
        img.SetSpacing((sx, sy, ref.step))
        img.SetDirection(tuple(np.stack([r, c, np.cross(r, c)], axis=1).ravel()))
    return _canonical(img, ref.path, ref.modality, ref.modality == "CT", ref.window)


def _read_nifti(ref: SeriesRef) -> Volume:
    sitk = _sitk_quiet()
    try:
        img = sitk.ReadImage(ref.path)
    except RuntimeError:
        raise DataError(f"{ref.path}: NIfTI voxel data cannot be read; the file is probably truncated.") from None
    _check_nifti_finite(ref.path)
    return _canonical(img, ref.path, "", None, None)


def _check_nifti_finite(path: str) -> None:
    """ITK's NIfTI reader turns NaN into 0 silently; float NIfTI data are checked through nibabel first."""
    import nibabel as nib

    img = nib.load(path)
    if not np.issubdtype(img.get_data_dtype(), np.floating):
        return
    data = np.asanyarray(img.dataobj)
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise DataError(f"{path}: volume contains {bad} NaN/inf voxels; fill or mask them in the export (e.g. set "
                        f"the background to the minimum) and retry.")


def _read_multiframe(ref: SeriesRef) -> Volume:
    """Enhanced multi-frame DICOM: per-frame rescale (HU) and plane positions from the functional groups."""
    from pydicom import pixels

    from medclipsvd.data.dicom import _check_decodable, _frame_item, _quiet_pydicom, _read, _rescale

    sitk = _sitk_quiet()
    with _quiet_pydicom():
        ds = _read(ref.path)
        _check_decodable(ref.path, ds)
        try:
            arr = pixels.pixel_array(ds)
        except Exception as exc:
            raise DataError(f"{ref.path}: DICOM pixel data cannot be decoded ({type(exc).__name__}).") from None
        n = arr.shape[0]
        hu = np.empty(arr.shape, dtype=np.float32)
        pos, ori, spacing = [], None, None
        for f in range(n):
            slope, inter = _rescale(ds, f, ref.path)
            hu[f] = arr[f].astype(np.float32) * np.float32(slope) + np.float32(inter)
            pp = _frame_item(ds, f, "PlanePositionSequence")
            pos.append(_floats(pp.get("ImagePositionPatient"), 3) if pp is not None else None)
            if ori is None:
                po = _frame_item(ds, f, "PlaneOrientationSequence")
                ori = _floats(po.get("ImageOrientationPatient"), 6) if po is not None else None
            if spacing is None:
                pm = _frame_item(ds, f, "PixelMeasuresSequence")
                spacing = _floats(pm.get("PixelSpacing"), 2) if pm is not None else None
    if ori is None or any(p is None for p in pos):
        raise DataError(f"{ref.path}: multi-frame DICOM without per-frame plane positions/orientation is not a "
                        f"volume; read it frame by frame (--dicom-frames middle|all).")
    headers = [SliceHeader(f"{ref.path}[frame {i}]", "", ref.modality, hu.shape[1], hu.shape[2], pos[i], ori,
                           spacing, 1, None) for i in range(n)]
    order = order_series(headers, f"{ref.path} ({ref.modality or 'unknown modality'}, {n} frames)")
    idx = [headers.index(h) for h in order]
    hu = hu[idx]
    r, c = np.array(ori[:3]), np.array(ori[3:])
    normal = np.cross(r, c)
    steps = np.diff([np.dot(h.position, normal) for h in order])
    img = sitk.GetImageFromArray(hu)
    row_sp, col_sp = spacing or (1.0, 1.0)
    img.SetSpacing((col_sp, row_sp, float(np.median(steps))))
    img.SetOrigin(order[0].position)
    img.SetDirection(tuple(np.stack([r, c, normal], axis=1).ravel()))
    win = ref.window
    return _canonical(img, ref.path, ref.modality, ref.modality == "CT", win)


def _ref_stamp(ref: SeriesRef) -> tuple:
    out = []
    for f in ref.files:
        try:
            st = os.stat(f)
            out.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((f, -1, -1))
    return tuple(out)


@functools.lru_cache(maxsize=2)  # volumes are large; consecutive samples of one volume share it
def _load(ref: SeriesRef, stamp: tuple) -> Volume:
    check_extent(ref)
    if ref.kind == "series":
        return _read_series(ref)
    if ref.kind == "multiframe":
        return _read_multiframe(ref)
    return _read_nifti(ref)


def read_volume(path: str | os.PathLike) -> Volume:
    """The canonical (LPS) volume a sample path names, in physical units. Cached for the last two volumes."""
    ref = resolve(path)
    return _load(ref, _ref_stamp(ref))


def _canonical_shape(size, direction) -> tuple[int, int, int]:
    """Array shape (z, y, x) after ``DICOMOrient(..., "LPS")``, from the size and direction alone."""
    d = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))  # column i: direction of image axis i
    lps = [int(size[int(np.argmax(d[j]))]) for j in range(3)]      # patient axis j <- dominant image axis
    return lps[2], lps[1], lps[0]


def volume_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """Canonical array shape (z, y, x) of the volume a sample path names, from headers only."""
    ref = resolve(path)
    if ref.kind in ("series", "nifti"):
        check_extent(ref)
    if ref.kind == "series":
        h = read_header(ref.files[0])
        r, c = np.array(h.orientation[:3]), np.array(h.orientation[3:])
        return _canonical_shape((h.cols, h.rows, len(ref.files)), np.stack([r, c, np.cross(r, c)], axis=1).ravel())
    if ref.kind == "nifti":
        sitk = _sitk_quiet()
        rd = sitk.ImageFileReader()
        rd.SetFileName(ref.path)
        rd.ReadImageInformation()
        size, direction = rd.GetSize(), rd.GetDirection()
        if len(size) == 4:
            size, direction = size[:3], [direction[i * 4 + j] for i in range(3) for j in range(3)]
        return _canonical_shape(size, direction)
    return tuple(read_volume(path).array.shape)


def volume_num_slices(path: str | os.PathLike, axis: str = "axial") -> int:
    """Number of planes along ``axis`` after canonical reorientation (from headers for series and NIfTI)."""
    from medclipsvd.data.slicing import axis_dim

    return int(volume_shape(path)[axis_dim(axis)])


def load_volume_sample(path: str | os.PathLike, *, slices: str = "middle", window: str | None = None,
                       axis: str = "axial", index: int | None = None) -> np.ndarray:
    """A volume (series folder, ``folder#series=key``, NIfTI file or multi-frame DICOM) as model input:
    float32 ``(C, H, W)`` in [0, 1] with C = 3 (grey repeated, or ``multi`` windows / ``2.5d`` as RGB).

    ``slices``: middle (default), mip[:MM], 2.5d give one image; all / slices:N give ``(N, C, H, W)``
    unless ``index`` picks one plane. ``window``: see ``medclipsvd.data.windows`` (None = auto).
    ``axis``: axial (default), coronal or sagittal, after reorienting to the canonical orientation."""
    from medclipsvd.data.slicing import parse_slices, plane_indices, render

    policy = parse_slices(slices)
    vol = read_volume(path)
    if index is not None or policy.single:
        return np.ascontiguousarray(render(vol, policy, axis, window, index).transpose(2, 0, 1))
    idx = plane_indices(policy, vol.array.shape[_dim(axis)])
    return np.stack([render(vol, policy, axis, window, k).transpose(2, 0, 1) for k in idx])


def _dim(axis: str) -> int:
    from medclipsvd.data.slicing import axis_dim

    return axis_dim(axis)
