"""Owner liveness is identity (host, boot, pid, start time), never a heartbeat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orch import identity
from orch.adapters.git import init_repo
from orch.identity import Owner, is_alive, me
from orch.store import Store


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_this_process_is_alive() -> None:
    assert is_alive(me())


def test_a_live_child_is_alive_and_dead_once_it_exits() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = identity.of_pid(p.pid)
        assert owner is not None and is_alive(owner)
    finally:
        p.kill()
        p.wait()
    assert not is_alive(owner)


def test_dead_pid() -> None:
    mine = me()
    assert not is_alive(mine._replace(pid=_dead_pid()))


def test_reused_pid_is_caught_by_its_start_time() -> None:
    mine = me()
    assert not is_alive(mine._replace(start_time=str(int(mine.start_time) + 1)))


def test_another_boot_is_dead() -> None:
    assert not is_alive(me()._replace(boot_id="an-older-boot"))


def test_another_host_is_never_provably_dead() -> None:
    assert is_alive(Owner("some-other-host", "b", _dead_pid(), "1"))


def test_boot_id_can_be_overridden_for_a_simulated_reboot() -> None:
    code = "from orch.identity import me; print(me().boot_id)"
    env = {**os.environ, "ORCH_BOOT_ID": "boot-2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "boot-2"


def test_start_time_parses_process_names_with_spaces_and_parens(tmp_path: Path) -> None:
    exe = tmp_path / "we ird) (name"
    exe.symlink_to(sys.executable)
    p = subprocess.Popen([str(exe), "-c", "import time; time.sleep(30)"])
    try:
        assert identity.process_start_time(p.pid) is not None
        assert identity.process_start_time(p.pid) == identity.process_start_time(p.pid)
    finally:
        p.kill()
        p.wait()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "o.db")


def _task(store: Store) -> int:
    return store.add_task(title="t", repo="r", stage="merge", now=1.0, key=None, key_prefix="T", actor="x").id


def test_lease_of_a_live_owner_is_not_taken(store: Store) -> None:
    tid = _task(store)
    other = Owner(
        identity.host(), me().boot_id, os.getppid(), identity.process_start_time(os.getppid()) or ""
    )
    assert store.acquire_lease("task:T-1", owner=other, actor="a", purpose="p", now=1, audit_task=tid)[0]
    ok, holder = store.acquire_lease("task:T-1", owner=me(), actor="b", purpose="p", now=2, audit_task=tid)
    assert not ok and holder is not None and holder.actor == "a"


@pytest.mark.parametrize(
    "dead",
    [
        lambda m: m._replace(pid=_dead_pid()),
        lambda m: m._replace(start_time="1"),
        lambda m: m._replace(boot_id="old-boot"),
    ],
    ids=["dead-pid", "reused-pid", "other-boot"],
)
def test_lease_of_a_dead_owner_is_reclaimed_and_audited(store: Store, dead) -> None:  # type: ignore[no-untyped-def]
    tid = _task(store)
    assert store.acquire_lease(
        "task:T-1", owner=dead(me()), actor="ghost", purpose="p", now=1, audit_task=tid
    )[0]
    ok, was = store.acquire_lease("task:T-1", owner=me(), actor="b", purpose="p", now=2, audit_task=tid)
    assert ok and was is not None and was.actor == "ghost"
    events = [r.event for r in store.history(tid)]
    assert events.count("lease_reclaimed") == 1
    held = store.get_lease("task:T-1")
    assert held is not None and held.owner == me()


def test_lease_of_another_host_is_never_stolen(store: Store) -> None:
    tid = _task(store)
    far = Owner("far-away", "b", 1, "1")
    store.acquire_lease("task:T-1", owner=far, actor="far", purpose="p", now=1, audit_task=tid)
    assert not store.acquire_lease("task:T-1", owner=me(), actor="b", purpose="p", now=2, audit_task=tid)[0]
    assert store.clear_dead_lease("task:T-1", actor="b", now=3, audit_task=tid) is None


@pytest.mark.parametrize("name", ["ORCH_HOST", "ORCH_BOOT_ID"])
@pytest.mark.parametrize("value", [b"h\xffx", b"h\x1b[2Jx", b"two\nlines"])
def test_an_identity_override_that_is_no_printable_name_is_refused_in_one_line(
    tmp_path: Path, name: str, value: bytes
) -> None:
    # It is stored with every lease and job: a byte that is not UTF-8 crashed the claim
    # with a traceback (PostgreSQL cannot encode it), an escape would act on `orch queue`.
    env = {k.encode(): v.encode() for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env[name.encode()] = value

    def run(*argv: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(argv, cwd=tmp_path, capture_output=True, **kw)  # type: ignore[call-overload]

    init_repo(tmp_path)
    assert run(sys.executable, "-m", "orch", "init").returncode == 0
    out = run(sys.executable, "-m", "orch", "task", "add", "t", env=env)
    err = out.stderr.decode(errors="replace")
    assert out.returncode == 2, err
    assert f"{name} must be a printable name" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "\x1b" not in err
