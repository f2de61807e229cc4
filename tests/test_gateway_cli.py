"""``pplx-labs gateway`` as users run it: the command line, an agent loop, and clients that leave mid-stream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from clirun import run_cli
from devmode import Scenario, run_scenarios_under_dev_mode

from langchain_pplx_labs.emulator import LabsEmulator


def _spawn(*flags: str) -> subprocess.Popen[str]:
    """``pplx-labs gateway --port 0 FLAGS``, not yet waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "langchain_pplx_labs.cli", "gateway", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _root(process: subprocess.Popen[str]) -> str:
    """The root URL a gateway prints first, once it serves."""
    assert process.stdout is not None
    return process.stdout.readline().strip()


def _start(*flags: str) -> tuple[subprocess.Popen[str], str]:
    process = _spawn(*flags)
    return process, _root(process)


def _stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    return stderr


@pytest.fixture(scope="module")
def follow_tools_gateway() -> Iterator[str]:
    """One ``pplx-labs gateway --emulator --follow-tools`` process for the tests of its group."""
    process, root = _start("--transport", "labs", "--emulator", "--follow-tools")
    yield root
    stderr = _stop(process)
    assert "Traceback" not in stderr


@pytest.mark.system
def test_prints_its_root_url_first(follow_tools_gateway: str) -> None:
    assert follow_tools_gateway.startswith("http://127.0.0.1:")
    port = int(follow_tools_gateway.rsplit(":", 1)[1])
    assert port > 0


def _weather(city: str) -> str:
    return f"sunny in {city}"


def _time(city: str) -> str:
    return f"noon in {city}"


TOOLS: dict[str, Callable[..., str]] = {"get_weather": _weather, "get_time": _time}
SPECS: Any = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.split('_')[1]} in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    for name in TOOLS
]


@pytest.mark.system
def test_two_tool_agent_loop_on_the_plain_openai_sdk(follow_tools_gateway: str) -> None:
    ran: list[tuple[str, dict[str, Any]]] = []
    answers: list[str] = []
    messages: list[Any] = []
    with openai.OpenAI(base_url=follow_tools_gateway + "/v1", api_key="unused", max_retries=0) as client:
        for question, tool in (
            ("Weather in 'Paris'?", "get_weather"),
            ("And the time in 'Tokyo'?", "get_time"),
        ):
            messages.append({"role": "user", "content": question})
            choice: Any = {"type": "function", "function": {"name": tool}}
            while True:  # the usual loop: run what the model calls until it answers in prose
                reply = client.chat.completions.create(
                    model="sonar", messages=messages, tools=SPECS, tool_choice=choice
                ).choices[0]
                messages.append(reply.message.model_dump(exclude_none=True))
                if reply.finish_reason != "tool_calls":
                    answers.append(reply.message.content or "")
                    break
                for call in reply.message.tool_calls or []:
                    args = json.loads(call.function.arguments)
                    ran.append((call.function.name, args))
                    result = TOOLS[call.function.name](**args)
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
                choice = "auto"
    assert ran == [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Tokyo"})]
    assert answers == [
        "The tools answered: get_weather returned sunny in Paris.",
        "The tools answered: get_time returned noon in Tokyo.",
    ]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--host", "0.0.0.0"], "refusing to serve on 0.0.0.0 without --api-key"),
        (["--host", "192.0.2.10", "--emulator"], "refusing to serve on 192.0.2.10 without --api-key"),
    ],
)
def test_refusals_are_one_line(argv: list[str], words: str) -> None:
    # run_cli drops PPLX_LABS_* from the environment: a gateway API key there would serve, not refuse.
    result = run_cli("gateway", *argv)
    assert result.returncode == 2  # a usage error: the key flag is missing (as pplx-labs mcp)
    out, err = result.stdout, result.stderr
    assert out == ""
    assert err.splitlines() == [err.strip()]
    assert err.startswith("pplx-labs: error: ")
    assert words in err


@pytest.mark.system
def test_api_key_from_the_environment_protects_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPLX_LABS_GATEWAY_API_KEY", "sk-env-key-123")
    process, root = _start("--emulator")
    try:
        with (
            openai.OpenAI(base_url=root + "/v1", api_key="sk-other", max_retries=0) as client,
            pytest.raises(openai.AuthenticationError),
        ):
            client.models.list()
        with openai.OpenAI(base_url=root + "/v1", api_key="sk-env-key-123", max_retries=0) as client:
            assert client.models.list().data
    finally:
        stderr = _stop(process)
    assert "sk-env-key-123" not in stderr
    assert "GET /v1/models -> 401" in stderr  # one log line per request


@pytest.mark.system
def test_port_in_use_is_one_line(follow_tools_gateway: str) -> None:
    port = follow_tools_gateway.rsplit(":", 1)[1]
    result = run_cli("gateway", "--emulator", "--port", port)
    assert result.returncode == 1
    err = result.stderr
    assert err.startswith(f"pplx-labs: error: cannot serve on 127.0.0.1:{port}: ")
    assert len(err.splitlines()) == 1


def _ask_in_background(root: str) -> tuple[threading.Thread, list[BaseException | str]]:
    """One chat completion posted from a thread; its outcome (the answer, or what was raised) lands in the list."""
    outcome: list[BaseException | str] = []

    def ask() -> None:
        with openai.OpenAI(base_url=root + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
            try:
                answer = client.chat.completions.create(
                    model="sonar", messages=[{"role": "user", "content": "Anyone there?"}]
                )
                outcome.append(answer.choices[0].message.content or "")
            except openai.APIError as exc:
                outcome.append(exc)

    thread = threading.Thread(target=ask, name="asking", daemon=True)
    thread.start()
    return thread, outcome


def _until_asked(emulator: LabsEmulator) -> None:
    """Return once the question reached the emulator: the gateway's handler now waits on a silent upstream."""
    deadline = time.monotonic() + 60
    while not emulator.requests:
        assert time.monotonic() < deadline, "the question never reached the emulator"
        time.sleep(0.02)


def _exit_code(process: subprocess.Popen[str], within: float) -> int | None:
    """The process's exit code once it ended, ``None`` (and killed) if it is still running after ``within`` s."""
    try:
        return process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@pytest.mark.system  # a signal to a real process is the subject
@pytest.mark.parametrize(
    ("transport", "signum", "code"),
    [
        pytest.param("labs", signal.SIGINT, 130, id="labs-ctrl-c"),
        pytest.param("web", signal.SIGINT, 130, id="web-ctrl-c"),
        pytest.param("labs", signal.SIGTERM, 0, id="labs-sigterm"),
    ],
)
def test_a_signal_cancels_an_answer_waiting_on_a_silent_upstream(
    emulator: LabsEmulator, transport: str, signum: int, code: int
) -> None:
    """Issue #31: the gateway exited only when the silent upstream's 60 s first-token timeout fired."""
    emulator.script(stall_after=0)  # takes the question, never answers: serve --silent
    process, root = _start("--transport", transport, "--base-url", emulator.base_url)
    asking, outcome = _ask_in_background(root)
    try:
        _until_asked(emulator)
        process.send_signal(signum)
        # The answers in flight get --shutdown-timeout (3 s) and are then cancelled: well within 10 s,
        # while the model's own first_token timeout (60 s) would have held it a minute.
        exited = _exit_code(process, within=10)
    finally:
        if process.poll() is None:  # the test failed before the process ended
            process.kill()
        _, stderr = process.communicate(timeout=15)
        asking.join(timeout=30)
    assert exited == code, stderr
    banner, *said = stderr.splitlines()
    assert banner.startswith("pplx-labs gateway on ")
    assert said == [
        "pplx-labs gateway: stopping; waiting 3s for 1 answer in flight, then cancelling (Ctrl+C again to cancel now)"
    ]
    # The client's connection closed without an answer (rather than a 504 a minute later).
    assert len(outcome) == 1
    assert isinstance(outcome[0], openai.APIConnectionError), outcome


@pytest.mark.system
def test_a_second_ctrl_c_cancels_the_answers_in_flight_at_once(emulator: LabsEmulator) -> None:
    emulator.script(stall_after=0)
    # A grace far longer than the test may wait: only the second Ctrl+C can end it in time.
    process, root = _start(
        "--transport", "labs", "--base-url", emulator.base_url, "--shutdown-timeout", "600"
    )
    asking, outcome = _ask_in_background(root)
    assert process.stderr is not None
    try:
        _until_asked(emulator)
        process.send_signal(signal.SIGINT)
        lines = [process.stderr.readline() for _ in range(2)]  # the banner, then the first Ctrl+C's line
        assert lines[1].startswith("pplx-labs gateway: stopping; waiting 600s for 1 answer in flight"), lines
        process.send_signal(signal.SIGINT)
        exited = _exit_code(process, within=10)
    finally:
        if process.poll() is None:
            process.kill()
        _, rest = process.communicate(timeout=15)
        asking.join(timeout=30)
    assert exited == 130, rest
    assert rest == ""  # nothing more than that one line
    assert isinstance(outcome[0], openai.APIConnectionError), outcome


# Each case: seconds between Labs frames, whether the server cancels a handler whose client left,
# drain or close the abandoned answer, Labs sockets kept afterwards, frames in the answer.
_LEAVE_CASES = [
    # Labs silent between frames: only cancellation notices the client left
    pytest.param("30", "cancel", "close", 0, 400, id="30-cancel-close-0"),
    # gunicorn's worker does not cancel handlers: the next write notices
    pytest.param("0.02", "write", "close", 0, 400, id="0.02-write-close-0"),
    # The abandoned answer is drained and its one socket reused. The drain plays the answer to its
    # end after each of the four leaves: it only has to outlast the client's first line, so 100
    # frames (half a second) rather than 400 (two seconds and more each time under dev mode).
    pytest.param("0.005", "cancel", "drain", 1, 100, id="0.005-cancel-drain-1"),
]

_LEAVE_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from aiohttp import ClientSession, web
    from langchain_pplx_labs.emulator import LabsEmulator, Scenario
    from langchain_pplx_labs.gateway import GatewaySettings, create_app

    def fds():
        return len(os.listdir("/proc/self/fd"))

    async def leave(url):
        body = {"model": "sonar", "stream": True, "messages": [{"role": "user", "content": "q"}]}
        async with ClientSession() as session, session.post(url, json=body) as response:
            assert response.status == 200, response.status
            assert (await response.content.readline()).startswith(b"data: ")
        # Leaving the block unread closes the connection: the client is gone mid-answer.

    async def main(delay, frames, cancel_handlers, drain, kept):
        slow = Scenario(answer="tick " * frames, chunk_size=5, delay=delay)
        emulator = LabsEmulator(lambda request: slow)
        await emulator.start()
        runner = web.AppRunner(
            create_app(GatewaySettings(base_url=emulator.base_url, model_options=drain)),
            handler_cancellation=cancel_handlers,
            access_log=None,
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}/v1/chat/completions"
        before = None
        for _ in range(4):
            await leave(url)
            for _ in range(1000):
                if emulator.open_sockets == kept and not emulator._answers:
                    break
                await asyncio.sleep(0.02)
            print("labs-sockets-open", emulator.open_sockets, "answers-playing", len(emulator._answers))
            before = fds() if before is None else before
        print("fd-growth", fds() - before)
        await runner.cleanup()
        await emulator.stop()

    def case(delay, mode, drain, kept, frames):
        # A drained socket (the answer played to its end) is kept warm in the pool; with drain_timeout=0
        # the gateway closes a socket whose client left.
        options = {"transport": "labs", **({} if drain == "drain" else {"drain_timeout": 0})}
        asyncio.run(main(float(delay), frames, cancel_handlers=mode == "cancel", drain=options, kept=kept))

    SCENARIOS = {name: (lambda values=values: case(*values)) for name, values in CASES.items()}
    """
)


@pytest.fixture(scope="module")
def leave_runs() -> dict[str, Scenario]:
    """Every case of ``_LEAVE_CASES`` in one ``-X dev -W error`` child, each reported apart."""
    cases = {case.id: tuple(case.values) for case in _LEAVE_CASES}
    return run_scenarios_under_dev_mode(f"CASES = {cases!r}\n" + _LEAVE_SCRIPT, list(cases))


@pytest.mark.system
@pytest.mark.parametrize(("delay", "mode", "drain", "kept", "frames"), _LEAVE_CASES)
def test_client_leaving_mid_stream_releases_the_labs_socket(
    delay: str, mode: str, drain: str, kept: int, frames: int, leave_runs: dict[str, Scenario]
) -> None:
    stdout = leave_runs[f"{delay}-{mode}-{drain}-{kept}"].assert_clean()
    assert stdout.count(f"labs-sockets-open {kept} answers-playing 0") == 4, stdout
    growth = int(stdout.split("fd-growth")[1].split()[0])
    assert growth <= 2, stdout


@pytest.mark.system
def test_gunicorn_serves_the_app_factory(base_url: str) -> None:
    import os
    import socket

    with socket.socket() as probe:  # a free loopback port for gunicorn's --bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PPLX_LABS_GATEWAY_API_KEY": "sk-gunicorn-key",
        "PPLX_LABS_GATEWAY_REASONING": "inline",
        "PPLX_LABS_TRANSPORT": "labs",
    }
    # The emulator answers in this process: gunicorn and its workers are the processes under test.
    env["PPLX_LABS_BASE_URL"] = base_url
    worker = ["--worker-class", "aiohttp.GunicornWebWorker", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "langchain_pplx_labs.gateway.app:app_factory", *worker],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port)  # rather than the client's growing back-off while gunicorn starts
        with openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-gunicorn-key", max_retries=8
        ) as client:
            answers = [
                client.chat.completions.create(
                    model="sonar-reasoning", messages=[{"role": "user", "content": "What is LangChain?"}]
                )
                for _ in range(4)
            ]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    contents = {answer.choices[0].message.content for answer in answers}
    assert len(contents) == 1
    (content,) = contents
    assert content.startswith("<think>The user asks: What is LangChain?")  # the inline setting came through
    assert content.endswith("chains and agents [2].")
    assert "sk-gunicorn-key" not in stderr


def _wait_for_port(port: int) -> None:
    import socket
    import time

    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.system
def test_protocol_file_reaches_the_upstream_client(tmp_path: Any) -> None:
    protocol = tmp_path / "moved.json"
    protocol.write_text(
        json.dumps({"socketio_path": "/rt/sio/", "query_event": "ask_v2", "progress_event": "{model}_tick"})
    )
    labs = subprocess.Popen(
        [sys.executable, "-m", "langchain_pplx_labs.cli", "serve", "--protocol", str(protocol)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert labs.stdout is not None
    labs_url = labs.stdout.readline().strip()
    # Both gateways start side by side: each spends its first second or so importing.
    following = _spawn("--transport", "labs", "--base-url", labs_url, "--protocol", str(protocol))
    stale = _spawn("--transport", "labs", "--base-url", labs_url)
    following_root, stale_root = _root(following), _root(stale)
    try:
        with openai.OpenAI(base_url=following_root + "/v1", api_key="x", max_retries=0) as client:
            answer = client.chat.completions.create(
                model="sonar", messages=[{"role": "user", "content": "What is the capital of France?"}]
            )
        with (
            openai.OpenAI(base_url=stale_root + "/v1", api_key="x", max_retries=0) as client,
            pytest.raises(openai.InternalServerError) as refused,
        ):
            client.chat.completions.create(model="sonar", messages=[{"role": "user", "content": "hi"}])
    finally:
        _stop(following)
        _stop(stale)
        labs.terminate()
        labs.communicate(timeout=15)
    assert answer.choices[0].message.content.startswith("The capital of France is Paris [1].")
    assert refused.value.status_code == 502  # the default protocol's path is not served there
    assert refused.value.body["code"] == "labs_not_found"


def test_bad_protocol_file_is_one_line(tmp_path: Any) -> None:
    protocol = tmp_path / "bad.json"
    protocol.write_text('{"socketio_path": "no good"}')
    result = run_cli("gateway", "--emulator", "--port", "0", "--protocol", str(protocol))
    assert result.returncode == 1
    err = result.stderr
    assert err.startswith(f"pplx-labs: error: {protocol}: not a LabsProtocol (socketio_path")
    assert len(err.splitlines()) == 1


def test_bad_base_url_is_one_line() -> None:
    result = run_cli("gateway", "--port", "0", "--base-url", "ftp://labs.example")
    assert result.returncode == 2  # a usage error: the flag is checked as the model's base_url
    err = result.stderr
    assert err.startswith("pplx-labs: error: ")
    assert "Invalid base_url 'ftp://labs.example'" in err
    assert len(err.splitlines()) == 1


@pytest.mark.system  # the flags reach the model of a real gateway process
def test_the_input_limit_and_the_first_token_timeout_are_flags(emulator: LabsEmulator) -> None:
    """Issue #31: the gateway's 400 said "raise the limit" with no way to; a silent upstream held a minute."""
    emulator.script(stall_after=0)  # takes the question, never answers
    process, root = _start(
        *("--transport", "labs", "--base-url", emulator.base_url),
        *("--max-input-chars", "50", "--first-token-timeout", "0.5"),
    )
    try:
        with openai.OpenAI(base_url=f"{root}/v1", api_key="unused", max_retries=0, timeout=20) as client:
            with pytest.raises(
                openai.BadRequestError, match=r"over the max_input_chars limit of 50.*--max-input-chars"
            ):
                client.chat.completions.create(
                    model="sonar", messages=[{"role": "user", "content": "x" * 60}]
                )
            assert emulator.requests == []
            with pytest.raises(openai.APIStatusError, match="first_token timeout"):
                client.chat.completions.create(model="sonar", messages=[{"role": "user", "content": "Hi?"}])
    finally:
        _stop(process)
