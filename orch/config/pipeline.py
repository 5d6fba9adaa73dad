"""The pipeline as data: stages, the transitions between them, and the gates, effects,
agents and repositories they name (DESIGN.md section 3).

Records only; pipeline_loader.py reads them from orch.toml, defaults.py holds the values
of the keys left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

GATE_TYPES = ("verdict", "agent", "branch", "ci", "command", "monitor")
EFFECT_TYPES = ("rebase", "merge", "command")


class Stage(NamedTuple):
    name: str
    agent: str | None
    human: bool
    terminal: bool


class Transition(NamedTuple):
    source: str
    target: str
    gates: tuple[str, ...]
    effects: tuple[str, ...]
    retry: bool
    on_fail: str | None  # where a failed effect sends the task (else: blocked)

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"


class Gate(NamedTuple):
    name: str
    type: str
    verdict: str | None
    bind_head: bool
    command: str | None
    timeout_s: float
    pass_env: tuple[str, ...]  # secrets its command is given (docs/security.md)


class Effect(NamedTuple):
    name: str
    type: str
    irreversible: bool
    command: str | None
    probe: str | None
    timeout_s: float
    pass_env: tuple[str, ...]  # secrets its command and probe are given


class Agent(NamedTuple):
    name: str
    command: str
    prompt: str
    timeout_s: float
    stall_timeout_s: float  # 0: off
    max_attempts: int
    max_concurrency: int  # 0: only the global limit
    pass_env: tuple[str, ...]  # secrets the agent is given back by name (docs/security.md)


class Repo(NamedTuple):
    name: str
    path: Path
    default_branch: str
    ci: str | None
    ci_timeout_s: float
    forge_repo: str | None  # "owner/name" on the forge: maps its webhooks here


class Pipeline(NamedTuple):
    """[pipeline]: where a task starts, the stages and the transitions between them."""

    initial: str
    max_retries: int
    stages: dict[str, Stage]
    transitions: tuple[Transition, ...]

    def transitions_from(self, stage: str) -> tuple[Transition, ...]:
        return tuple(t for t in self.transitions if t.source == stage)

    def is_terminal(self, stage: str) -> bool:
        s = self.stages.get(stage)
        return bool(s and s.terminal)
