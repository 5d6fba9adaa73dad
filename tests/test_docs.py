"""The documentation matches the code: orch.toml.example, README.md, docs/ and every --help.

README.md is the doorway (what, install, five minutes on your own repository, the timer,
links); the reference lives in docs/: every command and exit code in docs/cli.md, every
fault point in docs/testing.md, every agent variable in docs/agents.md.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import orch.cli
from orch import config as config_mod
from orch import errors, faults

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "orch.toml.example"
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# Config fields that depend on where the file lives (or are not compared at all).
_LOCATION_FIELDS = {"raw", "source", "base_dir", "state_dir", "store.db_path", "workspace.root", "repos"}


def _fields(cls: type) -> list[str]:
    """Field names of a config record (a NamedTuple, or a dataclass)."""
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return list(cls._fields)  # type: ignore[attr-defined]


def _example() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and subcommand of the CLI, as argument paths: ("advance",), ("task", "add")."""
    root = typer.main.get_command(orch.cli.app)
    paths: list[tuple[str, ...]] = []
    for name, cmd in sorted(root.commands.items()):  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        if subs:
            paths.append((name,))
            paths.extend((name, sub) for sub in sorted(subs))
        else:
            paths.append((name,))
    return paths


def _leaf_paths() -> list[tuple[str, ...]]:
    root = typer.main.get_command(orch.cli.app)
    groups = {n for n, c in root.commands.items() if getattr(c, "commands", None)}  # type: ignore[attr-defined]
    return [p for p in _command_paths() if not (len(p) == 1 and p[0] in groups)]


# -- orch.toml.example ---------------------------------------------------------------


def test_example_builds_the_same_config_as_the_embedded_defaults() -> None:
    data = _example()
    from_file = config_mod.build(data, source=EXAMPLE, environ={})
    embedded = config_mod.build({}, environ={})
    compared = [name for name in _config_paths() if name not in _LOCATION_FIELDS]
    assert {"pipeline.stages", "pipeline.transitions", "gates", "effects", "agents"} <= set(compared)
    assert {"pipeline.max_retries", "relay.port", "plane.per_page"} <= set(compared)
    for name in compared:
        assert _attr(from_file, name) == _attr(embedded, name), f"Config.{name} differs"


def _config_paths() -> list[str]:
    """Config's fields, a section's as "section.field" (cfg.relay.port: "relay.port")."""
    paths: list[str] = []
    hints = typing.get_type_hints(config_mod.Config)
    for name in _fields(config_mod.Config):
        kind = hints[name]
        if isinstance(kind, type) and hasattr(kind, "_fields"):
            paths += [f"{name}.{field}" for field in _fields(kind)]
        else:
            paths.append(name)
    return paths


def _attr(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_example_values_equal_defaults_exactly() -> None:
    # repos is empty by default; the example shows [repos.app] commented out.
    data = _example()
    assert "repos" not in data or data["repos"] == {}
    expected = {k: v for k, v in config_mod.DEFAULTS.items() if k != "repos"}
    assert {k: v for k, v in data.items() if k != "repos"} == expected


def _key_paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            path = (*prefix, str(k))
            paths.append(path)
            if path != ("repos",):
                paths.extend(_key_paths(v, path))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            paths.extend(_key_paths(v, (*prefix, f"[{i}]")))
    return paths


def _lookup(data: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if part.startswith("[") and isinstance(data, list):
            i = int(part[1:-1])
            if i >= len(data):
                return False
            data = data[i]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return False
    return True


def test_every_default_key_appears_in_the_example() -> None:
    data = _example()
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = []
    for path in _key_paths(config_mod.DEFAULTS):
        if path == ("repos",):
            if "[repos." not in text:
                missing.append("repos")
        elif not _lookup(data, path):
            missing.append(".".join(path))
    assert not missing, f"keys of DEFAULTS missing from orch.toml.example: {missing}"


@pytest.mark.parametrize(
    ("table", "cls"),
    [
        ("pipeline.stages.*", config_mod.Stage),
        ("gates.*", config_mod.Gate),
        ("effects.*", config_mod.Effect),
        ("agents.*", config_mod.Agent),
        ("repos.*", config_mod.Repo),
        ("pipeline.transitions", config_mod.Transition),
    ],
)
def test_every_accepted_key_is_documented_in_the_example(table: str, cls: type) -> None:
    """Optional keys that DEFAULTS leaves unset are shown as `# key = ...` lines."""
    toml_name = {"source": "from", "target": "to"}
    text = EXAMPLE.read_text(encoding="utf-8")
    for name in _fields(cls):
        if name == "name":
            continue
        key = toml_name.get(name, name)
        assert re.search(rf"^[ \t#]*{key}\s*=", text, re.M), f"[{table}] {key} is not in orch.toml.example"


def test_example_header_names_discovery_and_env_overrides() -> None:
    head = EXAMPLE.read_text(encoding="utf-8").split("\n[", 1)[0]
    for needle in ("--config", "$ORCH_CONFIG", "./orch.toml", "$ORCH_HOME/orch.toml", "embedded defaults"):
        assert needle in head
    assert "ORCH_<SECTION>_<KEY>" in head
    assert "ORCH_TRANSITION_LEASE_ENABLED=false" in head


# -- README.md -----------------------------------------------------------------------


def test_readme_starts_with_demo_and_test() -> None:
    first = "\n".join(_readme().splitlines()[:30])
    assert "./scripts/demo" in first
    assert "./scripts/test" in first


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_cli_reference_mentions_every_command(path: tuple[str, ...]) -> None:
    assert f"orch {' '.join(path)}" in _doc("cli.md")


def test_cli_reference_lists_every_exit_code() -> None:
    codes = {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.OrchError)
    }
    table = _doc("cli.md").split("## Exit codes", 1)[1]
    for code in sorted(codes | {0, 130}):
        assert f"\n| {code} |" in table, f"exit code {code} is not in the docs/cli.md table"


def test_testing_doc_lists_every_fault_point() -> None:
    text = _doc("testing.md")
    for point in sorted(faults.POINTS):
        assert f"`{point}`" in text, f"ORCH_FAULT point {point} is not in docs/testing.md"


def test_agents_doc_lists_every_agent_variable() -> None:
    """Every ORCH_* variable that command_env.py, engine/env.py and engine/jobs.py give an agent."""
    files = ("command_env.py", "engine/env.py", "engine/jobs.py")
    src = "".join((ROOT / "orch" / n).read_text(encoding="utf-8") for n in files)
    names = set(re.findall(r"\b(ORCH_[A-Z_]+)\b", src))
    assert names, f"found no ORCH_* variables in {files}"
    text = _doc("agents.md")
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"agent variables missing from docs/agents.md: {missing}"


def test_readme_has_performance_pointer() -> None:
    assert "See bench/README.md for measured numbers." in _readme()


def test_readme_is_a_doorway() -> None:
    """Short, says how orch gets on PATH, walks through a repository of your own, links docs/."""
    text = _readme()
    assert len(text.encode()) < 8_000, f"README.md is {len(text.encode())} bytes: move reference to docs/"
    for needle in (
        "pipx install .",
        "uv tool install .",
        ".venv/bin",
        "orch init",
        "orch task add",
        "orch approve",
        "orch install cron --print",
        "* * * * *",
    ):
        assert needle in text, f"README.md lacks {needle!r}"
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", text))
    on_disk = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert on_disk <= linked, f"docs not linked from README.md: {sorted(on_disk - linked)}"
    assert linked <= on_disk, f"README.md links missing docs: {sorted(linked - on_disk)}"


def test_docs_links_resolve() -> None:
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+?)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


# -- --help --------------------------------------------------------------------------


@pytest.mark.parametrize("path", [(), *_command_paths()], ids=lambda p: " ".join(p) or "orch")
def test_every_help_has_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(orch.cli.app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"`orch {' '.join(path)} --help` has no Example:"


def test_leaf_commands_exist() -> None:
    # Guards the walk above: if typer changes shape, the parametrized tests must not go empty.
    leaves = _leaf_paths()
    assert ("advance",) in leaves
    assert ("task", "add") in leaves
    assert len(leaves) >= 10
