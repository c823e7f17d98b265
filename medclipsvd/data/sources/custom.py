"""Hospital (custom) datasets: a folder of class folders, or a CSV ``path,label[,patient_id][,split]``.

Without a given split, a seeded, stratified split keeps every patient in one split (``splits``); it can be
written to a split file in the benchmark format so later runs read exactly the same split."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from medclipsvd.data.checks import RawEntry
from medclipsvd.data.readers.formats import file_kind, image_suffixes
from medclipsvd.data.sources.confine import RootGuard
from medclipsvd.data.sources.layouts import Listing
from medclipsvd.data.sources.splits import (DEFAULT_FRACTIONS, assign_splits, check_patient_leak, read_custom_split,
                                            write_split_json)
from medclipsvd.data.volumes.policy import InputPolicy
from medclipsvd.errors import DataError

CSV_COLUMNS = ("path", "label", "patient_id", "split")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}
SKIP_SUFFIXES = (".txt", ".json", ".csv", ".md", ".xml", ".yaml", ".yml", ".log", ".html", ".pdf", ".zip")


def _is_image(p: Path) -> bool:
    name = p.name.lower()
    if name.startswith(".") or name.endswith(SKIP_SUFFIXES):
        return False
    if name.endswith(image_suffixes()):
        return True
    if name == "dicomdir":
        return False
    return file_kind(p) == "dicom"  # extension-less DICOM exports (sniffed by the 'DICM' preamble)


def _classname(folder: str) -> str:
    return folder.replace("_", " ")


def _expand(path: Path, opts: InputPolicy) -> list[int | None]:
    """Which frames of one 2-D file become samples (see the frame policy in dicom.py)."""
    if file_kind(path) == "dicom" and opts.dicom_frames == "all":
        from medclipsvd.data.readers.dicom import dicom_num_frames

        n = dicom_num_frames(str(path))
        return list(range(n)) if n > 1 else [None]
    return [None]


def _is_multiframe_volume(path: Path, opts: InputPolicy) -> bool:
    if opts.dicom_frames != "volume" or file_kind(path) != "dicom":
        return False
    from medclipsvd.data.volumes.series import read_header

    return read_header(str(path)).frames > 1


def _volume_items(split, path: str, classname: str, patient, opts: InputPolicy) -> list[tuple]:
    return [(split, Path(path), classname, patient, idx, opts.view) for idx in opts.planes(path)]


def _refuse(fates: list, ref, reason: str) -> None:
    """Turn a series' ``used`` row into ``refused`` (its reason), so --on-bad-series decides as for a broken one."""
    from medclipsvd.data.volumes.selection import Fate

    row = Fate(ref.path, "refused", reason, ref.modality, len(ref.files), ref.n_slices, ref.thickness, ref.patient)
    at = [i for i, f in enumerate(fates) if f.path == ref.path and f.fate == "used"]
    if at:
        fates[at[-1]] = row
    else:
        fates.append(row)


def _patient_of(cdir: Path, path: str) -> str | None:
    from medclipsvd.data.volumes.series import SERIES_SEP

    folder = Path(path.split(SERIES_SEP)[0])
    if folder.is_file():
        folder = folder.parent
    parts = folder.relative_to(cdir).parts
    return parts[0] if parts else None


def _confine_tree(folder: Path, guard: RootGuard, root: Path) -> None:
    """Every file and sub-folder under ``folder`` checked against the root before anything there is opened
    (series detection reads DICOM headers); see RootGuard.check_tree."""
    guard.check_tree(folder, base=root, source=str(root))


def scan_folder(root: Path, opts: InputPolicy | None = None, guard: RootGuard | None = None, flt=None,
                fates: list | None = None):
    """Items (split or None, path, classname, patient_id, index, view) of a folder dataset.

    ``flt``: the SeriesFilter (selection.py); ``fates``, when given, receives a row for every series, volume
    and DICOM object found (what ``data check`` prints). A series' patient is its PatientID pseudonym, else
    the first folder below the class folder.

    ``root/<class>/...`` or ``root/<split>/<class>/...``; files nested below a class folder take the first
    sub-folder as their patient id (``<class>/<patient>/<series>/<file>``). Every DICOM series and 3-D NIfTI
    file is one volume (its planes by ``opts.slices``); other files are 2-D images as before."""
    from medclipsvd.data.volumes.masks import MaskError
    from medclipsvd.data.volumes.selection import SeriesFilter, survey

    opts = opts or InputPolicy()
    flt = flt or SeriesFilter()
    fates = [] if fates is None else fates
    guard = guard or RootGuard.for_root(root)
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise DataError(f"{root}: no class folders found. Arrange images as {root}/<class_name>/<image> "
                        f"(optionally {root}/train|val|test/<class_name>/<image>), or pass a CSV.")
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    if split_dirs and len(split_dirs) != len(subdirs):
        others = [d.name for d in subdirs if d not in split_dirs]
        raise DataError(f"{root}: mixes split folders ({[d.name for d in split_dirs]}) with other folders "
                        f"({others}); use either <split>/<class>/ or <class>/ throughout.")
    groups = [(SPLIT_ALIASES[d.name.lower()], d) for d in split_dirs] if split_dirs else [(None, root)]
    items = []
    for split, base in groups:
        for cdir in sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")):
            _confine_tree(cdir, guard, root)
            found = survey(cdir, flt, recursive=True)
            fates += found.fates
            name = _classname(cdir.name)
            for v in found.volumes:
                try:
                    items += _volume_items(split, v.path, name, v.patient or _patient_of(cdir, v.path), opts)
                except MaskError as exc:  # --slices roi / +crop on a series without a usable mask: refused, listed
                    _refuse(fates, v, str(exc))
            for f in found.flat:
                p = Path(f)
                if not _is_image(p):
                    continue
                if _is_multiframe_volume(p, opts):
                    items += _volume_items(split, f, name, found.patients.get(f) or _patient_of(cdir, f), opts)
                    continue
                for idx in _expand(p, opts):
                    items.append((split, p, name, _patient_of(cdir, f), idx, None))
    refused = [f for f in fates if f.fate == "refused"]
    if refused and flt.on_bad_series == "error":  # after the whole scan: one line naming every refused series
        from medclipsvd.data.volumes.selection import SelectionError, refused_error

        raise SelectionError(str(refused_error(refused, str(root))), fates)
    if not items:
        if fates:
            from medclipsvd.data.volumes.selection import SelectionError

            raise SelectionError(f"{root}: none of the {len(fates)} series/object(s) found is used (the series "
                                 f"filter, or only non-image objects); `medclipsvd data check` lists each with the "
                                 f"reason - change --series (or include=...)", fates)
        raise DataError(f"{root}: class folders contain no image files (PNG/JPEG/TIFF/BMP, DICOM, NIfTI).")
    return items


def _row_items(split, p: Path, name: str, pid, opts: InputPolicy, guard: RootGuard | None = None,
               base: Path | None = None, flt=None) -> list[tuple]:
    """A CSV row: a folder is one series (exactly one, else an error naming it), a 3-D NIfTI or (with
    dicom_frames=volume) a multi-frame DICOM is a volume, anything else a 2-D image."""
    from medclipsvd.data.volumes.selection import resolve
    from medclipsvd.data.volumes.series import SERIES_SEP, is_volume_file

    if SERIES_SEP in str(p) and Path(str(p).split(SERIES_SEP)[0]).exists():  # one series / phase of a folder or file
        if guard is not None and Path(str(p).split(SERIES_SEP)[0]).is_dir():
            _confine_tree(Path(str(p).split(SERIES_SEP)[0]), guard, base or p)
        return _volume_items(split, resolve(p).path, name, pid, opts)
    if not p.exists():
        return [(split, p, name, pid, None, None)]  # reported as missing by the checks

    if p.is_dir() and guard is not None:
        _confine_tree(p, guard, base or p)
    if p.is_dir() or is_volume_file(str(p)) or _is_multiframe_volume(p, opts):
        ref = resolve(p, flt)
        return _volume_items(split, ref.path, name, pid or ref.patient or None, opts)  # the CSV column wins
    return [(split, p, name, pid, idx, None) for idx in _expand(p, opts)]


def read_csv(csv_path: Path, opts: InputPolicy | None = None, guard: RootGuard | None = None, flt=None):
    from medclipsvd.data.limits import CSV_BYTES_ENV, CSV_ROWS_ENV, check_list_file, entry_limit, too_many

    opts = opts or InputPolicy()
    guard = guard or RootGuard.for_root(csv_path)
    import io

    from medclipsvd.io.text import read_user_text

    try:
        check_list_file(csv_path, "CSV file", CSV_BYTES_ENV)  # a FIFO, /dev/zero or a huge file: before opening
        text = read_user_text(csv_path, "CSV")  # an Excel export in another encoding: one line with the fix
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot open CSV ({exc.strerror}).") from None
    max_rows = entry_limit(CSV_ROWS_ENV)
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            cols = [c.strip() for c in (reader.fieldnames or [])]
            twice = next((c for c in cols if cols.count(c) > 1), None)
            if twice is not None:  # a dict per row keeps only the last of two same-named columns
                where = ", ".join(str(i + 1) for i, c in enumerate(cols) if c == twice)
                raise DataError(f"{csv_path}: column {twice!r} appears {cols.count(twice)} times in the header "
                                f"(columns {where}); keep one {twice!r} column (remove or rename the others).")
            unknown = [c for c in cols if c not in CSV_COLUMNS]
            if unknown:
                raise DataError(f"{csv_path}: unknown column(s) {unknown}. Allowed: path,label[,patient_id][,split] "
                                f"(header row required); rename or remove the others.")
            if "path" not in cols or "label" not in cols:
                raise DataError(f"{csv_path}: needs columns 'path' and 'label' (found {cols}).")
            rows = []
            for r in reader:
                if len(rows) == max_rows:  # counted while reading: the rest of the file is never held in memory
                    raise too_many(csv_path, "CSV file", f"more than {max_rows:,}", max_rows, CSV_ROWS_ENV, "rows")
                if None in r:  # DictReader files the fields past the header under None
                    raise DataError(f"{csv_path}: line {reader.line_num} has {len(cols) + len(r[None])} fields but "
                                    f"the header names {len(cols)} ({','.join(cols)}); quote a value that holds a "
                                    f"comma (\"a,b\"), or remove the extra fields.")
                rows.append({(k or "").strip(): (v or "").strip() for k, v in r.items()})
        except csv.Error as exc:  # e.g. a field over the csv module's 128 KB limit: usually an unclosed quote
            raise DataError(f"{csv_path}: not valid CSV after line {reader.line_num} ({exc}); check the quoting "
                            f"there (an unclosed quote runs on to the end of the file).") from None
    if not rows:
        raise DataError(f"{csv_path}: has a header but no rows.")
    labels = [r["label"] for r in rows]
    if all(l.lstrip("-").isdigit() for l in labels):
        names_file = csv_path.parent / "classnames.txt"
        if not names_file.exists():
            raise DataError(f"{csv_path}: labels are numbers; put the class names (line i = label i) in "
                            f"{names_file}, or write class names in the label column.")
        from medclipsvd.data.limits import read_list_text

        classnames = [l.strip() for l in read_list_text(names_file, "class list").splitlines() if l.strip()]
        for n, l in enumerate(labels):
            if not 0 <= int(l) < len(classnames):
                raise DataError(f"{csv_path}: row {n + 2}: label {l} is outside 0..{len(classnames) - 1} "
                                f"({names_file.name} has {len(classnames)} names).")
        names = [classnames[int(l)] for l in labels]
    else:
        if any(not l for l in labels):
            n = next(i for i, l in enumerate(labels) if not l)
            raise DataError(f"{csv_path}: row {n + 2} has an empty label.")
        names, classnames = labels, None
    splits_given = [r.get("split", "") for r in rows]
    if any(splits_given) and not all(splits_given):
        raise DataError(f"{csv_path}: the split column is filled for some rows only; fill it for every row "
                        f"(train/val/test) or leave it empty everywhere to get a computed split.")
    from medclipsvd.data.volumes.series import SERIES_SEP

    folder = str(csv_path.parent)
    paths = [_row_path(folder, r["path"]) for r in rows]
    # every row is confined before any row's file is looked at (in bulk: one folder listing, not one lstat a row)
    for n, (r, why) in enumerate(zip(rows, guard.violations(paths))):
        s = r.get("split", "")
        if s and s.lower() not in SPLIT_ALIASES:
            raise DataError(f"{csv_path}: row {n + 2}: split {s!r} is not train/val/test.")
        if why is not None:
            raise DataError(guard.message(why, repr(r["path"]), f"{csv_path}: row {n + 2}"))
    items = []
    for r, name, path in zip(rows, names, paths):
        s = r.get("split", "")
        split, pid = SPLIT_ALIASES[s.lower()] if s else None, r.get("patient_id") or None
        try:
            os.stat(path.split(SERIES_SEP)[0])  # a row may name one series or phase of a folder or file
        except (FileNotFoundError, NotADirectoryError, ValueError):  # reported as missing by the checks (a NUL
            # byte in the path is a ValueError: no such file can exist)
            items.append((split, path, name, pid, None, None))
            continue
        except OSError:  # e.g. no permission: _row_items raises it, naming the path
            pass
        items += _row_items(split, Path(path), name, pid, opts, guard, csv_path.parent, flt)
    return items, classnames


def _row_path(folder: str, path: str) -> str:
    """``str(Path(folder) / path)``, built as a string when ``path`` is already in Path's normal form (relative,
    no empty or '.' parts): a CSV may have 200,000 rows, and two Path objects a row cost more than the rest of
    reading it."""
    if (path and path[0] != "/" and "//" not in path and path != "." and not path.startswith("./")
            and "/./" not in path and not path.endswith(("/", "/.")) and os.sep == "/"):
        return f"{folder.rstrip('/')}/{path}"
    return str(Path(folder) / path)


def _relative(path: str, base: str) -> str:
    """``os.path.relpath(path, base)``, by slicing when ``path`` lies plainly under ``base`` (the common case,
    and 10 times cheaper for a CSV of 200,000 rows)."""
    prefix = base.rstrip(os.sep) + os.sep
    if path.startswith(prefix) and ".." not in path[len(prefix):]:
        return path[len(prefix):]
    return os.path.relpath(path, base)


def list_custom(root: Path, *, seed: int = 0, fractions=DEFAULT_FRACTIONS, split_file: str | None = None,
                opts: InputPolicy | None = None, guard: RootGuard | None = None, flt=None) -> Listing:
    from medclipsvd.data.volumes.selection import SeriesFilter

    opts = (opts or InputPolicy()).validate()
    flt = SeriesFilter.parse(flt)
    if not root.exists():
        raise DataError(f"{root}: not found. For a custom dataset pass a folder of class folders or a CSV file "
                        f"with columns path,label[,patient_id][,split].")
    from medclipsvd.data.limits import check_regular_file

    check_regular_file(root, "CSV file or folder")  # a FIFO or a device such as /dev/zero: refused here
    base = root.parent if root.is_file() else root
    if split_file and Path(split_file).exists():
        return _clean_names(read_custom_split(Path(split_file), base, opts))
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root}: a custom dataset is a folder or a .csv file.")
        items, classnames = read_csv(root, opts, guard, flt)
        source = str(root)
        fates: list = []
    else:
        fates = []
        items, classnames = scan_folder(root, opts, guard, flt, fates), None
        source = str(root)
    if classnames is None:
        classnames = sorted({it[2] for it in items})
    splits = assign_splits(items, seed, fractions)
    check_patient_leak(items, splits, source)
    lookup = {c: i for i, c in enumerate(classnames)}
    entries = [RawEntry(s, str(p), lookup[c], c, idx, pid, _relative(str(p), str(base)), view)
               for (_, p, c, pid, idx, view), s in zip(items, splits)]
    given = any(s for s, *_ in items)
    notes = [] if given and all(s for s, *_ in items) else \
        [f"split computed: patient-grouped, stratified, seed={seed}, fractions={tuple(fractions)}"]
    n_vol = len({str(it[1]) for it in items if it[5]})
    if n_vol:
        notes.append(f"{n_vol} volume(s) (DICOM series / NIfTI / multi-frame) read as {opts.slices}, axis "
                     f"{opts.axis}, window {opts.window or 'auto'}; {len(items)} samples in all")
    if not any(it[3] for it in items):
        notes.append("no patient ids: every file is its own group (add a patient_id column or "
                     "<class>/<patient>/ folders so one patient's images stay in one split)")
    two_labels = _patients_under_two_labels(items)
    notes += two_labels
    import warnings

    from medclipsvd.data.volumes.selection import left_out_warning

    for message in [left_out_warning(fates, source), *two_labels]:
        if message:
            warnings.warn(message, UserWarning, stacklevel=3)
    # read_csv and scan_folder confined every entry with this guard before opening anything
    listing = _clean_names(Listing(classnames, entries, source, notes=notes, series=fates, confined_by=guard))
    refused = [f for f in fates if f.fate == "refused"]  # (under on_bad_series=error scan_folder raised)
    if refused:
        listing.notes.append(f"{len(refused)} series refused and left out (--on-bad-series skip); the series "
                             f"table lists them with the reasons")
    if split_file:
        write_split_json(listing.entries, listing.classnames, Path(split_file), base,
                         meta={"seed": seed, "fractions": list(fractions), "source": source,
                               "slices": opts.slices, "axis": opts.axis})
        listing.notes.append(f"split written to {split_file}")
    return listing


def _patients_under_two_labels(items) -> list[str]:
    """A note for each patient id found under more than one class (a mislabelled or re-filed study; with folder
    names, two patients who share a folder name): its samples still stay in one split."""
    labels: dict[str, set[str]] = {}
    for _, _, c, pid, *_ in items:
        if pid is not None:
            labels.setdefault(pid, set()).add(c)
    two = sorted(p for p, cs in labels.items() if len(cs) > 1)
    if not two:
        return []
    shown = ", ".join(f"{p} ({' / '.join(sorted(labels[p]))})" for p in two[:5])
    more = f" and {len(two) - 5} more" if len(two) > 5 else ""
    return [f"{len(two)} patient id(s) under two or more labels: {shown}{more}; kept in one split - check the "
            f"labels (a folder-name id may be two patients: add a patient_id column)"]


def _clean_names(listing: Listing) -> Listing:
    """Refuse class names a reader cannot tell apart (and a single class), and give every class and entry
    its clean spelling (NFKC, no invisible characters; ``medclipsvd.data.classnames``)."""
    from dataclasses import replace

    from medclipsvd.data.classnames import clean
    from medclipsvd.data.sanity import check_classnames

    listing.classnames = check_classnames(listing.classnames, listing.source)
    spelling: dict[str, str] = {}
    entries = []
    for e in listing.entries:
        name = spelling.get(e.classname)
        if name is None:  # once per class name, not per entry
            name = spelling[e.classname] = clean(e.classname)
        entries.append(e if name == e.classname else replace(e, classname=name))
    listing.entries = entries
    return listing


