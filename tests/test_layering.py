"""The direction of imports is the architecture (docs/ARCHITECTURE.md, "Layers").

core imports nothing outside itself and no I/O, clock, thread, random,
logging or os module; backends never import runtime; runtime never imports
the command line or the simulator; relative imports count like absolute
ones; there are no import cycles; the package imports without psycopg.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "jobsync"

CORE_FORBIDDEN = {
    "time",
    "datetime",
    "threading",
    "socket",
    "random",
    "logging",
    "os",
    "sys",
    "subprocess",
    "asyncio",
    "psycopg",
    "sqlite3",
    "sqlite_utils",
    "io",
    "pathlib",
    "signal",
    "secrets",
    "uuid",
    "multiprocessing",
    "select",
    "selectors",
    "tempfile",
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("core"), ids=lambda p: p.name)
def test_core_is_pure(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in CORE_FORBIDDEN, f"{path.name} imports {name}"
        if top == "jobsync":
            assert name.startswith("jobsync.core"), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", _modules("backends"), ids=lambda p: p.name)
def test_backends_never_import_runtime(path: Path) -> None:
    for name in _imports(path):
        assert not name.startswith("jobsync.runtime"), f"{path.name} imports {name}"


def test_core_imports_with_psycopg_blocked() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'psycopg' or name.startswith('psycopg.'):\n"
        "            raise ImportError('psycopg blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import jobsync, jobsync.core, jobsync.backends, jobsync.errors\n"
        "assert jobsync.core.token_for('task-1', 10000) == 5900\n"
        "assert 'psycopg' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _edges(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports when it is imported: top-level
    statements, relative imports resolved, ``if TYPE_CHECKING:`` blocks and imports
    inside functions left out (they run later, or never)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            continue
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                subs = {f"{base}.{alias.name}" for alias in node.names}
                found.update(s for s in subs if s in MODULES)
                if not subs <= set(MODULES):
                    found.add(base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _edges(name, path) for name, path in MODULES.items()}

# Who may import whom, by layer (the first two components of a module's name).
FORBIDDEN = {
    "jobsync.core": {"jobsync.backends", "jobsync.runtime", "jobsync.cli", "jobsync.sim",
                     "jobsync.testing", "jobsync.errors", "jobsync.dashboard", "jobsync.upgrade"},
    "jobsync.backends": {"jobsync.runtime", "jobsync.cli", "jobsync.sim", "jobsync.testing",
                         "jobsync.dashboard", "jobsync.upgrade"},
    "jobsync.runtime": {"jobsync.cli", "jobsync.sim", "jobsync.testing", "jobsync.dashboard",
                        "jobsync.upgrade"},
    "jobsync.upgrade": {"jobsync.runtime", "jobsync.cli", "jobsync.sim", "jobsync.testing",
                        "jobsync.dashboard"},
    "jobsync.cli": {"jobsync.sim", "jobsync.testing"},
    "jobsync.dashboard": {"jobsync.sim", "jobsync.testing", "jobsync.runtime"},
    "jobsync.sim": {"jobsync.cli", "jobsync.testing", "jobsync.dashboard"},
}  # fmt: skip


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_forbidden_edge_relative_imports_included(module: str) -> None:
    banned = FORBIDDEN.get(_layer(module), set())
    bad = sorted(m for m in GRAPH[module] if _layer(m) in banned)
    assert not bad, f"{module} imports {bad}"


def test_there_are_no_import_cycles() -> None:
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for nxt in sorted(GRAPH[module]):
            if seen.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[module] = 2

    for module in sorted(GRAPH):
        if module not in seen:
            visit(module, [module])
    assert not cycles, cycles


def test_the_graph_resolves_relative_imports(tmp_path: Path) -> None:
    """The checker itself: relative imports resolve, TYPE_CHECKING blocks do not count."""
    fake = tmp_path / "fake.py"
    fake.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..core import rules\n"
        "from . import base\n"
        "from .memory import MemoryStore\n"
        "if TYPE_CHECKING:\n"
        "    from jobsync.runtime import node\n"
    )
    assert _edges("jobsync.backends.fake", fake) == {
        "jobsync.core.rules",
        "jobsync.backends.base",
        "jobsync.backends.memory",
    }
