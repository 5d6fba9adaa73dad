"""`orch init`: a starter orch.toml written from what the repository says, not guesses.

The repository's name, its default branch (the remote's HEAD, else the branch checked
out) and its top level come from git; a directory that is not a git work tree is
refused. `.orch/` (the database, worktrees, logs) is added to the repository's
`info/exclude`, so orch's state never shows up in `git status`. The starter's deploy
is a harmless, reversible echo, so a fresh setup reads "ok" in `orch config check`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from orch.adapters.git import GitError, git
from orch.errors import UsageError
from orch.names import safe_name

HEADER = "# orch configuration. Every key, with its default, is in orch.toml.example.\n"

# Reversible and harmless: a fresh init has nothing to deploy and must not warn about a
# missing probe. Replace it with the real deploy command (and a probe) when there is one.
STARTER_DEPLOY = {
    "type": "command",
    "command": "echo 'no deploy configured: set [effects.deploy] command in orch.toml'",
    "irreversible": False,
}


class RepoFacts(NamedTuple):
    top: Path
    name: str
    default_branch: str
    exclude: Path


def inspect_repo(path: Path) -> RepoFacts:
    """What git says about the repository at `path`; UsageError (exit 2) if there is none."""
    if not path.exists():
        raise UsageError(f"{path}: no such directory (pass --repo PATH to a git repository)")
    if not path.is_dir():
        raise UsageError(f"{path}: not a directory (pass --repo PATH to a git repository)")
    try:
        top = Path(git("rev-parse", "--show-toplevel", cwd=path).stdout.strip())
    except GitError:
        raise UsageError(
            f"{path.resolve()} is not inside a git repository (run `git init` there first, "
            "or pass --repo PATH)"
        ) from None
    branch = ""
    origin = git("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD", cwd=top, check=False)
    if origin.returncode == 0 and "/" in origin.stdout.strip():
        branch = origin.stdout.strip().split("/", 1)[1]
    if not branch:
        head = git("symbolic-ref", "--quiet", "--short", "HEAD", cwd=top, check=False)
        branch = head.stdout.strip() if head.returncode == 0 else ""
    if not branch:
        raise UsageError(f"{top}: HEAD is detached; check out the branch tasks merge into, then run init")
    exclude = git("rev-parse", "--git-path", "info/exclude", cwd=top).stdout.strip()
    return RepoFacts(top, safe_name(top.name), branch, (top / exclude).resolve())


def starter(facts: RepoFacts, config_dir: Path) -> dict[str, object]:
    """The starter configuration; the repository path is relative to the config file."""
    rel = os.path.relpath(facts.top, config_dir.resolve())
    return {
        "transition_lease": {"enabled": True},
        "tracker": {"kind": "local", "key_prefix": "ORCH"},
        "repos": {facts.name: {"path": rel, "default_branch": facts.default_branch}},
        "effects": {"deploy": dict(STARTER_DEPLOY)},
    }


def exclude_state(facts: RepoFacts, state_dir: Path) -> str | None:
    """Add orch's state directory to the repository's info/exclude; the line added, or None."""
    try:
        rel = state_dir.resolve().relative_to(facts.top.resolve())
    except ValueError:
        return None  # the state lives outside the work tree: nothing to hide
    line = f"/{rel.as_posix()}/"
    existing = facts.exclude.read_text(encoding="utf-8").splitlines() if facts.exclude.exists() else []
    if line in existing or f"{rel.as_posix()}/" in existing or rel.as_posix() in existing:
        return None
    facts.exclude.parent.mkdir(parents=True, exist_ok=True)
    with facts.exclude.open("a", encoding="utf-8") as f:
        if existing and existing[-1] != "":
            f.write("\n")
        f.write(f"# orch's database, worktrees and logs\n{line}\n")
    return line
