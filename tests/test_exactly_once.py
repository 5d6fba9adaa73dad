"""Exactly once at the edges (issue 9): SIGKILLs at seeded random moments, not only at
the named fault points.

Each test prints its seed (`-s` shows it; a failure message repeats it); a failing seed
reproduces with ORCH_TEST_SEED=<seed>. Kills run concurrently across independent tasks
to fit the suite's time budget on 2 cores.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Setup

from orch.engine import advance, effects, tasks
from orch.errors import Busy


def _seed(name: str) -> int:
    seed = int(os.environ.get("ORCH_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"{name}: seed {seed} (rerun with ORCH_TEST_SEED={seed})")
    return seed


def _popen_group(setup: Setup, *args: str) -> subprocess.Popen[str]:
    """`orch` in a process group of its own (setsid), so the whole group can be killed."""
    return setup.orch_popen(*args, group=True)


def _kill_group(p: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()


def _in_threads(jobs: list[Callable[[], None]], width: int) -> None:
    errors: list[BaseException] = []
    lock = threading.Lock()
    todo = list(jobs)

    def worker() -> None:
        while True:
            with lock:
                if not todo or errors:
                    return
                job = todo.pop()
            try:
                job()
            except BaseException as e:  # reported below, with the seed
                with lock:
                    errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(width)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    until = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- deploy -------------------------------------------------------------------------


def _deploy_only(setup: Setup, probe: str, *, watch: bool = False) -> None:
    """A cut-down pipeline: deploy -> done. The deploy sleeps 0.2-1 s (per task, from the
    seed); the probe says can't tell (exit 2) for tasks listed in `noprobe/`."""
    setup.update_config({"pipeline": {"stages": None, "transitions": None}})
    setup.update_config(
        {
            "pipeline": {
                "initial": "deploy",
                "stages": {
                    "deploy": {},
                    **({"watch": {}} if watch else {}),
                    "done": {"terminal": True},
                    "cancelled": {"terminal": True},
                },
                "transitions": [
                    {"from": "deploy", "to": "watch" if watch else "done", "effects": ["deploy"]},
                    *([{"from": "watch", "to": "done", "gates": ["never"]}] if watch else []),
                ],
            },
            "gates": {"never": {"type": "command", "command": "false"}},
            "deps": {"finished_stages": ["done"]},
            "effects": {
                "deploy": {
                    "type": "command",
                    "irreversible": True,
                    "command": (
                        'touch "started/$ORCH_TASK_KEY"; sleep "$(cat "sleeps/$ORCH_TASK_KEY")"; '
                        'echo "deployed $ORCH_TASK_KEY" >> deploys.log'
                    ),
                    "probe": probe,
                }
            },
        }
    )
    (setup.root / "sleeps").mkdir()
    (setup.root / "noprobe").mkdir()
    (setup.root / "started").mkdir()


PROBE = (
    '[ -f "noprobe/$ORCH_TASK_KEY" ] && exit 2; '
    '[ -f deploys.log ] && grep -qx "deployed $ORCH_TASK_KEY" deploys.log'
)


def _deploys(setup: Setup, key: str) -> int:
    log = setup.root / "deploys.log"
    return log.read_text().splitlines().count(f"deployed {key}") if log.exists() else 0


@pytest.mark.slow
def test_deploy_survives_sigkill_of_the_whole_advance_group_at_random_moments(setup: Setup) -> None:
    seed = _seed("deploy-kills")
    rng = random.Random(seed)
    _deploy_only(setup, PROBE)
    rt = setup.runtime()
    keys = [tasks.add(rt, f"deploy {i}").key for i in range(52)]
    rt.close()
    plan = {}
    for i, key in enumerate(keys):
        sleep = round(rng.uniform(0.2, 1.0), 2)
        (setup.root / "sleeps" / key).write_text(f"{sleep}\n")
        if i % 5 == 0:
            (setup.root / "noprobe" / key).touch()  # a probe that can't tell
        # Most kills land while the deploy runs (seconds after it started); the others at
        # any moment from the start of `orch advance` (before, during or after the deploy).
        plan[key] = (
            rng.random() < 0.7,
            rng.uniform(0.0, sleep) if rng.random() < 0.7 else rng.uniform(0.05, 0.8),
        )
    outcome: dict[str, str] = {}
    waited: set[str] = set()
    mid: set[str] = set()

    def one(key: str) -> Callable[[], None]:
        def run() -> None:
            p = _popen_group(setup, "advance", key, "--expect", "deploy")
            after_start, delay = plan[key]
            if after_start:
                marker = setup.root / "started" / key
                until = time.monotonic() + 10
                while not marker.exists() and p.poll() is None and time.monotonic() < until:
                    time.sleep(0.01)
            time.sleep(delay)
            _kill_group(p)
            if (setup.root / "started" / key).exists() and _deploys(setup, key) == 0:
                mid.add(key)
            deadline = time.monotonic() + 20
            while True:  # recovery at once: busy (exit 4) while the deploy's group lives
                r = setup.orch("advance", key)
                if r.returncode != 4:
                    break
                assert "still running as process group" in r.stderr, (seed, r.stderr)
                waited.add(key)
                assert time.monotonic() < deadline, (seed, key, r.stderr)
                time.sleep(0.1)
            assert _deploys(setup, key) <= 1, (seed, key)
            if r.returncode == 0:
                outcome[key] = "done"
            else:
                assert r.returncode == 1, (seed, key, r.returncode, r.stderr)
                assert (setup.root / "noprobe" / key).exists(), (seed, key, r.stderr)
                for words in ("may have run", "could not tell", "orch effect settle", "orch unblock"):
                    assert words in r.stderr, (seed, key, words, r.stderr)
                outcome[key] = "blocked"

        return run

    _in_threads([one(k) for k in keys], width=8)
    time.sleep(1.1)  # any deploy still running after the last recovery would show now
    rt = setup.runtime()
    for key in keys:
        task = rt.task(key)
        n = _deploys(setup, key)
        if outcome[key] == "done":
            assert task.stage == "done" and n == 1, (seed, key, task.stage, n)
        else:
            assert task.blocked and task.stage == "deploy" and n <= 1, (seed, key, n)
            # A person settles it the way the message says; nothing runs twice.
            effects.settle(rt, key, "deploy", done=n == 1)
            tasks.unblock(rt, key, "checked deploys.log")
            assert advance.advance(rt, key).outcome == "advanced"
            assert _deploys(setup, key) == 1, (seed, key)
    assert rt.store.list_leases() == []
    assert sum(outcome[k] == "done" for k in keys) >= 30, (seed, outcome)
    blocked = sum(v == "blocked" for v in outcome.values())
    print(
        f"deploy-kills: {len(keys)} kills, {len(mid)} while the deploy ran, "
        f"{len(waited)} recoveries waited for it, {blocked} blocked"
    )
    assert len(mid) >= 15, (seed, "too few kills landed while the deploy ran")
    rt.close()


@pytest.mark.slow
def test_lease_off_slow_probe_never_deploys_twice(setup: Setup) -> None:
    """Issue 9 item 4: A probes a dead owner's row slowly ("not deployed"); meanwhile B
    takes the row, deploys and is killed. A's takeover is a compare-and-swap on the owner
    it probed: it loses, looks again, probes B's row and finds the deploy done."""
    # The first probe to run (A's) answers from what it saw, then holds until `go`.
    _deploy_only(
        setup,
        'r=1; grep -qx "deployed $ORCH_TASK_KEY" deploys.log 2>/dev/null && r=0; '
        "if mkdir first-probe 2>/dev/null; then touch probing; "
        "while [ ! -f go ]; do sleep 0.02; done; fi; exit $r",
    )
    setup.update_config({"transition_lease": {"enabled": False}})
    rt = setup.runtime()
    key = tasks.add(rt, "slow probe").key
    rt.close()
    (setup.root / "sleeps" / key).write_text("0.1\n")
    died = setup.orch("advance", key, env={"ORCH_FAULT": "after_effect_started:deploy"})
    assert died.returncode == -signal.SIGKILL
    a = setup.orch_popen("advance", key)
    _wait_for(lambda: (setup.root / "probing").exists(), "A inside its probe")
    b = setup.orch("advance", key, env={"ORCH_FAULT": "before_effect_done:deploy"})
    assert b.returncode == -signal.SIGKILL, b.stderr
    assert _deploys(setup, key) == 1
    (setup.root / "go").touch()  # A's probe answers "not deployed", as it saw it
    _, err = a.communicate(timeout=60)
    assert a.returncode == 0, err
    assert _deploys(setup, key) == 1
    rt = setup.runtime()
    task = rt.task(key)
    assert task.stage == "done"
    history = [r.event for r in rt.store.history(task.id)]
    assert history.count("effect_settled") == 1 and "effect_done" not in history, history
    rt.close()


# -- cancel -------------------------------------------------------------------------


@pytest.mark.slow
def test_cancel_during_a_deploy_waits_for_it_and_says_it_happened_before(setup: Setup) -> None:
    _deploy_only(setup, PROBE, watch=True)
    rt = setup.runtime()
    first, second = tasks.add(rt, "cancel me").key, tasks.add(rt, "cancel me too").key
    rt.close()
    for key in (first, second):
        (setup.root / "sleeps" / key).write_text("4\n")
    runs = [setup.orch_popen("advance", key) for key in (first, second)]
    _wait_for(lambda: all((setup.root / "started" / k).exists() for k in (first, second)), "the deploys")
    # A short wait is not enough: exit 4, naming what runs; nothing changed.
    short = setup.orch("cancel", first, "--wait", "0.2")
    assert short.returncode == 4, short.stderr
    assert f"effect deploy of {first} is running (pid" in short.stderr
    # The default wait outlasts the deploy: it ran before the cancel, and the output says so.
    waited = setup.orch("cancel", first)
    assert waited.returncode == 0, waited.stderr
    assert f"{first}: cancelled" in waited.stdout and "deploy ran before the cancel" in waited.stdout
    for p in runs:
        p.communicate(timeout=30)
    late = setup.orch("cancel", second)  # after its deploy: nothing to wait for, still reported
    assert late.returncode == 0 and "deploy ran before the cancel" in late.stdout, late.stderr
    import json

    listed = json.loads(setup.orch("effect", "list", first, "--json").stdout)
    assert isinstance(listed[0]["result"], dict) and listed[0]["result"]["exit_code"] == 0
    assert listed[0]["process"]["pid"] > 0 and listed[0]["process"]["alive"] is False
    rt = setup.runtime()
    for key in (first, second):
        task = rt.task(key)
        assert _deploys(setup, key) == 1
        rows = rt.store.effects_of(task.id)
        assert [r.state for r in rows] == ["done"], rows
        events = [r.event for r in rt.store.history(task.id)]
        # History and ledger agree: the deploy's end comes before the cancel's stage change.
        cancel_at = max(i for i, e in enumerate(events) if e == "stage_changed")
        assert events.index("effect_done") < cancel_at, events
    rt.close()


@pytest.mark.slow
def test_cancel_during_the_merge_before_its_ref_update_merges_nothing(setup: Setup) -> None:
    from conftest import drive_to

    rt = setup.runtime()
    key = tasks.add(rt, "cancel during merge").key
    drive_to(rt, key, "merge")
    rt.close()
    # main moves on: the pre-merge rebase makes a new head, whose CI (2 s) runs inside the
    # merge effect, before the point of no return.
    (setup.repo / "other.txt").write_text("moved\n")
    setup.git("add", "other.txt")
    setup.git("commit", "-q", "-m", "main moves on")
    go = setup.root / "ci-go"  # CI holds until the cancel has returned
    setup.update_config(
        {"repos": {"app": {"ci": f"while [ ! -f {go} ]; do sleep 0.02; done; ls features/*.txt"}}}
    )
    setup.open_merge_window()
    main_before = setup.git("rev-parse", "main").strip()
    adv = setup.orch_popen("advance", key, "--expect", "merge")
    rt = setup.runtime()
    task = rt.task(key)
    _wait_for(lambda: any(e.effect == "merge" for e in rt.store.effects_of(task.id)), "the merge effect")
    out = setup.orch("cancel", key, "--wait", "1")
    assert out.returncode == 0, out.stderr
    assert "merge ran before the cancel" not in out.stdout
    go.touch()
    _, err = adv.communicate(timeout=60)
    assert adv.returncode == 4, err
    assert "moved to cancelled" in err
    assert setup.git("rev-parse", "main").strip() == main_before
    merge = next(e for e in rt.store.effects_of(task.id) if e.effect == "merge")
    assert merge.state == "failed" and not merge.acting
    assert rt.task(key).stage == "cancelled"
    rt.close()


# -- the merge's git steps ----------------------------------------------------------

REPOS = 5
TASKS_PER_REPO = 3
FILES = 200


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout.strip()


def _commit_files(repo: Path, parent: str, files: dict[str, str], message: str) -> str:
    """A commit of `files` on top of `parent`, made without touching any checkout."""
    scratch = repo.parent / f"scratch-{repo.name}"
    scratch.mkdir(exist_ok=True)
    env = {"GIT_INDEX_FILE": str(scratch / "index")}
    _git(repo, "read-tree", parent, env=env)
    for name, text in files.items():
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).write_text(text)
    _git(repo, f"--work-tree={scratch}", "add", "--", *files, env=env)
    tree = _git(repo, "write-tree", env=env)
    return _git(repo, "commit-tree", tree, "-p", parent, "-m", message)


def _merge_only(setup: Setup, repos: int = REPOS) -> list[str]:
    """merge -> done (rebase + merge), with a development stage to be sent back to."""
    from orch.adapters.git import init_repo

    setup.update_config({"pipeline": {"stages": None, "transitions": None}, "repos": None})
    names = [f"r{i}" for i in range(repos)]
    for name in names:
        init_repo(setup.root / name)
    setup.update_config(
        {
            "repos": {n: {"path": n, "default_branch": "main", "ci": "true"} for n in names},
            "pipeline": {
                "initial": "merge",
                "stages": {
                    "development": {},
                    "merge": {},
                    "done": {"terminal": True},
                    "cancelled": {"terminal": True},
                },
                "transitions": [
                    {"from": "development", "to": "merge", "gates": ["never"]},
                    {
                        "from": "merge",
                        "to": "done",
                        "effects": ["premerge_rebase", "merge"],
                        "on_fail": "development",
                    },
                ],
            },
            "gates": {"never": {"type": "command", "command": "false"}},
            "deps": {"finished_stages": ["done"]},
        }
    )
    return names


def _branch_for(setup: Setup, repo: str, key: str) -> None:
    """The task's branch: hundreds of files, made from main before main moves on."""
    path = setup.root / repo
    files = {f"{key}/f{i:03}.txt": f"{key} file {i}\n" for i in range(FILES)}
    sha = _commit_files(path, "main", files, f"{key}: many files")
    _git(path, "update-ref", f"refs/heads/orch/{key}", sha)


def _move_main(setup: Setup, repo: str, n: int) -> None:
    path = setup.root / repo
    sha = _commit_files(path, "main", {f"moved-{n}.txt": f"{n}\n"}, f"main moves on {n}")
    _git(path, "update-ref", "refs/heads/main", sha)
    _git(path, "reset", "-q", "--hard", "main")  # the user's checkout follows, clean


def _stage(setup: Setup, key: str) -> str:
    rt = setup.runtime()
    try:
        return rt.task(key).stage
    finally:
        rt.close()


@pytest.mark.slow
def test_merge_git_steps_survive_sigkill_at_random_moments(setup: Setup) -> None:
    seed = _seed("merge-kills")
    rng = random.Random(seed)
    repos = _merge_only(setup)
    rt = setup.runtime()
    by_repo = {
        r: [tasks.add(rt, f"many files {r}.{i}", repo=r).key for i in range(TASKS_PER_REPO)] for r in repos
    }
    rt.close()
    for repo, keys in by_repo.items():
        for key in keys:
            _branch_for(setup, repo, key)
        _move_main(setup, repo, 0)
    plan = {key: [rng.uniform(0.15, 1.0) for _ in range(2)] for keys in by_repo.values() for key in keys}
    kills = 0
    count = threading.Lock()

    def one_repo(repo: str) -> Callable[[], None]:
        def run() -> None:
            nonlocal kills
            for key in by_repo[repo]:
                for delay in plan[key]:
                    p = _popen_group(setup, "advance", key)
                    time.sleep(delay)
                    _kill_group(p)
                    with count:
                        kills += 1
                deadline = time.monotonic() + 30
                while True:  # recovery at once, until the task is done
                    r = setup.orch("advance", key)
                    assert r.returncode in (0, 4), (seed, key, r.returncode, r.stderr)
                    if r.returncode == 0 and _stage(setup, key) == "done":
                        break
                    assert time.monotonic() < deadline, (seed, key, r.stderr)
                    time.sleep(0.05)

        return run

    _in_threads([one_repo(r) for r in repos], width=REPOS)
    rt = setup.runtime()
    for repo, keys in by_repo.items():
        path = setup.root / repo
        log = _git(path, "log", "--format=%s", "main").splitlines()
        for key in keys:
            task = rt.task(key)
            assert task.stage == "done" and task.retries == 0, (seed, key, task)
            stages = [h.to_stage for h in rt.store.history(task.id) if h.event == "stage_changed"]
            assert stages == ["done"], (seed, key, stages)  # never sent back to development
            assert log.count(f"{key}: many files") == 1, (seed, key, log)
        fsck = subprocess.run(["git", "fsck", "--no-progress"], cwd=path, capture_output=True, text=True)
        assert fsck.returncode == 0 and "error" not in fsck.stderr, (seed, repo, fsck.stderr)
        assert not list((path / ".git").rglob("*.lock")), (seed, repo)
        assert _git(path, "status", "--porcelain") == "", (seed, repo, "the user's checkout did not follow")
        # Later merges in the same repository are unaffected.
        later = tasks.add(rt, f"later {repo}", repo=repo).key
        _branch_for(setup, repo, later)
        _move_main(setup, repo, 1)
        assert advance.advance(rt, later).outcome == "advanced", seed
        assert rt.task(later).stage == "done"
    assert rt.store.list_leases() == []
    rt.close()
    print(f"merge-kills: {kills} kills over {REPOS} repositories of {FILES}-file branches")
    assert kills >= 30


def test_dirty_and_untracked_files_in_the_users_checkout_never_fail_a_merge(setup: Setup) -> None:
    (repo,) = _merge_only(setup, repos=1)
    path = setup.root / repo
    rt = setup.runtime()
    first, second = (tasks.add(rt, f"task {i}", repo=repo).key for i in range(2))
    for key in (first, second):
        _branch_for(setup, repo, key)
    _move_main(setup, repo, 0)
    (path / "README.md").write_text("my local edit\n")  # dirty, and the merge does not touch it
    (path / first).mkdir()
    (path / first / "f000.txt").write_text("mine, untracked\n")  # in the way of the merge
    result = advance.advance(rt, first)
    assert result.outcome == "advanced", result.message
    task = rt.task(first)
    assert task.stage == "done" and task.retries == 0
    assert f"{first}: many files" in _git(path, "log", "--format=%s", "main")
    # The checkout was left as it was (the untracked file would have been overwritten).
    assert (path / first / "f000.txt").read_text() == "mine, untracked\n"
    assert (path / "README.md").read_text() == "my local edit\n"
    # Once the person moves their file away, the next merge brings the checkout up to date,
    # keeping the edit that was never in the way.
    (path / first / "f000.txt").unlink()
    result = advance.advance(rt, second)
    assert result.outcome == "advanced", result.message
    assert rt.task(second).retries == 0
    assert _git(path, "status", "--porcelain") == "M README.md"
    assert (path / first / "f000.txt").read_text() == f"{first} file 0\n"
    rt.close()


def test_a_missing_repository_directory_waits_and_is_not_the_agents_fault(setup: Setup) -> None:
    (repo,) = _merge_only(setup, repos=1)
    path = setup.root / repo
    rt = setup.runtime()
    key = tasks.add(rt, "env", repo=repo).key
    _branch_for(setup, repo, key)
    rt.close()
    path.rename(setup.root / "moved-away")
    out = setup.orch("advance", key)
    assert out.returncode == 4, out.stderr
    assert f"directory {path} is missing" in out.stderr
    rt = setup.runtime()
    task = rt.task(key)
    assert task.stage == "merge" and task.retries == 0 and not task.blocked
    assert all(e.state != "started" for e in rt.store.effects_of(task.id))
    (setup.root / "moved-away").rename(path)
    assert advance.advance(rt, key).outcome == "advanced"
    assert rt.task(key).stage == "done" and rt.task(key).retries == 0
    rt.close()


# -- the merge line (issue 11 item 4) -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("line", [True, False], ids=["line", "line-off"])
def test_merges_that_arrive_together_on_gitea_go_in_line_and_none_is_sent_back(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: bool
) -> None:
    """With the merge line (the default) a later task waits its turn; with the kill-switch
    off it may rebase early, fall behind and be rebased again: never sent back either way."""
    from test_forge_contract import CI, drive_on_gitea, gitea_runtime

    setup.update_config({"merge": {"line_enabled": line}})
    with gitea_runtime(setup, tmp_path, monkeypatch) as (rt, server):
        keys = [tasks.add(rt, f"together {i}").key for i in range(3)]
        for key in keys:
            drive_on_gitea(rt, server, key, "merge")
        retries = {key: rt.task(key).retries for key in keys}  # the demo reviewer rejects DEMO-2 once
        setup.open_merge_window()
        waits = 0
        for _ in range(30):
            for key in keys:
                if rt.task(key).stage == "merge":
                    result = advance.advance(rt, key, expect="merge")
                    waits += "waiting behind" in result.message
            if all(rt.task(k).stage != "merge" for k in keys):
                break
            # Gitea's CI reports on every head pushed, the rebased ones included.
            for branch, sha in dict(server.repos["acme/app"]["branches"]).items():
                if branch.startswith("orch/"):
                    server.add_status("acme", "app", sha, CI, "success")
        for key in keys:
            task = rt.task(key)
            assert task.stage == "deploy" and task.retries == retries[key], task
            moves = [
                (h.from_stage, h.to_stage) for h in rt.store.history(task.id) if h.event == "stage_changed"
            ]
            assert ("merge", "development") not in moves, moves
        main = server.repos["acme/app"]["branches"]["main"]
        log = subprocess.run(
            ["git", "log", "--format=%s", main],
            cwd=server.clone_url("acme", "app"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for key in keys:
            assert sum(line.startswith(f"{key}:") for line in log.splitlines()) >= 1, log
        if line:
            assert waits >= 1  # a later one waited its turn instead of rebasing early
        else:
            assert waits == 0 and rt.store.merge_line_holder("app") is None


def test_a_branch_left_behind_by_another_merge_is_rebased_again_never_sent_back(setup: Setup) -> None:
    (repo,) = _merge_only(setup, repos=1)
    path = setup.root / repo
    # While this task's CI runs, someone else's merge lands on main (once).
    flag = setup.root / "landed"
    other = f"[ -f {flag} ] || {{ touch {flag}; git -C {path} commit -q --allow-empty -m 'another merge'; }}"
    setup.update_config({"repos": {repo: {"ci": other}}})
    rt = setup.runtime()
    key = tasks.add(rt, "left behind", repo=repo).key
    _branch_for(setup, repo, key)
    _move_main(setup, repo, 0)
    first = advance.advance(rt, key)
    assert first.outcome == "busy" and "rebase first" in first.message, first.message
    again = advance.advance(rt, key)
    assert again.outcome == "advanced", again.message
    task = rt.task(key)
    assert task.stage == "done" and task.retries == 0
    events = [h.event for h in rt.store.history(task.id)]
    assert "effect_reopened" in events
    log = _git(path, "log", "--format=%s", "main").splitlines()
    assert log[:2] == [f"{key}: many files", "another merge"], log
    rt.close()


@pytest.mark.slow
def test_a_merge_that_meets_405_then_502_ends_its_row_and_moves_on_once_gitea_answers(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 item 5 / issue 15 item 1: one long-lived process (as the relay is) meets a
    405 then 502s inside the merge effect; it never keeps a `started` row, and the next
    advance after Gitea recovers merges."""
    from test_forge_contract import GITEA_405, drive_on_gitea, gitea_runtime

    with gitea_runtime(setup, tmp_path, monkeypatch) as (rt, server):
        key = tasks.add(rt, "Gitea hiccups").key
        drive_on_gitea(rt, server, key, "merge")
        task = rt.task(key)
        setup.open_merge_window()
        server.pr("acme", "app", 1)["refuse"] = GITEA_405["later"]
        assert advance.advance(rt, key, expect="merge").outcome == "busy"
        server.pr("acme", "app", 1)["refuse"] = None
        server.fail_next(4, 502)  # every attempt of the next request
        result = advance.advance(rt, key, expect="merge")
        assert result.outcome == "busy" and "502" in result.message, result.message
        rows = rt.store.effects_of(task.id)
        assert rows and all(r.state != "started" for r in rows), rows
        after = rt.task(key)
        assert after.stage == "merge" and not after.blocked and after.retries == task.retries
        # Gitea answers again: the same process moves the task on.
        assert advance.advance(rt, key, expect="merge").outcome == "advanced"
        assert server.pr("acme", "app", 1)["merged"] is True


@pytest.mark.slow
def test_the_reaper_kills_an_orphaned_effect_past_the_ceiling_then_the_probe_settles_it(setup: Setup) -> None:
    from orch.engine import reaper

    _deploy_only(setup, PROBE)
    rt = setup.runtime()
    key = tasks.add(rt, "hangs").key
    rt.close()
    (setup.root / "sleeps" / key).write_text("30\n")
    p = _popen_group(setup, "advance", key)
    _wait_for(lambda: (setup.root / "started" / key).exists(), "the deploy")
    _kill_group(p)  # orch dies; its deploy hangs on in a session of its own
    setup.update_config({"reaper": {"max_running_s": 1}})
    rt = setup.runtime(actor="reaper")
    task = rt.task(key)
    row = rt.store.effects_of(task.id)[0]
    assert effects.process_of(row)["alive"]
    assert advance.advance(rt, key).outcome == "busy"  # never probed nor rerun while it lives
    time.sleep(1.2)
    report = reaper.reap(rt)
    assert report.effects == [f"{key}:deploy"], report
    assert not effects.process_of(rt.store.effects_of(task.id)[0])["alive"]
    events = [r.event for r in rt.store.history(task.id)]
    assert "effect_reaped" in events
    assert any("killed effect deploy" in n.text for n in rt.store.pending_notifications())
    # Its group is gone: the next advance probes (not deployed) and runs it again, once.
    (setup.root / "sleeps" / key).write_text("0\n")
    assert advance.advance(rt, key).outcome == "advanced"
    assert _deploys(setup, key) == 1
    rt.close()


def test_a_git_busy_in_another_repository_does_not_keep_a_dead_lock(setup: Setup) -> None:
    """A lock a killed git left in one repository is removed even while a git works in
    another repository's worktree under the same workspace root (it holds none of these
    locks); a git working in this repository's own checkout still keeps it."""
    repos = _merge_only(setup, repos=2)
    rt = setup.runtime()
    other = tasks.add(rt, "busy elsewhere", repo=repos[1])
    elsewhere = rt.forge.ensure_worktree(other)
    mine = setup.root / repos[0]
    lock = mine / ".git" / "index.lock"

    def dead_lock() -> None:
        lock.write_text("")
        os.utime(lock, (time.time() - 60, time.time() - 60))  # no git is starting up

    def live_git(cwd: Path) -> subprocess.Popen[bytes]:
        # `git cat-file --batch` waits on its stdin: a live git process with that cwd.
        return subprocess.Popen(["git", "cat-file", "--batch"], cwd=cwd, stdin=subprocess.PIPE)

    dead_lock()
    busy = live_git(elsewhere)
    try:
        advance.advance(rt, tasks.add(rt, "mine", repo=repos[0]).key)
        assert not lock.exists(), "a git in another repository kept this one's dead lock"
    finally:
        busy.communicate(b"")
    dead_lock()
    busy = live_git(mine)
    try:
        rt.forge.is_merged(other._replace(repo=repos[0]))
        assert lock.exists(), "a lock was removed while a git worked in its repository"
    finally:
        busy.communicate(b"")
        lock.unlink(missing_ok=True)
    rt.close()


def test_a_person_settles_from_here_an_effect_of_a_host_that_is_gone(setup: Setup) -> None:
    """A deploy recorded as running on host-b, whose command's process group nobody here
    can see: nobody settles it from here (exit 4), unless a person says the host is gone
    for good (`--host-gone`, audited); refused for this host's own effect, and while the
    store says host-b's orch is alive."""
    from orch import identity
    from orch.identity import Owner

    rt = setup.runtime()
    task = rt.task(tasks.add(rt, "deployed on a host that died").key)
    on_b = Owner("host-b", "boot-b", 4242, "start-b")
    started, _ = rt.store.start_effect(
        task.id, "deploy->monitoring", "deploy", owner=on_b, now=time.time(), seen=None,
        stage=task.stage, version=task.version,
    )  # fmt: skip
    assert started == "started"
    assert rt.store.set_effect_process(
        task.id, "deploy->monitoring", "deploy", owner=on_b, pid=4242, pgid=4242, start="start-b"
    )
    refused = setup.orch("effect", "settle", task.key, "deploy", "--done")
    assert refused.returncode == 4 and "host-b" in refused.stderr, refused.stderr

    identity.set_session_check(lambda o: True)  # as a shared store would say: host-b's orch lives
    try:
        with pytest.raises(Busy, match="alive"):
            effects.settle(rt, task.key, "deploy", done=True, host_gone=True)
    finally:
        identity.set_session_check(None)

    settled = setup.orch("effect", "settle", task.key, "deploy", "--done", "--host-gone")
    assert settled.returncode == 0, settled.stderr
    row = rt.store.get_effect(task.id, "deploy->monitoring", "deploy")
    assert row is not None and row.state == "done"
    audits = [h for h in rt.store.history(task.id) if h.event == "effect_settled"]
    assert len(audits) == 1 and audits[0].detail["host_gone"] == "host-b", audits

    mine = rt.task(tasks.add(rt, "deployed here").key)
    rt.store.start_effect(
        mine.id, "deploy->monitoring", "deploy", owner=identity.me(), now=time.time(), seen=None,
        stage=mine.stage, version=mine.version,
    )  # fmt: skip
    here = setup.orch("effect", "settle", mine.key, "deploy", "--redo", "--host-gone")
    assert here.returncode == 2 and "ran on this host" in here.stderr, here.stderr
    rt.close()
