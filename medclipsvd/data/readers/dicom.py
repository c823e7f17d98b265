"""DICOM to a display-ready float image, without ever putting patient tags in a message or log.

Pipeline for grey images (PS3.3 C.11): stored values -> Modality LUT (Rescale Slope/Intercept or the
Modality LUT Sequence) -> VOI (VOI LUT Sequence, else the first Window Center/Width, else the image's own
min..max) -> [0, 1] -> MONOCHROME1 inverted. Colour images (RGB, YBR_* converted by pydicom, PALETTE COLOR
through its LUT) are scaled by their bit depth.

Multi-frame policy: ``index=None`` reads the middle frame (``NumberOfFrames // 2``), the frame most likely
to show the anatomy of interest in a short cine/volume; ``index=i`` reads frame i (0-based), and hospital
datasets can expand every frame into its own sample (``dicom_frames="all"``). Per-frame functional groups
(enhanced multi-frame) supply the frame's own rescale and window when present.

Only the file name, transfer syntax, photometric interpretation and geometry ever appear in messages:
pydicom's own messages can quote element values (dates, names), so they are not passed on for header
errors, and its reading validation is silenced while we read."""
from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import warnings

import numpy as np

from medclipsvd.data.plugin_noise import silence_decoder_plugin_notice
from medclipsvd.data.readers.common import check_file, minmax, to_rgb
from medclipsvd.errors import DataError

silence_decoder_plugin_notice()


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: tuple | None = None


@contextlib.contextmanager
def _quiet_pydicom():
    """Silence pydicom's reading validation and its warnings/log records while any thread reads a file
    (they quote element values, which can be patient data). Reference-counted, so that data checks
    running in threads cannot switch validation back on under each other."""
    global _quiet_depth, _quiet_saved
    import logging

    from pydicom import config

    with _quiet_lock:
        if _quiet_depth == 0:
            log = logging.getLogger("pydicom")
            # child loggers (pydicom.pixels.decoders.base ...) log decoder failures with tracebacks to the
            # host's root handlers: disable the existing ones and stop propagation above "pydicom" for the
            # ones created while we read (decoders are imported lazily)
            children = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                        if n.startswith("pydicom.")]
            _quiet_saved = (config.settings.reading_validation_mode, list(warnings.filters), log.disabled,
                            log.propagate, [(c, c.disabled) for c in children])
            config.settings.reading_validation_mode = config.IGNORE
            warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
            warnings.filterwarnings("ignore", module=r"medclipsvd\.data\.dicom$")  # pydicom warnings raised at our call sites
            log.disabled = True
            log.propagate = False
            for c in children:
                c.disabled = True
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _quiet_saved is not None:
                mode, filters, disabled, propagate, children = _quiet_saved
                config.settings.reading_validation_mode = mode
                warnings.filters[:] = filters
                if hasattr(warnings, "_filters_mutated"):  # CPython caches filter lookups
                    warnings._filters_mutated()
                log = logging.getLogger("pydicom")
                log.disabled, log.propagate = disabled, propagate
                for c, was in children:
                    c.disabled = was


def _read(path: str, stop_before_pixels: bool = False):
    import pydicom

    check_file(path)
    try:
        with _quiet_pydicom():
            return pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # message withheld on purpose: it may quote tag values
        raise DataError(f"{path}: not a readable DICOM file (pydicom: {type(exc).__name__}); check that the "
                        f"file is a complete DICOM Part 10 file.") from None


def _transfer_syntax(ds):
    from pydicom.uid import ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return ts if ts else ImplicitVRLittleEndian  # files without meta: pydicom guessed an uncompressed encoding


def _check_decodable(path: str, ds) -> None:
    from pydicom.pixels import get_decoder

    ts = _transfer_syntax(ds)
    name = getattr(ts, "name", str(ts))
    name = name if name == str(ts) else f"{name} ({ts})"  # an unknown UID is its own name: print it once
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise DataError(f"{path}: unsupported transfer syntax {name}: no decoder exists for it in this "
                        f"installation. Convert the file to an uncompressed or JPEG/JPEG 2000 syntax "
                        f"(e.g. `gdcmconv --raw in.dcm out.dcm` or `dcmdjpeg`).") from None
    if not decoder.is_available:
        missing = "; ".join(f"{k}: {v}" for k, v in decoder.missing_dependencies.items()) \
            if hasattr(decoder, "missing_dependencies") else "no decoding plugin installed"
        raise DataError(f"{path}: transfer syntax {name} cannot be decoded here ({missing}). Install the "
                        f"plugin (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle) or convert "
                        f"the file with `gdcmconv --raw`.")


def _ensure_transfer_syntax(ds) -> None:
    """Files without a (0002,0010) Transfer Syntax UID: record the encoding pydicom read them with, so the
    pixel decoder does not refuse a file it has just parsed."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and getattr(meta, "TransferSyntaxUID", None):
        return
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    implicit, little = getattr(ds, "is_implicit_VR", True), getattr(ds, "is_little_endian", True)
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                              ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def _has_image(ds) -> bool:
    return "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds


def _num_frames(ds) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def check_dicom_header(path: str) -> int:
    """Header-level check for ``data check``: an image DICOM whose syntax we can decode. Returns frames."""
    with _quiet_pydicom():
        return _check_header(path)


def _check_header(path: str) -> int:
    ds = _read(path, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        cut = _truncation_error(path, ds)
        if cut is not None:
            raise cut
        raise DataError(f"{path}: DICOM has no image (no Rows/Columns; SOP class "
                        f"{getattr(ds.get('SOPClassUID'), 'name', 'unknown')}); only image objects can be used.")
    _check_decodable(path, ds)
    _check_size(path, ds)
    frames = _num_frames(ds)
    if "ModalityLUTSequence" not in ds:  # a header-level check finds a blanking rescale before any decoding
        for f in range(frames):
            _rescale(ds, f, path)
    return frames


def _check_size(path: str, ds) -> None:
    from medclipsvd.data.readers.common import check_image_size

    if "Rows" not in ds or "Columns" not in ds:
        raise DataError(f"{path}: DICOM has pixel data but no Rows/Columns (0028,0010/0011) to give it a shape; "
                        f"re-export the image.")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (TypeError, ValueError):
        raise DataError(f"{path}: DICOM Rows/Columns are not numbers; re-export the image.") from None
    check_image_size(path, cols, rows)


def dicom_num_frames(path: str) -> int:
    return check_dicom_header(path)


def _frame_item(ds, frame: int, seq: str):
    """The functional-group item ``seq`` for a frame: per-frame first, then shared."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        g = ds.get(groups)
        if g is not None and len(g) > i and seq in g[i] and len(g[i][seq].value) > 0:
            return g[i][seq].value[0]
    return None


def _first(value) -> float | None:
    if value is None:
        return None
    try:
        from pydicom.multival import MultiValue

        if isinstance(value, (MultiValue, list, tuple)):
            value = value[0] if len(value) else None
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _rescale(ds, frame: int, path: str) -> tuple[float, float]:
    src = ds if "RescaleSlope" in ds or "RescaleIntercept" in ds else _frame_item(ds, frame, "PixelValueTransformationSequence")
    if src is None:
        return 1.0, 0.0
    slope = _first(src.get("RescaleSlope", 1.0))
    inter = _first(src.get("RescaleIntercept", 0.0))
    return check_rescale(path, 1.0 if slope is None else slope, 0.0 if inter is None else inter)


def check_rescale(path: str, slope: float, intercept: float) -> tuple[float, float]:
    """A Modality LUT that keeps the image: slope 0 maps every pixel to the intercept (a blank image that
    would be classified all the same), a non-finite slope or intercept to NaN. Both are export faults."""
    if slope == 0 or not np.isfinite(slope):
        raise DataError(f"{path}: DICOM RescaleSlope (0028,1053) is {slope:g}, which maps every pixel to "
                        f"{'the same value (a blank image)' if slope == 0 else 'NaN'}; fix the tag in the export "
                        f"(1 for most images) or remove the file from the dataset.")
    if not np.isfinite(intercept):
        raise DataError(f"{path}: DICOM RescaleIntercept (0028,1052) is {intercept:g}; fix the tag in the export "
                        f"or remove the file from the dataset.")
    if abs(slope) > MAX_RESCALE_SLOPE or abs(intercept) > MAX_RESCALE_INTERCEPT:
        # 16-bit values times 1e30 overflow float32 to inf, and any CT window then makes the image blank
        tag, value = (("RescaleSlope (0028,1053)", slope) if abs(slope) > MAX_RESCALE_SLOPE
                      else ("RescaleIntercept (0028,1052)", intercept))
        raise DataError(f"{path}: DICOM {tag} is {value:g}, beyond any scanner's range (|slope| up to "
                        f"{MAX_RESCALE_SLOPE:g}, |intercept| up to {MAX_RESCALE_INTERCEPT:g}): the pixel values would "
                        f"overflow; fix the tag in the export (slope 1, intercept -1024 for most CT) or remove the "
                        f"file from the dataset.")
    return slope, intercept


# Modality LUTs seen in practice: CT slope 1 (intercept -1024), MR/PET slopes from ~1e-4 to a few thousand.
MAX_RESCALE_SLOPE = 1e6
MAX_RESCALE_INTERCEPT = 1e7


def _window(ds, frame: int) -> tuple[float, float, str] | None:
    src = ds if "WindowCenter" in ds and "WindowWidth" in ds else _frame_item(ds, frame, "FrameVOILUTSequence")
    if src is None or "WindowCenter" not in src or "WindowWidth" not in src:
        return None
    c, w = _first(src.WindowCenter), _first(src.WindowWidth)
    if c is None or w is None or not np.isfinite(c) or not np.isfinite(w) or w <= 0:
        return None
    func = str(src.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return c, w, func


def apply_window(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI window (PS3.3 C.11.2.1.2) straight to [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width <= 1.0:  # LINEAR with width 1 is a threshold
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _grey(ds, arr: np.ndarray, frame: int, path: str) -> np.ndarray:
    from pydicom import pixels

    if not np.issubdtype(arr.dtype, np.integer):  # float pixel data: no LUTs apply, use its own range
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: DICOM float pixel data contains NaN/inf values.")
        x = minmax(arr)
    else:
        if "ModalityLUTSequence" in ds:
            x = pixels.apply_modality_lut(arr, ds).astype(np.float64)
        else:
            slope, inter = _rescale(ds, frame, path)
            x = arr.astype(np.float64) * slope + inter
        if "VOILUTSequence" in ds:
            item = ds.VOILUTSequence[0]
            bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
            x = pixels.apply_voi(x, ds, index=0).astype(np.float64) / float(2 ** bits - 1)
        else:
            win = _window(ds, frame)
            x = apply_window(x, *win) if win is not None else minmax(x)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        x = 1.0 - x  # MONOCHROME1: low values are bright
    return x


@functools.lru_cache(maxsize=1)
def _dictionary_names() -> frozenset[str]:
    from pydicom.datadict import DicomDictionary, keyword_dict
    from pydicom.uid import UID_dictionary

    return frozenset(keyword_dict) | {e[2] for e in DicomDictionary.values()} | {e[0] for e in UID_dictionary.values()}


def _keyword_or_description(text: str) -> bool:
    """Quoted text that is safe to show: an element keyword/name or a UID name from the standard."""
    return text in _dictionary_names()


def _masked(exc: Exception) -> str:
    """An exception message on one line, with quoted values removed (they could be element values, i.e.
    patient data) unless the quote is a DICOM keyword or element name; several plugin failures become
    ``plugin: first sentence; ...``. Never cut mid-sentence."""
    def mask(m: re.Match) -> str:
        return m.group(0) if _keyword_or_description(m.group(2)) else "'…'"

    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    if len(lines) > 1 and lines[0].rstrip(":").endswith("plugins"):  # pydicom: "... all available plugins:"
        lines = lines[1:]
    parts = []
    for line in lines:
        line = re.sub(r"(?<![A-Za-z])(['\"])(.*?)\1(?![A-Za-z])", mask, line)  # not apostrophes (dataset's)
        sentence = re.split(r"(?<=[.!?])\s|\s-\s", line, maxsplit=1)[0].rstrip(".")
        parts.append(sentence)
    return "; ".join(parts)


def _short_by(elem) -> int | None:
    length, value = getattr(elem, "length", None), getattr(elem, "value", None)
    if isinstance(length, int) and length != 0xFFFFFFFF and isinstance(value, (bytes, bytearray)) \
            and len(value) < length:
        return length - len(value)
    return None


def _truncated(path: str, ds) -> int | None:
    """Bytes missing when the file ends inside an element (pydicom stops silently at the end of a
    truncated file); 0 when nothing was read after the header. Pixel data decides when present; without
    it only Part 10 files (with the 'DICM' preamble) count, as other files may simply not be DICOM."""
    if 0x7FE00010 in ds:
        return _short_by(ds.get_item(0x7FE00010))
    with open(path, "rb") as fh:
        if fh.read(132)[128:132] != b"DICM":
            return None
    last = None
    for last in ds.elements():
        pass
    return 0 if last is None else _short_by(last)


def _truncation_error(path: str, ds) -> DataError | None:
    missing = _truncated(path, ds)
    if missing is None:
        return None
    what = f"{missing} bytes short of its last element" if missing else "only its header is present"
    return DataError(f"{path}: DICOM file is truncated ({os.path.getsize(path)} bytes; {what}); re-copy it "
                     f"from the source, or remove it from the dataset.")


def read_dicom(path: str, index: int | None = None) -> np.ndarray:
    """One frame of a DICOM file as float32 HxWx3 in [0, 1] (see the module docstring for the rules)."""
    path = os.fspath(path)
    with _quiet_pydicom():  # element access is lazy: keep validation warnings (which quote values) off throughout
        return _read_dicom(path, index)


def _read_dicom(path: str, index: int | None) -> np.ndarray:
    from pydicom import pixels

    ds = _read(path)
    cut = _truncation_error(path, ds)
    if cut is not None:  # said first: a truncated file also looks like one with no pixel data
        raise cut
    if not _has_image(ds):
        sop = getattr(ds.get("SOPClassUID"), "name", "unknown")
        raise DataError(f"{path}: DICOM has no pixel data (SOP class {sop}); only image objects can be used.")
    _check_decodable(path, ds)
    _check_size(path, ds)
    _ensure_transfer_syntax(ds)
    frames = _num_frames(ds)
    frame = frames // 2 if index is None else index
    if not 0 <= frame < frames:
        raise DataError(f"{path}: frame {frame} requested but the file has {frames} frame(s).")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        with _quiet_pydicom():
            arr = pixels.pixel_array(ds, index=frame if frames > 1 else None)
            if photometric == "PALETTE COLOR":
                desc = ds.get("RedPaletteColorLookupTableDescriptor")
                bits = int(desc[2]) if desc is not None else 8
                rgb = pixels.apply_color_lut(arr, ds).astype(np.float64) / float(2 ** (16 if bits > 8 else 8) - 1)
                return to_rgb(rgb, path)
    except DataError:
        raise
    except Exception as exc:  # pixel decoding errors describe the pixel data; quoted values are still masked
        raise DataError(f"{path}: DICOM pixel data cannot be decoded ({type(exc).__name__}: {_masked(exc)}); "
                        f"re-export the image or remove it from the dataset.") from None
    if arr.ndim == 3 and arr.shape[-1] == 3 and int(ds.get("SamplesPerPixel", 1)) == 3:
        if not np.issubdtype(arr.dtype, np.integer):
            return to_rgb(minmax(arr), path)
        bits = int(ds.get("BitsStored", 8) or 8)
        return to_rgb(arr.astype(np.float64) / float(2 ** bits - 1), path)
    if arr.ndim != 2:
        raise DataError(f"{path}: unexpected DICOM pixel array shape {arr.shape} for frame {frame}.")
    return to_rgb(_grey(ds, arr, frame, path), path)
