"""User-given headers and cookies reach the server but never a repr, a log line or a serialized model."""

from __future__ import annotations

import logging

import pytest
from langchain_core.load import dumpd, dumps

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.errors import PerplexityLabsError

COOKIE = "cf_clearance=SECRET-cookie-0f1e2d3c4b5a"
TOKEN = "Bearer SECRET-token-a1b2c3d4"
SECRETS = ("SECRET-cookie-0f1e2d3c4b5a", "SECRET-token-a1b2c3d4")


def _secret_model(base_url: str, **overrides: object) -> ChatPerplexityLabs:
    return ChatPerplexityLabs(
        transport="labs",
        base_url=base_url,
        model="sonar",
        default_headers={"Cookie": COOKIE, "Authorization": TOKEN},
        max_retries=1,
        **overrides,  # type: ignore[arg-type]
    )


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret leaked: {text[:2000]}"


def test_repr_and_str_hide_header_values(base_url: str) -> None:
    chat = _secret_model(base_url)
    _assert_clean(repr(chat))
    _assert_clean(str(chat))
    _assert_clean(repr(chat._settings()))  # what the client, pool and their logs hold
    assert chat.default_headers == {"Cookie": COOKIE, "Authorization": TOKEN}


def test_serialized_model_masks_credential_headers(base_url: str) -> None:
    chat = _secret_model(base_url)
    text = dumps(chat)
    _assert_clean(text)
    _assert_clean(repr(dumpd(chat)))
    # The masked value points at the env var a loader reads it from.
    assert "PPLX_LABS_COOKIE" in text
    assert "PPLX_LABS_AUTHORIZATION" in text


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything at DEBUG from every logger (ours, socketio, engineio, aiohttp, asyncio)."""
    caplog.set_level(logging.DEBUG)
    for name in ("langchain_pplx_labs", "socketio", "engineio", "aiohttp", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


async def test_headers_are_sent_but_never_logged(
    base_url: str, emulator: LabsEmulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    emulator.script(answer="ok")
    async with _secret_model(base_url) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == "ok"
    assert emulator.handshake_headers, "the emulator saw no handshake"
    assert emulator.handshake_headers[0].get("Cookie") == COOKIE  # the test is not vacuous
    assert emulator.handshake_headers[0].get("Authorization") == TOKEN
    assert debug_logs.records, "nothing was logged at DEBUG"
    _assert_clean(debug_logs.text)


@pytest.mark.parametrize(
    "fault", [{"blocked": True}, {"drop_after": 0}, {"garbage_after": 0}, {"fail": "boom"}], ids=str
)
async def test_failures_do_not_log_or_carry_headers(
    base_url: str, emulator: LabsEmulator, debug_logs: pytest.LogCaptureFixture, fault: dict[str, object]
) -> None:
    if fault.get("blocked"):
        emulator.blocked = True
    else:
        emulator.script(**fault)
    async with _secret_model(base_url, idle_timeout=2, first_token_timeout=2) as chat:
        with pytest.raises(PerplexityLabsError) as caught:
            await chat.ainvoke("hello")
    _assert_clean(debug_logs.text)
    _assert_clean(str(caught.value) + repr(caught.value) + repr(vars(caught.value)))


async def test_web_asks_send_the_cookie_but_never_log_it(
    base_url: str, emulator: LabsEmulator, debug_logs: pytest.LogCaptureFixture
) -> None:
    emulator.script(answer="ok")
    chat = ChatPerplexityLabs(
        transport="web",
        base_url=base_url,
        model="sonar",
        default_headers={"Cookie": COOKIE, "Authorization": TOKEN},
        max_retries=0,
    )
    async with chat:
        message = await chat.ainvoke("hello")
    assert message.content == "ok"
    assert emulator.web.asks == 1
    assert emulator.web.headers[-1].get("Cookie") == COOKIE  # the ask carried it: the test is not vacuous
    assert debug_logs.records, "nothing was logged at DEBUG"
    _assert_clean(debug_logs.text)
    _assert_clean(" ".join(repr(record.args) for record in debug_logs.records))
