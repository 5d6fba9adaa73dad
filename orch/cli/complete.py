"""Shell completion of task keys and stage names (`orch --install-completion`).

A completion runs on every <TAB>: it reads the database read-only, never creates it,
and answers nothing rather than an error.
"""

from __future__ import annotations

import os
from typing import Any


def _runtime() -> Any:
    from orch.app.wiring import open_runtime

    return open_runtime(config_path=os.environ.get("ORCH_CONFIG") or None, create=False)


def task_keys(incomplete: str = "") -> list[str]:
    """Keys of the tasks that are not finished, most recent first."""
    try:
        rt = _runtime()
    except Exception:
        return []
    try:
        tasks = rt.store.list_tasks(limit=100_000)
        keys = [t.key for t in reversed(tasks) if not rt.config.pipeline.is_terminal(t.stage)]
    except Exception:
        return []
    finally:
        rt.store.close()
    return [k for k in keys if k.startswith(incomplete)][:200]


def stages(incomplete: str = "") -> list[str]:
    try:
        from orch import config as config_mod

        names = list(config_mod.load(os.environ.get("ORCH_CONFIG") or None).pipeline.stages)
    except Exception:
        return []
    return [s for s in names if s.startswith(incomplete)]
