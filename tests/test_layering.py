"""The direction of imports is the architecture (DESIGN.md section 3).

core imports nothing outside itself and no I/O, clock, thread, random,
logging or os module; backends never import runtime; the package imports
without psycopg.
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
    "time", "datetime", "threading", "socket", "random", "logging", "os", "sys",
    "subprocess", "asyncio", "psycopg", "sqlite3", "sqlite_utils", "io", "pathlib",
    "signal", "secrets", "uuid", "multiprocessing", "select", "selectors", "tempfile",
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
