"""Reading 3-D volumes: a sample path -> a ``Volume`` in canonical orientation and physical units, and the
model input a slice policy renders from it (``series`` finds and orders the files first).

* **Reading.** SimpleITK (GDCM: uncompressed, JPEG lossless, JPEG 2000, RLE) reads the ordered files with
  Rescale Slope/Intercept applied (HU for CT), keeping spacing, origin and direction; NIfTI files go
  through SimpleITK too (their headers checked first: ``readers.nifti.check_nifti``); pydicom decodes a
  series GDCM refuses (files without the 128-byte preamble). An irregular or gantry-tilted stack is
  resampled onto the regular grid of its first slice (``geometry``). Every volume is reoriented to the
  closest canonical orientation (``LPS``: the array axes run superior, posterior, left), so
  axial/coronal/sagittal mean the same for every input.
* **4-D and modality.** A sample names one phase of a 4-D series or NIfTI (``series``); ``modality``
  CT / MR overrides the guess for NIfTI volumes, which carry no Modality tag.
* **Bounded.** A volume is decoded whole, so its voxel count is checked from the headers first
  (``series.check_extent``); the last two volumes read are cached (consecutive samples share one).

Messages name folders, files, modality and geometry only."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import numpy as np

from medclipsvd.data.volumes.selection import resolve
from medclipsvd.data.volumes.series import (SeriesRef, SliceHeader, _floats, check_extent, order_series,
                                            read_header)
from medclipsvd.errors import DataError


NIFTI_CT_MIN_HU = -500.0  # NIfTI has no modality tag: a volume reaching below this (air, padding) is CT


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
            from medclipsvd.data.volumes.windows import percentile_range

            step = max(1, int(round((self.array.size / 2_000_000) ** (1 / 3))))
            self._range = percentile_range(self.array[::step, ::step, ::step])
        return self._range


# ------------------------------------------------------------------------------------------- reading
def _sitk_quiet():
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK/GDCM warnings can quote header values
    return sitk


def _canonical(img, path: str, modality: str, is_ct: bool | None, window) -> Volume:
    sitk = _sitk_quiet()
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: a colour/vector volume ({img.GetNumberOfComponentsPerPixel()} components); only "
                        f"grey volumes are supported.")
    if img.GetDimension() != 3 or img.GetSize()[2] < 2:
        raise DataError(f"{path}: a 2-D image where a volume is expected.")
    if not np.allclose(img.GetDirection(), np.eye(3).ravel(), rtol=0, atol=1e-9):  # already LPS: no copy
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
    first = ""
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else ""
        img = _read_series_pydicom(ref)
    if img is None:
        raise DataError(f"{ref.path}: the series cannot be decoded by SimpleITK/GDCM ({first.split(':')[0]}); "
                        f"check that every file is complete, or convert the series with `gdcmconv --raw`.") from None
    if ref.step is not None:
        # ITK takes the distance between slice origins as the spacing, which gantry tilt inflates; the
        # stack runs along the normal with the step measured on it, on the grid of the first slice
        h = read_header(ref.files[0])
        img = _on_grid(img, ref.geometry, h.orientation, h.spacing)
    return _canonical(img, ref.path, ref.modality, ref.modality == "CT", ref.window)


def _read_series_pydicom(ref: SeriesRef):
    """The ordered slices decoded by pydicom, for files GDCM refuses (a file meta group without the
    128-byte preamble); None when pydicom cannot decode them either (GDCM's reason is then given)."""
    from pydicom import pixels

    from medclipsvd.data.readers.dicom import _ensure_transfer_syntax, _quiet_pydicom, _read, _rescale

    sitk = _sitk_quiet()
    planes = []
    try:
        with _quiet_pydicom():
            for f in ref.files:
                ds = _read(f)
                _ensure_transfer_syntax(ds)
                arr = pixels.pixel_array(ds)
                if arr.ndim != 2:
                    return None
                slope, inter = _rescale(ds, 0, f)
                planes.append(arr.astype(np.float32) * np.float32(slope) + np.float32(inter))
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - GDCM's failure is the one reported
        return None
    h = read_header(ref.files[0])
    img = sitk.GetImageFromArray(np.stack(planes))
    row_sp, col_sp = h.spacing or (1.0, 1.0)
    img.SetSpacing((col_sp, row_sp, 1.0))
    img.SetOrigin(h.position)
    return img


def _on_grid(img, geo, orientation, pixel_spacing):
    """The stack as ITK read it, placed on the orthogonal grid of its first slice; an irregular or tilted
    stack is resampled onto it (``geometry.regularize``), a regular one is left as it is."""
    from medclipsvd.data.volumes.geometry import regularize

    sitk = _sitk_quiet()
    r, c = np.array(orientation[:3]), np.array(orientation[3:])
    sx, sy = img.GetSpacing()[:2]
    if geo is not None and geo.resampled:
        origin = img.GetOrigin()
        img = sitk.GetImageFromArray(regularize(sitk.GetArrayFromImage(img), geo, pixel_spacing))
        img.SetOrigin(origin)
    img.SetSpacing((sx, sy, geo.step if geo is not None else img.GetSpacing()[2]))
    img.SetDirection(tuple(np.stack([r, c, np.cross(r, c)], axis=1).ravel()))
    return img


def _read_nifti(ref: SeriesRef) -> Volume:
    sitk = _sitk_quiet()
    try:
        img = sitk.ReadImage(ref.files[0])
    except RuntimeError:
        raise DataError(f"{ref.path}: NIfTI voxel data cannot be read; the file is probably truncated.") from None
    _check_nifti_finite(ref.files[0])
    if img.GetDimension() == 4:  # 4-D NIfTI: the volume the sample names (series.resolve refuses a bare 4-D path)
        size = list(img.GetSize())
        k = ref.phase or 0
        if size[3] > 1 and ref.phase is None:
            raise DataError(f"{ref.path}: is 4-D ({size[3]} volumes); pick one as {ref.path}#series=@t0 ... "
                            f"@t{size[3] - 1}.")
        img = sitk.Extract(img, size[:3] + [0], [0, 0, 0, k])
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

    from medclipsvd.data.readers.dicom import _check_decodable, _frame_item, _quiet_pydicom, _read, _rescale

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
    from medclipsvd.data.volumes.geometry import stack_geometry

    where = f"{ref.path} ({ref.modality or 'unknown modality'}, {n} frames)"
    geo = stack_geometry([h.position for h in order], ori, spacing, where)
    img = sitk.GetImageFromArray(hu)
    row_sp, col_sp = spacing or (1.0, 1.0)
    img.SetSpacing((col_sp, row_sp, 1.0))
    img.SetOrigin(order[0].position)
    img = _on_grid(img, geo, ori, spacing)
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


def read_volume(path: str | os.PathLike, modality: str | None = None) -> Volume:
    """The canonical (LPS) volume a sample path names, in physical units. Cached for the last two volumes.

    ``modality`` ``CT`` / ``MR`` overrides the guess for volumes without a Modality tag (NIfTI: CT when the
    values reach below -500); DICOM series and multi-frame files keep their own tag."""
    from medclipsvd.data.volumes.windows import parse_modality

    ref = resolve(path)
    vol = _load(ref, _ref_stamp(ref))
    mod = parse_modality(modality)
    if mod is None or ref.kind != "nifti" or vol.is_ct == (mod == "CT"):
        return vol
    import dataclasses

    return dataclasses.replace(vol, modality=mod, is_ct=mod == "CT", _range=None)  # the voxels are shared


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
        return _canonical_shape((h.cols, h.rows, ref.n_slices), np.stack([r, c, np.cross(r, c)], axis=1).ravel())
    if ref.kind == "nifti":
        sitk = _sitk_quiet()
        rd = sitk.ImageFileReader()
        rd.SetFileName(ref.files[0])
        rd.ReadImageInformation()
        size, direction = rd.GetSize(), rd.GetDirection()
        if len(size) == 4:
            size, direction = size[:3], [direction[i * 4 + j] for i in range(3) for j in range(3)]
        return _canonical_shape(size, direction)
    return tuple(read_volume(path).array.shape)


def volume_num_slices(path: str | os.PathLike, axis: str = "axial") -> int:
    """Number of planes along ``axis`` after canonical reorientation (from headers for series and NIfTI)."""
    from medclipsvd.data.volumes.slicing import axis_dim

    return int(volume_shape(path)[axis_dim(axis)])


def load_volume_sample(path: str | os.PathLike, *, slices: str = "middle", window: str | None = None,
                       axis: str = "axial", index: int | None = None, modality: str | None = None) -> np.ndarray:
    """A volume (series folder, ``folder#series=key``, NIfTI file or multi-frame DICOM) as model input:
    float32 ``(C, H, W)`` in [0, 1] with C = 3 (grey repeated, or ``multi`` windows / ``2.5d`` as RGB).

    ``slices``: middle (default), mip[:MM], 2.5d, roi give one image; all / slices:N give ``(N, C, H, W)``
    unless ``index`` picks one plane; ``+crop`` cuts the volume to the mask's box first (``volumes.roi``).
    ``window``: see ``medclipsvd.data.windows`` (None = auto).
    ``axis``: axial (default), coronal or sagittal, after reorienting to the canonical orientation.
    ``modality``: CT or MR for a NIfTI volume, overriding the guess from its values (see ``read_volume``)."""
    from medclipsvd.data.volumes.slicing import parse_slices, plane_indices, render

    policy = parse_slices(slices)
    vol = read_volume(path, modality=modality)
    if index is not None or policy.single:
        return np.ascontiguousarray(render(vol, policy, axis, window, index).transpose(2, 0, 1))
    depth = vol.array.shape[_dim(axis)]
    if policy.crop:
        from medclipsvd.data.volumes.roi import roi_depth

        depth = roi_depth(path, policy, _dim(axis))
    idx = plane_indices(policy, depth)
    return np.stack([render(vol, policy, axis, window, k).transpose(2, 0, 1) for k in idx])


def _dim(axis: str) -> int:
    from medclipsvd.data.volumes.slicing import axis_dim

    return axis_dim(axis)
