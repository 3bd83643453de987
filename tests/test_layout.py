"""The package's arrows point one way: the runtime never imports the tools wing, and the store's
three layers (the file, the reads over it, what serves them) import only downwards."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sensorstream"


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, as an absolute name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


def offenders(sources: list[Path], prefixes: tuple[str, ...]) -> list[str]:
    found = []
    for path in sources:
        bad = sorted(n for n in imported(path) if n.startswith(prefixes))
        if bad:
            found.append(f"{path.relative_to(PACKAGE)} imports {', '.join(bad)}")
    return found


def test_the_walk_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\ndef f():\n    from sensorstream.tools.ports import free_port\n")
    assert "sensorstream.tools.ports" in imported(module)


def test_no_runtime_module_imports_the_tools_wing():
    runtime = [p for p in modules(PACKAGE) if PACKAGE / "tools" not in p.parents]
    assert len(runtime) > 50
    assert offenders(runtime, ("sensorstream.tools",)) == []


@pytest.mark.parametrize(
    ("layer", "above"),
    [
        ("store", ("sensorstream.reads", "sensorstream.serve")),
        ("reads", ("sensorstream.serve",)),
    ],
)
def test_the_store_layers_import_only_downwards(layer, above):
    assert offenders(modules(PACKAGE / layer), above) == []


def test_the_tools_commands_reach_the_menu_through_their_entry_point():
    from importlib.metadata import entry_points

    from typer.main import get_command

    from sensorstream.cli import TOOL_COMMANDS, app

    registered = {ep.name for ep in entry_points(group=TOOL_COMMANDS)}
    assert registered == {"bench", "cluster", "faults"}
    assert registered <= set(get_command(app).commands)
