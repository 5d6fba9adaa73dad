"""Gitea's REST API for what orch needs from a forge: commit statuses, pull requests, merge.

Gitea answers the interesting cases of a merge with plain status codes, and orch's
exception tree already has a meaning for each: 405 (not mergeable yet, checks running,
already merged) is `NotReady`; 409 (the head moved or the branches conflict) is `Busy`,
"someone else got there, look again"; a missing pull request is an `IntegrationError`.
Updating a branch that no longer rebases cleanly is `MergeConflict`, a `Busy` a caller can
tell apart. The server's own words go into each message.

A merge is sent with `head_commit_id`, so Gitea refuses it when the branch moved after our
checks ran; and it is never resent after a 5xx or a read timeout, because the first one may
have merged: probe with `get_pr` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

import httpx

from orch.adapters.http import DEFAULT_POLICY, DEFAULT_TIMEOUT, HttpCaller, RetryPolicy
from orch.errors import Busy, NotReady, UsageError

MergeStyle = Literal["merge", "rebase", "rebase-merge", "squash", "fast-forward-only"]
UpdateStyle = Literal["rebase", "merge"]
_MERGE_STYLES = frozenset({"merge", "rebase", "rebase-merge", "squash", "fast-forward-only"})


class MergeConflict(Busy):
    """The branch cannot be brought up to date without a person resolving a conflict."""

    exit_code = 4


class CommitStatus(NamedTuple):
    """One CI context's latest status on a commit."""

    context: str
    state: str  # pending | success | error | failure | warning | skipped
    target_url: str | None = None
    description: str | None = None


class CombinedStatus(NamedTuple):
    """The combined state of a ref (None when nothing reported), its statuses, the sha it resolved to."""

    state: str | None
    statuses: list[CommitStatus]
    sha: str


class PullRequest(NamedTuple):
    """The fields of a pull request orch reads. `number` is what the API paths call index."""

    number: int
    state: str  # open | closed
    merged: bool
    mergeable: bool | None
    head_branch: str
    head_sha: str
    base_branch: str
    title: str = ""
    html_url: str | None = None
    merge_commit_sha: str | None = None


class GiteaClient:
    """A Gitea instance reached through `client` with a token (`Authorization: token ...`)."""

    def __init__(
        self,
        *,
        client: httpx.Client,
        base_url: str,
        token: str,
        policy: RetryPolicy = DEFAULT_POLICY,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        root = base_url.rstrip("/")
        if not root.endswith("/api/v1"):
            root += "/api/v1"
        self.base_url = root
        self._token = token
        self._http = HttpCaller(
            client=client, secrets=(token,), policy=policy, timeout=timeout, sleep=sleep, clock=clock
        )

    def __repr__(self) -> str:
        return f"GiteaClient(base_url={self._http.redact(self.base_url)!r})"

    def _repo_url(self, owner: str, repo: str, *segments: str) -> str:
        parts = [quote(owner, safe=""), quote(repo, safe=""), *segments]
        return f"{self.base_url}/repos/" + "/".join(parts)

    def _call(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        headers = {"Authorization": f"token {self._token}", "Accept": "application/json"}
        return self._http.request(method, url, headers=headers, params=params, json=json, accept=accept)

    def _object(self, response: httpx.Response) -> dict[str, Any]:
        data = self._http.json(response)
        if not isinstance(data, dict):
            raise self._http.error(response, note=f"expected a JSON object, got {type(data).__name__}")
        return data

    def _refusal(self, response: httpx.Response) -> str:
        return self._http.excerpt(response) or response.reason_phrase or str(response.status_code)

    # -- statuses ----------------------------------------------------------------------------

    def combined_status(self, owner: str, repo: str, ref: str) -> CombinedStatus:
        """The combined CI state of `ref` (a sha or a branch); state is None when no CI reported."""
        url = self._repo_url(owner, repo, "commits", quote(ref, safe=""), "status")
        response = self._call("GET", url)
        data = self._object(response)
        raw = data.get("statuses") or []
        if not isinstance(raw, list):
            raise self._http.error(response, note="`statuses` is not a list")
        statuses = [_status(s) for s in raw if isinstance(s, dict)]
        state = data.get("state")
        sha = data.get("sha")
        if not isinstance(sha, str) or not sha:
            raise self._http.error(response, note=f"combined status without a sha ({sha!r})")
        if not statuses or not isinstance(state, str) or not state:
            return CombinedStatus(None, statuses, sha)
        return CombinedStatus(state, statuses, sha)

    # -- pull requests -----------------------------------------------------------------------

    def pr_by_branches(self, owner: str, repo: str, base: str, head: str) -> PullRequest | None:
        """The pull request from `head` into `base`, or None when there is none."""
        # Gitea routes `/pulls/{base}/*`: the head may keep its slashes, the base may not.
        url = self._repo_url(owner, repo, "pulls", quote(base, safe=""), quote(head, safe="/"))
        response = self._call("GET", url, accept=(404,))
        if response.status_code == 404:
            return None
        return self._pr(response)

    def create_pr(
        self, owner: str, repo: str, *, base: str, head: str, title: str, body: str = ""
    ) -> PullRequest:
        """Open a pull request from `head` into `base`; when one is open already (409), that one."""
        url = self._repo_url(owner, repo, "pulls")
        payload = {"base": base, "head": head, "title": title, "body": body}
        # A POST is not resent after a 5xx or a read timeout; if that one did open the PR,
        # the next call gets 409 and returns it.
        response = self._call("POST", url, json=payload, accept=(409,))
        if response.status_code == 409:
            existing = self.pr_by_branches(owner, repo, base, head)
            if existing is None:
                raise self._http.error(response, note="409 but no pull request between these branches")
            return existing
        return self._pr(response)

    def get_pr(self, owner: str, repo: str, index: int) -> PullRequest:
        """One pull request; a missing one is an IntegrationError (we only ask for ones we opened)."""
        url = self._repo_url(owner, repo, "pulls", str(int(index)))
        return self._pr(self._call("GET", url))

    def merge_pr(
        self,
        owner: str,
        repo: str,
        index: int,
        *,
        head_sha: str,
        style: MergeStyle = "rebase",
        delete_branch: bool = False,
        message: str = "",
    ) -> None:
        """Merge if the head is still `head_sha`.

        Raises NotReady (405: not mergeable, checks running, already merged), Busy (409: the
        head moved or conflicts), IntegrationError (404: missing or closed; anything else).
        """
        if style not in _MERGE_STYLES:
            raise UsageError(f"unknown merge style {style!r}; one of {sorted(_MERGE_STYLES)}")
        if not head_sha:
            raise UsageError("merge_pr needs the head sha the checks ran on")
        url = self._repo_url(owner, repo, "pulls", str(int(index)), "merge")
        body = {
            "Do": style,
            "head_commit_id": head_sha,
            "delete_branch_after_merge": delete_branch,
            "MergeMessageField": message,
        }
        # Not idempotent: a merge that timed out may have happened. The caller probes.
        response = self._call("POST", url, json=body, accept=(405, 409))
        where = f"{owner}/{repo}#{index}"
        if response.status_code == 405:
            raise NotReady(f"Gitea will not merge {where} yet (405): {self._refusal(response)}")
        if response.status_code == 409:
            raise Busy(f"Gitea refused to merge {where} (409): {self._refusal(response)}")

    def update_branch(self, owner: str, repo: str, index: int, *, style: UpdateStyle = "rebase") -> None:
        """Bring the PR's head up to date with its base.

        Raises MergeConflict (409), NotReady (422: already merged or closed), IntegrationError.
        """
        if style not in ("rebase", "merge"):
            raise UsageError(f"unknown update style {style!r}; one of ['merge', 'rebase']")
        url = self._repo_url(owner, repo, "pulls", str(int(index)), "update")
        response = self._call("POST", url, params={"style": style}, accept=(409, 422))
        where = f"{owner}/{repo}#{index}"
        if response.status_code == 409:
            raise MergeConflict(f"updating {where} by {style} conflicts (409): {self._refusal(response)}")
        if response.status_code == 422:
            raise NotReady(f"{where} cannot be updated (422): {self._refusal(response)}")

    def _pr(self, response: httpx.Response) -> PullRequest:
        try:
            return parse_pull_request(self._object(response))
        except ValueError as exc:
            raise self._http.error(response, note=str(exc)) from None


# -- parsing -------------------------------------------------------------------------------


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _status(item: dict[str, Any]) -> CommitStatus:
    # The API keeps a status's state under `status`; webhooks and GitHub say `state`.
    state = item.get("status", item.get("state"))
    return CommitStatus(
        context=_text(item.get("context")),
        state=_text(state),
        target_url=_opt_str(item.get("target_url")),
        description=_opt_str(item.get("description")),
    )


def parse_pull_request(data: dict[str, Any]) -> PullRequest:
    """A PullRequest from Gitea's JSON; raises ValueError when an id has the wrong type."""
    number = data.get("number", data.get("index"))
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError(f"pull request number is {number!r}")
    head = _dict(data.get("head"))
    base = _dict(data.get("base"))
    head_sha = head.get("sha")
    if not isinstance(head_sha, str) or not head_sha:
        raise ValueError(f"pull request head sha is {head_sha!r}")
    mergeable = data.get("mergeable")
    return PullRequest(
        number=number,
        state=_text(data.get("state")),
        merged=data.get("merged") is True,
        mergeable=mergeable if isinstance(mergeable, bool) else None,
        head_branch=_text(head.get("ref")),
        head_sha=head_sha,
        base_branch=_text(base.get("ref")),
        title=_text(data.get("title")),
        html_url=_opt_str(data.get("html_url")),
        merge_commit_sha=_opt_str(data.get("merge_commit_sha")),
    )
