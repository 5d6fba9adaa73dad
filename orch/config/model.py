"""`Config`: the one frozen, validated object every command works from.

A field per section of orch.toml (`cfg.relay.port` is `[relay] port`), the pipeline
(`cfg.pipeline.stages`), the named tables (`cfg.gates`, `cfg.effects`, `cfg.agents`,
`cfg.repos`) and where things live (`source`, `base_dir`, `state_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from orch.config.environment import env_values
from orch.config.pipeline import Agent, Effect, Gate, Pipeline, Repo
from orch.config.sections import (
    DepsSection,
    ForgeSection,
    GiteaSection,
    InboxSection,
    MergeSection,
    NotifierSection,
    PlaneSection,
    ReaperSection,
    ReconcileSection,
    RelaySection,
    StoreSection,
    TelegramSection,
    TrackerSection,
    TransitionLeaseSection,
    WorkSection,
    WorkspaceSection,
)
from orch.errors import ConfigError


class Config(NamedTuple):
    source: Path | None  # the file read, None for the embedded defaults
    base_dir: Path  # relative paths in the file are relative to this
    state_dir: Path  # $ORCH_HOME, else .orch/ beside the file
    store: StoreSection
    workspace: WorkspaceSection
    transition_lease: TransitionLeaseSection
    work: WorkSection
    reaper: ReaperSection
    deps: DepsSection
    merge: MergeSection
    relay: RelaySection
    inbox: InboxSection
    reconcile: ReconcileSection
    tracker: TrackerSection
    forge: ForgeSection
    notifier: NotifierSection
    plane: PlaneSection
    gitea: GiteaSection
    telegram: TelegramSection
    pipeline: Pipeline
    gates: dict[str, Gate]
    effects: dict[str, Effect]
    agents: dict[str, Agent]
    repos: dict[str, Repo]
    raw: dict[str, Any]  # the merged tables, for `orch config show`

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def grace(self, stage: str) -> float:
        """How long a task must sit untouched at `stage` before the reconciler looks at it.

        A stage with no agent (merge, deploy, monitoring) waits for no event but the tick
        itself: no grace unless configured.
        """
        if stage in self.reconcile.stage_grace_s:
            return self.reconcile.stage_grace_s[stage]
        st = self.pipeline.stages.get(stage)
        return 0.0 if st is not None and st.agent is None else self.reconcile.grace_s

    def secret_env_names(self) -> frozenset[str]:
        """Every variable orch knows holds a secret: the value of each `*_env` key.

        Commands orch runs (agents, hooks, gates, effects, CI) never inherit these; a
        `pass_env` list gives one back by name.
        """
        return frozenset(str(x) for x in env_values(self.raw))

    def repo_for_forge(self, full_name: str) -> str | None:
        """The configured repo a forge webhook's "owner/name" belongs to (forge_repo, else the name)."""
        for repo in self.repos.values():
            if repo.forge_repo and repo.forge_repo.lower() == full_name.lower():
                return repo.name
        tail = full_name.rsplit("/", 1)[-1]
        return tail if tail in self.repos and not self.repos[tail].forge_repo else None

    def default_repo(self) -> str:
        if len(self.repos) == 1:
            return next(iter(self.repos))
        if not self.repos:
            raise ConfigError("no repository configured: add a [repos.NAME] section with path = ...")
        raise ConfigError(f"several repositories configured ({', '.join(self.repos)}): pass --repo")
