"""The Plane, Gitea and Telegram clients against real HTTP servers on 127.0.0.1.

Retries sleep through an injected function that only records, so backoff and Retry-After
are asserted exactly and cost no time; only the timeout tests wait, for fractions of a
second.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fakes.servers import FakeGitea, FakePlane, FakeTelegram, fake_sha

from orch import config as config_mod
from orch.adapters.gitea import CombinedStatus, GiteaClient, MergeConflict, combine_states
from orch.adapters.http import HttpCaller, RetryPolicy, header_retry_after, redact, scrub
from orch.adapters.plane import PlaneClient, SharedBudget
from orch.adapters.telegram import TelegramClient, escape_html, split_message
from orch.app.checks import gitea_version, online_checks
from orch.errors import Busy, IntegrationError, NotReady, RetryLater, UsageError
from orch.store import Store

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_wait=5.0, total_time=5.0)


class Sleeps:
    """A sleep that records instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def fixture_json(name: str) -> object:
    path = FIXTURES / name
    return json.loads(path.read_bytes())


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # trust_env=False: a proxy from the environment must not stand between us and 127.0.0.1.
    # One client for the module: building its SSL context costs ~50 ms.
    with httpx.Client(trust_env=False) as client:
        yield client


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def plane_server() -> Iterator[FakePlane]:
    with FakePlane() as server:
        yield server


@pytest.fixture
def gitea_server() -> Iterator[FakeGitea]:
    with FakeGitea() as server:
        server.add_repo("acme", "app")
        yield server


@pytest.fixture
def tg_server() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


def make_plane(server: FakePlane, http: httpx.Client, sleeps: Sleeps, **kw: object) -> PlaneClient:
    options: dict[str, object] = {"policy": FAST, "sleep": sleeps, "api_key": server.api_key}
    options.update(kw)
    return PlaneClient(client=http, base_url=server.url, workspace=server.workspace, **options)  # type: ignore[arg-type]


def make_gitea(server: FakeGitea, http: httpx.Client, sleeps: Sleeps) -> GiteaClient:
    return GiteaClient(client=http, base_url=server.url, token=server.token, policy=FAST, sleep=sleeps)


def make_tg(server: FakeTelegram, http: httpx.Client, sleeps: Sleeps, **kw: object) -> TelegramClient:
    return TelegramClient(
        client=http,
        token=server.token,
        base_url=server.url,
        policy=FAST,
        sleep=sleeps,
        **kw,  # type: ignore[arg-type]
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- redaction -------------------------------------------------------------------------------


def test_redact_masks_the_telegram_token_in_the_path() -> None:
    url = "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"
    assert redact(url) == "https://api.telegram.org/bot***/sendMessage"


def test_redact_masks_a_bot_api_path_even_without_a_colon() -> None:
    assert (
        redact("http://127.0.0.1:9/botnotarealtoken/sendMessage") == "http://127.0.0.1:9/bot***/sendMessage"
    )


def test_redact_masks_secret_query_params_and_userinfo_and_keeps_the_rest() -> None:
    url = "https://u:pw@h.example/x?token=abc&api_key=k1&client_secret=s&cursor=100:1:0&author=ann"
    shown = redact(url)
    assert (
        shown == "https://u:***@h.example/x?token=***&api_key=***&client_secret=***&cursor=100:1:0&author=ann"
    )


def test_redact_and_scrub_mask_registered_secrets_raw_and_percent_encoded() -> None:
    assert redact("https://h/a/S3cr3t+Value/b", secrets=["S3cr3t+Value"]) == "https://h/a/***/b"
    assert scrub("echo S3cr3t%2BValue back", ["S3cr3t+Value"]) == "echo *** back"


def test_retry_after_header_as_seconds_or_http_date() -> None:
    req = httpx.Request("GET", "http://x")
    assert header_retry_after(httpx.Response(429, headers={"Retry-After": "7"}, request=req)) == 7.0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    wait = header_retry_after(httpx.Response(429, headers={"Retry-After": future}, request=req))
    assert wait is not None and 100 < wait <= 121
    assert header_retry_after(httpx.Response(429, headers={"Retry-After": "soon"}, request=req)) is None
    assert header_retry_after(httpx.Response(429, request=req)) is None


# -- retries, timeouts, errors (through the Plane client: any client would do) ---------------


def test_5xx_is_retried_with_bounded_backoff(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.add_state(pid, "Todo", "unstarted")
    plane_server.fail_next(2, 503)
    states = make_plane(plane_server, http, sleeps).list_states(pid)
    assert [s.name for s in states] == ["Todo"]
    assert plane_server.count == 3
    assert len(sleeps.calls) == 2
    assert all(0 < s <= FAST.max_delay for s in sleeps.calls)


def test_5xx_that_persists_becomes_an_integration_error_naming_method_url_status_and_body(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.fail_next(10, 503, body={"error": "database is on fire"})
    with pytest.raises(IntegrationError) as info:
        make_plane(plane_server, http, sleeps).list_states(pid)
    err = info.value
    assert err.status == 503
    assert err.url is not None and f"/projects/{pid}/states/" in err.url
    assert str(err).startswith("GET http://127.0.0.1:")
    assert "-> 503" in str(err) and "database is on fire" in str(err) and "after 3 attempts" in str(err)
    assert plane_server.count == FAST.attempts


def test_429_within_max_wait_sleeps_exactly_retry_after(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.add_state(pid, "Todo", "unstarted")
    plane_server.fail_next(1, 429, retry_after=2)
    assert len(make_plane(plane_server, http, sleeps).list_states(pid)) == 1
    assert sleeps.calls == [2.0]


def test_429_beyond_max_wait_is_retry_later_without_sleeping(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.fail_next(1, 429, retry_after=120)
    with pytest.raises(RetryLater) as info:
        make_plane(plane_server, http, sleeps).list_states(pid)
    assert info.value.delay == 120.0
    assert sleeps.calls == []
    assert plane_server.count == 1


def test_429_without_retry_after_that_persists_is_retry_later(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.fail_next(10, 429)
    with pytest.raises(RetryLater) as info:
        make_plane(plane_server, http, sleeps).list_states(pid)
    assert info.value.delay > 0
    assert plane_server.count == FAST.attempts


def test_total_time_bounds_the_retries(plane_server: FakePlane, http: httpx.Client) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(attempts=50, base_delay=0.2, max_delay=0.4, max_wait=5, total_time=1.0)
    pid = plane_server.add_project("ENG")
    plane_server.fail_next(100, 502)
    client = PlaneClient(
        client=http,
        base_url=plane_server.url,
        workspace=plane_server.workspace,
        api_key=plane_server.api_key,
        policy=policy,
        sleep=sleep,
        clock=lambda: now[0],
    )
    with pytest.raises(IntegrationError) as info:
        client.list_states(pid)
    assert info.value.status == 502
    assert now[0] <= 1.0
    assert 2 <= plane_server.count < 10


def test_a_read_timeout_is_retried_for_a_get(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.add_state(pid, "Todo", "unstarted")
    plane_server.delay_next(1, 0.5)
    client = make_plane(plane_server, http, sleeps, timeout=0.15)
    assert [s.name for s in client.list_states(pid)] == ["Todo"]
    assert plane_server.count == 2


def test_timeouts_that_persist_become_an_integration_error_without_status(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.delay_next(5, 0.4)
    client = make_plane(plane_server, http, sleeps, timeout=0.1, policy=FAST._replace(attempts=2))
    started = time.monotonic()
    with pytest.raises(IntegrationError) as info:
        client.list_states(pid)
    assert time.monotonic() - started < 2.0
    assert info.value.status is None
    assert "ReadTimeout" in str(info.value) and "after 2 attempts" in str(info.value)
    assert plane_server.api_key not in str(info.value)


def test_connection_refused_is_retried_then_an_integration_error(http: httpx.Client, sleeps: Sleeps) -> None:
    client = PlaneClient(
        client=http,
        base_url=f"http://127.0.0.1:{closed_port()}",
        workspace="acme",
        api_key="k-0123456789",
        policy=FAST,
        sleep=sleeps,
    )
    with pytest.raises(IntegrationError) as info:
        client.list_states("p1")
    assert info.value.status is None
    assert "ConnectError" in str(info.value)
    assert len(sleeps.calls) == FAST.attempts - 1
    assert client.requests_made == FAST.attempts


def test_a_post_that_may_have_happened_is_not_resent_after_a_5xx(
    gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps
) -> None:
    index = gitea_server.add_pr("acme", "app", base="main", head="orch/ENG-1", head_sha=fake_sha("h1"))
    gitea_server.fail_next(1, 502)
    with pytest.raises(IntegrationError) as info:
        make_gitea(gitea_server, http, sleeps).merge_pr("acme", "app", index, head_sha=fake_sha("h1"))
    assert info.value.status == 502
    assert gitea_server.count == 1 and sleeps.calls == []


def test_httpx_request_logs_are_redacted(
    tg_server: FakeTelegram, http: httpx.Client, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        make_tg(tg_server, http, sleeps).send_message(42, "hello")
    assert "sendMessage" in caplog.text
    assert tg_server.token not in caplog.text
    assert "/bot***/sendMessage" in caplog.text


def test_http_caller_repr_hides_its_secrets(http: httpx.Client) -> None:
    caller = HttpCaller(client=http, secrets=("hunter2-secret",))
    assert "hunter2" not in repr(caller)


# -- Plane ---------------------------------------------------------------------------------------


def test_plane_lists_states_from_the_real_envelope_shape(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    envelope = fixture_json("plane/api_list_states_paginated.SYNTHETIC.json")
    plane_server.override("GET", "/api/v1/workspaces/acme/projects/p1/states/", 200, envelope)
    states = make_plane(plane_server, http, sleeps).list_states("p1")
    assert [(s.name, s.group, s.terminal) for s in states] == [
        ("In Progress", "started", False),
        ("Done", "completed", True),
    ]


def test_plane_paginates_work_items_with_a_constant_per_page(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    todo = plane_server.add_state(pid, "Todo", "unstarted")
    ids = [
        plane_server.add_work_item(pid, f"item {n}", state_id=todo, custom_field={"x": n}) for n in range(5)
    ]
    plane_server.rate_limit = 60
    client = make_plane(plane_server, http, sleeps, per_page=2)
    items = client.list_work_items(pid)
    assert [i.id for i in items] == ids
    assert [i.sequence_id for i in items] == [1, 2, 3, 4, 5]
    assert all(i.state_id == todo and i.project_id == pid for i in items)
    assert [r.query.get("per_page") for r in plane_server.requests] == ["2", "2", "2"]
    assert [r.query.get("cursor") for r in plane_server.requests] == [None, "2:1:0", "2:2:0"]
    assert client.requests_made == 3
    assert client.rate_limit_remaining == 57
    assert {r.query.get("expand") for r in plane_server.requests} == {"state"}  # the group inline
    assert items[0].state is not None and items[0].state.id == todo


def test_plane_uses_work_items_paths_with_the_api_key(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    iid = plane_server.add_work_item(pid, "one")
    client = make_plane(plane_server, http, sleeps)
    client.list_work_items(pid)
    client.get_work_item(pid, iid)
    client.list_relations(pid, iid)
    paths = [r.path for r in plane_server.requests]
    assert all("/work-items/" in p and "/issues/" not in p for p in paths)
    assert all(r.headers["x-api-key"] == plane_server.api_key for r in plane_server.requests)


def test_plane_get_work_item_and_by_key_and_missing(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    done = plane_server.add_state(pid, "Done", "completed")
    plane_server.add_work_item(pid, "first")
    second = plane_server.add_work_item(pid, "second", state_id=done)
    client = make_plane(plane_server, http, sleeps)
    item = client.get_work_item(pid, second)
    assert item is not None and (item.name, item.sequence_id, item.state_id) == ("second", 2, done)
    by_key = client.get_work_item_by_key("eng-2")
    assert by_key == item
    assert plane_server.requests[-1].path == "/api/v1/workspaces/acme/work-items/ENG-2/"
    assert client.get_work_item(pid, "00000000-0000-4000-a000-000000000000") is None
    assert client.get_work_item_by_key("ENG-99") is None
    with pytest.raises(UsageError):
        client.get_work_item_by_key("not a key")


def test_plane_parses_an_expanded_state(plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps) -> None:
    body = fixture_json("plane/v1_issue_updated_state.SYNTHETIC.json")
    assert isinstance(body, dict)
    item = body["data"]
    plane_server.override(
        "GET", f"/api/v1/workspaces/acme/projects/{item['project']}/work-items/{item['id']}/", 200, item
    )
    got = make_plane(plane_server, http, sleeps).get_work_item(item["project"], item["id"])
    assert got is not None and got.state is not None
    assert (got.state_id, got.state.group, got.sequence_id) == (item["state"]["id"], "completed", 42)


def test_plane_set_state_patches_and_refuses_a_foreign_state(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    other = plane_server.add_project("OPS")
    todo = plane_server.add_state(pid, "Todo", "unstarted")
    done = plane_server.add_state(pid, "Done", "completed")
    foreign = plane_server.add_state(other, "Done", "completed")
    iid = plane_server.add_work_item(pid, "x", state_id=todo)
    client = make_plane(plane_server, http, sleeps)
    moved = client.set_state(pid, iid, done)
    assert moved.state_id == done and plane_server.item(pid, iid)["state"] == done
    assert plane_server.requests[-1].method == "PATCH" and plane_server.requests[-1].json() == {"state": done}
    with pytest.raises(IntegrationError) as info:
        client.set_state(pid, iid, foreign)
    assert info.value.status == 400 and "does not belong" in str(info.value)
    assert plane_server.item(pid, iid)["state"] == done


def test_plane_relations_from_the_server_and_from_the_openapi_example(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    a, b = plane_server.add_work_item(pid, "a"), plane_server.add_work_item(pid, "b")
    plane_server.set_relations(pid, b, blocked_by=[a])
    client = make_plane(plane_server, http, sleeps)
    rel = client.list_relations(pid, b)
    assert [r.issue_id for r in rel["blocked_by"]] == [a] and rel["blocking"] == []

    example = fixture_json("plane/api_work_item_relations.openapi_example.json")
    plane_server.override("GET", "/api/v1/workspaces/acme/projects/p/work-items/i/relations/", 200, example)
    rel = client.list_relations("p", "i")
    assert [r.issue_id for r in rel["blocked_by"]] == ["550e8400-e29b-41d4-a716-446655440002"]
    assert rel["blocked_by"][0].project_id == "550e8400-e29b-41d4-a716-446655440011"
    assert len(rel["blocking"]) == 2 and rel["finish_before"] == []


def test_plane_budget_stops_before_the_request_that_would_exceed_it(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    for n in range(5):
        plane_server.add_work_item(pid, f"i{n}")
    client = make_plane(plane_server, http, sleeps, per_page=2, budget=2, budget_delay=30.0)
    with pytest.raises(RetryLater) as info:
        client.list_work_items(pid)
    assert info.value.delay == 30.0
    assert client.requests_made == 2 and plane_server.count == 2
    client.reset_budget()
    client.budget = 3
    assert len(client.list_work_items(pid)) == 5


def test_plane_retries_count_against_the_budget(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.fail_next(5, 503)
    client = make_plane(plane_server, http, sleeps, budget=2)
    with pytest.raises(RetryLater):
        client.list_states(pid)
    assert client.requests_made == 2 and plane_server.count == 2


def test_plane_401_never_shows_the_api_key(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    wrong = "plane_api_WRONG_key_4242424242"
    client = make_plane(plane_server, http, sleeps, api_key=wrong)
    with pytest.raises(IntegrationError) as info:
        client.list_states("p1")
    err = info.value
    assert err.status == 401 and "not valid" in str(err)
    for text in (str(err), repr(err), err.url or "", repr(client)):
        assert wrong not in text
    assert plane_server.requests[0].headers["x-api-key"] == wrong


def test_plane_refuses_an_id_of_the_wrong_type(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    plane_server.override(
        "GET",
        "/api/v1/workspaces/acme/projects/p/work-items/i/",
        200,
        {"id": 17, "name": "x", "project": "p"},
    )
    with pytest.raises(IntegrationError, match="id=17"):
        make_plane(plane_server, http, sleeps).get_work_item("p", "i")


def test_plane_stops_on_a_cursor_that_repeats(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps
) -> None:
    looping = {"results": [], "next_page_results": True, "next_cursor": "100:1:0"}
    plane_server.override("GET", "/api/v1/workspaces/acme/projects/p/states/", 200, looping)
    with pytest.raises(IntegrationError, match="next_cursor"):
        make_plane(plane_server, http, sleeps).list_states("p")
    assert plane_server.count == 2


# -- Plane's limit, per API key and per minute, shared through the database ------------------------


class WallClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def shared_plane(
    server: FakePlane, http: httpx.Client, sleeps: Sleeps, db: Path, clock: WallClock, per_minute: int
) -> tuple[PlaneClient, Store]:
    """A PlaneClient as one orch process makes it: its own DB connection, the shared budget."""
    store = Store.open(db)
    shared = SharedBudget(
        store=store, base_url=server.url, api_key=server.api_key, per_minute=per_minute, clock=clock
    )
    return make_plane(server, http, sleeps, shared=shared), store


def test_the_plane_budget_is_per_key_per_minute_across_processes(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps, tmp_path: Path
) -> None:
    pid = plane_server.add_project("ENG")
    clock = WallClock(1_800_000_000.0)  # the start of a minute
    (a, sa), (b, sb) = (shared_plane(plane_server, http, sleeps, tmp_path / "o.db", clock, 5) for _ in "ab")
    try:
        for client in (a, b, a, b, a):
            client.list_states(pid)
        with pytest.raises(RetryLater, match="a minute for this API key") as info:
            b.list_states(pid)  # the 6th of the minute, whichever process sends it
        assert plane_server.count == 5 and info.value.delay == 60
        clock.now += 90  # half of last minute's 5 still inside the sliding 60 s: 2 more
        a.list_states(pid)
        b.list_states(pid)
        with pytest.raises(RetryLater):
            a.list_states(pid)
        clock.now += 60
        a.list_states(pid)
        assert plane_server.count == 8
        assert plane_server.api_key not in (tmp_path / "o.db").read_bytes().decode("latin-1")
    finally:
        sa.close()
        sb.close()


def test_planes_own_limit_is_honoured_by_every_process_until_its_reset(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps, tmp_path: Path
) -> None:
    # Plane's ApiKeyRateThrottle says how many are left and when the window resets
    # (X-RateLimit-Reset, a Unix time): when none are left, nobody sends until then.
    pid = plane_server.add_project("ENG")
    clock = WallClock(time.time())
    plane_server.rate_limit = 3
    plane_server.clock = clock
    (a, sa), (b, sb) = (shared_plane(plane_server, http, sleeps, tmp_path / "o.db", clock, 50) for _ in "ab")
    try:
        for _ in range(3):
            a.list_states(pid)
        with pytest.raises(RetryLater, match="X-RateLimit-Remaining: 0") as info:
            b.list_states(pid)
        assert plane_server.count == 3 and 59 <= info.value.delay <= 60
        clock.now += 61
        b.list_states(pid)
        assert plane_server.count == 4
    finally:
        sa.close()
        sb.close()


def test_a_429_from_plane_holds_every_process_for_its_retry_after(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps, tmp_path: Path
) -> None:
    pid = plane_server.add_project("ENG")
    clock = WallClock(1_800_000_000.0)
    (a, sa), (b, sb) = (shared_plane(plane_server, http, sleeps, tmp_path / "o.db", clock, 50) for _ in "ab")
    try:
        plane_server.fail_next(1, 429, body={"detail": "Request was throttled."}, retry_after=45)
        with pytest.raises(RetryLater):
            a.list_states(pid)  # 45 s is more than this client waits in place
        with pytest.raises(RetryLater, match="429") as info:
            b.list_states(pid)
        assert plane_server.count == 1 and info.value.delay == 45
    finally:
        sa.close()
        sb.close()


# -- Gitea ---------------------------------------------------------------------------------------


def test_gitea_combined_status_without_statuses_has_no_state(
    gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps
) -> None:
    # Gitea answers 200 with every field at its zero value: `sha: ""`, `statuses: null`.
    sha = fake_sha("lonely")
    result = make_gitea(gitea_server, http, sleeps).combined_status("acme", "app", sha)
    assert result == CombinedStatus(None, [], "")
    assert gitea_server.requests[0].headers["authorization"] == f"token {gitea_server.token}"


def test_gitea_combined_status_reads_every_page_and_combines_them_itself(
    gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps
) -> None:
    # 60 statuses, the failing one last: Gitea combines only the page it sends, so page 1
    # alone would say success.
    gitea_server.max_page_size = 30  # a server whose MAX_RESPONSE_ITEMS is lower than we ask
    sha = fake_sha("many")
    for n in range(59):
        gitea_server.add_status("acme", "app", sha, f"ci/{n:02d}", "success")
    gitea_server.add_status("acme", "app", sha, "ci/zz-last", "failure")
    state, statuses, got = make_gitea(gitea_server, http, sleeps).combined_status("acme", "app", sha)
    assert (state, got, len(statuses)) == ("failure", sha, 60)
    assert [r.query["page"] for r in gitea_server.requests] == ["1", "2"]
    assert {r.query["limit"] for r in gitea_server.requests} == {"50"}


@pytest.mark.parametrize(
    ("states", "combined"),
    [
        (["success", "warning"], "warning"),
        (["pending", "warning"], "warning"),
        (["skipped"], "success"),
        (["success", "skipped"], "success"),
        (["success", "bogus"], "error"),
        (["pending", "success"], "pending"),
    ],
)
def test_gitea_combined_state_follows_giteas_order(states: list[str], combined: str) -> None:
    assert combine_states(states) == combined


def test_gitea_combined_status_reads_each_state_under_status(
    gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps
) -> None:
    sha = fake_sha("c1")
    gitea_server.set_branch("acme", "app", "orch/ENG-1", sha)
    gitea_server.add_status("acme", "app", sha, "ci/test", "success")
    gitea_server.add_status("acme", "app", sha, "ci/lint", "failure")
    state, statuses, got_sha = make_gitea(gitea_server, http, sleeps).combined_status(
        "acme", "app", "orch/ENG-1"
    )
    assert (state, got_sha) == ("failure", sha)
    assert {(s.context, s.state) for s in statuses} == {("ci/test", "success"), ("ci/lint", "failure")}
    assert gitea_server.requests[0].path == "/api/v1/repos/acme/app/commits/orch%2FENG-1/status"


def test_gitea_pr_by_branches_and_get_pr(gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps) -> None:
    sha = fake_sha("h")
    index = gitea_server.add_pr("acme", "app", base="main", head="orch/ENG-1", head_sha=sha)
    client = make_gitea(gitea_server, http, sleeps)
    pr = client.pr_by_branches("acme", "app", "main", "orch/ENG-1")
    assert pr is not None
    assert (pr.number, pr.head_branch, pr.head_sha, pr.base_branch, pr.merged) == (
        index,
        "orch/ENG-1",
        sha,
        "main",
        False,
    )
    assert client.get_pr("acme", "app", index) == pr
    assert client.pr_by_branches("acme", "app", "main", "orch/none") is None
    with pytest.raises(IntegrationError) as info:
        client.get_pr("acme", "app", 99)
    assert info.value.status == 404


def test_gitea_merge_sends_camel_case_and_merges(
    gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps
) -> None:
    sha = fake_sha("h")
    index = gitea_server.add_pr("acme", "app", base="main", head="orch/ENG-1", head_sha=sha)
    client = make_gitea(gitea_server, http, sleeps)
    client.merge_pr("acme", "app", index, head_sha=sha, style="rebase", delete_branch=True)
    body = gitea_server.merges[-1]["body"]
    assert body == {
        "Do": "rebase",
        "head_commit_id": sha,
        "delete_branch_after_merge": True,
        "MergeMessageField": "",
    }
    assert client.get_pr("acme", "app", index).merged is True


def test_gitea_merge_405_is_not_ready_with_the_servers_words(
    gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps
) -> None:
    sha = fake_sha("h")
    index = gitea_server.add_pr("acme", "app", base="main", head="orch/ENG-1", head_sha=sha)
    gitea_server.pr("acme", "app", index)["checks_running"] = True
    client = make_gitea(gitea_server, http, sleeps)
    with pytest.raises(NotReady, match="Please try again later"):
        client.merge_pr("acme", "app", index, head_sha=sha)
    gitea_server.pr("acme", "app", index)["checks_running"] = False
    client.merge_pr("acme", "app", index, head_sha=sha)
    with pytest.raises(NotReady, match="already merged"):
        client.merge_pr("acme", "app", index, head_sha=sha)


def test_gitea_merge_409_is_busy(gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps) -> None:
    sha = fake_sha("h")
    index = gitea_server.add_pr("acme", "app", base="main", head="orch/ENG-1", head_sha=sha)
    client = make_gitea(gitea_server, http, sleeps)
    with pytest.raises(Busy, match="head out of date"):
        client.merge_pr("acme", "app", index, head_sha=fake_sha("stale"))
    gitea_server.pr("acme", "app", index)["conflict"] = True
    with pytest.raises(Busy, match="Merge conflict"):
        client.merge_pr("acme", "app", index, head_sha=sha)
    assert gitea_server.pr("acme", "app", index)["merged"] is False


def test_gitea_merge_404_is_an_integration_error(
    gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps
) -> None:
    with pytest.raises(IntegrationError) as info:
        make_gitea(gitea_server, http, sleeps).merge_pr("acme", "app", 7, head_sha=fake_sha("x"))
    assert info.value.status == 404
    assert not isinstance(info.value, NotReady | Busy)


def test_gitea_update_branch_ok_conflict_and_merged(
    gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps
) -> None:
    sha = fake_sha("h")
    index = gitea_server.add_pr("acme", "app", base="main", head="orch/ENG-1", head_sha=sha)
    client = make_gitea(gitea_server, http, sleeps)
    client.update_branch("acme", "app", index)
    assert gitea_server.requests[-1].query == {"style": "rebase"}
    new_head = client.get_pr("acme", "app", index).head_sha
    assert new_head != sha
    gitea_server.pr("acme", "app", index)["conflict"] = True
    with pytest.raises(MergeConflict, match="conflict") as info:
        client.update_branch("acme", "app", index)
    assert isinstance(info.value, Busy)
    gitea_server.pr("acme", "app", index)["conflict"] = False
    client.merge_pr("acme", "app", index, head_sha=new_head)
    with pytest.raises(NotReady, match="422"):
        client.update_branch("acme", "app", index)


def test_gitea_401_never_shows_the_token(gitea_server: FakeGitea, http: httpx.Client, sleeps: Sleeps) -> None:
    wrong = "gitea_tok_WRONG_999999999"
    client = GiteaClient(client=http, base_url=gitea_server.url, token=wrong, policy=FAST, sleep=sleeps)
    with pytest.raises(IntegrationError) as info:
        client.combined_status("acme", "app", "main")
    assert info.value.status == 401
    for text in (str(info.value), info.value.url or "", repr(client)):
        assert wrong not in text


# -- Telegram ------------------------------------------------------------------------------------


def test_telegram_sends_html_with_thread_and_silence(
    tg_server: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    ids = make_tg(tg_server, http, sleeps).send_message(
        -100123, f"<b>ENG-1</b> {escape_html('a < b & c')}", thread_id=7, disable_notification=True
    )
    assert ids == [1]
    sent = tg_server.messages[0]
    assert sent["chat_id"] == -100123 and sent["parse_mode"] == "HTML"
    assert sent["message_thread_id"] == 7 and sent["disable_notification"] is True
    assert sent["visible"] == "ENG-1 a < b & c"


def test_telegram_flood_control_within_max_wait_sleeps_and_delivers_once(
    tg_server: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    tg_server.flood(1, retry_after=3)
    assert make_tg(tg_server, http, sleeps).send_message(1, "hi") == [1]
    assert sleeps.calls == [3.0]
    assert [m["text"] for m in tg_server.messages] == ["hi"]


def test_telegram_flood_control_beyond_max_wait_is_retry_later(
    tg_server: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    tg_server.flood(1, retry_after=60)
    with pytest.raises(RetryLater) as info:
        make_tg(tg_server, http, sleeps, max_wait_s=5).send_message(1, "hi")
    assert info.value.delay == 60.0
    assert sleeps.calls == [] and tg_server.messages == []


def test_telegram_too_long_is_split_and_every_part_delivered(
    tg_server: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    tg_server.max_length = 120
    lines = [f"<b>line {n}</b> &amp; more text" for n in range(30)]
    ids = make_tg(tg_server, http, sleeps).send_message(1, "\n".join(lines))
    assert len(ids) == len(tg_server.messages) > 1
    delivered = "\n".join(m["visible"] for m in tg_server.messages)
    assert delivered == "\n".join(f"line {n} & more text" for n in range(30))
    assert all(len(m["visible"]) <= 120 for m in tg_server.messages)


def test_telegram_500_never_shows_the_token(
    tg_server: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    tg_server.fail_next(
        10, 500, body={"ok": False, "error_code": 500, "description": f"boom {tg_server.token}"}
    )
    client = make_tg(tg_server, http, sleeps)
    with pytest.raises(IntegrationError) as info:
        client.send_message(1, "hi")
    err = info.value
    assert err.status == 500 and "/bot***/sendMessage" in str(err) and "boom ***" in str(err)
    for text in (str(err), repr(err), err.url or "", repr(client)):
        assert tg_server.token not in text


def test_telegram_connect_error_never_shows_the_token(http: httpx.Client, sleeps: Sleeps) -> None:
    token = "987654321:AAsecretsecretsecretsecretsecret"
    client = TelegramClient(
        client=http, token=token, base_url=f"http://127.0.0.1:{closed_port()}", policy=FAST, sleep=sleeps
    )
    with pytest.raises(IntegrationError) as info:
        client.send_message(1, "hi")
    assert token not in str(info.value) and "bot***" in str(info.value)


def test_telegram_other_400s_are_integration_errors(
    tg_server: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    with pytest.raises(IntegrationError, match="can't parse entities") as info:
        make_tg(tg_server, http, sleeps).send_message(1, "<b>unclosed")
    assert info.value.status == 400


def test_telegram_refuses_an_empty_message(
    tg_server: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    with pytest.raises(UsageError):
        make_tg(tg_server, http, sleeps).send_message(1, " <b> </b> ")
    assert tg_server.count == 0


def test_escape_html() -> None:
    assert escape_html('<a href="x">&</a>') == '&lt;a href="x"&gt;&amp;&lt;/a&gt;'
    assert escape_html('say "hi"', quote=True) == "say &quot;hi&quot;"


def test_split_message_keeps_short_text_whole() -> None:
    assert split_message("short <b>text</b>", 100) == ["short <b>text</b>"]


def test_split_message_cuts_at_line_ends() -> None:
    text = "\n".join(f"line {n:02d}" for n in range(10))  # 10 lines of 7 chars
    parts = split_message(text, 20)
    assert parts == [
        "line 00\nline 01",
        "line 02\nline 03",
        "line 04\nline 05",
        "line 06\nline 07",
        "line 08\nline 09",
    ]


def test_split_message_never_cuts_an_entity_and_rebalances_tags() -> None:
    text = "<b>" + "&amp;" * 30 + "</b>"
    parts = split_message(text, 32)
    assert len(parts) > 1
    for part in parts:
        assert len(part) <= 32
        assert part.startswith("<b>") and part.endswith("</b>")
        body = part[3:-4]
        assert body and body == "&amp;" * (len(body) // 5)
    assert "".join(p[3:-4] for p in parts) == "&amp;" * 30


def test_split_message_counts_utf16_units() -> None:
    text = "😀" * 10  # each emoji is two UTF-16 units
    parts = split_message(text, 8)
    assert parts == ["😀" * 4, "😀" * 4, "😀" * 2]


def test_split_message_reopens_a_link_across_parts() -> None:
    text = '<a href="http://x">' + "word " * 20 + "</a>"
    parts = split_message(text, 50)
    assert len(parts) > 1
    assert all(p.startswith('<a href="http://x">') and p.endswith("</a>") and len(p) <= 50 for p in parts)


def test_split_message_refuses_a_tag_longer_than_the_limit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        split_message('<a href="' + "x" * 100 + '">y</a>', 50)


# -- version floors and `orch config check --online` ------------------------------------------------


@pytest.mark.parametrize("shape", ["bare", "object"])
def test_plane_relations_parse_in_both_shapes(
    plane_server: FakePlane, http: httpx.Client, sleeps: Sleeps, shape: str
) -> None:
    # Plane 1.3.0 lists bare UUIDs, 1.3.1 {project_id, issue_id}.
    pid = plane_server.add_project("ENG")
    item, blocker = (plane_server.add_work_item(pid, n) for n in ("item", "blocker"))
    plane_server.set_relations(pid, item, blocked_by=[blocker])
    plane_server.relations_shape = shape
    found = make_plane(plane_server, http, sleeps).list_relations(pid, item)
    assert [r.issue_id for r in found["blocked_by"]] == [blocker]
    assert found["blocked_by"][0].project_id == (pid if shape == "object" else None)


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("1.22.6", (1, 22, 6)),
        ("1.21.11", (1, 21, 11)),
        ("1.23.0+dev-123-gabcdef", (1, 23, 0)),
        ("v1.22", (1, 22, 0)),
        ("7.0.0+gitea-1.21.11", (1, 21, 11)),  # Forgejo carries the Gitea version it matches
        ("unknown", None),
    ],
)
def test_gitea_versions_are_read_as_gitea_sees_them(raw: str, parsed: tuple[int, ...] | None) -> None:
    assert gitea_version(raw) == parsed


def online(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plane: FakePlane,
    gitea: FakeGitea,
    tg: FakeTelegram,
    project_id: str,
) -> list[dict[str, str]]:
    cfg = config_mod.build(
        {
            "repos": {"app": {"path": str(tmp_path), "forge_repo": "acme/app"}},
            "tracker": {"kind": "plane"},
            "forge": {"kind": "gitea"},
            "notifier": {"kind": "telegram"},
            "plane": {
                "base_url": plane.url,
                "workspace": plane.workspace,
                "projects": {"ENG": {"id": project_id, "repo": "app"}},
            },
            "gitea": {"base_url": gitea.url},
            "telegram": {"base_url": tg.url, "chat_id": "-100123"},
        },
        cwd=tmp_path,
        environ={},
    )
    monkeypatch.setenv("PLANE_API_KEY", plane.api_key)
    monkeypatch.setenv("GITEA_TOKEN", gitea.token)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", tg.token)
    return online_checks(cfg)


def test_config_check_online_says_what_is_too_old_and_what_is_fine(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    plane_server: FakePlane,
    gitea_server: FakeGitea,
    tg_server: FakeTelegram,
) -> None:
    pid = plane_server.add_project("ENG")
    plane_server.add_work_item(pid, "anything")
    # A current set-up, and a default branch with no CI at all (sha "", statuses null).
    found = online(tmp_path, monkeypatch, plane_server, gitea_server, tg_server, pid)
    assert all(f["level"] == "info" for f in found), found
    text = " ".join(f["problem"] for f in found)
    assert "Gitea 1.22.6 (>= 1.22)" in text and "relations answer" in text and "reachable" in text
    # Too old, both of them; and a chat that became a supergroup.
    gitea_server.version = "1.21.11"
    plane_server.relations_shape = None
    tg_server.migrate("-100123", -1009999)
    found = online(tmp_path, monkeypatch, plane_server, gitea_server, tg_server, pid)
    by_key = {(f["key"], f["level"]): f for f in found}
    gitea_old = by_key[("[gitea] base_url", "error")]
    assert "1.21.11 is too old" in gitea_old["problem"] and "1.22" in gitea_old["fix"]
    assert "1.3.0" in by_key[("[plane.projects.ENG]", "warning")]["problem"]
    assert by_key[("[telegram] chat_id", "error")]["fix"] == 'set [telegram] chat_id = "-1009999"'
