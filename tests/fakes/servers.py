"""Fake Plane, Gitea and Telegram: real HTTP servers on 127.0.0.1 speaking just enough API.

Each fake is a stdlib `ThreadingHTTPServer` on port 0 in a daemon thread, so the adapters
under test go through httpx, sockets, timeouts and all, exactly as in production. State is
plain Python data behind one lock; every request is recorded (`requests`, `count`).

Faults are queued and hit the next requests, whatever their path: `fail_next(n, status)`
answers with an error (a 429 with `Retry-After`, a 503...), `delay_next(n, seconds)` sleeps
before answering (past a client's timeout). `override(method, path, status, body)` serves a
canned body for one route, e.g. a fixture file.

The fakes are strict where the real service is strict and where a client could get it
subtly wrong: trailing slashes on Plane paths, a constant `per_page` across Plane pages,
`head_commit_id` on a Gitea merge, balanced HTML and the length limit on Telegram.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, unquote, urlsplit


class Recorded(NamedTuple):
    """One request as the server saw it: the path still percent-encoded, header names lower-cased."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def segments(self) -> list[str]:
        """The decoded path segments: `orch%2FENG-1` stays one segment, as in Gitea's router."""
        return [unquote(p) for p in self.path.strip("/").split("/")]


class Reply(NamedTuple):
    status: int
    body: Any = None  # bytes as they are, anything else as JSON, None as an empty body
    headers: Mapping[str, str] | None = None


class _Fault(NamedTuple):
    delay: float
    reply: Reply | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stalls

    def _any(self) -> None:
        self.server.fake._serve(self)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on `requests`, not on stderr."""


class FakeServer:
    """The HTTP plumbing, recording and fault injection shared by the fakes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Recorded] = []
        self._faults: deque[_Fault] = deque()
        self._overrides: dict[tuple[str, str], Reply] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    # -- faults --------------------------------------------------------------------------------

    def fail_next(
        self, n: int, status: int, *, body: Any = None, retry_after: float | str | None = None
    ) -> None:
        """The next `n` requests answer `status` (with `Retry-After` when given)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        reply = Reply(status, body if body is not None else {"message": f"injected {status}"}, headers)
        with self.lock:
            self._faults.extend(_Fault(0.0, reply) for _ in range(n))

    def delay_next(self, n: int, seconds: float) -> None:
        """The next `n` requests are answered normally, but only after `seconds`."""
        with self.lock:
            self._faults.extend(_Fault(seconds, None) for _ in range(n))

    def override(self, method: str, path: str, status: int, body: Any) -> None:
        """Answer `method path` (query ignored) with a canned reply from now on."""
        with self.lock:
            self._overrides[(method.upper(), path)] = Reply(status, body)

    # -- serving -------------------------------------------------------------------------------

    def route(self, req: Recorded) -> Reply:
        raise NotImplementedError

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        req = Recorded(
            method=handler.command,
            path=split.path,
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        with self.lock:
            self.requests.append(req)
            fault = self._faults.popleft() if self._faults else None
            override = self._overrides.get((req.method, req.path))
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.reply is not None:
            reply = fault.reply
        elif override is not None:
            reply = override
        else:
            try:
                with self.lock:
                    reply = self.route(req)
            except Exception as exc:  # a bug in the fake must show as a 500, not a hung client
                reply = Reply(500, {"message": f"fake crashed: {exc!r}"})
        self._write(handler, reply)

    @staticmethod
    def _write(handler: _Handler, reply: Reply) -> None:
        if reply.body is None:
            payload = b""
        elif isinstance(reply.body, bytes):
            payload = reply.body
        else:
            payload = json.dumps(reply.body).encode()
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in (reply.headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client gave up (timeout) and closed the socket
            handler.close_connection = True


_ids = itertools.count(1)


def _uuid(kind: str) -> str:
    """A deterministic, well-formed UUID string (so failures are reproducible)."""
    digest = hashlib.sha256(f"{kind}-{next(_ids)}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-a{digest[17:20]}-{digest[20:32]}"


def fake_sha(seed: str) -> str:
    return hashlib.sha1(seed.encode()).hexdigest()


# -- Plane ---------------------------------------------------------------------------------------


class FakePlane(FakeServer):
    """Plane API v1: states, work items (cursor-paginated), PATCH state, relations, by key."""

    def __init__(self, *, api_key: str = "plane_api_0123456789abcdef", workspace: str = "acme"):
        super().__init__()
        self.api_key = api_key
        self.workspace = workspace
        self.workspace_id = _uuid("workspace")
        self.projects: dict[str, dict[str, Any]] = {}
        # API_KEY_RATE_LIMIT as requests per minute (rate_limit.py, DRF's sliding window);
        # None: no limit and no X-RateLimit-* headers.
        self.rate_limit: int | None = None
        self.clock = time.time
        self._history: list[float] = []
        # The relations endpoint: "object" ({project_id, issue_id}, Plane 1.3.1+), "bare"
        # (UUID strings, 1.3.0) or None (older: no such route, 404).
        self.relations_shape: str | None = "object"

    def add_project(self, identifier: str) -> str:
        pid = _uuid("project")
        with self.lock:
            self.projects[pid] = {
                "identifier": identifier,
                "states": {},
                "aliases": [],  # extra listings of an existing state id under another name
                "items": {},
                "relations": {},
            }
        return pid

    def alias_state(self, project_id: str, state_id: str, name: str, group: str) -> None:
        """List `state_id` a second time, as `name` in `group`: the seed's incident (Done
        aliased onto Approved's UUID), which a badly configured project can show."""
        with self.lock:
            project = self.projects[project_id]
            twin = {**project["states"][state_id], "name": name, "group": group}
            project["aliases"].append(twin)

    def add_state(self, project_id: str, name: str, group: str) -> str:
        sid = _uuid("state")
        with self.lock:
            self.projects[project_id]["states"][sid] = {
                "id": sid,
                "name": name,
                "color": "#888888",
                "group": group,
                "sequence": 1000.0 * (len(self.projects[project_id]["states"]) + 1),
                "default": False,
                "project": project_id,
                "workspace": self.workspace_id,
                "external_source": None,
            }
        return sid

    def add_work_item(self, project_id: str, name: str, *, state_id: str | None = None, **extra: Any) -> str:
        iid = _uuid("item")
        with self.lock:
            items = self.projects[project_id]["items"]
            items[iid] = {
                "id": iid,
                "name": name,
                "state": state_id,
                "sequence_id": len(items) + 1,
                "project": project_id,
                "workspace": self.workspace_id,
                "priority": "none",
                "labels": [],
                "assignees": [],
                "description_html": "<p></p>",
                "created_at": "2026-05-01T10:00:00Z",
                "updated_at": "2026-05-01T10:00:00Z",
                "completed_at": None,
                "archived_at": None,
                "deleted_at": None,
                "estimate_point": None,
                "type_id": None,
                **extra,
            }
        return iid

    def archive(self, project_id: str, item_id: str) -> None:
        """Archive the item in Plane's UI: no webhook; gone from the listing and the detail view."""
        with self.lock:
            self.projects[project_id]["items"][item_id]["archived_at"] = "2026-05-03"

    def delete(self, project_id: str, item_id: str) -> None:
        """Delete the item (a soft delete, as Plane's models do): gone everywhere."""
        with self.lock:
            self.projects[project_id]["items"][item_id]["deleted_at"] = "2026-05-03T09:00:00Z"

    def set_relations(self, project_id: str, item_id: str, **relations: list[str]) -> None:
        with self.lock:
            self.projects[project_id]["relations"][item_id] = {
                kind: [{"project_id": project_id, "issue_id": i} for i in ids]
                for kind, ids in relations.items()
            }

    def item(self, project_id: str, item_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.projects[project_id]["items"][item_id])

    # -- routes --------------------------------------------------------------------------------

    def route(self, req: Recorded) -> Reply:
        if req.headers.get("x-api-key") != self.api_key:
            return Reply(401, {"detail": "Given API token is not valid"})
        if self.rate_limit is None:
            return self._route(req)
        # ApiKeyRateThrottle: DRF's SimpleRateThrottle (history of request times in the last
        # 60 s); a refusal is 429 with Retry-After; a success carries the remaining count
        # (this request included) and `X-RateLimit-Reset` = int(now + 60), set in base.py.
        now = self.clock()
        self._history = [t for t in self._history if t > now - 60]
        if len(self._history) >= self.rate_limit:
            wait = math.ceil(60 - (now - self._history[0]))
            detail = f"Request was throttled. Expected available in {wait} seconds."
            return Reply(429, {"detail": detail}, {"Retry-After": str(wait)})
        self._history.append(now)
        reply = self._route(req)
        limits = {
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - len(self._history))),
            "X-RateLimit-Reset": str(int(now + 60)),
        }
        return reply._replace(headers={**(reply.headers or {}), **limits})

    def _route(self, req: Recorded) -> Reply:
        if not req.path.endswith("/"):
            return Reply(404, {"detail": "Not found (Plane paths end with a slash)"})
        parts = req.segments()
        if parts[:3] != ["api", "v1", "workspaces"] or len(parts) < 5 or parts[3] != self.workspace:
            return Reply(404, {"detail": "Not found."})
        rest = parts[4:]
        if rest[0] == "work-items" and len(rest) == 2 and req.method == "GET":
            return self._by_key(rest[1], req)
        if rest[0] != "projects" or len(rest) < 3 or rest[1] not in self.projects:
            return Reply(404, {"detail": "Project not found."})
        project = self.projects[rest[1]]
        tail = rest[2:]
        if tail == ["states"] and req.method == "GET":
            return self._page(req, [*project["states"].values(), *project["aliases"]])
        if tail == ["work-items"] and req.method == "GET":
            items = [self._render(project, i, req) for i in project["items"].values() if _listed(i)]
            return self._page(req, items)
        if len(tail) >= 2 and tail[0] == "work-items":
            item = project["items"].get(tail[1])
            if item is None or (item["deleted_at"] and req.method == "PATCH"):
                return Reply(404, {"detail": "No WorkItem matches the given query."})
            if len(tail) == 2 and req.method == "GET":
                if not _listed(item):  # Issue.issue_objects.get(...) raised DoesNotExist
                    return Reply(404, {"error": "The requested resource does not exist."})
                return Reply(200, self._render(project, item, req))
            if len(tail) == 2 and req.method == "PATCH":
                return self._patch(project, item, req)
            if tail[2:] == ["relations"] and req.method == "GET" and self.relations_shape is not None:
                empty: dict[str, list[Any]] = {k: [] for k in ("blocking", "blocked_by", "relates_to")}
                found = {**empty, **project["relations"].get(item["id"], {})}
                if self.relations_shape == "bare":
                    found = {k: [r["issue_id"] for r in v] for k, v in found.items()}
                return Reply(200, found)
        return Reply(404, {"detail": "Not found."})

    def _render(self, project: dict[str, Any], item: dict[str, Any], req: Recorded) -> dict[str, Any]:
        out = dict(item)
        if "state" in req.query.get("expand", "").split(",") and item["state"]:
            st = project["states"][item["state"]]
            out["state"] = {k: st[k] for k in ("id", "name", "color", "group")}
        return out

    def _by_key(self, key: str, req: Recorded) -> Reply:
        ident, _, seq = key.rpartition("-")
        for project in self.projects.values():
            if project["identifier"] == ident:
                for item in project["items"].values():
                    if str(item["sequence_id"]) == seq and _listed(item):
                        return Reply(200, self._render(project, item, req))
        return Reply(404, {"detail": "Work item not found."})

    def _patch(self, project: dict[str, Any], item: dict[str, Any], req: Recorded) -> Reply:
        data = req.json() or {}
        state = data.get("state")
        if "state" in data and state not in project["states"]:
            return Reply(400, {"error": f"State {state} does not belong to this project"})
        item.update({k: v for k, v in data.items() if k in ("state", "name", "priority")})
        item["updated_at"] = "2026-05-02T12:30:00Z"
        return Reply(200, dict(item))

    def _page(self, req: Recorded, items: list[dict[str, Any]]) -> Reply:
        per_page = int(req.query.get("per_page", "100"))
        cursor = req.query.get("cursor")
        if cursor:
            value, page, _is_prev = (int(p) for p in cursor.split(":"))
            if value != per_page:
                return Reply(400, {"error": f"per_page {per_page} does not match cursor {cursor}"})
        else:
            value, page = per_page, 0
        offset = page * value
        results = items[offset : offset + value]
        more = offset + value < len(items)
        return Reply(
            200,
            {
                "grouped_by": None,
                "sub_grouped_by": None,
                "total_count": len(items),
                "next_cursor": f"{value}:{page + 1}:0",
                "prev_cursor": f"{value}:{page - 1}:1",
                "next_page_results": more,
                "prev_page_results": page > 0,
                "count": len(results),
                "total_pages": max(1, -(-len(items) // value)),
                "total_results": len(items),
                "extra_stats": None,
                "results": results,
            },
        )


def _listed(item: dict[str, Any]) -> bool:
    """Plane's `Issue.issue_objects` (the listing, the detail GET, the look-up by key) hides
    deleted, archived, draft and triage items (`db/models/issue.py` IssueManager); PATCH
    reads `Issue.objects`, which hides only the deleted ones."""
    return not (item.get("deleted_at") or item.get("archived_at") or item.get("is_draft"))


# -- Gitea ---------------------------------------------------------------------------------------

# Fake-only knobs on a pull request, never rendered.
PR_KNOBS: dict[str, Any] = {
    "conflict": False,  # merge and update answer 409
    "checks_running": False,  # the conflict check runs until this is set back
    "checking_views": 0,  # the check (started on view) shows for this many more reads of the PR
    "refuse": None,  # a 405 message of GITEA_405 that merge answers before anything else
}

# MergePullRequest's 405 answers (routers/api/v1/repo/pull.go, `ctx.APIError(405, ...)`: the
# JSON body is {"message": ..., "url": ...}). The order of the checks there is: merged,
# closed (404), user not allowed, WIP, not mergeable state, branch protection, signing; then
# Merge itself refuses a style the repository does not allow.
GITEA_405 = {
    "merged": "",
    "not_allowed": "User not allowed to merge PR",
    "wip": "Work in progress PRs cannot be merged",
    "later": "Please try again later",
    "not_ready": "not allowed to merge [reason: Not all required status checks successful]",
    "unsigned": "wont sign: pubkey",
    "style": "rebase is not allowed an allowed merge style for this repository",
}
WIP_PREFIXES = ("wip:", "[wip]")  # [repository.pull-request] WORK_IN_PROGRESS_PREFIXES

# Gitea's order when combining statuses: the first present wins.
_STATUS_ORDER = ("error", "failure", "warning", "pending", "success", "skipped")


class FakeGitea(FakeServer):
    """Gitea API v1: combined status, PRs by index and by branches, merge, update branch."""

    def __init__(self, *, token: str = "gitea_tok_0123456789abcdef"):
        super().__init__()
        self.token = token
        self.repos: dict[str, dict[str, Any]] = {}
        self.merges: list[dict[str, Any]] = []
        self.max_page_size = 50  # [api] MAX_RESPONSE_ITEMS
        self.version = "1.22.6"

    def add_repo(self, owner: str, repo: str, *, main_sha: str | None = None) -> None:
        with self.lock:
            self.repos[f"{owner}/{repo}"] = {
                "branches": {"main": main_sha or fake_sha(f"{owner}/{repo}@main")},
                "statuses": {},
                "pulls": {},
            }

    def set_branch(self, owner: str, repo: str, branch: str, sha: str) -> None:
        with self.lock:
            self.repos[f"{owner}/{repo}"]["branches"][branch] = sha

    def add_status(self, owner: str, repo: str, sha: str, context: str, state: str) -> None:
        with self.lock:
            by_context = self.repos[f"{owner}/{repo}"]["statuses"].setdefault(sha, {})
            by_context[context] = {
                "id": len(by_context) + 1,
                "status": state,  # the API's key for a status's state
                "context": context,
                "target_url": f"http://ci.invalid/{context}",
                "description": f"{context} is {state}",
                "created_at": "2026-05-01T10:00:00Z",
                "updated_at": "2026-05-01T10:00:00Z",
            }

    def add_pr(
        self, owner: str, repo: str, *, base: str, head: str, head_sha: str, mergeable: bool = True
    ) -> int:
        with self.lock:
            r = self.repos[f"{owner}/{repo}"]
            r["branches"][head] = head_sha
            index = len(r["pulls"]) + 1
            r["pulls"][index] = {
                "number": index,
                "title": f"{head} into {base}",
                "state": "open",
                "merged": False,
                "mergeable": mergeable,
                "html_url": f"http://gitea.invalid/{owner}/{repo}/pulls/{index}",
                "merge_commit_sha": None,
                "base": {"ref": base, "label": base},
                "head": {"ref": head, "label": head},
                **PR_KNOBS,
            }
        return index

    def pr(self, owner: str, repo: str, index: int) -> dict[str, Any]:
        with self.lock:
            return self.repos[f"{owner}/{repo}"]["pulls"][index]

    # -- routes --------------------------------------------------------------------------------

    def route(self, req: Recorded) -> Reply:
        if req.headers.get("authorization") != f"token {self.token}":
            return Reply(401, {"message": "token is required", "url": "http://gitea.invalid/api/swagger"})
        parts = req.segments()
        if parts == ["api", "v1", "version"] and req.method == "GET":
            return Reply(200, {"version": self.version})
        if parts[:3] != ["api", "v1", "repos"] or len(parts) < 6:
            return Reply(404, {"message": "Not Found"})
        name = f"{parts[3]}/{parts[4]}"
        repo = self.repos.get(name)
        if repo is None:
            return Reply(404, {"message": "The target couldn't be found.", "errors": []})
        rest = parts[5:]
        if rest[0] == "commits" and len(rest) == 3 and rest[2] == "status" and req.method == "GET":
            return self._combined(repo, rest[1], req)
        if rest == ["pulls"] and req.method == "GET":
            return self._list_pulls(repo, req)
        if rest[0] == "pulls" and len(rest) >= 2:
            if rest[1].isdigit():
                pr = repo["pulls"].get(int(rest[1]))
                if len(rest) == 2 and req.method == "GET":
                    return self._pr_reply(repo, pr)
                if rest[2:] == ["merge"] and req.method == "POST":
                    return self._merge(repo, pr, req)
                if rest[2:] == ["update"] and req.method == "POST":
                    return self._update(repo, pr, req)
            elif len(rest) >= 3 and req.method == "GET":
                base, head = rest[1], "/".join(rest[2:])
                for pr in repo["pulls"].values():
                    if pr["base"]["ref"] == base and pr["head"]["ref"] == head:
                        return self._pr_reply(repo, pr)
                return Reply(404, {"message": "pull request does not exist", "errors": []})
        return Reply(404, {"message": "Not Found"})

    def _combined(self, repo: dict[str, Any], ref: str, req: Recorded) -> Reply:
        """As routers/api/v1/repo/status.go: one page of the latest statuses (`limit` default
        30, capped at 50), the state combined over THAT page only, the total in X-Total-Count;
        no status at all is a 200 with every field at its zero value (no omitempty)."""
        sha = repo["branches"].get(ref, ref)
        statuses = list(repo["statuses"].get(sha, {}).values())
        limit = min(int(req.query.get("limit") or 30), self.max_page_size)
        page = max(1, int(req.query.get("page") or 1))
        shown = statuses[(page - 1) * limit : page * limit]
        if not shown:
            empty = {
                "state": "",
                "sha": "",
                "total_count": 0,
                "statuses": None,
                "repository": None,
                "commit_url": "",
                "url": "",
            }
            return Reply(200, empty)
        present = {s["status"] for s in shown}
        body = {
            "state": next((s for s in _STATUS_ORDER if s in present), ""),
            "sha": sha,
            "total_count": len(shown),
            "statuses": shown,
            "repository": {},
            "commit_url": "",
            "url": "",
        }
        return Reply(200, body, {"X-Total-Count": str(len(statuses))})

    def close_pr(self, owner: str, repo: str, index: int) -> None:
        """Someone closes the pull request without merging it."""
        with self.lock:
            self.repos[f"{owner}/{repo}"]["pulls"][index]["state"] = "closed"

    @staticmethod
    def _checking(pr: dict[str, Any]) -> bool:
        return bool(pr["checks_running"] or pr["checking_views"] > 0)

    @staticmethod
    def _wip(pr: dict[str, Any]) -> bool:
        return str(pr["title"]).casefold().startswith(WIP_PREFIXES)

    def _render(self, repo: dict[str, Any], pr: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in pr.items() if k not in PR_KNOBS}
        out["head"] = {**pr["head"], "sha": repo["branches"][pr["head"]["ref"]]}
        out["base"] = {**pr["base"], "sha": repo["branches"].get(pr["base"]["ref"])}
        # PullRequest.Mergeable: not while checking, conflicting or errored, never for WIP.
        out["mergeable"] = bool(pr["mergeable"]) and not self._checking(pr) and not self._wip(pr)
        return out

    def _pr_reply(self, repo: dict[str, Any], pr: dict[str, Any] | None) -> Reply:
        if pr is None:
            return Reply(404, {"message": "pull request does not exist", "errors": []})
        out = self._render(repo, pr)
        if pr["checking_views"] > 0:  # a view moves the check along (StartPullRequestCheckOnView)
            pr["checking_views"] -= 1
        return Reply(200, out)

    def _list_pulls(self, repo: dict[str, Any], req: Recorded) -> Reply:
        """GET /pulls: newest first, `state` open (default) | closed | all, page/limit."""
        state = req.query.get("state", "open")
        limit = min(int(req.query.get("limit") or 30), self.max_page_size)
        page = max(1, int(req.query.get("page") or 1))
        pulls = [p for p in repo["pulls"].values() if state == "all" or p["state"] == state]
        pulls.sort(key=lambda p: p["number"], reverse=True)
        shown = pulls[(page - 1) * limit : page * limit]
        return Reply(200, [self._render(repo, p) for p in shown], {"X-Total-Count": str(len(pulls))})

    def _refusal(self, pr: dict[str, Any] | None, body: dict[str, Any]) -> Reply | None:
        """CheckPullMergeable's answer, in upstream order, or None when the merge may go on."""
        if pr is None or (pr["state"] == "closed" and not pr["merged"]):
            return Reply(404, {"message": "pull request does not exist or is closed", "errors": []})
        swagger = "http://gitea.invalid/api/swagger"
        if pr["merged"]:
            return Reply(405, {"message": GITEA_405["merged"], "url": swagger})
        if pr["refuse"] == GITEA_405["not_allowed"]:
            return Reply(405, {"message": pr["refuse"], "url": swagger})
        if self._wip(pr):
            return Reply(405, {"message": GITEA_405["wip"], "url": swagger})
        if self._checking(pr) or not pr["mergeable"]:
            return Reply(405, {"message": GITEA_405["later"], "url": swagger})
        if pr["refuse"] is not None:
            return Reply(405, {"message": pr["refuse"], "url": swagger})
        if body.get("Do") not in ("merge", "rebase", "rebase-merge", "squash", "fast-forward-only"):
            return Reply(422, {"message": f"unknown merge style {body.get('Do')!r}"})
        return None

    def _merge_refused(
        self, repo: dict[str, Any], pr: dict[str, Any] | None, body: dict[str, Any]
    ) -> Reply | None:
        """Record the merge request and answer what Gitea answers before it merges anything:
        a refusal (405/404/422), a stale head_commit_id or a conflict (409); None to go on."""
        self.merges.append({"index": pr["number"] if pr else None, "body": body})
        refused = self._refusal(pr, body)
        if refused is not None:
            return refused
        assert pr is not None
        if body.get("head_commit_id") and body["head_commit_id"] != repo["branches"][pr["head"]["ref"]]:
            return Reply(409, {"message": "head out of date: expected head_commit_id to be the PR head"})
        if pr["conflict"]:
            return Reply(409, {"message": "Merge conflict in app.py"})
        return None

    def _merge(self, repo: dict[str, Any], pr: dict[str, Any] | None, req: Recorded) -> Reply:
        body = req.json() or {}
        refused = self._merge_refused(repo, pr, body)
        if refused is not None:
            return refused
        assert pr is not None
        head_sha = repo["branches"][pr["head"]["ref"]]
        pr["merged"], pr["state"] = True, "closed"
        pr["merge_commit_sha"] = fake_sha(f"merge-{head_sha}")
        repo["branches"][pr["base"]["ref"]] = pr["merge_commit_sha"]
        if body.get("delete_branch_after_merge"):
            pr["head_deleted"] = True
        return Reply(200, None)

    def _update(self, repo: dict[str, Any], pr: dict[str, Any] | None, req: Recorded) -> Reply:
        if pr is None:
            return Reply(404, {"message": "pull request does not exist", "errors": []})
        if pr["merged"] or pr["state"] == "closed":
            return Reply(422, {"message": "pull request is already merged or closed"})
        if req.query.get("style", "merge") not in ("merge", "rebase"):
            return Reply(400, {"message": "unknown style"})
        if pr["conflict"]:
            return Reply(409, {"message": "rebase failed: conflict in app.py"})
        head = pr["head"]["ref"]
        repo["branches"][head] = fake_sha(f"rebased-{repo['branches'][head]}")
        return Reply(200, None)


# -- Telegram ------------------------------------------------------------------------------------

_TG_TAG = re.compile(r"<\s*(/?)\s*([A-Za-z][A-Za-z0-9-]*)[^<>]*>")


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _visible_html(text: str) -> str | None:
    """The text Telegram would show for HTML `text`, or None when its tags do not balance."""
    stack: list[str] = []
    for m in _TG_TAG.finditer(text):
        closing, name = m.group(1), m.group(2).lower()
        if closing:
            if not stack or stack[-1] != name:
                return None
            stack.pop()
        else:
            stack.append(name)
    if stack or re.search(r"<(?![^<>]*>)", text):
        return None
    return html.unescape(_TG_TAG.sub("", text))


class FakeTelegram(FakeServer):
    """Bot API `sendMessage`: records messages, enforces the length limit and balanced HTML."""

    def __init__(self, *, token: str = "123456789:AAFakeTokenFakeTokenFakeToken_xyz", max_length: int = 4096):
        super().__init__()
        self.token = token
        self.max_length = max_length
        self.messages: list[dict[str, Any]] = []
        self.migrated: dict[str, int] = {}  # old chat id -> the supergroup it became

    def flood(self, n: int, retry_after: int) -> None:
        """The next `n` requests hit flood control, the way Telegram reports it."""
        body = {
            "ok": False,
            "error_code": 429,
            "description": f"Too Many Requests: retry after {retry_after}",
            "parameters": {"retry_after": retry_after},
        }
        self.fail_next(n, 429, body=body, retry_after=retry_after)

    def migrate(self, chat_id: int | str, to: int) -> None:
        """The group became a supergroup: the old id answers 400 with `migrate_to_chat_id`."""
        with self.lock:
            self.migrated[str(chat_id)] = to

    def _moved(self, chat_id: Any) -> Reply | None:
        new = self.migrated.get(str(chat_id))
        if new is None:
            return None
        body = {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: group chat was upgraded to a supergroup chat",
            "parameters": {"migrate_to_chat_id": new},
        }
        return Reply(400, body)

    def route(self, req: Recorded) -> Reply:
        parts = req.segments()
        if len(parts) != 2 or not parts[0].startswith("bot"):
            return Reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        if parts[0][3:] != self.token:
            return Reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        if parts[1] == "getMe" and req.method == "GET":
            return Reply(200, {"ok": True, "result": {"id": 1, "is_bot": True, "username": "orch_test_bot"}})
        if parts[1] == "getChat" and req.method in ("GET", "POST"):
            chat = (req.json() or {}).get("chat_id", req.query.get("chat_id"))
            moved = self._moved(chat)
            if moved is not None:
                return moved
            chat_info = {"id": chat, "type": "supergroup", "title": "orch alerts"}
            return Reply(200, {"ok": True, "result": chat_info})
        if parts[1] != "sendMessage" or req.method != "POST":
            return Reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        data = req.json() or {}
        moved = self._moved(data.get("chat_id"))
        if moved is not None:
            return moved
        text = data.get("text")
        if not isinstance(text, str):
            return self._bad("message text is empty")
        shown = _visible_html(text) if data.get("parse_mode") == "HTML" else text
        if shown is None:
            return self._bad("can't parse entities: unbalanced tags")
        if not shown.strip():
            return self._bad("message text is empty")
        if _utf16(shown.strip()) > self.max_length:
            return self._bad("message is too long")
        message_id = len(self.messages) + 1
        self.messages.append({**data, "message_id": message_id, "visible": shown})
        return Reply(
            200,
            {
                "ok": True,
                "result": {"message_id": message_id, "chat": {"id": data.get("chat_id")}, "text": shown},
            },
        )

    @staticmethod
    def _bad(description: str) -> Reply:
        return Reply(400, {"ok": False, "error_code": 400, "description": f"Bad Request: {description}"})
