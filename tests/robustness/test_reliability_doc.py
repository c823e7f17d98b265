"""docs/reliability.md carries the table of every robustness row; it is generated from the rows themselves
(``python tests/robustness/harness.py``), so it cannot drift from what the suite runs."""
from __future__ import annotations

from harness import BEGIN, DOC, END, all_rows, rows_table


def test_reliability_doc_lists_every_row():
    text = DOC.read_text()
    block = text[text.index(BEGIN):text.index(END) + len(END)]
    assert block == rows_table(), "docs/reliability.md is stale: run `python tests/robustness/harness.py`"


def test_row_ids_are_unique():
    ids = [r.id for _, r in all_rows()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
