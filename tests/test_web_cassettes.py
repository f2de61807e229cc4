"""Web cassettes: recording the web app's SSE ask, saving, loading and replaying it, and the transport rule."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_recording import scripted_conftest
from webfake import answer_message, forever, serving, streaming

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.cli import main
from langchain_pplx_labs.emulator import Emit, EmulatorThread, LabsEmulator, Raw, Scenario, progress_frame
from langchain_pplx_labs.errors import (
    PerplexityLabsDisconnectedError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.protocol import build_payload, progress_event
from langchain_pplx_labs.recording import (
    Cassette,
    CassetteMismatchError,
    CassetteResponder,
    CassetteTransportError,
    UpstreamUnreachableError,
    load_cassette,
    record_cassette,
    record_web_interaction,
    recorder,
    save_cassette,
)
from langchain_pplx_labs.recording.recorder import upstream_headers
from langchain_pplx_labs.recording.redact import REDACTED

pytest_plugins = ["pytester"]

CORPUS = Path(__file__).resolve().parents[1] / "cassettes"
PARIS = (
    "The capital of France is Paris [1]. It has been the seat of the French government "
    "for most of the country's history [2]."
)
PARIS_SOURCES = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
SCRIPTED = "Scripted web answer, split over many messages, with one cited source [1]."


def _payload(question: str, model: str = "turbo") -> dict[str, Any]:
    return dict(build_payload(model, [{"role": "user", "content": question}]))


def _record(emulator_thread: EmulatorThread, payloads: list[dict[str, Any]], **kwargs: Any) -> Cassette:
    """Record over the web from the shared emulator, on a loop of our own as a user's script would."""
    coroutine = record_cassette(
        emulator_thread.base_url, payloads, provenance="synthetic", silence=0.5, transport="web", **kwargs
    )
    return asyncio.run(coroutine)


def _replay(emulator_thread: EmulatorThread, *cassettes: Cassette) -> CassetteResponder:
    responder = CassetteResponder({f"mem{n}.labs.yaml": c for n, c in enumerate(cassettes)})
    emulator_thread.call(lambda: emulator_thread.emulator.script(responder))
    return responder


def _recorded_and_replaying(
    emulator: LabsEmulator, emulator_thread: EmulatorThread, scenario: Scenario, question: str
) -> Cassette:
    """Record ``question`` over the web answered by ``scenario``; then the emulator replays only that cassette."""
    emulator.script(scenario)
    cassette = _record(emulator_thread, [_payload(question)])
    emulator.reset()
    _replay(emulator_thread, cassette)
    return cassette


def _replaying_model(base_url: str, model: str, transport: str) -> Iterator[ChatPerplexityLabs]:
    chat = ChatPerplexityLabs(
        model=model,
        transport=transport,
        base_url=base_url,
        first_token_timeout=5,
        idle_timeout=5,
        max_retries=0,
    )
    yield chat
    chat.close()


@pytest.fixture
def web_model(base_url: str) -> Iterator[ChatPerplexityLabs]:
    yield from _replaying_model(base_url, "turbo", "web")


@pytest.fixture
def labs_model(base_url: str) -> Iterator[ChatPerplexityLabs]:
    yield from _replaying_model(base_url, "sonar-pro", "labs")


def test_round_trip_record_save_load_replay_over_web(
    emulator: LabsEmulator, emulator_thread: EmulatorThread, web_model: ChatPerplexityLabs, tmp_path: Path
) -> None:
    sources = [{"url": "https://example.org/web", "title": "Web source"}]
    emulator.script(Scenario(answer=SCRIPTED, citations=sources, chunk_size=9, delay=0.01))
    cassette = _record(emulator_thread, [_payload("Round trip over the web?")])
    assert cassette.transport == "web"
    path = save_cassette(cassette, tmp_path / "web.labs.yaml")
    assert "transport: web" in path.read_text(encoding="utf-8")
    loaded = load_cassette(path)
    assert loaded == cassette
    [interaction] = loaded.interactions
    assert interaction.request["query_str"] == "Round trip over the web?"
    assert interaction.request["params"]["model_preference"] == "turbo"
    assert interaction.request["params"]["frontend_uuid"] == REDACTED  # new per ask: matches any on replay
    assert [frame.event for frame in interaction.frames[-2:]] == ["message", "end_of_stream"]
    assert interaction.frames[-2].data["final_sse_message"] is True
    times = [frame.at for frame in interaction.frames]
    assert times == sorted(times)
    assert times[-1] > times[0]  # the messages' timing is kept

    emulator.reset()  # the scripted answer is gone: only the cassette can answer now
    _replay(emulator_thread, loaded)
    message = web_model.invoke("Round trip over the web?")
    assert message.content == SCRIPTED
    assert message.response_metadata["citations"] == ["https://example.org/web"]


def test_cookie_header_is_redacted_in_a_web_recording(
    emulator: LabsEmulator, emulator_thread: EmulatorThread, tmp_path: Path
) -> None:
    cookies = "__Secure-next-auth.session-token=SESSION-SECRET-7; cf_clearance=CLEARANCE-SECRET-8"
    headers = upstream_headers({"Authorization": "Bearer AUTH-SECRET-9"}, cookies)
    cassette = _record(emulator_thread, [_payload("Signed in?")], headers=headers)
    sent = emulator.web.headers[-1]  # the ask itself went with the user's credentials
    assert sent["Cookie"] == cookies
    saved = save_cassette(cassette, tmp_path / "signed-in.labs.yaml").read_text(encoding="utf-8")
    for secret in ("SESSION-SECRET-7", "CLEARANCE-SECRET-8", "AUTH-SECRET-9"):
        assert secret not in saved
    assert cassette.connection["headers"]["Cookie"] == REDACTED
    assert cassette.connection["headers"]["Authorization"] == REDACTED
    assert cassette.connection["signed_in"] is True  # the session cookie signed the warm-up in
    assert cassette.interactions[0].request["params"]["mode"] == "copilot"


def test_mismatch_names_the_closest_web_recording(
    emulator_thread: EmulatorThread, web_model: ChatPerplexityLabs
) -> None:
    cassette = load_cassette(CORPUS / "test_web_cassettes" / "test_web_plain_answer_with_sources.labs.yaml")
    responder = _replay(emulator_thread, cassette.model_copy(update={"model": "turbo"}))
    with pytest.raises(PerplexityLabsServerError) as caught:
        web_model.invoke("What is the capital of Italy?")
    first_line = str(caught.value).splitlines()[0]
    assert "mem0.labs.yaml (closest recorded request: #1)" in first_line
    assert 'recorded "dsl_query": "What is the capital of France?"' in first_line
    assert 'but sent "dsl_query": "What is the capital of Italy?"' in first_line
    [mismatch] = responder.mismatches
    assert type(mismatch) is CassetteMismatchError


def test_a_labs_client_on_a_web_cassette_gets_a_transport_error(
    emulator_thread: EmulatorThread, labs_model: ChatPerplexityLabs
) -> None:
    cassette = load_cassette(CORPUS / "test_web_cassettes" / "test_web_plain_answer_with_sources.labs.yaml")
    responder = _replay(emulator_thread, cassette)
    with pytest.raises(
        PerplexityLabsServerError, match="holds web recordings, but the question came over the labs"
    ):
        labs_model.invoke("What is the capital of France?")
    [mismatch] = responder.mismatches
    assert isinstance(mismatch, CassetteTransportError)
    assert (mismatch.recorded, mismatch.asked) == ("web", "labs")


def test_a_web_client_on_a_labs_cassette_gets_a_transport_error(
    emulator_thread: EmulatorThread, web_model: ChatPerplexityLabs
) -> None:
    path = CORPUS / "test_cassettes" / "test_plain_answer_with_citations.labs.yaml"
    assert "\ntransport:" not in path.read_text(encoding="utf-8")  # no top-level field
    cassette = load_cassette(path)
    assert cassette.transport == "labs"  # the field is absent from the file: Labs
    responder = _replay(emulator_thread, cassette)
    with pytest.raises(PerplexityLabsServerError, match=r"transport='labs'"):
        web_model.invoke("What is the capital of France?")
    [mismatch] = responder.mismatches
    assert isinstance(mismatch, CassetteTransportError)
    assert "came over the web transport" in str(mismatch)


def test_one_server_replays_both_kinds(
    emulator_thread: EmulatorThread, web_model: ChatPerplexityLabs, labs_model: ChatPerplexityLabs
) -> None:
    """What ``pplx-labs serve --cassettes cassettes/`` does: each transport matches its own kind."""
    responder = CassetteResponder.from_paths([CORPUS])
    emulator_thread.call(lambda: emulator_thread.emulator.script(responder))
    web_model_auto = web_model.model_copy(update={"model": "auto"})
    assert web_model_auto.invoke("What is the capital of France?").content == PARIS
    labs_answer = labs_model.invoke("What is the capital of France?")
    assert labs_answer.content.startswith("The capital of France is Paris [1].")
    assert responder.mismatches == []
    kinds = {responder.cassettes[source].transport for source, _ in responder.played}
    assert kinds == {"web", "labs"}


def test_a_recorded_web_failure_replays_with_the_servers_text(
    emulator: LabsEmulator, emulator_thread: EmulatorThread, web_model: ChatPerplexityLabs
) -> None:
    cassette = _recorded_and_replaying(
        emulator,
        emulator_thread,
        Scenario(fail="Error in processing query.", fail_after=2, chunk_size=5),
        "Break please.",
    )
    assert cassette.interactions[0].frames[-2].data["status"] == "failed"
    with pytest.raises(PerplexityLabsServerError, match=r"Error in processing query\."):
        web_model.invoke("Break please.")


def test_a_stream_that_broke_off_is_recorded_as_a_drop_and_replayed(
    emulator: LabsEmulator, emulator_thread: EmulatorThread, web_model: ChatPerplexityLabs
) -> None:
    cassette = _recorded_and_replaying(
        emulator, emulator_thread, Scenario(drop_after=2, chunk_size=5), "Hang up."
    )
    assert cassette.interactions[0].frames[-1].kind == "drop"
    with pytest.raises(PerplexityLabsDisconnectedError):
        web_model.invoke("Hang up.")


def test_a_stream_gone_silent_is_recorded_as_a_stall_and_replayed(
    emulator: LabsEmulator, emulator_thread: EmulatorThread, web_model: ChatPerplexityLabs
) -> None:
    cassette = _recorded_and_replaying(
        emulator, emulator_thread, Scenario(stall_after=2, chunk_size=5), "Go quiet."
    )
    assert [frame.kind for frame in cassette.interactions[0].frames] == ["event", "event", "stall"]
    impatient = web_model.model_copy(update={"idle_timeout": 0.5})
    with pytest.raises(PerplexityLabsTimeoutError):
        impatient.invoke("Go quiet.")


def test_a_done_marker_is_recorded_raw_and_replayed_as_the_end(
    emulator: LabsEmulator, emulator_thread: EmulatorThread, web_model: ChatPerplexityLabs
) -> None:
    """``data: [DONE]`` (gpt4free's end marker) is no JSON: kept verbatim, and it still ends the answer."""
    event = progress_event("turbo")
    emulator.script([Emit(event, progress_frame("Ended by a done marker.", elapsed=0.1)), Raw("[DONE]")])
    cassette = _record(emulator_thread, [_payload("Done?")])
    last = cassette.interactions[0].frames[-1]
    assert (last.kind, last.event, last.data) == ("raw", "message", "[DONE]")
    emulator.reset()
    _replay(emulator_thread, cassette)
    assert web_model.invoke("Done?").content == "Ended by a done marker."


async def test_a_refused_ask_is_recorded_as_the_sessions_refusal_and_nothing_answering_as_unreachable() -> (
    None
):
    async def refuse(request: web.Request) -> web.StreamResponse:
        headers = {"cf-ray": "RAY-SECRET", "X-Internal": "dropped"}
        return web.json_response({"error_code": "RATE", "message": "slow"}, status=429, headers=headers)

    async with serving() as fake:
        fake.ask = refuse
        info: dict[str, Any] = {}
        interaction = await record_web_interaction(fake.base_url, _payload("Refused?"), connection_info=info)
    assert interaction.frames == []
    assert interaction.request["query_str"] == "Refused?"  # the body as sent
    refusal = interaction.refusal
    assert refusal is not None
    assert (refusal.status, refusal.body) == (429, '{"error_code": "RATE", "message": "slow"}')
    assert refusal.headers["cf-ray"] == REDACTED
    assert set(refusal.headers) == {"content-type", "server", "cf-ray"}  # the kept ones only
    assert info["signed_in"] is False
    with pytest.raises(UpstreamUnreachableError, match=f"cannot reach {fake.base_url}: "):
        await record_web_interaction(fake.base_url, _payload("Anyone?"), connect_timeout=2)


async def test_a_stream_ended_early_is_recorded_as_it_came_without_a_drop() -> None:
    async with serving() as fake:
        fake.ask = streaming([answer_message("Par"), b"data: not json\r\n\r\n"])
        interaction = await record_web_interaction(fake.base_url, _payload("Early?"))
    assert [(frame.kind, frame.data) for frame in interaction.frames] == [
        ("event", answer_message("Par")),
        ("raw", "not json"),
    ]


async def test_an_html_page_with_200_for_the_ask_is_recorded_as_a_refusal() -> None:
    page = "<!doctype html><html><body>Sign in</body></html>"

    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text=page, content_type="text/html")

    async with serving() as fake:
        fake.ask = html
        interaction = await record_web_interaction(fake.base_url, _payload("A page?"))
    assert interaction.frames == []  # no event stream was recorded ...
    refusal = interaction.refusal
    assert refusal is not None  # ... but the page, as the refusal it is
    assert (refusal.status, refusal.body) == (200, page)
    assert refusal.headers["content-type"].startswith("text/html")


async def test_silence_after_a_finished_answer_is_not_recorded_as_a_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The answer's final message, then a stream the server keeps open: the answer is whole.
    monkeypatch.setattr(recorder, "_TAIL_SECONDS", 0.2)
    async with serving() as fake:
        fake.ask = streaming([answer_message("Par"), answer_message("Paris.", final=True)], then=forever)
        interaction = await record_web_interaction(fake.base_url, _payload("Quiet after?"), silence=0.3)
    assert [frame.kind for frame in interaction.frames] == ["event", "event"]
    assert interaction.refusal is None


# --- the shipped synthetic web cassettes, through the pytest plugin ---------------------------


def test_web_plain_answer_with_sources(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    assert pplx_labs_cassette.transport == "web"  # from the cassette, whatever $PPLX_LABS_TRANSPORT says
    message = pplx_labs_cassette.invoke("What is the capital of France?")
    assert message.content == PARIS
    assert message.response_metadata["citations"] == PARIS_SOURCES


def test_web_reasoning(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    assert pplx_labs_cassette.model == "r1-1776"
    message = pplx_labs_cassette.invoke("Why is the sky blue?")
    assert message.additional_kwargs["reasoning_content"] == (
        "The user asks: Why is the sky blue?. I should answer briefly and cite my sources."
    )
    assert message.content == (
        "This is the offline Perplexity Labs emulator answering “Why is the sky blue” [1]. Its answers "
        "are synthetic, but they stream and cite sources exactly like the playground [2]."
    )
    assert message.response_metadata["citations"] == [
        "https://docs.perplexity.ai/",
        "https://labs.perplexity.ai/",
    ]


def test_cli_show_prints_the_transport_and_the_folded_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["cassette", "show", str(CORPUS / "test_web_cassettes" / "test_web_reasoning.labs.yaml")]) == 0
    )
    shown = capsys.readouterr().out
    header = shown.splitlines()[1]
    assert header.startswith("provenance: synthetic · recorded ")
    assert header.endswith(" · server pplx-labs emulator · transport web")
    assert "[user] Why is the sky blue?" in shown
    assert "[reasoning] The user asks: Why is the sky blue?." in shown
    assert "[1] https://docs.perplexity.ai/" in shown
    assert "ended: completed" in shown
    assert (
        main(
            [
                "cassette",
                "show",
                "--frames",
                str(CORPUS / "test_web_cassettes" / "test_web_reasoning.labs.yaml"),
            ]
        )
        == 0
    )
    timeline = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  +")]
    assert len(timeline) == 13  # the messages recorded: 12 of the answer, then the end marker
    assert timeline[-2].endswith("message  status COMPLETED  final")
    assert timeline[-1].endswith("end_of_stream")
    labs = CORPUS / "test_cassettes" / "test_no_citations.labs.yaml"
    assert main(["cassette", "show", str(labs)]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(" · transport labs")


def test_cli_record_transport_web_then_replay(
    tmp_path: Path, emulator_thread: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.labs.yaml"
    args = ["cassette", "record", "--emulator", "--transport", "web", "--out", str(out), "Say hello."]
    assert main(args) == 0
    assert "messages to" in capsys.readouterr().err
    cassette = load_cassette(out)
    assert (cassette.transport, cassette.provenance, cassette.model) == ("web", "synthetic", "auto")
    # No system prompt by default over the web: the question itself, as `ask` sends it.
    assert cassette.interactions[0].request["query_str"] == "Say hello."
    assert cassette.connection["signed_in"] is False


def test_cli_record_transport_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PPLX_LABS_TRANSPORT", "web")
    out = tmp_path / "env.labs.yaml"
    assert main(["cassette", "record", "--emulator", "--system", "", "--out", str(out), "Hi?"]) == 0
    assert load_cassette(out).transport == "web"
    explicit = tmp_path / "labs.labs.yaml"
    argv = ["cassette", "record", "--emulator", "--transport", "labs", "--out", str(explicit), "Hi?"]
    assert main(argv) == 0
    assert load_cassette(explicit).transport == "labs"


WEB_SCRIPTED_CONFTEST = scripted_conftest("Scripted web answer [1].", "https://example.org/w")

WEB_PLUGIN_TEST = """
import pytest

@pytest.mark.vcr
@pytest.mark.pplx_labs(transport="web", model="turbo")
def test_web_chain(pplx_labs_cassette):
    message = pplx_labs_cassette.invoke("Over the web?")
    assert message.content == "Scripted web answer [1]."
    assert message.response_metadata["citations"] == ["https://example.org/w"]
"""


def test_plugin_records_and_replays_a_web_model(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(WEB_SCRIPTED_CONFTEST)
    pytester.makepyfile(test_web_plugin=WEB_PLUGIN_TEST)
    path = pytester.path / "cassettes" / "test_web_plugin" / "test_web_chain.labs.yaml"
    pytester.runpytest("--record-mode=none", "-p", "no:cacheprovider").assert_outcomes(
        errors=1
    )  # names the file
    pytester.runpytest("--record-mode=once", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    cassette = load_cassette(path)
    assert (cassette.transport, cassette.model, cassette.provenance) == ("web", "turbo", "synthetic")
    assert cassette.interactions[0].request["query_str"] == "Over the web?"
    pytester.runpytest("--record-mode=none", "-p", "no:cacheprovider").assert_outcomes(passed=1)

    # The same test with a Labs model: a clear transport mismatch, reported once.
    pytester.makepyfile(test_web_plugin=WEB_PLUGIN_TEST.replace('transport="web"', 'transport="labs"'))
    mismatch = pytester.runpytest("--record-mode=none", "-p", "no:cacheprovider", "-rN")
    mismatch.assert_outcomes(failed=1, errors=0)
    mismatch.stdout.fnmatch_lines(["*holds web recordings, but the question came over the labs transport*"])


def test_docs_web_cassette_example_records_then_replays_as_written(pytester: pytest.Pytester) -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "cassettes.md").read_text(encoding="utf-8")
    [example] = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if 'transport="web"' in b]
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_docs_web=example)
    off = ("-p", "no:cacheprovider")
    pytester.runpytest("--record-mode=once", *off).assert_outcomes(passed=1)
    path = pytester.path / "cassettes" / "test_docs_web" / "test_my_chain_over_the_web.labs.yaml"
    assert load_cassette(path).transport == "web"
    pytester.runpytest("--record-mode=none", "--block-network", *off).assert_outcomes(passed=1)
