"""Issue #31's minors a new user tripped on: settings checked at once, unknown call arguments, error wording, exit codes."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import warnings

import pytest
from clirun import command, run_cli
from langchain_core.tools import tool
from pydantic import BaseModel, ValidationError

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import FAILED_FRAME, RATE_LIMIT_FRAME, EmulatorThread, LabsEmulator
from langchain_pplx_labs.emulator.rules import schema_follower
from langchain_pplx_labs.emulator.script import made_up_answer
from langchain_pplx_labs.errors import PerplexityLabsError, PerplexityLabsInputError
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
        (
            "http://a b",
            "a host cannot hold ' '",
        ),  # curl refused it only at the call, leaving a task unretrieved
        ("http://h\x01st", "a host cannot hold '\\x01'"),
        ("http://h{x}:8", "a host cannot hold '{'"),
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
        ("http://bücher.example/x", "http://bücher.example/x"),
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


@pytest.mark.parametrize(
    "command_name", ["ask", "doctor", "models", "gateway", "mcp", "login", "cassette record"]
)
@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("notaurl", EXPECTED_ROOT),
        ("http://127.0.0.1:99999", "port 99999 is out of range (use 1-65535)"),
        ("http://127.0.0.1:8123/x?y=1", NO_QUERY),
    ],
)
def test_a_bad_base_url_flag_is_a_usage_error(command_name: str, bad: str, why: str) -> None:
    # Every command that takes --base-url checks it as the model does: the flag is refused before anything runs.
    question = [QUESTION] if command_name in ("ask", "cassette record") else []
    result = run_cli(*command_name.split(), "--base-url", bad, *question)
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


# -- error wording: the transport's words without its connector key, each prefix said once -------------

VOICES = [
    pytest.param("labs", None, id="labs"),
    pytest.param("web", None, id="web-aiohttp"),
    pytest.param("web", "chrome", id="web-curl"),
]


def _failure(base_url: str, transport: str, impersonate: str | None, **fields: object) -> str:
    """The message of the error one question to ``base_url`` ends with."""
    chat = ChatPerplexityLabs(
        transport=transport,
        impersonate=impersonate,
        base_url=base_url,
        max_retries=0,
        first_token_timeout=1,
        idle_timeout=1,
        timeout=20,
        **fields,
    )
    with chat, pytest.raises(PerplexityLabsError) as caught:
        chat.invoke(QUESTION)
    return str(caught.value)


def assert_said_once(message: str) -> None:
    """No ``ssl:default`` (aiohttp's connector key), curl_cffi's wrapping, or a prefix said twice."""
    assert "ssl:" not in message
    assert "Failed to perform" not in message
    assert "See https://curl.se" not in message
    opening = message.split(":", 1)[0]
    assert message.count(opening) == 1, message


@pytest.mark.parametrize(("transport", "impersonate"), VOICES)
def test_a_refused_port_says_refused_in_the_transports_words(
    refused_url: str, transport: str, impersonate: str | None
) -> None:
    message = _failure(refused_url, transport, impersonate)
    assert_said_once(message)
    address = refused_url.removeprefix("http://")
    host, port = address.split(":")
    refused = f"Cannot connect to host {address}: connection refused (Connect call failed ('{host}', {port}))"
    if transport == "labs":  # the refusal's diagnosis (a GET of the polling endpoint) tells it
        assert message == f"Cannot reach Perplexity Labs at {refused_url}: {refused}"
    elif impersonate is None:
        assert message == f"Could not connect to {refused_url} over web: {refused}"
    else:  # curl: the time it took varies, the rest does not
        assert message.startswith(
            f"Could not connect to {refused_url} over web: curl: (7) Failed to connect to {address} after "
        )
        assert message.endswith(" ms: Could not connect to server")


@pytest.mark.parametrize(("transport", "impersonate"), VOICES)
def test_an_untrusted_certificate_is_named_without_the_connectors_key(
    untrusted_tls: ssl.SSLContext, transport: str, impersonate: str | None
) -> None:
    with EmulatorThread(LabsEmulator(ssl_context=untrusted_tls)) as server:
        message = _failure(server.base_url, transport, impersonate)
    assert_said_once(message)
    assert message.endswith(
        "(TLS certificate not trusted: pass ssl_context= with your CA, or verify_ssl=False)"
    )
    address = server.base_url.removeprefix("https://")
    if impersonate is None:
        assert (
            f"Cannot connect to host {address}: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
            in message
        )
    else:
        assert (
            ": curl: (60) SSL certificate OpenSSL verify result: unable to get local issuer certificate (20) (TLS"
            in message
        )


@pytest.mark.parametrize(("transport", "impersonate"), VOICES)
@pytest.mark.parametrize(
    ("fault", "said"),
    [
        pytest.param({"fail": "boom"}, "failed the query (model", id="fail"),
        pytest.param({"failure": FAILED_FRAME}, "Error in processing query", id="failed"),
        pytest.param({"failure": RATE_LIMIT_FRAME}, "error_code FREE_TIER_RATE_LIMITED)", id="rate-limited"),
        pytest.param({"stall_after": 0}, "first_token timeout fired after 1s", id="silent"),
        pytest.param({"drop_after": 1}, "closed the connection mid-answer", id="dropped"),
    ],
)
def test_the_emulators_failures_say_each_thing_once(
    emulator: LabsEmulator, transport: str, impersonate: str | None, fault: dict[str, object], said: str
) -> None:
    emulator.script(**fault)
    message = _failure(emulator.base_url, transport, impersonate)
    assert_said_once(message)
    assert message.count(said) == 1, message
    assert message.count("FREE_TIER_RATE_LIMITED") <= 1


def test_a_stream_curl_broke_off_is_quoted_in_curls_words(emulator: LabsEmulator) -> None:
    emulator.script(drop_after=1)
    message = _failure(emulator.base_url, "web", "chrome")
    assert message == (
        "Perplexity's web app closed the connection mid-answer (the event stream broke off "
        "(IncompleteRead: curl: (18) transfer closed with outstanding read data remaining))"
    )


def test_the_doctor_quotes_a_refused_labs_connect_without_the_connectors_key(refused_url: str) -> None:
    result = run_cli("doctor", "--transport", "labs", "--base-url", refused_url, "--timeout", "5")
    assert result.returncode == 1
    address = refused_url.removeprefix("http://")
    host, port = address.split(":")
    evidence = (
        f"Evidence: Could not connect to {refused_url} over websocket: Cannot connect to host {address}: "
        f"connection refused (Connect call failed ('{host}', {port}))"
    )
    assert evidence in result.stdout.splitlines()


def test_a_bad_PPLX_LABS_BASE_URL_is_named_once_by_the_cli() -> None:
    result = run_cli("ask", QUESTION, env={"PPLX_LABS_BASE_URL": "foo"})
    assert result.returncode == 1
    assert (
        result.stderr == f"pplx-labs: error: Invalid base_url 'foo': {EXPECTED_ROOT}\n"
    )  # not "base_url: Invalid base_url"


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
