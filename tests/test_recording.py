"""Recording, redaction, replay, mismatch diffs, the CLI and the pytest plugin's record modes."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import command
from langchain_core.messages import HumanMessage, SystemMessage

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.cli import main
from langchain_pplx_labs.emulator import (
    Drop,
    Emit,
    EmulatorThread,
    LabsEmulator,
    Scenario,
    Stall,
    progress_frame,
)
from langchain_pplx_labs.errors import PerplexityLabsServerError
from langchain_pplx_labs.protocol import build_payload
from langchain_pplx_labs.recording import (
    Cassette,
    CassetteError,
    CassetteMismatchError,
    CassetteResponder,
    Frame,
    Interaction,
    Redactor,
    UpstreamUnreachableError,
    load_cassette,
    payload_diff,
    record_cassette,
    save_cassette,
)
from langchain_pplx_labs.recording.cassette import dump_cassette, parse_cassette
from langchain_pplx_labs.recording.redact import REDACTED
from langchain_pplx_labs.recording.replay import interaction_steps, payload_matches

pytest_plugins = ["pytester"]

UNICODE = "Paris 🇫🇷 — ‏שלום‏, مرحبا, 日本語, trailing spaces   \nsecond line\twith tab\n\n"


@pytest.fixture
def model(base_url: str) -> Iterator[ChatPerplexityLabs]:
    """A sonar-pro model (no think section) bound to the shared emulator."""
    chat = ChatPerplexityLabs(
        transport="labs",
        model="sonar-pro",
        base_url=base_url,
        first_token_timeout=5,
        idle_timeout=5,
        max_retries=0,
    )
    yield chat
    chat.close()


def _payload(question: str, model: str = "sonar-pro") -> dict[str, object]:
    return build_payload(model, [{"role": "user", "content": question}])


def _record(emulator_thread: EmulatorThread, payloads: list[dict[str, object]], **kwargs: object) -> Cassette:
    """Record on a loop of our own, as a user would from a script."""
    coroutine = record_cassette(
        emulator_thread.base_url, payloads, provenance="synthetic", silence=0.5, **kwargs
    )  # type: ignore[arg-type]
    return asyncio.run(coroutine)


def _replay(emulator_thread: EmulatorThread, cassette: Cassette, **kwargs: float) -> CassetteResponder:
    responder = CassetteResponder({"mem.yaml": cassette}, **kwargs)
    emulator_thread.call(lambda: emulator_thread.emulator.script(responder))
    return responder


def test_record_then_replay_is_byte_identical(
    emulator: LabsEmulator, emulator_thread: EmulatorThread, model: ChatPerplexityLabs, tmp_path: Path
) -> None:
    emulator.script(
        answer=UNICODE * 40, chunk_size=7, citations=[{"url": "https://example.org/a", "title": "A"}]
    )
    live = model.invoke("Round trip?")
    cassette = _record(emulator_thread, [_payload("Round trip?")])
    path = save_cassette(cassette, tmp_path / "round.yaml")
    loaded = load_cassette(path)
    assert loaded == cassette
    assert dump_cassette(loaded) == path.read_text(encoding="utf-8")
    _replay(emulator_thread, loaded)
    replayed = model.invoke("Round trip?")
    assert replayed.content.encode() == live.content.encode() == (UNICODE * 40).encode()  # type: ignore[union-attr]
    assert replayed.response_metadata["search_results"] == [{"url": "https://example.org/a", "title": "A"}]


def test_growing_output_is_stored_as_appended_text(
    emulator: LabsEmulator, emulator_thread: EmulatorThread
) -> None:
    emulator.script(answer="x" * 30_000, chunk_size=3_000)
    text = dump_cassette(_record(emulator_thread, [_payload("Long?")]))
    assert "output_append" in text
    assert len(text) < 2 * 30_000  # cumulative frames would take ~165 KB
    assert parse_cassette(text).interactions[0].frames[-1].data["output"] == "x" * 30_000


def test_shrinking_output_is_kept_verbatim() -> None:
    frames = [
        Frame(at=0.1 * n, event="m_query_progress", data={"output": o})
        for n, o in enumerate(["ab", "abc", "a", "abcd"])
    ]
    cassette = Cassette(
        provenance="synthetic",
        recorded_at="t",
        model="m",
        client_version="0",
        interactions=[Interaction(request={}, frames=frames)],
    )
    assert parse_cassette(dump_cassette(cassette)) == cassette


def test_redaction_hides_cookies_auth_sid_and_user_agent(
    emulator: LabsEmulator, emulator_thread: EmulatorThread
) -> None:
    event = "sonar-pro_query_progress"
    emulator.script(
        [
            Emit("session", {"sid": "SERVER-SID-123", "nested": [{"token": "TOKEN-456"}], "keep": "visible"}),
            Emit(event, progress_frame("Hello", elapsed=0.1, citations=["https://example.org"], final=True)),
        ]
    )
    headers = {
        "Origin": "https://labs.perplexity.ai",
        "Cookie": "cf_clearance=COOKIE-789",
        "Authorization": "Bearer AUTH-000",
        "User-Agent": "MyMachine/1.0 (host-abc)",
    }
    cassette = _record(emulator_thread, [_payload("Hi")], headers=headers, redactor=Redactor(user_agent=True))
    text = dump_cassette(cassette)
    for secret in ("SERVER-SID-123", "TOKEN-456", "COOKIE-789", "AUTH-000", "host-abc", "anonymous-ask-user"):
        assert secret not in text
    assert cassette.connection["sid"] == REDACTED
    assert cassette.connection["headers"]["Cookie"] == REDACTED
    assert "visible" in text
    assert "https://labs.perplexity.ai" in text


def test_user_agent_kept_unless_asked(emulator_thread: EmulatorThread, emulator: LabsEmulator) -> None:
    headers = {"Origin": "https://labs.perplexity.ai", "User-Agent": "Visible/2.0"}
    assert "Visible/2.0" in dump_cassette(_record(emulator_thread, [_payload("Hi")], headers=headers))


def test_refusal_headers_are_redacted(emulator: LabsEmulator, emulator_thread: EmulatorThread) -> None:
    emulator.blocked = True
    cassette = _record(emulator_thread, [_payload("Hi")])
    refusal = cassette.interactions[0].refusal
    assert refusal is not None
    assert refusal.status == 403
    assert "Cloudflare" in refusal.body
    assert refusal.headers["cf-ray"] == REDACTED
    assert "EMU" not in dump_cassette(cassette)


def test_redactor_is_configurable() -> None:
    redactor = Redactor(extra_headers=["X-Trace"], extra_keys=["email"], placeholder="***")
    assert redactor.redact_headers({"x-trace": "t1", "Accept": "a"}) == {"x-trace": "***", "Accept": "a"}
    assert redactor.redact_data({"user": {"EMAIL": "a@b.c", "name": "n"}}) == {
        "user": {"EMAIL": "***", "name": "n"}
    }


def test_mismatch_fails_fast_with_a_readable_diff(
    emulator_thread: EmulatorThread, emulator: LabsEmulator, model: ChatPerplexityLabs
) -> None:
    cassette = _record(emulator_thread, [_payload("What is the capital of France?")])
    responder = _replay(emulator_thread, cassette)
    with pytest.raises(PerplexityLabsServerError) as caught:
        model.invoke("What is the capital of Spain?")
    message = str(caught.value)
    assert '-      "content": "What is the capital of France?",' in message
    assert '+      "content": "What is the capital of Spain?",' in message
    assert "mem.yaml" in message
    [mismatch] = responder.mismatches
    assert isinstance(mismatch, CassetteMismatchError)
    assert mismatch.sent["messages"][0]["content"] == "What is the capital of Spain?"


def test_payload_diff_and_matching() -> None:
    diff = payload_diff({"model": "sonar", "n": 1}, {"model": "sonar-pro", "n": 1})
    assert diff.splitlines()[:2] == ["--- expected (cassette)", "+++ sent"]
    assert '-  "model": "sonar",' in diff
    assert '+  "model": "sonar-pro",' in diff
    assert payload_matches({"a": REDACTED, "b": [1]}, {"a": "anything", "b": [1]})
    assert not payload_matches({"a": 1}, {"a": 1, "b": 2})


def test_speed_scales_recorded_gaps() -> None:
    frames = [
        Frame(at=0.5, event="e", data={}),
        Frame(at=1.5, event="e", data={}),
        Frame(at=2.0, kind="drop"),
    ]
    interaction = Interaction(request={}, frames=frames)
    assert [s.delay for s in interaction_steps(interaction, speed=1.0)] == [0.5, 1.0, 0.5]  # type: ignore[union-attr]
    assert [s.delay for s in interaction_steps(interaction, speed=0.0)] == [0.0, 0.0, 0.0]  # type: ignore[union-attr]
    assert isinstance(interaction_steps(interaction)[-1], Drop)
    assert isinstance(
        interaction_steps(Interaction(request={}, frames=[Frame(at=1, kind="stall")]))[0], Stall
    )


def test_repeated_question_plays_each_interaction_once_then_repeats(
    emulator_thread: EmulatorThread, emulator: LabsEmulator, model: ChatPerplexityLabs
) -> None:
    emulator.script(responder=lambda request: Scenario(answer=f"answer {len(emulator.requests)}"))
    cassette = _record(emulator_thread, [_payload("Again?"), _payload("Again?")])
    _replay(emulator_thread, cassette)
    assert [model.invoke("Again?").content for _ in range(3)] == ["answer 1", "answer 2", "answer 1"]


def test_bad_cassette_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("provenance: invented\n")
    with pytest.raises(CassetteError, match=r"bad\.yaml"):
        load_cassette(bad)
    with pytest.raises(CassetteError, match=r"missing\.yaml"):
        load_cassette(tmp_path / "missing.yaml")


def test_cli_record_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.labs.yaml"
    question = "What is LangChain?"
    assert (
        main(
            [
                "cassette",
                "record",
                "--transport",
                "labs",
                "--emulator",
                "--out",
                str(out),
                "--model",
                "sonar-reasoning",
                question,
            ]
        )
        == 0
    )
    assert load_cassette(out).provenance == "synthetic"
    capsys.readouterr()
    assert main(["cassette", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "[user] What is LangChain?" in shown
    assert "[reasoning] The user asks: What is LangChain?" in shown
    assert "[answer] LangChain is a framework" in shown
    assert "[1] https://python.langchain.com/docs/introduction/" in shown
    assert "ended: completed" in shown
    assert main(["cassette", "show", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml" in capsys.readouterr().err


@pytest.mark.system  # `pplx-labs serve` answers from another process until it is stopped
def test_cli_serve_cassettes_replays_over_a_real_socket() -> None:
    folder = Path(__file__).resolve().parents[1] / "cassettes" / "test_cassettes"
    expected = load_cassette(folder / "test_no_citations.labs.yaml").interactions[0].frames[-1].data["output"]
    server = subprocess.Popen(
        command("serve", "--cassettes", str(folder)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        with ChatPerplexityLabs(
            transport="labs",
            model="sonar-pro",
            base_url=base_url,
            max_retries=0,
            first_token_timeout=5,
            idle_timeout=5,
        ) as chat:
            assert chat.invoke("Say hello.").content == expected
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


PLUGIN_TEST = """
import pytest

@pytest.mark.vcr
@pytest.mark.pplx_labs(transport="labs")
def test_capital(pplx_labs_cassette):
    message = pplx_labs_cassette.invoke("What is the capital of France?")
    assert message.content.startswith("The capital of France is Paris")
    assert message.response_metadata["citations"]
"""


REMOTE_TEST = """
import socket
import pytest

def test_remote_hosts_stay_blocked():
    with socket.socket() as sock, pytest.raises(RuntimeError, match="Network is disabled"):
        sock.connect(("198.51.100.7", 80))
"""


def test_plugin_record_modes_none_once_then_replay(pytester: pytest.Pytester) -> None:
    """none + missing fails naming the file; once records it; none + --block-network replays it."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_users_chain=PLUGIN_TEST)
    path = pytester.path / "cassettes" / "test_users_chain" / "test_capital.labs.yaml"
    missing = pytester.runpytest("--record-mode=none", "-p", "no:cacheprovider")
    missing.assert_outcomes(errors=1)
    missing.stdout.fnmatch_lines([f"*Cassette {path} not found*--record-mode=none*"])
    assert "pytest_plugin.py" not in missing.stdout.str()  # the message, not the plugin's traceback
    assert not path.exists()

    recorded = pytester.runpytest("--record-mode=once", "-p", "no:cacheprovider")
    recorded.assert_outcomes(passed=1)
    cassette = load_cassette(path)
    assert cassette.provenance == "synthetic"
    assert cassette.interactions[0].request["messages"] == [
        {"role": "user", "content": "What is the capital of France?"}
    ]

    pytester.makepyfile(test_remote=REMOTE_TEST)
    replayed = pytester.runpytest("--record-mode=none", "--block-network", "-p", "no:cacheprovider")
    replayed.assert_outcomes(passed=2)
    assert load_cassette(path) == cassette  # replay does not rewrite the cassette


def scripted_conftest(answer: str, citation: str) -> str:
    """A pytester conftest whose ``pplx_labs_upstream`` is an emulator answering ``answer`` citing ``citation``."""
    scenario = f"Scenario(answer={answer!r}, citations=[{citation!r}])"
    return f"""
import pytest
from langchain_pplx_labs.emulator import EmulatorThread, Scenario

@pytest.fixture(scope="session")
def scripted_upstream():
    with EmulatorThread() as thread:
        thread.call(lambda: thread.emulator.script({scenario}))
        yield thread

@pytest.fixture
def pplx_labs_upstream(scripted_upstream):
    return scripted_upstream.base_url
"""


SCRIPTED_CONFTEST = scripted_conftest("Scripted answer [1].", "https://example.org/s")

TWO_QUESTIONS = """
import pytest

@pytest.mark.vcr
@pytest.mark.pplx_labs(transport="labs")
def test_chain(pplx_labs_cassette):
    assert pplx_labs_cassette.invoke("First?").content == "Scripted answer [1]."
    if QUESTIONS > 1:
        assert pplx_labs_cassette.invoke("Second?").response_metadata["citations"] == ["https://example.org/s"]
"""


def test_plugin_records_a_scripted_upstream_and_appends_new_episodes(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(SCRIPTED_CONFTEST)
    pytester.makepyfile(test_scripted="QUESTIONS = 1\n" + TWO_QUESTIONS)
    pytester.runpytest("--record-mode=once", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    path = pytester.path / "cassettes" / "test_scripted" / "test_chain.labs.yaml"
    assert len(load_cassette(path).interactions) == 1

    pytester.makepyfile(test_scripted="QUESTIONS = 2\n" + TWO_QUESTIONS)
    # -rN: no short summary; with $CI set pytest prints the whole message there again.
    mismatch = pytester.runpytest("--record-mode=none", "-p", "no:cacheprovider", "-rN")
    mismatch.assert_outcomes(failed=1, errors=0)
    mismatch.stdout.fnmatch_lines(['*-      "content": "First?"*', '*+      "content": "Second?"*'])
    assert mismatch.stdout.str().count('+      "content": "Second?"') == 1  # reported once, not twice

    pytester.runpytest("--record-mode=new_episodes", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    questions = [i.request["messages"][-1]["content"] for i in load_cassette(path).interactions]
    assert questions == ["First?", "Second?"]


SECRET_CONFTEST = """
import pytest
from langchain_pplx_labs.emulator import EmulatorThread

@pytest.fixture(scope="session")
def upstream():
    with EmulatorThread() as thread:
        yield thread

@pytest.fixture
def pplx_labs_upstream(upstream):
    return upstream.base_url
"""

SECRET_TEST = """
import pytest

@pytest.mark.pplx_labs(
    transport="labs", cookies="cf_clearance=COOKIE-SECRET-1", default_headers={"X-Team": "TEAM-SECRET-2"}
)
def test_secret(pplx_labs_cassette, upstream):
    assert pplx_labs_cassette.invoke("What is the capital of France?").content
    if upstream.emulator.handshake_headers:  # recorded: the live site got the user's credentials
        sent = upstream.emulator.handshake_headers[-1]
        assert sent["Cookie"] == "cf_clearance=COOKIE-SECRET-1"
        assert sent["X-Team"] == "TEAM-SECRET-2"
"""


def test_plugin_records_with_the_users_cookies_and_headers_redacted(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(SECRET_CONFTEST)
    pytester.makepyfile(test_secret=SECRET_TEST)
    pytester.runpytest("--record-mode=once", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    path = pytester.path / "cassettes" / "test_secret" / "test_secret.labs.yaml"
    saved = path.read_text()
    assert "COOKIE-SECRET-1" not in saved
    assert "TEAM-SECRET-2" not in saved
    assert load_cassette(path).connection["headers"]["X-Team"] == REDACTED
    pytester.runpytest("--record-mode=none", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_plugin_unreachable_upstream_fails_clearly_and_saves_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_users_chain=PLUGIN_TEST)
    url = f"http://127.0.0.1:{_closed_port()}"
    result = pytester.runpytest("--record-mode=once", "--pplx-labs-record-url", url, "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, errors=0)
    written = pytester.path / "cassettes" / "test_users_chain" / "test_capital.labs.yaml"
    result.stdout.fnmatch_lines(
        [f"*The upstream {url} could not be reached*no cassette was written to {written}*"]
    )
    assert "closed the connection mid-answer" not in result.stdout.str()
    assert not (pytester.path / "cassettes").exists()


def test_record_interaction_raises_when_nothing_answers() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(UpstreamUnreachableError, match=f"cannot reach {url}: "):
        asyncio.run(record_cassette(url, [_payload("Hi")], provenance="live", connect_timeout=2))


def test_plugin_rewrite_mode_rerecords_like_all(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(SCRIPTED_CONFTEST)
    pytester.makepyfile(test_scripted="QUESTIONS = 1\n" + TWO_QUESTIONS)
    path = pytester.path / "cassettes" / "test_scripted" / "test_chain.labs.yaml"
    pytester.runpytest("--record-mode=once", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    path.write_text(path.read_text().replace("note: recorded", "note: stale"))
    pytester.runpytest("--record-mode=rewrite", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert load_cassette(path).note.startswith("recorded by")


PLAIN_TEST = """
def test_capital(pplx_labs_cassette):
    assert pplx_labs_cassette.invoke("What is the capital of France?").content.startswith("The capital")
"""


def test_plugin_works_without_pytest_recording(pytester: pytest.Pytester) -> None:
    """With pytest-recording off, the plugin defines --record-mode itself and still defaults to none."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_plain=PLAIN_TEST)
    off = ("-p", "no:recording", "-p", "no:cacheprovider")
    pytester.runpytest(*off).assert_outcomes(errors=1)
    pytester.runpytest("--record-mode=once", *off).assert_outcomes(passed=1)
    assert (pytester.path / "cassettes" / "test_plain" / "test_capital.labs.yaml").exists()
    pytester.runpytest("--record-mode=none", *off).assert_outcomes(passed=1)


README = Path(__file__).resolve().parents[1] / "docs" / "cassettes.md"


def _readme_cassette_example() -> str:
    """The README's pytest example for cassettes, exactly as a user copies it."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    [example] = [block for block in blocks if "applx_labs_cassette" in block]
    return example


def test_readme_cassette_example_records_then_replays_as_written(pytester: pytest.Pytester) -> None:
    """Sync and async, under pytest-asyncio's default (strict) mode, as a new project has it."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_readme=_readme_cassette_example())
    off = ("-p", "no:cacheprovider")
    pytester.runpytest("--record-mode=once", *off).assert_outcomes(passed=2)
    folder = pytester.path / "cassettes" / "test_readme"
    assert sorted(p.name for p in folder.iterdir()) == [
        "test_my_chain.labs.yaml",
        "test_my_chain_async.labs.yaml",
    ]
    pytester.runpytest("--record-mode=none", "--block-network", *off).assert_outcomes(passed=2)


CAUGHT_MISMATCH = """
import pytest
from langchain_pplx_labs.errors import PerplexityLabsServerError

@pytest.mark.vcr
def test_chain(pplx_labs_cassette):
    with pytest.raises(PerplexityLabsServerError):
        pplx_labs_cassette.invoke("Second?")
"""


def test_mismatch_is_reported_once_even_when_the_test_catches_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(SCRIPTED_CONFTEST)
    pytester.makepyfile(test_scripted="QUESTIONS = 1\n" + TWO_QUESTIONS)
    pytester.runpytest("--record-mode=once", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.makepyfile(test_scripted=CAUGHT_MISMATCH)
    caught = pytester.runpytest("--record-mode=none", "-p", "no:cacheprovider", "-rN")  # see above
    caught.assert_outcomes(failed=1, errors=0)
    output = caught.stdout.str()
    assert output.count('+      "content": "Second?"') == 1
    assert 'recorded "content": "First?" but sent "content": "Second?"' in output


PLAIN = "test_plain_answer_with_citations"
PLAIN_CASSETTE = Path(__file__).resolve().parents[1] / "cassettes" / "test_cassettes" / f"{PLAIN}.labs.yaml"
PARIS = (
    "The capital of France is Paris [1]. It has been the seat of the French government for most of "
    "the country's history [2]."
)


@pytest.mark.parametrize(
    ("model", "messages"),
    [
        ("sonar-pro", [HumanMessage("What is the capital of Spain?")]),
        ("sonar", [HumanMessage("What is the capital of France?")]),
        ("sonar-pro", [SystemMessage("Be brief."), HumanMessage("What is the capital of France?")]),
    ],
    ids=["other-question", "other-model", "added-system-turn"],
)
def test_replay_refuses_a_payload_that_differs_from_the_recorded_one(
    emulator_thread: EmulatorThread, emulator: LabsEmulator, model: str, messages: list[Any]
) -> None:
    """Replay must compare the whole payload: an answer to a question not asked would hide real changes."""
    responder = CassetteResponder({PLAIN: load_cassette(PLAIN_CASSETTE)})
    emulator_thread.call(lambda: emulator.script(responder))
    with ChatPerplexityLabs(transport="labs", model=model, base_url=emulator.base_url, max_retries=0) as chat:
        with pytest.raises(PerplexityLabsServerError, match=f"Request does not match cassette {PLAIN}"):
            chat.invoke(messages)
        assert len(responder.mismatches) == 1
        assert responder.played == []
        # The recorded payload itself still replays: the responder is not refusing everything.
        same = chat.model_copy(update={"model": "sonar-pro"}).invoke("What is the capital of France?")
    assert same.content == PARIS
    assert responder.played == [(PLAIN, 0)]
