"""``pplx-labs doctor`` names the failing step, its evidence and what to change, for each fault and drift."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import devmode
import pytest
from aiohttp import web
from clirun import run_cli
from test_proxy_tls import _free_port

from langchain_pplx_labs import LabsProtocol
from langchain_pplx_labs.doctor.labs import diagnose
from langchain_pplx_labs.doctor.walk import STEPS, Report
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator, Scenario
from langchain_pplx_labs.recording import load_cassette

ANSWER = "Paris is the capital of France [1]."

DOCTOR_SCENARIOS = """
import contextlib, io, json, os
from langchain_pplx_labs import cli

# As from a shell with no PPLX_LABS_* variable set, as the tests' runs in-process are.
for key in [key for key in os.environ if key.startswith("PPLX_LABS_")]:
    del os.environ[key]

def _doctor(flags):
    def walk():
        out = io.StringIO()
        # stdout only: what a leak prints goes to stderr, where the batch looks for it.
        with contextlib.redirect_stdout(out):
            code = cli.main(["doctor", *flags])
        print(json.dumps({"returncode": code, "stdout": out.getvalue()}))
    return walk

SCENARIOS = {name: _doctor(flags) for name, flags in WALKS.items()}
"""
"""``pplx-labs doctor FLAGS`` per scenario name, run by ``cli.main`` (``WALKS`` is filled in by the caller)."""


def doctor_walks_under_dev_mode(
    emulators: Mapping[str, LabsEmulator], flags: Callable[[str, str], list[str]]
) -> dict[str, devmode.Scenario]:
    """``pplx-labs doctor`` against each emulator, one walk per name, all in one ``-X dev -W error`` child.

    Each emulator serves from this process on its own thread while the child runs, so whatever a
    server leaves open is not blamed on the doctor; ``flags(name, base_url)`` gives each walk's flags.
    Each scenario's stdout is a JSON object: the walk's ``returncode`` and its ``stdout``.
    """
    with contextlib.ExitStack() as stack:
        walks = {
            name: flags(name, stack.enter_context(EmulatorThread(emulator)).base_url)
            for name, emulator in emulators.items()
        }
        script = f"WALKS = {walks!r}\n" + DOCTOR_SCENARIOS
        return devmode.run_scenarios_under_dev_mode(script, list(walks))


async def _doctor(base_url: str, protocol: LabsProtocol | None = None, seconds: float = 5.0) -> Report:
    return await diagnose(base_url, "sonar", protocol or LabsProtocol(), seconds)


def _names(report: Report) -> list[tuple[str, bool]]:
    return [(step.name, step.ok) for step in report.steps]


def _failing_at(step: str) -> list[tuple[str, bool]]:
    """The steps a report shows when ``step`` fails: every one before it passed, none after it ran."""
    index = STEPS.index(step)
    return [(name, True) for name in STEPS[:index]] + [(step, False)]


async def test_a_healthy_server_passes_every_step() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(answer=ANSWER, citations=["https://a.example", "https://b.example"]))
        report = await _doctor(emulator.base_url)
    assert report.ok
    assert _names(report) == [(name, True) for name in STEPS]
    assert report.answer == ANSWER
    details = {step.name: step.detail for step in report.steps}
    assert details["WebSocket"] == "direct"
    assert details["first frame"] == "sonar_query_progress"
    assert details["final frame with sources"] == "2 frames, 2 sources"
    assert all(step.ms >= 0 for step in report.steps)


async def test_blocked_fails_at_engineio_open_with_the_page_and_cloudflare_advice() -> None:
    async with LabsEmulator(blocked=True) as emulator:
        report = await _doctor(emulator.base_url)
    assert _names(report) == _failing_at("Engine.IO open")
    assert report.evidence.startswith(
        'HTTP 403: \'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...'
    )
    assert "Cloudflare" in report.advice
    assert "cookies" in report.advice


async def test_a_refused_websocket_still_answers_over_polling() -> None:
    async with LabsEmulator(refuse_websocket=True) as emulator:
        emulator.script(Scenario(answer=ANSWER, citations=[]))
        report = await _doctor(emulator.base_url)
    assert report.ok
    websocket = report.steps[STEPS.index("WebSocket")]
    assert websocket.detail.startswith("direct WebSocket refused (")
    assert websocket.detail.endswith("; polling only (no WebSocket upgrade)")
    assert report.steps[-1].detail == "2 frames, 0 sources"


async def test_a_silent_server_fails_at_the_first_frame_with_timeout_advice() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(answer=ANSWER, stall_after=0))
        report = await _doctor(emulator.base_url, seconds=0.5)
    assert _names(report) == _failing_at("first frame")
    assert (
        report.evidence == "Perplexity Labs first_token timeout fired after 0.5s; events that arrived: none"
    )
    assert "first-token timeout" in report.advice
    assert "query_event" in report.advice


async def test_a_failed_status_shows_the_servers_text() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(Scenario(answer=ANSWER, fail="Error in processing query"))
        report = await _doctor(emulator.base_url)
    assert _names(report) == _failing_at("final frame with sources")
    assert report.evidence == "the server answered status failed: 'Error in processing query'"
    assert "payload_version" in report.advice


async def test_a_renamed_progress_event_is_named_with_the_setting_to_change() -> None:
    async with LabsEmulator(protocol=LabsProtocol(progress_event="{model}.answer")) as emulator:
        emulator.script(Scenario(answer=ANSWER, chunk_size=10))
        report = await _doctor(emulator.base_url, seconds=0.5)
    assert _names(report) == _failing_at("first frame")
    assert report.evidence.endswith("events that arrived: sonar.answer ×4")
    assert "LabsProtocol(progress_event='{model}.answer')" in report.advice


async def test_a_moved_socketio_path_is_no_endpoint_at_that_url() -> None:
    async with LabsEmulator(protocol=LabsProtocol(socketio_path="/v2/socket.io/")) as emulator:
        report = await _doctor(emulator.base_url)
        moved = await _doctor(emulator.base_url, LabsProtocol(socketio_path="/v2/socket.io/"))
    assert _names(report) == _failing_at("Engine.IO open")
    assert report.evidence.startswith(f"HTTP 404 at {emulator.base_url}/socket.io/?EIO=4&transport=polling: ")
    assert "LabsProtocol(socketio_path=...)" in report.advice
    assert "Cloudflare" not in report.advice
    assert moved.ok  # and the protocol that says where it moved reaches it


async def test_refused_auth_fails_at_socketio_connect_with_the_servers_reason() -> None:
    async with LabsEmulator() as emulator:
        report = await _doctor(emulator.base_url, LabsProtocol(auth={}))
    assert _names(report) == _failing_at("Socket.IO connect with auth")
    assert report.evidence.startswith("the server's refusal: authentication required")
    assert "LabsProtocol(auth=...)" in report.advice


@pytest.fixture
async def plain_404() -> AsyncIterator[str]:
    """A plain aiohttp web server with no routes: every path is its own ``404: Not Found``."""
    runner = web.AppRunner(web.Application(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_plain_web_server_is_no_endpoint(plain_404: str) -> None:
    report = await _doctor(plain_404)
    assert _names(report) == _failing_at("Engine.IO open")
    assert report.evidence == f"HTTP 404 at {plain_404}/socket.io/?EIO=4&transport=polling: '404: Not Found'"
    assert "--base-url" in report.advice


async def test_a_refused_port_fails_at_connect() -> None:
    port = _free_port()
    report = await _doctor(f"http://127.0.0.1:{port}")
    assert _names(report) == _failing_at("connect (TCP, TLS)")
    assert f"127.0.0.1:{port}" in report.evidence
    assert report.advice.startswith("nothing answers at that host and port")


def test_cli_json_and_exit_code_on_success(emulator: LabsEmulator, base_url: str) -> None:
    emulator.script(answer=ANSWER, citations=["https://a.example"])
    result = run_cli("doctor", "--transport", "labs", "--base-url", base_url, "--model", "sonar", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert [step["name"] for step in data["steps"]] == list(STEPS)
    assert all(set(step) == {"name", "ok", "ms", "detail"} for step in data["steps"])


def test_cli_prints_the_failing_step_and_records_a_redacted_cassette(
    emulator: LabsEmulator, base_url: str, tmp_path: Path
) -> None:
    emulator.script(answer=ANSWER, fail="Error in processing query", fail_after=1, chunk_size=10)
    out = tmp_path / "report.labs.yaml"
    result = run_cli(
        "doctor",
        "--transport",
        "labs",
        "--base-url",
        base_url,
        "--model",
        "sonar",
        "--record",
        str(out),
        "--timeout",
        "5",
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"pplx-labs doctor: {base_url}/socket.io/"
    assert lines[1].startswith("✔ connect (TCP, TLS)")
    assert lines[7].startswith("✘ final frame with sources")
    assert "Failed at: final frame with sources" in lines
    assert "Evidence: the server answered status failed: 'Error in processing query'" in lines
    assert lines[-1] == f"recorded 2 frames to {out}"
    cassette = load_cassette(out)
    assert cassette.provenance == "synthetic"  # a loopback server is never the live playground
    assert cassette.interactions[0].frames[-1].data == {
        "status": "failed",
        "text": "Error in processing query",
    }
    assert "anonymous-ask-user" not in out.read_text()


@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
def test_cli_bad_timeout_is_one_usage_error_line(timeout: str) -> None:
    result = run_cli("doctor", "--timeout", timeout)
    assert result.returncode == 2  # a usage error, as argparse's own
    assert result.stdout == ""
    assert result.stderr == (
        f"pplx-labs: error: argument --timeout: invalid value {timeout}: must be > 0 (see pplx-labs doctor --help)\n"
    )


async def test_a_web_page_at_the_socketio_path_is_no_endpoint() -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>Welcome to my blog</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        report = await _doctor(f"http://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()
    assert _names(report) == _failing_at("Engine.IO open")
    assert report.evidence.endswith("transport=polling: '<html>Welcome to my blog</html>'")
    assert report.evidence.startswith("HTTP 200 at ")


async def test_refused_auth_over_polling_is_still_a_refused_connect() -> None:
    async with LabsEmulator(refuse_websocket=True) as emulator:
        report = await _doctor(emulator.base_url, LabsProtocol(auth={}), seconds=30)
    assert _names(report) == _failing_at("Socket.IO connect with auth")
    assert report.evidence.startswith("the server's refusal: authentication required")


DEV_MODE_FAULTS = ["healthy", "blocked", "refuse_websocket", "stall", "renamed"]


def _faulty(fault: str) -> LabsEmulator:
    """An emulator answering ``ANSWER`` with ``fault`` (``renamed`` is the client's side: its ``--protocol``)."""
    emulator = LabsEmulator(blocked=fault == "blocked", refuse_websocket=fault == "refuse_websocket")
    emulator.script(answer=ANSWER, stall_after=0 if fault == "stall" else None)
    return emulator


@pytest.fixture(scope="module")
def dev_mode_walks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, devmode.Scenario]:
    """The doctor's walk of each of ``DEV_MODE_FAULTS``, all in one ``-X dev -W error`` child."""
    protocols = tmp_path_factory.mktemp("protocols")

    def flags(fault: str, base_url: str) -> list[str]:
        expecting = protocols / f"{fault}.json"
        # "renamed": the client expects answers on another event than the emulator sends.
        expecting.write_text('{"progress_event": "{model}.answer"}' if fault == "renamed" else "{}")
        return [
            "--transport",
            "labs",
            "--base-url",
            base_url,
            "--model",
            "sonar",
            "--timeout",
            "1",
            "--json",
            "--protocol",
            str(expecting),
        ]

    return doctor_walks_under_dev_mode({fault: _faulty(fault) for fault in DEV_MODE_FAULTS}, flags)


@pytest.mark.system
@pytest.mark.parametrize("fault", DEV_MODE_FAULTS)
def test_doctor_leaves_nothing_open_under_dev_mode(
    fault: str, dev_mode_walks: dict[str, devmode.Scenario]
) -> None:
    assert_clean_walk(dev_mode_walks[fault], answered=fault in ("healthy", "refuse_websocket"))


def assert_clean_walk(walk: devmode.Scenario, *, answered: bool) -> None:
    """The walk left nothing open, and its ``--json`` verdict and exit code say whether it was answered."""
    # -X dev -W error: an unclosed socket, session or task would be a warning, hence an error here.
    walked = json.loads(walk.assert_clean())
    assert json.loads(walked["stdout"])["ok"] is answered
    assert walked["returncode"] == (0 if answered else 1)


async def test_an_untrusted_certificate_fails_at_connect_with_tls_advice(
    untrusted_tls: ssl.SSLContext,
) -> None:
    async with LabsEmulator(ssl_context=untrusted_tls) as emulator:
        report = await _doctor(emulator.base_url)
    assert _names(report) == _failing_at("connect (TCP, TLS)")
    assert "certificate" in report.evidence.lower()
    assert report.advice.startswith("the server's TLS certificate is not trusted")


def test_cli_records_without_model_with_the_default_model(
    emulator: LabsEmulator, base_url: str, tmp_path: Path
) -> None:
    emulator.script(answer=ANSWER, citations=[])
    out = tmp_path / "default.labs.yaml"
    result = run_cli(
        "doctor", "--transport", "labs", "--base-url", base_url, "--record", str(out), "--timeout", "5"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(rf"recorded \d+ frames to {re.escape(str(out))}", result.stdout.splitlines()[-1])
    cassette = load_cassette(out)
    assert (cassette.transport, cassette.model) == ("labs", "r1-1776")


@pytest.mark.system  # Ctrl-C to a real process is the subject
def test_cli_prints_each_step_as_it_completes_and_says_where_it_was_interrupted(
    emulator: LabsEmulator,
) -> None:
    """Issue #31: the doctor printed nothing until its whole walk ended, and nothing if interrupted."""
    emulator.script(Scenario(answer=ANSWER, stall_after=0))  # takes the question, never answers
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "langchain_pplx_labs.cli", "doctor", "--transport", "labs"),
            *("--base-url", emulator.base_url, "--timeout", "30"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        # The header and every step up to the question, while the walk still waits for the first frame
        # ("question sent" is timed when its answer starts, so it is the step under way).
        lines = [process.stdout.readline() for _ in range(1 + STEPS.index("question sent"))]
        assert lines[0].startswith(f"pplx-labs doctor: {emulator.base_url}")
        assert [line[2:].split("  ")[0].rstrip() for line in lines[1:]] == list(STEPS[:4])
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        exited = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        rest, stderr = process.communicate(timeout=15)
    assert exited == 130, stderr
    assert rest == ""
    assert stderr == "pplx-labs doctor: interrupted during 'question sent' (4 of 7 steps passed)\n"


def test_cli_system_goes_before_the_question_as_ask_sends_it(emulator: LabsEmulator, tmp_path: Path) -> None:
    """Issue #31: with no --system the doctor could never match a cassette recorded by ask."""
    out = tmp_path / "doctor.labs.yaml"
    flags = ("--transport", "labs", "--base-url", emulator.base_url, "--model", "sonar", "--record", str(out))
    result = run_cli("doctor", *flags, "--system", "Be brief.", "--question", "Hi?")
    assert result.returncode == 0, result.stdout
    asked = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert [request["messages"] for request in emulator.requests] == [asked, asked]  # the walk, the record
    assert load_cassette(out).interactions[0].request["messages"] == asked
    plain = run_cli("doctor", "--transport", "labs", "--base-url", emulator.base_url, "--question", "Hi?")
    assert plain.returncode == 0, plain.stdout
    assert emulator.requests[-1]["messages"] == [{"role": "user", "content": "Hi?"}]
