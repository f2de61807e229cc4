"""The ``pplx-labs`` command as a user runs it: a real subprocess, real sockets."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PPLX_LABS_BASE_URL"}
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


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``pplx-labs serve --port 0`` running; yields the process and the first stdout line."""
    process = subprocess.Popen(
        command("serve", "--port", "0"),
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
