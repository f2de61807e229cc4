"""Issue #31's minors a new user tripped on: settings checked at once, unknown call arguments, error wording, exit codes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import warnings

import pytest
from clirun import command, run_cli
from langchain_core.tools import tool
from pydantic import BaseModel, ValidationError

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator
from langchain_pplx_labs.emulator.rules import schema_follower
from langchain_pplx_labs.emulator.script import made_up_answer
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.protocol import LabsProtocol
from langchain_pplx_labs.settings import check_base_url

QUESTION = "What is the capital of France?"
EXPECTED_ROOT = "expected http(s)://host[:port], e.g. https://www.perplexity.ai"
NO_QUERY = (
    "a server root takes no ?query or #fragment (a path is kept: the service's own path is appended to it)"
)


# -- base_url: one check, at construction, for the field, its environment variable and --base-url -----


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("http://127.0.0.1:99999", "port 99999 is out of range (use 1-65535)"),
        ("http://[::1]:70000", "port 70000 is out of range (use 1-65535)"),
        ("http://127.0.0.1:0", "port 0 is out of range (use 1-65535)"),
        ("http://127.0.0.1:http", "port 'http' is not a number"),
        ("http://[::1", "invalid IPv6 URL"),
        ("http://127.0.0.1:8123/labs?x=1", NO_QUERY),
        ("http://127.0.0.1:8123/#top", NO_QUERY),
        ("foo", EXPECTED_ROOT),
    ],
)
def test_check_base_url_names_what_is_wrong(bad: str, why: str) -> None:
    with pytest.raises(PerplexityLabsInputError) as caught:
        check_base_url(bad)
    assert str(caught.value) == f"Invalid base_url {bad!r}: {why}"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("http://[::1]", "http://[::1]"),
        ("http://[::1]:8080/root/", "http://[::1]:8080/root"),
        ("https://user:pw@host:65535", "https://user:pw@host:65535"),
        ("http://host:1", "http://host:1"),
    ],
)
def test_check_base_url_keeps_ports_in_range_and_ipv6_hosts(given: str, kept: str) -> None:
    assert check_base_url(given) == kept


@pytest.mark.parametrize(
    ("value", "why"),
    [("foo", EXPECTED_ROOT), ("http://127.0.0.1:99999", "port 99999 is out of range (use 1-65535)")],
)
def test_a_bad_PPLX_LABS_BASE_URL_is_refused_when_the_model_is_built(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    monkeypatch.setenv("PPLX_LABS_BASE_URL", value)
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs()  # before: built, and failing only at the first call after its retries
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, PerplexityLabsInputError)
    assert str(error) == f"Invalid base_url {value!r}: {why}"


def test_a_port_out_of_range_is_refused_when_the_model_is_built() -> None:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(base_url="http://127.0.0.1:99999")
    assert str(caught.value.errors()[0]["ctx"]["error"]) == (
        "Invalid base_url 'http://127.0.0.1:99999': port 99999 is out of range (use 1-65535)"
    )


@pytest.mark.parametrize("command_name", ["ask", "doctor"])
@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("notaurl", EXPECTED_ROOT),
        ("http://127.0.0.1:99999", "port 99999 is out of range (use 1-65535)"),
        ("http://127.0.0.1:8123/x?y=1", NO_QUERY),
    ],
)
def test_a_bad_base_url_flag_is_a_usage_error(command_name: str, bad: str, why: str) -> None:
    question = [QUESTION] if command_name == "ask" else []
    result = run_cli(command_name, "--base-url", bad, *question)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"pplx-labs: error: argument --base-url: Invalid base_url {bad!r}: {why} "
        f"(see pplx-labs {command_name} --help)\n"
    )
    assert result.stdout == ""


def test_doctor_refuses_a_bad_PPLX_LABS_BASE_URL_before_walking() -> None:
    result = run_cli("doctor", env={"PPLX_LABS_BASE_URL": "foo"})
    assert result.returncode == 1
    assert (
        result.stderr == f"pplx-labs: error: $PPLX_LABS_BASE_URL: Invalid base_url 'foo': {EXPECTED_ROOT}\n"
    )
    assert result.stdout == ""  # no walk began: nothing was dialled


@pytest.mark.parametrize("command_name", ["ask", "doctor"])
@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_model_flag_is_a_usage_error(command_name: str, empty: str) -> None:
    question = [QUESTION] if command_name == "ask" else []
    result = run_cli(
        command_name, "--emulator" if command_name == "ask" else "--json", "--model", empty, *question
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "pplx-labs: error: argument --model: the model name is empty: leave --model out for the "
        f"transport's default (see pplx-labs {command_name} --help)\n"
    )


# A server whose every endpoint sits under /foo: a client given $URL/foo must find each of them there.
UNDER_FOO = LabsProtocol(
    socketio_path="/foo/socket.io/",
    web_path="/foo/rest/sse/perplexity_ask",
    web_session_path="/foo/api/auth/session",
)


@pytest.mark.parametrize(
    ("transport", "refuse_websocket"),
    [
        pytest.param("labs", False, id="labs-websocket"),
        pytest.param("labs", True, id="labs-polling"),  # python-socketio dropped the path here
        pytest.param("web", False, id="web"),
    ],
)
def test_a_base_url_path_is_kept_on_every_transport(transport: str, refuse_websocket: bool) -> None:
    with EmulatorThread(LabsEmulator(protocol=UNDER_FOO, refuse_websocket=refuse_websocket)) as server:
        with ChatPerplexityLabs(
            transport=transport, base_url=f"{server.base_url}/foo/", max_retries=0, timeout=20
        ) as chat:
            message = chat.invoke(QUESTION)
        asked = server.call(lambda: (sum(server.emulator.handshakes.values()), server.emulator.web.asks))
    assert message.content == made_up_answer(QUESTION)
    assert asked == ((1, 0) if transport == "labs" else (0, 1))


# -- call arguments: an unknown one warns once per name, as the constructor's unknown field does ----------


def unknown(name: str) -> str:
    return f"ChatPerplexityLabs got unknown call argument {name!r}; it is ignored"


def _calls(chat: ChatPerplexityLabs, how: str, **kwargs: object) -> None:
    """Ask ``QUESTION`` once the way ``how`` names, with ``kwargs`` as call arguments."""
    if how == "invoke":
        chat.invoke(QUESTION, **kwargs)
    elif how == "ainvoke":
        asyncio.run(chat.ainvoke(QUESTION, **kwargs))
    elif how == "stream":
        assert list(chat.stream(QUESTION, **kwargs))
    elif how == "astream":

        async def drain() -> None:
            assert [chunk async for chunk in chat.astream(QUESTION, **kwargs)]

        asyncio.run(drain())
    else:
        assert len(chat.batch([QUESTION, QUESTION], **kwargs)) == 2


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream", "batch"])
def test_an_unknown_call_argument_warns_once_per_name(emulator: LabsEmulator, how: str) -> None:
    with ChatPerplexityLabs(transport="labs", base_url=emulator.base_url, max_retries=0, timeout=20) as chat:
        with pytest.warns(UserWarning, match="got unknown") as first:
            _calls(chat, how, top_p=0.5)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same name again, and arguments the model knows: silent
            _calls(chat, how, top_p=0.5, temperature=0, max_tokens=10)
        with pytest.warns(UserWarning, match="got unknown") as second:
            _calls(chat, how, top_k=3, top_p=0.1)
    assert [str(w.message) for w in first] == [unknown("top_p")]
    assert [str(w.message) for w in second] == [unknown("top_k")]


def test_the_call_warning_reads_like_the_constructors() -> None:
    with pytest.warns(UserWarning, match="got unknown") as caught:
        ChatPerplexityLabs(top_p=0.5)
    assert [str(w.message) for w in caught] == [
        "ChatPerplexityLabs got unknown parameter 'top_p'; it is ignored"
    ]


@tool
def get_weather(city: str) -> str:
    """Look up the weather in a city."""
    return f"Sunny in {city}"


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    celsius: int


def test_what_langchain_itself_passes_is_no_unknown_argument(emulator: LabsEmulator) -> None:
    from langchain.agents import create_agent
    from langchain_core.messages import HumanMessage

    emulator.script(schema_follower)
    with (
        ChatPerplexityLabs(transport="labs", base_url=emulator.base_url, max_retries=0, timeout=20) as chat,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")  # -W error: any warning fails the test
        called = chat.bind_tools([get_weather], tool_choice="any").invoke(
            "Weather in 'Lyon'?", stop=["\n\n\n"]
        )
        bound = chat.bind_tools([get_weather], parallel_tool_calls=False)
        streamed = list(bound.stream("Weather in 'Lyon'?"))
        parsed = [
            chat.with_structured_output(Weather, method=method).invoke("It is 21 degrees in 'Nice'.")
            for method in ("function_calling", "json_mode", "json_schema")
        ]
        agent = create_agent(chat, tools=[get_weather])
        answered = agent.invoke({"messages": [HumanMessage("Weather in 'Lyon'?")]}, {"recursion_limit": 6})
    assert [call["name"] for call in called.tool_calls] == ["get_weather"]  # type: ignore[attr-defined]
    assert streamed
    assert all(isinstance(one, Weather) and one.city == "Nice" for one in parsed)
    assert "Sunny in Lyon" in [message.content for message in answered["messages"]]


# -- exit codes ---------------------------------------------------------------------------------------


@pytest.mark.system  # a signal to a real process is the subject
def test_serve_exits_130_on_ctrl_c_as_the_gateway_does() -> None:
    process = subprocess.Popen(
        command("serve", "--port", "0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("http://127.0.0.1:")  # serving: its handlers are set
        process.send_signal(signal.SIGINT)
        exited = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=15)
    assert exited == 130, stderr
    assert "Traceback" not in stderr
