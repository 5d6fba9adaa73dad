"""Plane's REST API (v1, `/work-items/` paths): states, work items, relations, state changes.

Plane allows 60 requests a minute per API key, and orch runs a tick from cron, so the
client counts every request it sends (retries included) in `requests_made` and, given a
`budget`, refuses to go past it with `RetryLater` rather than eat the next tick's share.

Listings use Plane's cursor pagination (`per_page:page:is_prev`): follow `next_cursor`
while `next_page_results` is true and keep `per_page` the same on every page, because the
cursor, not the query, decides the page size on the server. Records are parsed
tolerantly (unknown fields ignored, `state` as a UUID or as the expanded object) but ids
must be strings: an id of another type means we are talking to something we do not
understand, and guessing would move the wrong work item.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

import httpx

from orch.adapters.http import DEFAULT_POLICY, DEFAULT_TIMEOUT, HttpCaller, RetryPolicy, header_retry_after
from orch.errors import IntegrationError, RetryLater, UsageError

if TYPE_CHECKING:
    pass

TERMINAL_GROUPS = frozenset({"completed", "cancelled"})
MAX_PAGES = 1000  # a server that keeps saying "more" is broken; stop long before forever
_KEY = re.compile(r"^([A-Za-z][A-Za-z0-9]{0,11})-(\d+)$")


class State(NamedTuple):
    """A workflow state of one project. Trust `group`, not `name`: names can alias."""

    id: str
    name: str
    group: str

    @property
    def terminal(self) -> bool:
        return self.group in TERMINAL_GROUPS


class WorkItem(NamedTuple):
    """The fields of a Plane work item that orch reads."""

    id: str
    project_id: str
    sequence_id: int | None
    name: str
    state_id: str | None
    state: State | None = None  # only when the server expanded it
    updated_at: str | None = None
    completed_at: str | None = None
    archived_at: str | None = None
    deleted_at: str | None = None


class Relation(NamedTuple):
    """One end of a relation: the other work item and, when Plane says, its project."""

    issue_id: str
    project_id: str | None = None


class SharedBudget:
    """Plane's request limit, per API key and per minute, kept in the database.

    Plane counts requests per API key (60 a minute by default, `API_KEY_RATE_LIMIT`), not per
    process: a tick, the relay's drain and `orch deps ingest` in the same minute share it.
    So every request of every orch process sharing the database is counted there, in a
    sliding window (this minute's count plus the share of last minute's still inside the
    last 60 s), and a request that would go past `per_minute` is not sent: `RetryLater`
    with the wait. When Plane itself says to stop (a 429 with `Retry-After`, or
    `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`, a Unix time), the wait is recorded
    as a hold that every process honours. The bucket is a digest of the base URL and the
    key: the key itself never reaches the database.
    """

    def __init__(
        self,
        *,
        store: Any,
        base_url: str,
        api_key: str,
        per_minute: int,
        clock: Callable[[], float] = time.time,
    ):
        if per_minute < 1:
            raise UsageError(f"per_minute must be at least 1, not {per_minute}")
        digest = hashlib.sha256(f"{base_url.rstrip('/')}\n{api_key}".encode()).hexdigest()[:16]
        self.bucket = f"plane:{digest}"
        self.store = store
        self.per_minute = per_minute
        self.clock = clock

    def __repr__(self) -> str:
        return f"SharedBudget(bucket={self.bucket!r}, per_minute={self.per_minute})"

    def take(self) -> None:
        """Count one request, or raise RetryLater when the key's minute is spent or held."""
        now = self.clock()
        hold = self.store.hold_get(self.bucket)
        if hold is not None and hold[0] > now:
            raise RetryLater(
                f"Plane asked every client of this API key to wait {hold[0] - now:.0f}s more "
                f"({hold[1] or 'rate limit'})",
                delay=hold[0] - now,
            )
        minute = int(now // 60)
        if not self.store.rate_take(self.bucket, minute, self.per_minute, prev_weight=1 - (now % 60) / 60):
            raise RetryLater(
                f"Plane request budget of {self.per_minute} a minute for this API key is spent "
                "(shared by every orch process)",
                delay=60 - now % 60,
            )

    def observe(self, response: httpx.Response) -> None:
        """Record the wait Plane asks for, so that no process sends before it is over."""
        now = self.clock()
        until: float | None = None
        why = ""
        if response.status_code == 429:
            wait = header_retry_after(response)
            reset = _reset_at(response)
            until = reset if reset is not None and reset > now else now + (wait if wait is not None else 60.0)
            if wait is not None:
                until = max(until, now + wait)
            why = "429 Too Many Requests"
        elif response.headers.get("x-ratelimit-remaining", "").strip() == "0":
            until, why = _reset_at(response), "X-RateLimit-Remaining: 0"
        if until is not None and until > now:
            self.store.hold_set(self.bucket, until=until, value=why)


def _reset_at(response: httpx.Response) -> float | None:
    """`X-RateLimit-Reset` as a Unix time (Plane's rate_limit.py sends `int(now + 60)`)."""
    value = response.headers.get("x-ratelimit-reset", "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None


class PlaneClient:
    """A Plane workspace reached through `client` with an API key (`X-API-Key`)."""

    def __init__(
        self,
        *,
        client: httpx.Client,
        base_url: str,
        workspace: str,
        api_key: str,
        per_page: int = 100,
        budget: int | None = None,
        budget_delay: float = 60.0,
        policy: RetryPolicy = DEFAULT_POLICY,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedBudget | None = None,
    ):
        if not 1 <= per_page <= 100:
            raise UsageError(f"per_page must be between 1 and 100, not {per_page}")
        if not workspace:
            raise UsageError("the Plane workspace slug is empty")
        self.base_url = _api_root(base_url)
        self.workspace = workspace
        self.per_page = per_page
        self.budget = budget
        self.budget_delay = budget_delay
        self.requests_made = 0
        self.rate_limit_remaining: int | None = None
        self._api_key = api_key
        self.shared = shared
        self._http = HttpCaller(
            client=client,
            secrets=(api_key,),
            policy=policy,
            timeout=timeout,
            sleep=sleep,
            clock=clock,
            on_attempt=self._count,
            on_response=shared.observe if shared is not None else None,
        )

    def __repr__(self) -> str:
        return f"PlaneClient(base_url={self._http.redact(self.base_url)!r}, workspace={self.workspace!r})"

    # -- budget ------------------------------------------------------------------------------

    def _count(self) -> None:
        if self.budget is not None and self.requests_made >= self.budget:
            raise RetryLater(
                f"Plane request budget of {self.budget} is spent for this run", delay=self.budget_delay
            )
        if self.shared is not None:
            self.shared.take()
        self.requests_made += 1

    def reset_budget(self) -> None:
        """Start a new budget period (a new tick)."""
        self.requests_made = 0

    # -- plumbing ----------------------------------------------------------------------------

    def _url(self, *segments: str) -> str:
        parts = ["workspaces", self.workspace, *segments]
        return self.base_url + "/".join(quote(p, safe="") for p in parts) + "/"

    def _project_url(self, project_id: str, *segments: str) -> str:
        return self._url("projects", project_id, *segments)

    def _call(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        headers = {"X-API-Key": self._api_key, "Accept": "application/json"}
        response = self._http.request(method, url, headers=headers, params=params, json=json, accept=accept)
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining is not None and remaining.isdigit():
            self.rate_limit_remaining = int(remaining)
        return response

    def _object(self, response: httpx.Response) -> dict[str, Any]:
        data = self._http.json(response)
        if not isinstance(data, dict):
            raise self._http.error(response, note=f"expected a JSON object, got {type(data).__name__}")
        return data

    def _paginate(self, url: str, extra: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every result of a cursor-paginated listing, in server order."""
        results: list[dict[str, Any]] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params: dict[str, str | int] = {**(extra or {}), "per_page": self.per_page}
            if cursor is not None:
                params["cursor"] = cursor
            response = self._call("GET", url, params=params)
            data = self._http.json(response)
            if isinstance(data, list):  # an endpoint that does not paginate
                results.extend(_dicts(data, response, self._http))
                return results
            if not isinstance(data, dict) or not isinstance(data.get("results"), list):
                raise self._http.error(response, note="expected a paginated envelope with `results`")
            results.extend(_dicts(data["results"], response, self._http))
            if data.get("next_page_results") is not True:
                return results
            cursor = data.get("next_cursor")
            if not isinstance(cursor, str) or not cursor or cursor in seen:
                raise self._http.error(
                    response, note=f"next_page_results is true but next_cursor is {cursor!r}"
                )
            seen.add(cursor)
        raise IntegrationError(
            f"GET {self._http.redact(url)}: more than {MAX_PAGES} pages", url=self._http.redact(url)
        )

    # -- API ---------------------------------------------------------------------------------

    def list_states(self, project_id: str) -> list[State]:
        """The states of a project (Plane does not list `triage`)."""
        url = self._project_url(project_id, "states")
        return [_state(d, url) for d in self._paginate(url)]

    def list_work_items(self, project_id: str) -> list[WorkItem]:
        """Every work item of a project, each with its state expanded (`expand=state`: the
        group inline, no states request needed to read it). There is no state filter:
        filter the result."""
        url = self._project_url(project_id, "work-items")
        pages = self._paginate(url, {"expand": "state"})
        return [parse_work_item(d, project_id=project_id, url=url) for d in pages]

    def first_work_items(self, project_id: str, count: int = 1) -> list[WorkItem]:
        """The first `count` work items of a project (one request, no paging): a probe."""
        url = self._project_url(project_id, "work-items")
        response = self._call("GET", url, params={"per_page": max(1, min(count, 100))})
        data = self._http.json(response)
        raw = data.get("results") if isinstance(data, dict) else data
        if not isinstance(raw, list):
            raise self._http.error(response, note="expected a listing with `results`")
        return [parse_work_item(d, project_id=project_id, url=url) for d in _dicts(raw, response, self._http)]

    def get_work_item(self, project_id: str, item_id: str, *, expand_state: bool = False) -> WorkItem | None:
        """One work item, or None when Plane answers 404: deleted, archived, a draft or in
        triage (the detail view reads `Issue.issue_objects`, which hides all four), or never
        there. `expand_state` brings the state's name and group inline (no states fetch)."""
        url = self._project_url(project_id, "work-items", item_id)
        params: dict[str, str | int] | None = {"expand": "state"} if expand_state else None
        response = self._call("GET", url, params=params, accept=(404,))
        if response.status_code == 404:
            return None
        return parse_work_item(self._object(response), project_id=project_id, url=url)

    def get_work_item_by_key(self, key: str) -> WorkItem | None:
        """The work item people call `ENG-12`, or None when there is none."""
        match = _KEY.match(key.strip())
        if match is None:
            raise UsageError(f"{key!r} is not a work item key like ENG-12")
        ident, seq = match.group(1).upper(), int(match.group(2))
        url = self._url("work-items", f"{ident}-{seq}")
        response = self._call("GET", url, accept=(404,))
        if response.status_code == 404:
            return None
        return parse_work_item(self._object(response), url=url)

    def set_state(self, project_id: str, item_id: str, state_id: str) -> WorkItem:
        """Move a work item to `state_id` (a state of the same project; Plane answers 400 otherwise)."""
        url = self._project_url(project_id, "work-items", item_id)
        response = self._call("PATCH", url, json={"state": state_id})
        return parse_work_item(self._object(response), project_id=project_id, url=url)

    def list_relations(self, project_id: str, item_id: str) -> dict[str, list[Relation]]:
        """Relations by type (`blocked_by`, `blocking`, `relates_to`, ...); missing types are absent."""
        url = self._project_url(project_id, "work-items", item_id, "relations")
        response = self._call("GET", url)
        data = self._object(response)
        relations: dict[str, list[Relation]] = {}
        for kind, items in data.items():
            if isinstance(items, list):
                relations[kind] = [_relation(i, url) for i in items]
        return relations


# -- parsing -------------------------------------------------------------------------------


def _api_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    if not root.endswith("/api/v1"):
        root += "/api/v1"
    return root + "/"


def _dicts(items: list[Any], response: httpx.Response, http: HttpCaller) -> list[dict[str, Any]]:
    for item in items:
        if not isinstance(item, dict):
            raise http.error(response, note=f"a result is a {type(item).__name__}, not an object")
    return items


def _malformed(what: str, field: str, value: Any, url: str | None) -> IntegrationError:
    return IntegrationError(f"Plane sent a {what} with {field}={value!r}", url=url)


def _id(data: Mapping[str, Any], field: str, what: str, url: str | None) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value:
        raise _malformed(what, field, value, url)
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _state(data: Mapping[str, Any], url: str | None) -> State:
    return State(
        id=_id(data, "id", "state", url),
        name=_text(data.get("name")),
        group=_text(data.get("group")),
    )


def _relation(item: Any, url: str | None) -> Relation:
    if isinstance(item, str) and item:  # older servers list bare UUIDs
        return Relation(issue_id=item)
    if isinstance(item, dict):
        issue = item.get("issue_id", item.get("id"))
        if isinstance(issue, str) and issue:
            return Relation(issue_id=issue, project_id=_opt_str(item.get("project_id")))
    raise _malformed("relation", "item", item, url)


def parse_work_item(
    data: Mapping[str, Any], *, project_id: str | None = None, url: str | None = None
) -> WorkItem:
    """A WorkItem from Plane's JSON; unknown fields are ignored, ids must be strings."""
    item_id = _id(data, "id", "work item", url)
    project = data.get("project_id", data.get("project"))
    if isinstance(project, dict):  # expand=project
        project = project.get("id")
    if project is None:
        project = project_id
    if not isinstance(project, str) or not project:
        raise _malformed("work item", "project", project, url)
    seq = data.get("sequence_id")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise _malformed("work item", "sequence_id", seq, url)
    raw_state = data.get("state", data.get("state_id"))
    state: State | None = None
    if isinstance(raw_state, dict):
        state = _state(raw_state, url)
        state_id: str | None = state.id
    elif raw_state is None or isinstance(raw_state, str):
        state_id = raw_state or None
    else:
        raise _malformed("work item", "state", raw_state, url)
    return WorkItem(
        id=item_id,
        project_id=project,
        sequence_id=seq,
        name=_text(data.get("name")),
        state_id=state_id,
        state=state,
        updated_at=_opt_str(data.get("updated_at")),
        completed_at=_opt_str(data.get("completed_at")),
        archived_at=_opt_str(data.get("archived_at")),
        deleted_at=_opt_str(data.get("deleted_at")),
    )
