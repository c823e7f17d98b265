"""The package's import rules (issue 17; docs/architecture.md, "Layers").

Two independent checks of the same graph:
* import-linter runs the contracts of pyproject.toml's [tool.importlinter] (layers from cli down to errors,
  serving without tracking/MLflow, no cycles between siblings) and fails with its report;
* a source-level walk of every `import medclipsvd...` statement, those inside functions included (imports
  under `if TYPE_CHECKING:` and the lazy PEP 562 `__getattr__` of package __init__ files aside), asserting no
  cycle between files and no pair of sub-packages importing each other.
And, at run time, that serving (`medclipsvd predict --adapter`) and the MONAI bundle runtime never import
MLflow: a fresh interpreter reports its sys.modules."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LEGACY = REPO / "tests" / "fixtures" / "legacy_v0_1"


# ------------------------------------------------------------------------------------------ import-linter
def test_import_linter_contracts_hold():
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra (pip install -e .[dev])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-3000:]
    assert "broken" in out.stdout and " 0 broken" in out.stdout, out.stdout[-3000:]


# ------------------------------------------------------------------------------------ source-level graph
def _module_files(root: Path, package: str) -> dict[str, Path]:
    files = {}
    for f in (root / package).rglob("*.py"):
        parts = list(f.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = f
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Every module of `package` that one file imports, wherever the statement stands."""

    def __init__(self, module: str, is_init: bool, known: dict, package: str):
        self.module, self.is_init, self.known, self.package = module, is_init, known, package
        self.found: set[str] = set()
        self.missing: set[str] = set()

    def _resolve(self, name: str) -> None:
        while name and name not in self.known:  # `from pkg.mod import func` -> pkg.mod
            name = name.rpartition(".")[0]
        if name and name != self.module:
            self.found.add(name)

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if self.is_init and node.name == "__getattr__":  # PEP 562 lazy names: loaded on use, by importlib
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == self.package:
                if alias.name not in self.known:
                    self.missing.add(alias.name)  # a stale path (inside a function it fails only when called)
                self._resolve(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.module.split(".")
            base = parts[: len(parts) - node.level + (1 if self.is_init else 0)]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        if name.split(".")[0] != self.package:
            return
        if name not in self.known:
            self.missing.add(name)
        for alias in node.names:  # `from pkg import submodule` imports the submodule
            full = f"{name}.{alias.name}"
            self._resolve(full if full in self.known else name)


def import_graph(root: Path, package: str = "medclipsvd", missing: dict | None = None) -> dict[str, set[str]]:
    """{module: the package's modules it imports}; `missing` collects {module: imported names that exist
    nowhere} (an import inside a function is only run when called, so a moved module leaves those)."""
    files = _module_files(root, package)
    graph = {}
    for module, path in files.items():
        visitor = _Imports(module, path.name == "__init__.py", files, package)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        graph[module] = visitor.found
        if missing is not None and visitor.missing:
            missing[module] = sorted(visitor.missing)
    return graph


def file_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def package_pairs(graph: dict[str, set[str]], package: str = "medclipsvd") -> list[tuple[str, str, list, list]]:
    """Pairs of direct sub-packages (or top-level modules) of `package` that import each other."""
    def top(module: str) -> str:
        return ".".join(module.split(".")[:2])

    edges = defaultdict(list)
    for importer, imported in ((a, b) for a, bs in graph.items() for b in bs):
        if top(importer) != top(imported) and top(importer) != package and top(imported) != package:
            edges[(top(importer), top(imported))].append(f"{importer} -> {imported}")
    return [(a, b, sorted(edges[(a, b)]), sorted(edges[(b, a)])) for a, b in sorted(edges)
            if a < b and (b, a) in edges]


def test_no_cycle_between_files_and_no_pair_of_subpackages():
    missing: dict = {}
    graph = import_graph(REPO, missing=missing)
    assert len(graph) > 100 and any(graph.values())  # the walk found the package and its imports
    assert missing == {}  # every import names a module that exists (moved modules leave no stale path)
    assert file_cycles(graph) == []
    assert package_pairs(graph) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_graph_walk_sees_function_imports_and_skips_type_checking_and_lazy_getattr(tmp_path):
    """The checker itself: a cycle through an import inside a function and a pair of sub-packages are found;
    TYPE_CHECKING imports and an __init__'s lazy __getattr__ are not edges."""
    _write(tmp_path, {
        "toy/__init__.py": "def __getattr__(name):\n    from toy.b import thing\n    return thing\n",
        "toy/a/__init__.py": "",
        "toy/a/one.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toy.b.two import X\n",
        "toy/a/three.py": "def f():\n    from toy.a import four\n",
        "toy/a/four.py": "import toy.a.three\n",
        "toy/b/__init__.py": "",
        "toy/b/two.py": "from toy.a.one import *\n",
        "toy/b/five.py": "",
    })
    missing: dict = {}
    graph = import_graph(tmp_path, "toy", missing)
    assert graph["toy"] == set() and graph["toy.a.one"] == set() and missing == {}
    assert file_cycles(graph) == [["toy.a.four", "toy.a.three"]]
    assert package_pairs(graph, "toy") == []  # b imports a, a does not import b (only for type checking)
    (tmp_path / "toy/a/one.py").write_text("def g():\n    from toy.b import five\n")
    pairs = package_pairs(import_graph(tmp_path, "toy"), "toy")
    assert [(a, b) for a, b, *_ in pairs] == [("toy.a", "toy.b")]
    (tmp_path / "toy/b/five.py").write_text("def h():\n    from toy.a.gone import name\n")
    import_graph(tmp_path, "toy", missing)
    assert missing == {"toy.b.five": ["toy.a.gone"]}


# ------------------------------------------------------------------------------------- no MLflow at run time
# MLflow is made unimportable in the child: the command must still work, and no medclipsvd frame may be on the
# stack of an attempt to import it. (MONAI itself tries: `import monai` loads its optional MLFlowHandler, which
# copes with a missing MLflow; that attempt is MONAI's, not ours.)
_PROBE = """
import atexit, json, sys, traceback
PACKAGE = %r
tried = []
class _NoMlflow:
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            ours = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack() if f.filename.startswith(PACKAGE)]
            if ours:
                tried.append(ours)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _NoMlflow())
def _report():
    loaded = sorted(m for m in ("mlflow", "medclipsvd.tracking") if m in sys.modules)
    print("\\n@@" + json.dumps({"loaded": loaded, "tried": tried}))
atexit.register(_report)
""" % str(REPO / "medclipsvd")


def _run_probe(body: str, cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _PROBE + body, *args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    assert "@@" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    return out, json.loads(out.stdout.rsplit("@@", 1)[1])


def test_predict_adapter_never_imports_mlflow(tmp_path):
    """`medclipsvd predict --adapter` classifies without MLflow (and without the tracking package)."""
    run = tmp_path / "svd_run"
    shutil.copytree(LEGACY / "svd_run", run)
    csv = tmp_path / "out.csv"
    images = [str(LEGACY / p) for p in json.loads((LEGACY / "expected.json").read_text())["images"]]
    body = ("sys.argv = ['medclipsvd', *sys.argv[1:]]\n"
            "from medclipsvd.cli.app import main\nmain()\n")
    out, report = _run_probe(body, tmp_path, "predict", "--adapter", str(run / "adapter"), *images,
                             "--output", str(csv))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert csv.is_file() and len(csv.read_text().strip().splitlines()) == 1 + len(images)
    assert report == {"loaded": [], "tried": []}


def test_monai_bundle_runtime_never_imports_mlflow(tmp_path):
    """The exported bundle, run by MONAI's own runner, classifies without MLflow."""
    from medclipsvd.export.monai_bundle import export_monai_bundle

    run = tmp_path / "svd_run"
    shutil.copytree(LEGACY / "svd_run", run)
    bundle = export_monai_bundle(run / "adapter", tmp_path / "bundle")
    images = [str(LEGACY / p) for p in json.loads((LEGACY / "expected.json").read_text())["images"]][:1]
    out_dir = tmp_path / "bundle-out"
    body = ("import runpy\n"
            "sys.argv = ['monai.bundle', *sys.argv[1:]]\n"
            "runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)\n")
    out, report = _run_probe(body, tmp_path, "run", "--config_file", str(bundle / "configs" / "inference.json"),
                             "--bundle_root", str(bundle), "--input", json.dumps(images), "--output_dir",
                             str(out_dir), "--device", "$torch.device('cpu')")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert len(json.loads((out_dir / "predictions.json").read_text())["predictions"]) == 1
    assert report == {"loaded": [], "tried": []}
