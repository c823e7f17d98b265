"""Masks drawn on a DICOM series: the DICOM SEG and RTSTRUCT objects that reference it, as one boolean
array on the series' own voxel grid (then reoriented like the volume, ``canonical_mask``).

* **Finding.** Mask objects are looked for in the series folder, its parent (the study folder) and the
  parent's other sub-folders - where exports put ``SEG/`` and ``RTSTRUCT/`` beside ``CT/``; never higher, and
  for a served model never outside its serving root (``search_within``). An
  object belongs to the series when it names the series' SeriesInstanceUID (SEG: ReferencedSeriesSequence;
  RTSTRUCT: ReferencedFrameOfReferenceSequence > RTReferencedStudySequence > RTReferencedSeriesSequence) or,
  for series exported without UIDs, one of its SOPInstanceUIDs (ReferencedSOPInstanceUID).
* **SEG** (read with highdicom): every frame's pixels are placed by its own plane position and orientation
  (PlanePositionSequence / PlaneOrientationSequence, per frame or shared) in patient coordinates, so a
  segmentation stored on the series' grid lands voxel for voxel; a frame between two slices goes to the
  nearer one (within half a slice step). FRACTIONAL segmentations count voxels above half the maximum.
* **RTSTRUCT**: each CLOSED_PLANAR contour (a polygon in patient millimetres) is rasterised on the slice whose
  plane it lies on: a voxel is inside when its centre is (even-odd rule, so a contour inside another of the
  same ROI is a hole). POINT and OPEN_PLANAR contours have no area and are ignored.

Every segment of every SEG and every ROI of every RTSTRUCT referencing the series is united into one mask,
or only those whose SegmentLabel / ROIName matches a pattern (``+mask:PATTERN`` in the slice policy).
Only UIDs, geometry and pixel/contour data are read from these objects; nothing of them is printed but
their file names."""
from __future__ import annotations

import contextlib
import functools
import os
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from medclipsvd.errors import DataError

SEG_SOP = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP = "1.2.840.10008.5.1.4.1.1.481.3"
NO_MASK_HINT = "or choose another --slices policy (e.g. middle)"


class MaskError(DataError):
    """A series cannot be used under a mask policy (no mask, an empty one, one lying elsewhere, one that
    cannot be read): like a broken series, it is refused and listed, and ``--on-bad-series skip`` leaves it out."""


@dataclass(frozen=True)
class MaskObject:
    path: str
    kind: str  # SEG | RTSTRUCT
    series: frozenset  # referenced SeriesInstanceUIDs
    instances: frozenset  # referenced SOPInstanceUIDs


@dataclass(frozen=True)
class Grid:
    """The series' native voxel grid: slice k (in ``SeriesRef.files`` order) has origin ``positions[k]``;
    voxel (k, row, col) sits at ``positions[k] + col * col_mm * r + row * row_mm * c``."""

    positions: np.ndarray  # (n, 3)
    r: np.ndarray  # direction of increasing column
    c: np.ndarray  # direction of increasing row
    row_mm: float
    col_mm: float
    step: float
    shape: tuple[int, int, int]  # (slices, rows, cols)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.r, self.c)

    def to_index(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Patient points (n, 3) -> slice, row, col (rounded) and whether each falls inside the grid."""
        z = self.positions @ self.normal
        pz = points @ self.normal
        k = np.clip(np.searchsorted(z, pz), 1, len(z) - 1)
        k = np.where(np.abs(z[k - 1] - pz) <= np.abs(z[k] - pz), k - 1, k)
        near = np.abs(z[k] - pz) <= 0.5 * self.step + 1e-3
        d = points - self.positions[k]
        row = np.rint(d @ self.c / self.row_mm).astype(np.int64)
        col = np.rint(d @ self.r / self.col_mm).astype(np.int64)
        inside = near & (row >= 0) & (row < self.shape[1]) & (col >= 0) & (col < self.shape[2])
        return k, row, col, inside


# ------------------------------------------------------------------------------------------- finding
def _reader():
    import pydicom

    from medclipsvd.data.readers.dicom import _quiet_pydicom

    return pydicom, _quiet_pydicom


def _mask_kind(h) -> str | None:
    if h.sop == SEG_SOP or (not h.sop and h.modality == "SEG"):
        return "SEG"
    if h.sop == RTSTRUCT_SOP or (not h.sop and h.modality == "RTSTRUCT"):
        return "RTSTRUCT"
    return None


def _uids(items, key: str) -> set[str]:
    return {str(x.get(key, "")).strip() for x in items or [] if str(x.get(key, "")).strip()}


@functools.lru_cache(maxsize=64)
def _references(path: str, kind: str, stamp: tuple) -> MaskObject:
    """The series and instances a mask object references (headers only; pixels and contours not read)."""
    pydicom, quiet = _reader()
    try:
        with quiet():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            series, instances = set(), set()
            if kind == "SEG":
                for item in ds.get("ReferencedSeriesSequence") or []:
                    series |= _uids([item], "SeriesInstanceUID")
                    instances |= _uids(item.get("ReferencedInstanceSequence"), "ReferencedSOPInstanceUID")
                for frame in ds.get("PerFrameFunctionalGroupsSequence") or []:
                    for der in frame.get("DerivationImageSequence") or []:
                        instances |= _uids(der.get("SourceImageSequence"), "ReferencedSOPInstanceUID")
            else:
                for frame_ref in ds.get("ReferencedFrameOfReferenceSequence") or []:
                    for study in frame_ref.get("RTReferencedStudySequence") or []:
                        for ser in study.get("RTReferencedSeriesSequence") or []:
                            series |= _uids([ser], "SeriesInstanceUID")
                            instances |= _uids(ser.get("ContourImageSequence"), "ReferencedSOPInstanceUID")
                for roi in ds.get("ROIContourSequence") or []:
                    for contour in roi.get("ContourSequence") or []:
                        instances |= _uids(contour.get("ContourImageSequence"), "ReferencedSOPInstanceUID")
    except Exception as exc:  # message withheld: pydicom's can quote element values
        raise MaskError(f"{path}: a {kind} object that cannot be read (pydicom: {type(exc).__name__}); re-export "
                        f"it, or move it out of the study folder.") from None
    return MaskObject(path, kind, frozenset(series), frozenset(instances))


def _stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


_SEARCH_ROOT: ContextVar[str | None] = ContextVar("medclipsvd_mask_search_root", default=None)


@contextlib.contextmanager
def search_within(root: str | os.PathLike | None):
    """Masks are looked for only in folders under ``root`` (symlinks resolved) while this is active: a served
    model reads nothing outside its serving root, even for the series at the root itself."""
    token = _SEARCH_ROOT.set(os.path.realpath(root) if root else None)
    try:
        yield
    finally:
        _SEARCH_ROOT.reset(token)


def search_folders(series_folder: str) -> list[str]:
    """The series folder, its parent and the parent's other sub-folders (hidden ones skipped); under
    ``search_within`` only those inside its root."""
    folder = os.path.abspath(series_folder)
    parent = os.path.dirname(folder)
    out = [folder]
    if parent and parent != folder:
        out.append(parent)
        try:
            subs = sorted(e.path for e in os.scandir(parent) if e.is_dir() and not e.name.startswith("."))
        except OSError:
            subs = []
        out += [s for s in subs if os.path.abspath(s) != folder]
    root = _SEARCH_ROOT.get()
    if root is not None:
        out = [f for f in out if os.path.commonpath([root, os.path.realpath(f)]) == root]
    return out


def mask_objects(series_folder: str) -> list[MaskObject]:
    """Every SEG / RTSTRUCT object in the folders ``search_folders`` names."""
    from medclipsvd.data.volumes.series import folder_groups

    found = []
    for folder in search_folders(series_folder):
        for _, headers in folder_groups(folder):
            for h in headers:
                kind = _mask_kind(h)
                if kind:
                    found.append(_references(h.file, kind, _stamp(h.file)))
    return found


def _series_uids(files: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """SeriesInstanceUIDs and SOPInstanceUIDs of the series' files (no patient tags)."""
    pydicom, quiet = _reader()
    series, instances = set(), set()
    with quiet():
        for f in files:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True,
                                     specific_tags=["SeriesInstanceUID", "SOPInstanceUID"])
            except Exception:  # noqa: BLE001 - the volume reader names unreadable files
                continue
            series |= _uids([ds], "SeriesInstanceUID")
            instances |= _uids([ds], "SOPInstanceUID")
    return series, instances


def masks_for(ref) -> tuple[list[MaskObject], list[MaskObject]]:
    """(the mask objects referencing the series ``ref``, the other mask objects found beside it)."""
    objects = mask_objects(os.path.dirname(ref.files[0]))
    if not objects:
        return [], []
    series, instances = _series_uids(ref.files)
    mine = [m for m in objects if (m.series & series) or (m.instances & instances)]
    return mine, [m for m in objects if m not in mine]


# ------------------------------------------------------------------------------------------- rasterising
def series_grid(ref) -> Grid:
    from medclipsvd.data.volumes.series import folder_groups, read_header

    by_file = {}
    for folder in dict.fromkeys(os.path.dirname(f) for f in ref.files):
        by_file.update((h.file, h) for _, hs in folder_groups(folder) for h in hs)
    hs = [by_file.get(f) or read_header(f) for f in ref.files]
    h0 = hs[0]
    r, c = np.array(h0.orientation[:3]), np.array(h0.orientation[3:])
    row_mm, col_mm = h0.spacing or (1.0, 1.0)
    return Grid(np.array([h.position for h in hs], dtype=float), r, c, float(row_mm), float(col_mm),
                float(ref.step), (len(hs), h0.rows, h0.cols))


def _frame_item(ds, f: int, seq: str):
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and f < len(per) and seq in per[f]:
        return per[f][seq][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and seq in shared[0]:
        return shared[0][seq][0]
    return None


def _matches(name: str, label: str | None) -> bool:
    import fnmatch

    return label is None or fnmatch.fnmatchcase(str(name).strip().lower(), label)


def _seg_points(path: str, label: str | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Patient coordinates (n, 3) of the segmented pixels of each frame of a SEG (only the segments whose
    SegmentLabel matches ``label``, a lower-case shell pattern), and every segment label it holds."""
    import highdicom as hd

    from medclipsvd.data.readers.dicom import _quiet_pydicom

    try:
        with _quiet_pydicom():
            seg = hd.seg.segread(path)
            labels = {int(x.SegmentNumber): str(x.get("SegmentLabel", "")) for x in seg.get("SegmentSequence") or []}
            keep = {n for n, name in labels.items() if _matches(name, label)}
            frames = np.asarray(seg.pixel_array)
            fractional = str(seg.SegmentationType).upper() == "FRACTIONAL"
            cut = float(seg.get("MaximumFractionalValue", 255)) / 2 if fractional else 0
            frames = frames.reshape((-1, *frames.shape[-2:])) > cut
            geometry = []
            for f in range(frames.shape[0]):
                pos, ori, meas, ident = (_frame_item(seg, f, s) for s in
                                         ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence",
                                          "SegmentIdentificationSequence"))
                number = int(ident.ReferencedSegmentNumber) if ident is not None else min(labels, default=1)
                geometry.append((pos.ImagePositionPatient, ori.ImageOrientationPatient, meas.PixelSpacing,
                                 number in keep))
    except Exception as exc:  # message withheld: it can quote element values
        raise MaskError(f"{path}: a SEG that cannot be read (highdicom: {type(exc).__name__}); it needs per-frame "
                        f"plane positions and pixel data - re-export it, or move it out of the study folder.") from None
    out = []
    for mask, (pos, ori, spacing, wanted) in zip(frames, geometry):
        if not wanted:
            continue
        rows, cols = np.nonzero(mask)
        r, c = np.array(ori[:3], dtype=float), np.array(ori[3:], dtype=float)
        out.append(np.asarray(pos, dtype=float) + np.outer(cols * float(spacing[1]), r)
                   + np.outer(rows * float(spacing[0]), c))
    return out, list(labels.values())


def _fill_polygon(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a ``shape`` plane whose centres lie inside the polygon (even-odd rule)."""
    out = np.zeros(shape, dtype=bool)
    r0, r1 = max(0, int(np.floor(rows.min()))), min(shape[0] - 1, int(np.ceil(rows.max())))
    c0, c1 = max(0, int(np.floor(cols.min()))), min(shape[1] - 1, int(np.ceil(cols.max())))
    if r0 > r1 or c0 > c1:
        return out
    rr, cc = np.mgrid[r0:r1 + 1, c0:c1 + 1]
    inside = np.zeros(rr.shape, dtype=bool)
    for ra, ca, rb, cb in zip(rows, cols, np.roll(rows, -1), np.roll(cols, -1)):
        if ra == rb:
            continue  # a horizontal edge crosses no row of centres
        crosses = (ra > rr) != (rb > rr)
        at = ca + (rr - ra) * (cb - ca) / (rb - ra)
        inside ^= crosses & (cc < at)
    out[r0:r1 + 1, c0:c1 + 1] = inside
    return out


def _rtstruct_mask(path: str, grid: Grid, label: str | None = None) -> tuple[np.ndarray, int, list[str]]:
    """The RTSTRUCT's contours on ``grid`` (only the ROIs whose ROIName matches ``label``, a lower-case shell
    pattern); also how many closed contours those ROIs hold, and every ROI name."""
    pydicom, quiet = _reader()
    mask = np.zeros(grid.shape, dtype=bool)
    total = 0
    try:
        with quiet():
            ds = pydicom.dcmread(path, force=True)
            names = {int(x.ROINumber): str(x.get("ROIName", "")) for x in ds.get("StructureSetROISequence") or []
                     if "ROINumber" in x}
            rois = [[np.asarray(ct.ContourData, dtype=float).reshape(-1, 3) for ct in roi.get("ContourSequence") or []
                     if str(ct.get("ContourGeometricType", "")).upper() == "CLOSED_PLANAR" and "ContourData" in ct]
                    for roi in ds.get("ROIContourSequence") or []
                    if _matches(names.get(int(roi.get("ReferencedROINumber", -1)), ""), label)]
    except Exception as exc:  # message withheld: pydicom's can quote element values
        raise MaskError(f"{path}: an RTSTRUCT whose contours cannot be read (pydicom: {type(exc).__name__}); "
                        f"re-export it, or move it out of the study folder.") from None
    for contours in rois:
        roi = np.zeros(grid.shape, dtype=bool)
        for pts in contours:
            if len(pts) < 3:
                continue
            total += 1
            k, _, _, _ = grid.to_index(pts.mean(axis=0, keepdims=True))
            k = int(k[0])
            if abs(float((pts.mean(axis=0) - grid.positions[k]) @ grid.normal)) > 0.5 * grid.step + 1e-3:
                continue  # the contour's plane is not one of the series' slices
            d = pts - grid.positions[k]
            rows, cols = d @ grid.c / grid.row_mm, d @ grid.r / grid.col_mm
            roi[k] ^= _fill_polygon(rows, cols, grid.shape[1:])
        mask |= roi
    return mask, total, list(names.values())


def native_mask(ref, objects: list[MaskObject], label: str | None = None) -> np.ndarray:
    """The union of ``objects`` (their segments / ROIs whose label matches ``label``) on the series' native
    grid (slices in ``ref.files`` order); MaskError when nothing matches, or it is empty or lies elsewhere."""
    grid = series_grid(ref)
    mask = np.zeros(grid.shape, dtype=bool)
    drawn, labels = 0, []
    names = ", ".join(os.path.basename(m.path) for m in objects)
    for m in objects:
        if m.kind == "SEG":
            points, found = _seg_points(m.path, label)
            for pts in points:
                drawn += len(pts)
                k, row, col, inside = grid.to_index(pts)
                mask[k[inside], row[inside], col[inside]] = True
        else:
            part, total, found = _rtstruct_mask(m.path, grid, label)
            drawn += total
            mask |= part
        labels += found
    if label is not None and not any(_matches(x, label) for x in labels):
        shown = ", ".join(repr(x) for x in labels[:10]) + (", ..." if len(labels) > 10 else "")
        raise MaskError(f"{ref.path}: no segment or ROI of its mask ({names}) is named like {label!r}; it holds "
                        f"{shown or 'no named segment'}. Change +mask:PATTERN, {NO_MASK_HINT}.")
    if not mask.any():
        if drawn == 0:
            raise MaskError(f"{ref.path}: the mask ({names}) that references this series is empty (no segmented "
                            f"voxel, no closed contour); re-export the segmentation, {NO_MASK_HINT}.")
        raise MaskError(f"{ref.path}: the mask ({names}) references this series but none of it lies inside the "
                        f"series' volume (drawn on another frame of reference, or on slices not in this export); "
                        f"check the export, {NO_MASK_HINT}.")
    return mask


def _no_mask(ref, others: list[MaskObject]) -> MaskError:
    seen = (f" ({len(others)} SEG/RTSTRUCT object(s) beside it reference other series, first: {others[0].path}; "
            f"is the series they were drawn on missing?)") if others else ""
    return MaskError(f"{ref.path}: --slices roi / +crop needs a DICOM SEG or RTSTRUCT referencing this series; none "
                     f"was found in its folder, its parent or the folders beside it{seen}. Put the mask export "
                     f"beside the series, {NO_MASK_HINT}.")


@functools.lru_cache(maxsize=8)
def _canonical(ref, stamp: tuple, label: str | None) -> tuple[np.ndarray, tuple[float, float, float]]:
    import SimpleITK as sitk

    mine, others = masks_for(ref)
    if not mine:
        raise _no_mask(ref, others)
    mask = native_mask(ref, mine, label)
    grid = series_grid(ref)
    # the volume's own geometry (read.py _read_series): the same reorientation then gives the same array axes
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing((grid.col_mm, grid.row_mm, grid.step))
    img.SetOrigin(tuple(grid.positions[0]))
    img.SetDirection(tuple(np.stack([grid.r, grid.c, grid.normal], axis=1).ravel()))
    img = sitk.DICOMOrient(img, "LPS")
    return sitk.GetArrayFromImage(img).astype(bool), tuple(float(s) for s in img.GetSpacing())


def canonical_mask(path: str, label: str | None = None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The mask of the series a sample path names (``label``: only segments / ROIs named like this lower-case
    shell pattern), as ``Volume.array`` is laid out (z, y, x in LPS), and the voxel spacing (x, y, z) in mm.
    MaskError (one line, with the fix) when there is none."""
    from medclipsvd.data.volumes.selection import resolve

    ref = resolve(path)
    if ref.kind != "series":
        raise MaskError(f"{ref.path}: --slices roi / +crop needs a DICOM series with a SEG or RTSTRUCT; a "
                        f"{'NIfTI' if ref.kind == 'nifti' else 'multi-frame'} volume has none. Use a DICOM series, "
                        f"{NO_MASK_HINT}.")
    objects = mask_objects(os.path.dirname(ref.files[0]))
    stamp = tuple(_stamp(f) for f in ref.files) + tuple((m.path, _stamp(m.path)) for m in objects)
    return _canonical(ref, stamp, label)
