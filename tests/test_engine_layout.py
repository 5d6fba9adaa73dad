"""One owner per rule inside the engine (issue 12), where an import contract cannot see it.

The layers themselves are pyproject.toml's import-linter contracts (`lint-imports`).
"""

from __future__ import annotations

import re
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "orch" / "engine"


def _sources() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(ENGINE.glob("*.py"))}


def test_only_the_transition_module_commits_a_stage() -> None:
    callers = [name for name, src in _sources().items() if ".commit_transition(" in src]
    assert callers == ["transition.py"], callers


def test_lease_names_are_built_only_in_lease_names() -> None:
    built = re.compile(r"""f?["'](task|merge|tick):(\{|["'])""")
    offenders = [
        f"{name}: {m.group(0)}"
        for name, src in _sources().items()
        if name != "lease_names.py"
        for m in built.finditer(src)
        # the outbox key of a stage change, `task:KEY:vN` (transition.py), is no lease
        if not src.startswith("key}:v", m.end())
    ]
    assert not offenders, offenders


def test_no_module_of_orch_reaches_500_lines() -> None:
    """Issue 12: a module a reader can hold in mind. Counted over every package, not only
    the engine, so a new module that grows past it is caught where it grows."""
    root = ENGINE.parent
    sizes = {str(p.relative_to(root)): p.read_text(encoding="utf-8").count("\n") for p in root.rglob("*.py")}
    assert len(sizes) > 80, sorted(sizes)  # the walk found the package, not an empty directory
    long = {name: lines for name, lines in sizes.items() if lines >= 500}
    assert not long, long
