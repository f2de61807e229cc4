"""The ``pplx-labs`` command as a user runs it, on real sockets.

What it prints and its exit code are checked in this process through ``clirun.run_cli``; a real
``pplx-labs`` process is started only where the process is the subject (``serve`` beside the test,
signals, a closed pipe, a fresh interpreter): those tests are marked ``system``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import command, run_cli
from pydantic import BaseModel

from langchain_pplx_labs import ChatPerplexityLabs, cli
from langchain_pplx_labs.cli import build_parser, main
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.emulator.script import default_citations, made_up_answer

QUESTION = "What is the capital of France?"
TIMEOUT = 60


def run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``pplx-labs ARGS`` as a real process, for the modules that import it (this one uses ``run_cli``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PPLX_LABS_BASE_URL", "PPLX_LABS_COOKIES")}
    env.update(env_extra or {})
    return subprocess.run(
        command(*args), capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False
    )


def footnotes(urls: list[str]) -> str:
    """The ``[n] URL`` lines ``ask`` ends its answer with."""
    return "".join(f"[{n}] {url}\n" for n, url in enumerate(urls, start=1))


def test_ask_emulator_prints_answer_and_numbered_footnotes() -> None:
    result = run_cli("ask", "--transport", "labs", "--emulator", "--model", "sonar-pro", QUESTION)
    assert result.returncode == 0, result.stderr
    answer = made_up_answer(QUESTION)
    urls = default_citations(QUESTION)
    assert result.stdout.count(answer) == 1
    assert "[1] https://" in result.stdout
    assert result.stdout.endswith(footnotes(urls))
    assert "<think>" not in result.stdout


def test_ask_with_reasoning_model_shows_thinking_only_when_asked() -> None:
    result = run_cli("ask", "--transport", "labs", "--emulator", "--show-reasoning", QUESTION)
    assert result.returncode == 0, result.stderr
    assert "[thinking] The user asks:" in result.stdout
    assert "[answer] " + made_up_answer(QUESTION) in result.stdout
    assert "</think>" not in result.stdout


def test_ask_reports_server_failure_on_stderr_with_exit_code(emulator: LabsEmulator) -> None:
    emulator.script(fail="Error in processing query")
    result = run_cli("ask", "--transport", "labs", "--base-url", emulator.base_url, QUESTION)
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


@pytest.mark.system
def test_serve_prints_base_url_first_and_answers_there(served: tuple[subprocess.Popen[str], str]) -> None:
    process, first = served
    base_url = first.strip()
    assert first.endswith("\n")
    assert base_url.startswith("http://127.0.0.1:")
    port = int(base_url.rsplit(":", 1)[1])
    assert port > 0
    with ChatPerplexityLabs(transport="labs", model="sonar-pro", base_url=base_url, max_retries=0) as chat:
        message = chat.invoke(QUESTION)
    assert message.content == made_up_answer(QUESTION)
    assert message.response_metadata["citations"] == default_citations(QUESTION)
    # The CLI's own client works against it too.
    result = run_cli("ask", "--transport", "labs", "--base-url", base_url, QUESTION)
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


@pytest.mark.system
def test_serve_follow_tools_answers_tool_and_schema_prompts() -> None:
    with (
        serving("--follow-tools", "--chunk-size", "4") as (_, first),
        ChatPerplexityLabs(
            transport="labs", model="sonar-pro", base_url=first.strip(), max_retries=0
        ) as chat,
    ):
        call = chat.bind_tools([get_weather]).invoke("Weather in 'Lyon'?")
        parsed = chat.with_structured_output(Weather).invoke("It is 21 degrees in 'Nice'.")
        chunks = list(chat.stream("What is the capital of France?"))
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("get_weather", {"city": "Lyon"})]
    assert parsed == Weather(city="Nice", celsius=21)
    # The command line's pacing applies to its answers: 4 characters per frame.
    assert max(len(str(c.content)) for c in chunks) <= 4 < len("".join(str(c.content) for c in chunks))


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["serve", "--follow-tools", "--cassettes", "CASSETTES"],
            "--follow-tools and --cassettes both choose",
        ),
        (
            ["serve", "--cassettes", "CASSETTES", "--follow-tools"],
            "--follow-tools and --cassettes both choose",
        ),
        (["gateway", "--follow-tools"], "--follow-tools needs --emulator"),
        (["serve", "--gate"], "--gate reads the TLS ClientHello: pass --tls too"),
        (["doctor", "--timeout", "-1"], "argument --timeout: invalid value -1: must be > 0"),
    ],
)
def test_flags_that_do_not_go_together_are_usage_errors(tmp_path: Path, argv: list[str], words: str) -> None:
    result = run_cli(*(str(tmp_path) if arg == "CASSETTES" else arg for arg in argv))
    assert result.returncode == 2  # usage errors exit 2, as argparse's own
    assert result.stdout == ""
    err = result.stderr
    assert err.splitlines() == [err.strip()]
    assert err.startswith("pplx-labs: error: ")
    assert words in err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["ask", "--model", "bad model!", QUESTION], 1, "model: Invalid web model name 'bad model!'"),
        (["ask", "--base-url", "notaurl", QUESTION], 2, "argument --base-url: Invalid base_url 'notaurl'"),
        (["ask", "--base-url", "ftp://x", QUESTION], 2, "Invalid base_url 'ftp://x'"),
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
        (
            ["cassette", "record", "--transport", "labs", "--emulator", "--out", "/proc/x.labs.yaml", "q"],
            1,
            "/proc/x.labs.yaml",
        ),
        (
            ["cassette", "record", "--header", "nocolon", "--out", "x.yaml", "q"],
            2,
            "invalid header 'nocolon'",
        ),
    ],
)
def test_bad_input_is_one_error_line_not_a_traceback(
    args: list[str], code: int, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A relative --out that a regression did write would land here, not in the checkout.
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    assert "error: " in result.stderr.splitlines()[-1]


def test_serve_on_a_busy_port_names_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(f"pplx-labs: error: cannot serve on 127.0.0.1:{port}: ")
    assert "Traceback" not in result.stderr


def test_serve_an_empty_cassette_folder_is_an_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--cassettes", str(tmp_path))
    assert result.returncode == 1
    assert f"no *.labs.yaml cassettes under {tmp_path}" in result.stderr


def test_ask_with_empty_system_sends_no_system_message(emulator: LabsEmulator) -> None:
    result = run_cli("ask", "--transport", "labs", "--base-url", emulator.base_url, "--system", "", QUESTION)
    assert result.returncode == 0, result.stderr
    assert emulator.requests[-1]["messages"] == [{"role": "user", "content": QUESTION}]


def test_record_from_an_unreachable_server_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "live.labs.yaml"
    url = f"http://127.0.0.1:{_free_port()}"
    result = run_cli(
        "cassette", "record", "--transport", "labs", "--base-url", url, "--out", str(out), QUESTION
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"pplx-labs: error: cannot reach {url}: ")
    assert "recorded" not in result.stderr
    assert not out.exists()


def test_record_sends_cookies_and_headers_but_saves_them_redacted(
    emulator: LabsEmulator, tmp_path: Path
) -> None:
    out = tmp_path / "live.labs.yaml"
    result = run_cli(
        *(
            "cassette",
            "record",
            "--transport",
            "labs",
            "--base-url",
            emulator.base_url,
            "--out",
            str(out),
            QUESTION,
        ),
        *("--header", "X-Team-Token: TEAM-SECRET-1", "--header", "Accept-Language: fr"),
        env={"PPLX_LABS_COOKIES": "cf_clearance=COOKIE-SECRET-2"},
    )
    assert result.returncode == 0, result.stderr
    sent = emulator.handshake_headers[-1]
    assert sent["Cookie"] == "cf_clearance=COOKIE-SECRET-2"
    assert sent["X-Team-Token"] == "TEAM-SECRET-1"
    saved = out.read_text()
    assert "COOKIE-SECRET-2" not in saved
    assert "TEAM-SECRET-1" not in saved
    assert "X-Team-Token: <redacted>" in saved
    # A loopback server is an emulator or a stand-in, never the live service (as the doctor's --record says).
    assert "provenance: synthetic" in saved


def test_record_goes_through_the_given_proxy(emulator: LabsEmulator, tmp_path: Path) -> None:
    out = tmp_path / "live.labs.yaml"
    dead_proxy = f"socks5://127.0.0.1:{_free_port()}"
    result = run_cli(
        *(
            "cassette",
            "record",
            "--transport",
            "labs",
            "--base-url",
            emulator.base_url,
            "--proxy",
            dead_proxy,
        ),
        *("--out", str(out), QUESTION),
    )
    assert result.returncode == 1
    assert f"cannot reach {emulator.base_url}: proxy" in result.stderr
    assert emulator.requests == []
    assert not out.exists()


# -- one-line errors, checked flags, quiet pipes (issue 17, item 4) -------------------------------


def _one_error_line(stderr: str) -> str:
    """The single ``pplx-labs: error:`` line of ``stderr``; fails on anything more (a traceback, a blank line)."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pplx-labs: error: "), stderr
    return lines[0].removeprefix("pplx-labs: error: ")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
        (
            ["ask", "--emulator", "--base-url", "http://127.0.0.1:1", "q"],
            "argument --base-url: not allowed with",
        ),
        (["ask", ""], "the question is empty"),
        (["ask", "--emulator", "  \n"], "the question is empty"),
        (["cassette", "record", "--emulator", "--out", "x.labs.yaml", " "], "the question is empty"),
        (["serve", "--delay", "-1"], "argument --delay: invalid value -1: must be >= 0"),
        (["serve", "--first-delay", "-0.5"], "argument --first-delay: invalid value -0.5: must be >= 0"),
        (["serve", "--speed", "-1"], "argument --speed: invalid value -1: must be >= 0"),
        (["serve", "--stall-after", "-1"], "argument --stall-after: invalid value -1: must be >= 0"),
        (["serve", "--drop-after", "two"], "argument --drop-after: invalid number 'two'"),
        (["serve", "--chunk-size", "0"], "argument --chunk-size: invalid value 0: must be >= 1"),
        (["serve", "--delay", "nan"], "argument --delay: invalid value nan: must be >= 0"),
        (
            ["cassette", "record", "--proxy", "https://127.0.0.1:8080", "--out", "x.labs.yaml", "q"],
            "argument --proxy: invalid proxy 'https://127.0.0.1:8080': expected http://, socks4:// or "
            "socks5://HOST:PORT (https:// proxies are not supported)",
        ),
        (
            ["cassette", "record", "--proxy", "socks5://127.0.0.1", "--out", "x.labs.yaml", "q"],
            "argument --proxy: invalid proxy 'socks5://127.0.0.1'",
        ),
        (
            ["cassette", "record", "--emulator", "--proxy", "socks5://127.0.0.1:1080", "--out", "x", "q"],
            "--proxy is for recording a --base-url server; the in-process --emulator is reached directly",
        ),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert _one_error_line(captured.err).startswith(expected)
    assert captured.out == ""


MALFORMED = """\
provenance: synthetic
recorded_at: '2026-01-01T00:00:00+00:00'
model: sonar-pro
client_version: '0.1'
interactions:
- request: {model: sonar-pro}
  frames:
  - at: -1
    kind: nonsense
"""


def test_cassette_show_errors_are_one_line_naming_the_file_and_first_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    malformed = tmp_path / "bad.labs.yaml"
    malformed.write_text(MALFORMED)
    not_yaml = tmp_path / "notyaml.labs.yaml"
    not_yaml.write_text("provenance: [synthetic\n")
    assert main(["cassette", "show", str(malformed)]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        f"Cassette {malformed} is malformed: interactions.0.frames.0.at: "
        "Input should be greater than or equal to 0 (and 1 more)"
    )
    assert main(["cassette", "show", str(not_yaml)]) == 1
    assert _one_error_line(capsys.readouterr().err).startswith(
        f"Cassette {not_yaml} is not valid YAML: line 2, column 1: "
    )
    binary = tmp_path / "binary.labs.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    assert main(["cassette", "show", str(binary)]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        f"Cassette {binary} is not a text file: byte 0 is not UTF-8 (a cassette is YAML text)"
    )
    future = tmp_path / "future.labs.yaml"
    future.write_text("version: 99\n" + MALFORMED)
    assert main(["cassette", "show", str(future)]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        f"Cassette {future} has version 99: this pplx-labs reads version 1 only"
    )
    assert main(["cassette", "show", str(tmp_path / "nope.labs.yaml")]) == 1
    assert _one_error_line(capsys.readouterr().err) == (
        f"Cannot read cassette {tmp_path / 'nope.labs.yaml'}: No such file or directory"
    )


def test_serve_refuses_a_malformed_cassette_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.labs.yaml").write_text(MALFORMED)
    result = run_cli("serve", "--cassettes", str(tmp_path))
    assert result.returncode == 1
    assert _one_error_line(result.stderr).startswith(f"Cassette {tmp_path / 'bad.labs.yaml'} is malformed: ")


def test_ask_server_failure_mid_answer_is_one_line_after_the_partial_answer(emulator: LabsEmulator) -> None:
    emulator.script(
        answer="Partial answer that breaks off.", chunk_size=4, fail="Boom at frame two", fail_after=2
    )
    result = run_cli(
        "ask", "--transport", "labs", "--base-url", emulator.base_url, "--model", "sonar-pro", QUESTION
    )
    assert result.returncode == 1
    assert "Boom at frame two" in _one_error_line(result.stderr)
    assert result.stdout == "Partial \n"  # two frames of 4 characters, then the line is ended


def test_unexpected_exceptions_are_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken(args: object, out: object) -> int:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(cli, "_ask", broken)
    assert main(["ask", "--emulator", QUESTION]) == 1
    assert _one_error_line(capsys.readouterr().err) == "unexpected RuntimeError: something nobody expected"


@pytest.mark.system
def test_ask_into_a_closed_pipe_exits_quietly_with_141(emulator: LabsEmulator) -> None:
    """``pplx-labs ask ... | head -c 5``: the reader leaves early; no "Broken pipe", exit 128 + SIGPIPE."""
    emulator.script(answer="word " * 2_000, chunk_size=5, delay=0.002)
    process = subprocess.Popen(
        command(
            "ask", "--transport", "labs", "--base-url", emulator.base_url, "--model", "sonar-pro", QUESTION
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    with process.stdout as stdout:
        assert stdout.read(5) == b"word "
    try:
        assert process.wait(timeout=TIMEOUT) == cli.EXIT_BROKEN_PIPE == 141
        assert process.stderr.read() == b""
    finally:
        process.kill()
        process.wait()
        process.stderr.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.system
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_serve_on_ipv6_prints_a_bracketed_url_the_model_accepts() -> None:
    with serving("--host", "::1") as (_, first):
        base_url = first.strip()
        assert base_url.startswith("http://[::1]:")
        with ChatPerplexityLabs(
            transport="labs", model="sonar-pro", base_url=base_url, max_retries=0
        ) as chat:
            assert chat.invoke(QUESTION).content == made_up_answer(QUESTION)


# -- recorded with the CLI, replayed with the CLI (issue 17, item 5) ------------------------------


@pytest.mark.system
def test_a_cli_recording_replays_with_ask_and_a_near_miss_names_the_closest_recording(tmp_path: Path) -> None:
    # "a" sorts first: a mismatch that blamed the first cassette would name it instead of "b".
    for name, question in (("a", "Say hello."), ("b", QUESTION)):
        out = tmp_path / f"{name}.labs.yaml"
        recorded = run_cli(
            "cassette",
            "record",
            "--transport",
            "labs",
            "--emulator",
            "--model",
            "sonar-pro",
            "--out",
            str(out),
            question,
        )
        assert recorded.returncode == 0, recorded.stderr
    # Replayed by `pplx-labs serve --cassettes`, the process a user starts beside the client.
    with serving("--cassettes", str(tmp_path)) as (_, first):
        base_url = first.strip()
        same = run_cli("ask", "--transport", "labs", "--base-url", base_url, "--model", "sonar-pro", QUESTION)
        near = run_cli(
            "ask",
            "--transport",
            "labs",
            "--base-url",
            base_url,
            "--model",
            "sonar-pro",
            "What is the capital of Spain?",
        )
    assert same.returncode == 0, same.stderr
    assert same.stdout == (
        "The capital of France is Paris [1]. It has been the seat of the French government for most of "
        "the country's history [2].\n\nSources:\n"
        "[1] https://en.wikipedia.org/wiki/Paris\n[2] https://www.britannica.com/place/Paris\n"
    )
    assert near.returncode == 1
    error = _one_error_line(near.stderr)
    assert (
        f"Request does not match cassette {tmp_path / 'b.labs.yaml'} (closest recorded request: #1)" in error
    )
    assert (
        'recorded "content": "What is the capital of France?" but sent "content": "What is the capital of Spain?"'
        in error
    )
    assert "a.labs.yaml" not in error


def test_ask_and_cassette_record_send_the_same_system_prompt(emulator: LabsEmulator, tmp_path: Path) -> None:
    asked = run_cli("ask", "--transport", "labs", "--base-url", emulator.base_url, QUESTION)
    assert asked.returncode == 0, asked.stderr
    recorded = run_cli(
        "cassette",
        "record",
        "--transport",
        "labs",
        "--base-url",
        emulator.base_url,
        "--out",
        str(tmp_path / "q.labs.yaml"),
        QUESTION,
    )
    assert recorded.returncode == 0, recorded.stderr
    first, second = emulator.requests
    assert first == second
    assert first["messages"] == [
        {"role": "system", "content": "Answer concisely and cite your sources."},
        {"role": "user", "content": QUESTION},
    ]


README = Path(__file__).resolve().parents[1] / "docs" / "tools_and_agents.md"


@pytest.mark.system
def test_readme_bind_tools_snippet_gives_what_it_shows_against_serve_follow_tools() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    [snippet] = [b for b in blocks if "ChatPerplexityLabs(" in b and ".bind_tools([get_weather])" in b]
    show = "\nprint(json.dumps([[c['name'], c['args']] for c in msg.tool_calls]))\n"
    with serving("--follow-tools") as (_, first):
        # A fresh interpreter, as a reader runs the snippet (which never closes its model).
        env = {**os.environ, "PPLX_LABS_BASE_URL": first.strip()}
        result = subprocess.run(
            [sys.executable, "-c", "import json\n" + snippet + show],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [["get_weather", {"city": "Paris"}]]


def test_help_lists_every_command_and_every_flag_has_help() -> None:
    """Issue #31: --help omitted doctor and cassette, showed ``double backquotes``; flags had no help."""
    from langchain_pplx_labs.protocol import KNOWN_MODELS, WEB_MODELS

    top = run_cli("--help")
    assert top.returncode == 0
    description = top.stdout.split("positional arguments:")[0]
    for cmd in ("ask", "doctor", "serve", "cassette", "gateway"):
        assert f"({cmd})" in description
    assert "``" not in top.stdout
    cmds = [["ask"], ["serve"], ["doctor"], ["gateway"], ["cassette", "show"], ["cassette", "record"]]
    for cmd in cmds:
        shown = run_cli(*cmd, "--help")
        assert shown.returncode == 0
        assert "``" not in shown.stdout
        parser = build_parser()
        for name in cmd:
            parser = next(
                action.choices[name]
                for action in parser._actions
                if isinstance(action, argparse._SubParsersAction)
            )
        silent = [
            action.option_strings[0]
            for action in parser._actions
            if action.option_strings and not action.help
        ]
        assert silent == [], cmd
    for cmd in (["ask"], ["doctor"], ["cassette", "record"]):
        help_text = " ".join(run_cli(*cmd, "--help").stdout.split())
        for model in (*WEB_MODELS, *KNOWN_MODELS):
            assert model in help_text, (cmd, model)


def test_a_count_of_one_is_singular() -> None:
    """Issue #31: "1 frames"."""
    one_frame = Path(__file__).parent.parent / "cassettes/test_retirement/test_public_failed_frame.labs.yaml"
    shown = run_cli("cassette", "show", str(one_frame))
    assert shown.returncode == 0, shown.stderr
    assert ", 1 progress frame\n" in shown.stdout
