"""orch.toml + ORCH_* overrides -> one frozen, validated `Config`.

Discovery, first hit wins: `--config PATH`, `$ORCH_CONFIG`, `./orch.toml` (or the
nearest parent directory's), `$ORCH_HOME/orch.toml`, else the embedded defaults
(defaults.py, which `orch.toml.example` spells out). State (database, worktrees, logs)
lives in `$ORCH_HOME` if set, else in `.orch/` beside the config file (or the current
directory).

Every scalar key of a plain section can be overridden from the environment as
`ORCH_<SECTION>_<KEY>` (`ORCH_TRANSITION_LEASE_ENABLED=false`). Errors name the file,
the key and what was expected. Secrets are never in this file: a key ending in `_env`
names the environment variable that holds one.

The package, by noun:

    defaults.py         every default value (DEFAULTS, and the optional keys of named tables)
    sections.py         one record per plain section: cfg.relay.port is [relay] port
    pipeline.py         Stage, Transition, Gate, Effect, Agent, Repo and the Pipeline
    model.py            Config, the frozen whole
    loader.py           discover, load, build: file + environment -> Config
    pipeline_loader.py  reading [pipeline] and the named tables, checked against each other
    environment.py      ORCH_* overrides, RESERVED_VARIABLES, the variables holding secrets
    validator.py        typed reads that collect every problem into one ConfigError
    templates.py        prompt templates: their variables, and filling them in
"""

from __future__ import annotations

from orch.config.defaults import DEFAULT_PROMPT, DEFAULTS
from orch.config.environment import RESERVED_VARIABLES
from orch.config.loader import build, discover, load, merged
from orch.config.model import Config
from orch.config.pipeline import (
    EFFECT_TYPES,
    GATE_TYPES,
    Agent,
    Effect,
    Gate,
    Pipeline,
    Repo,
    Stage,
    Transition,
)
from orch.config.sections import (
    FORGE_KINDS,
    HOOKS,
    LOGICAL_STATES,
    NOTIFIER_KINDS,
    PLANE_MAX_PER_PAGE,
    TRACKER_KINDS,
    PlaneProject,
)
from orch.config.templates import PROMPT_VARIABLES, render_template

__all__ = [
    "DEFAULTS",
    "DEFAULT_PROMPT",
    "EFFECT_TYPES",
    "FORGE_KINDS",
    "GATE_TYPES",
    "HOOKS",
    "LOGICAL_STATES",
    "NOTIFIER_KINDS",
    "PLANE_MAX_PER_PAGE",
    "PROMPT_VARIABLES",
    "RESERVED_VARIABLES",
    "TRACKER_KINDS",
    "Agent",
    "Config",
    "Effect",
    "Gate",
    "Pipeline",
    "PlaneProject",
    "Repo",
    "Stage",
    "Transition",
    "build",
    "discover",
    "load",
    "merged",
    "render_template",
]
