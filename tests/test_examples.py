"""Every example runs as its own process, offline against its emulator, and prints what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from langchain_pplx_labs.emulator import LabsEmulator

# The docs and examples run as a user runs them: the system tier.
pytestmark = pytest.mark.system

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Lines each example must print, as regexes (the offline emulator's answers are deterministic).
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        r"^The capital of France is Paris \[1\]",
        r"^  \[1\] https://en\.wikipedia\.org/wiki/Paris$",
        r"^  \[2\] https://www\.britannica\.com/place/Paris$",
        r"^Streaming: LangChain is a framework .* \[2\]\.$",
    ],
    "lcel_chain.py": [r"^Socket\.IO: Socket\.IO is a protocol", r"^LangChain: LangChain is a framework"],
    "rag_with_citations.py": [
        r"^The capital of France is Paris \[1\]",
        r"^Context: notes/paris\.md",
        r"^\[1\] https://en\.wikipedia\.org/wiki/Paris$",
        r"^\[2\] https://www\.britannica\.com/place/Paris$",
    ],
    "agent.py": [
        r"^\s*ai: .*-> get_temperature\(\{'city': 'Oslo'\}\)$",
        r"^\s*tool: 9$",
        r"^\s*ai: .*-> celsius_to_fahrenheit\(\{'celsius': 9\.0\}\)$",
        r"^\s*tool: 48\.2$",
        r"^\s*ai: It is 48\.2°F in Oslo right now\.$",
    ],
    "structured_output.py": [
        r"^json_schema: City\(name='Paris', country='France', population=2102650\)$",
        r"^function_calling: City\(name='Paris', country='France', population=2102650\)$",
        r"^include_raw: \['parsed', 'parsing_error', 'raw'\] parsing_error: None$",
    ],
    "swap_models.py": [
        r"^ChatPerplexityLabs: The capital of France is Paris \[1\]",
        r"^FakeListChatModel: Paris is the capital of France\.$",
    ],
}


def start(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # A warning is an error: an example must not greet its reader with one (a Labs name on the web).
    command = [sys.executable, "-W", "error::UserWarning", str(EXAMPLES / name), *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", env=env
    )


def output_of(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=90)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stdout


@pytest.fixture(scope="module")
def outputs() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """All examples started at once (each pays its own import time), collected per test."""
    processes = {name: start(name) for name in EXPECTED}
    yield processes
    for process in processes.values():
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_every_example_is_covered() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_offline_and_prints_its_result(
    outputs: dict[str, subprocess.Popen[str]], name: str
) -> None:
    lines = output_of(outputs[name]).splitlines()
    for pattern in EXPECTED[name]:
        assert any(re.search(pattern, line) for line in lines), (
            f"{name}: no line matches {pattern!r}:\n" + "\n".join(lines)
        )


def test_base_url_sends_the_example_to_that_server(emulator: LabsEmulator) -> None:
    emulator.script(
        answer="Answered by the server behind --base-url [1].", citations=["https://example.org/x"]
    )
    process = start("quickstart.py", "--base-url", emulator.base_url, "--model", "pplx_reasoning")
    lines = output_of(process).splitlines()
    assert lines[:2] == ["Answered by the server behind --base-url [1].", "  [1] https://example.org/x"]
    assert [request["model"] for request in emulator.requests] == ["pplx_reasoning", "pplx_reasoning"]


@pytest.mark.parametrize(
    ("transport", "asked"),
    [
        (None, "turbo"),  # the web's `auto`, which an anonymous session asks as `turbo`
        ("labs", "r1-1776"),  # Labs' own default, never a web name over Labs
    ],
)
def test_the_default_model_is_the_transports_own(
    emulator: LabsEmulator, transport: str | None, asked: str
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PPLX_LABS_TRANSPORT"}
    if transport is not None:
        env["PPLX_LABS_TRANSPORT"] = transport
    emulator.script(answer="Asked with the transport's default model.")
    process = start("quickstart.py", "--base-url", emulator.base_url, env=env)
    assert output_of(process).splitlines()[0] == "Asked with the transport's default model."
    assert [request["model"] for request in emulator.requests] == [asked, asked]


def test_an_example_that_warns_fails(emulator: LabsEmulator) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PPLX_LABS_TRANSPORT"}
    process = start("quickstart.py", "--base-url", emulator.base_url, "--model", "sonar-pro", env=env)
    stdout, stderr = process.communicate(timeout=90)
    assert process.returncode == 1
    assert stdout == ""
    assert "UserWarning: model='sonar-pro' is a name of Labs and the paid API" in stderr
    assert emulator.requests == []  # refused at construction, before any question
