"""The data checks behind ``load_dataset`` and ``medclipsvd data check``: per split and class, how many
listed entries are present, missing, unreadable or mislabelled."""
from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass, field

from medclipsvd.data.types import NPZ_KEY_SEP, SPLITS
from medclipsvd.errors import DataError

KINDS = ("missing", "unreadable", "mislabelled")
VERIFY_LEVELS = ("exists", "header", "decode")


class DataCheckError(DataError):
    """The data root failed its checks; ``.report`` holds the per-split, per-class counts."""

    def __init__(self, report: "CheckReport"):
        super().__init__(report.format())
        self.report = report


@dataclass(frozen=True)
class RawEntry:
    """A split entry before checking. ``label`` may be out of range and ``classname`` wrong: checks decide."""

    split: str
    path: str  # absolute (or ``file.npz::array``)
    label: int
    classname: str
    index: int | None = None
    patient_id: str | None = None
    listed_as: str | None = None  # the path as the split file wrote it, for messages
    view: str | None = None  # volume samples: "slices|axis|window" (see Sample.view)


@dataclass(frozen=True)
class Problem:
    split: str
    kind: str  # missing | unreadable | mislabelled
    path: str
    reason: str


@dataclass
class ClassCount:
    listed: int = 0
    present: int = 0
    missing: int = 0
    unreadable: int = 0
    mislabelled: int = 0


@dataclass
class CheckReport:
    """Outcome of checking a dataset root against its split. ``format()`` is what ``data check`` prints."""

    dataset: str
    root: str
    source: str  # the split file / folder / CSV the entries came from
    classnames: list[str]
    verify: str
    rows: dict[tuple[str, str], ClassCount] = field(default_factory=dict)  # (split, classname) -> counts
    problems: list[Problem] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)  # registry counts, where known
    allow_missing: bool = False
    dropped: Counter = field(default_factory=Counter)  # split -> entries dropped under allow_missing
    notes: list[str] = field(default_factory=list)
    check_args: str = ""  # `data check` arguments that print this report (e.g. --pipeline custom --data-root X)
    # the splits as a whole (sanity.split_issues): issues refuse the load (one class), gaps make the check
    # fail and runs refuse before training (an empty test split, a custom class with no train entry)
    issues: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    # custom data: every DICOM series / volume / object found and its fate (medclipsvd.data.volumes.selection)
    series: list = field(default_factory=list)

    def total(self, kind: str, split: str | None = None) -> int:
        return sum(getattr(c, kind) for (s, _), c in self.rows.items() if split is None or s == split)

    @property
    def complete(self) -> bool:
        """Every listed entry is present, readable and correctly labelled, and the splits are usable."""
        return not self.problems and not self.issues and not self.gaps

    @property
    def ok(self) -> bool:
        """Usable: splits that can be trained and scored, nothing mislabelled, and nothing missing/unreadable
        unless those may be dropped."""
        if self.issues or self.total("mislabelled"):
            return False
        return self.allow_missing or (self.total("missing") + self.total("unreadable") == 0)

    def to_dict(self, max_examples: int = 50) -> dict:
        """JSON-ready summary (for CI, MLflow or a run folder): counts per split and class, examples."""
        return {
            "dataset": self.dataset, "root": self.root, "source": self.source, "verify": self.verify,
            "complete": self.complete, "ok": self.ok, "allow_missing": self.allow_missing,
            "expected": dict(self.expected), "dropped": dict(self.dropped), "notes": list(self.notes),
            "issues": list(self.issues), "gaps": list(self.gaps),
            "series": [f.to_dict() for f in self.series],
            "rows": [{"split": s, "class": c, **vars(n)} for (s, c), n in self.rows.items()],
            "totals": {k: self.total(k) for k in ("listed", "present") + KINDS},
            "problems": {k: [vars(p) for p in self.problems if p.kind == k][:max_examples] for k in KINDS},
        }

    def format(self, max_examples: int = 5) -> str:
        lines = [f"data check: {self.dataset} at {self.root}", f"  entries from: {self.source}",
                 f"  verify level: {self.verify}"]
        header = f"  {'split':<6} {'class':<34} {'listed':>7} {'present':>8} {'missing':>8} {'unread.':>8} {'mislab.':>8}"
        lines += ["", header]
        for split in SPLITS:
            keys = [k for k in self.rows if k[0] == split]
            order = {c: i for i, c in enumerate(self.classnames)}
            keys.sort(key=lambda k: (order.get(k[1], len(order)), k[1]))
            for key in keys:
                c = self.rows[key]
                lines.append(f"  {split:<6} {key[1][:34]:<34} {c.listed:>7} {c.present:>8} {c.missing:>8} "
                             f"{c.unreadable:>8} {c.mislabelled:>8}")
            if keys:
                tot = ClassCount(*(sum(getattr(self.rows[k], f) for k in keys)
                                   for f in ("listed", "present", "missing", "unreadable", "mislabelled")))
                exp = self.expected.get(split)
                note = "" if exp is None or exp == tot.listed else f"   (registry expects {exp})"
                lines.append(f"  {split:<6} {'= total':<34} {tot.listed:>7} {tot.present:>8} {tot.missing:>8} "
                             f"{tot.unreadable:>8} {tot.mislabelled:>8}{note}")
        for kind in KINDS:
            probs = [p for p in self.problems if p.kind == kind]
            if probs:
                lines += ["", f"  {kind} ({len(probs)}), first {min(len(probs), max_examples)}:"]
                lines += [f"    [{p.split}] {p.path}: {p.reason}" for p in probs[:max_examples]]
        if self.series:
            from medclipsvd.data.volumes.selection import format_table

            lines += format_table(self.series, self.root)
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  problem: {i}" for i in self.issues + self.gaps]
        lines.append("")
        if self.issues or self.gaps:
            lines.append("  result: FAILED - the splits cannot be trained and scored as they are (see the problem "
                         "above); `train` refuses them before training. Not fixed by --allow-missing.")
        elif self.complete:
            lines.append("  result: complete - every listed entry is present, readable and correctly labelled.")
        elif self.total("mislabelled"):
            lines.append("  result: FAILED - entries disagree with the class list; the split file or the registry "
                         "is wrong for this data (not dropped even with --allow-missing).")
        elif self.allow_missing:
            dropped = ", ".join(f"{s} {self.dropped.get(s, 0)}" for s in SPLITS)
            lines.append(f"  result: usable with --allow-missing - dropped {sum(self.dropped.values())} "
                         f"missing/unreadable entries ({dropped}).")
        else:
            lines.append("  result: FAILED - entries are missing or unreadable. Complete the data (see "
                         "docs/datasets.md), or pass --allow-missing (allow_missing=True) to drop and count them.")
        return "\n".join(lines)


def _valid_label(e: RawEntry, classnames: list[str]) -> str | None:
    if not isinstance(e.label, int) or isinstance(e.label, bool) or not 0 <= e.label < len(classnames):
        return f"label {e.label!r} is outside the class list (0..{len(classnames) - 1})"
    if e.classname != classnames[e.label]:
        return f"classname {e.classname!r} disagrees with label {e.label} ({classnames[e.label]!r})"
    return None


def _file_reasons(entries: list[RawEntry], bad_labels: list[str | None], verify: str, progress: bool,
                  name: str) -> dict[tuple[str, int | None], str | None]:
    """check_readable for every distinct (file, index); threads, because the work is mostly file I/O
    (and decoders release the GIL), which matters on network storage and for ImageNet-sized roots."""
    from concurrent.futures import ThreadPoolExecutor

    from medclipsvd.data.samples import check_readable

    keys = list(dict.fromkeys((e.path, e.index, e.view) for e, bad in zip(entries, bad_labels)
                              if bad is None and NPZ_KEY_SEP not in e.path))
    if len(keys) < 256 or verify == "exists":
        results = [check_readable(p, i, verify, view=v) for p, i, v in keys]
    else:
        # a thread pool's map makes one future per item (its chunksize is for process pools only), which for
        # 200,000 missing files costs more than the stat calls: the threads take chunks of keys instead
        def check_chunk(chunk):
            return [check_readable(p, i, verify, view=v) for p, i, v in chunk]

        chunks = [keys[i:i + _CHUNK] for i in range(0, len(keys), _CHUNK)]
        workers = min(8, 2 * (os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            bar = None
            if progress and len(keys) > 2000 and sys.stderr.isatty():
                from tqdm import tqdm

                bar = tqdm(total=len(keys), desc=f"checking {name}", unit="file", leave=False)
            results = []
            for done in pool.map(check_chunk, chunks):
                results += done
                if bar is not None:
                    bar.update(len(done))
            if bar is not None:
                bar.close()
    return dict(zip(keys, results))


_CHUNK = 64  # files a thread checks per task: small enough for a smooth progress bar and an even load


def run_checks(entries: list[RawEntry], report: CheckReport, progress: bool = False) -> list[RawEntry]:
    """Fill ``report`` and return the entries that passed (present, readable, correctly labelled)."""
    from medclipsvd.data.samples import check_readable

    classnames = report.classnames
    file_cache: dict[str, str | None] = {}  # one file can back many entries (npz arrays)
    keep: list[RawEntry] = []
    bad_labels = [_valid_label(e, classnames) for e in entries]
    reasons = _file_reasons(entries, bad_labels, report.verify, progress, report.dataset)
    for e, bad_label in zip(entries, bad_labels):
        key_name = classnames[e.label] if isinstance(e.label, int) and 0 <= e.label < len(classnames) \
            else f"<label {e.label}>"
        row = report.rows.get((e.split, key_name))
        if row is None:
            row = report.rows[(e.split, key_name)] = ClassCount()
        row.listed += 1
        shown = e.listed_as or e.path
        if bad_label:
            row.mislabelled += 1
            report.problems.append(Problem(e.split, "mislabelled", shown, bad_label))
            continue
        if NPZ_KEY_SEP in e.path:  # array rows were validated when the npz was listed
            file = e.path
            if file not in file_cache:
                file_cache[file] = check_readable(e.path.partition(NPZ_KEY_SEP)[0], None, "exists")
            reason = file_cache[file]
        else:
            reason = reasons[(e.path, e.index, e.view)]
        if reason is None:
            row.present += 1
            keep.append(e)
        elif reason == "missing":
            row.missing += 1
            report.problems.append(Problem(e.split, "missing", shown, "file not found"))
        else:
            row.unreadable += 1
            report.problems.append(Problem(e.split, "unreadable", shown, reason))
    # classes with no entries at all still get a row, so a partial root shows what it lacks
    for split in SPLITS:
        if any(k[0] == split for k in report.rows):
            for c in classnames:
                report.rows.setdefault((split, c), ClassCount())
    return keep


def drop_undecodable(groups: dict[str, list], allow_missing: bool, dataset: str) -> tuple[dict[str, list], dict[str, int]]:
    """Decode every distinct image of ``groups`` ({name: [Sample]}), as ``data check --verify decode`` does.

    Returns the groups without the undecodable samples and the count dropped per group. Without
    ``allow_missing`` any undecodable image is a ``DataError`` naming the first, before any work is done."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from medclipsvd.data.samples import check_readable

    def key(s) -> tuple:  # a volume decodes as a whole: one of its planes stands for all of them
        view = getattr(s, "view", None)
        return (s.path, None, view) if view else (s.path, s.index, None)

    plane = {}  # key -> the frame/slice index to decode for it
    for samples in groups.values():
        for s in samples:
            plane.setdefault(key(s), s.index)
    keys = list(plane)
    workers = max(1, min(8, 2 * (os.cpu_count() or 1)))
    if len(keys) < 16:
        reasons = [check_readable(p, plane[(p, i, v)], "decode", view=v) for p, i, v in keys]
    else:  # decoding is mostly I/O and C code that releases the GIL
        with ThreadPoolExecutor(workers) as pool:
            reasons = list(pool.map(lambda k: check_readable(k[0], plane[k], "decode", view=k[2]), keys,
                                    chunksize=16))
    bad = {k: r for k, r in zip(keys, reasons) if r is not None}
    if not bad:
        return dict(groups), {g: 0 for g in groups}
    kept = {g: [s for s in samples if key(s) not in bad] for g, samples in groups.items()}
    dropped = {g: len(groups[g]) - len(kept[g]) for g in groups}
    (path, index, _), reason = next(iter(bad.items()))
    first = f"{path}{'' if index is None else f' [{index}]'}: {'file not found' if reason == 'missing' else reason}"
    counts = ", ".join(f"{g} {n}" for g, n in dropped.items() if n)
    if not allow_missing:
        raise DataError(f"{dataset}: {len(bad)} image(s) the run would read cannot be decoded ({counts}; first: "
                        f"{first}); re-copy or remove them, or pass --allow-missing to drop and count them "
                        f"(`medclipsvd data check --verify decode` lists them all).")
    warnings.warn(f"{dataset}: dropped {len(bad)} undecodable image(s) ({counts}; first: {first}) "
                  f"because of --allow-missing.", UserWarning, stacklevel=2)
    return kept, dropped
