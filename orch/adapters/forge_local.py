"""The local forge: a real git repository on disk, no server.

A branch `orch/<key>` and a worktree under the workspace root per task. "Pushed" means
the branch has commits beyond the default branch. CI is the repo's configured command,
run in the task's worktree at the head, recorded in the DB as a commit status bound to
that sha. Merge is rebase-then-fast-forward, so the default branch stays linear; its
probe asks git whether the task's head is in the default branch already.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orch import log
from orch.adapters.git import GitError, clear_stale_locks, git, in_progress, worktree_admin
from orch.command_env import run_hook
from orch.config import Config, Repo
from orch.errors import BranchBehind, EffectFailed, UsageError
from orch.names import inside, safe_name
from orch.ports import Runner
from orch.store import Store, Task

CI_CONTEXT = "orch/ci"


class LocalForge:
    _snapshot: dict[str, dict[str, str]] | None = None

    def __init__(self, *, config: Config, store: Store, runner: Runner, clock: Any):
        self.config = config
        self.store = store
        self.runner = runner
        self.clock = clock
        self._gitdirs: dict[str, Path] = {}

    def _repo(self, task: Task) -> Repo:
        repo = self.config.repos.get(task.repo)
        if repo is None:
            raise UsageError(f"task {task.key}: repo {task.repo!r} is not configured")
        return repo

    def branch(self, task: Task) -> str:
        return f"orch/{safe_name(task.key)}"

    def worktree_path(self, task: Task) -> Path:
        root = self.config.workspace.root
        path = root / safe_name(task.repo) / safe_name(task.key)
        if not inside(path, root):
            raise UsageError(f"worktree {path} would lie outside {root}")
        return path

    def ensure_worktree(self, task: Task) -> Path:
        """The task's worktree, checked out on its branch; rebuilt if a killed git left it
        broken (no HEAD, HEAD all zeros, another branch, half registered)."""
        repo = self._repo(task)
        path = self.worktree_path(task)
        branch = self.branch(task)
        with worktree_admin(self._gitdir(repo)):
            self._clear_locks(repo)
            if (path / ".git").exists():
                if self._healthy(path, branch):
                    return path
                log.warning("worktree_rebuilt", task=task.key, path=str(path))
                self._drop_worktree(repo, path)
            elif path.exists() and any(path.iterdir()):
                self._drop_worktree(repo, path)  # files but no .git: an add killed half-way
            path.parent.mkdir(parents=True, exist_ok=True)
            git("worktree", "prune", cwd=repo.path)
            if self._rev(repo, f"refs/heads/{branch}"):
                git("worktree", "add", "-q", "-f", str(path), branch, cwd=repo.path)
            else:
                git("worktree", "add", "-q", "-b", branch, str(path), repo.default_branch, cwd=repo.path)
        if not self._hook("after_create", task, path):
            with worktree_admin(self._gitdir(repo)):
                git("worktree", "remove", "--force", str(path), cwd=repo.path, check=False)
            raise GitError(
                f"workspace hook after_create failed for {task.key} (log in {self._hook_log(task)})"
            )
        return path

    def _gitdir(self, repo: Repo) -> Path:
        if repo.name not in self._gitdirs:
            out = git("rev-parse", "--git-common-dir", cwd=repo.path).stdout.strip()
            self._gitdirs[repo.name] = (repo.path / out).resolve()
        return self._gitdirs[repo.name]

    def _clear_locks(self, repo: Repo) -> None:
        """Remove lock files a killed git left in the repository (never one a live git
        may hold: then a git command that needs it fails, and we try later)."""

        # Only this repository's places: a git working in another repository's worktree
        # under the same workspace root holds none of these locks, and counting it made a
        # lock stay for as long as any other repository was busy.
        def places() -> list[Path]:
            out = git("worktree", "list", "--porcelain", cwd=repo.path).stdout.splitlines()
            listed = [Path(ln.removeprefix("worktree ")) for ln in out if ln.startswith("worktree ")]
            return [self.config.workspace.root / safe_name(repo.name), *listed]

        with worktree_admin(self._gitdir(repo)):  # a `worktree list` fails on an add half-way
            removed = clear_stale_locks(self._gitdir(repo), places)
        if removed:
            log.warning("stale_git_locks_removed", repo=repo.name, locks=[str(p) for p in removed])

    def _healthy(self, path: Path, branch: str) -> bool:
        head = git("symbolic-ref", "-q", "HEAD", cwd=path, check=False)
        if head.returncode != 0 or head.stdout.strip() != f"refs/heads/{branch}":
            return False
        return git("rev-parse", "--verify", "-q", "HEAD^{commit}", cwd=path, check=False).returncode == 0

    def _drop_worktree(self, repo: Repo, path: Path) -> None:
        """Remove a worktree however broken: its files and its registration."""
        git("worktree", "remove", "-f", "-f", str(path), cwd=repo.path, check=False)
        shutil.rmtree(path, ignore_errors=True)
        admin = self._gitdir(repo) / "worktrees"
        if admin.is_dir():
            target = str(path / ".git")
            for d in admin.iterdir():
                try:
                    points = (d / "gitdir").read_text().strip()
                except OSError:
                    points = ""
                if points == target:  # only ours: another may be half-way through its add
                    shutil.rmtree(d, ignore_errors=True)
        git("worktree", "prune", cwd=repo.path, check=False)

    def _hook_log(self, task: Task) -> Path:
        return self.config.log_dir / f"hooks-{safe_name(task.key)}.log"

    def _hook(self, name: str, task: Task, path: Path) -> bool:
        out = run_hook(
            self.runner,
            self.config.workspace.hooks.get(name),
            name=name,
            task=task,
            branch=self.branch(task),
            cwd=path,
            log_path=self._hook_log(task),
            timeout_s=self.config.workspace.hook_timeout_s,
        )
        return out is None or out.state == "succeeded"

    def remove_worktree(self, task: Task) -> None:
        repo = self.config.repos.get(task.repo)
        path = self.worktree_path(task)
        if repo is None or not path.exists():
            return
        self._hook("before_remove", task, path)  # a failing hook is logged; removal goes on
        with worktree_admin(self._gitdir(repo)):
            if git("worktree", "remove", "-f", "-f", str(path), cwd=repo.path, check=False).returncode:
                self._drop_worktree(repo, path)

    def _rev(self, repo: Repo, ref: str) -> str | None:
        out = git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}", cwd=repo.path, check=False)
        return out.stdout.strip() if out.returncode == 0 else None

    def branch_head(self, task: Task) -> str | None:
        repo = self._repo(task)
        if self._snapshot is not None:
            if repo.name not in self._snapshot:
                self._snapshot[repo.name] = self._heads(repo)
            return self._snapshot[repo.name].get(self.branch(task))
        return self._rev(repo, f"refs/heads/{self.branch(task)}")

    def _heads(self, repo: Repo) -> dict[str, str]:
        out = git(
            "for-each-ref", "--format=%(objectname) %(refname:short)", "refs/heads/orch/", cwd=repo.path
        )
        heads = {}
        for line in out.stdout.splitlines():
            sha, _, name = line.partition(" ")
            heads[name] = sha
        return heads

    def publish(self, task: Task) -> dict[str, Any]:
        """Nothing to do: the branch is in the repository the merge reads from."""
        return {"pushed": False, "head": None, "why": "the local forge has nothing to publish"}

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read every task branch's head once (one `git for-each-ref` per repository) for a
        pass over many tasks, such as the reconciler's: 600 quiet tasks cost one
        subprocess instead of 600. Only for read-only passes: inside it, heads do not move."""
        self._snapshot = {}
        try:
            yield
        finally:
            self._snapshot = None

    def branch_ahead(self, task: Task) -> bool:
        repo = self._repo(task)
        out = git(
            "rev-list",
            "--count",
            f"{repo.default_branch}..refs/heads/{self.branch(task)}",
            cwd=repo.path,
            check=False,
        )
        return out.returncode == 0 and int(out.stdout.strip() or 0) > 0

    def ci_status(self, task: Task, sha: str) -> tuple[str | None, dict[str, Any]]:
        statuses = self.store.commit_statuses(task.repo, sha)
        if not statuses:
            return None, {}
        states = {s for _, s, _ in statuses}
        ev = {"statuses": {c: s for c, s, _ in statuses}}
        for bad in ("failure", "error", "pending"):
            if bad in states:
                return bad, ev
        return "success", ev

    def request_ci(self, task: Task, sha: str) -> None:
        """Run the repo's CI command at `sha` in the task's worktree; record the status."""
        repo = self._repo(task)
        if repo.ci is None:
            self.store.set_commit_status(
                repo=repo.name,
                sha=sha,
                context=CI_CONTEXT,
                state="success",
                description="no CI configured",
                now=self.clock(),
            )
            return
        wt = self.ensure_worktree(task)
        current = git("rev-parse", "HEAD", cwd=wt).stdout.strip()
        if current != sha:
            self.store.set_commit_status(
                repo=repo.name,
                sha=sha,
                context=CI_CONTEXT,
                state="error",
                description=f"worktree is at {current[:10]}",
                now=self.clock(),
            )
            return
        log = self.config.log_dir / f"ci-{safe_name(task.key)}-{sha[:12]}.log"
        out = self.runner.run(
            repo.ci,
            cwd=wt,
            env={"ORCH_CI_SHA": sha, "ORCH_TASK_KEY": task.key},
            log_path=log,
            timeout_s=repo.ci_timeout_s,
        )
        self.store.set_commit_status(
            repo=repo.name,
            sha=sha,
            context=CI_CONTEXT,
            state="success" if out.state == "succeeded" else "failure",
            description=f"{out.reason} (log {log})",
            now=self.clock(),
        )

    def rebase(self, task: Task) -> dict[str, Any]:
        """Rebase the task's branch onto the default branch in its worktree.

        Safe against a kill at any instant: git moves the branch only when the rebase
        has finished, so a rebase found unfinished is aborted and done again.
        """
        repo = self._repo(task)
        wt = self.ensure_worktree(task)
        self._clean_worktree(wt)
        before = self.branch_head(task)
        base = self._rev(repo, f"refs/heads/{repo.default_branch}")
        if (
            before
            and base
            and git("merge-base", "--is-ancestor", base, before, cwd=wt, check=False).returncode == 0
        ):
            return {
                "rebased": False,
                "head": before,
                "onto": base,
            }  # up to date: a no-op, no new CI
        assert base is not None
        out = git("rebase", "-q", base, cwd=wt, check=False)
        if out.returncode != 0:
            conflicted = git("diff", "--name-only", "--diff-filter=U", cwd=wt, check=False).stdout.split()
            git("rebase", "--abort", cwd=wt, check=False)
            text = (out.stdout + out.stderr).strip()[-500:]
            if conflicted or "CONFLICT" in text:
                raise EffectFailed(
                    f"rebase of {self.branch(task)} onto {repo.default_branch} conflicts: {text}"
                )
            raise GitError(f"rebase of {self.branch(task)} could not run (not a conflict): {text}")
        return {"rebased": True, "head": self.branch_head(task), "onto": base, "was": before}

    def _clean_worktree(self, wt: Path) -> None:
        """What a killed git left in a task worktree at merge time: an unfinished rebase is
        aborted (the branch is still where it was), stray changes are dropped (the work
        is in the branch's commits; the worktree is orch's)."""
        gitdir = Path(git("rev-parse", "--absolute-git-dir", cwd=wt).stdout.strip())
        if in_progress(gitdir):
            if git("rebase", "--abort", cwd=wt, check=False).returncode != 0:
                git("merge", "--abort", cwd=wt, check=False)
            for marker in ("rebase-merge", "rebase-apply"):
                shutil.rmtree(gitdir / marker, ignore_errors=True)
        if git("status", "--porcelain", cwd=wt).stdout.strip():
            git("reset", "-q", "--hard", "HEAD", cwd=wt)
            git("clean", "-q", "-fd", cwd=wt)

    def merge(self, task: Task, *, before_update: Callable[[], None] | None = None) -> dict[str, Any]:
        """Move the default branch from its old head to the task's head, a compare-and-swap
        on the ref (`git update-ref new old`) that no working tree takes part in: nobody's
        checkout, dirty or not, can fail it. The checkout of the default branch, if any,
        then follows on a best-effort basis."""
        repo = self._repo(task)
        self._tidy(repo)
        head = self.branch_head(task)
        base = self._rev(repo, f"refs/heads/{repo.default_branch}")
        if head is None or base is None:
            raise EffectFailed(
                f"nothing to merge: branch {self.branch(task)} or {repo.default_branch} missing"
            )
        if git("merge-base", "--is-ancestor", head, base, cwd=repo.path, check=False).returncode == 0:
            return {"merged": head, "previous": base, "already": True}
        if git("merge-base", "--is-ancestor", base, head, cwd=repo.path, check=False).returncode != 0:
            raise BranchBehind(f"{self.branch(task)} is not on top of {repo.default_branch}: rebase first")
        if before_update is not None:
            before_update()
        checkout = self._checkout(repo)
        if checkout is not None:
            self._plan_follow(checkout, head)
        try:
            ref = f"refs/heads/{repo.default_branch}"
            git("update-ref", "-m", f"orch: merge {task.key}", ref, head, base, cwd=repo.path)
        except GitError:
            if self._rev(repo, f"refs/heads/{repo.default_branch}") != base:
                raise BranchBehind(
                    f"{repo.default_branch} moved while merging {self.branch(task)}: rebase first"
                ) from None
            raise
        finally:
            if checkout is not None:
                self._follow(repo, checkout)
        return {"merged": head, "previous": base}

    # The checkout of the default branch (the user's) follows a merge in three steps, each
    # recorded in `<gitdir>/orch-follow` so that a kill at any instant is finished by the
    # next actor (`_tidy`): "planned TREE NEW" before the ref moves (TREE: what its index
    # holds), "writing TREE NEW" while files change, no file once done.

    def _checkout(self, repo: Repo) -> Path | None:
        return self._worktree_of(repo, repo.default_branch)

    def _marker(self, checkout: Path) -> Path:
        return Path(git("rev-parse", "--absolute-git-dir", cwd=checkout).stdout.strip()) / "orch-follow"

    def _plan_follow(self, checkout: Path, new: str) -> None:
        try:
            tree = git("write-tree", cwd=checkout).stdout.strip()  # what the index holds
        except GitError:
            return  # an index with conflicts: the user is mid-merge there; leave it be
        self._marker(checkout).write_text(f"planned {tree} {new}\n")

    def _follow(self, repo: Repo, checkout: Path) -> None:
        """Bring the checkout to where its plan says, keeping its local changes; if they
        are in the way, leave it and say so. Never fails the merge.

        `git read-tree -m -u` checks every path before it writes any file, so a refusal
        changes nothing; a kill while it writes is finished by `_finish_follow`."""
        marker = self._marker(checkout)
        try:
            phase, tree, new = marker.read_text().split()
        except (OSError, ValueError):
            marker.unlink(missing_ok=True)
            return
        try:
            if phase == "writing":
                self._finish_follow(checkout, tree, new)
            elif self._rev(repo, f"refs/heads/{repo.default_branch}") == new:
                marker.write_text(f"writing {tree} {new}\n")
                git("read-tree", "-m", "-u", tree, new, cwd=checkout)
        except GitError as e:
            if ".lock" in str(e):  # a git works there now: leave the plan to the next actor
                return
            log.warning(
                "checkout_not_updated",
                path=str(checkout),
                branch=repo.default_branch,
                merged=new,
                error=str(e)[-300:],
                fix="git stash && git reset --hard && git stash pop",
            )
        marker.unlink(missing_ok=True)

    def _finish_follow(self, checkout: Path, tree: str, new: str) -> None:
        """Finish an update of the checkout that a kill interrupted: the paths it changes
        had no local changes (read-tree checked them all before writing any)."""
        diff = git("diff", "--name-status", "--no-renames", "-z", tree, new, cwd=checkout)
        changed = diff.stdout.split("\0")
        pairs = list(zip(changed[0::2], changed[1::2], strict=False))
        present = [p for st, p in pairs if st != "D"]
        gone = [p for st, p in pairs if st == "D"]
        for i in range(0, len(present), 200):
            git("checkout", new, "--", *present[i : i + 200], cwd=checkout)
        for i in range(0, len(gone), 200):
            git("rm", "-q", "--cached", "--ignore-unmatch", "--", *gone[i : i + 200], cwd=checkout)
            for p in gone[i : i + 200]:
                (checkout / p).unlink(missing_ok=True)

    def _tidy(self, repo: Repo) -> None:
        """What a killed orch left in the repository: stale locks, a checkout half-way
        through following a merge."""
        self._clear_locks(repo)
        checkout = self._checkout(repo)
        if checkout is not None and self._marker(checkout).exists():
            self._follow(repo, checkout)

    def is_merged(self, task: Task) -> bool:
        repo = self._repo(task)
        self._tidy(repo)  # the probe runs after a death: leave the repository as it should be
        head = self.branch_head(task)
        if head is None:
            return False
        return (
            git(
                "merge-base",
                "--is-ancestor",
                head,
                f"refs/heads/{repo.default_branch}",
                cwd=repo.path,
                check=False,
            ).returncode
            == 0
        )

    def _worktree_of(self, repo: Repo, branch: str) -> Path | None:
        with worktree_admin(self._gitdir(repo)):  # as every worktree command: see worktree_admin
            out = git("worktree", "list", "--porcelain", cwd=repo.path).stdout
        path: str | None = None
        for line in out.splitlines():
            if line.startswith("worktree "):
                path = line[len("worktree ") :]
            elif line == f"branch refs/heads/{branch}" and path and os.path.isdir(path):
                return Path(path)
        return None
