"""The rooms of DESIGN.md: imports point inward, and each library stays in its room."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "callbridge"
STDLIB = set(sys.stdlib_module_names)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _files(room: str = "") -> list[Path]:
    return sorted((SRC / room).rglob("*.py"))


def _room(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def test_domain_imports_only_stdlib_and_itself() -> None:
    bad = []
    for path in _files("domain"):
        for name in _imports(path):
            top = name.split(".")[0]
            allowed = top in STDLIB or name.startswith("callbridge.domain")
            # numbering-plan data, not infrastructure: the one exception, in numbers.py only
            allowed = allowed or (top == "phonenumbers" and path.name == "numbers.py")
            if not allowed:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


def test_sqlalchemy_only_in_store() -> None:
    bad = [
        f"{p.relative_to(SRC)} imports {n}"
        for p in _files()
        if _room(p) != "store"
        for n in _imports(p)
        if n.split(".")[0] in {"sqlalchemy", "alembic", "asyncpg", "aiosqlite"}
    ]
    assert bad == []


def test_fastapi_only_in_web() -> None:
    bad = [
        f"{p.relative_to(SRC)} imports {n}"
        for p in _files()
        if _room(p) != "web"
        for n in _imports(p)
        if n.split(".")[0] == "fastapi"
    ]
    assert bad == []


def test_inner_rooms_do_not_import_outer_ones() -> None:
    outer = {"web", "pbx", "store", "crm", "agent", "cli", "hub", "bus_redis"}
    bad = []
    for room in ("domain", "services"):
        for path in _files(room):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "callbridge" and len(parts) > 1 and parts[1] in outer:
                    bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert bad == []


def test_pbx_drivers_do_not_reach_web_or_store() -> None:
    bad = [
        f"{p.relative_to(SRC)} imports {n}"
        for p in _files("pbx")
        for n in _imports(p)
        if n.startswith(("callbridge.web", "callbridge.store"))
    ]
    assert bad == []
