"""The core is pure: stdlib + sortedcontainers only, no framework, no floats in the API."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import matching.core

CORE = Path(matching.core.__file__).parent
FORBIDDEN = re.compile(r"^\s*(from|import)\s+(django|rest_framework|redis|celery|psycopg)\b", re.M)
ALLOWED_TOP_LEVEL = {
    "__future__",
    "collections",
    "dataclasses",
    "heapq",
    "operator",
    "decimal",
    "sortedcontainers",
    "typing",
}


def _sources():
    files = sorted(CORE.rglob("*.py"))
    assert files, "no core sources found"
    return files


def test_no_framework_imports_in_source():
    for path in _sources():
        assert not FORBIDDEN.search(path.read_text()), f"{path} imports a framework"


def test_only_stdlib_and_sortedcontainers_imported():
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED_TOP_LEVEL, f"{path}: unexpected import {name}"


def test_decimal_and_float_only_at_the_edge():
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                # Never float anywhere; Decimal only in units.py.
                assert node.id != "float", f"{path}: float used"
                if path.name != "units.py":
                    assert node.id != "Decimal", f"{path}: Decimal used outside units.py"
            elif isinstance(node, ast.ImportFrom) and node.module == "decimal":
                assert path.name == "units.py", f"{path}: imports decimal"
            elif isinstance(node, ast.Constant) and isinstance(node.value, float):
                raise AssertionError(f"{path}: float literal {node.value}")


def test_importing_core_loads_no_framework():
    code = (
        "import sys, matching.core; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('django', 'rest_framework', 'redis', 'celery', 'psycopg')]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
