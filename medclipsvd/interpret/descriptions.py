"""Description pools for TextSpan: the two shipped with the package, or a user's own text file."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from medclipsvd.interpret.errors import DataError

POOLS = ("general", "biomedical")


def _parse(text: str) -> list[str]:
    """One description per line; blank lines and lines starting with `#` are skipped; duplicates
    (ignoring case) are dropped so that TextSpan never sees the same direction twice."""
    seen: set[str] = set()
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key = line.casefold()
        if key not in seen:
            seen.add(key)
            out.append(line)
    return out


def load_descriptions(pool: str | Path) -> list[str]:
    """`pool` is "general", "biomedical", or the path of a UTF-8 text file, one description a line."""
    if str(pool) in POOLS:
        text = resources.files("medclipsvd.resources.descriptions").joinpath(f"{pool}.txt").read_text("utf-8")
        return _parse(text)
    path = Path(pool)
    from medclipsvd.io.special import special_problem

    problem = special_problem(path, "description pool")
    if problem:
        raise DataError(f"--pool {path}: {problem}")
    if not path.is_file():
        raise DataError(
            f"description pool {str(pool)!r} is neither a shipped pool ({', '.join(POOLS)}) nor a "
            "file: pass one of those names or the path of a text file with one description per line")
    from medclipsvd.io.text import read_user_text

    items = _parse(read_user_text(path, "description pool"))
    if len(items) < 2:
        raise DataError(f"description pool {path} holds {len(items)} description(s): TextSpan needs "
                        "several (the shipped pools hold more than 300)")
    return items


def default_pool_for(backbone_name: str) -> str:
    """BiomedCLIP-like backbones get the biomedical pool, CLIP the general one."""
    return "biomedical" if "biomed" in backbone_name.lower() else "general"
