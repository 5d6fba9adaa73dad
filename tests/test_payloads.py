"""Webhook parsing against every delivery in tests/fixtures, plus the cases they miss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orch.webhooks.payloads import (
    GiteaPullRequest,
    GiteaPush,
    GiteaStatus,
    GiteaWorkflowRun,
    MalformedPayload,
    PlaneWorkItemEvent,
    Unknown,
    load,
    parse,
    parse_gitea,
    parse_plane,
    scrub,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Every webhook body in the fixtures, with the event header a sender would have set.
# Files without a .headers.json get the headers their SOURCES.md entry implies.
WEBHOOKS: dict[str, dict[str, str]] = {
    "gitea/push.json": {},
    "gitea/push.docs_example.json": {"X-Gitea-Event": "push"},
    "gitea/pull_request_synchronized.json": {},
    "gitea/pull_request_closed_merged.json": {},
    "gitea/pull_request_closed_unmerged.json": {"X-Gitea-Event": "pull_request"},
    "gitea/pull_request_opened.legacy2018.json": {"X-Gitea-Event": "pull_request"},
    "gitea/status.SYNTHETIC.json": {},
    "plane/v1_issue_updated_state.SYNTHETIC.body": {},
    "plane/v1_issue_updated_state.SYNTHETIC.json": {"X-Plane-Event": "issue"},
    "plane/v1_issue_delete.docs.json": {"X-Plane-Event": "issue"},
    "plane/v1_project_update.docs.json": {"X-Plane-Event": "project"},
    "plane/v2_workitem_updated.docs.json": {},
    "plane/v2_workitem_comment_created.docs.json": {},
}
# API responses (used by test_http_clients.py), signature headers (test_signature.py), notes.
NOT_WEBHOOKS = {
    "SOURCES.md",
    "plane/api_list_states_paginated.SYNTHETIC.json",
    "plane/api_work_item_relations.openapi_example.json",
}


def headers_for(name: str) -> dict[str, str]:
    """The sibling .headers.json when there is one (its `_`-keys dropped), else WEBHOOKS' guess."""
    stem = name.rsplit(".", 1)[0]
    sibling = FIXTURES / f"{stem}.headers.json"
    headers: dict[str, str] = {}
    if sibling.exists():
        headers = {k: v for k, v in json.loads(sibling.read_text()).items() if not k.startswith("_")}
    return {**headers, **WEBHOOKS[name]}


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def event(name: str) -> Any:
    return parse(body(name), headers_for(name))


def test_every_fixture_file_is_accounted_for() -> None:
    on_disk = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*") if p.is_file()}
    headers = {n for n in on_disk if n.endswith(".headers.json")}
    assert on_disk - headers - NOT_WEBHOOKS == set(WEBHOOKS), "a fixture is new or gone: classify it here"


@pytest.mark.parametrize("name", sorted(WEBHOOKS))
def test_every_webhook_fixture_parses_without_error(name: str) -> None:
    record = event(name)
    assert isinstance(record, PlaneWorkItemEvent | GiteaPush | GiteaPullRequest | GiteaStatus | Unknown)
    assert record.delivery is None or isinstance(record.delivery, str)


@pytest.mark.parametrize("name", sorted(WEBHOOKS))
def test_no_record_keeps_the_legacy_secret(name: str) -> None:
    data = json.loads(body(name))
    secret = data.get("secret")
    record = event(name)
    if secret:
        assert secret not in repr(record)
        assert "secret" not in scrub(data) and secret not in json.dumps(scrub(data))
    else:
        assert scrub(data) == data


# -- Plane ---------------------------------------------------------------------------------------


def test_plane_v1_state_change_from_the_signed_body() -> None:
    record = event("plane/v1_issue_updated_state.SYNTHETIC.body")
    assert isinstance(record, PlaneWorkItemEvent)
    assert (record.version, record.action, record.field, record.state_changed) == (
        1,
        "updated",
        "state",
        True,
    )
    assert record.work_item_id == "9a28bd00-ed9c-4f5d-8be9-fc05cbb1fc57"
    assert record.project_id == "22b6fc9c-1849-45da-b103-52a3e3a6b4c1"
    assert record.state is not None
    assert (record.state.name, record.state.group) == ("Done", "completed")
    assert record.state_id == record.new_value == "0ec6cfa4-e906-4aad-9390-2df0303a41cd"
    assert record.old_value == "5b1f0c6e-2d55-4a0e-9f7e-3c1c8f0a9b11"
    assert (record.sequence_id, record.delivery) == (42, "f819eff4-cd50-4987-bc97-e5be1e04c94f")


def test_plane_pretty_and_compact_bodies_parse_alike() -> None:
    compact = event("plane/v1_issue_updated_state.SYNTHETIC.body")
    pretty = event("plane/v1_issue_updated_state.SYNTHETIC.json")
    assert pretty == compact


def test_plane_accepts_field_state_as_well_as_state_id_and_old_action_spellings() -> None:
    data = json.loads(body("plane/v1_issue_updated_state.SYNTHETIC.json"))
    data["activity"]["field"] = "state"  # as reported for a change made through the API
    data["action"] = "update"
    record = parse_plane(json.dumps(data).encode(), {"x-plane-event": "issue"})
    assert isinstance(record, PlaneWorkItemEvent)
    assert (record.action, record.field) == ("updated", "state")


def test_plane_delete_with_the_old_spelling() -> None:
    record = event("plane/v1_issue_delete.docs.json")
    assert isinstance(record, PlaneWorkItemEvent)
    assert (record.action, record.work_item_id) == ("deleted", "9a28bd00-ed9c-4f5d-8be9-fc05cbb1fc57")
    assert record.project_id is None and record.state is None and not record.state_changed


def test_plane_project_event_is_unknown() -> None:
    assert event("plane/v1_project_update.docs.json") == Unknown("plane", "project", "updated", None)


def test_plane_v2_work_item_updated_best_effort() -> None:
    record = event("plane/v2_workitem_updated.docs.json")
    assert isinstance(record, PlaneWorkItemEvent)
    assert (record.version, record.action) == (2, "updated")
    assert record.work_item_id == "775c5716-5302-4617-bb9f-2cd843911268"
    assert record.project_id == "59e3be42-87ec-4950-99a3-ae639cf2b089"
    assert record.state_id == "067b88e5-304b-4221-ba09-94340dcc36e5"
    assert record.changed == ("last_activity_at",) and not record.state_changed
    assert record.delivery == "2a0d0510-9052-446e-a1c7-a704bbd68cba"


def test_plane_v2_state_change_from_previous_attributes() -> None:
    data = json.loads(body("plane/v2_workitem_updated.docs.json"))
    data["event"] = "workitem.updated"
    data["previous_attributes"] = {"state_id": "11111111-1111-4111-a111-111111111111"}
    record = parse(json.dumps(data).encode(), {})
    assert isinstance(record, PlaneWorkItemEvent)
    assert record.state_changed and record.field == "state"
    assert (record.old_value, record.new_value) == (
        "11111111-1111-4111-a111-111111111111",
        "067b88e5-304b-4221-ba09-94340dcc36e5",
    )


def test_plane_v2_comment_is_unknown() -> None:
    record = event("plane/v2_workitem_comment_created.docs.json")
    assert isinstance(record, Unknown)
    assert (record.source, record.event, record.action) == ("plane", "workitem.comment.created", "created")


def test_plane_issue_without_an_id_is_malformed() -> None:
    raw = json.dumps({"event": "issue", "action": "updated", "data": {"id": 12}}).encode()
    with pytest.raises(MalformedPayload, match=r"data\.id"):
        parse_plane(raw, {"X-Plane-Event": "issue"})


# -- Gitea ---------------------------------------------------------------------------------------


def test_gitea_push() -> None:
    record = event("gitea/push.json")
    assert record == GiteaPush(
        repo="Test-CI/multi-line-secrets",
        ref="refs/heads/main",
        branch="main",
        before="6efcf5b7c98f3e7a491675164b7a2e7acac27941",
        after="29be01c073851cf0db0c6a466e396b725a670453",
        delivery="f6266f16-1bf3-46a5-9ea4-602e06ead473",
    )
    assert not record.created and not record.deleted


def test_gitea_push_docs_example_without_its_secret() -> None:
    record = event("gitea/push.docs_example.json")
    assert isinstance(record, GiteaPush)
    assert (record.repo, record.branch) == ("gitea/webhooks", "develop")
    assert "3gEsCfjlV2ugRwgpU" not in repr(record)


def test_gitea_push_of_a_new_branch_and_a_tag() -> None:
    data = json.loads(body("gitea/push.json"))
    data["before"], data["ref"] = "0" * 40, "refs/tags/v1"
    record = parse_gitea(json.dumps(data).encode(), {"X-Gitea-Event": "push"})
    assert isinstance(record, GiteaPush)
    assert record.created and record.branch is None


def test_gitea_pull_request_synchronized() -> None:
    record = event("gitea/pull_request_synchronized.json")
    assert isinstance(record, GiteaPullRequest)
    assert (record.action, record.number, record.head_branch, record.base_branch) == (
        "synchronized",
        2,
        "test-patch-1",
        "main",
    )
    assert record.head_sha == "788ed8d02d3b7fcfcf6386dbcbca696aa1d4dc25"
    assert record.merged is False and record.event_type == "pull_request_sync"


def test_gitea_pull_request_merged_versus_closed() -> None:
    merged = event("gitea/pull_request_closed_merged.json")
    closed = event("gitea/pull_request_closed_unmerged.json")
    assert isinstance(merged, GiteaPullRequest) and isinstance(closed, GiteaPullRequest)
    assert (merged.action, merged.merged) == ("closed", True)
    assert (closed.action, closed.merged) == ("closed", False)
    assert merged.repo == "anbraten/test-repo" and merged.head_branch == "anbraten-patch-1"


def test_gitea_pull_request_from_2018() -> None:
    record = event("gitea/pull_request_opened.legacy2018.json")
    assert isinstance(record, GiteaPullRequest)
    assert (record.action, record.number, record.head_branch, record.base_branch) == (
        "opened",
        1,
        "feature",
        "master",
    )


def test_gitea_status_has_no_branch() -> None:
    record = event("gitea/status.SYNTHETIC.json")
    assert record == GiteaStatus(
        repo="Test-CI/multi-line-secrets",
        sha="29be01c073851cf0db0c6a466e396b725a670453",
        state="success",
        context="ci/woodpecker/pr/test",
        target_url="http://127.0.0.1:8000/repos/6/pipeline/12",
        description="Pipeline was successful",
        delivery="f6266f16-1bf3-46a5-9ea4-602e06ead473",
    )
    assert "branch" not in GiteaStatus._fields


def test_gitea_workflow_run_and_job() -> None:
    sha = "29be01c073851cf0db0c6a466e396b725a670453"
    run = {
        "action": "completed",
        "workflow_run": {
            "id": 5,
            "status": "completed",
            "conclusion": "failure",
            "head_sha": sha,
            "head_branch": "b",
        },
        "repository": {"full_name": "o/r"},
    }
    record = parse(json.dumps(run).encode(), {"X-Gitea-Event": "workflow_run"})
    assert record == GiteaWorkflowRun(
        "o/r", "workflow_run", "completed", "completed", "failure", sha, "b", 5, None
    )
    job = {"action": "in_progress", "workflow_job": {"run_id": 5, "status": "in_progress"}}
    record = parse(json.dumps(job).encode(), {"X-Gitea-Event": "workflow_job"})
    assert isinstance(record, GiteaWorkflowRun)
    assert (record.repo, record.action, record.conclusion, record.head_sha, record.run_id) == (
        None,
        "in_progress",
        None,
        None,
        5,
    )


def test_gogs_and_lowercase_header_names_are_accepted() -> None:
    record = parse(body("gitea/push.json"), {"x-gogs-event": "push", "x-gogs-delivery": "d-1"})
    assert isinstance(record, GiteaPush) and record.delivery == "d-1"


def test_unknown_events_are_records_not_exceptions() -> None:
    issues = parse(b'{"action": "opened", "issue": {}}', {"X-Gitea-Event": "issues"})
    assert issues == Unknown("gitea", "issues", "opened", None)
    nobody = parse(b'{"hello": "world"}', {"Content-Type": "application/json"})
    assert nobody == Unknown("", "", None, None)


# -- malformed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe\x00{", b"[" * 100_000])
def test_malformed_bodies_raise_malformed_payload(raw: bytes) -> None:
    with pytest.raises(MalformedPayload):
        load(raw)
    with pytest.raises(MalformedPayload):
        parse(raw, {"X-Gitea-Event": "push"})


def test_malformed_payload_never_quotes_the_body() -> None:
    with pytest.raises(MalformedPayload) as info:
        parse(b'{"secret": "hunter2hunter2", ', {"X-Gitea-Event": "push"})
    assert "hunter2" not in str(info.value)


def test_ids_of_the_wrong_type_are_malformed() -> None:
    data = json.loads(body("gitea/pull_request_synchronized.json"))
    data["number"] = "2"
    data["pull_request"]["number"] = "2"
    with pytest.raises(MalformedPayload, match="number"):
        parse_gitea(json.dumps(data).encode(), {"X-Gitea-Event": "pull_request"})
    push = json.loads(body("gitea/push.json"))
    push["after"] = "main; rm -rf /"
    with pytest.raises(MalformedPayload, match="after"):
        parse_gitea(json.dumps(push).encode(), {"X-Gitea-Event": "push"})


def test_relay_modules_do_not_import_httpx() -> None:
    code = "import sys, orch.webhooks.payloads, orch.webhooks.signature; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
