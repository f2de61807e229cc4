"""Cassette replay and recording when Labs moved its path and renamed its events (a custom LabsProtocol)."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_pplx_labs import ChatPerplexityLabs, LabsProtocol
from langchain_pplx_labs.cli import main
from langchain_pplx_labs.emulator import LabsEmulator, Scenario
from langchain_pplx_labs.errors import PerplexityLabsServerError
from langchain_pplx_labs.protocol import build_payload
from langchain_pplx_labs.recording import CassetteResponder, record_cassette, save_cassette
from langchain_pplx_labs.recording.replay import RecordingResponder

pytest_plugins = ["pytester"]

MOVED = LabsProtocol(
    socketio_path="/api/v2/sock/",
    query_event="labs_ask",
    progress_event="answer:{model}",
    auth={"jwt": "anonymous-v3"},
)
ANSWER = "Replayed through the moved endpoint [1]."


def _chat(base_url: str) -> ChatPerplexityLabs:
    # first_token_timeout well above a fast failure: a mismatch must fail at once, not by timing out.
    return ChatPerplexityLabs(
        transport="labs",
        model="sonar",
        base_url=base_url,
        protocol=MOVED,
        max_retries=0,
        first_token_timeout=20,
        timeout=30,
    )


async def _moved_cassette() -> object:
    async with LabsEmulator(protocol=MOVED) as upstream:
        upstream.script(Scenario(answer=ANSWER, citations=["https://example.org/moved"]))
        payload = build_payload("sonar", [{"role": "user", "content": "Where did Labs go?"}], protocol=MOVED)
        return await record_cassette(upstream.base_url, [payload], provenance="synthetic", protocol=MOVED)


async def test_replay_under_a_moved_protocol_answers_and_a_mismatch_fails_at_once() -> None:
    cassette = await _moved_cassette()
    responder = CassetteResponder({"moved.labs.yaml": cassette})  # type: ignore[dict-item]
    async with LabsEmulator(responder, protocol=MOVED) as replay, _chat(replay.base_url) as chat:
        message = await chat.ainvoke("Where did Labs go?")
        assert message.content == ANSWER
        assert message.response_metadata["citations"] == ["https://example.org/moved"]
        # The failed frame must come on the moved progress event, or the client waits for its timeout.
        with pytest.raises(PerplexityLabsServerError, match="closest recorded request: #1") as caught:
            await chat.ainvoke("Where did Labs go yesterday?")
    assert '+      "content": "Where did Labs go yesterday?"' in str(caught.value)
    assert len(responder.mismatches) == 1


async def test_recording_proxy_records_a_moved_upstream_with_its_protocol() -> None:
    async with LabsEmulator(protocol=MOVED) as upstream:
        upstream.script(Scenario(answer=ANSWER, citations=[]))
        recorder = RecordingResponder(upstream.base_url, silence=5)
        async with LabsEmulator(recorder, protocol=MOVED) as proxy, _chat(proxy.base_url) as chat:
            message = await chat.ainvoke("Where did Labs go?")
    assert message.content == ANSWER
    [interaction] = recorder.recorded
    assert interaction.refusal is None
    assert {frame.event for frame in interaction.frames} == {"answer:sonar"}
    assert upstream.handshake_headers[-1]["Origin"] == "https://labs.perplexity.ai"


async def test_recording_proxy_unreachable_upstream_fails_on_the_moved_event(tmp_path: Path) -> None:
    recorder = RecordingResponder("http://127.0.0.1:9", silence=5)  # port 9 (discard): nothing listens
    async with LabsEmulator(recorder, protocol=MOVED) as proxy, _chat(proxy.base_url) as chat:
        with pytest.raises(PerplexityLabsServerError, match="no cassette was written"):
            await chat.ainvoke("Where did Labs go?")
    assert len(recorder.unreachable) == 1


async def test_cassette_show_reads_a_moved_cassette_with_its_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = save_cassette(await _moved_cassette(), tmp_path / "moved.labs.yaml")  # type: ignore[arg-type]
    protocol_file = tmp_path / "labs.json"
    protocol_file.write_text(MOVED.model_dump_json())
    assert main(["cassette", "show", str(path), "--protocol", str(protocol_file)]) == 0
    shown = capsys.readouterr().out
    assert f"[answer] {ANSWER}" in shown
    assert "  [1] https://example.org/moved" in shown
    assert "ended: completed" in shown
    # Read with the default protocol, the same frames are not the answer's: the flag is what finds them.
    assert main(["cassette", "show", str(path)]) == 0
    assert "ended: incomplete" in capsys.readouterr().out


PLUGIN_TEST = """
import pytest
from langchain_pplx_labs import LabsProtocol

MOVED = LabsProtocol(socketio_path="/api/v2/sock/", query_event="labs_ask", progress_event="answer:{model}")

@pytest.mark.pplx_labs(transport="labs", protocol=MOVED, model="sonar-pro")
def test_moved(pplx_labs_cassette):
    message = pplx_labs_cassette.invoke("What is the capital of France?")
    assert message.content.startswith("The capital of France is Paris [1].")

@pytest.mark.pplx_labs(
    transport="labs", cassette="test_moved", protocol=MOVED, model="sonar-pro", first_token_timeout=30
)
def test_moved_mismatch(pplx_labs_cassette):
    pplx_labs_cassette.invoke("What is the capital of Spain?")
"""


def test_plugin_records_and_replays_under_a_moved_protocol(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_moved=PLUGIN_TEST)
    off = ("-p", "no:cacheprovider", "-p", "no:recording")
    pytester.runpytest("--record-mode=once", "-k", "test_moved and not mismatch", *off).assert_outcomes(
        passed=1
    )
    path = pytester.path / "cassettes" / "test_moved" / "test_moved.labs.yaml"
    assert "event: answer:sonar-pro" in path.read_text()
    replayed = pytester.runpytest("--record-mode=none", *off)
    replayed.assert_outcomes(passed=1, failed=1)
    # The mismatch fails with the cassette's diff, not with a first-token timeout.
    replayed.stdout.fnmatch_lines(["*Request does not match cassette*closest recorded request: #1*"])
    assert "PerplexityLabsTimeoutError" not in replayed.stdout.str()
