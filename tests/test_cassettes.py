"""Every cassette of the corpus replayed through the emulator: content, sources and metadata as recorded."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import JsonOutputParser

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import Emit, LabsRequest
from langchain_pplx_labs.errors import (
    PerplexityLabsBlockedError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.recording import Cassette, load_cassette
from langchain_pplx_labs.recording.replay import CassetteResponder

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"
HERE = CASSETTES / "test_cassettes"

pytestmark = pytest.mark.vcr


def cassette(name: str) -> Cassette:
    return load_cassette(HERE / f"{name}.labs.yaml")


def final_data(recorded: Cassette, turn: int = -1) -> dict[str, Any]:
    """The last progress frame of a turn, as the server sent it."""
    frames = [
        f
        for f in recorded.interactions[turn].frames
        if f.kind == "event" and f.event.endswith("_query_progress")
    ]  # type: ignore[union-attr]
    data = frames[-1].data
    assert isinstance(data, dict)
    return data


def split_think(output: str) -> tuple[str, str]:
    """(reasoning, answer) of a cumulative output, independently of the package's decoder."""
    if "</think>" not in output:
        return "", output
    thinking, answer = output.split("</think>", 1)
    return thinking.removeprefix("<think>"), answer.lstrip("\n")


def urls(citations: list[Any]) -> list[str]:
    return [c if isinstance(c, str) else c["url"] for c in citations]


def test_every_cassette_is_synthetic_and_used_by_a_test() -> None:
    files = sorted(CASSETTES.rglob("*.labs.yaml"))
    assert len(files) >= 15
    assert {load_cassette(f).provenance for f in files} == {"synthetic"}
    tests = {
        node.name for node in ast.parse(Path(__file__).read_text()).body if isinstance(node, ast.FunctionDef)
    }
    assert {f.name.removesuffix(".labs.yaml") for f in HERE.glob("*.labs.yaml")} <= tests


def test_plain_answer_with_citations(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    final = final_data(cassette("test_plain_answer_with_citations"))
    message = pplx_labs_cassette.invoke("What is the capital of France?")
    assert message.content == final["output"]
    assert message.response_metadata["citations"] == final["citations"]
    assert message.response_metadata["model_name"] == "sonar-pro"
    assert message.response_metadata["elapsed_time"] == final["elapsed_time"]
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == final["tokens_streamed"]


def test_citation_objects(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    final = final_data(cassette("test_citation_objects"))
    message = pplx_labs_cassette.invoke("What is LangChain?")
    assert message.content == final["output"]
    assert message.response_metadata["citations"] == urls(final["citations"])
    assert message.response_metadata["search_results"] == final["citations"]


def test_no_citations(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    message = pplx_labs_cassette.invoke("Say hello.")
    assert message.content == final_data(cassette("test_no_citations"))["output"]
    assert message.response_metadata["citations"] == []


def test_long_answer(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_long_answer")
    final = final_data(recorded)
    assert len(final["output"].encode()) > 50_000
    assert len(recorded.interactions[0].frames) > 20
    chunks = list(pplx_labs_cassette.stream("Tell me everything about Paris."))
    assert "".join(str(c.content) for c in chunks) == final["output"]
    assert sum(1 for c in chunks if c.content) > 20


def _check_reasoning(model: ChatPerplexityLabs, name: str, question: str) -> None:
    final = final_data(cassette(name))
    thinking, answer = split_think(final["output"])
    assert thinking
    assert answer
    message = model.invoke(question)
    assert message.content == answer
    assert message.additional_kwargs["reasoning_content"] == thinking
    assert "<think>" not in str(message.content)
    assert message.response_metadata["citations"] == final["citations"]


def test_sonar_reasoning(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    assert final_data(cassette("test_sonar_reasoning"))["output"].startswith("<think>")
    _check_reasoning(pplx_labs_cassette, "test_sonar_reasoning", "Why is the sky blue?")


def test_sonar_reasoning_pro(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    _check_reasoning(pplx_labs_cassette, "test_sonar_reasoning_pro", "What is Socket.IO?")


def test_r1_1776_without_opening_tag(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    assert not final_data(cassette("test_r1_1776_without_opening_tag"))["output"].startswith("<think>")
    _check_reasoning(pplx_labs_cassette, "test_r1_1776_without_opening_tag", "What is the capital of France?")


def test_multi_turn_with_system_prompt(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_multi_turn_with_system_prompt")
    system = SystemMessage("Answer concisely and cite your sources.")
    first = pplx_labs_cassette.invoke([system, HumanMessage("What is the capital of France?")])
    assert first.content == final_data(recorded, 0)["output"]
    history = [system, HumanMessage("What is the capital of France?"), AIMessage(first.content)]
    second = pplx_labs_cassette.invoke([*history, HumanMessage("And what is LangChain?")])
    assert second.content == final_data(recorded, 1)["output"]
    assert second.response_metadata["citations"] == final_data(recorded, 1)["citations"]
    assert recorded.interactions[1].request["messages"][0]["role"] == "system"


def test_failed_status(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    final = final_data(cassette("test_failed_status"))
    with pytest.raises(PerplexityLabsServerError) as caught:
        pplx_labs_cassette.invoke("Break please.")
    assert caught.value.server_message == final["text"] == "Error in processing query"
    assert caught.value.model == "sonar-reasoning-pro"


def test_cloudflare_403(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    refusal = cassette("test_cloudflare_403").interactions[0].refusal
    assert refusal is not None
    assert refusal.status == 403
    with pytest.raises(PerplexityLabsBlockedError) as caught:
        pplx_labs_cassette.invoke("Hello?")
    assert caught.value.status == refusal.status
    assert "Cloudflare" in str(caught.value)


@pytest.mark.pplx_labs(idle_timeout=0.5)
def test_silent_mid_stream(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_silent_mid_stream")
    assert recorded.interactions[0].frames[-1].kind == "stall"
    last = final_data(recorded)
    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        pplx_labs_cassette.invoke("Go quiet.")
    assert caught.value.which == "idle"
    assert caught.value.partial_content == last["output"]


def test_disconnect_mid_stream(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_disconnect_mid_stream")
    assert recorded.interactions[0].frames[-1].kind == "drop"
    with pytest.raises(PerplexityLabsDisconnectedError) as caught:
        pplx_labs_cassette.invoke("Hang up.")
    assert caught.value.partial_content == final_data(recorded)["output"]


def test_unknown_extra_events(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_unknown_extra_events")
    events = {f.event for f in recorded.interactions[0].frames}
    assert "query_status" in events
    message = pplx_labs_cassette.invoke("What is Socket.IO?")
    assert message.content == final_data(recorded)["output"]
    assert message.response_metadata["citations"] == final_data(recorded)["citations"]


def test_non_ascii_emoji_rtl(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    final = final_data(cassette("test_non_ascii_emoji_rtl"))
    chunks = [str(c.content) for c in pplx_labs_cassette.stream("Say hello in many scripts.") if c.content]
    assert "".join(chunks) == final["output"]
    assert "👩‍👩‍👧‍👦" in "".join(chunks)
    assert "עברית" in "".join(chunks)
    assert len(chunks) > 10


def test_shrinking_and_repeated_output(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_shrinking_and_repeated_output")
    outputs = [f.data["output"] for f in recorded.interactions[0].frames]
    assert any(len(b) < len(a) for a, b in itertools.pairwise(outputs))
    assert any(a == b for a, b in itertools.pairwise(outputs))
    message = pplx_labs_cassette.invoke("What is the answer?")
    assert message.content == outputs[-1]
    assert str(message.content).count("42") == 1


def test_json_structured_output(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    final = final_data(cassette("test_json_structured_output"))
    parsed = (pplx_labs_cassette | JsonOutputParser()).invoke("Give Paris facts as JSON.")
    assert parsed == json.loads(final["output"])
    assert parsed["city"] == "Paris"


def _completed(path: Path) -> bool:
    last = load_cassette(path).interactions[-1]
    return last.refusal is None and last.frames[-1].kind == "event"


@pytest.mark.parametrize(
    "path", [p for p in sorted(HERE.glob("*.labs.yaml")) if _completed(p)], ids=lambda p: p.name
)
def test_served_from_a_folder_by_payload(path: Path) -> None:
    """``serve --cassettes DIR`` mode: one responder for the whole folder finds each cassette by payload."""
    responder = CassetteResponder.from_paths([CASSETTES])
    recorded = load_cassette(path)
    for index, interaction in enumerate(recorded.interactions):
        steps = responder(LabsRequest(interaction.request))
        assert responder.played[-1] == (str(path), index)
        assert [s.data for s in steps if isinstance(s, Emit)] == [f.data for f in interaction.frames]
    assert responder.mismatches == []


@pytest.mark.pplx_labs(cassette="test_plain_answer_with_citations")
async def test_async_fixture_streams_the_same_cassette(applx_labs_cassette: ChatPerplexityLabs) -> None:
    final = final_data(cassette("test_plain_answer_with_citations"))
    chunks = [chunk async for chunk in applx_labs_cassette.astream("What is the capital of France?")]
    assert "".join(str(c.content) for c in chunks) == final["output"]
    assert chunks[-1].response_metadata["citations"] == final["citations"]


def _build_corpus(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    module = "langchain_pplx_labs.recording.build_corpus"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_build_corpus_rejects_unknown_names_and_writes_nothing(tmp_path: Path) -> None:
    result = _build_corpus(tmp_path, "test_no_such_entry")
    assert result.returncode == 2
    assert (
        "unknown entry test_no_such_entry; valid entries: test_plain_answer_with_citations" in result.stderr
    )
    assert list(tmp_path.iterdir()) == []


def test_build_corpus_writes_only_where_told(tmp_path: Path) -> None:
    from langchain_pplx_labs.recording.build_corpus import CORPUS_DIR

    assert CORPUS_DIR == HERE  # the default is the checkout's corpus, wherever it is run from
    result = _build_corpus(tmp_path, "--out", "out", "test_no_citations")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["test_no_citations.labs.yaml"]
    rebuilt = load_cassette(tmp_path / "out" / "test_no_citations.labs.yaml")
    assert rebuilt.interactions[0].request == cassette("test_no_citations").interactions[0].request
