"""The composition root: config -> store + adapters -> Runtime."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from orch import config as config_mod
from orch.config import Config
from orch.engine.runtime import Runtime
from orch.identity import me
from orch.store import Store

if TYPE_CHECKING:
    from orch.adapters.forge_local import LocalForge
    from orch.adapters.process import ProcessRunner


def actor_name(default: str = "cli") -> str:
    """Who is acting, for the audit trail: $ORCH_ACTOR, else the user at the host."""
    return os.environ.get("ORCH_ACTOR") or f"{default}:{os.environ.get('USER', 'someone')}"


def open_runtime(
    cfg: Config | None = None,
    *,
    config_path: str | Path | None = None,
    actor: str | None = None,
    create: bool = True,
) -> Runtime:
    from orch.adapters.console import ConsoleNotifier, LocalTracker
    from orch.adapters.process import ProcessRunner

    cfg = cfg or config_mod.load(config_path)
    store = Store.open(cfg.db_path, busy_timeout_ms=cfg.busy_timeout_ms, create=create)
    runner = ProcessRunner()
    clock = time.time
    return Runtime(
        config=cfg,
        store=store,
        forge=lambda: _local_forge(cfg, store, runner, clock),
        tracker=LocalTracker(),
        notifier=ConsoleNotifier(),
        runner=runner,
        clock=clock,
        owner=me(),
        actor=actor or actor_name(),
    )


def _local_forge(cfg: Config, store: Store, runner: ProcessRunner, clock: Callable[[], float]) -> LocalForge:
    from orch.adapters.forge_local import LocalForge

    return LocalForge(config=cfg, store=store, runner=runner, clock=clock)
