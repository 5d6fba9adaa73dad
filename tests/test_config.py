"""Config discovery, ORCH_* overrides and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch import config as config_mod
from orch.config.sections import PLAIN_SECTIONS
from orch.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_embedded_defaults_when_nothing_is_configured(tmp_path: Path) -> None:
    cfg = config_mod.load(cwd=tmp_path, environ={})
    assert cfg.source is None
    assert cfg.store.db_path == tmp_path.resolve() / ".orch" / "orch.db"
    assert [t.name for t in cfg.pipeline.transitions_from("review")] == [
        "review->development",
        "review->merge",
    ]
    assert cfg.transition_lease.enabled


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = _write(tmp_path / "orch.toml", "[tracker]\nkey_prefix = 'HERE'\n")
    home = tmp_path / "home"
    home.mkdir()
    _write(home / "orch.toml", "[tracker]\nkey_prefix = 'HOME'\n")
    env_file = _write(tmp_path / "env.toml", "[tracker]\nkey_prefix = 'ENV'\n")
    explicit = _write(tmp_path / "x.toml", "[tracker]\nkey_prefix = 'EXPLICIT'\n")
    monkeypatch.setenv("ORCH_HOME", str(home))
    monkeypatch.setenv("ORCH_CONFIG", str(env_file))
    assert config_mod.load(explicit, cwd=tmp_path).tracker.key_prefix == "EXPLICIT"
    assert config_mod.load(cwd=tmp_path).tracker.key_prefix == "ENV"
    monkeypatch.delenv("ORCH_CONFIG")
    assert config_mod.load(cwd=tmp_path).tracker.key_prefix == "HERE"
    here.unlink()
    cfg = config_mod.load(cwd=tmp_path)
    assert cfg.tracker.key_prefix == "HOME"
    assert cfg.state_dir == home.resolve()


def test_env_overrides_with_types(tmp_path: Path) -> None:
    env = {
        "ORCH_TRANSITION_LEASE_ENABLED": "false",
        "ORCH_STORE_BUSY_TIMEOUT_MS": "250",
        "ORCH_PIPELINE_MAX_RETRIES": "7",
    }
    cfg = config_mod.load(cwd=tmp_path, environ=env)
    assert (cfg.transition_lease.enabled, cfg.store.busy_timeout_ms, cfg.pipeline.max_retries) == (
        False,
        250,
        7,
    )
    with pytest.raises(ConfigError, match="ORCH_TRANSITION_LEASE_ENABLED: expected true or false"):
        config_mod.load(cwd=tmp_path, environ={"ORCH_TRANSITION_LEASE_ENABLED": "maybe"})


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[transition_lease]\nenabled = 'yes'\n", ["[transition_lease] enabled", "true or false"]),
        ("[store]\nbusy_timeout_ms = -1\n", ["[store] busy_timeout_ms", "a whole number >= 0"]),
        ("[tracker]\nkind = 'jira'\n", ["[tracker] kind", "'local'"]),
        ("[nonsense]\nx = 1\n", ["unknown section [nonsense]"]),
        ("[agents.dev]\ncommand = 'x'\ntimout_s = 3\n", ["[agents.dev] timout_s: unknown key"]),
        ("[[pipeline.transitions]]\nfrom = 'analysis'\nto = 'nowhere'\n", ["stage 'nowhere'"]),
        (
            "[[pipeline.transitions]]\nfrom = 'analysis'\nto = 'done'\ngates = ['magic']\n",
            ["unknown gate 'magic'", "[gates.magic]"],
        ),
        (
            "[pipeline]\ntransitions = []\n[pipeline.stages.analysis]\nagent = 'ghost'\n"
            "[pipeline.stages.done]\nterminal = true\n",
            ["unknown agent 'ghost'"],
        ),
        ("[transition_lease]\nenable = false\n", ["[transition_lease] enable: unknown key"]),
        ("[gates.g]\ntype = 'command'\n", ["[gates.g] command: required"]),
        ("this is not toml", ["not valid TOML"]),
    ],
)
def test_bad_config_names_the_file_and_the_key(tmp_path: Path, text: str, names: list[str]) -> None:
    path = _write(tmp_path / "orch.toml", text)
    with pytest.raises(ConfigError) as e:
        config_mod.load(path, environ={})
    assert e.value.exit_code == 2
    assert str(path) in str(e.value)
    for n in names:
        assert n in str(e.value)


def test_repo_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "orch.toml", "[repos.app]\npath = 'code'\n")
    cfg = config_mod.load(path, environ={})
    assert cfg.repos["app"].path == tmp_path.resolve() / "code"
    assert cfg.default_repo() == "app"


# -- the shape of Config: cfg.<section>.<key>, defaults in one place ------------------

_SECTION_KEYS_RENAMED = {"store": {"path": "db_path"}}  # the resolved path, not the text
_SECTION_KEYS_GATHERED = {
    "workspace": ({"after_create", "before_run", "after_run", "before_remove"}, "hooks")
}


@pytest.mark.parametrize("section", [*PLAIN_SECTIONS, "plane", "gitea", "telegram"])
def test_each_section_is_a_record_named_after_its_keys(section: str, tmp_path: Path) -> None:
    cfg = config_mod.build({}, cwd=tmp_path, environ={})
    record = getattr(cfg, section)
    keys = {_SECTION_KEYS_RENAMED.get(section, {}).get(k, k) for k in config_mod.DEFAULTS[section]}
    gathered, into = _SECTION_KEYS_GATHERED.get(section, (set(), ""))
    keys = keys - gathered | ({into} if into else set())
    assert set(record._fields) == keys
    for key, default in config_mod.DEFAULTS[section].items():
        value = getattr(record, _SECTION_KEYS_RENAMED.get(section, {}).get(key, key), None)
        if isinstance(default, bool | int | float) or (isinstance(default, str) and default):
            assert value == default, f"cfg.{section}.{key}"


def test_defaults_live_in_one_place() -> None:
    """The records declare no defaults and the Validator's reads take none: defaults.py has them all."""
    import inspect

    from orch.config import sections
    from orch.config.defaults import ITEM_DEFAULTS, REQUIRED_ITEM_KEYS
    from orch.config.validator import Validator

    records = [config_mod.Config, config_mod.Pipeline, config_mod.Stage, config_mod.Transition]
    records += [config_mod.Gate, config_mod.Effect, config_mod.Agent, config_mod.Repo]
    records += [c for name, c in vars(sections).items() if name.endswith("Section")]
    records.append(config_mod.PlaneProject)
    for record in records:
        assert record._field_defaults == {}, record.__name__
    for name, method in inspect.getmembers(Validator, inspect.isfunction):
        for param in inspect.signature(method).parameters.values():
            assert param.default is inspect.Parameter.empty, f"Validator.{name}({param.name}=...)"
    toml_name = {"source": "from", "target": "to"}
    for kind, record in [
        ("stage", config_mod.Stage),
        ("transition", config_mod.Transition),
        ("gate", config_mod.Gate),
        ("effect", config_mod.Effect),
        ("agent", config_mod.Agent),
        ("repo", config_mod.Repo),
    ]:
        fields = {toml_name.get(f, f) for f in record._fields} - {"name"}
        assert fields == set(ITEM_DEFAULTS[kind]) | set(REQUIRED_ITEM_KEYS[kind]), kind
