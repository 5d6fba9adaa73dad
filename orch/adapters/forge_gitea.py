"""The Gitea forge: branches live on a Gitea server, the agents work in local worktrees.

Each repository gets one local clone (the mirror) under `mirror_root`, made on first use
and fetched before use; each task gets a `git worktree` of it under the workspace root,
on branch `orch/<key>`, as with the local forge. The agent commits there, and nothing
counts until `publish(task)` pushes the branch and opens its pull request. From then on
the server is the truth: the head is what `git ls-remote` says, CI is Gitea's combined
status of that sha (Gitea starts CI on push, so `request_ci` has nothing to do), a rebase
is Gitea's "update branch" of the pull request, a merge is Gitea's merge bound to the
head the checks ran on, and the merge's probe is the pull request's `merged` flag.

A rebase on the server rewrites the branch under the worktree. So before a job (in
`ensure_worktree`) and before a push, the worktree is moved onto the remote head: commits
we had published are replaced by their rebased versions, commits not yet published are
replayed on top. `refs/orch/published/<branch>` in the mirror remembers the last head we
pushed or adopted, which is how the two kinds are told apart.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple

from orch import log
from orch.adapters.git import GitError, git, worktree_admin
from orch.adapters.gitea import GiteaClient, MergeConflict, PullRequest
from orch.command_env import run_hook
from orch.errors import BranchBehind, Busy, EffectFailed, NotReady, RetryLater, UsageError
from orch.names import inside, safe_name
from orch.ports import Runner
from orch.records import Task

# Both keep the default branch linear; with a branch already on top of it, both leave the
# default branch exactly at the head the checks ran on.
LinearMergeStyle = Literal["rebase", "fast-forward-only"]
_CHECK_RETRY_S = 30.0  # Gitea's conflict check takes seconds; a tick is a minute anyway


class GiteaRepo(NamedTuple):
    """A repository on Gitea; `name` is what tasks call it (their `repo`)."""

    name: str
    owner: str
    repo: str
    clone_url: str
    default_branch: str = "main"


class GiteaForge:
    """The Forge port over a Gitea server, plus `publish` (push the branch, open the PR)."""

    _snapshot: dict[str, dict[str, str]] | None = None

    def __init__(
        self,
        *,
        client: GiteaClient,
        repos: Mapping[str, GiteaRepo],
        workspace_root: Path,
        mirror_root: Path,
        runner: Runner,
        hooks: Mapping[str, str] | None = None,
        hook_timeout_s: float = 120.0,
        log_dir: Path | None = None,
        merge_style: LinearMergeStyle = "rebase",
    ):
        self.client = client
        self.repos = dict(repos)
        self.workspace_root = workspace_root
        self.mirror_root = mirror_root
        self.runner = runner
        self.hooks = dict(hooks or {})
        self.hook_timeout_s = hook_timeout_s
        self.log_dir = log_dir if log_dir is not None else mirror_root / ".logs"
        self.merge_style: LinearMergeStyle = merge_style

    def __repr__(self) -> str:
        return f"GiteaForge(client={self.client!r}, repos={sorted(self.repos)})"

    # -- names and places --------------------------------------------------------------------

    def _repo(self, task: Task) -> GiteaRepo:
        repo = self.repos.get(task.repo)
        if repo is None:
            raise UsageError(f"task {task.key}: repo {task.repo!r} is not configured for Gitea")
        return repo

    def branch(self, task: Task) -> str:
        return f"orch/{safe_name(task.key)}"

    def worktree_path(self, task: Task) -> Path:
        root = self.workspace_root
        path = root / safe_name(task.repo) / safe_name(task.key)
        if not inside(path, root):
            raise UsageError(f"worktree {path} would lie outside {root}")
        return path

    def mirror_path(self, repo: GiteaRepo) -> Path:
        path = self.mirror_root / safe_name(repo.name)
        if not inside(path, self.mirror_root):
            raise UsageError(f"mirror {path} would lie outside {self.mirror_root}")
        return path

    def _mirror(self, repo: GiteaRepo) -> Path:
        """The local clone of `repo`, cloned on first use."""
        path = self.mirror_path(repo)
        if (path / ".git").exists():
            return path
        self.mirror_root.mkdir(parents=True, exist_ok=True)
        # Clone beside the target and rename: two processes cloning at once both succeed,
        # and the loser throws its copy away.
        tmp = self.mirror_root / f".{path.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        git("clone", "-q", "--no-checkout", "--", repo.clone_url, str(tmp), cwd=self.mirror_root)
        try:
            tmp.rename(path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (path / ".git").exists():
                raise
        return path

    @staticmethod
    def _fetch(mirror: Path) -> None:
        out = git("fetch", "-q", "--prune", "origin", cwd=mirror, check=False)
        if out.returncode != 0:  # once more: a concurrent fetch may have held a ref lock
            git("fetch", "-q", "--prune", "origin", cwd=mirror)

    @staticmethod
    def _rev(cwd: Path, ref: str) -> str | None:
        out = git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", cwd=cwd, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    @staticmethod
    def _is_ancestor(cwd: Path, ancestor: str, descendant: str) -> bool:
        return git("merge-base", "--is-ancestor", ancestor, descendant, cwd=cwd, check=False).returncode == 0

    def _tracking(self, branch: str) -> str:
        return f"refs/remotes/origin/{branch}"

    def _published_ref(self, branch: str) -> str:
        return f"refs/orch/published/{branch}"

    # -- worktrees ---------------------------------------------------------------------------

    def ensure_worktree(self, task: Task) -> Path:
        repo = self._repo(task)
        mirror = self._mirror(repo)
        path = self.worktree_path(task)
        branch = self.branch(task)
        self._fetch(mirror)
        if (path / ".git").exists():
            self._sync(mirror, path, branch)
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with worktree_admin(mirror / ".git"):
            git("worktree", "prune", cwd=mirror)
            if self._rev(mirror, f"refs/heads/{branch}"):
                git("worktree", "add", "-q", str(path), branch, cwd=mirror)
                self._sync(mirror, path, branch)
            else:
                remote = self._rev(mirror, self._tracking(branch))
                start = remote or self._tracking(repo.default_branch)
                git("worktree", "add", "-q", "--no-track", "-b", branch, str(path), start, cwd=mirror)
                if remote:  # the branch was published before (another machine, a removed mirror)
                    git("update-ref", self._published_ref(branch), remote, cwd=mirror)
            # The upstream, for the agent's own `git status` / `git push`; orch pushes explicitly.
            git("config", f"branch.{branch}.remote", "origin", cwd=mirror)
            git("config", f"branch.{branch}.merge", f"refs/heads/{branch}", cwd=mirror)
        if not self._hook("after_create", task, path):
            with worktree_admin(mirror / ".git"):
                git("worktree", "remove", "--force", str(path), cwd=mirror, check=False)
            raise GitError(
                f"workspace hook after_create failed for {task.key} (log in {self._hook_log(task)})"
            )
        return path

    def _sync(self, mirror: Path, path: Path | None, branch: str) -> None:
        """Move the local branch (and its worktree `path`, if any) onto the fetched remote head,
        keeping commits not yet published on top.

        Raises GitError when that cannot be done cleanly (local changes in the way, a replay
        that conflicts): working on a stale base would only fail later, at the push.
        """
        remote = self._rev(mirror, self._tracking(branch))
        local = self._rev(mirror, f"refs/heads/{branch}")
        if remote is None or local is None or local == remote or self._is_ancestor(mirror, remote, local):
            return  # nothing published yet, or only new local commits on top: publish pushes them
        published = self._rev(mirror, self._published_ref(branch))
        if self._is_ancestor(mirror, local, remote) or local == published:
            # Behind, or everything here was published and the server rewrote it (a rebase).
            if path is not None:
                git("reset", "-q", "--keep", remote, cwd=path)
            else:
                git("update-ref", f"refs/heads/{branch}", remote, local, cwd=mirror)
        elif published and path is not None and self._is_ancestor(mirror, published, local):
            out = git("rebase", "-q", "--onto", remote, published, cwd=path, check=False)
            if out.returncode != 0:
                git("rebase", "--abort", cwd=path, check=False)
                raise GitError(
                    f"cannot replay the unpublished commits of {branch} onto its new remote head "
                    f"{remote[:10]}: {(out.stdout + out.stderr).strip()[-300:]}"
                )
        else:
            raise GitError(
                f"{branch} has diverged from origin/{branch} ({local[:10]} vs {remote[:10]}) and orch "
                f"cannot replay the difference here: reconcile it by hand in {path or mirror}"
            )
        git("update-ref", self._published_ref(branch), remote, cwd=mirror)

    def _worktree_if_any(self, task: Task) -> Path | None:
        path = self.worktree_path(task)
        return path if (path / ".git").exists() else None

    def remove_worktree(self, task: Task) -> None:
        repo = self.repos.get(task.repo)
        path = self.worktree_path(task)
        if repo is None or not path.exists():
            return
        mirror = self.mirror_path(repo)
        self._hook("before_remove", task, path)  # a failing hook is logged; removal goes on
        with worktree_admin(mirror / ".git"):
            if git("worktree", "remove", "--force", str(path), cwd=mirror, check=False).returncode:
                shutil.rmtree(path, ignore_errors=True)
                git("worktree", "prune", cwd=mirror, check=False)

    def _hook_log(self, task: Task) -> Path:
        return self.log_dir / f"hooks-{safe_name(task.key)}.log"

    def _hook(self, name: str, task: Task, path: Path) -> bool:
        out = run_hook(
            self.runner,
            self.hooks.get(name),
            name=name,
            task=task,
            branch=self.branch(task),
            cwd=path,
            log_path=self._hook_log(task),
            timeout_s=self.hook_timeout_s,
        )
        return out is None or out.state == "succeeded"

    # -- publishing --------------------------------------------------------------------------

    def publish(self, task: Task) -> dict[str, Any]:
        """Push the task's branch (never forced) and open its pull request if none is open.

        Called after a job that may have committed. A branch with no commits beyond the
        default branch is not pushed: there would be nothing to review.
        """
        repo = self._repo(task)
        mirror = self._mirror(repo)
        branch = self.branch(task)
        if self._rev(mirror, f"refs/heads/{branch}") is None:
            return {"pushed": False, "head": None, "why": "no local branch"}
        self._fetch(mirror)
        self._sync(mirror, self._worktree_if_any(task), branch)
        local = self._rev(mirror, f"refs/heads/{branch}")
        assert local is not None
        base = self._rev(mirror, self._tracking(repo.default_branch))
        remote = self._rev(mirror, self._tracking(branch))
        if base is not None and self._is_ancestor(mirror, local, base):
            return {"pushed": False, "head": remote, "why": f"no commits beyond {repo.default_branch}"}
        pushed = local != remote
        if pushed:
            out = git(
                "push", "-q", "origin", f"refs/heads/{branch}:refs/heads/{branch}", cwd=mirror, check=False
            )
            if out.returncode != 0:
                raise GitError(
                    f"push of {branch} to {repo.owner}/{repo.repo} was refused: "
                    f"{(out.stderr or out.stdout).strip()[-300:]}"
                )
        git("update-ref", self._published_ref(branch), local, cwd=mirror)
        pr = self._open_pr(task, repo)
        return {"pushed": pushed, "head": local, "pr": pr.number, "url": pr.html_url}

    def _find_pr(self, task: Task, repo: GiteaRepo) -> PullRequest | None:
        """The task's latest pull request, any state; None when it never had one."""
        base, head = repo.default_branch, self.branch(task)
        pr = self.client.pr_by_branches(repo.owner, repo.repo, base, head)
        if pr is None or pr.state == "open" or pr.merged:
            return pr
        # Closed without a merge: Gitea's base/head look-up has no state filter and answers
        # with the first pull request it finds; a newer one may have been opened since.
        return self.client.newest_pr(repo.owner, repo.repo, base, head) or pr

    def _open_pr(self, task: Task, repo: GiteaRepo) -> PullRequest:
        """The task's open (or merged) pull request; opened now when there is none.

        A pull request someone closed without merging is never reused (merging or probing
        it would act on a dead PR): a new one is opened from the same branch.
        """
        pr = self._find_pr(task, repo)
        if pr is not None and (pr.state == "open" or pr.merged):
            return pr
        if pr is not None:
            log.warning("gitea_pr_closed", task=task.key, pr=pr.number, action="opening a new pull request")
        opened = self.client.create_pr(
            repo.owner,
            repo.repo,
            base=repo.default_branch,
            head=self.branch(task),
            title=f"{task.key}: {task.title}"[:255],
            body=f"Opened by orch for {task.key}.",
        )
        if opened.state != "open" and not opened.merged:
            # create_pr's 409 path found only the closed one: Gitea says an open one exists.
            newest = self.client.newest_pr(repo.owner, repo.repo, repo.default_branch, self.branch(task))
            if newest is None or (newest.state != "open" and not newest.merged):
                raise RetryLater(
                    f"Gitea says an open pull request from {self.branch(task)} exists but lists "
                    f"only closed ones (#{opened.number}): try again shortly",
                    delay=60,
                )
            opened = newest
        return opened

    # -- heads and CI ------------------------------------------------------------------------

    def branch_head(self, task: Task) -> str | None:
        """The branch's sha on the server (`git ls-remote`), None when it was never pushed."""
        repo = self._repo(task)
        branch = self.branch(task)
        if self._snapshot is not None:
            if repo.name not in self._snapshot:
                self._snapshot[repo.name] = self._heads(repo, "refs/heads/orch/*")
            return self._snapshot[repo.name].get(branch)
        return self._heads(repo, f"refs/heads/{branch}").get(branch)

    def _heads(self, repo: GiteaRepo, pattern: str) -> dict[str, str]:
        """Branch name -> sha on the server for the refs `pattern` names (one round trip)."""
        out = git("ls-remote", "origin", pattern, cwd=self._mirror(repo))
        heads = {}
        for line in out.stdout.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read every task branch's head on the server once per repository (one
        `git ls-remote`) for a pass over many tasks: a status webhook looking for the task
        whose head is a sha, or the reconciler. Only for read-only passes."""
        self._snapshot = {}
        try:
            yield
        finally:
            self._snapshot = None

    def branch_ahead(self, task: Task) -> bool:
        head = self.branch_head(task)
        if head is None:
            return False
        repo = self._repo(task)
        mirror = self._mirror(repo)
        self._fetch(mirror)
        out = git(
            "rev-list", "--count", f"{self._tracking(repo.default_branch)}..{head}", cwd=mirror, check=False
        )
        return out.returncode == 0 and int(out.stdout.strip() or 0) > 0

    def ci_status(self, task: Task, sha: str) -> tuple[str | None, dict[str, Any]]:
        repo = self._repo(task)
        combined = self.client.combined_status(repo.owner, repo.repo, sha)
        if combined.state is None:
            return None, {}
        ev: dict[str, Any] = {"statuses": {s.context: s.state for s in combined.statuses}}
        urls = {s.context: s.target_url for s in combined.statuses if s.target_url}
        if urls:
            ev["target_urls"] = urls
        return combined.state, ev

    def request_ci(self, task: Task, sha: str) -> None:
        """Nothing to do: Gitea starts CI on every push, the rebased head included."""

    # -- rebase and merge --------------------------------------------------------------------

    def rebase(self, task: Task) -> dict[str, Any]:
        """Have Gitea rebase the pull request onto the default branch, if it is behind."""
        repo = self._repo(task)
        branch = self.branch(task)
        head = self.branch_head(task)
        if head is None:
            raise EffectFailed(f"nothing to rebase: {branch} is not on {repo.owner}/{repo.repo}")
        mirror = self._mirror(repo)
        self._fetch(mirror)
        base = self._rev(mirror, self._tracking(repo.default_branch))
        if base is not None and self._is_ancestor(mirror, base, head):
            return {"rebased": False, "head": head, "onto": base}  # up to date: a no-op, no new CI
        pr = self._open_pr(task, repo)
        try:
            self.client.update_branch(repo.owner, repo.repo, pr.number, style="rebase")
        except MergeConflict as e:
            raise EffectFailed(f"rebase of {branch} onto {repo.default_branch} conflicts: {e}") from None
        except NotReady as e:  # 422: merged or closed meanwhile
            raise EffectFailed(f"rebase of {branch} refused: {e}") from None
        after = self.branch_head(task)
        self._fetch(mirror)
        self._sync(mirror, self._worktree_if_any(task), branch)
        return {"rebased": after != head, "head": after, "onto": base, "was": head, "pr": pr.number}

    def merge(self, task: Task, *, before_update: Callable[[], None] | None = None) -> dict[str, Any]:
        """Merge the pull request at the current head; a merged one is left alone."""
        repo = self._repo(task)
        branch = self.branch(task)
        head = self.branch_head(task)
        if head is None:
            raise EffectFailed(f"nothing to merge: {branch} is not on {repo.owner}/{repo.repo}")
        pr = self._find_pr(task, repo)
        if pr is not None and pr.merged:
            return {"merged": pr.head_sha, "pr": pr.number, "already": True}
        mirror = self._mirror(repo)
        self._fetch(mirror)
        base = self._rev(mirror, self._tracking(repo.default_branch))
        if base is not None and self._is_ancestor(mirror, head, base):
            return {"merged": head, "previous": base, "already": True}  # as the local forge: no-op
        if base is None or not self._is_ancestor(mirror, base, head):
            raise BranchBehind(f"{branch} is not on top of {repo.default_branch}: rebase first")
        pr = self._open_pr(task, repo)
        if pr.head_sha != head:
            # Gitea moves a pull request's head after a push asynchronously; merging now
            # would be refused as "head moved" although nothing did.
            raise Busy(
                f"{repo.owner}/{repo.repo}#{pr.number} still shows head {pr.head_sha[:10]}, "
                f"the branch is at {head[:10]}: try again shortly"
            )
        if before_update is not None:
            before_update()  # the merge request is the point of no return
        try:
            self.client.merge_pr(repo.owner, repo.repo, pr.number, head_sha=head, style=self.merge_style)
        except (NotReady, Busy) as e:  # 405 not yet / 409 head moved or conflict
            now = self.client.get_pr(repo.owner, repo.repo, pr.number)
            if now.merged:
                return {"merged": head, "pr": pr.number, "already": True}
            # The branch is on top of the default branch (checked above), so it cannot
            # conflict: `mergeable: false` is Gitea's conflict check still running (newer
            # servers start it only when the PR is viewed, which get_pr just did). The
            # next tick tries again and re-checks CI on whatever the head is then.
            why = " (Gitea is still checking it)" if now.mergeable is False else ""
            raise RetryLater(f"merge of {branch} not possible yet{why}: {e}", delay=_CHECK_RETRY_S) from None
        # MergeRefused (a permanent 405) goes up as it is: the task is blocked with the reason.
        done = self.client.get_pr(repo.owner, repo.repo, pr.number)
        return {"merged": head, "previous": base, "pr": pr.number, "merge_commit": done.merge_commit_sha}

    def is_merged(self, task: Task) -> bool:
        """The probe for an interrupted merge: Gitea's own word, the pull request's flag."""
        pr = self._find_pr(task, self._repo(task))
        return pr is not None and pr.merged
