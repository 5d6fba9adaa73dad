"""The relay over real HTTP on 127.0.0.1, replaying every payload in tests/fixtures."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Setup, drive_to

from orch.app.relay import Relay
from orch.engine import tasks

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GITEA_SECRET = "test-secret"
PLANE_SECRET = "plane_wh_0123456789abcdef0123456789abcdef"

# (source, body file, headers file or None, event header when there is no headers file)
CASES = [
    ("gitea", "gitea/push.json", "gitea/push.headers.json", None),
    ("gitea", "gitea/pull_request_synchronized.json", "gitea/pull_request_synchronized.headers.json", None),
    ("gitea", "gitea/pull_request_closed_merged.json", "gitea/pull_request_closed_merged.headers.json", None),
    ("gitea", "gitea/status.SYNTHETIC.json", "gitea/status.SYNTHETIC.headers.json", None),
    ("gitea", "gitea/pull_request_closed_unmerged.json", None, "pull_request"),
    ("gitea", "gitea/pull_request_opened.legacy2018.json", None, "pull_request"),
    ("gitea", "gitea/push.docs_example.json", None, "push"),
    (
        "plane",
        "plane/v1_issue_updated_state.SYNTHETIC.body",
        "plane/v1_issue_updated_state.SYNTHETIC.headers.json",
        None,
    ),
    ("plane", "plane/v1_issue_delete.docs.json", None, "issue"),
    ("plane", "plane/v1_project_update.docs.json", None, "project"),
    ("plane", "plane/v2_workitem_updated.docs.json", None, "issue"),
    ("plane", "plane/v2_workitem_comment_created.docs.json", None, "issue_comment"),
]


def _sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _delivery(source: str, body_file: str, headers_file: str | None, event: str | None) -> tuple[bytes, dict]:
    body = (FIXTURES / body_file).read_bytes()
    if headers_file:
        headers = {
            k: v
            for k, v in json.loads((FIXTURES / headers_file).read_text()).items()
            if not k.startswith("_")
        }
    else:
        secret = GITEA_SECRET if source == "gitea" else PLANE_SECRET
        sig = "X-Gitea-Signature" if source == "gitea" else "X-Plane-Signature"
        kind = "X-Gitea-Event" if source == "gitea" else "X-Plane-Event"
        headers = {"Content-Type": "application/json", kind: event, sig: _sign(secret, body)}
    return body, headers


@pytest.fixture
def relay(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Iterator[Relay]:
    monkeypatch.setenv("ORCH_GITEA_WEBHOOK_SECRET", GITEA_SECRET)
    monkeypatch.setenv("ORCH_PLANE_WEBHOOK_SECRET", PLANE_SECRET)
    r = Relay(setup.config(), host="127.0.0.1", port=0).start()
    yield r
    r.close()


def _post(relay: Relay, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    host, port = relay.address
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _get(relay: Relay, path: str, headers: dict | None = None) -> tuple[int, dict]:
    host, port = relay.address
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def _wait_processed(relay: Relay, item: int) -> dict:
    import time

    end = time.monotonic() + 10
    while time.monotonic() < end:
        with relay.lock:
            row = next(r.as_dict() for r in relay.rt.store.inbox_rows(limit=10_000) if r.id == item)
        if row["state"] != "pending":
            return row
        time.sleep(0.02)
    raise AssertionError(f"inbox {item} not processed")


@pytest.mark.parametrize(
    ("source", "body_file", "headers_file", "event"), CASES, ids=[c[1].split("/")[-1] for c in CASES]
)
def test_every_fixture_is_accepted_signed_and_refused_otherwise(
    relay: Relay, source: str, body_file: str, headers_file: str | None, event: str | None
) -> None:
    body, headers = _delivery(source, body_file, headers_file, event)
    sig_keys = [k for k in headers if "signature" in k.lower()]
    wrong = {k: v for k, v in headers.items() if k not in sig_keys}
    for k in sig_keys:
        wrong[k] = _sign("not-the-secret", body)
    assert _post(relay, f"/hooks/{source}", body, wrong)[0] == 401
    assert (
        _post(relay, f"/hooks/{source}", body, {k: v for k, v in headers.items() if k not in sig_keys})[0]
        == 401
    )
    with relay.lock:
        assert relay.rt.store.inbox_count() == {}  # nothing stored
    code, reply = _post(relay, f"/hooks/{source}", body, headers)
    assert code == 202 and reply["duplicate"] is False
    row = _wait_processed(relay, reply["id"])
    assert row["state"] == "done", row  # handled (or knowingly ignored), never failed
    # The same delivery again is stored once.
    code, again = _post(relay, f"/hooks/{source}", body, headers)
    assert code == 202 and again == {"id": reply["id"], "duplicate": True}


def test_pretty_printed_gitea_body_verifies_byte_exact(relay: Relay) -> None:
    body, headers = _delivery("gitea", "gitea/push.json", "gitea/push.headers.json", None)
    assert b"\n  " in body  # pretty-printed as Gitea sends it
    reserialized = json.dumps(json.loads(body)).encode()
    assert _post(relay, "/hooks/gitea", reserialized, headers)[0] == 401
    assert _post(relay, "/hooks/gitea", body, headers)[0] == 202


def test_legacy_secret_field_never_reaches_the_database(relay: Relay, setup: Setup) -> None:
    body, headers = _delivery("gitea", "gitea/pull_request_opened.legacy2018.json", None, "pull_request")
    # The fixture's own value, "12345", could turn up in a database page's bytes by chance
    # (an integer, a timestamp): search for a value that cannot, in the same place.
    assert json.loads(body)["secret"] == "12345"
    secret_value = "legacy-secret-7c1e9a4f2b"
    body = body.replace(b'"secret": "12345"', f'"secret": "{secret_value}"'.encode(), 1)
    headers["X-Gitea-Signature"] = _sign(GITEA_SECRET, body)
    assert json.loads(body)["secret"] == secret_value
    assert _post(relay, "/hooks/gitea", body, headers)[0] == 202
    db = (setup.root / ".orch" / "orch.db").read_bytes()
    wal = setup.root / ".orch" / "orch.db-wal"
    assert secret_value.encode() not in db + (wal.read_bytes() if wal.exists() else b"")


def test_limits_and_malformed_requests(relay: Relay) -> None:
    big = b"{" + b" " * (1024 * 1024 + 10) + b"}"
    assert _post(relay, "/hooks/gitea", big, {"X-Gitea-Signature": _sign(GITEA_SECRET, big)})[0] == 413
    assert _post(relay, "/hooks/jira", b"{}", {})[0] == 404
    junk = b"this is not json"
    code, reply = _post(
        relay, "/hooks/gitea", junk, {"X-Gitea-Event": "push", "X-Gitea-Signature": _sign(GITEA_SECRET, junk)}
    )
    # Refused when parsed, before anything is stored: the sender's delivery log shows why.
    assert code == 400 and "not JSON" in reply["error"]
    with relay.lock:
        assert relay.rt.store.inbox_count() == {}
    code, health = _get(relay, "/healthz")
    assert code == 200 and health["ok"] is True


def test_concurrent_deliveries_are_all_stored(relay: Relay) -> None:
    errors: list[str] = []

    def client(n: int) -> None:
        for i in range(25):
            body = json.dumps(
                {
                    "ref": f"refs/heads/x{n}-{i}",
                    "before": "0" * 40,
                    "after": "1" * 40,
                    "repository": {"full_name": "nobody/nothing"},
                }
            ).encode()
            code, _ = _post(
                relay,
                "/hooks/gitea",
                body,
                {"X-Gitea-Event": "push", "X-Gitea-Signature": _sign(GITEA_SECRET, body)},
            )
            if code != 202:
                errors.append(str(code))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with relay.lock:
        assert sum(relay.rt.store.inbox_count().values()) == 200


def test_token_routes_are_off_without_a_token_and_guarded_with_one(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _get(relay, "/queue")[0] == 404
    monkeypatch.setenv("ORCH_RELAY_TOKEN", "s3cr3t-token")
    assert _get(relay, "/queue")[0] == 401
    code, view = _get(relay, "/queue", {"Authorization": "Bearer s3cr3t-token"})
    assert code == 200 and "healthy" in view
    assert _post(relay, "/leases/release?task=NOPE", b"", {"Authorization": "Bearer s3cr3t-token"})[0] == 400


def test_a_status_webhook_moves_the_task_whose_head_it_is(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Local CI fails; the forge's CI (the webhook) then reports success for the same context.
    setup.update_config({"repos": {"app": {"forge_repo": "acme/app", "ci": "false"}}})
    monkeypatch.setenv("ORCH_GITEA_WEBHOOK_SECRET", GITEA_SECRET)
    rt = setup.runtime()
    t = tasks.add(rt, "status moves me")
    drive_to(rt, t.key, "development")
    from orch.engine import jobs

    jobs.work(rt, max_jobs=1)  # the developer commits; CI is red, so it stays
    task = rt.task(t.key)
    head = rt.forge.branch_head(task)
    assert task.stage == "development" and head
    relay = Relay(setup.config(), host="127.0.0.1", port=0).start()
    try:
        body = json.dumps(
            {"sha": head, "state": "success", "context": "orch/ci", "repository": {"full_name": "acme/app"}}
        ).encode()
        code, reply = _post(
            relay,
            "/hooks/gitea",
            body,
            {"X-Gitea-Event": "status", "X-Gitea-Signature": _sign(GITEA_SECRET, body)},
        )
        assert code == 202
        row = _wait_processed(relay, reply["id"])
        assert row["state"] == "done" and "development -> review" in row["result"], row
    finally:
        relay.close()
    assert rt.task(t.key).stage == "review"
    rt.close()


def test_a_large_body_with_expect_100_continue_is_accepted(relay: Relay) -> None:
    # curl sends `Expect: 100-continue` for bodies over 1 KiB and waits for the interim answer.
    pad = "x" * 900_000
    body = json.dumps(
        {
            "ref": "refs/heads/big",
            "before": "0" * 40,
            "after": "2" * 40,
            "repository": {"full_name": "a/b"},
            "pad": pad,
        }
    ).encode()
    headers = {
        "X-Gitea-Event": "push",
        "X-Gitea-Signature": _sign(GITEA_SECRET, body),
        "Expect": "100-continue",
    }
    code, reply = _post(relay, "/hooks/gitea", body, headers)
    assert code == 202
    assert _wait_processed(relay, reply["id"])["state"] == "done"


def test_each_status_webhook_starts_its_reviewer_at_once_within_the_limit(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No dead minutes after a webhook: the drain starts the job a delivery queued as soon
    as that delivery is handled (no tick runs here), one runner per queued job, and the
    runners' claims keep max_concurrency exact."""
    import time

    from orch.adapters.process import ProcessRunner
    from orch.engine import jobs

    setup.update_config({"repos": {"app": {"forge_repo": "acme/app", "ci": "false"}}})
    monkeypatch.setenv("ORCH_GITEA_WEBHOOK_SECRET", GITEA_SECRET)
    rt = setup.runtime()
    keys = [tasks.add(rt, f"webhook {i}").key for i in range(3)]
    for key in keys:
        drive_to(rt, key, "development")
    jobs.work(rt, max_jobs=3)  # the developers commit; CI is red, so they stay
    heads = {k: rt.forge.branch_head(rt.task(k)) for k in keys}
    assert all(rt.task(k).stage == "development" and heads[k] for k in keys)
    setup.update_config(
        {
            "work": {"start_immediately": True, "max_concurrency": 2},
            "agents": {"reviewer": {"command": "sleep 0.5"}},
        }
    )
    started_by_relay: list[list[str]] = []
    spawn = ProcessRunner.spawn

    def counting_spawn(self: ProcessRunner, argv: list[str], **kw: object) -> int:
        started_by_relay.append(argv)
        return spawn(self, argv, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ProcessRunner, "spawn", counting_spawn)
    relay = Relay(setup.config(), host="127.0.0.1", port=0).start()
    try:
        for key in keys:
            body = json.dumps(
                {
                    "sha": heads[key],
                    "state": "success",
                    "context": "orch/ci",
                    "repository": {"full_name": "acme/app"},
                }
            ).encode()
            code, _ = _post(
                relay,
                "/hooks/gitea",
                body,
                {"X-Gitea-Event": "status", "X-Gitea-Signature": _sign(GITEA_SECRET, body)},
            )
            assert code == 202
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reviewers = [j for j in rt.store.jobs() if j.agent == "reviewer"]
            if len(reviewers) == 3 and all(j.state == "succeeded" for j in reviewers):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(
                f"reviewers did not all run: {[(j.task_id, j.state) for j in rt.store.jobs()]}"
            )
    finally:
        relay.close()
    # One runner per queued job at most (a runner that ends starts the next itself).
    assert 1 <= len(started_by_relay) <= 3, started_by_relay
    spans = sorted([(j.started_at, 1) for j in reviewers] + [(j.ended_at, -1) for j in reviewers])
    running = peak = 0
    for _, step in spans:
        running += step
        peak = max(peak, running)
    assert peak <= 2, peak
    rt.close()
