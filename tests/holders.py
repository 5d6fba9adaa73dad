"""A real process that holds a lease until told to go (stdin closed): for the per-host
views of `orch queue` and `orch doctor`, on SQLite and on PostgreSQL ("another host" is
the same machine with ORCH_HOST set)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_HOLD = """
import sys, time
from orch import config, identity
from orch.app.wiring import open_runtime
rt = open_runtime(config.load(sys.argv[1]), actor="holder", create=False)
ok, _ = rt.store.acquire_lease(
    sys.argv[2], owner=identity.me(), actor="holder", purpose="a test", now=time.time()
)
print("held" if ok else "refused", flush=True)
sys.stdin.read()
rt.close()
"""


def hold_lease(config_path: Path, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the holder; returns once it holds `name` (its stdout said so)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    full.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(config_path), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=full,
        cwd=config_path.parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "held", line
    return proc
