"""The layering rule: the kernels (kernels/, installed as ``m2bert.kernels``) depend only on torch, triton and
the standard library; the model chooses between them and its PyTorch layers (``m2bert.model.kernel_switch``);
and no module of the model or the kernels takes part in a top-level import cycle."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.kernels.conftest import ROOT

KERNELS = ROOT / "kernels"
PACKAGE = ROOT / "src" / "m2bert"


def _modules() -> dict[str, Path]:
    """Every module of the package by its dotted name, the kernels under ``m2bert.kernels`` (pyproject's package-dir)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("kernels", "yamls"):  # links in a development checkout; the real folders are at the root
            continue
        found[".".join(("m2bert", *rel.with_suffix("").parts)).removesuffix(".__init__")] = path
    for path in KERNELS.glob("*.py"):
        found[f"m2bert.kernels.{path.stem}".removesuffix(".__init__")] = path
    return found


def _imports(module: str, path: Path, top_level_only: bool, known: dict[str, Path] | None = None) -> set[str]:
    """The absolute names a module imports; with ``top_level_only``, those run when the module is imported: not
    inside functions, nor under ``if TYPE_CHECKING``. ``from a import b`` gives ``a.b`` (without ``known``, or
    when ``a.b`` is one of the ``known`` modules), else ``a``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if top_level_only and isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                for alias in child.names:
                    name = f"{base}.{alias.name}"
                    names.add(name if known is None or name in known else base)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return names


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """The top-level import cycles among ``modules`` (strongly connected components of more than one module, or
    a module importing itself). An import names a module when it is one; a package's ``__init__`` runs when its
    name is imported, not when one of its submodules is (Python's own parent-package imports are left out:
    they never leave a module half-initialised for the importer)."""
    graph = {m: {n for n in _imports(m, p, True, modules) if n in modules and n != m} for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_kernels_import_only_torch_triton_and_themselves():
    """Every import in kernels/ (at any depth, function bodies included) is the standard library, torch, triton
    or m2bert.kernels itself."""
    offenders = []
    for path in sorted(KERNELS.glob("*.py")):
        module = f"m2bert.kernels.{path.stem}".removesuffix(".__init__")
        for name in _imports(module, path, top_level_only=False):
            top = name.split(".")[0]
            own = name == "m2bert.kernels" or name.startswith("m2bert.kernels.")
            if not (own or top in ("torch", "triton") or top in sys.stdlib_module_names):
                offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders


def test_importing_every_kernel_module_imports_no_model():
    """In a fresh process, with the m2bert package's own __init__ (which loads the model) left out, every module
    of kernels/ imports, and afterwards no m2bert module but the kernels is loaded."""
    stems = sorted(p.stem for p in KERNELS.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, importlib.util, json, sys\n"
        "spec = importlib.util.find_spec('m2bert')\n"
        "sys.modules['m2bert'] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run\n"
        f"for stem in {stems!r}:\n"
        "    importlib.import_module('m2bert.kernels.' + stem)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('m2bert'))))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {f"m2bert.kernels.{s}" for s in stems} <= set(loaded)
    assert not [m for m in loaded if m.startswith("m2bert.model")], loaded
    assert all(m in ("m2bert", "m2bert.kernels") or m.startswith("m2bert.kernels.") for m in loaded), loaded


def test_model_and_kernels_have_no_import_cycle():
    modules = _modules()
    assert {"m2bert.model.sequence_mixer", "m2bert.model.kernel_switch", "m2bert.kernels.seq_mixer_conv"} <= set(modules)
    cycles = [c for c in import_cycles(modules) if any(m.startswith(("m2bert.model", "m2bert.kernels")) for m in c)]
    assert not cycles, cycles


def test_cycle_finder_sees_top_level_cycles_only(tmp_path):
    """The finder itself: a top-level cycle is reported; one closed only by an import inside a function is not."""
    files = {
        "a.py": "from m2bert.b import x\n",
        "b.py": "import m2bert.a\nx = 1\n",
        "c.py": "def f():\n    from m2bert.d import y\n",
        "d.py": "from m2bert import c\ny = 2\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    modules = {f"m2bert.{name[:-3]}": tmp_path / name for name in files}
    assert import_cycles(modules) == [["m2bert.a", "m2bert.b"]]
