"""A fake Gitea whose repositories are real bare git repositories on disk.

`GitGitea` is `FakeGitea` (same HTTP plumbing, auth, recording, faults, status store and
routes) with the branches read from a bare repository per owner/repo, so what a forge
adapter sees is what git did: a push lands in the bare repository, `update` is a real
rebase (or merge) of the head onto the base in a scratch clone, force-pushed back, and a
merge really moves the base branch (rebase + fast-forward, fast-forward only, a merge
commit or a squash). The clone URL is the bare repository's path. It adds the route for
opening a pull request (`POST /repos/{o}/{r}/pulls`); statuses are set from Python with
`add_status`, as on `FakeGitea`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fakes.servers import PR_KNOBS, FakeGitea, Recorded, Reply

_ENV = {
    "GIT_AUTHOR_NAME": "Fake Gitea",
    "GIT_AUTHOR_EMAIL": "gitea@fake.invalid",
    "GIT_COMMITTER_NAME": "Fake Gitea",
    "GIT_COMMITTER_EMAIL": "gitea@fake.invalid",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}


def run_git(
    *args: str, cwd: Path, check: bool = True, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        env={**os.environ, **_ENV, **(env or {})},
        capture_output=True,
        text=True,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        timeout=60,
    )
    if check and out.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip() or out.stdout.strip()}"
        )
    return out


class Branches(Mapping[str, str]):
    """A bare repository's branches as a read-only mapping name -> sha, read live from git."""

    def __init__(self, path: Path):
        self.path = path

    def __getitem__(self, name: str) -> str:
        out = run_git(
            "rev-parse", "--verify", "-q", f"refs/heads/{name}^{{commit}}", cwd=self.path, check=False
        )
        if out.returncode != 0:
            raise KeyError(name)
        return out.stdout.strip()

    def __iter__(self) -> Iterator[str]:
        out = run_git("for-each-ref", "--format=%(refname:lstrip=2)", "refs/heads", cwd=self.path)
        return iter(out.stdout.split())

    def __len__(self) -> int:
        return sum(1 for _ in self)


class GitGitea(FakeGitea):
    """FakeGitea over real bare repositories under `root`."""

    def __init__(self, root: Path, **kw: Any):
        super().__init__(**kw)
        self.root = root
        (root / "scratch").mkdir(parents=True, exist_ok=True)

    # -- repositories --------------------------------------------------------------------------

    def add_repo(self, owner: str, repo: str, *, main_sha: str | None = None) -> None:
        """A bare repository `owner/repo.git` with one commit (README.md) on main."""
        if main_sha is not None:
            raise ValueError("GitGitea makes real commits; main_sha cannot be chosen")
        path = self.root / "repos" / owner / f"{repo}.git"
        path.mkdir(parents=True)
        run_git("init", "-q", "--bare", "-b", "main", str(path), cwd=self.root)
        with self.lock:
            self.repos[f"{owner}/{repo}"] = {
                "path": path,
                "branches": Branches(path),
                "statuses": {},
                "pulls": {},
            }
        self.commit(owner, repo, "main", {"README.md": "# app\n"}, "initial commit")

    def clone_url(self, owner: str, repo: str) -> str:
        return str(self.repos[f"{owner}/{repo}"]["path"])

    def head(self, owner: str, repo: str, branch: str) -> str | None:
        with self.lock:
            return self.repos[f"{owner}/{repo}"]["branches"].get(branch)

    def commit(self, owner: str, repo: str, branch: str, files: Mapping[str, str], message: str) -> str:
        """Commit `files` onto `branch` (created from main if new), as a push would; its sha.

        Plumbing on the bare repository with a scratch index: no clone, so it is cheap.
        """
        with self.lock:
            path: Path = self.repos[f"{owner}/{repo}"]["path"]
            branches = self.repos[f"{owner}/{repo}"]["branches"]
            old = branches.get(branch)
            parent = old or branches.get("main")
            index = Path(tempfile.mkdtemp(dir=self.root / "scratch")) / "index"
            env = {"GIT_INDEX_FILE": str(index)}
            try:
                if parent:
                    run_git("read-tree", parent, cwd=path, env=env)
                for name, text in files.items():
                    blob = run_git("hash-object", "-w", "--stdin", cwd=path, stdin=text).stdout.strip()
                    run_git(
                        "update-index", "--add", "--cacheinfo", f"100644,{blob},{name}", cwd=path, env=env
                    )
                tree = run_git("write-tree", cwd=path, env=env).stdout.strip()
            finally:
                shutil.rmtree(index.parent, ignore_errors=True)
            args = ["commit-tree", tree, "-m", message, *(["-p", parent] if parent else [])]
            sha = run_git(*args, cwd=path).stdout.strip()
            # Compare-and-swap, as receive-pack does: a ref that moved meanwhile is an error.
            run_git("update-ref", f"refs/heads/{branch}", sha, old or "0" * 40, cwd=path)
            return sha

    @contextmanager
    def _scratch(self, repo: dict[str, Any]) -> Iterator[Path]:
        """A throwaway clone of the bare repository (shared objects: cheap)."""
        work = Path(tempfile.mkdtemp(dir=self.root / "scratch"))
        try:
            run_git("clone", "-q", "--shared", "--no-checkout", str(repo["path"]), str(work), cwd=self.root)
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- routes --------------------------------------------------------------------------------

    def route(self, req: Recorded) -> Reply:
        parts = req.segments()
        if (
            req.method == "POST"
            and len(parts) == 6
            and parts[:3] == ["api", "v1", "repos"]
            and parts[5] == "pulls"
        ):
            if req.headers.get("authorization") != f"token {self.token}":
                return Reply(401, {"message": "token is required"})
            repo = self.repos.get(f"{parts[3]}/{parts[4]}")
            if repo is None:
                return Reply(404, {"message": "The target couldn't be found.", "errors": []})
            return self._create(parts[3], parts[4], repo, req)
        return super().route(req)

    def _create(self, owner: str, name: str, repo: dict[str, Any], req: Recorded) -> Reply:
        data = req.json() or {}
        base, head, title = data.get("base"), data.get("head"), data.get("title")
        if not isinstance(base, str) or not isinstance(head, str) or not base or not head:
            return Reply(422, {"message": "[Base, Head]: Required"})
        if not title:
            return Reply(422, {"message": "[Title]: Required"})
        if base not in repo["branches"] or head not in repo["branches"]:
            return Reply(404, {"message": "The target couldn't be found.", "errors": []})
        if base == head:
            return Reply(
                422, {"message": "Invalid PullRequest: There are no changes between the head and the base"}
            )
        for pr in repo["pulls"].values():
            if pr["state"] == "open" and pr["base"]["ref"] == base and pr["head"]["ref"] == head:
                return Reply(
                    409,
                    {"message": f"pull request already exists for these targets [id: {pr['number']}]"},
                )
        index = len(repo["pulls"]) + 1
        pr = {
            "number": index,
            "title": title,
            "body": data.get("body") or "",
            "state": "open",
            "merged": False,
            "mergeable": True,
            "html_url": f"http://gitea.invalid/{owner}/{name}/pulls/{index}",
            "merge_commit_sha": None,
            "base": {"ref": base, "label": base},
            "head": {"ref": head, "label": head},
            **PR_KNOBS,
        }
        repo["pulls"][index] = pr
        return Reply(201, self._render(repo, pr))

    def _update(self, repo: dict[str, Any], pr: dict[str, Any] | None, req: Recorded) -> Reply:
        if pr is None:
            return Reply(404, {"message": "pull request does not exist", "errors": []})
        if pr["merged"] or pr["state"] == "closed":
            return Reply(422, {"message": "pull request is already merged or closed"})
        style = req.query.get("style", "merge")
        if style not in ("merge", "rebase"):
            return Reply(400, {"message": "unknown style"})
        if pr["conflict"]:
            return Reply(409, {"message": "rebase failed: conflict in app.py"})
        base, head = pr["base"]["ref"], pr["head"]["ref"]
        with self._scratch(repo) as work:
            run_git("checkout", "-q", "-B", head, f"origin/{head}", cwd=work)
            before = run_git("rev-parse", "HEAD", cwd=work).stdout.strip()
            if style == "rebase":
                out = run_git("rebase", "-q", f"origin/{base}", cwd=work, check=False)
            else:
                out = run_git("merge", "-q", "--no-edit", f"origin/{base}", cwd=work, check=False)
            if out.returncode != 0:
                files = run_git(
                    "diff", "--name-only", "--diff-filter=U", cwd=work, check=False
                ).stdout.split()
                run_git(style, "--abort", cwd=work, check=False)
                return Reply(409, {"message": f"{style} failed: conflict in {', '.join(files) or '?'}"})
            if run_git("rev-parse", "HEAD", cwd=work).stdout.strip() != before:
                run_git("push", "-q", "--force", "origin", f"HEAD:refs/heads/{head}", cwd=work)
        return Reply(200, None)

    def _merge(self, repo: dict[str, Any], pr: dict[str, Any] | None, req: Recorded) -> Reply:
        body = req.json() or {}
        refused = self._merge_refused(repo, pr, body)  # the style too: _refusal checks Do
        if refused is not None:
            return refused
        assert pr is not None
        style = body["Do"]
        base, head = pr["base"]["ref"], pr["head"]["ref"]
        with self._scratch(repo) as work:
            run_git("checkout", "-q", "-B", base, f"origin/{base}", cwd=work)
            if style in ("rebase", "rebase-merge"):
                run_git("checkout", "-q", "-B", "tmp-rebase", f"origin/{head}", cwd=work)
                if run_git("rebase", "-q", f"origin/{base}", cwd=work, check=False).returncode != 0:
                    run_git("rebase", "--abort", cwd=work, check=False)
                    return Reply(409, {"message": "Merge conflict: the head does not rebase onto the base"})
                run_git("checkout", "-q", base, cwd=work)
                flag = "--ff-only" if style == "rebase" else "--no-ff"
                run_git("merge", "-q", flag, "--no-edit", "tmp-rebase", cwd=work)
            elif style == "fast-forward-only":
                if run_git("merge", "-q", "--ff-only", f"origin/{head}", cwd=work, check=False).returncode:
                    return Reply(405, {"message": "Not allowed to merge: not a fast-forward"})
            elif style == "merge":
                if run_git(
                    "merge", "-q", "--no-ff", "--no-edit", f"origin/{head}", cwd=work, check=False
                ).returncode:
                    return Reply(409, {"message": "Merge conflict"})
            else:
                if run_git("merge", "-q", "--squash", f"origin/{head}", cwd=work, check=False).returncode:
                    return Reply(409, {"message": "Merge conflict"})
                run_git("commit", "-q", "-m", body.get("MergeMessageField") or pr["title"], cwd=work)
            run_git("push", "-q", "origin", f"{base}:refs/heads/{base}", cwd=work)
            merged_at = run_git("rev-parse", "HEAD", cwd=work).stdout.strip()
        pr["merged"], pr["state"], pr["merge_commit_sha"] = True, "closed", merged_at
        if body.get("delete_branch_after_merge"):
            pr["head_deleted"] = True  # the branch is kept: the PR's head sha is read from it
        return Reply(200, None)
