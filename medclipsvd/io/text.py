"""Reading text files that users make by hand or export from other tools (CSV, split JSON, class names,
description pools). They are UTF-8; a leading byte-order mark is dropped (Excel's "CSV UTF-8" writes one).
Any other encoding (Excel's plain "CSV" writes Windows-1252; "Unicode Text" writes UTF-16) is one error naming
the file, where the first undecodable byte is and how to re-save it, instead of a UnicodeDecodeError from
deep inside a parser."""
from __future__ import annotations

import os
from pathlib import Path

from medclipsvd.errors import DataError, MedClipSVDError

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_user_text(path: str | os.PathLike, what: str = "file",
                   error: type[MedClipSVDError] = DataError) -> str:
    """The text of ``path`` decoded as UTF-8 (BOM dropped). OSErrors (missing file, no permission) propagate
    for the caller to word; a wrong encoding raises ``error``."""
    data = Path(path).read_bytes()
    excel = "CSV" in what  # the usual source of a CSV in another encoding; other files get the generic fix
    how = "Excel: Save As > 'CSV UTF-8 (Comma delimited)'; or " if excel else "e.g. "
    if data.startswith(_UTF16_BOMS):
        source = " (Excel's 'Unicode Text')" if excel else ""
        raise error(f"{path}: this {what} is not UTF-8 but UTF-16 text{source}; save it as UTF-8 "
                    f"({how}`iconv -f UTF-16 -t UTF-8 IN > OUT`)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        source = "; Excel's plain 'CSV' writes Windows-1252" if excel else ""
        raise error(f"{path}: this {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}{source}); "
                    f"save it as UTF-8 ({how}`iconv -f CP1252 -t UTF-8 IN > OUT`)") from None
