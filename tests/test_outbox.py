"""The outbox is at least once (docs/outbox.md): a sender killed between the send and the
mark costs one duplicate, never a lost message; senders running at once send each
message once. Real orch processes, a fake Telegram on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import Setup
from fakes.servers import FakeTelegram

from orch.app.wiring import open_runtime
from orch.engine import outbox
from orch.store.db import CLAIM_S

CHAT = "-1001234567890"


@pytest.fixture
def tg(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    fake = FakeTelegram().start()
    setup.update_config(
        {"notifier": {"kind": "telegram"}, "telegram": {"base_url": fake.url, "chat_id": CHAT}}
    )
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake.token)
    yield fake
    fake.stop()


def _texts(tg: FakeTelegram) -> list[str]:
    return [m["visible"] for m in tg.messages]


def test_a_sender_killed_after_the_send_leaves_one_resend_never_a_loss(
    setup: Setup, tg: FakeTelegram
) -> None:
    rt = open_runtime(setup.config(), actor="test")  # the Telegram notifier, in this process
    rt.store.notify("test:ESCALATED", None, "ENG-1 ESCALATED at development", now=rt.now())
    env = {"TELEGRAM_BOT_TOKEN": tg.token}
    killed = setup.orch("task", "list", env={**env, "ORCH_FAULT": "after_notify_sent"})
    assert killed.returncode == -9  # SIGKILL: sent, not marked
    assert _texts(tg) == ["ENG-1 ESCALATED at development"]
    assert setup.orch("task", "list", env=env).returncode == 0  # the dead sender's claim is still young
    assert len(tg.messages) == 1
    now = [rt.now() + CLAIM_S + 1]
    rt.clock = lambda: now[0]
    assert outbox.flush(rt) == 1  # the claim expired: sent again
    assert _texts(tg) == ["ENG-1 ESCALATED at development"] * 2
    (row,) = rt.store.outbox_rows(pending_only=False)
    assert row.sent_at is not None and row.attempts == 2
    now[0] += 3600
    assert outbox.flush(rt) == 0 and len(tg.messages) == 2  # marked: never again
    rt.close()


def test_senders_at_the_same_time_send_each_message_once(setup: Setup, tg: FakeTelegram) -> None:
    rt = setup.runtime()
    texts = [f"ENG-{n} development -> review" for n in range(12)]
    for n, text in enumerate(texts):
        rt.store.notify(f"test:{n}", None, text, now=rt.now())
    rt.store.close()  # not rt.close(): that would flush them here
    base = setup.orch_popen  # three processes flush the same outbox at once
    procs = [base("task", "list", env={"TELEGRAM_BOT_TOKEN": tg.token}) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert sorted(_texts(tg)) == sorted(texts)  # every message, none twice
    rt = setup.runtime()
    assert rt.store.outbox_rows(pending_only=True) == []
    assert all(r.attempts == 1 for r in rt.store.outbox_rows(pending_only=False))
    rt.close()
