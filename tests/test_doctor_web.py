"""``pplx-labs doctor --transport web``: the web app's steps, each fault named line by line with its advice."""

from __future__ import annotations

import io
import json
import re
import shlex
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import devmode
import pytest
from aiohttp import web
from clirun import run_cli
from test_cli import serving as serving_cli
from test_doctor import assert_clean_walk, doctor_walks_under_dev_mode
from test_proxy_tls import _free_port
from webfake import FakeWebApp, serving, streaming

from langchain_pplx_labs import LabsProtocol
from langchain_pplx_labs.cli.doctor import _print
from langchain_pplx_labs.doctor.walk import Report, web_walk_command
from langchain_pplx_labs.doctor.web import diagnose_web
from langchain_pplx_labs.emulator import FAILED_FRAME, LabsEmulator, Scenario
from langchain_pplx_labs.emulator.script import Emit, Stall
from langchain_pplx_labs.emulator.web import WebVariant
from langchain_pplx_labs.recording import load_cassette
from langchain_pplx_labs.settings import BROWSER_USER_AGENT

ANSWER = "Paris is the capital of France [1]."
SOURCES = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
ASKED = "HTTP 200 text/event-stream; model_preference 'turbo', mode 'concise'"
STEP_NAMES = [
    "connect (TCP, TLS)",
    "session check",
    "ask accepted",
    "first SSE message",
    "first answer text",
    "final message with sources",
]
SIGN_IN = (
    "send a signed-in browser session's cookies (__Secure-next-auth.session-token) in $PPLX_LABS_COOKIES "
    "(cookies=...)"
)
TEXT_STREAM = (
    "LabsProtocol(web_params={'use_schematized_api': False, 'send_back_text_in_streaming_api': True})"
)
RAISE_IT = "raise the timeout (--timeout; first_token_timeout=... and idle_timeout=... in code)"


@pytest.fixture(autouse=True)
def _no_cookies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPLX_LABS_COOKIES", raising=False)


async def _walk(
    base_url: str, seconds: float = 5.0, *, model: str = "auto", impersonate: str | None = "chrome"
) -> Report:
    return await diagnose_web(base_url, model, LabsProtocol(), seconds, impersonate=impersonate)


def _masked(text: str) -> list[str]:
    """The doctor's output lines, each step's milliseconds masked as ``|`` (they vary from run to run)."""
    return [re.sub(r"^([✔✘]) (.+?) +\d+ ms  ", r"\1 \2 | ", line) for line in text.splitlines()]


def _lines(report: Report) -> list[str]:
    out = io.StringIO()
    _print(report, LabsProtocol(), out)
    return _masked(out.getvalue())


def _header(base_url: str) -> str:
    return f"pplx-labs doctor: {base_url}/rest/sse/perplexity_ask"


HEALTHY_START = ["✔ connect (TCP, TLS) | TCP", "✔ session check | anonymous (no cookies sent)"]


def _failed(step: str, detail: str) -> list[str]:
    """The lines that name a failing ``step``: its cross and ``detail``, a blank line, then ``Failed at:``."""
    return [f"✘ {step} | {detail}", "", f"Failed at: {step}"]


def _accepted(base_url: str) -> list[str]:
    """The first lines of a walk of the emulator whose ask was accepted: the header and three passed steps."""
    return [_header(base_url), *HEALTHY_START, f"✔ ask accepted | {ASKED}"]


# -- against the emulator ----------------------------------------------------------------------


async def test_a_healthy_web_app_passes_every_step_line_by_line() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(answer=ANSWER, citations=SOURCES))
        report = await _walk(emulator.base_url)
    assert _lines(report) == [
        *_accepted(emulator.base_url),
        "✔ first SSE message | event 'message', status PENDING",
        "✔ first answer text | 'Paris is the capital of ' (message 1)",
        "✔ final message with sources | 2 messages, 2 sources",
        f"The web app answered: {ANSWER}",
    ]
    assert report.ok
    assert emulator.web.asks == 1
    assert emulator.web.session_checks == 1


async def test_a_signed_in_session_is_named_and_its_cookie_never_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PPLX_LABS_COOKIES", "__Secure-next-auth.session-token=s3cr3t-token-value")
    async with LabsEmulator(web_variant=WebVariant(anonymous="rate_limited")) as emulator:
        emulator.script(Scenario(answer=ANSWER, citations=[]))
        report = await _walk(emulator.base_url)
    lines = _lines(report)
    assert lines[2:4] == [
        "✔ session check | signed in (the session names a user); quota: Pro Search 300 left, Deep Research "
        "20 left, Labs 50 left, Browser Agent 10 left",
        "✔ ask accepted | HTTP 200 text/event-stream; model_preference 'pplx_pro', mode 'copilot'",
    ]
    assert lines[-2:] == [
        "✔ final message with sources | 2 messages, 0 sources",
        f"The web app answered: {ANSWER}",
    ]
    assert "s3cr3t" not in "\n".join(lines) + json.dumps(report.as_json())


async def test_cookies_that_are_not_signed_in_are_said_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPLX_LABS_COOKIES", "cf_clearance=abc")
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(answer="Paris [1].", citations=SOURCES[:1]))  # one message: short and final
        report = await _walk(emulator.base_url)
    lines = _lines(report)
    assert lines[2] == "✔ session check | anonymous: the cookies sent ($PPLX_LABS_COOKIES) are not signed in"
    assert lines[-2:] == [
        "✔ final message with sources | 1 message, 1 source",
        "The web app answered: Paris [1].",
    ]


async def test_a_cloudflare_block_fails_the_session_check_with_cookie_and_network_advice() -> None:
    async with LabsEmulator(blocked=True) as emulator:
        report = await _walk(emulator.base_url)
    assert _lines(report) == [
        _header(emulator.base_url),
        "✔ connect (TCP, TLS) | TCP",
        *_failed("session check", "HTTP 403 from Cloudflare"),
        'Evidence: HTTP 403: \'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>\\n'
        '<meta http-equiv="refresh" content="390"></head>…\'',
        "What to change: a Cloudflare page: the web app refuses this client from here. Send a browser's "
        "cookies ($PPLX_LABS_COOKIES / cookies=...), try another network, or a proxy (--proxy / proxy=...)",
    ]
    assert emulator.web.asks == 0  # the question never went out


async def test_an_anonymous_rate_limit_is_named_with_wait_or_sign_in() -> None:
    async with LabsEmulator(web_variant=WebVariant(anonymous="rate_limited")) as emulator:
        report = await _walk(emulator.base_url)
    assert _lines(report) == [
        *_accepted(emulator.base_url),
        "✔ first SSE message | event 'message', status failed",
        *_failed("first answer text", "rate limited (FREE_TIER_RATE_LIMITED)"),
        "Evidence: the server refused the question for a rate limit (FREE_TIER_RATE_LIMITED); asked anonymously",
        "What to change: a rate limit: wait before asking again, do not loop (retries only prolong it); "
        f"anonymous asks are limited first: sign in, {SIGN_IN}",
    ]
    assert report.verdict == ""


async def test_a_redirect_of_the_web_app_is_a_moved_endpoint_not_a_retirement() -> None:
    async with LabsEmulator(redirect_to="https://www.perplexity.ai/") as emulator:
        report = await _walk(emulator.base_url)
    assert _lines(report) == [
        _header(emulator.base_url),
        "✔ connect (TCP, TLS) | TCP",
        *_failed("session check", "HTTP 301 redirect to https://www.perplexity.ai/"),
        f"Evidence: HTTP 301 at {emulator.base_url}/api/auth/session: 'https://www.perplexity.ai/'",
        "What to change: the web endpoint moved (a redirect at /api/auth/session): check --base-url (and "
        "cookies, if it leads to a sign-in page); set LabsProtocol(web_session_path=...) to where it is now "
        "(--protocol FILE.json)",
    ]
    assert "verdict" not in report.as_json()


async def test_the_main_sites_page_instead_of_a_json_session_names_web_session_path() -> None:
    async with LabsEmulator(main_site=True) as emulator:
        report = await _walk(emulator.base_url)
    lines = _lines(report)
    assert lines[:3] == [
        _header(emulator.base_url),
        "✔ connect (TCP, TLS) | TCP",
        "✘ session check | HTTP 200 but text/html, not a JSON session",
    ]
    assert lines[3:5] == ["", "Failed at: session check"]
    assert re.fullmatch(
        rf"Evidence: HTTP 200 at {re.escape(emulator.base_url)}/api/auth/session: "
        r"'<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Perplexity</title>.*'",
        lines[5],
    )
    assert lines[6:] == [
        "What to change: the web endpoint moved (no JSON session at /api/auth/session): check --base-url; "
        "set LabsProtocol(web_session_path=...) to where it is now (--protocol FILE.json)"
    ]
    assert emulator.web.asks == 0


async def test_a_silent_stream_fails_at_the_first_message_with_timeout_advice() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(answer=ANSWER, stall_after=0))
        report = await _walk(emulator.base_url, 0.5)
    assert _lines(report) == [
        *_accepted(emulator.base_url),
        *_failed("first SSE message", "Perplexity's web app first_token timeout fired after 0.5s"),
        "Evidence: Perplexity's web app first_token timeout fired after 0.5s; SSE messages that arrived: none",
        f"What to change: a silent event stream: {RAISE_IT}; if it stays silent, the web app may want other "
        "request fields: LabsProtocol(web_params=..., web_version=...) (--protocol FILE.json), now version '2.18'",
    ]


async def test_messages_without_answer_text_point_at_the_stream_format() -> None:
    def unknown_events(request: Any) -> list[Any]:
        return [Emit("thread_widgets", {"widgets": []}), Emit("thread_widgets", {"widgets": [1]}), Stall(30)]

    async with LabsEmulator(unknown_events) as emulator:
        report = await _walk(emulator.base_url, 0.5)
    assert _lines(report)[-6:] == [
        "✔ first SSE message | event 'thread_widgets'",
        *_failed("first answer text", "Perplexity's web app first_token timeout fired after 0.5s"),
        "Evidence: Perplexity's web app first_token timeout fired after 0.5s; SSE messages that arrived: 2 "
        "(thread_widgets ×2)",
        "What to change: messages came, none with answer text this client reads: if the web app is only "
        f"slow, {RAISE_IT}; else its stream may have changed: try the older text stream, {TEXT_STREAM}, or "
        "report a bug with this output",
    ]


async def test_a_failed_frame_shows_the_servers_text() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(failure=FAILED_FRAME))
        report = await _walk(emulator.base_url)
    assert _lines(report) == [
        *_accepted(emulator.base_url),
        "✔ first SSE message | event 'message', status failed",
        *_failed("first answer text", "status failed: 'Error in processing query'"),
        "Evidence: the server answered status failed: 'Error in processing query'",
        "What to change: the web app failed the question: try another --model (auto, turbo) or later; if it "
        "keeps failing, the request may lack a field it now wants: LabsProtocol(web_params=..., "
        "web_version=...) (--protocol FILE.json)",
    ]


async def test_a_failure_after_answer_text_fails_the_final_step() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(
            Scenario(answer=ANSWER, fail="Error in processing query", fail_after=1, chunk_size=10)
        )
        report = await _walk(emulator.base_url)
    assert _lines(report)[4:7] == [
        "✔ first SSE message | event 'message', status PENDING",
        "✔ first answer text | 'Paris is t' (message 1)",
        "✘ final message with sources | status failed: 'Error in processing query'",
    ]


async def test_a_refused_port_fails_at_connect() -> None:
    port = _free_port()
    # Plain aiohttp: the evidence quoted is the client's own text (curl's is the next test's).
    report = await _walk(f"http://127.0.0.1:{port}", impersonate=None)
    refused = (
        f"Could not connect to http://127.0.0.1:{port} over web: Cannot connect to host 127.0.0.1:{port}: "
        f"connection refused (Connect call failed ('127.0.0.1', {port}))"  # without aiohttp's "ssl:default"
    )
    assert _lines(report) == [
        _header(f"http://127.0.0.1:{port}"),
        *_failed("connect (TCP, TLS)", refused),
        f"Evidence: {refused}",
        "What to change: nothing answers at that host and port: check --base-url, the network or a proxy",
    ]


async def test_a_refused_port_fails_at_connect_in_the_impersonating_clients_words() -> None:
    port = _free_port()
    report = await _walk(f"http://127.0.0.1:{port}")
    lines = _lines(report)
    assert lines[1].startswith(
        f"✘ connect (TCP, TLS) | Could not connect to http://127.0.0.1:{port} over web: "
        f"curl: (7) Failed to connect to 127.0.0.1:{port}"  # without curl_cffi's "Failed to perform, "
    )
    assert lines[-1] == (
        "What to change: nothing answers at that host and port: check --base-url, the network or a proxy"
    )


# -- HTTP answers of the ask alone (the hand-written fake) -------------------------------------


@pytest.fixture
async def fake_web() -> AsyncIterator[FakeWebApp]:
    async with serving() as fake:
        yield fake


async def _refused_ask(fake: FakeWebApp, status: int, **response: Any) -> list[str]:
    async def refuse(request: web.Request) -> web.StreamResponse:
        if "json" in response:
            return web.json_response(response["json"], status=status)
        return web.Response(status=status, **response)

    fake.ask = refuse
    return _lines(await _walk(fake.base_url))


async def test_a_redirect_of_the_ask_names_web_path(fake_web: FakeWebApp) -> None:
    lines = await _refused_ask(fake_web, 301, headers={"Location": "https://ask.example.org/v2/ask"})
    assert lines[3:] == [
        *_failed("ask accepted", "HTTP 301 redirect to https://ask.example.org/v2/ask"),
        f"Evidence: HTTP 301 at {fake_web.base_url}/rest/sse/perplexity_ask: 'https://ask.example.org/v2/ask'",
        "What to change: the web endpoint moved (a redirect at /rest/sse/perplexity_ask): check --base-url "
        "(and cookies, if it leads to a sign-in page); set LabsProtocol(web_path=...) to where it is now "
        "(--protocol FILE.json)",
    ]
    assert fake_web.hits["ask"] == 1


async def test_an_html_page_instead_of_an_event_stream_names_web_path(fake_web: FakeWebApp) -> None:
    lines = await _refused_ask(
        fake_web, 200, text="<!DOCTYPE html><title>Perplexity</title>", content_type="text/html"
    )
    assert lines[2:] == [
        "✔ session check | anonymous (no cookies sent)",
        *_failed("ask accepted", "HTTP 200 but text/html, not an event stream"),
        f"Evidence: HTTP 200 at {fake_web.base_url}/rest/sse/perplexity_ask: "
        "'<!DOCTYPE html><title>Perplexity</title>'",
        "What to change: the web endpoint moved (no event stream at /rest/sse/perplexity_ask): check "
        "--base-url; set LabsProtocol(web_path=...) to where it is now (--protocol FILE.json)",
    ]


async def test_http_429_is_a_rate_limit_at_the_ask(fake_web: FakeWebApp) -> None:
    body = {"error_code": "FREE_TIER_RATE_LIMITED", "message": "You have reached the free limit"}
    lines = await _refused_ask(fake_web, 429, json=body)
    assert lines[3:] == [
        *_failed("ask accepted", "HTTP 429, rate limited (FREE_TIER_RATE_LIMITED)"),
        "Evidence: the server refused the question for a rate limit (FREE_TIER_RATE_LIMITED): 'HTTP 429 at "
        f"{fake_web.base_url}/rest/sse/perplexity_ask: You have reached the free limit'; asked anonymously",
        "What to change: a rate limit: wait before asking again, do not loop (retries only prolong it); "
        f"anonymous asks are limited first: sign in, {SIGN_IN}",
    ]


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_ask_for_session_cookies(fake_web: FakeWebApp, status: int) -> None:
    lines = await _refused_ask(fake_web, status, text="Unauthorized")
    assert lines[3:] == [
        *_failed("ask accepted", f"HTTP {status}"),
        f"Evidence: The web app refused the question at {fake_web.base_url}/rest/sse/perplexity_ask: HTTP "
        f"{status}: 'Unauthorized'. It may want signed-in cookies (cookies=...)",
        f"What to change: the web app wants a signed-in session: {SIGN_IN}",
    ]


async def test_a_stream_that_ends_early_fails_the_final_step(fake_web: FakeWebApp) -> None:
    text = {"answer": "Paris is", "web_results": []}
    fake_web.ask = streaming([{"text": json.dumps(text)}])
    lines = _lines(await _walk(fake_web.base_url))
    assert lines[5:] == [
        "✔ first answer text | 'Paris is' (message 1)",
        "✘ final message with sources | Perplexity's web app closed the connection mid-answer (the server ended "
        "the event stream before the answer's last message)",
        "",
        "Failed at: final message with sources",
        "Evidence: Perplexity's web app closed the connection mid-answer (the server ended the event stream before "
        "the answer's last message)",
        "What to change: the web app ended the stream mid-answer: ask again; if it repeats, report it with "
        "this output (--json)",
    ]


def test_the_retired_labs_command_names_the_base_url_only_when_it_is_not_the_default() -> None:
    assert web_walk_command("https://www.perplexity.ai") == "pplx-labs doctor --transport web"
    assert web_walk_command("http://127.0.0.1:8080") == (
        "pplx-labs doctor --transport web --base-url http://127.0.0.1:8080"
    )


# -- the command line --------------------------------------------------------------------------


def test_cli_json_shape_and_exit_code_on_success(emulator: LabsEmulator, base_url: str) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES)
    result = run_cli("doctor", "--transport", "web", "--base-url", base_url, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "transport", "steps"}
    assert (data["ok"], data["transport"]) == (True, "web")
    assert [step["name"] for step in data["steps"]] == STEP_NAMES
    assert all(set(step) == {"name", "ok", "ms", "detail"} and step["ok"] for step in data["steps"])
    assert emulator.requests[-1]["model"] == "turbo"  # auto, anonymous: the web default model


def test_cli_json_of_a_failure_has_evidence_and_advice_and_exits_1(
    emulator: LabsEmulator, base_url: str
) -> None:
    emulator.blocked = True
    result = run_cli("doctor", "--transport", "web", "--base-url", base_url, "--json")
    assert result.returncode == 1
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "transport", "steps", "evidence", "advice"}
    assert [(step["name"], step["ok"]) for step in data["steps"]] == [
        ("connect (TCP, TLS)", True),
        ("session check", False),
    ]
    assert data["evidence"].startswith("HTTP 403: '<!DOCTYPE html>")


def test_cli_takes_the_transport_from_the_environment(emulator: LabsEmulator, base_url: str) -> None:
    emulator.script(answer=ANSWER, citations=[])
    result = run_cli("doctor", "--base-url", base_url, env={"PPLX_LABS_TRANSPORT": "web"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == _header(base_url)
    assert [line.split("  ")[0] for line in lines[1:7]] == [f"✔ {name}".rstrip() for name in STEP_NAMES]
    assert lines[-1] == f"The web app answered: {ANSWER}"
    flagged = run_cli(
        "doctor", "--base-url", base_url, "--transport", "labs", env={"PPLX_LABS_TRANSPORT": "web"}
    )
    assert flagged.stdout.splitlines()[0] == f"pplx-labs doctor: {base_url}/socket.io/"  # the flag wins


def test_cli_walks_the_web_app_by_default_and_records_its_default_model(
    emulator: LabsEmulator, base_url: str, tmp_path: Path
) -> None:
    emulator.script(answer=ANSWER, citations=[])
    out = tmp_path / "default.labs.yaml"
    result = run_cli("doctor", "--base-url", base_url, "--record", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == _header(base_url)
    assert (load_cassette(out).transport, load_cassette(out).model) == ("web", "auto")
    assert sum(emulator.handshakes.values()) == 0
    from_env = run_cli("doctor", "--base-url", base_url, env={"PPLX_LABS_TRANSPORT": "labs"})
    assert from_env.stdout.splitlines()[0] == f"pplx-labs doctor: {base_url}/socket.io/"


@pytest.mark.parametrize(
    ("args", "env", "error"),
    [
        ([], {"PPLX_LABS_TRANSPORT": "sse"}, "Invalid PPLX_LABS_TRANSPORT 'sse': use 'labs' or 'web'"),
        (
            [],
            {"PPLX_LABS_IMPERSONATE": "netscape4"},
            "$PPLX_LABS_IMPERSONATE: Invalid impersonate 'netscape4'",
        ),
    ],
    ids=["bad-env", "bad-browser-env"],
)
def test_cli_usage_errors_are_one_line(
    args: list[str], env: dict[str, str], error: str, tmp_path: Path
) -> None:
    out = tmp_path / "report.labs.yaml"
    args = [arg.format(out=out) for arg in args]
    result = run_cli("doctor", "--base-url", "http://127.0.0.1:9", *args, env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"pplx-labs: error: {error}")
    assert result.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(("flags", "ours"), [([], False), (["--impersonate", "none"], True)])
def test_cli_walks_with_the_browser_impersonate_names(
    flags: list[str], ours: bool, emulator: LabsEmulator, base_url: str
) -> None:
    emulator.script(answer=ANSWER, citations=[])
    result = run_cli("doctor", "--transport", "web", "--base-url", base_url, *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    agents = {
        value
        for headers in emulator.web.headers
        for name, value in headers.items()
        if name.lower() == "user-agent"
    }
    assert (agents == {BROWSER_USER_AGENT}) is ours  # plain aiohttp's is the model's own; curl's, Chrome's


def test_cli_unknown_transport_is_argparses_one_line() -> None:
    result = run_cli("doctor", "--transport", "sse")
    assert result.returncode == 2
    assert result.stderr == (
        "pplx-labs: error: argument --transport: invalid choice: 'sse' (choose from 'labs', 'web') "
        "(see pplx-labs doctor --help)\n"
    )


def test_the_retired_labs_advice_is_a_command_that_walks_the_web_app(
    emulator: LabsEmulator, base_url: str
) -> None:
    emulator.redirect_to = "https://www.perplexity.ai/"
    labs = run_cli("doctor", "--transport", "labs", "--base-url", base_url)
    assert labs.returncode == 1
    [advice] = [line for line in labs.stdout.splitlines() if line.startswith("What to change: ")]
    command = re.search(r"try: (pplx-labs doctor [^;]+);", advice)
    assert command is not None
    assert command.group(1) == f"pplx-labs doctor --transport web --base-url {base_url}"
    emulator.redirect_to = None  # the web app answers where Labs no longer does
    emulator.script(answer=ANSWER, citations=[])
    web_walk = run_cli(*shlex.split(command.group(1))[1:])
    assert web_walk.returncode == 0, web_walk.stdout
    assert web_walk.stdout.splitlines()[-1] == f"The web app answered: {ANSWER}"


DEV_MODE_FAULTS = ["healthy", "blocked", "redirect", "main_site", "stall", "failed", "rate_limited"]


def _faulty(fault: str) -> LabsEmulator:
    """An emulator whose web app answers ``ANSWER`` with ``fault``."""
    emulator = LabsEmulator(
        blocked=fault == "blocked",
        redirect_to="https://www.perplexity.ai/" if fault == "redirect" else None,
        main_site=fault == "main_site",
        web_variant=WebVariant(anonymous="rate_limited" if fault == "rate_limited" else "allowed"),
    )
    if fault == "failed":
        emulator.script(Scenario(failure=FAILED_FRAME))
    else:
        emulator.script(answer=ANSWER, stall_after=0 if fault == "stall" else None)
    return emulator


@pytest.fixture(scope="module")
def dev_mode_walks() -> dict[str, devmode.Scenario]:
    """The web walk of each of ``DEV_MODE_FAULTS``, all in one ``-X dev -W error`` child."""
    return doctor_walks_under_dev_mode(
        {fault: _faulty(fault) for fault in DEV_MODE_FAULTS},
        lambda _fault, base_url: ["--transport", "web", "--base-url", base_url, "--timeout", "1", "--json"],
    )


@pytest.mark.system
@pytest.mark.parametrize("fault", DEV_MODE_FAULTS)
def test_the_web_walk_leaves_nothing_open_under_dev_mode(
    fault: str, dev_mode_walks: dict[str, devmode.Scenario]
) -> None:
    assert_clean_walk(dev_mode_walks[fault], answered=fault == "healthy")


async def test_a_final_message_without_answer_text_fails_the_first_text_step() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(answer="", citations=[]))
        report = await _walk(emulator.base_url)
    assert _lines(report)[-5:] == [
        *_failed("first answer text", "the final message carried no answer text"),
        "Evidence: 1 SSE message (message ×1), no answer text in any",
        f"What to change: the web app's stream may have changed: try the older text stream, {TEXT_STREAM}, else "
        "report a bug with this output (--json)",
    ]


async def test_a_base_url_with_a_path_is_walked_under_it(fake_web: FakeWebApp) -> None:
    app = web.Application()
    app.add_subapp("/mirror", fake_web.app())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/mirror"
    fake_web.ask = streaming([{"text": json.dumps({"answer": "Paris.", "web_results": []}), "final": True}])
    try:
        report = await _walk(base_url)
    finally:
        await runner.cleanup()
    assert (
        _lines(report)[3]
        == "✔ ask accepted | HTTP 200 text/event-stream; model_preference 'turbo', mode 'concise'"
    )
    assert report.ok
    assert [seen.path for seen in fake_web.seen] == [
        "/mirror/api/auth/session",
        "/mirror/rest/sse/perplexity_ask",
    ]


async def test_an_untrusted_certificate_fails_at_connect_with_tls_advice(
    untrusted_tls: ssl.SSLContext,
) -> None:
    async with LabsEmulator(ssl_context=untrusted_tls) as emulator:
        report = await _walk(emulator.base_url)
    assert [(step.name, step.ok) for step in report.steps] == [("connect (TCP, TLS)", False)]
    assert "certificate" in report.evidence.lower()
    assert report.advice.startswith("the server's TLS certificate is not trusted")


@pytest.mark.system  # what `pplx-labs serve --rate-limited` itself answers
def test_serve_rate_limited_is_named_by_the_web_walk_as_docs_doctor_md_shows() -> None:
    with serving_cli("--rate-limited") as (_, first):
        base_url = first.strip()
        result = run_cli("doctor", "--transport", "web", "--base-url", base_url)
    assert result.returncode == 1
    assert result.stderr == ""
    assert _masked(result.stdout)[4:] == [
        "✔ first SSE message | event 'message', status failed",
        *_failed("first answer text", "rate limited (FREE_TIER_RATE_LIMITED)"),
        "Evidence: the server refused the question for a rate limit (FREE_TIER_RATE_LIMITED); asked anonymously",
        "What to change: a rate limit: wait before asking again, do not loop (retries only prolong it); "
        f"anonymous asks are limited first: sign in, {SIGN_IN}",
    ]


@pytest.mark.system  # what `pplx-labs serve` itself answers
def test_the_healthy_web_walk_in_docs_doctor_md_is_what_serve_answers() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "doctor.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```console\n\$ pplx-labs serve --port 8765 &\n(.*?)```", page, re.S)
    command, shown = block.split("\n", 1)
    assert command == "$ pplx-labs doctor --transport web --base-url http://127.0.0.1:8765"
    with serving_cli() as (_, first):
        base_url = first.strip()
        result = run_cli("doctor", "--transport", "web", "--base-url", base_url)
    assert result.returncode == 0, result.stdout
    assert _masked(result.stdout) == _masked(shown.replace("http://127.0.0.1:8765", base_url))


def test_cli_records_the_web_walk_as_a_redacted_web_cassette(
    emulator: LabsEmulator, base_url: str, tmp_path: Path
) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES)
    out = tmp_path / "report.labs.yaml"
    cookie = "__Secure-next-auth.session-token=s3cr3t-token-value"
    result = run_cli(
        "doctor",
        "--transport",
        "web",
        "--base-url",
        base_url,
        "--record",
        str(out),
        env={"PPLX_LABS_COOKIES": cookie},
    )
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[-2:] == [f"The web app answered: {ANSWER}", f"recorded 3 messages to {out}"]
    cassette = load_cassette(out)
    assert (cassette.transport, cassette.provenance) == ("web", "synthetic")
    assert cassette.note == "recorded by pplx-labs doctor"
    assert cassette.interactions[0].request["query_str"] == "What is the capital of France?"
    assert "s3cr3t" not in out.read_text()


def test_cli_json_of_a_recorded_web_walk_says_what_was_recorded(
    emulator: LabsEmulator, base_url: str, tmp_path: Path
) -> None:
    emulator.script(Scenario(failure=FAILED_FRAME))
    out = tmp_path / "failed.labs.yaml"
    result = run_cli("doctor", "--transport", "web", "--base-url", base_url, "--record", str(out), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["recorded"] == f"recorded 2 messages to {out}"  # the failed one, then end_of_stream
    assert load_cassette(out).interactions[0].frames[0].data == {
        "status": "failed",
        "text": "Error in processing query",
    }
