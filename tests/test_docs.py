"""Every Python example in the core docs runs as written (blocks that need pretrained weights are marked), and
what the docs say it prints is what it prints: a `print(...)` whose line ends in a comment must print exactly
the numbers that comment states, in order (e.g. `print(len(sigmas), n)   # 72 matrices, 4608 values`)."""
import ast
import contextlib
import io
import re
import tokenize
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
SKIP_MARK = "# requires pretrained weights"
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")


def _blocks(name):
    text = (DOCS / name).read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if SKIP_MARK not in b]


def _comments(block: str) -> dict[int, str]:
    """Line number -> the comment ending that line (tokenize: a '#' inside a string is not a comment)."""
    toks = tokenize.generate_tokens(io.StringIO(block).readline)
    return {t.start[0]: t.string.lstrip("#").strip() for t in toks if t.type == tokenize.COMMENT}


def _run(block: str, name: str, namespace: dict) -> list[tuple[str, str]]:
    """Run a block one top-level statement at a time; returns (claimed comment, printed text) of each
    commented print."""
    comments = _comments(block)
    claims = []
    for node in ast.parse(block).body:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(ast.Module([node], type_ignores=[]), name, "exec"), namespace)
        is_print = (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) == "print")
        if is_print and node.end_lineno in comments:
            claims.append((comments[node.end_lineno], out.getvalue()))
    return claims


# docs -> how many printed claims they make (so a claim dropped from a page, or a page whose comments stop
# being parsed, is noticed)
CLAIMS = {"backbones.md": 3, "adapters.md": 2, "monai.md": 0}


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_python_examples_run_and_print_what_the_docs_say(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(name)
    assert blocks, f"no runnable example in {name}"
    namespace: dict = {}
    claims = [c for block in blocks for c in _run(block, name, namespace)]
    assert len(claims) == CLAIMS[name], claims
    for comment, printed in claims:
        assert NUMBER.findall(printed) == NUMBER.findall(comment), (name, comment, printed)
    if name == "monai.md":  # the evaluation counted every test image of the synthetic dataset
        n_test = len(namespace["splits"].test)
        assert namespace["metrics"]["n"] == n_test > 0
        assert namespace["few"].meta["few_shot"]["k"] == 1


def test_claim_checker_catches_a_wrong_claim():
    claims = _run("x = 3\nprint(x, x * 2)  # 3 and 7\nprint('#', x)\n", "t", {})
    assert claims == [("3 and 7", "3 6\n")]
    assert NUMBER.findall(claims[0][1]) != NUMBER.findall(claims[0][0])
