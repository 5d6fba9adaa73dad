"""The Telegram notifier against FakeTelegram on 127.0.0.1, alone and behind the real outbox.

Retries sleep through a recording function, so waits cost no time; the outbox's clock is
moved by hand. The last test greps for the bot token everywhere orch could have put it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fakes.servers import FakeTelegram, Recorded, Reply

from orch import config as config_mod
from orch import log
from orch.adapters.http import RetryPolicy
from orch.adapters.notifier_telegram import TelegramNotifier
from orch.adapters.telegram import TelegramClient
from orch.app.wiring import open_runtime
from orch.engine import outbox
from orch.engine.runtime import Runtime
from orch.errors import IntegrationError, OrchError, RetryLater, UsageError

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_wait=5.0, total_time=5.0)
CHAT = "-1001234567890"
T0 = 1_800_000_000.0


class Sleeps:
    """A sleep that records instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


class Clock:
    """The outbox's time, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # trust_env=False: no proxy from the environment between us and 127.0.0.1.
    with httpx.Client(trust_env=False) as client:
        yield client


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def make(
    server: FakeTelegram,
    http: httpx.Client,
    sleeps: Sleeps,
    *,
    token: str | None = None,
    base_url: str | None = None,
    **kw: Any,
) -> TelegramNotifier:
    client = TelegramClient(
        client=http,
        token=token or server.token,
        base_url=base_url or server.url,
        policy=FAST,
        max_wait_s=5.0,
        sleep=sleeps,
    )
    return TelegramNotifier(client=client, chat_id=CHAT, **kw)


def sent(server: FakeTelegram) -> list[dict[str, Any]]:
    with server.lock:
        return list(server.messages)


# -- the notifier alone -------------------------------------------------------------------------


def test_plain_text_arrives_as_text_not_markup(tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps) -> None:
    text = 'ORCH-7 <b>merged</b> & deployed: a<b, "x" > 1 &amp; <script>'
    make(tg, http, sleeps).send(text)
    [msg] = sent(tg)
    assert msg["visible"] == text  # what people see is exactly what orch wrote
    assert msg["parse_mode"] == "HTML"
    assert "<b>" not in msg["text"] and "&lt;b&gt;" in msg["text"]
    assert msg["chat_id"] == CHAT
    assert "message_thread_id" not in msg and "disable_notification" not in msg


def test_topic_and_silence_are_passed_on(tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps) -> None:
    make(tg, http, sleeps, thread_id=42, disable_notification=True).send("quiet")
    [msg] = sent(tg)
    assert msg["message_thread_id"] == 42
    assert msg["disable_notification"] is True


def test_a_long_message_arrives_in_two_parts_in_order(
    tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    lines = [f"{i:04d} build & test <ok>".ljust(49, ".") for i in range(100)]
    text = "\n".join(lines)
    assert len(text) == 4999
    make(tg, http, sleeps).send(text)
    msgs = sent(tg)
    assert len(msgs) == 2
    assert [m["message_id"] for m in msgs] == [1, 2]
    assert all(len(m["text"]) <= 4096 for m in msgs)
    # The cut is at a line end (the break itself is dropped): nothing lost, nothing reordered.
    assert msgs[0]["visible"] + "\n" + msgs[1]["visible"] == text


def test_short_flood_is_slept_through_and_delivered_once(
    tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    tg.flood(1, retry_after=1)
    make(tg, http, sleeps).send("after the flood")
    assert sleeps.calls == [1.0]
    assert tg.count == 2
    assert [m["visible"] for m in sent(tg)] == ["after the flood"]


def test_long_flood_raises_retry_later_with_telegrams_delay(
    tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    tg.flood(1, retry_after=60)
    with pytest.raises(RetryLater) as info:
        make(tg, http, sleeps).send("later")
    assert info.value.delay == 60
    assert sleeps.calls == []  # not slept through: the outbox waits, not this process
    assert sent(tg) == []
    assert tg.token not in str(info.value)


def test_other_failures_are_integration_errors_without_the_token(
    tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    wrong = "987654321:BBWrongTokenWrongTokenWrong_abc"
    with pytest.raises(IntegrationError) as unauthorized:
        make(tg, http, sleeps, token=wrong).send("x")
    assert unauthorized.value.status == 401
    assert wrong not in str(unauthorized.value) and wrong not in str(unauthorized.value.url)
    assert "bot***" in str(unauthorized.value)

    with FakeTelegram() as gone:
        url = gone.url
    with pytest.raises(IntegrationError) as refused:
        make(tg, http, sleeps, base_url=url).send("x")
    assert refused.value.status is None
    assert tg.token not in str(refused.value)


def test_a_flood_in_a_later_part_resumes_without_resending_earlier_parts(
    http: httpx.Client, sleeps: Sleeps
) -> None:
    class FloodsTheSecondSend(FakeTelegram):
        def route(self, req: Recorded) -> Reply:
            if len(self.requests) == 2:
                body = {"ok": False, "error_code": 429, "parameters": {"retry_after": 30}}
                return Reply(429, body, {"Retry-After": "30"})
            return super().route(req)

    text = "\n".join(f"line {i:04d} ".ljust(49, "-") for i in range(200))  # 3 parts
    with FloodsTheSecondSend() as server:
        notifier = make(server, http, sleeps)
        with pytest.raises(RetryLater):
            notifier.send(text)
        assert len(sent(server)) == 1
        notifier.send(text)  # what the outbox does after the delay
        parts = [m["visible"] for m in sent(server)]
    assert len(parts) == 3
    assert "\n".join(parts) == text


def test_an_empty_message_is_not_sent(tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps) -> None:
    make(tg, http, sleeps).send(" \n ")
    assert tg.count == 0


def test_an_empty_chat_id_is_refused(tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps) -> None:
    client = TelegramClient(client=http, token=tg.token, base_url=tg.url)
    with pytest.raises(UsageError):
        TelegramNotifier(client=client, chat_id=" ")
    assert tg.token not in repr(TelegramNotifier(client=client, chat_id=CHAT))


# -- behind the real outbox ---------------------------------------------------------------------


@pytest.fixture
def loud() -> Iterator[None]:
    """orch.log at debug, written to this test's stderr, so that every log line is grepped."""
    log.configure(level="debug", fmt="text")
    yield
    log.configure()  # back to what the (cleaned) environment says, as any first log line would


def runtime(tmp_path: Path, notifier: TelegramNotifier, clock: Clock) -> Runtime:
    cfg = config_mod.build({"store": {"path": str(tmp_path / "orch.db")}}, cwd=tmp_path, environ={})
    rt = open_runtime(cfg, actor="test")
    rt.notifier = notifier
    rt.clock = clock
    return rt


def test_outbox_keeps_a_flooded_message_delivers_it_once_and_never_stores_the_token(
    tmp_path: Path,
    tg: FakeTelegram,
    http: httpx.Client,
    sleeps: Sleeps,
    loud: None,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx logs every request URL at INFO: it must come out redacted
    clock = Clock(T0)
    rt = runtime(tmp_path, make(tg, http, sleeps), clock)
    errors: list[str] = []
    try:
        # Flood control longer than max_wait_s: the message stays, due again after the delay.
        rt.store.notify("ORCH-1:merged", None, "ORCH-1 <merged> & deployed", now=clock.now)
        tg.flood(1, retry_after=60)
        assert outbox.flush(rt) == 0
        [row] = rt.store.outbox_rows()
        assert row.sent_at is None
        assert row.next_at == T0 + 60
        assert "429" in row.last_error
        errors.append(row.last_error)

        # Not due yet: nothing is sent, not even tried.
        clock.now = T0 + 59
        assert outbox.flush(rt) == 0
        assert tg.count == 1

        # The flood is over and the delay has passed: delivered exactly once.
        clock.now = T0 + 61
        assert outbox.flush(rt) == 1
        assert rt.store.outbox_rows() == []
        assert outbox.flush(rt) == 0
        assert [m["visible"] for m in sent(tg)] == ["ORCH-1 <merged> & deployed"]

        # Any other failure backs off; the server even echoes the token in its error body.
        rt.store.notify("ORCH-2:failed", None, "ORCH-2 failed", now=clock.now)
        tg.fail_next(3, 500, body={"ok": False, "description": f"internal error for bot{tg.token}"})
        assert outbox.flush(rt) == 0
        [row] = rt.store.outbox_rows()
        assert row.next_at == clock.now + outbox.BACKOFF_S[0]
        assert "500" in row.last_error
        errors.append(row.last_error)
        clock.now = row.next_at + 1
        assert outbox.flush(rt) == 1

        # Errors raised straight out of the notifier, for the grep below.
        for fault in (lambda: tg.flood(1, retry_after=60), lambda: tg.fail_next(3, 502)):
            fault()
            with pytest.raises(OrchError) as info:
                rt.notifier.send("direct")
            errors.append(str(info.value))
            errors.append(repr(info.value))
            errors.append(str(getattr(info.value, "url", "")))
        errors.append(repr(rt.notifier))
        db = tmp_path / "orch.db"
        stored = _db_bytes(db)  # while open: the WAL still holds the recent writes
    finally:
        rt.close()
    stored += _db_bytes(db)

    assert len(sent(tg)) == 2
    token = tg.token
    needles = {token, quote(token, safe=""), token.split(":", 1)[1]}
    assert b"ORCH-1 <merged> & deployed" in stored  # the grep does see what the outbox wrote
    captured = capfd.readouterr()
    assert "notify_later" in captured.err and "notify_failed" in captured.err  # the grep saw the logs
    assert "HTTP Request" in caplog.text
    for needle in needles:
        assert needle.encode() not in stored
        assert all(needle not in e for e in errors), errors
        assert needle not in captured.err and needle not in captured.out
        assert needle not in caplog.text


def _db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


# -- as the Bot API really answers (issue 15) ---------------------------------------------------


def test_links_never_unfold_into_previews(tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps) -> None:
    make(tg, http, sleeps).send("ENG-1 merged: http://gitea.invalid/acme/app/pulls/1")
    (msg,) = sent(tg)
    assert msg["link_preview_options"] == {"is_disabled": True}
    assert "disable_notification" not in msg  # loud unless configured


def test_disable_notification_is_configurable(tmp_path: Path) -> None:
    raw = {
        "notifier": {"kind": "telegram"},
        "telegram": {"chat_id": CHAT, "disable_notification": True},
    }
    cfg = config_mod.build(raw, cwd=tmp_path, environ={"TELEGRAM_BOT_TOKEN": "1:x"})
    assert cfg.telegram.disable_notification is True
    env = {"TELEGRAM_BOT_TOKEN": "1:x", "ORCH_TELEGRAM_DISABLE_NOTIFICATION": "false"}
    assert config_mod.build(raw, cwd=tmp_path, environ=env).telegram.disable_notification is False
    default = config_mod.build({}, cwd=tmp_path, environ={})
    assert default.telegram.disable_notification is False


def test_a_migrated_group_is_followed_and_the_operator_told_once_per_process(
    tmp_path: Path, tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps, capsys: pytest.CaptureFixture[str]
) -> None:
    from orch.store import Store

    tg.migrate(CHAT, -1009876543210)
    db = tmp_path / "orch.db"
    first = Store.open(db)
    log.configure(level="warning", fmt="text")
    try:
        make(tg, http, sleeps, store=first).send("ENG-1 merged")
        assert {str(m["chat_id"]) for m in sent(tg)} == {"-1009876543210"}
        notice, message = (m["visible"] for m in sent(tg))
        assert message == "ENG-1 merged"  # the message went to the new chat
        assert 'chat_id = "-1009876543210"' in notice  # and the chat is told how to fix it
        assert "telegram_chat_migrated" in capsys.readouterr().err  # and so is the operator
        # The next process sends there directly: no failed request to the old id first.
        before = tg.count
        second = Store.open(db)
        make(tg, http, sleeps, store=second).send("ENG-2 merged")
        assert tg.count - before == 1 and sent(tg)[-1]["chat_id"] == "-1009876543210"
        second.close()
    finally:
        first.close()
        log.configure()


def test_a_flood_wait_is_kept_in_the_db_for_the_next_process(
    tmp_path: Path, tg: FakeTelegram, http: httpx.Client, sleeps: Sleeps
) -> None:
    from orch.store import Store

    db = tmp_path / "orch.db"
    clock = Clock(T0)
    a, b = Store.open(db), Store.open(db)
    try:
        tg.flood(1, retry_after=40)
        with pytest.raises(RetryLater):
            make(tg, http, sleeps, store=a, clock=clock).send("first")
        before = tg.count
        clock.now += 30  # another process, 30 s later: Telegram's 40 s are not over
        with pytest.raises(RetryLater) as info:
            make(tg, http, sleeps, store=b, clock=clock).send("second")
        assert tg.count == before  # not even tried
        assert 9 <= info.value.delay <= 10
        clock.now += 11
        make(tg, http, sleeps, store=b, clock=clock).send("second")
        assert [m["visible"] for m in sent(tg)] == ["second"]
    finally:
        a.close()
        b.close()
