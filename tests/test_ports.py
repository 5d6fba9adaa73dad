"""The engine speaks to adapters through the ports alone (docs/architecture.md).

import-linter keeps `orch.engine` from importing an adapter; what it cannot see is the
engine asking an adapter what it is: `getattr`/`hasattr` on an object, a `cast`, a
`# type: ignore[attr-defined]` on a method the port lacks, or a look at which tracker is
configured. Those are read here from the engine's source (the AST, not a grep, so a
docstring that names them does not count).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "orch" / "engine"
MODULES = sorted(ENGINE.glob("*.py"))


def _findings(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    out = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "cast")
        ):
            out.append(f"{path.name}:{node.lineno}: {node.func.id}(...)")
        if isinstance(node, ast.Attribute) and node.attr in ("tracker_kind", "forge_kind"):
            out.append(f"{path.name}:{node.lineno}: .{node.attr}")
        # cfg.tracker.kind: which tracker is configured is the composition root's business.
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "kind"
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "tracker"
        ):
            out.append(f"{path.name}:{node.lineno}: .tracker.kind")
    for n, line in enumerate(source.splitlines(), 1):
        if "type: ignore[attr-defined]" in line:
            out.append(f"{path.name}:{n}: type: ignore[attr-defined]")
    return out


def test_the_scan_sees_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(rt, cfg):\n"
        "    p = getattr(rt.forge, 'publish', None)\n"
        "    if hasattr(rt.tracker, 'relations') or cfg.tracker.kind == 'local':\n"
        "        return rt.tracker.items()  # type: ignore[attr-defined]\n"
        '    """getattr(x) in a docstring is fine"""\n'
    )
    assert sorted(f.split(": ", 1)[1] for f in _findings(sample)) == [
        ".tracker.kind",
        "getattr(...)",
        "hasattr(...)",
        "type: ignore[attr-defined]",
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_engine_module_asks_an_adapter_what_it_is(path: Path) -> None:
    assert _findings(path) == []
