"""Runs configured shell commands in their own process group, with a deadline.

The command line comes from orch.toml (trusted); task data reaches it only through
environment variables, so nothing from a tracker is ever parsed by a shell. A command
that outlives its deadline gets SIGTERM on its whole group, a grace period, then
SIGKILL, and its death is confirmed before the outcome is reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from orch import secret_env
from orch.ports import Outcome

GRACE_S = 5.0


def kill_group(pgid: int, *, grace_s: float = GRACE_S) -> bool:
    """SIGTERM the group, wait up to grace_s, SIGKILL; True once the group is gone.

    Gone means no live member: zombies left for a PID 1 that does not reap are dead."""
    from orch.identity import group_members

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not group_members(pgid):
                return True
            time.sleep(0.05)
    return not group_members(pgid)


# The command waits for one line on its stdin before it runs: `on_start` records its
# pid first (in the effect ledger, in the job row), so no instant exists where the
# command runs and nobody could know it. If orch dies before releasing it, the pipe
# closes, `read` fails and the command never runs.
_GATE = "IFS= read -r _orch_go || exit 125; unset _orch_go; exec </dev/null\n"


class ProcessRunner:
    def __init__(self, *, grace_s: float = GRACE_S, poll_s: float = 0.2, hidden: Collection[str] = ()):
        self.grace_s = grace_s
        self.poll_s = poll_s
        # orch's secrets (docs/security.md): a command never inherits them; `env` may
        # give one back by name (pass_env).
        self.hidden = frozenset(hidden)

    def run(
        self,
        command: str,
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        timeout_s: float,
        on_start: Callable[[int], None] | None = None,
        stall_timeout_s: float = 0.0,
    ) -> Outcome:
        """Run to the end; a deadline or `stall_timeout_s` of log silence kills the group."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**secret_env.inherited(self.hidden), **env}
        gated = on_start is not None
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", _GATE + command if gated else command],
                    cwd=cwd,
                    env=full_env,
                    stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: a kill reaches its children
                )
            except OSError as e:
                return Outcome("failed", None, f"could not start: {e.strerror}")
            except ValueError as e:  # a NUL or an unencodable character in env or cwd
                return Outcome("failed", None, f"could not start: {e}")
            if on_start is not None:
                assert proc.stdin is not None
                try:
                    on_start(proc.pid)
                except BaseException:
                    proc.stdin.close()  # never released: the command exits without running
                    kill_group(proc.pid, grace_s=self.grace_s)
                    proc.wait()
                    raise
                try:
                    proc.stdin.write(b"go\n")
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # it died already; its exit status tells
            started = time.monotonic()
            deadline = started + timeout_s if timeout_s > 0 else None
            while True:
                try:
                    code = proc.wait(timeout=self.poll_s)
                    break
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    kill_group(proc.pid, grace_s=self.grace_s)
                    proc.wait()
                    return Outcome("timed_out", None, f"timed out after {timeout_s:g}s")
                if stall_timeout_s > 0 and now - started > stall_timeout_s:
                    silent = time.time() - log_path.stat().st_mtime
                    if silent > stall_timeout_s:
                        kill_group(proc.pid, grace_s=self.grace_s)
                        proc.wait()
                        return Outcome("stalled", None, f"no output for {silent:.0f}s")
            # The leader is gone; children left in its group are stray: end them too.
            kill_group(proc.pid, grace_s=self.grace_s)
        if code == 0:
            return Outcome("succeeded", 0, "exit 0")
        if code < 0:
            return Outcome("failed", code, f"killed by signal {-code}")
        return Outcome("failed", code, f"exit {code}")

    def kill_group(self, pgid: int, start_time: str | None) -> bool:
        """Kill a recorded job's group, unless its id now belongs to someone else.

        Linux does not reuse a pid while a group of that id exists; so a process with
        pid == pgid but another start time means the old group is gone, and a kill would
        hit a stranger.
        """
        from orch.identity import process_start_time

        current = process_start_time(pgid)
        if current is not None and start_time is not None and current != start_time:
            return True
        return kill_group(pgid, grace_s=self.grace_s)

    def spawn(self, argv: list[str], *, log_path: Path, env: Mapping[str, str]) -> int:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                close_fds=True,
            )
        return proc.pid
