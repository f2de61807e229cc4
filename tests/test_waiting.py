"""The query's inbox and its single re-arming deadline timer."""

from __future__ import annotations

import asyncio
import time

import pytest

from langchain_pplx_labs._waiting import Deadline, Inbox
from langchain_pplx_labs.errors import PerplexityLabsTimeoutError


async def test_inbox_keeps_order_and_wakes_a_waiting_get() -> None:
    inbox = Inbox()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not getter.done()
    inbox.put(("frame", 1))
    inbox.put(("frame", 2))
    assert await getter == ("frame", 1)
    assert inbox
    assert inbox.take() == ("frame", 2)
    assert not inbox


async def test_expiry_while_waiting_raises_the_named_timeout() -> None:
    deadline = Deadline(time.monotonic(), total=None)
    deadline.applies("idle", 0.05)
    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        await deadline.wait(lambda: asyncio.sleep(5))
    assert (caught.value.which, caught.value.seconds) == ("idle", 0.05)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_moving_the_deadline_on_keeps_a_wait_alive() -> None:
    started = time.monotonic()
    deadline = Deadline(started, total=None)
    said: list[int] = []
    for turn in range(6):  # six waits of 30 ms, each within its own 80 ms: 180 ms in all
        deadline.applies("idle", 0.08)
        said.append(await deadline.wait(lambda turn=turn: asyncio.sleep(0.03, turn)))
    deadline.cancel()
    assert said == list(range(6))  # every wait gave its result: none timed out
    assert time.monotonic() - started > 0.08  # longer than one limit lasts: each wait moved the deadline on


async def test_total_caps_every_later_limit() -> None:
    deadline = Deadline(time.monotonic(), total=0.1)
    deadline.applies("first_token", 60)
    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        await deadline.wait(lambda: asyncio.sleep(5))
    assert caught.value.which == "total"


async def test_expiry_while_nobody_waits_is_raised_by_the_next_wait() -> None:
    deadline = Deadline(time.monotonic(), total=None)
    deadline.applies("idle", 0.02)
    await asyncio.sleep(0.1)  # the caller is busy between frames
    with pytest.raises(PerplexityLabsTimeoutError):
        await deadline.wait(lambda: asyncio.sleep(0))


async def test_a_shorter_limit_rearms_the_timer_earlier() -> None:
    deadline = Deadline(time.monotonic(), total=None)
    deadline.applies("first_token", 60)
    deadline.applies("handshake", 0.05)
    started = time.monotonic()
    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        await deadline.wait(lambda: asyncio.sleep(5))
    assert caught.value.which == "handshake"
    assert time.monotonic() - started < 5


async def test_an_outside_cancel_stays_a_cancel() -> None:
    deadline = Deadline(time.monotonic(), total=None)
    deadline.applies("idle", 10)
    waiting = asyncio.create_task(deadline.wait(lambda: asyncio.sleep(5)))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    deadline.cancel()
