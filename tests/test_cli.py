"""The ``pplx-labs`` command as a user runs it: a real subprocess, real sockets."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.emulator.script import default_citations, made_up_answer

QUESTION = "What is the capital of France?"
TIMEOUT = 60


def command(*args: str) -> list[str]:
    """The installed ``pplx-labs`` script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("pplx-labs")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "langchain_pplx_labs.cli", *args]


def run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PPLX_LABS_BASE_URL", "PPLX_LABS_COOKIES")}
    env.update(env_extra or {})
    return subprocess.run(
        command(*args), capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
    )


def footnotes(urls: list[str]) -> str:
    return "".join(f"[{n}] {url}\n" for n, url in enumerate(urls, start=1))


def test_ask_emulator_prints_answer_and_numbered_footnotes() -> None:
    result = run("ask", "--emulator", "--model", "sonar-pro", QUESTION)
    assert result.returncode == 0, result.stderr
    answer = made_up_answer(QUESTION)
    urls = default_citations(QUESTION)
    assert result.stdout.count(answer) == 1
    assert "[1] https://" in result.stdout
    assert result.stdout.endswith(footnotes(urls))
    assert "<think>" not in result.stdout


def test_ask_with_reasoning_model_shows_thinking_only_when_asked() -> None:
    result = run("ask", "--emulator", "--show-reasoning", QUESTION)
    assert result.returncode == 0, result.stderr
    assert "[thinking] The user asks:" in result.stdout
    assert "[answer] " + made_up_answer(QUESTION) in result.stdout
    assert "</think>" not in result.stdout


def test_ask_reports_server_failure_on_stderr_with_exit_code(emulator: LabsEmulator) -> None:
    emulator.script(fail="Error in processing query")
    result = run("ask", "--base-url", emulator.base_url, QUESTION)
    assert result.returncode == 1
    assert "Error in processing query" in result.stderr
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def serving(*flags: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``pplx-labs serve --port 0 [flags]`` running; yields the process and the first stdout line."""
    process = subprocess.Popen(
        command("serve", "--port", "0", *flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline() if process.stdout else ""))
    reader.start()
    try:
        first = lines.get(timeout=TIMEOUT)
        yield process, first
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            reader.join()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], str]]:
    with serving() as started:
        yield started


def test_serve_prints_base_url_first_and_answers_there(served: tuple[subprocess.Popen[str], str]) -> None:
    process, first = served
    base_url = first.strip()
    assert first.endswith("\n")
    assert base_url.startswith("http://127.0.0.1:")
    port = int(base_url.rsplit(":", 1)[1])
    assert port > 0
    with ChatPerplexityLabs(model="sonar-pro", base_url=base_url, max_retries=0) as chat:
        message = chat.invoke(QUESTION)
    assert message.content == made_up_answer(QUESTION)
    assert message.response_metadata["citations"] == default_citations(QUESTION)
    # The CLI's own client works against it too.
    result = run("ask", "--base-url", base_url, QUESTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(footnotes(default_citations(QUESTION)))
    # SIGINT / SIGTERM end it cleanly.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=TIMEOUT) == 0
    assert process.stderr is not None
    assert "Traceback" not in process.stderr.read()


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    celsius: int


def get_weather(city: str) -> str:
    """Look up the weather in a city."""
    return f"Sunny in {city}"


def test_serve_follow_tools_answers_tool_and_schema_prompts() -> None:
    with (
        serving("--follow-tools", "--chunk-size", "4") as (_, first),
        ChatPerplexityLabs(model="sonar-pro", base_url=first.strip(), max_retries=0) as chat,
    ):
        call = chat.bind_tools([get_weather]).invoke("Weather in 'Lyon'?")
        parsed = chat.with_structured_output(Weather).invoke("It is 21 degrees in 'Nice'.")
        chunks = list(chat.stream("What is the capital of France?"))
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("get_weather", {"city": "Lyon"})]
    assert parsed == Weather(city="Nice", celsius=21)
    # The command line's pacing applies to its answers: 4 characters per frame.
    assert max(len(str(c.content)) for c in chunks) <= 4 < len("".join(str(c.content) for c in chunks))


def test_serve_follow_tools_and_cassettes_are_exclusive(tmp_path: Path) -> None:
    result = run("serve", "--follow-tools", "--cassettes", str(tmp_path))
    assert result.returncode == 1
    assert "--follow-tools and --cassettes" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["ask", "--model", "bad model!", QUESTION], 1, "model: Invalid Labs model name 'bad model!'"),
        (["ask", "--base-url", "notaurl", QUESTION], 1, "base_url: Invalid base_url 'notaurl'"),
        (["ask", "--base-url", "ftp://x", QUESTION], 1, "Invalid base_url 'ftp://x'"),
        (["serve", "--port", "-5"], 2, "invalid port -5: use 0-65535"),
        (["serve", "--port", "99999"], 2, "invalid port 99999"),
        (["serve", "--host", "nosuch.invalid"], 1, "cannot serve on nosuch.invalid:0"),
        (["serve", "--cassettes", "/nonexistent/labs"], 1, "Cannot read cassette /nonexistent/labs"),
        (["serve", "--fail-after", "2"], 2, "--fail-after needs --fail TEXT"),
        (
            ["cassette", "record", "--emulator", "--model", "bad model", "--out", "x.yaml", "q"],
            1,
            "bad model",
        ),
        (["cassette", "record", "--emulator", "--out", "/proc/x.labs.yaml", "q"], 1, "/proc/x.labs.yaml"),
        (
            ["cassette", "record", "--header", "nocolon", "--out", "x.yaml", "q"],
            2,
            "invalid header 'nocolon'",
        ),
    ],
)
def test_bad_input_is_one_error_line_not_a_traceback(args: list[str], code: int, expected: str) -> None:
    result = run(*args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    assert "error: " in result.stderr.splitlines()[-1]


def test_serve_on_a_busy_port_names_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(f"pplx-labs: error: cannot serve on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr


def test_serve_an_empty_cassette_folder_is_an_error(tmp_path: Path) -> None:
    result = run("serve", "--cassettes", str(tmp_path))
    assert result.returncode == 1
    assert f"no *.labs.yaml cassettes under {tmp_path}" in result.stderr


def test_ask_with_empty_system_sends_no_system_message(emulator: LabsEmulator) -> None:
    result = run("ask", "--base-url", emulator.base_url, "--system", "", QUESTION)
    assert result.returncode == 0, result.stderr
    assert emulator.requests[-1]["messages"] == [{"role": "user", "content": QUESTION}]


def test_record_from_an_unreachable_server_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "live.labs.yaml"
    url = f"http://127.0.0.1:{_free_port()}"
    result = run("cassette", "record", "--base-url", url, "--out", str(out), QUESTION)
    assert result.returncode == 1
    assert result.stderr.startswith(f"pplx-labs: error: cannot reach {url}: ")
    assert "recorded" not in result.stderr
    assert not out.exists()


def test_record_sends_cookies_and_headers_but_saves_them_redacted(
    emulator: LabsEmulator, tmp_path: Path
) -> None:
    out = tmp_path / "live.labs.yaml"
    result = run(
        *("cassette", "record", "--base-url", emulator.base_url, "--out", str(out), QUESTION),
        *("--header", "X-Team-Token: TEAM-SECRET-1", "--header", "Accept-Language: fr"),
        env_extra={"PPLX_LABS_COOKIES": "cf_clearance=COOKIE-SECRET-2"},
    )
    assert result.returncode == 0, result.stderr
    sent = emulator.handshake_headers[-1]
    assert sent["Cookie"] == "cf_clearance=COOKIE-SECRET-2"
    assert sent["X-Team-Token"] == "TEAM-SECRET-1"
    saved = out.read_text()
    assert "COOKIE-SECRET-2" not in saved
    assert "TEAM-SECRET-1" not in saved
    assert "X-Team-Token: <redacted>" in saved


def test_record_goes_through_the_given_proxy(emulator: LabsEmulator, tmp_path: Path) -> None:
    out = tmp_path / "live.labs.yaml"
    dead_proxy = f"socks5://127.0.0.1:{_free_port()}"
    result = run(
        *("cassette", "record", "--base-url", emulator.base_url, "--proxy", dead_proxy),
        *("--out", str(out), QUESTION),
    )
    assert result.returncode == 1
    assert f"cannot reach {emulator.base_url}: proxy" in result.stderr
    assert emulator.requests == []
    assert not out.exists()
