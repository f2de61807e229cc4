"""Cloudflare's gate in the emulator: TLS on localhost, the ClientHello read before TLS, the challenge, ``__cf_bm``.

The web transport passes it by speaking as Chrome (``impersonate="chrome"``, the default); plain aiohttp
(``impersonate=None``) is challenged, and the model, the CLI and the doctor say so (issue #27's Done-when).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from clirun import run_cli
from test_cli import serving

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.emulator.gate import (
    BROWSER_FINGERPRINTS,
    FingerprintGate,
    LocalhostTLS,
    localhost_tls,
    request_cookies,
)
from langchain_pplx_labs.emulator.ja4 import ja4
from langchain_pplx_labs.errors import PerplexityLabsBlockedError

# These tests ask Labs names over the web on purpose (what code written for Labs does); the warning that
# names the web models is tested in test_models_list.py.
pytestmark = pytest.mark.filterwarnings("ignore:model=.* is a name of Labs:UserWarning")


ANSWER = "Paris is the capital of France [1]. It hosts the government [2]."
CITATIONS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
SESSION = "__Secure-next-auth.session-token=s3ss10n"
# Python's ssl (aiohttp's TLS) to a server name, measured here: docs/browser_voice.md's table.
# aiohttp as this project uses it; the lowest aiohttp we allow (3.11.2) offers no ALPN ("00", 11 extensions).
AIOHTTP_JA4S = {"t13d1812h1_85036bcba153_d41ae481755e", "t13d181100_85036bcba153_d41ae481755e"}


@pytest.fixture(scope="module")
def tls() -> Iterator[LocalhostTLS]:
    made = localhost_tls()
    yield made
    made.remove()


@pytest.fixture
async def gated(tls: LocalhostTLS) -> AsyncIterator[LabsEmulator]:
    emulator = LabsEmulator(ssl_context=tls.server_context, gate=FingerprintGate(), server_name="localhost")
    async with emulator:
        emulator.script(answer=ANSWER, citations=CITATIONS, chunk_size=12)
        yield emulator


def _gate(emulator: LabsEmulator) -> FingerprintGate:
    assert emulator.gate is not None
    return emulator.gate


async def test_impersonating_chrome_passes_the_gate_and_sends_the_session_beside_cf_bm(
    gated: LabsEmulator,
) -> None:
    assert gated.base_url.startswith("https://localhost:")  # a name: the ClientHello carries it (SNI)
    async with ChatPerplexityLabs(
        transport="web", base_url=gated.base_url, verify_ssl=False, cookies=SESSION, max_retries=0
    ) as chat:
        message = await chat.ainvoke("What is the capital of France?")
    assert message.content == ANSWER
    assert message.response_metadata["citations"] == CITATIONS
    session_check, ask = _gate(gated).passages
    assert (session_check.path, ask.path) == ("/api/auth/session", "/rest/sse/perplexity_ask")
    assert session_check.ja4 == ask.ja4 == BROWSER_FINGERPRINTS[-1].ja4  # Chromium 156's, as captured
    assert session_check.admitted
    assert ask.admitted
    assert [name for name, _ in session_check.cookies] == ["__Secure-next-auth.session-token"]
    # The session check's answer set Cloudflare's bot cookie; the ask carries it and the session both.
    sent = dict(ask.cookies)
    assert sent["__Secure-next-auth.session-token"] == "s3ss10n"
    assert len(sent["__cf_bm"]) > 20


async def test_plain_aiohttp_is_challenged_at_once_with_a_typed_error_naming_the_fingerprint(
    gated: LabsEmulator,
) -> None:
    async with ChatPerplexityLabs(
        transport="web", base_url=gated.base_url, verify_ssl=False, cookies=SESSION, impersonate=None
    ) as chat:
        with pytest.raises(PerplexityLabsBlockedError) as caught:
            await chat.ainvoke("What is the capital of France?")
    error = caught.value
    assert error.challenge
    assert error.status == 403
    assert "fingerprint" in str(error)
    assert 'keep impersonate="chrome"' in str(error)
    assert error.attempts == 1  # at once: a challenge is not asked again (max_retries=2 stays unused)
    [passage] = _gate(gated).passages
    assert (passage.path, passage.admitted) == ("/api/auth/session", False)
    assert passage.ja4 in AIOHTTP_JA4S
    assert gated.web.asks == 0


async def test_a_browser_off_the_allowlist_is_challenged_though_it_impersonates(tls: LocalhostTLS) -> None:
    emulator = LabsEmulator(
        ssl_context=tls.server_context, gate=FingerprintGate(allowed=()), server_name="localhost"
    )
    async with emulator:
        chat = ChatPerplexityLabs(
            transport="web", base_url=emulator.base_url, verify_ssl=False, max_retries=0
        )
        with pytest.raises(PerplexityLabsBlockedError) as caught:
            await chat.ainvoke("Q")
        await chat.aclose()
    assert caught.value.challenge
    assert "though this client speaks as 'chrome' (impersonate)" in str(caught.value)
    assert "fingerprint" in str(caught.value)


async def test_the_challenge_is_cloudflares_and_what_passes_gets_cf_bm(
    gated: LabsEmulator, tls: LocalhostTLS
) -> None:
    connector = aiohttp.TCPConnector(ssl=tls.client_context())
    async with (
        aiohttp.ClientSession(connector=connector) as client,
        client.get(gated.base_url + "/api/auth/session") as challenged,
    ):
        page = await challenged.text()
    assert challenged.status == 403
    assert challenged.headers["cf-mitigated"] == "challenge"
    assert challenged.headers["server"] == "cloudflare"
    assert challenged.headers["cf-ray"].endswith("-EMU")
    assert "<title>Just a moment...</title>" in page
    assert "Set-Cookie" not in challenged.headers
    assert _gate(gated).challenged == 1
    async with ChatPerplexityLabs(transport="web", base_url=gated.base_url, verify_ssl=False) as chat:
        await chat.ainvoke("Q")
    assert _gate(gated).admitted == 2


async def test_a_hello_in_pieces_is_read_whole_and_what_is_no_hello_is_dropped(
    gated: LabsEmulator, tls: LocalhostTLS
) -> None:
    hello = _client_hello(tls)
    _, writer = await asyncio.open_connection("127.0.0.1", gated.port)
    for piece in (hello[:3], hello[3:40], hello[40:]):  # a record header cut short, then the rest
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.03)
    await _until(lambda: ja4(hello) in gated.hellos.values())
    writer.close()
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", gated.port)
    writer2.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")  # plain HTTP on the TLS port
    await writer2.drain()
    with contextlib.suppress(ConnectionResetError):  # closed with the request unread: a reset
        assert await asyncio.wait_for(reader2.read(), 5) == b""  # closed, unanswered
    writer2.close()
    assert None in gated.hellos.values()
    async with ChatPerplexityLabs(transport="web", base_url=gated.base_url, verify_ssl=False) as chat:
        assert (await chat.ainvoke("Q")).content == ANSWER  # the gate still serves


def test_a_gate_needs_tls() -> None:
    with pytest.raises(ValueError, match="ssl_context"):
        LabsEmulator(gate=FingerprintGate())


def test_the_allowlist_is_dated_captures() -> None:
    for fingerprint in BROWSER_FINGERPRINTS:
        assert fingerprint.ja4.startswith("t13d")  # TLS 1.3, to a server name, as a browser to the web app
        assert fingerprint.captured[:4].isdigit()
        assert fingerprint.source
    assert request_cookies(["a=1; b=2", "__cf_bm=x", "junk; c="]) == [
        ("a", "1"),
        ("b", "2"),
        ("__cf_bm", "x"),
        ("c", ""),
    ]


def _client_hello(tls: LocalhostTLS) -> bytes:
    """What Python's ssl sends first to localhost: a whole ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = tls.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


async def _until(condition: object, seconds: float = 5.0) -> None:
    assert callable(condition)
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.system  # `pplx-labs serve --tls --gate` beside the test
def test_serve_tls_gate_prints_its_ca_and_the_doctor_names_the_fingerprint_challenge() -> None:
    with serving("--tls", "--gate") as (process, first):
        base_url = first.strip()
        assert base_url.startswith("https://localhost:")
        assert process.stdout is not None
        ca_file = process.stdout.readline().strip()
        assert ca_file.endswith(".pem")
        trusted = ("--base-url", base_url, "--ca-file", ca_file)
        plain = run_cli("doctor", "--transport", "web", *trusted, "--impersonate", "none")
        chrome = run_cli("doctor", "--transport", "web", *trusted)
        asked = run_cli("ask", *trusted, "--impersonate", "none", "What is the capital of France?")
    assert plain.returncode == 1
    [verdict] = [line for line in plain.stdout.splitlines() if line.startswith("Verdict: ")]
    assert "fingerprint" in verdict
    assert "keep impersonate" in verdict
    assert "✘ session check" in plain.stdout
    assert chrome.returncode == 0, chrome.stdout
    assert asked.returncode == 1
    assert asked.stderr.startswith("pplx-labs: error: Cloudflare challenged the session check")
    assert asked.stderr.count("\n") == 1
    assert "fingerprint" in asked.stderr


def test_serve_gate_needs_tls() -> None:
    result = run_cli("serve", "--gate")
    assert result.returncode == 2  # a usage error
    assert result.stderr.startswith("pplx-labs: error: --gate reads the TLS ClientHello: pass --tls too")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["ask", "doctor"])
def test_a_ca_file_that_cannot_be_loaded_is_a_usage_error(command: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    result = run_cli(command, "--ca-file", str(junk), *(["Q"] if command == "ask" else []))
    assert result.returncode == 2
    assert f"argument --ca-file: cannot load CA certificates from '{junk}'" in result.stderr
