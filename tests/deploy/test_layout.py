"""The package layout the code promises: service/ never reaches into consumers/, the label core
imports no I/O, and the embedded mode runs without loading the Kafka client."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(package: str) -> dict[str, set[str]]:
    """Each module file of a package -> the top-level modules it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_service_never_imports_consumers() -> None:
    """The `labelloop` command is the one composition root: `consume` starts the joiner."""
    offenders = {
        path: sorted(n for n in names if n.split(".")[0] == "consumers") for path, names in _imports("service").items()
    }
    assert {p: n for p, n in offenders.items() if n} == {"service/cli.py": ["consumers.main"]}


def test_the_label_core_imports_no_io() -> None:
    io = (
        "sqlalchemy",
        "aiokafka",
        "fastapi",
        "starlette",
        "httpx",
        "asyncpg",
        "aiosqlite",
        "service.store",
        "service.api",
        "service.kafka",
    )
    offenders = {path: sorted(n for n in names if n.startswith(io)) for path, names in _imports("service/core").items()}
    assert {p: n for p, n in offenders.items() if n} == {}


def test_embedded_mode_does_not_load_the_kafka_client(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from service.api.app import create_app\n"
        "from service.config import Settings\n"
        f"create_app(Settings(database_url='sqlite+aiosqlite:///{tmp_path}/x.db'))\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('aiokafka', 'consumers'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
