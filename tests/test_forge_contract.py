"""One contract, two forges: what the engine may rely on from any Forge.

Every test in the first part runs against the local forge (a repository on disk, CI in
the DB) and the Gitea forge (a fake Gitea on 127.0.0.1 whose repositories are real bare
git repositories). A `Bench` hides what differs by design: how CI reports and how someone
else moves the default branch. A commit reaches either forge through the port's
`publish` (a no-op for the local forge, which sees the worktree's branch at once). Where the two forges are
allowed to differ, the test says so next to the assertion. The second part tests what only
the Gitea forge has: pull requests, `publish`, and the server's refusals.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.gitea_git import GitGitea
from fakes.servers import GITEA_405

from orch.adapters.forge_gitea import GiteaForge, GiteaRepo
from orch.adapters.forge_local import LocalForge
from orch.adapters.git import git, init_repo
from orch.adapters.gitea import GiteaClient, MergeRefused
from orch.adapters.http import RetryPolicy
from orch.adapters.process import ProcessRunner
from orch.config import build
from orch.errors import BranchBehind, Busy, EffectFailed, PermanentFailure, RetryLater
from orch.names import inside, safe_name
from orch.ports import Forge
from orch.store import Store, Task

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, max_wait=1.0, total_time=5.0)
CI = "ci/test"


class Bench:
    """A forge plus the moves a test needs that are not part of the port."""

    kind: str
    forge: Forge
    workspace_root: Path
    truth: Path  # the git directory holding the real default branch

    def __init__(self, tmp: Path):
        self.store = Store.open(tmp / "o.db")
        self.workspace_root = tmp / "ws"

    def task(self, key: str = "ENG-1", title: str = "a task") -> Task:
        return self.store.add_task(
            title=title,
            repo="app",
            stage="development",
            now=time.time(),
            key=key,
            key_prefix="ENG",
            actor="test",
        )

    def commit(self, task: Task, files: Mapping[str, str], message: str = "work") -> str:
        """Commit `files` in the task's worktree, as an agent would, and publish (as the job
        runner does, through the port); the new sha."""
        wt = self.forge.ensure_worktree(task)
        for name, text in files.items():
            (wt / name).write_text(text)
        git("add", "-A", cwd=wt)
        git("commit", "-q", "-m", message, cwd=wt)
        self.forge.publish(task)
        return git("rev-parse", "HEAD", cwd=wt).stdout.strip()

    def set_ci(self, task: Task, sha: str, state: str) -> None:
        raise NotImplementedError

    def move_default(self, files: Mapping[str, str], message: str = "elsewhere") -> str:
        """Someone else lands a commit on the default branch; its sha."""
        raise NotImplementedError

    def default_head(self) -> str:
        return self.git("rev-parse", "refs/heads/main")

    def git(self, *args: str) -> str:
        return git(*args, cwd=self.truth).stdout.strip()

    def is_ancestor(self, a: str, b: str) -> bool:
        return git("merge-base", "--is-ancestor", a, b, cwd=self.truth, check=False).returncode == 0

    def close(self) -> None:
        self.store.close()


class LocalBench(Bench):
    kind = "local"

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.truth = tmp / "repo"
        init_repo(self.truth)
        config = build(
            {"repos": {"app": {"path": str(self.truth)}}, "workspace": {"root": str(self.workspace_root)}},
            environ={},
            cwd=tmp,
        )
        self.forge = LocalForge(config=config, store=self.store, runner=ProcessRunner(), clock=time.time)

    def set_ci(self, task: Task, sha: str, state: str) -> None:
        self.store.set_commit_status(
            repo="app", sha=sha, context=CI, state=state, description=None, now=time.time()
        )

    def move_default(self, files: Mapping[str, str], message: str = "elsewhere") -> str:
        for name, text in files.items():
            (self.truth / name).write_text(text)
        git("add", "-A", cwd=self.truth)
        git("commit", "-q", "-m", message, cwd=self.truth)
        return self.default_head()


class GiteaBench(Bench):
    kind = "gitea"

    def __init__(self, tmp: Path, http: httpx.Client):
        super().__init__(tmp)
        self.server = GitGitea(tmp / "gitea").start()
        self.server.add_repo("acme", "app")
        self.truth = Path(self.server.clone_url("acme", "app"))
        client = GiteaClient(client=http, base_url=self.server.url, token=self.server.token, policy=FAST)
        self.gitea_forge = GiteaForge(
            client=client,
            repos={"app": GiteaRepo("app", "acme", "app", clone_url=str(self.truth))},
            workspace_root=self.workspace_root,
            mirror_root=tmp / "mirrors",
            runner=ProcessRunner(),
        )
        self.forge = self.gitea_forge

    def set_ci(self, task: Task, sha: str, state: str) -> None:
        self.server.add_status("acme", "app", sha, CI, state)

    def move_default(self, files: Mapping[str, str], message: str = "elsewhere") -> str:
        return self.server.commit("acme", "app", "main", files, message)

    def close(self) -> None:
        self.server.stop()
        super().close()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # trust_env=False: no proxy between us and 127.0.0.1; one client: its SSL context costs ~50 ms.
    with httpx.Client(trust_env=False) as client:
        yield client


@pytest.fixture(params=["local", "gitea"])
def bench(request: pytest.FixtureRequest, tmp_path: Path, http: httpx.Client) -> Iterator[Bench]:
    b: Bench = LocalBench(tmp_path) if request.param == "local" else GiteaBench(tmp_path, http)
    try:
        yield b
    finally:
        b.close()


def worktree_head(path: Path) -> str:
    return git("rev-parse", "HEAD", cwd=path).stdout.strip()


# -- the contract ----------------------------------------------------------------------------------


def test_each_task_gets_its_own_worktree_on_its_branch_inside_the_root(bench: Bench) -> None:
    forge = bench.forge
    one, other = bench.task("ENG-1"), bench.task("ENG 2/$(rm -rf)/x")
    assert forge.branch(one) == "orch/ENG-1"
    assert forge.branch(other) == f"orch/{safe_name(other.key)}" == "orch/ENG-2-rm--rf-x"

    p1, p2 = forge.ensure_worktree(one), forge.ensure_worktree(other)
    assert p1 != p2
    assert inside(p1, bench.workspace_root) and inside(p2, bench.workspace_root)
    assert git("symbolic-ref", "--short", "HEAD", cwd=p1).stdout.strip() == "orch/ENG-1"
    assert git("symbolic-ref", "--short", "HEAD", cwd=p2).stdout.strip() == forge.branch(other)
    assert worktree_head(p1) == bench.default_head()  # starts from the default branch

    (p1 / "scratch.txt").write_text("only here\n")
    assert not (p2 / "scratch.txt").exists()
    assert forge.ensure_worktree(one) == p1  # idempotent, and keeps what is there
    assert (p1 / "scratch.txt").exists()


def test_worktrees_made_and_removed_at_once_in_one_repository_all_succeed(bench: Bench) -> None:
    # Runners start jobs of one repository at the same moment. git's worktree commands
    # are not safe against each other (a prune deletes the directory an add is creating,
    # a list fails on a half-written one): orch serialises them per repository, so none
    # of these fails and no job spends an attempt on orch's own contention.
    forge = bench.forge
    first = bench.task("ENG-FIRST")
    forge.ensure_worktree(first)  # the mirror's clone, not raced here
    tasks = [bench.task(f"ENG-{i}") for i in range(10)]
    errors: list[BaseException] = []

    def at_once(step: Callable[[Task], None]) -> None:
        start = threading.Barrier(len(tasks))

        def one(task: Task) -> None:
            start.wait()
            try:
                step(task)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=one, args=(t,)) for t in tasks]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)

    at_once(forge.ensure_worktree)
    at_once(lambda t: (forge.ensure_worktree(t), forge.remove_worktree(t)))
    assert errors == []
    listed = git("worktree", "list", "--porcelain", cwd=forge.worktree_path(first)).stdout
    assert [t.key for t in tasks if f"/{t.key}\n" in listed] == []  # each removed, cleanly
    assert [t.key for t in tasks if forge.worktree_path(t).exists()] == []


def test_a_key_with_a_dot_dot_still_gets_a_worktree(bench: Bench) -> None:
    # safe_name collapses "..", which git refuses in a branch name.
    task = bench.task("ENG 2/../../escape")
    path = bench.forge.ensure_worktree(task)
    assert inside(path, bench.workspace_root)
    assert ".." not in bench.forge.branch(task)


def test_branch_head_is_none_until_a_commit_is_published_then_that_commit(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    assert forge.branch_head(task) is None
    assert forge.branch_ahead(task) is False

    forge.ensure_worktree(task)
    # Differs by design: the local branch exists (at the default branch) once the worktree
    # does; on Gitea nothing exists until a push. Either way, nothing is "pushed" yet.
    assert forge.branch_head(task) in (None, bench.default_head())
    assert forge.branch_ahead(task) is False

    sha = bench.commit(task, {"feature.txt": "one\n"})
    assert forge.branch_head(task) == sha
    assert forge.branch_ahead(task) is True

    second = bench.commit(task, {"feature.txt": "two\n"})
    assert second != sha and forge.branch_head(task) == second


def test_a_snapshot_reads_every_head_once_and_answers_as_branch_head_does(bench: Bench) -> None:
    forge = bench.forge
    first, second, unpushed = bench.task("S-1"), bench.task("S-2"), bench.task("S-3")
    one = bench.commit(first, {"a.txt": "a\n"})
    two = bench.commit(second, {"b.txt": "b\n"})
    with forge.snapshot():
        assert forge.branch_head(first) == one
        assert forge.branch_head(second) == two
        assert forge.branch_head(unpushed) is None
        later = bench.commit(first, {"a.txt": "later\n"})
        # Inside, heads do not move: the pass sees one consistent picture.
        assert forge.branch_head(first) == one
    assert forge.branch_head(first) == later


def test_ci_status_is_none_until_reported_and_bound_to_exactly_that_sha(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    sha = bench.commit(task, {"feature.txt": "one\n"})
    assert forge.ci_status(task, sha) == (None, {})

    bench.set_ci(task, sha, "failure")
    state, ev = forge.ci_status(task, sha)
    assert state == "failure" and ev["statuses"] == {CI: "failure"}

    bench.set_ci(task, sha, "success")  # a re-run replaces the context's status
    state, ev = forge.ci_status(task, sha)
    assert state == "success" and ev["statuses"] == {CI: "success"}

    newer = bench.commit(task, {"feature.txt": "two\n"})
    assert forge.ci_status(task, newer) == (None, {})  # a new head has no status
    assert forge.ci_status(task, sha)[0] == "success"  # and the old one keeps its own


def test_request_ci_never_reports_for_another_sha(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    first = bench.commit(task, {"feature.txt": "one\n"})
    bench.set_ci(task, first, "failure")
    head = bench.commit(task, {"feature.txt": "two\n"})
    forge.request_ci(task, head)
    # Differs by design: the local forge runs CI now (no CI configured reports success);
    # Gitea runs CI on push by itself, so nothing is reported yet.
    assert forge.ci_status(task, head)[0] in (None, "success")
    assert forge.ci_status(task, first)[0] == "failure"


def test_rebase_is_a_no_op_when_the_branch_is_up_to_date(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    sha = bench.commit(task, {"feature.txt": "one\n"})
    result = bench.forge.rebase(task)
    assert result["rebased"] is False and result["head"] == sha
    assert forge.branch_head(task) == sha  # no new head: no new CI needed


def test_rebase_moves_the_branch_onto_the_moved_default_branch(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    sha = bench.commit(task, {"feature.txt": "one\n"})
    moved = bench.move_default({"other.txt": "theirs\n"})

    result = forge.rebase(task)
    head = forge.branch_head(task)
    assert result["rebased"] is True and result["head"] == head
    assert head is not None and head != sha
    assert bench.is_ancestor(moved, head)
    assert forge.branch_ahead(task) is True
    assert bench.git("show", f"{head}:feature.txt") == "one"

    # The worktree follows the rebased branch, and work goes on from there.
    wt = forge.ensure_worktree(task)
    assert worktree_head(wt) == head and (wt / "other.txt").exists()
    more = bench.commit(task, {"feature.txt": "two\n"})
    assert forge.branch_head(task) == more
    assert bench.git("rev-parse", f"{more}^") == head


def test_a_conflicting_rebase_fails_and_leaves_the_branch_alone(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    sha = bench.commit(task, {"README.md": "mine\n"})
    bench.move_default({"README.md": "theirs\n"})
    with pytest.raises(EffectFailed, match="conflict"):
        forge.rebase(task)
    assert forge.branch_head(task) == sha
    wt = forge.ensure_worktree(task)
    assert worktree_head(wt) == sha
    assert git("status", "--porcelain", cwd=wt).stdout == ""


def test_merge_puts_the_head_on_the_default_branch_with_linear_history(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    before = bench.default_head()
    sha = bench.commit(task, {"feature.txt": "one\n"})
    bench.set_ci(task, sha, "success")
    assert forge.is_merged(task) is False

    forge.merge(task)
    after = bench.default_head()
    assert after == sha  # fast-forward: exactly the commit CI checked
    assert bench.is_ancestor(before, after)
    assert bench.git("rev-list", "--merges", f"{before}..{after}") == ""
    assert forge.is_merged(task) is True
    assert forge.branch_ahead(task) is False


def test_rebase_then_merge_lands_both_lines_of_work(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    bench.commit(task, {"feature.txt": "one\n"})
    moved = bench.move_default({"other.txt": "theirs\n"})
    forge.rebase(task)
    head = forge.branch_head(task)
    assert head is not None
    forge.merge(task)
    assert bench.default_head() == head
    assert bench.is_ancestor(moved, head)
    assert bench.git("rev-list", "--merges", f"{moved}..{head}") == ""
    assert forge.is_merged(task) is True


def test_merging_twice_moves_the_default_branch_once(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    before = bench.default_head()
    bench.commit(task, {"feature.txt": "one\n"})
    forge.merge(task)
    once = bench.default_head()
    with contextlib.suppress(EffectFailed):  # a no-op or EffectFailed: both keep the contract
        forge.merge(task)
    assert bench.default_head() == once
    assert bench.git("rev-list", "--count", f"{before}..{once}") == "1"
    assert forge.is_merged(task) is True


def test_merge_refuses_a_branch_behind_the_default_branch(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    bench.commit(task, {"feature.txt": "one\n"})
    moved = bench.move_default({"other.txt": "theirs\n"})
    with pytest.raises(BranchBehind, match="rebase first"):  # not the developer's fault
        forge.merge(task)
    assert bench.default_head() == moved
    assert forge.is_merged(task) is False


def test_merge_without_a_branch_fails(bench: Bench) -> None:
    task = bench.task()
    before = bench.default_head()
    with pytest.raises(EffectFailed, match="nothing to merge"):
        bench.forge.merge(task)
    assert bench.default_head() == before


def test_remove_worktree_removes_it_and_keeps_the_branch(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    sha = bench.commit(task, {"feature.txt": "one\n"})
    wt = forge.ensure_worktree(task)
    forge.remove_worktree(task)
    assert not wt.exists()
    forge.remove_worktree(task)  # twice is fine
    assert forge.branch_head(task) == sha
    again = forge.ensure_worktree(task)
    assert again == wt and worktree_head(again) == sha


def test_publish_makes_a_commit_visible_and_publishing_again_changes_nothing(bench: Bench) -> None:
    forge = bench.forge
    task = bench.task()
    forge.ensure_worktree(task)
    nothing = forge.publish(task)  # no commits beyond the default branch: nothing to review
    assert nothing["pushed"] is False
    assert forge.branch_ahead(task) is False

    wt = forge.ensure_worktree(task)
    (wt / "feature.txt").write_text("one\n")
    git("add", "-A", cwd=wt)
    git("commit", "-q", "-m", "work", cwd=wt)
    sha = worktree_head(wt)
    # Differs by design: the local forge reads the worktree's branch, Gitea the server's.
    assert forge.branch_head(task) == (sha if bench.kind == "local" else None)
    first = forge.publish(task)
    assert first["pushed"] is (bench.kind == "gitea")  # the local forge never pushes
    assert forge.branch_head(task) == sha
    assert forge.branch_ahead(task) is True
    again = forge.publish(task)
    assert again["pushed"] is False
    assert forge.branch_head(task) == sha
    assert bench.default_head() != sha  # publishing never merges


# -- Gitea only -------------------------------------------------------------------------------------


@pytest.fixture
def gb(tmp_path: Path, http: httpx.Client) -> Iterator[GiteaBench]:
    b = GiteaBench(tmp_path, http)
    try:
        yield b
    finally:
        b.close()


def test_publish_pushes_once_and_opens_one_pull_request(gb: GiteaBench) -> None:
    forge, server = gb.gitea_forge, gb.server
    task = gb.task(title="Add the feature")
    forge.ensure_worktree(task)
    assert forge.publish(task)["pushed"] is False  # no commits: nothing to review, no PR
    assert server.repos["acme/app"]["pulls"] == {}

    sha = gb.commit(task, {"feature.txt": "one\n"})
    first = forge.publish(task)  # already published by the bench: idempotent
    assert first == {"pushed": False, "head": sha, "pr": 1, "url": first["url"]}
    pr = server.pr("acme", "app", 1)
    assert pr["title"] == "ENG-1: Add the feature"
    assert (pr["base"]["ref"], pr["head"]["ref"], pr["state"]) == ("main", "orch/ENG-1", "open")
    posts = [r for r in server.requests if r.method == "POST" and r.path.endswith("/pulls")]
    assert len(posts) == 1
    assert server.head("acme", "app", "orch/ENG-1") == sha


def test_merge_binds_the_head_and_uses_a_linear_style(gb: GiteaBench) -> None:
    task = gb.task()
    sha = gb.commit(task, {"feature.txt": "one\n"})
    result = gb.gitea_forge.merge(task)
    assert result["merged"] == sha and result["pr"] == 1 and result["merge_commit"] == sha
    body = gb.server.merges[-1]["body"]
    assert body["Do"] == "rebase" and body["head_commit_id"] == sha
    assert body["delete_branch_after_merge"] is False  # the branch head stays readable


def test_a_second_merge_is_a_no_op_without_a_request(gb: GiteaBench) -> None:
    task = gb.task()
    gb.commit(task, {"feature.txt": "one\n"})
    gb.gitea_forge.merge(task)
    again = gb.gitea_forge.merge(task)
    assert again["already"] is True
    assert len(gb.server.merges) == 1


def test_checks_still_running_is_try_later_with_the_servers_words(gb: GiteaBench) -> None:
    task = gb.task()
    gb.commit(task, {"feature.txt": "one\n"})
    gb.server.pr("acme", "app", 1)["checks_running"] = True
    with pytest.raises(RetryLater, match=r"not possible yet.*: .*try again later"):
        gb.gitea_forge.merge(task)
    assert gb.gitea_forge.is_merged(task) is False


def test_mergeable_false_while_giteas_check_runs_is_try_later_then_it_merges(gb: GiteaBench) -> None:
    # Gitea reports `mergeable: false` while its conflict check runs (started when the PR is
    # viewed) and answers a merge with 405 "Please try again later": not a conflict.
    task = gb.task()
    sha = gb.commit(task, {"feature.txt": "one\n"})
    gb.server.pr("acme", "app", 1)["checking_views"] = 3
    with pytest.raises(RetryLater, match=r"still checking.*Please try again later"):
        gb.gitea_forge.merge(task)
    assert gb.server.pr("acme", "app", 1)["merged"] is False
    result = gb.gitea_forge.merge(task)  # the check has finished: mergeable is true again
    assert result["merged"] == sha and gb.gitea_forge.is_merged(task) is True


def test_each_405_of_pull_go_is_told_apart(gb: GiteaBench) -> None:
    # Permanent: blocks with the reason (and the server's own words); never EffectFailed,
    # which would send the task back to development for nothing.
    task = gb.task()
    gb.commit(task, {"feature.txt": "one\n"})
    pr = gb.server.pr("acme", "app", 1)
    for refusal, reason in (
        ("not_allowed", "may not merge"),
        ("style", "merge style"),
        ("unsigned", "signed"),
    ):
        pr["refuse"] = GITEA_405[refusal]
        with pytest.raises(MergeRefused, match=reason) as info:
            gb.gitea_forge.merge(task)
        assert GITEA_405[refusal] in str(info.value)
        assert isinstance(info.value, PermanentFailure) and not isinstance(info.value, EffectFailed)
    pr["refuse"], title = None, pr["title"]
    pr["title"] = "WIP: " + title
    with pytest.raises(MergeRefused, match="work in progress"):
        gb.gitea_forge.merge(task)
    pr["title"] = title
    # Not yet: tried again later.
    for refusal in ("later", "not_ready"):
        pr["refuse"] = GITEA_405[refusal]
        with pytest.raises(RetryLater, match="405"):
            gb.gitea_forge.merge(task)
    assert pr["merged"] is False


def test_a_closed_pull_request_is_never_reused(gb: GiteaBench) -> None:
    # GET pulls/{base}/{head} has no state filter and answers with the first PR it finds.
    task = gb.task()
    sha = gb.commit(task, {"feature.txt": "one\n"})
    gb.server.close_pr("acme", "app", 1)
    assert gb.gitea_forge.is_merged(task) is False
    result = gb.gitea_forge.merge(task)
    assert result["pr"] == 2 and result["merged"] == sha
    first, second = gb.server.pr("acme", "app", 1), gb.server.pr("acme", "app", 2)
    assert (first["state"], first["merged"]) == ("closed", False)
    assert second["merged"] is True and gb.gitea_forge.is_merged(task) is True
    assert [m["index"] for m in gb.server.merges] == [2]
    posts = [r for r in gb.server.requests if r.method == "POST" and r.path.endswith("/pulls")]
    assert len(posts) == 2  # one new pull request, not one per call


def test_a_409_on_a_mergeable_pull_request_is_try_later(gb: GiteaBench) -> None:
    task = gb.task()
    gb.commit(task, {"feature.txt": "one\n"})
    gb.server.pr("acme", "app", 1)["conflict"] = True  # 409, yet Gitea still says mergeable
    with pytest.raises(RetryLater, match="409"):
        gb.gitea_forge.merge(task)
    assert gb.gitea_forge.is_merged(task) is False


def test_merge_waits_while_the_pull_request_lags_behind_the_branch(gb: GiteaBench) -> None:
    task = gb.task()
    sha = gb.commit(task, {"feature.txt": "one\n"})
    newer = gb.server.commit("acme", "app", "orch/ENG-1", {"feature.txt": "two\n"}, "pushed elsewhere")
    pr_path = "/api/v1/repos/acme/app/pulls/main/orch/ENG-1"
    lagging = gb.server._render(gb.server.repos["acme/app"], gb.server.pr("acme", "app", 1))
    lagging["head"]["sha"] = sha  # Gitea has not caught up with the push yet
    gb.server.override("GET", pr_path, 200, lagging)
    with pytest.raises(Busy, match="try again"):
        gb.gitea_forge.merge(task)
    assert gb.server.merges == [] and gb.default_head() != newer


def test_the_probe_is_the_pull_requests_merged_flag(gb: GiteaBench) -> None:
    task = gb.task()
    gb.commit(task, {"feature.txt": "one\n"})
    assert gb.gitea_forge.is_merged(task) is False
    gb.server.pr("acme", "app", 1)["merged"] = True  # merged by a person in the web UI, say
    assert gb.gitea_forge.is_merged(task) is True


def test_unpublished_commits_are_replayed_onto_a_server_side_rebase(gb: GiteaBench) -> None:
    forge = gb.gitea_forge
    task = gb.task()
    gb.commit(task, {"feature.txt": "one\n"})
    gb.move_default({"other.txt": "theirs\n"})
    wt = forge.ensure_worktree(task)
    (wt / "local.txt").write_text("not pushed yet\n")
    git("add", "-A", cwd=wt)
    git("commit", "-q", "-m", "unpublished", cwd=wt)
    local = worktree_head(wt)

    result = forge.rebase(task)  # Gitea rewrites the published commit; ours is not on the server
    head = forge.branch_head(task)
    assert result["rebased"] is True and result["head"] == head
    mine = worktree_head(wt)
    assert mine != local and git("rev-parse", f"{mine}^", cwd=wt).stdout.strip() == head
    assert (wt / "local.txt").exists() and (wt / "other.txt").exists()

    assert forge.publish(task)["pushed"] is True  # a fast-forward: no force needed
    assert forge.branch_head(task) == mine


def test_a_rebase_without_a_worktree_moves_the_local_branch_too(gb: GiteaBench) -> None:
    forge = gb.gitea_forge
    task = gb.task()
    gb.commit(task, {"feature.txt": "one\n"})
    forge.remove_worktree(task)
    gb.move_default({"other.txt": "theirs\n"})
    forge.rebase(task)
    head = forge.branch_head(task)
    wt = forge.ensure_worktree(task)
    assert worktree_head(wt) == head
    more = gb.commit(task, {"feature.txt": "two\n"})
    assert forge.branch_head(task) == more


def test_another_machine_picks_up_the_published_branch(gb: GiteaBench, tmp_path: Path) -> None:
    task = gb.task()
    sha = gb.commit(task, {"feature.txt": "one\n"})
    other = GiteaForge(
        client=gb.gitea_forge.client,
        repos=gb.gitea_forge.repos,
        workspace_root=tmp_path / "ws2",
        mirror_root=tmp_path / "mirrors2",
        runner=ProcessRunner(),
        hooks={"after_create": 'printf "%s" "$ORCH_BRANCH" > .hooked'},
    )
    wt = other.ensure_worktree(task)
    assert worktree_head(wt) == sha
    assert (wt / ".hooked").read_text() == "orch/ENG-1"
    (wt / "feature.txt").write_text("two\n")
    git("commit", "-q", "-am", "more", cwd=wt)
    assert other.publish(task)["pushed"] is True
    assert gb.gitea_forge.branch_head(task) == worktree_head(wt)


# -- Gitea's refusals through advance: blocked with the reason, or tried again -----------------------


@contextlib.contextmanager
def gitea_runtime(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, GitGitea]]:
    """A runtime on the Gitea forge (local tracker) against a GitGitea on 127.0.0.1."""
    server = GitGitea(tmp_path / "gitea").start()
    try:
        server.add_repo("acme", "app")
        setup.update_config(
            {
                "forge": {"kind": "gitea"},
                "gitea": {"base_url": server.url},
                "repos": {
                    "app": {"path": server.clone_url("acme", "app"), "forge_repo": "acme/app", "ci": None}
                },
            }
        )
        monkeypatch.setenv("GITEA_TOKEN", server.token)
        rt = setup.runtime()
        try:
            yield rt, server
        finally:
            rt.close()
    finally:
        server.stop()


def drive_on_gitea(rt: Any, server: GitGitea, key: str, stage: str, ci: str = "success") -> None:
    """Run the agents, approve, and report `ci` on every pushed head until `key` is at `stage`."""
    from orch.engine import advance, jobs, tasks

    for _ in range(30):
        current = rt.task(key)
        if current.stage == stage:
            return
        for branch, sha in dict(server.repos["acme/app"]["branches"]).items():
            if branch.startswith("orch/"):
                server.add_status("acme", "app", sha, CI, ci)
        if jobs.work(rt, max_jobs=1):
            continue
        if current.stage == "analysis" and rt.store.latest_verdict(current.id, current.version) is None:
            tasks.verdict(rt, key, "approve")
        advance.advance(rt, key, expect=current.stage)
    raise AssertionError(f"{key} stuck at {rt.task(key).stage}, wanted {stage}")


@pytest.mark.parametrize(("refusal", "blocked"), [("not_allowed", True), ("later", False)])
def test_advance_blocks_on_a_permanent_405_and_waits_on_a_transient_one(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: str, blocked: bool
) -> None:
    from orch.engine import advance, tasks

    with gitea_runtime(setup, tmp_path, monkeypatch) as (rt, server):
        task = tasks.add(rt, "Refused by Gitea")
        drive_on_gitea(rt, server, task.key, "merge")
        server.pr("acme", "app", 1)["refuse"] = GITEA_405[refusal]
        setup.open_merge_window()
        result = advance.advance(rt, task.key, expect="merge")
        after = rt.task(task.key)
        assert after.stage == "merge" and after.retries == 0  # never sent back to development
        assert after.blocked is blocked
        if blocked:
            assert result.outcome == "failed"
            assert "may not merge" in (after.block_reason or "")
            assert GITEA_405[refusal] in (after.block_reason or "")
        else:
            assert result.outcome == "busy" and "try again later" in result.message
        assert server.pr("acme", "app", 1)["merged"] is False
        # A person fixes it in Gitea (and unblocks): the merge goes through.
        server.pr("acme", "app", 1)["refuse"] = None
        if blocked:
            tasks.unblock(rt, task.key, "write access given")
        assert advance.advance(rt, task.key, expect="merge").outcome == "advanced"
        assert server.pr("acme", "app", 1)["merged"] is True


def test_warning_is_not_green_for_the_gate_nor_for_a_status_webhook(
    setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One rule: only success (or skipped) is green. Gitea's own branch protection agrees.
    import json

    from orch.engine import advance, deliveries, jobs, tasks

    with gitea_runtime(setup, tmp_path, monkeypatch) as (rt, server):
        task = tasks.add(rt, "Warned")
        drive_on_gitea(rt, server, task.key, "development")
        assert jobs.work(rt, max_jobs=1)  # the developer commits and pushes
        head = rt.forge.branch_head(rt.task(task.key))
        assert head is not None
        server.add_status("acme", "app", head, CI, "warning")
        result = advance.advance(rt, task.key, expect="development")
        assert result.outcome == "not_ready" and "ci is warning" in result.message
        repo = {"full_name": "acme/app"}
        body = {"sha": head, "state": "warning", "context": "ci/lint", "repository": repo}
        deliveries.handle(rt, "gitea", json.dumps(body).encode(), {"X-Gitea-Event": "status"})
        assert ("ci/lint", "failure") in [(c, s) for c, s, _ in rt.store.commit_statuses("app", head)]
        assert rt.task(task.key).stage == "development"
