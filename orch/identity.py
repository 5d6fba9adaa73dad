"""Who owns a lease or a job, and whether that owner is still alive.

An owner is (host, boot id, pid, process start time). Liveness is decided from identity,
never from a heartbeat: a 15-minute blocking merge cannot beat a heartbeat, and a dead
process is dead however recently it wrote. Rules:

- another host: not provably dead, so treated as alive (never steal across hosts),
  unless a shared store says its database sessions are all gone (`set_session_check`:
  on PostgreSQL every process registers its session, which ends when the process dies on
  any host or the server drops a host that went silent);
- same host, another boot: dead (every process of an older boot is gone);
- same boot, pid missing: dead;
- same boot, pid present with another start time: dead (the pid was reused).

`ORCH_BOOT_ID` overrides the kernel's boot id: tests use it to simulate a reboot, and
containers that share a kernel but not a process table can set it. `ORCH_HOST` overrides
the host name: tests use it to simulate several hosts sharing one store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

from orch.errors import UsageError


class Owner(NamedTuple):
    host: str
    boot_id: str
    pid: int
    start_time: str

    def label(self) -> str:
        return f"{self.host}/pid {self.pid}"

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "boot_id": self.boot_id,
            "pid": self.pid,
            "start_time": self.start_time,
        }


def _override(name: str) -> str | None:
    """An identity override from the environment, refused unless it is a printable name:
    it is stored with every lease and job, shown to people, and compared across hosts (a
    byte that is not UTF-8 cannot even be stored, and an escape sequence would act on
    whoever reads `orch queue`)."""
    value = os.environ.get(name)
    if value and not (value.isprintable() and len(value) <= 255):
        raise UsageError(
            f"{name} must be a printable name of at most 255 characters (it holds a control "
            "character, bytes that are not UTF-8, or too much)"
        )
    return value or None


@cache
def _boot_id() -> str:
    override = _override("ORCH_BOOT_ID")
    if override:
        return override
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        # No /proc (macOS): fall back to the boot time, which is stable for the boot.
        import subprocess

        out = subprocess.run(["sysctl", "-n", "kern.boottime"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown-boot"


def process_start_time(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2 :].split()
    # After the name, field 3 is index 0; starttime is field 22 -> index 19.
    state = fields[0]
    if state in (b"Z", b"X"):
        return None  # a zombie has finished; only its exit status is left
    return fields[19].decode()


@cache
def host() -> str:
    return _override("ORCH_HOST") or socket.gethostname()


# The shared store's verdict on an owner of another host: True (one of its database
# sessions is open), False (it had sessions and all have ended: the process is gone) or
# None (unknown: no sessions recorded). Set by the composition root for a PostgreSQL store.
_session_check: Callable[[Owner], bool | None] | None = None


def set_session_check(check: Callable[[Owner], bool | None] | None) -> None:
    global _session_check
    _session_check = check


def drop_session_check(check: Callable[[Owner], bool | None]) -> None:
    """Forget `check` if it is the one set (its store is closing)."""
    global _session_check
    if _session_check == check:
        _session_check = None


def _other_host_alive(owner: Owner) -> bool:
    verdict = _session_check(owner) if _session_check is not None else None
    return True if verdict is None else verdict


def me() -> Owner:
    """This process's identity."""
    pid = os.getpid()
    return Owner(host=host(), boot_id=_boot_id(), pid=pid, start_time=process_start_time(pid) or "?")


def of_pid(pid: int) -> Owner | None:
    """The identity of another local process, or None if it is not running."""
    start = process_start_time(pid)
    if start is None:
        return None
    return Owner(host=host(), boot_id=_boot_id(), pid=pid, start_time=start)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid` on this host.

    `killpg(pgid, 0)` alone is not enough: a zombie leader nobody reaps (an orphan
    under a container's PID 1 that does not wait) still answers it for ever.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass  # someone else's group: look at /proc all the same
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        # fields[0] state, [1] ppid, [2] pgrp
        if len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def group_alive(owner: Owner, pgid: int, leader_start: str | None) -> bool:
    """Does the process group `pgid` that `owner` started (its leader started at
    `leader_start`) still have a live member? Another host is assumed alive.

    Linux does not reuse a pid while a group of that id exists, so a leader with another
    start time means the old group is gone; a group whose leader exited may live on.
    """
    if owner.host != host():
        return True
    if owner.boot_id != _boot_id():
        return False
    now = process_start_time(pgid)
    if now is not None and leader_start is not None and now != leader_start:
        return False
    return bool(group_members(pgid))


def judged_alive(owner: Owner) -> bool | None:
    """`is_alive` where it can be judged; None for an owner of another host that nobody
    here can judge (no shared store's sessions speak for it), which `is_alive` assumes
    alive. For what people read: `orch queue` and `orch doctor` per host."""
    if owner.host != host():
        return _session_check(owner) if _session_check is not None else None
    return is_alive(owner)


def is_alive(owner: Owner) -> bool:
    """Is `owner` provably still running? Another host is assumed alive unless its
    database sessions say otherwise (see the module docstring)."""
    if owner.host != host():
        return _other_host_alive(owner)
    if owner.boot_id != _boot_id():
        return False
    return process_start_time(owner.pid) == owner.start_time
