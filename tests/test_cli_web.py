"""``--transport web`` on the command line: ``ask`` in this process, ``gateway`` as a real process, against the emulator."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from clirun import run_cli
from test_cli import footnotes
from test_gateway_cli import _start, _stop

from langchain_pplx_labs.cli import main
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.settings import BROWSER_USER_AGENT

QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital of France [1]. It hosts the government [2]."
CITATIONS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]


@pytest.mark.parametrize(
    ("flags", "env"),
    [(["--transport", "web"], {}), ([], {"PPLX_LABS_TRANSPORT": "web"}), ([], {})],
    ids=["flag", "environment", "default"],
)
def test_ask_over_the_web_prints_the_answer_and_its_sources(
    flags: list[str], env: dict[str, str], emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS, chunk_size=9)
    result = run_cli("ask", "--base-url", emulator.base_url, *flags, QUESTION, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{ANSWER}\n\nSources:\n{footnotes(CITATIONS)}"
    assert emulator.web.asks == 1
    assert sum(emulator.handshakes.values()) == 0  # nothing over Socket.IO
    assert emulator.requests[-1]["model"] == "turbo"  # no --model: "auto", anonymous


def test_ask_transport_labs_overrides_the_environment(emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS)
    result = run_cli(
        "ask", "--base-url", emulator.base_url, "--transport", "labs", QUESTION,
        env={"PPLX_LABS_TRANSPORT": "web"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(ANSWER)
    assert emulator.web.asks == 0
    assert emulator.requests[-1]["model"] == "r1-1776"


def test_ask_web_refusal_is_one_line(emulator: LabsEmulator) -> None:
    emulator.blocked = True
    result = run_cli("ask", "--base-url", emulator.base_url, "--transport", "web", QUESTION)
    assert result.returncode == 1
    assert result.stderr.startswith("pplx-labs: error: Perplexity blocked the session check: HTTP 403")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_an_unknown_transport_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["ask", "--transport", "sse", QUESTION])
    assert caught.value.code == 2
    assert "invalid choice: 'sse'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "env", "ours"),
    [
        ([], {}, False),
        (["--impersonate", "chrome152"], {}, False),
        (["--impersonate", "none"], {}, True),
        ([], {"PPLX_LABS_IMPERSONATE": "none"}, True),
        (["--impersonate", "chrome"], {"PPLX_LABS_IMPERSONATE": "none"}, False),
    ],
    ids=["default", "flag", "flag-none", "environment-none", "flag-over-environment"],
)
def test_ask_speaks_as_the_browser_impersonate_names(
    flags: list[str], env: dict[str, str], ours: bool, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS)
    result = run_cli("ask", "--base-url", emulator.base_url, *flags, QUESTION, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(ANSWER)
    sent = [{name.lower(): value for name, value in headers.items()} for headers in emulator.web.headers]
    assert len(sent) == 2  # the session check and the ask
    # Plain aiohttp sends the model's own User-Agent; curl_cffi, the impersonated browser's with its hints.
    for headers in sent:
        if ours:
            assert headers["user-agent"] == BROWSER_USER_AGENT
            assert "sec-ch-ua" not in headers
        else:
            assert "Chrome/" in headers["user-agent"]
            assert headers["user-agent"] != BROWSER_USER_AGENT
            assert '"Chromium"' in headers["sec-ch-ua"]


@pytest.mark.parametrize("command", ["ask", "doctor", "gateway"])
def test_an_unknown_browser_is_a_usage_error_naming_the_targets(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([command, "--impersonate", "netscape4", *([QUESTION] if command == "ask" else [])])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "argument --impersonate: Invalid impersonate 'netscape4'" in error
    assert "chrome152" in error


def test_the_gateway_hands_impersonate_to_its_model() -> None:
    from langchain_pplx_labs.cli import build_parser
    from langchain_pplx_labs.cli._shared import impersonate_option

    assert impersonate_option(build_parser().parse_args(["gateway", "--impersonate", "none"])) == {
        "impersonate": "none"
    }
    assert impersonate_option(build_parser().parse_args(["gateway"])) == {}  # the environment's, else chrome


@pytest.mark.system  # `pplx-labs gateway` serves beside the test until a signal stops it
def test_the_openai_sdk_streams_from_the_gateway_over_the_web(emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS, chunk_size=7)
    process, root = _start("--base-url", emulator.base_url, "--transport", "web")
    try:
        with openai.OpenAI(base_url=root + "/v1", api_key="unused", max_retries=0) as client:
            chunks = list(
                client.chat.completions.create(
                    model="auto",
                    messages=[{"role": "user", "content": QUESTION}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            completion = client.chat.completions.create(
                model="sonar-pro", messages=[{"role": "user", "content": QUESTION}]
            )
    finally:
        stderr = _stop(process)
    assert "Traceback" not in stderr
    texts = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices]
    assert len([text for text in texts if text]) > 3  # streamed, not one block
    assert "".join(text or "" for text in texts) == ANSWER
    assert chunks[-1].usage is not None
    assert completion.choices[0].message.content == ANSWER
    assert completion.model_extra["citations"] == CITATIONS
    assert emulator.web.asks == 2
    assert sum(emulator.handshakes.values()) == 0
    assert [request["model"] for request in emulator.requests] == ["turbo", "sonar-pro"]


def test_ask_over_the_web_sends_the_question_itself(emulator: LabsEmulator) -> None:
    """Issue #31: ask's default system prompt made every CLI web question a transcript."""
    result = run_cli("ask", "--transport", "web", "--base-url", emulator.base_url, QUESTION)
    assert result.returncode == 0, result.stderr
    assert emulator.web.bodies[-1]["query_str"] == QUESTION


def test_ask_over_the_web_sends_a_system_prompt_only_when_given(emulator: LabsEmulator) -> None:
    flags = ("--transport", "web", "--base-url", emulator.base_url, "--system", "Be brief.")
    result = run_cli("ask", *flags, QUESTION)
    assert result.returncode == 0, result.stderr
    sent = emulator.web.bodies[-1]["query_str"]
    assert "Be brief." in sent
    assert QUESTION in sent
    assert sent != QUESTION


def test_ask_sends_the_search_options_under_their_field_names(emulator: LabsEmulator) -> None:
    flags = ("--base-url", emulator.base_url, "--search-mode", "academic", "--search-recency-filter", "week")
    result = run_cli("ask", *flags, QUESTION)
    assert result.returncode == 0, result.stderr
    params = emulator.web.bodies[-1]["params"]
    assert params["sources"] == ["scholar"]
    assert params["search_recency_filter"] == "week"
    result = run_cli("ask", "--base-url", emulator.base_url, "--disable-search", QUESTION)
    assert result.returncode == 0, result.stderr
    assert emulator.web.bodies[-1]["params"]["search_focus"] == "writing"
    assert emulator.web.bodies[-1]["params"]["sources"] == []


def test_an_unknown_search_mode_is_a_usage_error(emulator: LabsEmulator) -> None:
    result = run_cli("ask", "--base-url", emulator.base_url, "--search-mode", "news", QUESTION)
    assert result.returncode == 2
    assert "argument --search-mode: invalid choice: 'news'" in result.stderr
    assert emulator.web.asks == 0


def test_ask_attaches_files_a_signed_in_session_uploads(emulator: LabsEmulator, tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    (tmp_path / "dot.png").write_bytes(png)
    (tmp_path / "notes.txt").write_bytes(b"two lines\nof notes\n")
    signed_in = {"PPLX_LABS_COOKIES": "__Secure-next-auth.session-token=cli-attach-token"}
    files = ("--attach", str(tmp_path / "dot.png"), "--attach", str(tmp_path / "notes.txt"))
    result = run_cli("ask", "--base-url", emulator.base_url, *files, QUESTION, env=signed_in)
    assert result.returncode == 0, result.stderr
    stored = [(item.data, item.filename, item.content_type) for item in emulator.web.uploads.stored.values()]
    assert stored == [(png, "dot.png", "image/png"), (b"two lines\nof notes\n", "notes.txt", "text/plain")]
    assert emulator.web.bodies[-1]["params"]["attachments"] == [
        item.url for item in emulator.web.uploads.stored.values()
    ]
    assert emulator.web.bodies[-1]["query_str"] == QUESTION


def test_ask_attaching_without_a_session_or_a_file_is_one_line(
    emulator: LabsEmulator, tmp_path: Path
) -> None:
    (tmp_path / "dot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    anonymous = run_cli(
        "ask", "--base-url", emulator.base_url, "--attach", str(tmp_path / "dot.png"), QUESTION
    )
    assert anonymous.returncode == 1
    assert anonymous.stderr.startswith("pplx-labs: error: The question attaches 'dot.png'")
    assert "the web session is not signed in" in anonymous.stderr
    missing = run_cli(
        "ask", "--base-url", emulator.base_url, "--attach", str(tmp_path / "gone.pdf"), QUESTION
    )
    assert missing.returncode == 1
    assert missing.stderr == f"pplx-labs: error: {tmp_path / 'gone.pdf'}: No such file or directory\n"
    big = tmp_path / "big.pdf"
    with big.open("wb") as sparse:
        sparse.truncate(51 * 1024 * 1024)  # 51 MB without writing them
    too_big = run_cli("ask", "--base-url", emulator.base_url, "--attach", str(big), QUESTION)
    assert too_big.returncode == 1
    assert too_big.stderr == f"pplx-labs: error: {big} is 51.0 MB, over the 50 MB limit per file\n"
    assert (emulator.web.asks, emulator.web.uploads.batches) == (0, 0)
