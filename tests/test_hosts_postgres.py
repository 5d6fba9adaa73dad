"""Two hosts on one PostgreSQL store and one Gitea (issue 13): runners on either host, a
host whose processes all die mid-job and mid-merge, and settling a dead host's effect.

A "host" is a set of processes with its own `ORCH_HOST` and its own orch.toml, whose
workspace root and state directory (logs, Gitea mirrors) differ from the other host's;
both name the same store URL (a real PostgreSQL, tests/pg.py) and the same fake Gitea
whose repositories are real bare git repositories (tests/fakes/gitea_git.py). Every
process of a host carries a tag in its environment, which the runners it spawns, the
agents, git and the effect commands inherit, so a test can SIGKILL all of them at once,
as when the host loses power.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pg
import pytest
import tomli_w
from conftest import Setup, run_orch
from fakes.gitea_git import GitGitea, run_git
from fakes.servers import Recorded, Reply
from test_exactly_once import _seed

from orch.engine import tasks
from orch.store import Job, Task

CI = "ci/test"
HOSTS = ("host-a", "host-b")
# Each agent leaves a line in a file every host can see: who ran it, where, on which head.
TRAIL = 'echo "$ORCH_AGENT $ORCH_TASK_KEY $ORCH_HOST $PWD $(git rev-parse HEAD)" >> {trail}; {script}'
REJECT_ONCE = 'if [ "$ORCH_RETRIES" = 0 ]; then echo reject; else echo approve; fi > "$ORCH_VERDICT_FILE"'


class Hosts:
    """host-a (the Setup's orch.toml) and host-b (a copy in a directory of its own), each
    with its own workspace root, on one PostgreSQL database and one GitGitea."""

    def __init__(self, setup: Setup, tmp: Path, pg_db: pg.Database, server: GitGitea):
        self.setup, self.server = setup, server
        self.shared = tmp / "shared"
        self.shared.mkdir()
        self.trail, self.deploys = self.shared / "trail", self.shared / "deploys.log"
        self.bare = Path(server.clone_url("acme", "app"))
        # From here on every update of main is logged: "main moved once" is counted.
        run_git("config", "core.logAllRefUpdates", "always", cwd=self.bare)
        agents, deploys = setup.root / "agents", self.deploys
        setup.update_config(
            {
                "store": {"url": pg_db.url},
                "forge": {"kind": "gitea"},
                "gitea": {"base_url": server.url},
                "repos": {"app": {"path": str(self.bare), "forge_repo": "acme/app", "ci": None}},
                "reconcile": {"grace_s": 0},  # a tick moves on what a job on the other host left
                "work": {"backoff_base_s": 0},
                "agents": {
                    name: {"command": TRAIL.format(trail=self.trail, script=agents / f"{name}.sh")}
                    for name in ("analyst", "developer", "reviewer")
                },
                "gates": {
                    "merge_window": {"command": f"test -f {self.shared / 'merge-window.open'}"},
                    "monitor_healthy": {"command": f'grep -q "^deployed $ORCH_TASK_KEY " {deploys}'},
                },
                "effects": {
                    "deploy": {
                        "command": f'echo "deployed $ORCH_TASK_KEY $ORCH_HOST" >> {deploys}',
                        "probe": f'[ -f {deploys} ] && grep -q "^deployed $ORCH_TASK_KEY " {deploys}',
                    }
                },
            }
        )
        self.configs = {"host-a": setup.config_path, "host-b": tmp / "host-b" / "orch.toml"}
        self.roots = {"host-a": tmp / "host-a-worktrees", "host-b": tmp / "host-b" / "worktrees"}
        self.configs["host-b"].parent.mkdir()
        self.configs["host-b"].write_text(setup.config_path.read_text())
        for name in HOSTS:
            self.configure({"workspace": {"root": str(self.roots[name])}}, only=name)
        self.tags = {name: f"{name}-{uuid.uuid4().hex}" for name in HOSTS}

    def configure(self, changes: dict[str, Any], *, only: str | None = None) -> None:
        """Lay `changes` over each host's orch.toml (tables merge, other values replace)."""

        def lay(dst: dict[str, Any], src: dict[str, Any]) -> None:
            for k, v in src.items():
                if isinstance(v, dict) and isinstance(dst.get(k), dict):
                    lay(dst[k], v)
                else:
                    dst[k] = v

        for name in [only] if only else HOSTS:
            data = tomllib.loads(self.configs[name].read_text())
            lay(data, changes)
            self.configs[name].write_text(tomli_w.dumps(data))

    def short_pipeline(self, initial: str) -> None:
        """development -> merge (when the merge window is open) -> deploy -> done."""
        self.configure(
            {
                "pipeline": {
                    "initial": initial,
                    "stages": {
                        "development": {"agent": "developer"},
                        "merge": {},
                        "deploy": {},
                        "done": {"terminal": True},
                        "cancelled": {"terminal": True},
                    },
                    "transitions": [
                        {
                            "from": "development",
                            "to": "merge",
                            "gates": ["agent_ok", "branch_pushed", "ci_green"],
                        },
                        {
                            "from": "merge",
                            "to": "deploy",
                            "gates": ["merge_window"],
                            "effects": ["premerge_rebase", "merge"],
                            "on_fail": "development",
                        },
                        {"from": "deploy", "to": "done", "effects": ["deploy"]},
                    ],
                },
                "deps": {"finished_stages": ["deploy", "done"]},
            }
        )

    def env(self, host: str, **more: str) -> dict[str, str]:
        return {"ORCH_HOST": host, "HOSTS_TEST_TAG": self.tags[host], **more}

    def orch(self, host: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        cfg = self.configs[host]
        return run_orch("-c", str(cfg), *args, env=self.env(host, **env), cwd=cfg.parent)

    def popen(self, host: str, *argv: str, **env: str) -> subprocess.Popen[str]:
        """`argv` (`orch` arguments, or a shell line when it is one string with a space) on
        `host`, in the background, in a process group of its own."""
        cfg = self.configs[host]
        full = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        full.update(self.env(host, ORCH=f"{sys.executable} -m orch -c {cfg}", **env))
        cmd = (
            ["/bin/sh", "-c", argv[0]]
            if len(argv) == 1 and " " in argv[0]
            else [*full["ORCH"].split(), *argv]
        )
        return subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=full,
            cwd=cfg.parent, start_new_session=True,
        )  # fmt: skip

    def processes(self, host: str) -> set[int]:
        """The live processes of `host`: every one that carries its tag."""
        tag = f"HOSTS_TEST_TAG={self.tags[host]}".encode()
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if tag in (entry / "environ").read_bytes().split(b"\0") and _running(entry):
                        found.add(int(entry.name))
        return found

    def kill(self, host: str) -> int:
        """SIGKILL every process of `host`, as a power cut would; how many there were."""
        killed: set[int] = set()
        for _ in range(100):  # a process may fork while we look: look until none is left
            live = self.processes(host)
            if not live:
                return len(killed)
            for pid in live:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed |= live
            time.sleep(0.01)
        raise AssertionError(f"{host}'s processes keep coming back")

    def gone(self, host: str) -> float:
        """Wait until every database session `host`'s processes registered has ended (the
        server notices a killed client a moment later); how long that took, in seconds."""
        t0 = time.monotonic()
        rt = self.setup.runtime()
        try:
            db: Any = rt.store.db
            rows = db.read("SELECT session FROM orch_sessions WHERE owner_host = ?", (host,))
            _wait_for(lambda: not db.live_sessions(r[0] for r in rows), f"{host}'s sessions to end", 10)
        finally:
            rt.close()
        return time.monotonic() - t0

    def settle_down(self, host: str, timeout: float = 30) -> None:
        """Wait until every process of `host` (the runners its tick spawned) has ended."""
        _wait_for(lambda: not self.processes(host), f"{host}'s processes to end", timeout)

    def open_merge_window(self) -> None:
        (self.shared / "merge-window.open").touch()

    def main_moves(self) -> list[str]:
        """The shas main was moved to since the test began, oldest first."""
        out = run_git("reflog", "show", "--format=%H", "refs/heads/main", cwd=self.bare, check=False)
        return out.stdout.split()[::-1] if out.returncode == 0 else []

    def trail_lines(self) -> list[list[str]]:
        return [line.split() for line in self.trail.read_text().splitlines()] if self.trail.exists() else []

    def deployed(self, key: str) -> list[str]:
        """The hosts that deployed `key`, one entry per deploy."""
        lines = self.deploys.read_text().splitlines() if self.deploys.exists() else []
        return [line.split()[2] for line in lines if line.split()[1] == key]

    def task(self, key: str) -> Task:
        rt = self.setup.runtime()
        try:
            return rt.task(key)
        finally:
            rt.close()

    def jobs(self, key: str) -> list[Job]:
        rt = self.setup.runtime()
        try:
            return rt.store.jobs(task_id=rt.task(key).id)
        finally:
            rt.close()

    def add(self, title: str) -> str:
        rt = self.setup.runtime(actor="person")
        try:
            return tasks.add(rt, title).key
        finally:
            rt.close()


class GreenGitea(GitGitea):
    """Gitea whose CI has passed on every commit asked about (CI is not what is tested)."""

    def _combined(self, repo: dict[str, Any], ref: str, req: Recorded) -> Reply:
        with self.lock:
            sha = repo["branches"].get(ref, ref)
            repo["statuses"].setdefault(sha, {})
        if not repo["statuses"][sha]:
            self.add_status(*req.segments()[3:5], sha, CI, "success")
        return super()._combined(repo, ref, req)


def _running(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.fixture
def hosts(
    setup: Setup, tmp_path: Path, pg_db: pg.Database, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Hosts]:
    monkeypatch.setenv(pg_db.password_env, pg_db.password)
    server = GreenGitea(tmp_path / "gitea").start()
    h: Hosts | None = None
    try:
        server.add_repo("acme", "app")
        monkeypatch.setenv("GITEA_TOKEN", server.token)
        h = Hosts(setup, tmp_path, pg_db, server)
        yield h
    finally:
        if h is not None:
            for name in HOSTS:
                h.kill(name)  # detached runners a failed test left behind
        server.stop()


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    until = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _ok(out: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    return out


# -- 1. runners on both hosts, one Gitea ------------------------------------------------------------


@pytest.mark.slow
def test_jobs_of_one_task_alternate_between_hosts_each_in_its_own_workspace(hosts: Hosts) -> None:
    # The reviewer rejects the first round. Developer on host-a, review on host-b (which
    # fetches host-a's commit), developer again on host-b (on top of it), review on
    # host-a (whose stale worktree must move onto host-b's commit); then both hosts tick
    # at once at the merge, which happens once, through Gitea.
    transitions = [
        {**t, "to": "done"} if t["from"] == "deploy" else t
        for t in tomllib.loads(hosts.configs["host-a"].read_text())["pipeline"]["transitions"]
        if t["from"] != "monitoring"
    ]
    hosts.configure(
        {
            "pipeline": {"initial": "development", "transitions": transitions},
            "agents": {"reviewer": {"command": TRAIL.format(trail=hosts.trail, script=REJECT_ONCE)}},
        }
    )
    key = hosts.add("two hosts")
    heads = []
    for developer, reviewer in (("host-a", "host-b"), ("host-b", "host-a")):
        _ok(hosts.orch(developer, "job", "run", "--next"))  # commits and pushes to Gitea
        heads.append(hosts.server.head("acme", "app", f"orch/{key}"))
        # The other host's tick moves the task to review and starts the reviewer there.
        _ok(hosts.orch(reviewer, "tick"))
        hosts.settle_down(reviewer)
    assert hosts.task(key).stage == "merge"
    # Each host made its worktree of the task in its own root, and none elsewhere.
    for name in HOSTS:
        assert _worktrees(hosts, name) == [hosts.roots[name] / "app" / key]
    hosts.open_merge_window()
    for p in [hosts.popen(name, "tick", "--no-spawn") for name in HOSTS]:
        assert p.wait(60) == 0
    for name in HOSTS * 2:
        if hosts.task(key).stage == "done":
            break
        _ok(hosts.orch(name, "tick", "--no-spawn"))
    assert hosts.task(key).stage == "done"
    # The host whose tick finished the task removed its worktree; the other host's next
    # tick removes its own.
    left = [name for name in HOSTS if (hosts.roots[name] / "app" / key).exists()]
    assert len(left) == 1, left
    _ok(hosts.orch(left[0], "tick", "--no-spawn"))
    assert not any((hosts.roots[name] / "app" / key).exists() for name in HOSTS)

    # Each agent ran on the host that claimed it, in that host's worktree, on the head
    # the other host had pushed.
    assert [(j.agent, j.owner.host if j.owner else None, j.state) for j in hosts.jobs(key)] == [
        ("developer", "host-a", "succeeded"),
        ("reviewer", "host-b", "succeeded"),
        ("developer", "host-b", "succeeded"),
        ("reviewer", "host-a", "succeeded"),
    ]
    trail = hosts.trail_lines()
    assert [(agent, host) for agent, _, host, _, _ in trail] == [
        ("developer", "host-a"), ("reviewer", "host-b"), ("developer", "host-b"), ("reviewer", "host-a"),
    ]  # fmt: skip
    for _, _, host, pwd, _ in trail:
        assert Path(pwd) == hosts.roots[host] / "app" / key
    assert [head for *_, head in trail[1:]] == [heads[0], heads[0], heads[1]]
    assert run_git("rev-parse", f"{heads[1]}^", cwd=hosts.bare).stdout.strip() == heads[0]
    # Main moved once, to host-b's commit (the rebase style fast-forwards); one merge
    # request reached Gitea; one deploy.
    assert hosts.main_moves() == [heads[1]]
    assert hosts.server.pr("acme", "app", 1)["merged"] is True and len(hosts.server.merges) == 1
    assert len(hosts.deployed(key)) == 1
    assert _worktrees(hosts, "host-a") == _worktrees(hosts, "host-b") == []
    # A job's log is a file on the host that ran it: `orch logs` elsewhere says where.
    logs = _ok(hosts.orch("host-a", "logs", key)).stdout
    assert logs.count("(its log is on host host-b: ") == 2 and "committed" in logs, logs


def _worktrees(hosts: Hosts, host: str) -> list[Path]:
    """The worktrees of `host`'s Gitea mirror (the mirror's own checkout left out)."""
    mirror = hosts.configs[host].parent / ".orch" / "mirrors" / "app"
    listed = run_git("worktree", "list", "--porcelain", cwd=mirror).stdout.splitlines()
    return [Path(line.split(" ", 1)[1]) for line in listed if line.startswith("worktree ")][1:]


# -- 2. a host whose processes all die mid-job and mid-merge -----------------------------------------


@pytest.mark.slow
def test_a_host_killed_mid_job_and_mid_merge_is_taken_over_by_the_other(hosts: Hosts) -> None:
    # host-b's developer commits, then hangs; host-b loses power: its runner and the
    # agent's process group die at once. host-a's next tick reaps the job (the runner's
    # database session ended with it) and runs it again, on host-a: the work is done
    # once. Then host-b (back) dies inside the merge, after Gitea merged and before the
    # ledger knew, and inside the deploy before its command ran: host-a takes over both,
    # and each happens once.
    hang = hosts.shared / "hanging"
    developer = hosts.setup.root / "agents" / "developer.sh"
    script = f'{developer} && if [ "$ORCH_HOST" = host-b ]; then touch {hang}; sleep 600; fi'
    hosts.short_pipeline("development")
    hosts.configure({"agents": {"developer": {"command": TRAIL.format(trail=hosts.trail, script=script)}}})
    key = hosts.add("host b dies")
    hosts.popen("host-b", "job", "run", "--next")
    _wait_for(hang.exists, "host-b's developer to commit")
    (job,) = hosts.jobs(key)
    assert job.state == "running" and job.owner is not None and job.owner.host == "host-b"
    assert hosts.kill("host-b") >= 3  # the runner, the agent's shell, its sleep
    died = time.monotonic()
    hosts.gone("host-b")
    _ok(hosts.orch("host-a", "tick"))  # reaps the job and starts its retry on host-a
    reclaimed_s = time.monotonic() - died
    hosts.settle_down("host-a")
    assert [(j.attempt, j.owner.host if j.owner else None, j.state) for j in hosts.jobs(key)] == [
        (1, "host-b", "reaped"),
        (2, "host-a", "succeeded"),
    ]
    print(f"host-b's job reaped and running again on host-a {reclaimed_s:.2f} s after the kill")
    assert reclaimed_s < 30, reclaimed_s  # within seconds (bench/ measures it; a loaded CI is slower)
    # The work was done once: host-b's commit never left host-b, host-a's is the branch's one.
    log = run_git("log", "--format=%s", f"main..orch/{key}", cwd=hosts.bare).stdout.splitlines()
    assert log == [f"{key}: host b dies (retry 0)"], log

    assert hosts.task(key).stage == "merge"  # host-a's runner moved it on
    hosts.open_merge_window()
    head = hosts.server.head("acme", "app", f"orch/{key}")
    for stage, fault in (("merge", "before_effect_done:merge"), ("deploy", "after_effect_started:deploy")):
        died_b = hosts.orch("host-b", "advance", key, "--expect", stage, ORCH_FAULT=fault)
        assert died_b.returncode == -signal.SIGKILL, died_b.stderr
        hosts.gone("host-b")
        _ok(hosts.orch("host-a", "advance", key, "--expect", stage))
    assert hosts.task(key).stage == "done"
    assert hosts.main_moves() == [head]
    assert len(hosts.server.merges) == 1, hosts.server.merges  # host-b's: host-a's probe saw it merged
    assert hosts.deployed(key) == ["host-a"]
    rt = hosts.setup.runtime()
    task = rt.task(key)
    history = rt.store.history(task.id)
    assert [r.detail for r in history if r.event == "effect_settled"] == [
        {"effect": "merge", "probe": "done"}
    ]
    # host-a took over the task's lease twice, and the merge line once, from dead host-b owners.
    reclaimed = [
        (r.detail["lease"], r.detail["dead_owner"]["host"]) for r in history if r.event == "lease_reclaimed"
    ]
    assert sorted(reclaimed) == [
        ("merge:app", "host-b"),
        (f"task:{key}", "host-b"),
        (f"task:{key}", "host-b"),
    ]
    assert rt.store.list_leases() == []
    rt.close()


def _kill_when(hosts: Hosts, proc: subprocess.Popen[str], seen: Callable[[list[str]], bool]) -> list[str]:
    """SIGKILL all of host-b once `seen` says yes to the names of its live processes
    (or once `proc`, host-b's orch, ended first); the names it had at that moment."""
    names: list[str] = []
    while proc.poll() is None:
        names = [_comm(pid) for pid in hosts.processes("host-b")]
        if seen(names):
            break
        time.sleep(0.005)
    hosts.kill("host-b")
    proc.wait(10)
    return names


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


@pytest.mark.slow
def test_a_host_killed_at_any_moment_of_merge_and_deploy_leaves_each_done_once(hosts: Hosts) -> None:
    # host-b runs `orch advance` for the merge, then for the deploy, and is killed whole
    # (orch, git, the deploy's command): while its n-th git runs (n from the seed), while
    # the deploy's command runs, and at a seeded random moment. host-a takes over; a
    # deploy whose command was running when host-b died cannot be judged from host-a
    # (exit 4): host-b's next orch, back after the power cut, settles it by its probe.
    seed = _seed("hosts-kills")
    rng = random.Random(seed)
    hosts.short_pipeline("merge")
    hosts.open_merge_window()
    deploy = f'sleep 0.3; echo "deployed $ORCH_TASK_KEY $ORCH_HOST" >> {hosts.deploys}'
    hosts.configure({"effects": {"deploy": {"command": deploy}}})
    nth_git = rng.randint(1, 8)
    moments: list[tuple[str, Callable[[list[str]], bool]]] = [
        (f"while its git number {nth_git} runs", _nth(nth_git, "git")),
        ("while the deploy command runs", lambda names: "sleep" in names),
        (f"{(t := rng.uniform(0.1, 2.5)):.2f} s in", _after(t)),
    ]
    keys = [hosts.add(f"killed {what}") for what, _ in moments]
    for key in keys:
        hosts.server.commit("acme", "app", f"orch/{key}", {f"{key}.txt": key}, f"{key}: work")
    for key, (what, when) in zip(keys, moments, strict=True):
        b = hosts.popen(
            "host-b", f"$ORCH advance {key} --expect merge && $ORCH advance {key} --expect deploy"
        )
        names = _kill_when(hosts, b, when)
        hosts.gone("host-b")
        rt = hosts.setup.runtime()
        ledger = [(e.effect, e.state) for e in rt.store.effects_of(rt.task(key).id)]
        rt.close()
        print(f"{key}: host-b killed {what} ({b.returncode}): {names}, {hosts.task(key).stage}, {ledger}")
        for _ in range(20):
            if hosts.task(key).stage == "done":
                break
            out = hosts.orch("host-a", "advance", key)
            if "still running as process group" in out.stderr:
                _ok(hosts.orch("host-b", "advance", key))  # host-b is back
            else:
                assert out.returncode == 0, (out.returncode, out.stderr, seed)
        assert hosts.task(key).stage == "done", (key, seed)
        assert hosts.deployed(key) in (["host-a"], ["host-b"]), (key, hosts.deployed(key), seed)
    # Main moved once per task, to a commit of that task, and each pull request merged once.
    moves = hosts.main_moves()
    subjects = [run_git("log", "-1", "--format=%s", sha, cwd=hosts.bare).stdout.strip() for sha in moves]
    assert subjects == [f"{key}: work" for key in keys], (subjects, seed)
    merged = sorted(m["index"] for m in hosts.server.merges)
    assert merged == list(range(1, len(keys) + 1)), (hosts.server.merges, seed)
    assert all(hosts.server.pr("acme", "app", n)["merged"] for n in merged)


def _nth(n: int, name: str) -> Callable[[list[str]], bool]:
    """Yes once `name` has been seen among the processes in `n` separate looks."""
    looks = [0]

    def seen(names: list[str]) -> bool:
        looks[0] += name in names
        return looks[0] >= n

    return seen


def _after(seconds: float) -> Callable[[list[str]], bool]:
    """Yes `seconds` after the first look."""
    start: list[float] = []

    def seen(names: list[str]) -> bool:
        start[:] = start or [time.monotonic()]
        return time.monotonic() - start[0] >= seconds

    return seen


# -- 3. orch effect settle --host-gone, end to end ----------------------------------------------------


@pytest.mark.slow
def test_a_person_settles_from_host_a_the_deploy_of_host_b_killed_mid_effect(hosts: Hosts) -> None:
    go, started = hosts.shared / "go", hosts.shared / "started"
    deploy = (
        f"touch {started}; while [ ! -f {go} ]; do sleep 0.02; done; "
        f'echo "deployed $ORCH_TASK_KEY $ORCH_HOST" >> {hosts.deploys}'
    )
    hosts.short_pipeline("deploy")
    hosts.configure({"effects": {"deploy": {"command": deploy}}})
    key = hosts.add("deployed by a host that dies")
    hosts.popen("host-b", "advance", key)
    _wait_for(started.exists, "host-b's deploy")
    # host-b's orch is alive by its database sessions: not settled from elsewhere...
    alive = hosts.orch("host-a", "effect", "settle", key, "deploy", "--redo", "--host-gone")
    assert alive.returncode == 4 and "alive" in alive.stderr, alive.stderr
    # ... and --host-gone is not for a host's own effect.
    own = hosts.orch("host-b", "effect", "settle", key, "deploy", "--redo", "--host-gone")
    assert own.returncode == 2 and "ran on this host" in own.stderr, own.stderr
    hosts.kill("host-b")  # orch and the deploy's command, before it deployed
    hosts.gone("host-b")
    go.touch()
    # host-a cannot see host-b's processes: it neither probes nor reruns the deploy...
    waits = hosts.orch("host-a", "advance", key)
    assert waits.returncode == 4 and "still running as process group" in waits.stderr, waits.stderr
    # ... until a person who made sure host-b is gone for good says so.
    _ok(hosts.orch("host-a", "effect", "settle", key, "deploy", "--redo", "--host-gone"))
    _ok(hosts.orch("host-a", "advance", key))
    assert hosts.task(key).stage == "done"
    assert hosts.deployed(key) == ["host-a"]
    rt = hosts.setup.runtime()
    history = rt.store.history(rt.task(key).id)
    audits = [(r.actor, r.detail) for r in history if r.event == "effect_settled"]
    assert len(audits) == 1 and audits[0][1] == {"effect": "deploy", "as": "redo", "host_gone": "host-b"}, (
        audits
    )
    rt.close()
