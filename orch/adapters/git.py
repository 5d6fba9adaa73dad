"""A thin wrapper over the git command line: argument lists only, never a shell."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
    env = {**_IDENTITY, **os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
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
    except FileNotFoundError:
        raise GitError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args[:2])} timed out after {timeout}s in {cwd}") from None
    if check and out.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip() or out.stdout.strip()}")
    return out


def init_repo(path: Path, *, branch: str = "main") -> None:
    """Create a repository with one commit on `branch` (used by `orch demo` and tests)."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", branch, cwd=path)
    git("config", "user.name", "orch demo", cwd=path)
    git("config", "user.email", "demo@orch.invalid", cwd=path)
    (path / "README.md").write_text("# demo\n")
    git("add", "README.md", cwd=path)
    git("commit", "-q", "-m", "initial commit", cwd=path)
