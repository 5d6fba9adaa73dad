"""What the commands share at run time: the root's `--config` and the runtime opened from it.

The root callback (orch.cli.commands) records `--config` here; the command modules read
it through `config_path()` and `runtime()`, so none of them imports the root app.
"""

from __future__ import annotations

from typing import Any

_root: dict[str, str | None] = {"config": None}


def set_config_path(path: str | None) -> None:
    _root["config"] = path


def config_path() -> str | None:
    """The root's `--config` (or $ORCH_CONFIG); None lets the config discovery decide."""
    return _root["config"]


def runtime(actor: str | None = None, *, create: bool = False) -> Any:
    """This command's runtime; closed (and its outbox flushed) when the process exits.

    Reading commands never create the database: on a missing one they fail naming the
    path and `orch init` (an unmounted volume must not fork the state in two). Only the
    writes that can come first (`init`, `task add`, `tick`, `event`, `relay serve`)
    pass `create=True`."""
    import atexit

    from orch.app.wiring import open_runtime

    rt = open_runtime(config_path=_root["config"], actor=actor, create=create)
    atexit.register(rt.close)
    return rt
