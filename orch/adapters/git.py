"""A thin wrapper over the git command line: argument lists only, never a shell."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from orch import secret_env
from orch.errors import IntegrationError

# Commits orch makes itself (rebases) need an identity even on a bare machine.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "orch",
    "GIT_AUTHOR_EMAIL": "orch@localhost",
    "GIT_COMMITTER_NAME": "orch",
    "GIT_COMMITTER_EMAIL": "orch@localhost",
}


class GitError(IntegrationError):
    """A git command failed."""


def git(*args: str, cwd: Path, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    # orch's secrets (docs/security.md), withheld from git as from every command orch starts:
    # git runs a repository's hooks and the commands its config names (filters, fsmonitor,
    # credential helpers), and an agent can write those in the repository it works in.
    env = {**_IDENTITY, **secret_env.inherited(), "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    if not cwd.is_dir():
        # The machine's state, not a git failure nor the agent's: say what is missing.
        why = f"directory {cwd} is missing (git {' '.join(args[:1])}): restore it or fix the path"
        if check:
            raise GitError(why)
        return subprocess.CompletedProcess(["git", *args], 128, "", why)
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (FileNotFoundError, NotADirectoryError):
        # Popen reports a missing cwd and a missing program alike: tell them apart.
        if not Path(cwd).is_dir():
            raise GitError(f"{cwd}: no such directory (git {' '.join(args[:1])})") from None
        raise GitError("git is not installed (not found on PATH)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args[:2])} timed out after {timeout}s in {cwd}") from None
    if check and out.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip() or out.stdout.strip()}")
    return out


# Which worktree-administration locks this thread holds (a path -> depth): the lock is
# reentrant here, since flock on a second descriptor of one file would wait for ourselves.
# Per thread: two threads each open their own descriptor and exclude each other.
_admin = threading.local()
ADMIN_LOCK_WAIT_S = 300.0


@contextmanager
def worktree_admin(gitdir: Path) -> Iterator[None]:
    """Hold the repository's worktree-administration lock: one orch process at a time
    adds, prunes, lists or removes the worktrees of `gitdir` (a repository's common git dir).

    git's worktree commands are not safe against each other: a `prune` deletes the
    administrative directory an `add` is still creating, and a `list` fails on a
    half-written one; concurrent `git config` writers fail on `config.lock`. Runners
    starting jobs in one repository at once met these as failed jobs (attempts spent on
    orch's own contention). The lock is an flock, released by the kernel when its holder
    dies, so a killed process never leaves it held; its file is not named `*.lock`, so the
    stale-lock sweep never takes it for git's."""
    path = gitdir / "orch-worktrees.flock"
    held: dict[Path, int] = _admin.__dict__.setdefault("held", {})
    if path in held:
        held[path] += 1
        try:
            yield
        finally:
            held[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + ADMIN_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GitError(
                        f"{gitdir}: another orch process kept this repository's worktrees locked "
                        f"for {ADMIN_LOCK_WAIT_S:.0f} s"
                    ) from None
                time.sleep(0.02)
        held[path] = 1
        try:
            yield
        finally:
            del held[path]
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def init_repo(path: Path, *, branch: str = "main") -> None:
    """Create a repository with one commit on `branch` (used by `orch demo` and tests)."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", branch, cwd=path)
    git("config", "user.name", "orch demo", cwd=path)
    git("config", "user.email", "demo@orch.invalid", cwd=path)
    (path / "README.md").write_text("# demo\n")
    git("add", "README.md", cwd=path)
    git("commit", "-q", "-m", "initial commit", cwd=path)


def _git_writers(paths: list[Path]) -> list[int]:
    """Live git processes working in any of `paths` (their cwd lies inside one): the
    possible writers of a lock file there."""
    roots = [str(p.resolve()) for p in paths]
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
            if not comm.startswith("git"):
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue
        if any(cwd == r or cwd.startswith(r + os.sep) for r in roots):
            pids.append(int(entry.name))
    return pids


def stale_locks(gitdir: Path, worktrees: Callable[[], list[Path]], *, min_age_s: float = 2.0) -> list[Path]:
    """Lock files under `gitdir` (index.lock, HEAD.lock, refs/**.lock, worktrees/*/...)
    that a killed git left: none is stale while a git process works in the repository or
    one of its `worktrees` (it may be the writer), nor before `min_age_s` has passed
    since its last write with no git showing up. `worktrees` is asked only when there is
    a lock at all (the common case has none and costs no subprocess)."""

    locks: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(gitdir):
        if dirpath == str(gitdir):
            dirnames[:] = [d for d in dirnames if d not in ("objects", "logs", "hooks", "lfs")]
        locks.extend(Path(dirpath) / f for f in filenames if f.endswith(".lock"))
    if not locks:
        return []
    roots = [gitdir.parent, gitdir, *worktrees()]
    if _git_writers(roots):
        return []
    # No git works here now; a lock younger than min_age_s may still be a git that is only
    # starting: wait that long, then look again (a new git shows up as a writer).
    youngest = 0.0
    for lock in locks:
        with contextlib.suppress(FileNotFoundError):
            youngest = max(youngest, lock.stat().st_mtime)
    wait = youngest + min_age_s - time.time()
    if wait > 0:
        time.sleep(min(wait, min_age_s))
        if _git_writers(roots):
            return []
    return [lock for lock in locks if lock.exists()]


def clear_stale_locks(gitdir: Path, worktrees: Callable[[], list[Path]]) -> list[Path]:
    """Remove the lock files whose writer is dead (see `stale_locks`); returns them.

    A lock a live git holds is left alone: the git command that needs it then fails
    ("index.lock: File exists") and the caller tries later, nobody's fault."""
    removed = stale_locks(gitdir, worktrees)
    for lock in removed:
        lock.unlink(missing_ok=True)
    return removed


def in_progress(gitdir: Path) -> str | None:
    """An unfinished rebase, merge or cherry-pick in a (worktree's) git dir, by its marker."""
    for marker in ("rebase-merge", "rebase-apply", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD"):
        if (gitdir / marker).exists():
            return marker
    return None
