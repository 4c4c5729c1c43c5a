"""The import directions the packages promise: the service never imports the CLI, and no command
module imports the CLI's entry point (``cli/main.py`` imports them, so that would be a circle)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "metaprune"


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, as an absolute dotted name (relative ones resolved)."""
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            names.append(mod)
            names += [f"{mod}.{a.name}" for a in node.names]
    return names


def test_service_does_not_import_the_cli():
    files = sorted((PKG / "service").rglob("*.py"))
    assert files
    bad = {f.name: n for f in files for n in _imports(f) if n == "metaprune.cli" or n.startswith("metaprune.cli.")}
    assert bad == {}


def test_no_command_module_imports_the_entry_point():
    files = sorted((PKG / "cli").glob("*_cmds.py"))
    assert len(files) >= 8
    bad = {f.name: n for f in files for n in _imports(f) if n.startswith("metaprune.cli.main")}
    assert bad == {}
    assert "metaprune.cli.group" in _imports(PKG / "cli" / "space_cmds.py")


def test_import_scan_sees_relative_imports():
    # the scanner itself: the service's api module reaches the shared space summaries, and the CLI's
    # entry point imports the group
    assert "metaprune.spaces_summary.space_info" in _imports(PKG / "service" / "api.py")
    assert "metaprune.cli.group.invoke" in _imports(PKG / "cli" / "main.py")
