"""Every cassette of the corpus replayed through the emulator: content, sources and metadata as recorded."""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import io
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import CliResult
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
from langchain_pplx_labs.recording import Cassette, build_corpus, load_cassette
from langchain_pplx_labs.recording.replay import CassetteResponder

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"
HERE = CASSETTES / "test_cassettes"

pytestmark = pytest.mark.vcr

# Expected values are written here, not read from the cassettes: a one-letter change in a recorded
# answer or source URL must fail the test that replays it.
PARIS = (
    "The capital of France is Paris [1]. It has been the seat of the French government for most of "
    "the country's history [2]."
)
PARIS_SOURCES = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
LANGCHAIN = (
    "LangChain is a framework for building applications with large language models [1]. It composes "
    "prompts, models and tools into chains and agents [2]."
)
LANGCHAIN_SEARCH_RESULTS = [
    {"url": "https://python.langchain.com/docs/introduction/", "title": "Introduction | LangChain"},
    {"url": "https://github.com/langchain-ai/langchain", "title": "langchain-ai/langchain"},
]
SOCKETIO = (
    "Socket.IO is a protocol for bidirectional, event-based communication, built on Engine.IO [1]. "
    "It falls back from WebSocket to HTTP long-polling when needed [2]."
)
SOCKETIO_SOURCES = ["https://socket.io/docs/v4/", "https://github.com/socketio/engine.io-protocol"]
EMULATOR_SOURCES = ["https://docs.perplexity.ai/", "https://labs.perplexity.ai/"]


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


def test_every_cassette_is_synthetic_or_a_public_report_and_used_by_a_test() -> None:
    files = sorted(CASSETTES.rglob("*.labs.yaml"))
    assert len(files) >= 15
    cassettes = {f: load_cassette(f) for f in files}
    # Everything recorded is synthetic; the frames public reports quoted are written by hand, each with its source.
    reported = {f: c for f, c in cassettes.items() if c.provenance != "synthetic"}
    assert {f.parent.name for f in reported} == {"test_retirement", "test_web_forms"}
    assert all(c.provenance == "public-report" and c.source for c in reported.values())
    tests = {
        node.name for node in ast.parse(Path(__file__).read_text()).body if isinstance(node, ast.FunctionDef)
    }
    assert {f.name.removesuffix(".labs.yaml") for f in HERE.glob("*.labs.yaml")} <= tests


def test_plain_answer_with_citations(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    message = pplx_labs_cassette.invoke("What is the capital of France?")
    assert message.content == PARIS
    assert message.response_metadata["citations"] == PARIS_SOURCES
    assert message.response_metadata["model_name"] == "sonar-pro"
    assert message.response_metadata["elapsed_time"] == 0.25
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == 30


def test_citation_objects(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    message = pplx_labs_cassette.invoke("What is LangChain?")
    assert message.content == LANGCHAIN
    assert message.response_metadata["citations"] == [
        "https://python.langchain.com/docs/introduction/",
        "https://github.com/langchain-ai/langchain",
    ]
    assert message.response_metadata["search_results"] == LANGCHAIN_SEARCH_RESULTS


def test_no_citations(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    message = pplx_labs_cassette.invoke("Say hello.")
    assert message.content == "Hello!"
    assert message.response_metadata["citations"] == []


def test_long_answer(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_long_answer")
    assert len(recorded.interactions[0].frames) > 20
    chunks = list(pplx_labs_cassette.stream("Tell me everything about Paris."))
    text = "".join(str(c.content) for c in chunks)
    # 61 KB is too long to write out; its length and digest pin every character.
    assert len(text) == 61_489
    assert text.startswith("Paragraph 0: Paris has been a centre of finance, diplomacy, commerce and science")
    assert text.endswith(
        "Paragraph 699: Paris has been a centre of finance, diplomacy, commerce and science [1]."
    )
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "db45dd0c5e3a8fb423ad86196e11b0329c48c55c8644f19291bde0d8587d9a54"
    )
    assert sum(1 for c in chunks if c.content) > 20
    assert chunks[-1].response_metadata["citations"] == EMULATOR_SOURCES


def _check_reasoning(
    model: ChatPerplexityLabs, question: str, thinking: str, answer: str, sources: list[str]
) -> None:
    message = model.invoke(question)
    assert message.content == answer
    assert message.additional_kwargs["reasoning_content"] == thinking
    assert "<think>" not in str(message.content)
    assert message.response_metadata["citations"] == sources


def test_sonar_reasoning(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    assert final_data(cassette("test_sonar_reasoning"))["output"].startswith("<think>")
    _check_reasoning(
        pplx_labs_cassette,
        "Why is the sky blue?",
        "The user asks: Why is the sky blue?. I should answer briefly and cite my sources.",
        "This is the offline Perplexity Labs emulator answering “Why is the sky blue” [1]. Its answers are "
        "synthetic, but they stream and cite sources exactly like the playground [2].",
        EMULATOR_SOURCES,
    )


def test_sonar_reasoning_pro(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    _check_reasoning(
        pplx_labs_cassette,
        "What is Socket.IO?",
        "The user asks: What is Socket.IO?. I should answer briefly and cite my sources.",
        SOCKETIO,
        SOCKETIO_SOURCES,
    )


def test_r1_1776_without_opening_tag(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    assert not final_data(cassette("test_r1_1776_without_opening_tag"))["output"].startswith("<think>")
    _check_reasoning(
        pplx_labs_cassette,
        "What is the capital of France?",
        "The user asks: What is the capital of France?. I should answer briefly and cite my sources.",
        PARIS,
        PARIS_SOURCES,
    )


def test_multi_turn_with_system_prompt(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_multi_turn_with_system_prompt")
    system = SystemMessage("Answer concisely and cite your sources.")
    first = pplx_labs_cassette.invoke([system, HumanMessage("What is the capital of France?")])
    assert first.content == PARIS
    assert first.response_metadata["citations"] == PARIS_SOURCES
    history = [system, HumanMessage("What is the capital of France?"), AIMessage(first.content)]
    second = pplx_labs_cassette.invoke([*history, HumanMessage("And what is LangChain?")])
    assert second.content == LANGCHAIN
    assert second.response_metadata["citations"] == [r["url"] for r in LANGCHAIN_SEARCH_RESULTS]
    assert recorded.interactions[1].request["messages"][0]["role"] == "system"


def test_failed_status(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    with pytest.raises(PerplexityLabsServerError) as caught:
        pplx_labs_cassette.invoke("Break please.")
    assert caught.value.server_message == "Error in processing query"
    assert caught.value.model == "sonar-reasoning-pro"


def test_cloudflare_403(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    with pytest.raises(PerplexityLabsBlockedError) as caught:
        pplx_labs_cassette.invoke("Hello?")
    assert caught.value.status == 403
    assert "Cloudflare" in str(caught.value)


@pytest.mark.pplx_labs(idle_timeout=0.5)
def test_silent_mid_stream(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_silent_mid_stream")
    assert recorded.interactions[0].frames[-1].kind == "stall"
    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        pplx_labs_cassette.invoke("Go quiet.")
    assert caught.value.which == "idle"
    assert caught.value.partial_content == "This is the offline "


def test_disconnect_mid_stream(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_disconnect_mid_stream")
    assert recorded.interactions[0].frames[-1].kind == "drop"
    with pytest.raises(PerplexityLabsDisconnectedError) as caught:
        pplx_labs_cassette.invoke("Hang up.")
    assert caught.value.partial_content == "This is the offline "


def test_unknown_extra_events(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_unknown_extra_events")
    events = {f.event for f in recorded.interactions[0].frames}
    assert "query_status" in events
    message = pplx_labs_cassette.invoke("What is Socket.IO?")
    assert message.content == SOCKETIO
    assert message.response_metadata["citations"] == SOCKETIO_SOURCES


def test_non_ascii_emoji_rtl(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    streamed = list(pplx_labs_cassette.stream("Say hello in many scripts."))
    assert streamed[-1].response_metadata["citations"] == EMULATOR_SOURCES
    chunks = [str(c.content) for c in streamed if c.content]
    assert "".join(chunks) == (
        "Grüße aus Zürich — Ελληνικά, 日本語のテキスト, עברית מימין לשמאל, العربية من اليمين إلى اليسار, "
        "emoji 👩\u200d👩\u200d👧\u200d👦 🇫🇷 🚀 ✨ [1]."
    )
    assert len(chunks) > 10


def test_shrinking_and_repeated_output(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    recorded = cassette("test_shrinking_and_repeated_output")
    outputs = [f.data["output"] for f in recorded.interactions[0].frames]
    assert any(len(b) < len(a) for a, b in itertools.pairwise(outputs))
    assert any(a == b for a, b in itertools.pairwise(outputs))
    message = pplx_labs_cassette.invoke("What is the answer?")
    assert message.content == "The answer is 42, as computed by Deep Thought [1]."
    assert message.response_metadata["citations"] == ["https://en.wikipedia.org/wiki/42_(number)"]


def test_json_structured_output(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    parsed = (pplx_labs_cassette | JsonOutputParser()).invoke("Give Paris facts as JSON.")
    assert parsed == {"city": "Paris", "country": "France", "population_millions": 2.1, "sources": [1, 2]}


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
    chunks = [chunk async for chunk in applx_labs_cassette.astream("What is the capital of France?")]
    assert "".join(str(c.content) for c in chunks) == PARIS
    assert chunks[-1].response_metadata["citations"] == PARIS_SOURCES


# build_corpus records from its own in-process emulator: vcrpy, active in this module, lets that
# loopback traffic pass (a python -m subprocess never had vcrpy in it).
BUILDS_LOCALLY = pytest.mark.vcr(ignore_localhost=True)


@contextlib.contextmanager
def _root_logger_kept() -> Iterator[None]:
    """The root logger's handlers and level as they were: ``main`` calls ``logging.basicConfig``."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _build_corpus(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
    """``python -m langchain_pplx_labs.recording.build_corpus ARGS`` run by its ``main`` here, from ``cwd``."""
    monkeypatch.chdir(cwd)
    stdout, stderr = io.StringIO(), io.StringIO()
    with _root_logger_kept(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = build_corpus.main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


@BUILDS_LOCALLY
def test_build_corpus_rejects_unknown_names_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _build_corpus(tmp_path, monkeypatch, "test_no_such_entry")
    assert result.returncode == 2
    assert (
        "unknown entry test_no_such_entry; valid entries: test_plain_answer_with_citations" in result.stderr
    )
    assert list(tmp_path.iterdir()) == []


@BUILDS_LOCALLY
def test_build_corpus_writes_only_where_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_corpus.CORPUS_DIR == HERE  # the default is the checkout's corpus, wherever it is run from
    result = _build_corpus(tmp_path, monkeypatch, "--out", "out", "test_no_citations")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["test_no_citations.labs.yaml"]
    rebuilt = load_cassette(tmp_path / "out" / "test_no_citations.labs.yaml")
    assert rebuilt.interactions[0].request == cassette("test_no_citations").interactions[0].request


PLAIN = "test_plain_answer_with_citations"
CHANGES = {  # name: (change, the cassette the mismatch names as closest)
    "other-question": (lambda p: p["messages"][-1].update(content="What is the capital of Spain?"), PLAIN),
    "one-letter-question": (
        lambda p: p["messages"][-1].update(content="What is the capital of Francе?"),
        PLAIN,
    ),
    "other-model": (lambda p: p.update(model="sonar"), PLAIN),
    "added-system-turn": (
        lambda p: p["messages"].insert(0, {"role": "system", "content": "Be brief."}),
        "test_multi_turn_with_system_prompt",
    ),
    "other-version": (lambda p: p.update(version="2.19"), PLAIN),
    "extra-field": (lambda p: p.update(temperature=0.2), PLAIN),
}


@pytest.mark.parametrize("served", ["folder", "one-cassette"])
@pytest.mark.parametrize(("change", "closest"), CHANGES.values(), ids=CHANGES.keys())
def test_replay_refuses_a_changed_payload(change: Any, closest: str, served: str) -> None:
    """Replay must compare the whole payload: answering a question not asked would hide real changes.

    ``folder`` is ``serve --cassettes DIR``; ``one-cassette`` is how the pytest plugin replays a test's file.
    """
    plain = HERE / f"{PLAIN}.labs.yaml"
    if served == "folder":
        responder = CassetteResponder.from_paths([CASSETTES])
    else:
        responder, closest = CassetteResponder({str(plain): load_cassette(plain)}), PLAIN
    payload = copy.deepcopy(cassette(PLAIN).interactions[0].request)
    change(payload)
    [step] = responder(LabsRequest(payload))
    assert responder.played == []
    assert isinstance(step, Emit)
    assert step.data["status"] == "failed"
    assert step.data["text"].startswith(
        f"Request does not match cassette {HERE / closest}.labs.yaml (closest"
    )
    assert len(responder.mismatches) == 1
    # The recorded payload itself still plays: the responder does not refuse everything.
    responder(LabsRequest(copy.deepcopy(cassette(PLAIN).interactions[0].request)))
    assert responder.played == [(str(plain), 0)]
