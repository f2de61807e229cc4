"""LabsProtocol: the playground's names as data, taken by the model, the emulator, the recorder and the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from clirun import run_cli
from langchain_core.load import dumpd, dumps, load

from langchain_pplx_labs import ChatPerplexityLabs, LabsProtocol
from langchain_pplx_labs.emulator import LabsEmulator, Scenario
from langchain_pplx_labs.errors import PerplexityLabsConnectionError, PerplexityLabsInputError
from langchain_pplx_labs.protocol import build_payload, is_progress_event, progress_event
from langchain_pplx_labs.recording import record_cassette
from langchain_pplx_labs.recording.redact import REDACTED

# What a Labs that moved its endpoint and renamed its events might look like.
MOVED = LabsProtocol(
    socketio_path="/api/v2/sock/",
    query_event="labs_ask",
    progress_event="answer:{model}",
    payload_version="3.0",
    source="playground",
    origin="https://www.perplexity.ai",
    referer="https://www.perplexity.ai/labs",
    auth={"jwt": "anonymous-v3"},
)


def _chat(base_url: str, **fields: object) -> ChatPerplexityLabs:
    options: dict[str, object] = {
        "model": "sonar",
        "max_retries": 0,
        "first_token_timeout": 10,
        "timeout": 30,
    }
    options.update(fields)
    return ChatPerplexityLabs(transport="labs", base_url=base_url, **options)


def test_defaults_are_the_observed_protocol() -> None:
    protocol = LabsProtocol()
    assert protocol.socketio_path == "/socket.io/"
    assert protocol.query_event == "perplexity_labs"
    assert protocol.progress_event_for("sonar-pro") == "sonar-pro_query_progress"
    assert protocol.payload_version == "2.18"
    assert protocol.source == "default"
    assert protocol.headers == {
        "Origin": "https://labs.perplexity.ai",
        "Referer": "https://labs.perplexity.ai/",
    }
    assert protocol.auth == {"jwt": "anonymous-ask-user"}
    assert protocol.endpoint("http://127.0.0.1:9") == "http://127.0.0.1:9/socket.io/?EIO=4&transport=polling"


def test_progress_matcher_follows_the_template() -> None:
    default = LabsProtocol()
    assert default.is_progress_event("r1-1776_query_progress")
    assert not default.is_progress_event("query_status")
    assert not default.is_progress_event("_query_progress")  # no model name at all
    assert MOVED.is_progress_event("answer:sonar")
    assert not MOVED.is_progress_event("sonar_query_progress")
    assert not MOVED.is_progress_event("answer:")
    fixed = LabsProtocol(progress_event="labs_progress")
    assert fixed.is_progress_event("labs_progress")
    assert not fixed.is_progress_event("sonar_labs_progress")
    assert progress_event("sonar", MOVED) == "answer:sonar"
    assert is_progress_event("answer:x", MOVED)


def test_payload_takes_version_and_source_from_the_protocol() -> None:
    payload = build_payload("sonar", [{"role": "user", "content": "hi"}], protocol=MOVED)
    assert payload["version"] == "3.0"
    assert payload["source"] == "playground"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"socketio_path": "/"}, "socketio_path"),
        ({"socketio_path": "/a b/"}, "socketio_path"),
        ({"progress_event": "{model}_{model}"}, "at most one {model}"),
        ({"query_event": ""}, "query_event"),
        ({"socket_path": "/x/"}, "socket_path"),
    ],
)
def test_bad_protocol_files_name_the_problem(tmp_path: Path, fields: dict[str, str], problem: str) -> None:
    path = tmp_path / "labs.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(PerplexityLabsInputError, match="not a LabsProtocol") as info:
        LabsProtocol.from_file(path)
    assert problem in str(info.value)
    assert str(path) in str(info.value)


def test_protocol_file_sets_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "labs.json"
    path.write_text('{"socketio_path": "labs/socket.io", "query_event": "ask"}')
    protocol = LabsProtocol.from_file(path)
    assert protocol.socketio_path == "/labs/socket.io/"
    assert protocol.query_event == "ask"
    assert protocol.payload_version == "2.18"
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(PerplexityLabsInputError, match="not JSON"):
        LabsProtocol.from_file(tmp_path / "bad.json")


def test_equal_protocols_hash_alike() -> None:
    assert hash(LabsProtocol(auth={"a": 1, "b": 2})) == hash(LabsProtocol(auth={"b": 2, "a": 1}))
    assert LabsProtocol() == LabsProtocol()
    assert LabsProtocol() != MOVED


@pytest.mark.parametrize("refuse_websocket", [False, True], ids=["websocket", "polling"])
async def test_moved_path_and_renamed_events_are_reached_by_configuration_alone(
    refuse_websocket: bool,
) -> None:
    async with LabsEmulator(protocol=MOVED, refuse_websocket=refuse_websocket) as emulator:
        emulator.script(Scenario(answer="Configured, not released [1].", citations=["https://example.org/a"]))
        async with _chat(emulator.base_url, protocol=MOVED) as chat:
            message = await chat.ainvoke("where did Labs go?")
        assert message.content == "Configured, not released [1]."
        assert message.response_metadata["citations"] == ["https://example.org/a"]
        assert emulator.requests[-1]["version"] == "3.0"
        assert emulator.requests[-1]["source"] == "playground"
        assert emulator.handshake_headers[-1]["Origin"] == "https://www.perplexity.ai"
        assert emulator.handshake_headers[-1]["Referer"] == "https://www.perplexity.ai/labs"


async def test_the_old_protocol_does_not_reach_a_moved_server() -> None:
    async with LabsEmulator(protocol=MOVED) as emulator:
        async with _chat(emulator.base_url) as chat:
            with pytest.raises(PerplexityLabsConnectionError):
                await chat.ainvoke("hello?")
        assert emulator.requests == []


async def test_moved_server_wants_its_own_auth() -> None:
    async with LabsEmulator(protocol=MOVED) as emulator:
        wrong_auth = MOVED.model_copy(update={"auth": {}})
        async with _chat(emulator.base_url, protocol=wrong_auth) as chat:
            with pytest.raises(PerplexityLabsConnectionError, match="anonymous-v3"):
                await chat.ainvoke("hello?")


async def test_recorder_records_a_moved_server() -> None:
    async with LabsEmulator(protocol=MOVED) as emulator:
        emulator.script(Scenario(answer="Recorded through the moved endpoint.", citations=[]))
        payload = build_payload("sonar", [{"role": "user", "content": "hi"}], protocol=MOVED)
        cassette = await record_cassette(emulator.base_url, [payload], provenance="synthetic", protocol=MOVED)
    frames = cassette.interactions[0].frames
    assert {frame.event for frame in frames} == {"answer:sonar"}
    assert frames[-1].data["output"] == "Recorded through the moved endpoint."
    assert cassette.connection["auth"] == {"jwt": REDACTED}  # a token, even an anonymous one


@pytest.mark.filterwarnings("ignore:The function `load` is in beta")
def test_protocol_survives_dumpd_and_load() -> None:
    chat = ChatPerplexityLabs(protocol=MOVED)
    data = dumpd(chat)
    assert data["kwargs"]["protocol"]["query_event"] == "labs_ask"
    loaded = load(
        json.loads(dumps(chat)),
        valid_namespaces=["langchain_pplx_labs"],
        allowed_objects=[ChatPerplexityLabs],
    )
    assert isinstance(loaded, ChatPerplexityLabs)
    assert loaded.protocol == MOVED
    assert "protocol" not in dumpd(ChatPerplexityLabs())["kwargs"]  # ordinary dumps do not change


def test_protocol_survives_pickling() -> None:
    clone = pickle.loads(pickle.dumps(ChatPerplexityLabs(protocol=MOVED)))
    assert clone.protocol == MOVED
    assert clone.protocol.is_progress_event("answer:sonar")


def test_protocol_is_part_of_the_connection_settings() -> None:
    chat = ChatPerplexityLabs(
        transport="labs", protocol=MOVED, default_headers={"Origin": "https://elsewhere.example"}
    )
    settings, _ = chat._settings()
    assert settings.protocol == MOVED
    assert settings.header_dict["Origin"] == "https://elsewhere.example"  # explicit headers win
    assert settings.header_dict["Referer"] == "https://www.perplexity.ai/labs"


def test_cli_ask_takes_a_protocol_file(tmp_path: Path) -> None:
    path = tmp_path / "labs.json"
    path.write_text(MOVED.model_dump_json())
    result = run_cli(
        "ask",
        "--transport",
        "labs",
        "--emulator",
        "--model",
        "sonar",
        "--protocol",
        str(path),
        "capital of France?",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The capital of France is Paris [1].")


def test_cli_names_a_bad_protocol_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "labs.json"
    path.write_text('{"progress_event": "{model}{model}"}')
    result = run_cli("ask", "--transport", "labs", "--emulator", "--protocol", str(path), "q")
    assert result.returncode == 1
    assert result.stderr.startswith(f"pplx-labs: error: {path}: not a LabsProtocol (progress_event: ")
    assert result.stderr.count("\n") == 1
