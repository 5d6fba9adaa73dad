"""Property-based fuzzing of what a webhook sender controls (issue 10, "Tests must show").

Over arbitrary bytes, JSON documents of the wrong types and hostile strings (lone
surrogates, NUL, control and escape characters, huge integers, deep nesting), with the
headers of either source:

- the parsers return a record or raise `MalformedPayload` (the documented rejection),
  nothing else, and every string a record keeps can be stored;
- the signature check answers True or False, never raises, and is True only for the
  right HMAC;
- `inbox.put` + `inbox.drain` against a real SQLite file either refuse a delivery and
  store nothing, or store exactly one row that the drain then finishes (done, failed or
  parked) without an exception escaping: nothing is half-stored.

Hypothesis runs derandomized (a fixed seed) with modest example counts, so the run is
the same every time and fits the suite's budget.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from conftest import Setup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orch.engine import inbox
from orch.webhooks import payloads
from orch.webhooks.signature import find_signature, sign_hmac_sha256, verify_hmac_sha256

FUZZ = settings(
    max_examples=120,
    derandomize=True,  # the seed is fixed: the same examples on every run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

HOSTILE = st.sampled_from(
    [
        "\ud800",
        "a\udfffb",
        "\x00",
        "x\x00y",
        "\n",
        "ENG-1\n2026-01-01T00:00:00 error forged",
        "\x1b]0;title\x07",
        "\x1b[2J",
        "[/bold]",
        "../../etc/passwd",
        "$(touch /tmp/pwned)",
        "secr\u0065t",
        "None",
        "",
        " ",
        "é" * 300,
        "\u2028",
        "0" * 40,
        "a" * 40,
        "refs/heads/x",
        "acme/app",
    ]
)
TEXT = st.one_of(HOSTILE, st.text(max_size=40))
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSONISH = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


# Real shapes with any field replaced by anything: the parser's paths, the wrong types.
def ok(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a value of the right shape, sometimes anything (hypothesis leans to small
    integers, so 0-2 pick the good shape)."""
    return st.integers(0, 3).flatmap(lambda n: JSONISH if n == 3 else good)


SHA = ok(st.sampled_from(["a" * 40, "B" * 64, "0" * 40]))
NAME = st.one_of(st.sampled_from(["feature", "main", "acme/app", "x"]), TEXT)


@st.composite
def gitea_doc(draw: st.DrawFn) -> dict[str, Any]:
    repo = {"full_name": draw(ok(st.sampled_from(["acme/app", "nobody/else"])))}
    pr = {
        "number": draw(ok(st.integers(0, 2**64))),
        "merged": draw(ok(st.booleans())),
        "state": draw(JSONISH),
        "head": {"ref": draw(NAME), "sha": draw(SHA)},
        "base": {"ref": draw(NAME)},
    }
    doc = {
        "ref": draw(ok(st.sampled_from(["refs/heads/feature", "refs/tags/v1"]))),
        "before": draw(SHA),
        "after": draw(SHA),
        "sha": draw(SHA),
        "state": draw(ok(st.sampled_from(["success", "failure", "pending", "warning"]))),
        "context": draw(ok(NAME)),
        "action": draw(ok(st.sampled_from(["closed", "opened", "completed"]))),
        "repository": draw(ok(st.just(repo))),
        "pull_request": draw(ok(st.just(pr))),
        "workflow_run": {"head_sha": draw(SHA), "conclusion": draw(JSONISH), "id": draw(JSONISH)},
        "secret": draw(TEXT),
    }
    if draw(st.integers(0, 2)) < 2:
        return doc  # every field there, some of the wrong type: the deep paths
    keys = draw(st.sets(st.sampled_from(sorted(doc)), min_size=1))
    return {k: doc[k] for k in keys}


@st.composite
def plane_doc(draw: st.DrawFn) -> dict[str, Any]:
    state = {"id": draw(NAME), "name": draw(ok(NAME)), "group": draw(ok(st.just("started")))}
    data = {
        "id": draw(NAME),
        "project": draw(ok(NAME)),
        "sequence_id": draw(ok(st.integers(0, 2**64))),
        "name": draw(NAME),
        "state": draw(ok(st.just(state))),
    }
    return {
        "event": draw(st.one_of(st.sampled_from(["issue", "workitem.updated", "project"]), JSONISH)),
        "version": draw(st.one_of(st.none(), st.just("v2"), JSONISH)),
        "action": draw(st.one_of(st.sampled_from(["updated", "create", "deleted"]), JSONISH)),
        "data": draw(ok(st.just(data))),
        "activity": draw(st.one_of(st.just({"field": "state_id", "new_value": draw(TEXT)}), JSONISH)),
        "previous_attributes": draw(st.dictionaries(TEXT, JSONISH, max_size=3)),
        "entity_id": draw(TEXT),
    }


def encode(doc: Any) -> bytes:
    # ensure_ascii writes lone surrogates as \\udXXX escapes, as a hostile sender would.
    return json.dumps(doc, allow_nan=True).encode()


BODY = st.one_of(
    st.binary(max_size=300),
    st.builds(encode, JSONISH),
    st.builds(encode, gitea_doc()),
    st.builds(encode, plane_doc()),
)
EVENTS = st.sampled_from(
    [
        "push",
        "pull_request",
        "status",
        "workflow_run",
        "workflow_job",
        "issues",
        "",
        "PUSH",
        "\ud800",
        "x\x00",
    ]
)
HEADER_NAMES = st.sampled_from(
    [
        "X-Gitea-Event",
        "X-Gitea-Event-Type",
        "X-Gitea-Delivery",
        "X-Gogs-Event",
        "X-GitHub-Event",
        "X-Plane-Event",
        "X-Plane-Delivery",
        "Content-Type",
        "x-gitea-event",
    ]
)
HEADERS = st.dictionaries(HEADER_NAMES, st.one_of(EVENTS, TEXT), max_size=4)
SOURCES = st.sampled_from(["gitea", "plane"])


@st.composite
def delivery(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """Mostly a delivery shaped like its source's (so the parsers go deep), sometimes
    anything at all, sometimes with the other source's headers."""
    source = draw(SOURCES)
    if source == "gitea":
        handled = st.sampled_from(["push", "pull_request", "status", "workflow_run"])
        headers = {"X-Gitea-Event": draw(handled if draw(st.integers(0, 3)) < 3 else EVENTS)}
        if draw(st.booleans()):
            headers["X-Gitea-Event-Type"] = draw(st.one_of(EVENTS, st.just("pull_request_sync")))
        doc = st.builds(encode, gitea_doc())
        body = draw(st.integers(0, 3).flatmap(lambda n, doc=doc: BODY if n == 3 else doc))
    else:
        headers = {"X-Plane-Event": draw(st.sampled_from(["issue", "project", "", "\ud800"]))}
        doc = st.builds(encode, plane_doc())
        body = draw(st.integers(0, 3).flatmap(lambda n, doc=doc: BODY if n == 3 else doc))
    if draw(st.integers(0, 5)) == 0:
        headers.update(draw(HEADERS))
    return source, body, headers


def assert_storable(record: Any) -> None:
    for value in record:
        if isinstance(value, str):
            value.encode("utf-8")  # strict: a lone surrogate would raise here
            assert "\x00" not in value
        elif isinstance(value, tuple):
            assert_storable(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            assert -(2**63) <= value < 2**63


@FUZZ
@given(case=delivery())
def test_parsers_return_a_storable_record_or_refuse(case: tuple[str, bytes, dict[str, str]]) -> None:
    source, body, headers = case
    for parse in (lambda: payloads.parse_for(source, body, headers), lambda: payloads.parse(body, headers)):
        try:
            record = parse()
        except payloads.MalformedPayload as e:
            assert "\ud800" not in str(e) and "\x00" not in str(e)  # the body is never quoted back
            continue
        assert_storable(record)
        assert payloads.kind(record)


@FUZZ
@given(
    secret=st.one_of(st.binary(max_size=40), TEXT, st.none(), st.integers()),
    body=st.one_of(st.binary(max_size=200), TEXT, st.none()),
    header=st.one_of(
        st.none(),
        TEXT,
        st.binary(max_size=70),
        st.integers(),
        st.text(alphabet="0123456789abcdefABCDEF=sha", max_size=80),
    ),
)
def test_the_signature_check_only_says_yes_or_no(secret: Any, body: Any, header: Any) -> None:
    verdict = verify_hmac_sha256(secret, body, header)
    assert verdict is True or verdict is False
    if verdict:  # only the real HMAC of these very bytes passes
        assert isinstance(secret, bytes) and secret and isinstance(body, bytes)
        assert (
            header.strip().lower().removeprefix("sha256=")
            == hmac.new(secret, body, hashlib.sha256).hexdigest()
        )
    if isinstance(secret, bytes) and secret and isinstance(body, bytes):
        good = sign_hmac_sha256(secret, body)
        assert verify_hmac_sha256(secret, body, good) and verify_hmac_sha256(
            secret, body, "sha256=" + good.upper()
        )


@FUZZ
@given(headers=st.dictionaries(st.one_of(HEADER_NAMES, TEXT), TEXT, max_size=5), source=SOURCES)
def test_find_signature_never_raises(headers: dict[str, str], source: str) -> None:
    for found in (find_signature(headers), find_signature(headers, source)):
        assert found is None or isinstance(found, str)


@pytest.fixture
def store_rt(setup: Setup):  # type: ignore[no-untyped-def]
    setup.update_config({"repos": {"app": {"forge_repo": "acme/app"}}})
    rt = setup.runtime()
    yield rt
    rt.close()


@settings(FUZZ, max_examples=80)
@given(case=delivery())
def test_nothing_is_half_stored(store_rt, case: tuple[str, bytes, dict[str, str]]) -> None:  # type: ignore[no-untyped-def]
    rt = store_rt
    source, body, headers = case
    before = rt.store.inbox_rows(limit=100_000)
    try:
        item, new = inbox.put(rt, source, body, headers)
    except payloads.MalformedPayload:
        assert rt.store.inbox_rows(limit=100_000) == before  # refused: nothing stored
        return
    after = rt.store.inbox_rows(limit=100_000)
    assert len(after) == len(before) + (1 if new else 0)
    stored = next(r for r in after if r.id == item)
    assert stored.source == source
    inbox.drain(rt)  # any exception escaping here fails the test
    row = next(r for r in rt.store.inbox_rows(limit=100_000) if r.id == item)
    assert row.state in ("done", "failed", "parked") and row.as_dict()["claimed_by"] is None
    raw = rt.store.conn.execute("SELECT body FROM inbox WHERE id = ?", (item,)).fetchone()[0]
    assert not payloads.has_secret(json.loads(raw))  # the legacy secret never stored, at any depth
