"""Each retirement verdict as a user sees it offline: ``pplx-labs serve --FLAG``, then ``ask`` and ``doctor``.

``serve`` runs as the real command, one process per test, since what it does with its flag is the subject;
``ask`` and ``doctor`` run in-process against it (their output and exit code are what the tests read).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clirun import run_cli
from retired import HISTORY, INSTEAD, MAIN_SITE
from test_cli import serving

from langchain_pplx_labs import cli

QUESTION = "Is Labs still there?"


def _host(base_url: str) -> str:
    return base_url.split("://", 1)[1]


def _ask(base_url: str, *flags: str) -> tuple[int, str, str]:
    result = run_cli(
        "ask",
        "--transport",
        "labs",
        "--base-url",
        base_url,
        "--model",
        "sonar",
        "--system",
        "",
        *flags,
        QUESTION,
    )
    return result.returncode, result.stdout, result.stderr


def _doctor(base_url: str) -> tuple[int, list[str]]:
    result = run_cli(
        "doctor", "--transport", "labs", "--base-url", base_url, "--model", "sonar", "--timeout", "1"
    )
    assert result.stderr == ""
    return result.returncode, result.stdout.splitlines()


def _ask_and_doctor(
    *serve_flags: str, ask_flags: tuple[str, ...] = ()
) -> tuple[str, int, str, str, int, list[str]]:
    """``serve`` with ``serve_flags``, then ``ask`` and ``doctor`` against it.

    Returns the base URL, ask's exit code, stdout and stderr, then doctor's exit code and lines.
    """
    with serving(*serve_flags) as (_, first):
        base_url = first.strip()
        code, out, err = _ask(base_url, *ask_flags)
        doctor_code, lines = _doctor(base_url)
    return base_url, code, out, err, doctor_code, lines


def _line(lines: list[str], start: str) -> str:
    [line] = [line for line in lines if line.startswith(start)]
    return line


@pytest.mark.system
def test_serve_redirect_to_is_a_retired_labs_for_ask_and_doctor() -> None:
    base_url, code, out, err, doctor_code, lines = _ask_and_doctor("--redirect-to", MAIN_SITE)
    assert (code, out) == (1, "")
    assert err == (
        f"pplx-labs: error: Perplexity Labs is retired: ws://{_host(base_url)}/socket.io/?EIO=4&transport=websocket "
        f"redirects (HTTP 301) to {MAIN_SITE}, another host. {HISTORY}. Instead, {INSTEAD}\n"
    )
    assert doctor_code == 1
    assert _line(lines, "✘ Engine.IO open").endswith(f"HTTP 301 redirect to {MAIN_SITE}")
    assert _line(lines, "Verdict:") == f"Verdict: Labs is retired. {HISTORY}"


@pytest.mark.system
def test_serve_redirect_to_a_path_of_the_same_host_is_retired_too() -> None:
    with serving("--redirect-to", "/") as (_, first):
        code, _, err = _ask(first.strip())
    assert code == 1
    assert err.startswith("pplx-labs: error: Perplexity Labs is retired: ")
    assert err.count("\n") == 1


@pytest.mark.system
def test_serve_main_site_is_a_retired_labs_for_ask_and_doctor() -> None:
    base_url, code, out, err, doctor_code, lines = _ask_and_doctor("--main-site")
    assert (code, out) == (1, "")
    assert err == (
        f"pplx-labs: error: Perplexity Labs is retired: http://{_host(base_url)}/socket.io/?EIO=4&transport=polling "
        f"answers HTTP 200 with a page of Perplexity's main site (title 'Perplexity'), not Engine.IO. {HISTORY}. "
        f"Instead, {INSTEAD}\n"
    )
    assert doctor_code == 1
    assert _line(lines, "✘ Engine.IO open").endswith("HTTP 200: Perplexity's main site, not Engine.IO")
    assert _line(lines, "Verdict:") == f"Verdict: Labs is retired. {HISTORY}"


@pytest.mark.system
def test_serve_silent_is_a_timeout_whose_one_line_says_labs_may_be_retired() -> None:
    _base_url, code, out, err, doctor_code, lines = _ask_and_doctor(
        "--silent",
        ask_flags=("--first-token-timeout", "1"),
    )
    assert (code, out) == (1, "")
    assert err.count("\n") == 1  # the timeout and its retirement note on ONE line
    assert re.fullmatch(
        re.escape("pplx-labs: error: Perplexity Labs first_token timeout fired after 1s (attempt 1 of 1, ")
        + r"\d+\.\d\ds in total\); "
        + re.escape(
            "Perplexity Labs may be retired: the server took the question and sent no frame at all in 1s. "
            f"{HISTORY}. If the model is only slow, raise first_token_timeout; otherwise {INSTEAD}\n"
        ),
        err,
    ), err
    assert doctor_code == 1
    assert _line(lines, "✘ first frame").endswith("Perplexity Labs first_token timeout fired after 1s")
    assert _line(lines, "Verdict:") == (
        f"Verdict: Labs may be retired: a retired Labs takes the question and says nothing. {HISTORY}"
    )


@pytest.mark.system
def test_serve_failed_sends_the_public_failed_frame_and_no_retirement_verdict() -> None:
    _base_url, code, _, err, doctor_code, lines = _ask_and_doctor("--failed")
    assert code == 1
    assert (
        err
        == "pplx-labs: error: Perplexity Labs failed the query (model 'sonar'): Error in processing query\n"
    )
    assert doctor_code == 1
    assert (
        _line(lines, "Evidence:")
        == "Evidence: the server answered status failed: 'Error in processing query'"
    )
    assert not [line for line in lines if line.startswith("Verdict:")]


@pytest.mark.system
def test_serve_rate_limited_sends_the_rate_limit_frame_and_no_retirement_verdict() -> None:
    _base_url, code, _, err, doctor_code, lines = _ask_and_doctor("--rate-limited")
    assert code == 1
    assert err == (
        "pplx-labs: error: Perplexity Labs refused the query for a rate limit (model 'sonar', "
        "error_code FREE_TIER_RATE_LIMITED). Wait before asking again\n"
    )
    assert doctor_code == 1
    assert _line(lines, "Evidence:") == (
        "Evidence: the server refused the question for a rate limit (FREE_TIER_RATE_LIMITED)"
    )
    assert not [line for line in lines if line.startswith("Verdict:")]


@pytest.mark.system
def test_serve_rate_limited_after_frames_keeps_what_came_first() -> None:
    with serving("--rate-limited", "--fail-after", "2", "--chunk-size", "4", "--delay", "0") as (_, first):
        code, out, err = _ask(first.strip())
    assert code == 1
    assert out == "This is \n"  # two frames of 4 characters of the made-up answer, then the line is ended
    assert "error_code FREE_TIER_RATE_LIMITED" in err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--silent", "--failed"],
            "argument --failed: not allowed with argument --silent (see pplx-labs serve --help)",
        ),
        (
            ["--main-site", "--redirect-to", MAIN_SITE],
            "argument --redirect-to: not allowed with argument --main-site (see pplx-labs serve --help)",
        ),
        (
            ["--rate-limited", "--fail", "x"],
            "argument --fail: not allowed with argument --rate-limited (see pplx-labs serve --help)",
        ),
        (
            ["--blocked", "--silent"],
            "argument --silent: not allowed with argument --blocked (see pplx-labs serve --help)",
        ),
        (
            ["--redirect-to", "ftp://example.com/"],
            "argument --redirect-to: 'ftp://example.com/' is not an http(s) URL or a /path (see pplx-labs serve --help)",
        ),
        (
            ["--fail-after", "1"],
            "--fail-after needs --fail TEXT, --failed or --rate-limited (the failure to send) (see pplx-labs --help)",
        ),
    ],
)
def test_serve_verdict_flags_that_cannot_go_together_are_usage_errors(
    flags: list[str], expected: str
) -> None:
    result = run_cli("serve", "--port", "0", *flags)
    assert result.returncode == 2
    assert result.stderr == f"pplx-labs: error: {expected}\n"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--silent", "--stall-after", "2"],
            "--silent never answers; --stall-after N answers N frames first: pass one of them",
        ),
        (
            ["--rate-limited", "--cassettes", "cassettes/test_retirement"],
            "--cassettes choose the answers; --silent, --failed and --rate-limited cannot apply",
        ),
    ],
)
def test_serve_verdict_flags_with_flags_they_contradict_say_so(flags: list[str], expected: str) -> None:
    result = run_cli("serve", "--port", "0", *flags)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"pplx-labs: error: {expected}\n"


def test_serve_help_and_the_docs_name_each_verdict_flag() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    docs = Path(__file__).resolve().parents[1] / "docs"
    retirement = (docs / "retirement.md").read_text(encoding="utf-8")
    emulator = (docs / "emulator.md").read_text(encoding="utf-8")
    for flag in ("--redirect-to URL", "--main-site", "--silent", "--failed", "--rate-limited"):
        assert flag in result.stdout
        assert f"`{flag.split()[0]}" in retirement
        assert f"`{flag}`" in emulator


def test_every_note_of_an_error_joins_its_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    async def noted(args: object, out: object) -> int:
        error = ValueError("what happened\nsecond line of a diff")
        error.add_note("what it means")
        error.add_note("  what to do\n  next  ")
        raise error

    monkeypatch.setattr(cli, "_ask", noted)
    result = run_cli("ask", "--emulator", QUESTION)
    assert result.returncode == 1
    assert result.stderr == "pplx-labs: error: what happened; what it means; what to do next\n"
