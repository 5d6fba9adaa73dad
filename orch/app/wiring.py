"""The composition root: config -> store + adapters -> Runtime.

Adapters for the real integrations (and httpx with them) are imported only when the
configuration asks for them: the embedded default starts without any HTTP code.
Secrets are read from the environment here, at the last moment, and handed to the
clients; a missing one is a configuration error that names the variable, never a value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orch import config as config_mod
from orch import secret_env
from orch.config import Config
from orch.engine.runtime import Runtime
from orch.errors import ConfigError, NoDatabase
from orch.identity import me, set_session_check
from orch.store import Store

if TYPE_CHECKING:
    from orch.adapters.process import ProcessRunner
    from orch.ports import ExternalTracker, Forge, Notifier, Tracker


def actor_name(default: str = "cli") -> str:
    """Who is acting, for the audit trail: $ORCH_ACTOR, else the user at the host."""
    return os.environ.get("ORCH_ACTOR") or f"{default}:{os.environ.get('USER', 'someone')}"


def secret(var: str, what: str) -> str:
    value = os.environ.get(var, "")
    if not value:
        raise ConfigError(f"{what}: the environment variable {var} is not set")
    return value


def open_store(cfg: Config, *, create: bool = True) -> Store:
    """The store the configuration names: the SQLite file, or PostgreSQL at [store] url.
    With `create=False` and no database there, NoDatabase says how to make one."""
    try:
        return _open_store(cfg, create=create)
    except NoDatabase as e:
        fix = "[store] url" if cfg.store.url else "[store] path, or mount the volume that holds it"
        raise NoDatabase(f"{e}: run `orch init` to create one (or fix {fix})") from None


def _open_store(cfg: Config, *, create: bool) -> Store:
    if not cfg.store.url:
        return Store.open(cfg.store.db_path, busy_timeout_ms=cfg.store.busy_timeout_ms, create=create)
    # Imported here only: psycopg costs start-up time the SQLite path must not pay.
    from orch.store.postgres import PostgresDatabase

    # With no variable set, libpq looks for the password itself (~/.pgpass).
    password = os.environ.get(cfg.store.password_env) if cfg.store.password_env else None
    db = PostgresDatabase.open(
        cfg.store.url, password=password, busy_timeout_ms=cfg.store.busy_timeout_ms, create=create
    )
    # Liveness across hosts: this process's identity is tied to its database session, and
    # an owner on another host is judged by its sessions (orch/identity.py).
    try:
        db.register(me())
    except BaseException:
        db.close()
        raise
    set_session_check(db.owner_alive)
    return Store(db)


def open_runtime(
    cfg: Config | None = None,
    *,
    config_path: str | Path | None = None,
    actor: str | None = None,
    create: bool = True,
) -> Runtime:
    from orch.adapters.process import ProcessRunner

    cfg = cfg or config_mod.load(config_path)
    store = open_store(cfg, create=create)
    secrets = cfg.secret_env_names()
    runner = ProcessRunner(hidden=secrets)
    secret_env.hide(secrets)  # for git (orch/adapters/git.py)
    clock = time.time
    try:
        tracker, external = _tracker(cfg, store, clock)
        notifier = _notifier(cfg, store, clock)
    except BaseException:
        store.close()
        raise
    return Runtime(
        config=cfg,
        store=store,
        forge=lambda: _forge(cfg, store, runner, clock),
        tracker=tracker,
        external=external,
        notifier=notifier,
        runner=runner,
        clock=clock,
        owner=me(),
        actor=actor or actor_name(),
    )


def http_client(timeout_s: float) -> Any:
    import httpx

    return httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)), follow_redirects=False)


def _tracker(cfg: Config, store: Store, clock: Callable[[], float]) -> tuple[Tracker, ExternalTracker | None]:
    """The tracker, and the same object again when it is an external one (else None)."""
    if cfg.tracker.kind == "local":
        from orch.adapters.tracker_local import LocalTracker

        return LocalTracker(), None
    from orch.adapters.plane import PlaneClient, SharedBudget
    from orch.adapters.tracker_plane import PlaneTracker

    api_key = secret(cfg.plane.api_key_env, "[plane] api_key_env")
    client = PlaneClient(
        client=http_client(cfg.plane.timeout_s),
        base_url=cfg.plane.base_url,
        workspace=cfg.plane.workspace,
        api_key=api_key,
        per_page=cfg.plane.per_page,
        # Plane allows 60 requests a minute per key: one run (one process, one tick) may
        # spend this many; the reconciler goes on from where it stopped on the next run.
        budget=cfg.plane.requests_per_run or None,
        # ... and all processes together this many a minute, counted in the DB.
        shared=SharedBudget(
            store=store,
            base_url=cfg.plane.base_url,
            api_key=api_key,
            per_minute=cfg.plane.requests_per_minute,
            clock=clock,
        )
        if cfg.plane.requests_per_minute
        else None,
    )
    plane = PlaneTracker(
        client=client,
        store=store,
        projects=cfg.plane.projects,
        states_ttl_s=cfg.plane.states_ttl_s,
        clock=clock,
    )
    return plane, plane


def _notifier(cfg: Config, store: Store | None = None, clock: Callable[[], float] = time.time) -> Notifier:
    if cfg.notifier.kind == "console":
        from orch.adapters.console import ConsoleNotifier

        return ConsoleNotifier()
    from orch.adapters.notifier_telegram import TelegramNotifier
    from orch.adapters.telegram import TelegramClient

    client = TelegramClient(
        client=http_client(cfg.telegram.timeout_s),
        base_url=cfg.telegram.base_url,
        token=secret(cfg.telegram.token_env, "[telegram] token_env"),
        max_wait_s=cfg.telegram.max_wait_s,
    )
    return TelegramNotifier(
        client=client,
        chat_id=cfg.telegram.chat_id,
        thread_id=cfg.telegram.thread_id or None,
        disable_notification=cfg.telegram.disable_notification,
        store=store,
        clock=clock,
    )


def _forge(cfg: Config, store: Store, runner: ProcessRunner, clock: Callable[[], float]) -> Forge:
    if cfg.forge.kind == "local":
        from orch.adapters.forge_local import LocalForge

        return LocalForge(config=cfg, store=store, runner=runner, clock=clock)
    from orch.adapters.forge_gitea import GiteaForge, GiteaRepo
    from orch.adapters.gitea import GiteaClient

    client = GiteaClient(
        client=http_client(cfg.gitea.timeout_s),
        base_url=cfg.gitea.base_url,
        token=secret(cfg.gitea.token_env, "[gitea] token_env"),
    )
    repos = {}
    for repo in cfg.repos.values():
        assert repo.forge_repo is not None  # config validation requires it with kind = "gitea"
        owner, name = repo.forge_repo.split("/", 1)
        clone = (
            str(repo.path) if repo.path.exists() else f"{cfg.gitea.base_url.rstrip('/')}/{owner}/{name}.git"
        )
        repos[repo.name] = GiteaRepo(
            name=repo.name, owner=owner, repo=name, clone_url=clone, default_branch=repo.default_branch
        )
    return GiteaForge(
        client=client,
        repos=repos,
        workspace_root=cfg.workspace.root,
        mirror_root=cfg.gitea.mirror_root,
        runner=runner,
        hooks=cfg.workspace.hooks,
        hook_timeout_s=cfg.workspace.hook_timeout_s,
        log_dir=cfg.log_dir,
        merge_style=cfg.gitea.merge_style,  # type: ignore[arg-type]
    )
