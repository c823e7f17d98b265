"""Robustness rows for issue 19 item 1: a --precision this machine cannot run, or that names no precision, is
one clear line before any work (nothing trained, nothing on disk lost), in every command that takes it.
Rows that need the CPU's bf16 capability faked live in tests/engine/test_precision.py; these hold on any CPU."""
from __future__ import annotations

import pytest
from harness import Corpus, Row, Scenario, run_row

ISSUE, ITEM, K = 19, 1, "option validation"


def _train(precision: str, *mentions: str):
    def build(c: Corpus) -> Scenario:
        data = c.class_folders()
        return Scenario(["train", "--pipeline", "custom", "--data-root", str(data), "--output", str(c.path("out")),
                         *c.FAST, "--precision", precision], list(mentions), forbidden=[c.outside], keep=[data])

    return build


def _benchmark_fp16_on_cpu(c: Corpus) -> Scenario:
    data = c.class_folders()
    return Scenario(["benchmark", "--suite", "BUSI", "--data-root", str(data), "--output", str(c.path("bench")),
                     "--no-mlflow", "--device", "cpu", "--precision", "fp16"], ["--precision fp16", "CUDA only"],
                    forbidden=[c.outside], keep=[data])


ROWS = [
    Row("precision-unknown", ITEM, K, "`train --precision fp8`",
        _train("fp8", "--precision", "auto, fp32, bf16 or fp16"), issue=ISSUE),
    Row("precision-fp16-on-cpu", ITEM, K, "`train --device cpu --precision fp16`",
        _train("fp16", "--precision fp16", "CUDA only", "--precision auto"), issue=ISSUE),
    Row("precision-fp16-on-cpu-benchmark", ITEM, K, "`benchmark --device cpu --precision fp16`",
        _benchmark_fp16_on_cpu, issue=ISSUE),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_row(row, tmp_path):
    run_row(row, tmp_path)
