"""Webhook deliveries from Plane and Gitea, as small normalized records.

The relay answers fast and decides later, so parsing is tolerant where senders differ and
strict where a wrong value would move the wrong thing:

- unknown fields are ignored; both spellings are accepted where versions differ (Plane
  `created`/`create`, `activity.field` `state`/`state_id`; Gitea `X-Gitea-*`/`X-Gogs-*`);
- an event we do not handle becomes an `Unknown` record, never an exception, so a new
  kind of delivery cannot break the relay;
- a body that is not a JSON object, or a handled event whose ids are missing or of the
  wrong type (a PR number that is not an int, a sha that is not hex), raises
  `MalformedPayload`: retrying the same bytes will not help;
- a string that SQLite cannot store as text (a lone surrogate such as `"\ud800"`, or a
  NUL) in any field a record keeps raises `MalformedPayload` too, so nothing downstream
  ever meets it (issue 10 item 2);
- a delivery is parsed only as the source whose secret verified it (`parse_for`): a
  Gitea endpoint that receives `X-Plane-*` headers, or the reverse, raises `WrongSource`
  (issue 10 item 1). `parse` (sniffing the sender from its headers) is for tools and tests.

Records keep only what orch uses. Old Gitea (< 1.14) put the webhook `secret` in the
body; no record has a place for it, and `scrub` drops every `secret` key, at any depth,
from a decoded body that someone wants to store (decoded first, so `"secr\u0065t"` is
caught too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from orch.errors import PermanentFailure


class MalformedPayload(PermanentFailure):
    """The delivery is not JSON, not an object, or lacks an id a handled event needs."""

    exit_code = 1


class WrongSource(MalformedPayload):
    """The delivery carries the headers of the other source than the one that verified it."""

    exit_code = 1


# -- records -------------------------------------------------------------------------------


class PlaneState(NamedTuple):
    id: str
    name: str | None = None
    group: str | None = None  # backlog | unstarted | started | completed | cancelled


class PlaneWorkItemEvent(NamedTuple):
    """A work item was created, updated or deleted (Plane v1 `issue`, or v2 `workitem.*`)."""

    version: int  # 1 or 2
    action: str  # created | updated | deleted (anything else as sent)
    work_item_id: str
    project_id: str | None
    workspace_id: str | None
    delivery: str | None
    sequence_id: int | None = None
    name: str | None = None
    state_id: str | None = None
    state: PlaneState | None = None  # v1 sends the state expanded; v2 only its id
    field: str | None = None  # what changed; "state" whether Plane said state or state_id
    old_value: str | None = None
    new_value: str | None = None
    changed: tuple[str, ...] = ()  # every field named as changed (v2 previous_attributes)

    @property
    def state_changed(self) -> bool:
        return self.field == "state" or "state" in self.changed


class GiteaPush(NamedTuple):
    repo: str  # owner/name
    ref: str
    branch: str | None  # None for tags and other refs
    before: str
    after: str
    delivery: str | None

    @property
    def created(self) -> bool:
        return _is_zero(self.before)

    @property
    def deleted(self) -> bool:
        return _is_zero(self.after)


class GiteaPullRequest(NamedTuple):
    repo: str
    action: str  # opened | closed | reopened | edited | synchronized | ...
    number: int  # the PR's index in its repository
    head_branch: str
    head_sha: str
    base_branch: str
    merged: bool  # a merge is action "closed" with merged true
    state: str | None
    event_type: str | None  # X-Gitea-Event-Type, e.g. pull_request_sync
    delivery: str | None


class GiteaStatus(NamedTuple):
    """A commit status. It names no branch: the receiver maps the sha to a task itself."""

    repo: str
    sha: str
    state: str  # pending | success | error | failure | warning | skipped
    context: str
    target_url: str | None
    description: str | None
    delivery: str | None


class GiteaWorkflowRun(NamedTuple):
    """A workflow_run (or workflow_job) moved; head fields when the sender included them."""

    repo: str | None
    event: str  # workflow_run | workflow_job
    action: str  # queued | waiting | in_progress | completed
    status: str | None
    conclusion: str | None  # success | failure | cancelled | ... once completed
    head_sha: str | None
    head_branch: str | None
    run_id: int | None
    delivery: str | None


class Unknown(NamedTuple):
    """A delivery orch does not act on; kept so the relay can count and acknowledge it."""

    source: str  # plane | gitea | "" when the sender is not recognised
    event: str
    action: str | None
    delivery: str | None


Event = PlaneWorkItemEvent | GiteaPush | GiteaPullRequest | GiteaStatus | GiteaWorkflowRun | Unknown

# -- helpers -------------------------------------------------------------------------------

_SHA = re.compile(r"^(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
# What SQLite cannot take as text: Python's sqlite3 encodes str as strict UTF-8, so a lone
# surrogate raises UnicodeEncodeError on write; a NUL is stored but cuts C strings short
# (argv, paths, env) wherever the value goes next.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_INT64 = 2**63
# Header families of each source; a delivery to one endpoint carrying the other's is refused.
_FOREIGN = {
    "plane": ("x-gitea-", "x-gogs-", "x-github-", "x-hub-"),
    "gitea": ("x-plane-",),
}
# Gitea 1.23.x sends status webhooks with an empty X-Gitea-Event (go-gitea/gitea#33244);
# X-Gitea-Event-Type is still set. The types Gitea folds into one event name:
_EVENT_OF_TYPE = {
    "pull_request_sync": "pull_request",
    "pull_request_assign": "pull_request",
    "pull_request_label": "pull_request",
    "pull_request_milestone": "pull_request",
    "pull_request_review_request": "pull_request",
}
_PAST = {"create": "created", "update": "updated", "delete": "deleted"}
_PLANE_ITEM_EVENTS = frozenset({"issue", "work_item", "workitem"})


def storable(text: str, what: str) -> str:
    """`text` itself, or MalformedPayload when it holds a NUL or a lone surrogate."""
    if _UNSTORABLE.search(text):
        raise MalformedPayload(f"{what} holds a NUL or a lone surrogate, which cannot be stored")
    return text


def _header(headers: Mapping[str, str], *names: str) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in names:
        value = lowered.get(name.lower())
        if isinstance(value, str) and value.strip():
            return storable(value.strip(), f"header {name}")
    return None


def load(body: bytes) -> dict[str, Any]:
    """The JSON object in `body`; MalformedPayload otherwise. The body is never quoted back."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise MalformedPayload(f"body is not JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise MalformedPayload(f"body is JSON but a {type(data).__name__}, not an object")
    return data


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and key.strip().lower() == "secret"


def scrub(data: Any) -> Any:
    """A copy of a decoded body without any `secret` key at any depth, safe to store or log.

    Keys are compared after JSON decoding, so `"secr\u0065t"` is the same key as `"secret"`.
    """
    if isinstance(data, dict):
        return {k: scrub(v) for k, v in data.items() if not _is_secret_key(k)}
    if isinstance(data, list):
        return [scrub(v) for v in data]
    return data


def has_secret(data: Any) -> bool:
    """Does a decoded body hold a `secret` key anywhere?"""
    if isinstance(data, dict):
        return any(_is_secret_key(k) or has_secret(v) for k, v in data.items())
    if isinstance(data, list):
        return any(has_secret(v) for v in data)
    return False


def _str(value: Any, what: str = "a string field") -> str | None:
    """A non-empty string, else None. Plane v2 docs render nulls as "None": that is None too."""
    if isinstance(value, str) and value and value != "None":
        return storable(value, what)
    return None


def _int(value: Any) -> int | None:
    """An integer SQLite can hold (64-bit), else None; a bool is not an int here."""
    if isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64:
        return value
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _require_str(value: Any, what: str) -> str:
    text = _str(value, what)
    if text is None:
        raise MalformedPayload(f"{what} is missing or not a string ({type(value).__name__})")
    return text


def _require_sha(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHA.match(value):
        raise MalformedPayload(f"{what} is not a commit sha")
    return value.lower()


def _is_zero(sha: str) -> bool:
    return set(sha) == {"0"}


def _action(value: Any) -> str:
    text = _str(value)
    if text is None:
        return ""
    text = text.lower()
    return _PAST.get(text, text)


# -- Plane ---------------------------------------------------------------------------------


def _v2_event(event: str) -> str:
    """`workitem.updated` as is; the docs' `WebhookScope.ScopeChoices.WORK_ITEM_UPDATED` mapped to it."""
    if event.startswith("WebhookScope.") or event.isupper():
        name = event.rsplit(".", 1)[-1].lower()
        match = re.match(r"^work_?item_(.+)$", name)
        return "workitem." + match.group(1).replace("_", ".") if match else name.replace("_", ".")
    return event.lower()


def parse_plane(body: bytes, headers: Mapping[str, str]) -> PlaneWorkItemEvent | Unknown:
    """A Plane webhook delivery (v1 self-hosted, or v2 best-effort)."""
    data = load(body)
    delivery = _header(headers, "X-Plane-Delivery")
    event = _str(data.get("event")) or _header(headers, "X-Plane-Event") or ""
    if data.get("version") == "v2" or "." in event:
        return _plane_v2(data, _v2_event(event), _str(data.get("delivery_id")) or delivery)
    action = _action(data.get("action"))
    if event.lower() not in _PLANE_ITEM_EVENTS:
        return Unknown("plane", event, action or None, delivery)
    item = _dict(data.get("data"))
    raw_state = item.get("state", item.get("state_id"))
    state: PlaneState | None = None
    if isinstance(raw_state, dict):
        state = PlaneState(
            id=_require_str(raw_state.get("id"), "data.state.id"),
            name=_str(raw_state.get("name"), "data.state.name"),
            group=_str(raw_state.get("group"), "data.state.group"),
        )
    activity = _dict(data.get("activity"))
    field = _str(activity.get("field"), "activity.field")
    if field == "state_id":  # the web UI says state_id, the API says state
        field = "state"
    return PlaneWorkItemEvent(
        version=1,
        action=action,
        work_item_id=_require_str(item.get("id"), "data.id"),
        project_id=_str(item.get("project"), "data.project")
        or _str(item.get("project_id"), "data.project_id"),
        workspace_id=_str(data.get("workspace_id"), "workspace_id"),
        delivery=delivery,
        sequence_id=_int(item.get("sequence_id")),
        name=_str(item.get("name")),
        state_id=state.id if state else _str(raw_state, "data.state"),
        state=state,
        field=field,
        old_value=_str(activity.get("old_value"), "activity.old_value"),
        new_value=_str(activity.get("new_value"), "activity.new_value"),
        changed=(field,) if field else (),
    )


def _plane_v2(data: dict[str, Any], event: str, delivery: str | None) -> PlaneWorkItemEvent | Unknown:
    match = re.match(r"^workitem\.(created|updated|deleted)$", event)
    if match is None:
        return Unknown("plane", event, event.rsplit(".", 1)[-1] or None, delivery)
    item = _dict(data.get("data"))
    previous = _dict(data.get("previous_attributes"))
    changed = tuple("state" if k == "state_id" else storable(k, "previous_attributes key") for k in previous)
    state_id = _str(item.get("state_id"))
    state_moved = "state_id" in previous
    return PlaneWorkItemEvent(
        version=2,
        action=match.group(1),
        work_item_id=_require_str(data.get("entity_id") or item.get("id"), "entity_id"),
        project_id=_str(item.get("project_id")),
        workspace_id=_str(data.get("workspace_id")) or _str(item.get("workspace_id")),
        delivery=delivery,
        sequence_id=_int(item.get("sequence_id")),
        name=_str(item.get("name")),
        state_id=state_id,
        state=PlaneState(state_id) if state_id else None,
        field="state" if state_moved else (changed[0] if len(changed) == 1 else None),
        old_value=_str(previous.get("state_id")) if state_moved else None,
        new_value=state_id if state_moved else None,
        changed=changed,
    )


# -- Gitea ---------------------------------------------------------------------------------


def _repo(data: dict[str, Any]) -> str:
    return _require_str(_dict(data.get("repository")).get("full_name"), "repository.full_name")


def parse_gitea(
    body: bytes, headers: Mapping[str, str]
) -> GiteaPush | GiteaPullRequest | GiteaStatus | GiteaWorkflowRun | Unknown:
    """A Gitea webhook delivery (also Gogs- and GitHub-named headers, which Gitea sends too)."""
    data = load(body)
    event = (_header(headers, "X-Gitea-Event", "X-Gogs-Event", "X-GitHub-Event") or "").lower()
    event_type = _header(headers, "X-Gitea-Event-Type", "X-Gogs-Event-Type", "X-GitHub-Event-Type")
    if not event and event_type:  # Gitea 1.23.x status webhooks: only the type is set
        event = _EVENT_OF_TYPE.get(event_type.lower(), event_type.lower())
    delivery = _header(headers, "X-Gitea-Delivery", "X-Gogs-Delivery", "X-GitHub-Delivery")
    if event == "push":
        ref = _require_str(data.get("ref"), "ref")
        return GiteaPush(
            repo=_repo(data),
            ref=ref,
            branch=ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None,
            before=_require_sha(data.get("before"), "before"),
            after=_require_sha(data.get("after"), "after"),
            delivery=delivery,
        )
    if event == "pull_request":
        pr = data.get("pull_request")
        if not isinstance(pr, dict):
            raise MalformedPayload("pull_request event without a pull_request object")
        number = _int(data.get("number"))
        if number is None:
            number = _int(pr.get("number"))
        if number is None:
            raise MalformedPayload("pull_request event without an integer number")
        head, base = _dict(pr.get("head")), _dict(pr.get("base"))
        return GiteaPullRequest(
            repo=_repo(data),
            action=_require_str(data.get("action"), "action").lower(),
            number=number,
            head_branch=_require_str(head.get("ref"), "pull_request.head.ref"),
            head_sha=_require_sha(head.get("sha"), "pull_request.head.sha"),
            base_branch=_require_str(base.get("ref"), "pull_request.base.ref"),
            merged=pr.get("merged") is True,
            state=_str(pr.get("state"), "pull_request.state"),
            event_type=event_type,
            delivery=delivery,
        )
    if event == "status":
        sha = data.get("sha") or _dict(data.get("commit")).get("id")
        return GiteaStatus(
            repo=_repo(data),
            sha=_require_sha(sha, "sha"),
            state=_require_str(data.get("state"), "state").lower(),
            context=_str(data.get("context"), "context") or "",
            target_url=_str(data.get("target_url"), "target_url"),
            description=_str(data.get("description"), "description"),
            delivery=delivery,
        )
    if event in ("workflow_run", "workflow_job"):
        run = _dict(data.get(event))
        head_sha = run.get("head_sha")
        return GiteaWorkflowRun(
            repo=_str(_dict(data.get("repository")).get("full_name")),
            event=event,
            action=_action(data.get("action")),
            status=_str(run.get("status")),
            conclusion=_str(run.get("conclusion")),
            head_sha=_require_sha(head_sha, f"{event}.head_sha") if head_sha is not None else None,
            head_branch=_str(run.get("head_branch")),
            run_id=_int(run.get("run_id")) if event == "workflow_job" else _int(run.get("id")),
            delivery=delivery,
        )
    return Unknown("gitea", event or (event_type or ""), _str(data.get("action")), delivery)


# -- dispatch ------------------------------------------------------------------------------


def check_source(source: str, headers: Mapping[str, str]) -> None:
    """WrongSource when a delivery verified as `source` carries the other source's headers."""
    foreign = _FOREIGN.get(source)
    if foreign is None:
        raise MalformedPayload(f"unknown webhook source {source!r}")
    if any(isinstance(k, str) and k.lower().startswith(foreign) for k in headers):
        other = "Gitea" if source == "plane" else "Plane"
        raise WrongSource(f"{other} headers on the {source} endpoint: a delivery is read as {source} only")


def parse_for(source: str, body: bytes, headers: Mapping[str, str]) -> Event:
    """The delivery as an event of `source`, the endpoint whose secret verified it (never a header)."""
    check_source(source, headers)
    return parse_plane(body, headers) if source == "plane" else parse_gitea(body, headers)


def kind(event: Event) -> str:
    """A short name for what arrived, for the inbox listing."""
    if isinstance(event, PlaneWorkItemEvent):
        return "issue" if event.version == 1 else "workitem"
    if isinstance(event, GiteaPush):
        return "push"
    if isinstance(event, GiteaPullRequest):
        return "pull_request"
    if isinstance(event, GiteaStatus):
        return "status"
    if isinstance(event, GiteaWorkflowRun):
        return event.event
    return (event.event or "?")[:64]


def parse(body: bytes, headers: Mapping[str, str]) -> Event:
    """Whatever arrived, by its headers: Plane, Gitea, or an `Unknown` from an unknown sender."""
    if _header(headers, "X-Plane-Event", "X-Plane-Delivery", "X-Plane-Signature"):
        return parse_plane(body, headers)
    if _header(headers, "X-Gitea-Event", "X-Gogs-Event", "X-GitHub-Event"):
        return parse_gitea(body, headers)
    data = load(body)
    if data.get("version") == "v2" and "entity_type" in data:  # Plane v2 without Plane headers
        return parse_plane(body, headers)
    return Unknown("", _str(data.get("event")) or "", _str(data.get("action")), None)
