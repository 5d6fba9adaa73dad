"""Webhook signatures: every signed fixture verifies over its exact bytes, and nothing else does."""

from __future__ import annotations

import hmac
import json
from pathlib import Path

import pytest

from orch.webhooks import signature
from orch.webhooks.signature import find_signature, sign_hmac_sha256, verify_hmac_sha256

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HEADER_FILES = sorted(FIXTURES.rglob("*.headers.json"))
SIGNATURE_NAMES = ("X-Plane-Signature", "X-Gitea-Signature", "X-Gogs-Signature", "X-Hub-Signature-256")


def signed_body(headers_file: Path) -> Path:
    """Plane signs the compact `.body` (its `.json` twin is pretty-printed); Gitea the `.json` itself."""
    stem = headers_file.name.removesuffix(".headers.json")
    if headers_file.parent.name == "plane":
        return headers_file.with_name(stem + ".body")
    return headers_file.with_name(stem + ".json")


def load(headers_file: Path) -> tuple[bytes, bytes, dict[str, str]]:
    headers = json.loads(headers_file.read_text())
    return headers["_test_secret"].encode(), signed_body(headers_file).read_bytes(), headers


def test_the_signed_fixtures_are_there() -> None:
    names = {p.parent.name for p in HEADER_FILES}
    assert names == {"gitea", "plane"} and len(HEADER_FILES) >= 5


def test_gitea_fixtures_were_signed_with_test_secret() -> None:
    for path in HEADER_FILES:
        if path.parent.name == "gitea":
            assert json.loads(path.read_text())["_test_secret"] == "test-secret"


@pytest.mark.parametrize("headers_file", HEADER_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_signature_header_verifies_over_the_exact_bytes(headers_file: Path) -> None:
    secret, body, headers = load(headers_file)
    present = [n for n in SIGNATURE_NAMES if n in headers]
    assert present, "a signed fixture without a signature header"
    for name in present:
        assert verify_hmac_sha256(secret, body, headers[name]), name
    assert verify_hmac_sha256(secret, body, find_signature(headers))


@pytest.mark.parametrize("headers_file", HEADER_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_wrong_secret_or_a_changed_byte_fails(headers_file: Path) -> None:
    secret, body, headers = load(headers_file)
    sig = find_signature(headers)
    assert not verify_hmac_sha256(secret + b"x", body, sig)
    assert not verify_hmac_sha256(b"wrong-secret", body, sig)
    for pos in (0, len(body) // 2, len(body) - 1):
        changed = bytearray(body)
        changed[pos] ^= 0x01
        assert not verify_hmac_sha256(secret, bytes(changed), sig), f"byte {pos} changed, still verified"
    assert not verify_hmac_sha256(secret, body + b"\n", sig)


def test_a_reserialised_plane_body_does_not_verify() -> None:
    headers_file = FIXTURES / "plane" / "v1_issue_updated_state.SYNTHETIC.headers.json"
    secret, body, headers = load(headers_file)
    pretty = headers_file.with_name("v1_issue_updated_state.SYNTHETIC.json").read_bytes()
    assert json.loads(pretty) == json.loads(body)
    assert not verify_hmac_sha256(secret, pretty, headers["X-Plane-Signature"])


def test_round_trip_and_both_header_forms() -> None:
    digest = sign_hmac_sha256(b"k3y", b"payload")
    assert verify_hmac_sha256(b"k3y", b"payload", digest)
    assert verify_hmac_sha256(b"k3y", b"payload", f"sha256={digest}")
    assert verify_hmac_sha256(b"k3y", b"payload", f" SHA256={digest.upper()} ")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=" + "0" * 40,
        "zz" * 32,
        "ab" * 31,
        "ab" * 33,
        "sha256=" + "g" * 64,
        "é" * 64,
        "0" * 64,
    ],
)
def test_malformed_or_missing_signatures_are_false_not_errors(header: str | None) -> None:
    assert verify_hmac_sha256(b"k3y", b"payload", header) is False


def test_an_empty_secret_verifies_nothing() -> None:
    digest = sign_hmac_sha256(b"", b"payload")
    assert verify_hmac_sha256(b"", b"payload", digest) is False


def test_wrong_argument_types_are_false_not_errors() -> None:
    digest = sign_hmac_sha256(b"k3y", b"payload")
    assert verify_hmac_sha256("k3y", b"payload", digest) is False  # type: ignore[arg-type]
    assert verify_hmac_sha256(b"k3y", "payload", digest) is False  # type: ignore[arg-type]
    assert verify_hmac_sha256(b"k3y", b"payload", 12345) is False  # type: ignore[arg-type]


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signature.hmac, "compare_digest", spy)
    digest = sign_hmac_sha256(b"k3y", b"payload")
    assert verify_hmac_sha256(b"k3y", b"payload", digest)
    assert not verify_hmac_sha256(b"k3y", b"payload", "0" * 64)
    assert len(calls) == 2


def test_find_signature_prefers_the_specific_header_and_ignores_case() -> None:
    assert find_signature({"x-hub-signature-256": "sha256=aa", "x-gitea-signature": "bb"}) == "bb"
    assert find_signature({"X-PLANE-SIGNATURE": "cc"}) == "cc"
    assert find_signature({"Content-Type": "application/json"}) is None
