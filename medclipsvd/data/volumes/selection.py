"""Which DICOM series of an export become samples, and why each of the others does not.

A PACS or research export holds far more than the CT/MR series a model should see: RT structure sets, dose
grids and plans, segmentations, structured reports, key-object notes, presentation states, directory files,
localizers (scouts), secondary captures and derived reformats. ``survey`` reads the headers of a folder tree
once (series.py) and gives every series, volume and object a **fate**:

* ``used`` - a sample;
* ``not image`` - not an image storage SOP class (SEG, RTSTRUCT, RTDOSE, RTPLAN, SR, KO, PR, DICOMDIR/DIRFILE,
  ...): never a sample, whatever the options;
* ``filtered`` - an image left out by the ``SeriesFilter`` (localizers, secondary captures and derived images by
  default; modality, SeriesDescription pattern, ImageType, slice thickness, minimum slices, one series per
  study), with the reason;
* ``refused`` - a series that cannot be read as one regular volume (a missing slice, mixed orientation, a
  file that is not DICOM, ...), with the one-line reason. ``on_bad_series`` decides: ``error`` (default)
  makes the load fail after listing every refused series, ``skip`` leaves them out and lists them.

``data check`` prints the fates as one table (``format_table``). Descriptions and patient identifiers are
never printed: reasons name the rule, rows carry pseudonyms (pseudonyms.py)."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field, fields

from medclipsvd.errors import DataError

PER_STUDY = ("all", "thinnest", "largest")
ON_BAD = ("error", "skip")
INCLUDABLE = ("localizer", "secondary", "derived")
# modalities of objects that are never images, for files that lack a SOP Class UID
NOT_IMAGE_MODALITIES = {"SEG": "segmentation", "RTSTRUCT": "RT structure set", "RTDOSE": "RT dose",
                        "RTPLAN": "RT plan", "RTRECORD": "RT treatment record", "SR": "structured report",
                        "KO": "key object selection", "PR": "presentation state", "REG": "registration",
                        "FID": "fiducials", "DOC": "encapsulated document", "PLAN": "plan"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame variants .7.1 ... .7.4
DIRECTORY_SOP = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage: DICOMDIR, Philips DIRFILE


@dataclass(frozen=True)
class SeriesFilter:
    """The series selection rules (CLI ``--series KEY=VALUE``, YAML ``series:``, API ``series=``).

    ``modality``: keep these modalities only (empty: any); ``description``: a shell pattern the
    SeriesDescription must match (case-insensitive, e.g. ``*AX*``); ``image_type``: values the ImageType must
    all hold (e.g. ``AXIAL``); ``thickness``: (min, max) SliceThickness in mm, either may be None;
    ``min_slices``: fewer slices is filtered; ``per_study``: ``all`` series of a study, or only the
    ``thinnest`` (then most slices) or the ``largest`` (most slices); ``include``: keep what is left out by
    default (``localizer``, ``secondary``, ``derived``); ``on_bad_series``: ``error`` or ``skip``."""

    modality: tuple[str, ...] = ()
    description: str | None = None
    image_type: tuple[str, ...] = ()
    thickness: tuple[float | None, float | None] = (None, None)
    min_slices: int = 2
    per_study: str = "all"
    include: tuple[str, ...] = ()
    on_bad_series: str = "error"

    @classmethod
    def parse(cls, spec) -> "SeriesFilter":
        """A SeriesFilter from itself, None, a mapping (YAML) or ``KEY=VALUE`` strings (CLI); DataError naming
        the key and the allowed values for anything else."""
        if spec is None:
            return cls()
        if isinstance(spec, SeriesFilter):
            return spec.validate()
        if isinstance(spec, str):
            spec = [spec]
        if isinstance(spec, (list, tuple)):
            pairs = {}
            for item in spec:
                key, eq, value = str(item).partition("=")
                if not eq:
                    raise DataError(f"series filter {item!r}: expected KEY=VALUE (keys: {_keys()}), e.g. "
                                    f"modality=CT or per_study=thinnest")
                pairs[key.strip().replace("-", "_")] = value.strip()
            spec = pairs
        if not isinstance(spec, dict):
            raise DataError(f"series filter: expected a mapping of {_keys()}, not {type(spec).__name__}")
        unknown = [k for k in spec if k not in {f.name for f in fields(cls)}]
        if unknown:
            raise DataError(f"series filter: unknown key(s) {unknown}; use {_keys()}")
        values = {}
        for k, v in spec.items():
            if v is None:
                continue
            if k in ("modality", "image_type", "include"):
                items = v.split(",") if isinstance(v, str) else list(v)
                values[k] = tuple(str(x).strip().upper() if k != "include" else str(x).strip().lower()
                                  for x in items if str(x).strip())
            elif k == "thickness":
                values[k] = _range(v)
            elif k == "min_slices":
                try:
                    values[k] = int(v)
                except (TypeError, ValueError):
                    raise DataError(f"series filter min_slices={v!r}: expected a whole number of slices") from None
            else:
                values[k] = str(v).strip()
        return cls(**values).validate()

    def validate(self) -> "SeriesFilter":
        if self.per_study not in PER_STUDY:
            raise DataError(f"series filter per_study={self.per_study!r}: use one of {', '.join(PER_STUDY)}")
        if self.on_bad_series not in ON_BAD:
            raise DataError(f"--on-bad-series {self.on_bad_series}: use error or skip")
        bad = [x for x in self.include if x not in INCLUDABLE]
        if bad:
            raise DataError(f"series filter include={','.join(bad)}: use any of {', '.join(INCLUDABLE)}")
        if self.min_slices < 1:
            raise DataError(f"series filter min_slices={self.min_slices}: must be at least 1")
        lo, hi = self.thickness
        if lo is not None and hi is not None and lo > hi:
            raise DataError(f"series filter thickness={lo:g}-{hi:g}: the minimum is above the maximum")
        return self

    def to_dict(self) -> dict:
        """Only what differs from the defaults (a run's record)."""
        default = SeriesFilter()
        return {f.name: (list(v) if isinstance(v, tuple) else v) for f in fields(self)
                if (v := getattr(self, f.name)) != getattr(default, f.name)}


def _keys() -> str:
    return ", ".join(f.name for f in fields(SeriesFilter))


def _range(v) -> tuple[float | None, float | None]:
    """``1-3``, ``-3`` (at most 3), ``1-`` (at least 1), ``2`` (exactly 2) or a two-item list, in mm."""
    try:
        if isinstance(v, (list, tuple)) and len(v) == 2:
            lo, hi = v
        else:
            text = str(v).strip()
            lo, sep, hi = text.partition("-")
            if not sep:
                lo = hi = text
        conv = [None if x is None or str(x).strip() == "" else float(x) for x in (lo, hi)]
    except (TypeError, ValueError):
        raise DataError(f"series filter thickness={v!r}: expected MIN-MAX in mm, e.g. 0.5-3, -3 or 1-") from None
    return conv[0], conv[1]


@dataclass(frozen=True)
class Fate:
    """One row of the series table: a series, volume or object and what happens to it."""

    path: str
    fate: str  # used | not image | filtered | refused
    reason: str = ""
    modality: str = ""
    files: int = 0
    slices: int = 0
    thickness: float | None = None
    patient: str = ""  # pseudonym (or folder name)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("path", "fate", "reason", "modality", "files", "slices",
                                              "thickness", "patient")}


@dataclass
class Survey:
    """What a folder tree holds: the volumes and 2-D files that are samples, and a fate for everything."""

    volumes: list = field(default_factory=list)  # SeriesRef, used
    flat: list[str] = field(default_factory=list)  # 2-D image files (and multi-frame files), used
    fates: list[Fate] = field(default_factory=list)
    patients: dict[str, str] = field(default_factory=dict)  # file -> PatientID pseudonym, for 2-D DICOM files

    @property
    def refused(self) -> list[Fate]:
        return [f for f in self.fates if f.fate == "refused"]


# ------------------------------------------------------------------------------------------ classification
def not_image(sop: str, modality: str) -> str | None:
    """What a DICOM object is when it is not an image (None for image storage SOP classes)."""
    if sop == DIRECTORY_SOP:
        return "DICOMDIR / directory file"
    if sop:
        from pydicom.uid import UID_dictionary

        entry = UID_dictionary.get(sop)
        if entry is not None:
            name = entry[0]
            if "Image Storage" in name or "Volume Storage" in name:
                return None
            return name.replace(" Storage", "").strip()
    return NOT_IMAGE_MODALITIES.get(modality)


def default_exclusion(h, include: tuple[str, ...]) -> str | None:
    """Why an image is left out unless ``include`` says otherwise (localizer, secondary capture, derived)."""
    if "LOCALIZER" in h.image_type and "localizer" not in include:
        return "localizer (ImageType LOCALIZER); series include=localizer keeps it"
    if (h.sop == SECONDARY_CAPTURE or h.sop.startswith(SECONDARY_CAPTURE + ".")) and "secondary" not in include:
        return "secondary capture (SOP class); series include=secondary keeps it"
    if h.image_type[:1] == ("DERIVED",) and "derived" not in include:
        return "derived image (ImageType DERIVED); series include=derived keeps it"
    return None


def filter_reason(flt: SeriesFilter, h, n_slices: int, thickness: float | None, geometry: bool = True) -> str | None:
    """Why a series (first header ``h``) does not pass ``flt`` (None: it passes). ``geometry=False``: only the
    rules that need no slice ordering (thickness and slice count are checked once the stack is known)."""
    why = default_exclusion(h, flt.include)
    if why:
        return why
    if flt.modality and h.modality not in flt.modality:
        return f"modality {h.modality or 'unknown'} not in {','.join(flt.modality)}"
    if flt.description and not fnmatch.fnmatchcase(h.description.upper(), flt.description.upper()):
        return f"SeriesDescription does not match {flt.description!r}"
    missing = [v for v in flt.image_type if v not in h.image_type]
    if missing:
        return f"ImageType lacks {','.join(missing)}"
    if not geometry:
        return None
    lo, hi = flt.thickness
    if (lo is not None or hi is not None) and thickness is None:
        return "no SliceThickness to compare with the thickness range"
    if thickness is not None and ((lo is not None and thickness < lo - 1e-6) or (hi is not None and thickness > hi + 1e-6)):
        return f"slice thickness {thickness:g} mm outside {_fmt_range(lo, hi)}"
    if n_slices < flt.min_slices:
        return f"{n_slices} slice(s), fewer than min_slices={flt.min_slices}"
    return None


def _fmt_range(lo, hi) -> str:
    return f"{'' if lo is None else f'{lo:g}'}-{'' if hi is None else f'{hi:g}'} mm"


# ------------------------------------------------------------------------------------------------ survey
def survey(folder: str | os.PathLike, flt: SeriesFilter | None = None, recursive: bool = True) -> Survey:
    """Every series, volume and DICOM object under ``folder`` with its fate (see the module docstring). A
    series split across sub-folders is one row, at their common ancestor (``series.series_units``); each
    phase of a 4-D series or NIfTI is a row (and a sample) of its own; a damaged NIfTI is a refused row."""
    from pathlib import Path

    from medclipsvd.data.readers.formats import image_suffixes
    from medclipsvd.data.volumes import series as S

    flt = flt or SeriesFilter()
    out = Survey()
    seq = iter(range(1 << 62))  # discovery order: samples keep the order the scan has always given them
    candidates: list[tuple] = []  # (order, SeriesRef, study key) of series that passed the filter
    volumes: list[tuple] = []  # (order, SeriesRef) of NIfTI volumes
    two_d: list[tuple] = []  # (order, file, header or None): decided once we know whether series were found
    top = os.fspath(folder)
    tree = S.walk(folder) if recursive else [(top, [], sorted(os.listdir(folder)))]
    found: list[tuple] = []  # (folder, group, headers) of every image series, for series_units
    listed: list[tuple] = []  # (folder, file names, files of its series and objects, 2-D headers), walk order
    for dirpath, _dirs, filenames in tree:
        headers, skip = {}, set()
        for g, hs in S.folder_groups(dirpath):
            h = hs[0]
            skip.update(x.file for x in hs)
            bad = sorted((x for x in hs if x.error), key=lambda x: x.file)
            if bad:
                where = bad[0].file if g.startswith("bad:") else dirpath
                out.fates.append(Fate(where, "refused", bad[0].error, h.modality, len(hs), patient=h.patient))
            elif (what := not_image(h.sop, h.modality)) is not None:
                where = dirpath if len(hs) > 1 else h.file
                out.fates.append(Fate(where, "not image", what, h.modality, len(hs), patient=h.patient))
            elif S._is_series(hs):
                found.append((dirpath, g, hs))
            else:
                skip.difference_update(x.file for x in hs)
                headers.update((x.file, x) for x in hs)
        listed.append((dirpath, filenames, skip, headers))
    units: dict[str, list] = {}  # a series split across folders is listed with their common ancestor
    for unit in S.series_units(top, found):
        units.setdefault(unit[0], []).append(unit)
    for dirpath, filenames, skip, headers in listed:
        for base, key, single, hs, where in units.get(dirpath, []):
            path = base if single else f"{base}{S.SERIES_SEP}{key}"
            # header rules first: a 3-plane localizer is filtered as a localizer, not refused as a broken stack
            why = filter_reason(flt, hs[0], len(hs), hs[0].thickness, geometry=False)
            if why:
                out.fates.append(Fate(path, "filtered", why, hs[0].modality, len(hs), len(hs), hs[0].thickness,
                                      hs[0].patient))
                continue
            try:
                refs = S._series_refs(base, key, single, hs, where)  # one per phase of a 4-D series
            except DataError as exc:
                out.fates.append(Fate(path, "refused", str(exc), hs[0].modality, len(hs), patient=hs[0].patient))
                continue
            for ref in refs:
                why = filter_reason(flt, hs[0], ref.n_slices, ref.thickness)
                if why:
                    out.fates.append(Fate(ref.path, "filtered", why, ref.modality, len(ref.files), ref.n_slices,
                                          ref.thickness, ref.patient))
                else:
                    candidates.append((next(seq), ref, ref.study or _study_folder(top, base)))
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            low = fn.lower()
            if fn.startswith(".") or p in skip:
                continue
            if low.endswith((".nii", ".nii.gz")):
                try:  # a truncated or malformed file is listed with the other refused ones, not the only one named
                    refs = S.nifti_refs(p) if S.is_volume_file(p) else None
                except DataError as exc:
                    out.fates.append(Fate(p, "refused", str(exc), "", 1))
                    continue
                if refs is None:  # a 2-D NIfTI image
                    two_d.append((next(seq), p, None))
                    continue
                for ref in refs:  # each volume of a 4-D NIfTI is a sample
                    if ref.n_slices < flt.min_slices:
                        out.fates.append(Fate(ref.path, "filtered", f"{ref.n_slices} slice(s), fewer than "
                                                                    f"min_slices={flt.min_slices}", "", 1, ref.n_slices))
                    else:
                        volumes.append((next(seq), ref))
                        out.fates.append(Fate(ref.path, "used", "NIfTI volume", "", 1, ref.n_slices))
            elif low == "dicomdir":
                out.fates.append(Fate(p, "not image", dicomdir_summary(p)))
            elif low.endswith(image_suffixes()) or S._is_dicom(Path(p)):
                two_d.append((next(seq), p, headers.get(p)))
    volumes += _apply_per_study(candidates, flt, out)
    out.volumes = [ref for _, ref in sorted(volumes, key=lambda x: x[0])]
    beside_series = bool(out.volumes) or any(f.slices > 1 for f in out.fates if f.fate in ("used", "filtered"))
    for _, p, h in two_d:
        why = None
        if h is not None:
            why = default_exclusion(h, flt.include)
            # secondary captures and derived images alone are a 2-D dataset (exported screenshots, the demo
            # data): left out only where they sit beside series, as extras of a study
            if why and not why.startswith("localizer") and not beside_series:
                why = None
            if why is None and beside_series and flt.modality and h.modality not in flt.modality:
                why = f"modality {h.modality or 'unknown'} not in {','.join(flt.modality)}"
        if why:
            out.fates.append(Fate(p, "filtered", why, h.modality, 1, 1, patient=h.patient))
            continue
        out.flat.append(p)
        if h is not None and h.patient:
            out.patients[p] = h.patient
    return out


def dicomdir_summary(path: str) -> str:
    """What a DICOMDIR index lists: how many image files it references and which of them are missing (an
    export copied without some of its files). Only record types and file ids are read - never a patient
    record's values."""
    import pydicom

    from medclipsvd.data.readers.dicom import _quiet_pydicom

    try:
        with _quiet_pydicom():
            ds = pydicom.dcmread(path, force=True)
            records = list(ds.get("DirectoryRecordSequence") or [])
            refs = [(str(r.get("DirectoryRecordType", "")).upper(), r.get("ReferencedFileID")) for r in records]
    except Exception as exc:  # noqa: BLE001 - an index we cannot parse is listed, not fatal
        return f"DICOMDIR / directory file (index not readable: {type(exc).__name__})"
    base = os.path.dirname(path)
    files, missing = [], []
    for kind, ref in refs:
        if ref is None:
            continue
        parts = [ref] if isinstance(ref, str) else [str(x) for x in ref]
        if not parts or any(x in ("", ".", "..") or "/" in x or "\\" in x for x in parts):
            continue  # a file id that would leave the export's folder is not followed
        files.append(kind)
        if not os.path.exists(os.path.join(base, *parts)):
            missing.append("/".join(parts))
    series = sum(1 for kind, _ in refs if kind == "SERIES")
    text = f"DICOMDIR index: {series} series, {len(files)} file(s) referenced"
    if missing:
        text += f", {len(missing)} missing (first: {missing[0]}) - re-copy the export"
    return text


def _study_folder(top: str, dirpath: str) -> str:
    """Without a StudyInstanceUID: the first folder below the surveyed one (the patient/study folder)."""
    rel = os.path.relpath(dirpath, top)
    return "folder:" + (rel.split(os.sep)[0] if rel != "." else dirpath)


def _series_of(ref) -> str:
    """The series a volume belongs to: its path without the ``@t<k>`` of a phase."""
    from medclipsvd.data.volumes.series import PHASE_SEP

    return ref.path.rpartition(PHASE_SEP)[0] if ref.phase is not None else ref.path


def _apply_per_study(candidates: list[tuple], flt: SeriesFilter, out: Survey) -> list[tuple]:
    """The (order, SeriesRef) kept by the per-study rule; the others get a ``filtered`` row."""
    by_study: dict[str, list] = {}
    for order, ref, study in candidates:
        by_study.setdefault(study, []).append((order, ref))
    kept = []
    for refs in by_study.values():
        keep = refs
        if flt.per_study != "all" and len(refs) > 1:
            if flt.per_study == "thinnest":
                best = min(refs, key=lambda o_r: (o_r[1].thickness if o_r[1].thickness is not None else float("inf"),
                                                  -o_r[1].n_slices, o_r[0]))
            else:
                best = min(refs, key=lambda o_r: (-o_r[1].n_slices, o_r[0]))
            # the phases of a 4-D series are one series here: the one chosen keeps all its phases
            keep = [o_r for o_r in refs if _series_of(o_r[1]) == _series_of(best[1])]
            for _, r in refs:
                if _series_of(r) != _series_of(best[1]):
                    out.fates.append(Fate(r.path, "filtered", f"per_study={flt.per_study}: its study keeps "
                                          f"{_series_of(best[1])}", r.modality, len(r.files), r.n_slices,
                                          r.thickness, r.patient))
        for o, r in keep:
            kept.append((o, r))
            out.fates.append(Fate(r.path, "used", "", r.modality, len(r.files), r.n_slices, r.thickness, r.patient))
    return kept


class SelectionError(DataError):
    """Series that cannot be read (under ``on_bad_series=error``), or nothing left to use; ``fates`` is the
    whole series table (so ``data check`` can print it before the one-line error)."""

    def __init__(self, message: str, fates: list[Fate]):
        super().__init__(message)
        self.fates = fates


def left_out_warning(fates: list[Fate], where: str) -> str | None:
    """The one-line warning a load gives when series or objects were left out (never a silent drop)."""
    out = [f for f in fates if f.fate != "used"]
    if not out:
        return None
    kinds = {}
    for f in out:
        kinds[f.fate] = kinds.get(f.fate, 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in kinds.items())
    return (f"{where}: {len(out)} series/object(s) left out ({detail}); `medclipsvd data check` lists "
            f"each with the reason (--series include=... keeps localizers, secondary captures or derived series)")


def refused_error(refused: list[Fate], where: str = "") -> DataError:
    """One line naming every refused series (first five in full) and the two ways on."""
    if len(refused) == 1:
        return DataError(f"{refused[0].reason} (or pass --on-bad-series skip to leave this series out)")
    shown = "; ".join(f.reason.rstrip(".") for f in refused[:5])
    more = f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
    return DataError(f"{where + ': ' if where else ''}{len(refused)} series cannot be used: {shown}{more}. Fix "
                     f"them, or pass --on-bad-series skip to leave them out (`medclipsvd data check` lists them "
                     f"all).")


def _rel(path: str, root: str) -> str:
    return (path[len(root):].lstrip(os.sep) or ".") if root and path.startswith(root) else path


def format_table(fates: list[Fate], root: str = "") -> list[str]:
    """The series table ``data check`` prints: one row per series / volume / object, used first."""
    if not fates:
        return []
    order = {"used": 0, "filtered": 1, "not image": 2, "refused": 3}
    counts = {k: sum(1 for f in fates if f.fate == k) for k in order}
    lines = ["", "  series: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n),
             f"  {'fate':<9} {'mod.':<5} {'files':>5} {'slices':>6} {'thick':>5} {'patient':<15} path  [reason]"]
    for f in sorted(fates, key=lambda f: (order.get(f.fate, 9), f.path)):
        thick = "" if f.thickness is None else f"{f.thickness:.3g}"
        line = (f"  {f.fate:<9} {f.modality[:5]:<5} {f.files or '':>5} {f.slices or '':>6} {thick:>5} "
                f"{f.patient[:15]:<15} {_rel(f.path, root)}")
        if f.reason and f.fate != "used":
            line += f"  [{_short(f.reason, f.path) if f.fate == 'refused' else f.reason}]"
        lines.append(line)
    return lines


def _short(reason: str, path: str) -> str:
    """A refusal's reason without the path it starts with (the row already shows it)."""
    for p in (path, path.split("#")[0]):
        if reason.startswith(p):
            return reason[len(p):].lstrip(": ") or reason
    return reason

def scan_folder(folder: str | os.PathLike, recursive: bool = True, flt=None) -> tuple[list[SeriesRef], list[str]]:
    """Volumes under ``folder`` (series, NIfTI) and the remaining 2-D image files, in discovery order.

    A folder with several series gives ``<folder>#series=<key>`` paths; a series split across folders is one
    volume (``<ancestor>#series=<key>``); each phase of a 4-D series or NIfTI is one (``...@t<k>``). Which
    series and objects count is ``selection.survey``'s decision (``flt``: a SeriesFilter, default rules
    without one); a series that cannot be read is a DataError naming every such series, unless the filter's
    ``on_bad_series`` is ``skip``."""
    flt = flt or SeriesFilter()
    found = survey(folder, flt, recursive)
    if found.refused and flt.on_bad_series == "error":
        raise refused_error(found.refused, os.fspath(folder))
    return found.volumes, found.flat


def _phases_message(p: str, refs: list) -> str:
    return (f"{p}: is 4-D ({len(refs)} phases/volumes: time points or b-values) where one volume is expected; "
            f"pick one as {refs[0].path} ... {refs[-1].path} (numbered from 0), or put it in a class folder, "
            f"where each phase becomes its own sample.")


def resolve(path: str | os.PathLike, flt=None) -> SeriesRef:
    """The one volume a sample path names; DataError (with the fix) when it names none or several."""
    from pathlib import Path

    from medclipsvd.data.volumes.series import (PHASE_SEP, SERIES_SEP, SeriesRef, _is_dicom, _is_series,
                                                _nifti_depth, _series_refs, folder_groups, nifti_phases, nifti_refs,
                                                read_header, series_units, walk)

    p = os.fspath(path)
    folder, sep, key = p.rpartition(SERIES_SEP)
    if sep:
        base, _, phase = key.partition(PHASE_SEP)
        if os.path.isfile(folder):  # a volume of a 4-D NIfTI
            for ref in nifti_refs(folder):
                if ref.path == p:
                    return ref
            raise DataError(f"{p}: {folder} has no volume {PHASE_SEP}{phase} ({nifti_phases(folder)} volume(s), "
                            f"numbered from 0); check the path.")
        # only the named series is ordered, so a bad series beside it does not stop this one; the whole tree
        # is looked at, as the series may have parts in sub-folders
        found = [(d, g, hs) for d, _, _ in (walk(folder) if os.path.isdir(folder) else [])
                 for g, hs in folder_groups(d) if _is_series(hs) and not any(h.error for h in hs)]
        for anc, k, _single, hs, where in series_units(folder, found):
            if k == base and anc == folder:
                refs = _series_refs(anc, k, False, hs, where)
                match = [r for r in refs if r.path == p]
                if match:
                    return match[0]
                if len(refs) > 1:
                    raise DataError(_phases_message(p, refs))
                if not phase:
                    return refs[0]
        raise DataError(f"{folder}: no longer holds series {key} (files changed since the split was written); "
                        f"write the split again with `medclipsvd data split`.")
    if not os.path.exists(p):
        raise DataError(f"{p}: not found. Check the data root and the split file's relative paths.")
    if os.path.isdir(p):
        vols, flat = scan_folder(p, recursive=True, flt=flt)
        if not vols and flt is None:  # a path that names a localizer / derived series itself (a CSV row, a
            # sample kept with include=...) is that series
            vols, flat = scan_folder(p, recursive=True, flt=SeriesFilter(include=("localizer", "secondary", "derived")))
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
        if len({v.path.rpartition(PHASE_SEP)[0] for v in vols}) == 1 and vols[0].phase is not None:
            raise DataError(_phases_message(p, vols))
        raise DataError(f"{p}: holds {len(vols)} volumes (mixed SeriesInstanceUIDs or several NIfTI files) where one "
                        f"sample is expected; point to one series folder, or list the folder's parent as a "
                        f"class/patient folder so that each series becomes its own sample.")
    from medclipsvd.data.readers.formats import file_kind

    kind = file_kind(p)
    if kind == "nifti":
        depth = _nifti_depth(p)
        if nifti_phases(p) > 1:
            raise DataError(_phases_message(p, nifti_refs(p)))
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
