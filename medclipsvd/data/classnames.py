"""Class names as people type them: one spelling per class, whatever the keyboard, the export or the copy
and paste did to it.

``clean`` is what a class is called from then on: Unicode NFKC (full-width letters, ligatures and other
compatibility forms become the ordinary ones), format characters removed (category Cf: zero-width spaces
and joiners, the byte-order mark, bidirectional marks, soft hyphens - invisible, so a label holding one
looks like the label without it), runs of whitespace made one space. ``skeleton`` is how alike two names
look: case, spaces, underscores and hyphens, accents, and Cyrillic/Greek letters drawn like Latin ones
(``CONFUSABLES``) are ignored. Two names with one skeleton would become two classes a reader cannot tell
apart; ``sanity.check_classnames`` refuses them, naming both spellings and what tells them apart."""
from __future__ import annotations

import re
import unicodedata

# Cyrillic and Greek letters that are drawn like a Latin letter (lower case: the skeleton is case-folded).
# Deliberately small: the letters that turn up in labels typed on a Cyrillic or Greek keyboard layout.
CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "һ": "h", "ӏ": "l", "ү": "y",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ζ": "z", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j",
})
_CONFUSABLE_CHARS = frozenset(chr(c) for c in CONFUSABLES)


def _strip_format(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def clean(name: str) -> str:
    """The spelling a class is known by: NFKC, format characters removed, whitespace collapsed."""
    return " ".join(_strip_format(unicodedata.normalize("NFKC", name)).split())


def skeleton(name: str) -> str:
    """What a name looks like: equal skeletons are names a reader cannot tell apart."""
    folded = clean(name).casefold()  # casefold before the table: upper-case look-alikes map through it too
    folded = "".join(ch for ch in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(ch))
    return re.sub(r"[\s_\-]+", " ", folded.translate(CONFUSABLES)).strip()


def spelled(ch: str) -> str:
    """``U+0435 CYRILLIC SMALL LETTER IE``: a character named so that it can be found and retyped."""
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed character')}"


def unusual_characters(name: str) -> list[str]:
    """The characters of ``name`` outside printable ASCII, spelled out (first occurrence of each)."""
    return [spelled(ch) for ch in dict.fromkeys(name) if not (" " <= ch <= "~")]


def look_alike_letters(name: str) -> list[str]:
    """Cyrillic/Greek look-alike letters in a name that also has Latin letters (a mixed-script spelling)."""
    text = clean(name)
    if not any("a" <= ch.lower() <= "z" for ch in text):
        return []
    return [spelled(ch) for ch in dict.fromkeys(text) if ch.lower() in _CONFUSABLE_CHARS]


def why_alike(a: str, b: str) -> str:
    """How two different spellings with one skeleton differ, for the message that refuses them."""
    def spaced(n: str) -> str:
        return re.sub(r"[\s_\-]+", " ", clean(n)).strip().casefold()

    if clean(a) == clean(b):
        what = "differ only by invisible or compatibility characters"
    elif spaced(a) == spaced(b):
        return "differ only in case or spacing"
    else:
        what = "differ only by look-alike letters or accents"
    odd = [f"{n!r} has {', '.join(chars)}" for n in (a, b) if (chars := unusual_characters(n))]
    return f"{what} ({'; '.join(odd)})" if odd else what
