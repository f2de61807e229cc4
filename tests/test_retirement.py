"""A retired Labs is named as such: redirect, main-site page, silence; the public-record frames as scenarios and cassettes."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from clirun import run_cli
from devmode import run_clean_under_dev_mode
from retired import HISTORY, INSTEAD, MAIN_SITE

from langchain_pplx_labs import (
    ChatPerplexityLabs,
    LabsProtocol,
    PerplexityLabsConnectionError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsRateLimitError,
    PerplexityLabsRetiredError,
    PerplexityLabsServerError,
    PerplexityLabsSilentError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.cli.doctor import _print
from langchain_pplx_labs.doctor.labs import diagnose
from langchain_pplx_labs.doctor.walk import Report
from langchain_pplx_labs.emulator import FAILED_FRAME, RATE_LIMIT_FRAME, LabsEmulator, Scenario
from langchain_pplx_labs.labs.connection import explain_refusal, retired_by_redirect
from langchain_pplx_labs.labs.frames import parse_frame
from langchain_pplx_labs.recording import load_cassette
from langchain_pplx_labs.recording.cassette import CassetteError, parse_cassette
from langchain_pplx_labs.recording.replay import CassetteResponder
from langchain_pplx_labs.recording.transcript import format_transcript

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes" / "test_retirement"
# Both transports: the direct WebSocket, and the polling handshake (the WebSocket refused).
PATHS = pytest.mark.parametrize("refuse_websocket", [False, True], ids=["websocket", "polling"])


def _model(base_url: str, **fields: Any) -> ChatPerplexityLabs:
    settings: dict[str, Any] = {
        "base_url": base_url,
        "max_retries": 2,
        "first_token_timeout": 5,
        "timeout": 30,
    }
    return ChatPerplexityLabs(transport="labs", **{**settings, **fields})


async def _fails(emulator: LabsEmulator, **fields: Any) -> PerplexityLabsError:
    async with _model(emulator.base_url, **fields) as chat:
        with pytest.raises(PerplexityLabsError) as caught:
            await chat.ainvoke("What is the capital of France?")
    return caught.value


# -- redirect ----------------------------------------------------------------------------------------


@PATHS
async def test_a_redirect_to_the_main_site_is_retired_at_the_first_attempt(refuse_websocket: bool) -> None:
    async with LabsEmulator(redirect_to=MAIN_SITE, refuse_websocket=refuse_websocket) as emulator:
        error = await _fails(emulator)
    transport = "polling" if refuse_websocket else "websocket"
    host = emulator.base_url.split("://", 1)[1]
    tried = (
        f"http://{host}/socket.io/?transport=polling&EIO=4"
        if refuse_websocket
        else f"ws://{host}/socket.io/?EIO=4&transport=websocket"
    )
    assert type(error) is PerplexityLabsRetiredError
    assert isinstance(error, PerplexityLabsConnectionError)
    assert not isinstance(error, PerplexityLabsNotFoundError | PerplexityLabsTimeoutError)
    evidence = f"{tried} redirects (HTTP 301) to {MAIN_SITE}, another host"
    assert error.evidence == evidence
    assert str(error) == f"Perplexity Labs is retired: {evidence}. {HISTORY}. Instead, {INSTEAD}"
    assert (error.status, error.url, error.excerpt) == (301, tried, MAIN_SITE)
    # Never followed, never retried, no other transport tried: one redirect answered, on the first attempt.
    assert error.attempts == 1
    assert dict(emulator.refusals) == {transport: 1}
    assert emulator.connections == 0


async def test_a_redirect_to_another_page_of_the_same_host_is_retired_too() -> None:
    async with LabsEmulator(redirect_to="/") as emulator:
        error = await _fails(emulator)
    assert isinstance(error, PerplexityLabsRetiredError)
    assert error.evidence.endswith(
        "/socket.io/?EIO=4&transport=websocket redirects (HTTP 301) to /, a page that is not Engine.IO"
    )


def test_which_redirects_are_a_retirement() -> None:
    polling = "http://labs.example/socket.io/?EIO=4&transport=polling"
    # The same endpoint elsewhere on the host (http to https, a trailing slash) is followed as before.
    assert (
        retired_by_redirect(polling, 301, "https://labs.example/socket.io/?EIO=4&transport=polling") is None
    )
    assert retired_by_redirect(polling, 308, "/socket.io?EIO=4&transport=polling") is None
    assert retired_by_redirect(polling, 200, MAIN_SITE) is None
    assert retired_by_redirect(polling, 302, "") is None
    moved = retired_by_redirect(polling, 302, "https://www.perplexity.ai/labs")
    assert moved is not None
    assert moved.evidence == f"{polling} redirects (HTTP 302) to https://www.perplexity.ai/labs, another host"


def test_a_redirect_that_stays_on_the_endpoint_says_where_to_point_base_url() -> None:
    url = "http://labs.example/socket.io/?EIO=4&transport=polling"
    error = explain_refusal(url, 301, {"location": "https://labs.example/socket.io/"}, "")
    assert type(error) is PerplexityLabsConnectionError
    assert str(error) == (
        f"The server at {url} redirects (HTTP 301) to https://labs.example/socket.io/: set base_url to where it points"
    )


# -- the main site's HTML ----------------------------------------------------------------------------


@PATHS
async def test_the_main_sites_page_where_engineio_was_expected_is_retired(refuse_websocket: bool) -> None:
    async with LabsEmulator(main_site=True, refuse_websocket=refuse_websocket) as emulator:
        error = await _fails(emulator)
    tried = f"{emulator.base_url}/socket.io/?EIO=4&transport=polling"
    assert type(error) is PerplexityLabsRetiredError
    evidence = (
        f"{tried} answers HTTP 200 with a page of Perplexity's main site (title 'Perplexity'), not Engine.IO"
    )
    assert error.evidence == evidence
    assert str(error) == f"Perplexity Labs is retired: {evidence}. {HISTORY}. Instead, {INSTEAD}"
    assert (error.status, error.url) == (200, tried)
    assert error.excerpt.startswith(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Perplexity'
    )
    assert error.attempts == 1
    # The WebSocket (if not refused), engine.io's polling GET, and the one GET that diagnosed it: no retry.
    assert dict(emulator.refusals) == ({"polling": 2} if refuse_websocket else {"websocket": 1, "polling": 2})


Serve = Callable[[int, str], Awaitable[str]]


@pytest.fixture
async def page_server() -> AsyncIterator[Serve]:
    """A plain web server answering every path with one HTML page and status."""
    runners: list[web.AppRunner] = []

    async def serve(status: int, body: str) -> str:
        async def answer(request: web.Request) -> web.Response:
            return web.Response(status=status, text=body, content_type="text/html")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def test_the_main_sites_404_page_is_retired_and_a_plain_404_still_no_endpoint(
    page_server: Serve,
) -> None:
    # A title deep in a long <head>: the diagnosis reads far enough to find it.
    head = "<script>" + "x" * 20_000 + "</script>"
    perplexity = await page_server(
        404, f"<!DOCTYPE html><html><head>{head}<title>Page not found | Perplexity</title>"
    )
    plain = await page_server(404, "<html><title>Not Found</title></html>")
    async with _model(perplexity) as chat, _model(plain) as other:
        with pytest.raises(PerplexityLabsRetiredError) as retired:
            await chat.ainvoke("Q")
        with pytest.raises(PerplexityLabsNotFoundError) as not_found:
            await other.ainvoke("Q")
    assert retired.value.evidence == (
        f"{perplexity}/socket.io/?EIO=4&transport=polling answers HTTP 404 with a page of Perplexity's main "
        "site (title 'Page not found | Perplexity'), not Engine.IO"
    )
    assert retired.value.attempts == 1
    assert not isinstance(not_found.value, PerplexityLabsRetiredError)


def test_a_cloudflare_page_naming_the_site_is_a_block_not_a_retirement() -> None:
    url = "https://www.perplexity.ai/socket.io/?EIO=4&transport=polling"
    page = "<html><title>Just a moment...</title><h1>www.perplexity.ai</h1></html>"
    assert not isinstance(explain_refusal(url, 200, {}, page), PerplexityLabsRetiredError)
    assert not isinstance(explain_refusal(url, 403, {}, page), PerplexityLabsRetiredError)


# -- silence -----------------------------------------------------------------------------------------


@PATHS
async def test_a_socket_that_never_answers_is_a_silent_retired_first_token_timeout(
    refuse_websocket: bool,
) -> None:
    async with LabsEmulator(refuse_websocket=refuse_websocket) as emulator:
        emulator.script(Scenario(stall_after=0))
        error = await _fails(emulator, first_token_timeout=0.3)
    assert type(error) is PerplexityLabsSilentError
    assert isinstance(error, PerplexityLabsRetiredError)
    assert isinstance(error, PerplexityLabsTimeoutError)
    assert (error.which, error.seconds) == ("first_token", 0.3)
    assert str(error).startswith("Perplexity Labs first_token timeout fired after 0.3s (attempt 1 of 1, ")
    evidence = "the server took the question and sent no frame at all in 0.3s"
    assert error.evidence == evidence
    assert error.__notes__ == [
        f"Perplexity Labs may be retired: {evidence}. {HISTORY}. If the model is only slow, raise "
        f"first_token_timeout; otherwise {INSTEAD}"
    ]
    assert error.attempts == 1
    assert len(emulator.requests) == 1  # asked once, with max_retries=2


async def test_a_pooled_socket_that_answered_before_is_only_a_timeout() -> None:
    async with LabsEmulator() as emulator, _model(emulator.base_url, first_token_timeout=0.3) as chat:
        assert (await chat.ainvoke("Warm up.")).content
        emulator.script(Scenario(stall_after=0))
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("Are you there?")
    assert type(caught.value) is PerplexityLabsTimeoutError
    assert emulator.connections == 1


# -- the public record's frames ----------------------------------------------------------------------


@PATHS
async def test_the_public_failed_frame_carries_the_servers_text(refuse_websocket: bool) -> None:
    async with LabsEmulator(refuse_websocket=refuse_websocket) as emulator:
        emulator.script(Scenario(failure=FAILED_FRAME))
        error = await _fails(emulator, model="sonar-reasoning-pro", max_retries=0)
    assert type(error) is PerplexityLabsServerError
    assert error.server_message == "Error in processing query"
    assert (
        str(error)
        == "Perplexity Labs failed the query (model 'sonar-reasoning-pro'): Error in processing query"
    )


@PATHS
async def test_a_rate_limit_is_its_own_error_and_never_retried(refuse_websocket: bool) -> None:
    async with LabsEmulator(refuse_websocket=refuse_websocket) as emulator:
        emulator.script(Scenario(failure=RATE_LIMIT_FRAME))
        error = await _fails(emulator, model="sonar", retry_server_failures=True, max_retries=3)
    assert type(error) is PerplexityLabsRateLimitError
    assert isinstance(error, PerplexityLabsServerError)
    assert (error.error_code, error.server_message, error.model) == ("FREE_TIER_RATE_LIMITED", "", "sonar")
    assert str(error) == (
        "Perplexity Labs refused the query for a rate limit (model 'sonar', error_code FREE_TIER_RATE_LIMITED). "
        "Wait before asking again"
    )
    assert error.attempts == 1
    assert len(emulator.requests) == 1


async def test_a_rate_limit_with_text_says_it() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(failure={**RATE_LIMIT_FRAME, "text": "Too many questions."}))
        error = await _fails(emulator, model="sonar")
    assert isinstance(error, PerplexityLabsRateLimitError)
    assert error.server_message == "Too many questions."
    assert str(error).endswith(
        "error_code FREE_TIER_RATE_LIMITED): Too many questions.. Wait before asking again"
    )


async def test_a_failure_with_only_another_error_code_is_a_server_error_naming_it() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(failure={"status": "failed", "error_code": "GENERIC_FAILED_RESPONSE"}))
        error = await _fails(emulator, model="sonar", max_retries=0)
    assert type(error) is PerplexityLabsServerError
    assert error.server_message == "error_code GENERIC_FAILED_RESPONSE"


def test_error_code_is_parsed_leniently() -> None:
    assert parse_frame(RATE_LIMIT_FRAME).rate_limited
    assert parse_frame({"status": "failed", "error_code": 429}).error_code == 429
    assert not parse_frame({"status": "failed", "error_code": 429}).rate_limited
    assert not parse_frame({"error_code": "FREE_TIER_RATE_LIMITED"}).rate_limited  # not failed: no error


# -- cassettes from public reports -------------------------------------------------------------------


def test_public_failed_frame(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    with pytest.raises(PerplexityLabsServerError) as caught:
        pplx_labs_cassette.invoke("Which models does Perplexity Labs offer?")
    assert type(caught.value) is PerplexityLabsServerError
    assert caught.value.server_message == "Error in processing query"
    assert caught.value.model == "sonar-reasoning-pro"


@pytest.mark.pplx_labs(retry_server_failures=True, max_retries=2)
def test_public_rate_limit(
    pplx_labs_cassette: ChatPerplexityLabs, pplx_labs_replayer: CassetteResponder
) -> None:
    with pytest.raises(PerplexityLabsRateLimitError) as caught:
        pplx_labs_cassette.invoke("Is the free tier rate limited?")
    assert caught.value.error_code == "FREE_TIER_RATE_LIMITED"
    assert pplx_labs_replayer.played == [(str(CASSETTES / "test_public_rate_limit.labs.yaml"), 0)]


def test_public_report_cassettes_say_where_their_frames_came_from() -> None:
    failed = load_cassette(CASSETTES / "test_public_failed_frame.labs.yaml")
    limited = load_cassette(CASSETTES / "test_public_rate_limit.labs.yaml")
    assert (failed.provenance, limited.provenance) == ("public-report", "public-report")
    assert (
        failed.source
        == "https://github.com/xtekky/gpt4free/issues/2861 (2025-03-29), the frame as the reporter pasted it"
    )
    assert limited.source.startswith(
        "https://github.com/henrique-coder/perplexity-webui-scraper tests/test_parser.py"
    )
    assert failed.interactions[0].frames[0].data == {"status": "failed", "text": "Error in processing query"}
    assert limited.interactions[0].frames[0].data == {
        "error_code": "FREE_TIER_RATE_LIMITED",
        "experience": "upgrade",
        "status": "failed",
        "final_sse_message": True,
    }


def test_cassette_show_prints_the_source_and_the_ending() -> None:
    lines = format_transcript(load_cassette(CASSETTES / "test_public_rate_limit.labs.yaml")).splitlines()
    assert lines[2] == (
        "source: https://github.com/henrique-coder/perplexity-webui-scraper tests/test_parser.py (version "
        "0ff78647, after 2025-12-25; read 2026-12-03), the main site's rate-limit message"
    )
    assert lines[-1] == "ended: failed (FREE_TIER_RATE_LIMITED)"
    shown = run_cli("cassette", "show", str(CASSETTES / "test_public_failed_frame.labs.yaml"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].startswith("provenance: public-report · recorded 2025-03-29")
    assert shown.stdout.splitlines()[2] == (
        "source: https://github.com/xtekky/gpt4free/issues/2861 (2025-03-29), the frame as the reporter pasted it"
    )
    assert shown.stdout.splitlines()[-1] == "ended: failed: Error in processing query"


def test_a_public_report_cassette_without_a_source_is_refused() -> None:
    text = "provenance: public-report\nrecorded_at: '2025-03-29'\nmodel: sonar\nclient_version: none\n"
    with pytest.raises(CassetteError) as caught:
        parse_cassette(text, source="x.labs.yaml")
    assert str(caught.value) == (
        "Cassette x.labs.yaml is malformed: document: Value error, a public-report cassette must name its "
        "source (URL or repository path, and date)"
    )
    assert parse_cassette(text + "source: an issue (2025-03-29)\n").source == "an issue (2025-03-29)"


# -- pplx-labs doctor --------------------------------------------------------------------------------


def _lines(report: Report) -> list[str]:
    """The doctor's output, each step's milliseconds masked (they vary from run to run)."""
    out = io.StringIO()
    _print(report, LabsProtocol(), out)
    return [re.sub(r"^([✔✘]) (.+?) +\d+ ms  ", r"\1 \2 | ", line) for line in out.getvalue().splitlines()]


def _retired_advice(base_url: str) -> str:
    return (
        f"What to change: Labs' Socket.IO endpoint is gone: try: pplx-labs doctor --transport web --base-url "
        f"{base_url}; in code, {INSTEAD} (docs/retirement.md)"
    )


@PATHS
async def test_doctor_says_a_redirect_is_retired_line_by_line(refuse_websocket: bool) -> None:
    async with LabsEmulator(redirect_to=MAIN_SITE, refuse_websocket=refuse_websocket) as emulator:
        report = await diagnose(emulator.base_url, "sonar", LabsProtocol(), 5.0)
    host = emulator.base_url.split("://", 1)[1]
    tried = (
        f"http://{host}/socket.io/?transport=polling&EIO=4"
        if refuse_websocket
        else f"ws://{host}/socket.io/?EIO=4&transport=websocket"
    )
    assert _lines(report) == [
        f"pplx-labs doctor: {emulator.base_url}/socket.io/",
        "✔ connect (TCP, TLS) | TCP",
        f"✘ Engine.IO open | HTTP 301 redirect to {MAIN_SITE}",
        "",
        f"Verdict: Labs is retired. {HISTORY}",
        "Failed at: Engine.IO open",
        f"Evidence: {tried} redirects (HTTP 301) to {MAIN_SITE}, another host",
        _retired_advice(emulator.base_url),
    ]
    assert report.as_json()["verdict"] == f"Labs is retired. {HISTORY}"


async def test_doctor_says_the_main_sites_page_is_retired_line_by_line() -> None:
    async with LabsEmulator(main_site=True) as emulator:
        report = await diagnose(emulator.base_url, "sonar", LabsProtocol(), 5.0)
    assert _lines(report) == [
        f"pplx-labs doctor: {emulator.base_url}/socket.io/",
        "✔ connect (TCP, TLS) | TCP",
        "✘ Engine.IO open | HTTP 200: Perplexity's main site, not Engine.IO",
        "",
        f"Verdict: Labs is retired. {HISTORY}",
        "Failed at: Engine.IO open",
        f"Evidence: {emulator.base_url}/socket.io/?EIO=4&transport=polling answers HTTP 200 with a page of "
        "Perplexity's main site (title 'Perplexity'), not Engine.IO",
        _retired_advice(emulator.base_url),
    ]


async def test_doctor_says_a_silent_socket_may_be_retired_line_by_line() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(stall_after=0))
        report = await diagnose(emulator.base_url, "sonar", LabsProtocol(), 0.5)
    assert _lines(report) == [
        f"pplx-labs doctor: {emulator.base_url}/socket.io/",
        "✔ connect (TCP, TLS) | TCP",
        "✔ Engine.IO open | over a direct WebSocket",
        "✔ Socket.IO connect with auth | auth {'jwt'} accepted",
        "✔ WebSocket | direct",
        "✔ question sent | perplexity_labs (sonar)",
        "✘ first frame | Perplexity Labs first_token timeout fired after 0.5s",
        "",
        f"Verdict: Labs may be retired: a retired Labs takes the question and says nothing. {HISTORY}",
        "Failed at: first frame",
        "Evidence: Perplexity Labs first_token timeout fired after 0.5s; events that arrived: none",
        "What to change: a silent server: raise the first-token timeout (--timeout, first_token_timeout=...); "
        "if it stays silent, Labs may have renamed the question event: LabsProtocol(query_event=...), now "
        f"'perplexity_labs'; or, Labs being retired, try: pplx-labs doctor --transport web --base-url "
        f"{emulator.base_url}; in code, {INSTEAD}",
    ]


async def test_doctor_names_a_rate_limit_without_a_retirement_verdict() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(failure=RATE_LIMIT_FRAME))
        report = await diagnose(emulator.base_url, "sonar", LabsProtocol(), 5.0)
    assert _lines(report)[-4:] == [
        "",
        "Failed at: final frame with sources",
        "Evidence: the server refused the question for a rate limit (FREE_TIER_RATE_LIMITED)",
        "What to change: a rate limit: wait before asking again; do not loop (retries only prolong it)",
    ]
    assert report.verdict == ""
    assert "verdict" not in report.as_json()


def test_cli_doctor_on_a_301_to_another_host_says_retired_and_exits_1(
    emulator: LabsEmulator, base_url: str
) -> None:
    emulator.redirect_to = MAIN_SITE
    result = run_cli("doctor", "--transport", "labs", "--base-url", base_url)
    assert result.returncode == 1
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[2].startswith("✘ Engine.IO open")
    assert lines[2].endswith(f"HTTP 301 redirect to {MAIN_SITE}")
    assert lines[4] == f"Verdict: Labs is retired. {HISTORY}"
    host = base_url.split("://", 1)[1]
    assert (
        lines[6]
        == f"Evidence: ws://{host}/socket.io/?EIO=4&transport=websocket redirects (HTTP 301) to {MAIN_SITE}, another host"
    )
    assert dict(emulator.refusals) == {"websocket": 1}  # one request: the verdict came at the first answer
    as_json = json.loads(run_cli("doctor", "--transport", "labs", "--base-url", base_url, "--json").stdout)
    assert as_json["ok"] is False
    assert as_json["verdict"] == f"Labs is retired. {HISTORY}"


# -- docs/retirement.md -----------------------------------------------------------------------------


def test_the_retirement_page_names_every_verdict_and_its_examples_run() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "retirement.md").read_text(encoding="utf-8")
    for name in ("PerplexityLabsRetiredError", "PerplexityLabsSilentError", "PerplexityLabsRateLimitError"):
        assert f"`{name}`" in page
    for source in ("gpt4free/issues/3193", "gpt4free/issues/2861", "henrique-coder/perplexity-webui-scraper"):
        assert source in page
    [example] = re.findall(r"```python\n(.*?)```", page, re.S)
    namespace: dict[str, Any] = {}
    exec(example, namespace)  # the constructors it shows exist and take those arguments
    assert namespace["LabsEmulator"] is LabsEmulator


# -- nothing left open -------------------------------------------------------------------------------

_EACH_VERDICT = """
import asyncio, sys
from langchain_pplx_labs import ChatPerplexityLabs, PerplexityLabsError
from langchain_pplx_labs.emulator import RATE_LIMIT_FRAME, LabsEmulator, Scenario

async def main():
    faults = [
        dict(redirect_to="https://www.perplexity.ai/"),
        dict(redirect_to="https://www.perplexity.ai/", refuse_websocket=True),
        dict(main_site=True),
        dict(main_site=True, refuse_websocket=True),
    ]
    for fault in faults:
        async with LabsEmulator(**fault) as emulator:
            async with ChatPerplexityLabs(transport="labs", base_url=emulator.base_url) as chat:
                try:
                    await chat.ainvoke("Q")
                except PerplexityLabsError as exc:
                    print(type(exc).__name__)
    for scenario in (Scenario(stall_after=0), Scenario(failure=RATE_LIMIT_FRAME)):
        async with LabsEmulator(responder=lambda request: scenario) as emulator:
            async with ChatPerplexityLabs(transport="labs", base_url=emulator.base_url, first_token_timeout=0.3) as chat:
                try:
                    await chat.ainvoke("Q")
                except PerplexityLabsError as exc:
                    print(type(exc).__name__)

asyncio.run(main())
"""


@pytest.mark.system
def test_every_verdict_leaves_nothing_open_under_dev_mode() -> None:
    out = run_clean_under_dev_mode(_EACH_VERDICT)
    assert out.split() == [
        "PerplexityLabsRetiredError",
        "PerplexityLabsRetiredError",
        "PerplexityLabsRetiredError",
        "PerplexityLabsRetiredError",
        "PerplexityLabsSilentError",
        "PerplexityLabsRateLimitError",
    ]
