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
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

import httpx

from orch.adapters.http import DEFAULT_POLICY, DEFAULT_TIMEOUT, HttpCaller, RetryPolicy
from orch.errors import Busy, NotReady, PermanentFailure, UsageError

MergeStyle = Literal["merge", "rebase", "rebase-merge", "squash", "fast-forward-only"]
UpdateStyle = Literal["rebase", "merge"]
_MERGE_STYLES = frozenset({"merge", "rebase", "rebase-merge", "squash", "fast-forward-only"})


class MergeConflict(Busy):
    """The branch cannot be brought up to date without a person resolving a conflict."""

    exit_code = 4


class MergeRefused(PermanentFailure):
    """Gitea will not merge this pull request until a person changes something."""

    exit_code = 1


# What routers/api/v1/repo/pull.go (MergePullRequest) answers with 405, by its message, and
# whether waiting can change it. "Please try again later" (ErrNotMergeableState: the
# conflict check is running or found a conflict), a branch-protection "not ready" (checks
# or approvals still missing) and the empty message of an already merged PR are "not yet";
# these four need a person: the token's user may not merge, the repository forbids the
# merge style, the protected branch wants a signature Gitea will not make, and a
# work-in-progress title.
_PERMANENT_405 = (
    ("user not allowed to merge", "the token's user may not merge pull requests here: give it write access"),
    (
        "not allowed an allowed merge style",
        "the repository forbids this merge style: allow it in the repository settings or change "
        "[gitea] merge_style",
    ),
    (
        "wont sign",
        "the protected branch requires signed commits and Gitea will not sign this merge: "
        "configure Gitea's signing key or the branch rule",
    ),
    (
        "would not be signed",
        "the protected branch requires signed commits and Gitea will not sign this merge: "
        "configure Gitea's signing key or the branch rule",
    ),
    ("work in progress", "the pull request is marked work in progress: remove the WIP prefix from its title"),
)


def permanent_refusal(message: str) -> str | None:
    """Why a 405 from Gitea's merge endpoint will not go away by waiting, or None when it may."""
    folded = message.casefold()
    for needle, reason in _PERMANENT_405:
        if needle in folded:
            return reason
    return None


class CommitStatus(NamedTuple):
    """One CI context's latest status on a commit."""

    context: str
    state: str  # pending | success | error | failure | warning | skipped
    target_url: str | None = None
    description: str | None = None


class CombinedStatus(NamedTuple):
    """The combined state of a ref (None when nothing reported), its statuses, the sha it
    resolved to ("" when nothing reported: Gitea then sends an empty object)."""

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


_STATUS_LIMIT = 50  # Gitea's default MaxResponseItems: a larger limit is cut to it anyway
_MAX_STATUS_PAGES = 20  # 1,000 statuses on one commit: a server that keeps paging is broken
_MAX_PR_PAGES = 10  # 500 pull requests back: older than that, the task's PR is long gone

# Gitea's order when it combines statuses (modules/structs commit_status.go): the worst wins.
# `skipped` (newer servers) counts as success, an unknown state as error.
_STATE_RANK = {"error": 0, "failure": 1, "warning": 2, "pending": 3, "success": 4, "skipped": 5}


def combine_states(states: Iterable[str]) -> str | None:
    """The combined state of several statuses, as Gitea computes it; None for no status.

    `skipped` alone reads as success; a state orch does not know reads as error.
    """
    worst: str | None = None
    for state in states:
        state = state if state in _STATE_RANK else "error"
        if worst is None or _STATE_RANK[state] < _STATE_RANK[worst]:
            worst = state
    return "success" if worst == "skipped" else worst


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name, "")
    return int(value) if value.isdigit() else None


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
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("message") == "":
            # ErrHasMerged is answered with an empty message (pull.go).
            return "no message (Gitea says nothing when the pull request is already merged)"
        return self._http.excerpt(response) or response.reason_phrase or str(response.status_code)

    # -- statuses ----------------------------------------------------------------------------

    def combined_status(self, owner: str, repo: str, ref: str) -> CombinedStatus:
        """The combined CI state of `ref` (a sha or a branch); state is None when no CI reported.

        Gitea combines only the page it returns (30 statuses unless `limit` says more, at most
        50 by default), so every page is read and the state is combined here, by Gitea's own
        order (error, failure, warning, pending, success). A commit with no status at all is
        answered 200 with every field empty (`sha: ""`, `statuses: null`): that is "no CI
        yet", not an error.
        """
        url = self._repo_url(owner, repo, "commits", quote(ref, safe=""), "status")
        statuses: list[CommitStatus] = []
        sha = ""
        page_size: int | None = None
        for page in range(1, _MAX_STATUS_PAGES + 1):
            response = self._call("GET", url, params={"page": str(page), "limit": str(_STATUS_LIMIT)})
            data = self._object(response)
            raw = data.get("statuses")
            if raw is None:
                raw = []
            if not isinstance(raw, list):
                raise self._http.error(response, note="`statuses` is not a list")
            got = [_status(s) for s in raw if isinstance(s, dict)]
            statuses.extend(got)
            if isinstance(data.get("sha"), str) and data["sha"]:
                sha = sha or data["sha"]
            total = _int_header(response, "x-total-count")
            page_size = page_size or len(got)  # the server may cap `limit` lower than asked
            if not got or (total is not None and len(statuses) >= total):
                break
            if total is None and len(got) < page_size:
                break
        # A status reported between two page reads shifts the pages: keep each context once
        # (the first seen, from the newest page order Gitea uses).
        first: dict[str, CommitStatus] = {}
        for status in statuses:
            first.setdefault(status.context, status)
        unique = list(first.values())
        if not unique:
            return CombinedStatus(None, [], sha)
        return CombinedStatus(combine_states(s.state for s in unique), unique, sha)

    # -- pull requests -----------------------------------------------------------------------

    def pr_by_branches(self, owner: str, repo: str, base: str, head: str) -> PullRequest | None:
        """The pull request from `head` into `base`, or None when there is none."""
        # Gitea routes `/pulls/{base}/*`: the head may keep its slashes, the base may not.
        url = self._repo_url(owner, repo, "pulls", quote(base, safe=""), quote(head, safe="/"))
        response = self._call("GET", url, accept=(404,))
        if response.status_code == 404:
            return None
        return self._pr(response)

    def newest_pr(self, owner: str, repo: str, base: str, head: str) -> PullRequest | None:
        """The most recently opened pull request from `head` into `base`, whatever its state.

        `GET pulls/{base}/{head}` answers with the first pull request it finds, which after
        a closed one is that closed one; the listing (newest first) is the way to the
        latest. Reads at most `_MAX_PR_PAGES` pages of 50.
        """
        url = self._repo_url(owner, repo, "pulls")
        for page in range(1, _MAX_PR_PAGES + 1):
            params = {"state": "all", "page": str(page), "limit": "50"}  # newest first by default
            response = self._call("GET", url, params=params)
            data = self._http.json(response)
            if not isinstance(data, list):
                raise self._http.error(response, note="expected a JSON list of pull requests")
            found: list[PullRequest] = []
            for item in data:
                if not isinstance(item, dict):
                    continue
                try:
                    pr = parse_pull_request(item)
                except ValueError:
                    continue
                if pr.base_branch == base and pr.head_branch == head:
                    found.append(pr)
            if found:
                return max(found, key=lambda p: p.number)
            if len(data) < 50:
                return None
        return None

    def version(self) -> str:
        """The server's version (`GET /version`), e.g. "1.22.6"."""
        response = self._call("GET", f"{self.base_url}/version")
        value = self._object(response).get("version")
        if not isinstance(value, str) or not value:
            raise self._http.error(response, note="no version in the answer")
        return value

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

        Raises MergeRefused (405 that no retry will change: see `permanent_refusal`), NotReady
        (any other 405: the conflict check still running, branch protection not yet met,
        already merged), Busy (409: the head moved or conflicts), IntegrationError (404:
        missing or closed; anything else).
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
            words = self._refusal(response)
            reason = permanent_refusal(words)
            if reason is not None:
                raise MergeRefused(f"Gitea refuses to merge {where} (405: {words}): {reason}")
            raise NotReady(f"Gitea will not merge {where} yet (405): {words}")
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
