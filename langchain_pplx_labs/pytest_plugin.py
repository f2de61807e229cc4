"""pytest plugin: Labs (Socket.IO) and web (SSE) cassettes under pytest-recording's conventions (marker, record mode, fixture)."""

from __future__ import annotations

import datetime
import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import pytest

# pytest imports this module (entry point pytest11) in every run of every project where the package is
# installed: only pytest and the standard library load here, the rest inside the fixtures that use it.
if TYPE_CHECKING:
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs
    from langchain_pplx_labs.emulator import EmulatorThread, Responder
    from langchain_pplx_labs.protocol import LabsProtocol
    from langchain_pplx_labs.recording.cassette import Cassette
    from langchain_pplx_labs.recording.replay import CassetteResponder, RecordingResponder

try:  # async fixtures need pytest-asyncio's decorator in its strict mode
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover - the async fixture then works only where another plugin runs it
    _async_fixture = pytest.fixture  # type: ignore[assignment]

LOOPBACK_HOSTS = r"127\.0\.0\.1$,localhost$,::1$"
RECORD_MODES = ("none", "once", "new_episodes", "all", "rewrite")
_MODE_ALIASES = {"rewrite": "all"}
"""pytest-recording's ``rewrite`` re-records everything, which for Labs cassettes is ``all``."""
_UPSTREAM_ONLY = ("proxy",)
"""Model options for reaching the live site; the local replay server must be reached directly."""
DEFAULT_MODEL_KWARGS: dict[str, Any] = {
    "max_retries": 0,
    "timeout": 60,
    "first_token_timeout": 10,
    "idle_timeout": 10,
}


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    group = parser.getgroup("pplx-labs", "Perplexity Labs cassettes")
    if not _pytest_recording_active(pluginmanager):
        # Without pytest-recording nobody else defines --record-mode; registering it while
        # pytest-recording is loaded would clash with its own definition.
        group.addoption(
            "--record-mode",
            choices=RECORD_MODES,
            default=None,
            help="Labs cassette record mode (default none); pytest-recording provides this when installed",
        )
    group.addoption(
        "--pplx-labs-record-url",
        default=None,
        help="server to record Labs cassettes from (default: an in-process emulator)",
    )
    group.addoption(
        "--pplx-labs-provenance",
        choices=("synthetic", "live"),
        default=None,
        help="provenance written into recorded cassettes (default: synthetic for the emulator, live for a URL)",
    )
    parser.addini(
        "pplx_labs_cassette_dir", "folder of Labs cassettes, relative to rootdir", default="cassettes"
    )


def _pytest_recording_active(pluginmanager: pytest.PytestPluginManager) -> bool:
    installed = importlib.util.find_spec("pytest_recording") is not None
    return installed and not pluginmanager.is_blocked("recording")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--block-network", default=False) and not config.getoption(
        "--allowed-hosts", default=None
    ):
        # pytest-recording blocks every host, loopback included; replay servers are loopback
        # only, so keep remote hosts blocked and let the local replay through.
        config.option.allowed_hosts = LOOPBACK_HOSTS
    config.addinivalue_line(
        "markers",
        "pplx_labs(cassette=None, speed=0.0, **model_kwargs): Labs cassette name and ChatPerplexityLabs options",
    )


class _Emulators:
    """Emulator threads started on first use, one per ``LabsProtocol`` (a test's model may speak another)."""

    def __init__(self) -> None:
        self._threads: dict[LabsProtocol, EmulatorThread] = {}

    def get(self, protocol: LabsProtocol) -> EmulatorThread:
        from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator

        if protocol not in self._threads:
            thread = EmulatorThread(LabsEmulator(protocol=protocol))
            thread.start()
            self._threads[protocol] = thread
        return self._threads[protocol]

    def stop(self) -> None:
        for thread in self._threads.values():
            thread.stop()


@pytest.fixture(scope="session")
def _pplx_labs_replay_emulators() -> Iterator[_Emulators]:
    emulators = _Emulators()
    yield emulators
    emulators.stop()


@pytest.fixture(scope="session")
def pplx_labs_server(_pplx_labs_replay_emulators: _Emulators) -> EmulatorThread:
    """The emulator that replays (or proxies while recording) Labs cassettes on localhost."""
    from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL

    return _pplx_labs_replay_emulators.get(DEFAULT_PROTOCOL)


@pytest.fixture
def _pplx_labs_protocol(
    request: pytest.FixtureRequest, pplx_labs_model_kwargs: dict[str, Any]
) -> LabsProtocol:
    """The ``LabsProtocol`` of this test's model (marker or ``pplx_labs_model_kwargs``), else the default."""
    from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol

    protocol = _model_kwargs(request, pplx_labs_model_kwargs).get("protocol")
    return DEFAULT_PROTOCOL if protocol is None else LabsProtocol.model_validate(protocol)


@pytest.fixture
def _pplx_labs_replay_server(
    pplx_labs_server: EmulatorThread,
    _pplx_labs_replay_emulators: _Emulators,
    _pplx_labs_protocol: LabsProtocol,
) -> EmulatorThread:
    """``pplx_labs_server`` when it speaks the model's protocol, else an emulator that does."""
    if pplx_labs_server.emulator.protocol == _pplx_labs_protocol:
        return pplx_labs_server
    return _pplx_labs_replay_emulators.get(_pplx_labs_protocol)


@pytest.fixture(scope="session")
def _pplx_labs_record_emulators() -> Iterator[_Emulators]:
    emulators = _Emulators()
    yield emulators
    emulators.stop()


@pytest.fixture
def pplx_labs_upstream(request: pytest.FixtureRequest) -> str:
    """Base URL cassettes are recorded from; override it to record from a scripted emulator."""
    url = request.config.getoption("--pplx-labs-record-url")
    if url:
        return str(url)
    emulators = cast(_Emulators, request.getfixturevalue("_pplx_labs_record_emulators"))
    protocol = cast("LabsProtocol", request.getfixturevalue("_pplx_labs_protocol"))
    return emulators.get(protocol).base_url


@pytest.fixture
def pplx_labs_record_mode(request: pytest.FixtureRequest) -> str:
    """``--record-mode`` if given, else the ``vcr`` marker's ``record_mode``, else ``none``."""
    mode = request.config.getoption("--record-mode", default=None)
    if mode is None:
        for marker in request.node.iter_markers(name="vcr"):
            mode = marker.kwargs.get("record_mode", mode)
    mode = str(mode or "none")
    if mode not in RECORD_MODES:
        raise pytest.UsageError(f"unknown record mode {mode!r}; use one of {', '.join(RECORD_MODES)}")
    return _MODE_ALIASES.get(mode, mode)


@pytest.fixture
def pplx_labs_cassette_path(request: pytest.FixtureRequest) -> Path:
    """``<rootdir>/cassettes/<test module>/<test name>.labs.yaml``, or the ``pplx_labs(cassette=...)`` name there."""
    from langchain_pplx_labs.recording.cassette import CASSETTE_SUFFIX

    marker = request.node.get_closest_marker("pplx_labs")
    name = marker.kwargs.get("cassette") if marker is not None else None
    if not name:
        try:  # pytest-recording's name, so users' overrides of it apply here too
            name = cast(str, request.getfixturevalue("default_cassette_name"))
        except pytest.FixtureLookupError:
            name = request.node.name
    if not str(name).endswith((".yaml", ".yml")):
        name = f"{name}{CASSETTE_SUFFIX}"
    root = Path(request.config.rootpath) / str(request.config.getini("pplx_labs_cassette_dir"))
    module = Path(request.node.path).stem
    return root / module / str(name)


@pytest.fixture
def pplx_labs_model_kwargs() -> dict[str, Any]:
    """Extra ``ChatPerplexityLabs`` fields for the cassette model; override to change timeouts etc."""
    return {}


@pytest.fixture
def pplx_labs_replayer(
    request: pytest.FixtureRequest,
    _pplx_labs_replay_server: EmulatorThread,
    pplx_labs_cassette_path: Path,
    pplx_labs_record_mode: str,
    pplx_labs_model_kwargs: dict[str, Any],
) -> Iterator[CassetteResponder | RecordingResponder]:
    """Arms the server for this test: replay the cassette, or record it, per the record mode."""
    from langchain_pplx_labs.emulator import default_responder
    from langchain_pplx_labs.recording.cassette import load_cassette
    from langchain_pplx_labs.recording.replay import (
        CassetteNotFoundError,
        CassetteResponder,
        RecordingResponder,
    )

    path, mode = pplx_labs_cassette_path, pplx_labs_record_mode
    marker = request.node.get_closest_marker("pplx_labs")
    speed = float(marker.kwargs.get("speed", 0.0)) if marker is not None else 0.0
    existing = load_cassette(path) if path.exists() and mode != "all" else None
    if existing is None and mode == "none":
        # The message names the file and the fix; a plugin traceback would only hide it.
        pytest.fail(str(CassetteNotFoundError(path, mode)), pytrace=False)
    replay = CassetteResponder({str(path): existing}, speed=speed) if existing is not None else None
    responder: CassetteResponder | RecordingResponder
    if replay is not None and mode in ("none", "once"):
        responder = replay
    else:
        responder = _recorder(request, replay, _model_kwargs(request, pplx_labs_model_kwargs))
    _arm(
        _pplx_labs_replay_server,
        cast("Responder", responder),
        blocked=replay is not None and replay.refuses_connections,
    )
    urls = [_pplx_labs_replay_server.base_url]
    if isinstance(responder, RecordingResponder):
        urls.append(responder.upstream)
    _let_vcr_pass(request, urls)
    try:
        yield responder
    finally:
        _arm(_pplx_labs_replay_server, default_responder, blocked=False)
    if isinstance(responder, RecordingResponder):
        _finish_recording(request, path, existing, responder)
    problem = _cassette_problem(responder, path)
    if problem and not getattr(request.node, _REPORTED, False):
        # Only when the test's own report could not carry it (a setup that failed first, say).
        pytest.fail(problem, pytrace=False)


_REPORTED = "_pplx_labs_problem_reported"
"""Set on a test item once its call report carries the cassette problem, so teardown does not repeat it."""


def _cassette_problem(responder: CassetteResponder | RecordingResponder, path: Path | None) -> str | None:
    """What went wrong with the cassette during the test: a mismatch, or an upstream that could not be reached."""
    from langchain_pplx_labs.recording.replay import CassetteResponder, RecordingResponder

    if isinstance(responder, CassetteResponder) and responder.mismatches:
        return str(responder.mismatches[0])
    if isinstance(responder, RecordingResponder) and responder.unreachable:
        reason = responder.unreachable[0].reason
        where = f" to {path}" if path is not None else ""
        return f"The upstream {responder.upstream} could not be reached ({reason}); no cassette was written{where}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Report a cassette problem once, as the test's failure, not as a failure plus a teardown error.

    The client already failed with the server's text (the diff), or the test caught that
    error and passed: either way the call report is where the problem belongs.
    """
    outcome = yield
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})  # only function items have fixtures
    responder = funcargs.get("pplx_labs_replayer")
    if call.when != "call" or responder is None:
        return
    problem = _cassette_problem(responder, funcargs.get("pplx_labs_cassette_path"))
    if problem is None:
        return
    report = cast(pytest.TestReport, outcome.get_result())  # type: ignore[attr-defined]
    if report.passed:
        report.outcome = "failed"
        report.longrepr = problem
    elif problem.splitlines()[0] not in str(report.longrepr):  # the client's error may already show it
        report.sections.append(("pplx-labs cassette", problem))
    setattr(item, _REPORTED, True)


def _recorder(
    request: pytest.FixtureRequest, replay: CassetteResponder | None, model_kwargs: dict[str, Any]
) -> RecordingResponder:
    """Records from the upstream with the user's cookies, headers and proxy, as their model would send."""
    from pydantic import SecretStr

    from langchain_pplx_labs.recording.recorder import upstream_headers
    from langchain_pplx_labs.recording.redact import Redactor
    from langchain_pplx_labs.recording.replay import RecordingResponder

    cookies = model_kwargs.get("cookies")
    secret = cookies.get_secret_value() if isinstance(cookies, SecretStr) else cookies
    extra: dict[str, str] = model_kwargs.get("default_headers") or {}
    return RecordingResponder(
        cast(str, request.getfixturevalue("pplx_labs_upstream")),
        replay=replay,
        # The user's own headers are usually credentials: none is saved in clear.
        redactor=Redactor(extra_headers=tuple(extra)),
        headers=upstream_headers(
            extra, secret, cast("LabsProtocol", request.getfixturevalue("_pplx_labs_protocol"))
        ),
        proxy=model_kwargs.get("proxy"),
    )


def _finish_recording(
    request: pytest.FixtureRequest, path: Path, existing: Cassette | None, recorder: RecordingResponder
) -> None:
    if recorder.unreachable:
        return  # saving a partial or empty recording would make ``once`` replay it forever
    if recorder.recorded:
        _save_recording(request, path, existing, recorder)


def _let_vcr_pass(request: pytest.FixtureRequest, urls: list[str]) -> None:
    """Let our Socket.IO traffic bypass an active vcrpy cassette, which would refuse it in mode ``none``.

    vcrpy patches aiohttp for the whole process; its ``before_record_request``
    returning ``None`` is its own documented way to let a request through.
    """
    try:
        vcr_cassette = request.getfixturevalue("vcr")
    except pytest.FixtureLookupError:
        return
    original = getattr(vcr_cassette, "_before_record_request", None)
    if original is None:
        return
    ours = {(parsed.hostname, parsed.port) for parsed in map(urlsplit, urls)}

    def before_record_request(vcr_request: Any) -> Any:
        if (vcr_request.host, vcr_request.port) in ours:
            return None
        return original(vcr_request)

    vcr_cassette._before_record_request = before_record_request


def _arm(server: EmulatorThread, responder: Responder, *, blocked: bool) -> None:
    emulator = server.emulator

    def apply() -> None:
        emulator.responder = responder
        emulator.blocked = blocked

    server.call(apply)


def _save_recording(
    request: pytest.FixtureRequest, path: Path, existing: Cassette | None, recorder: RecordingResponder
) -> None:
    from langchain_pplx_labs._version import __version__
    from langchain_pplx_labs.recording.cassette import Cassette, save_cassette

    url = request.config.getoption("--pplx-labs-record-url")
    provenance = request.config.getoption("--pplx-labs-provenance") or ("live" if url else "synthetic")
    interactions = [*(existing.interactions if existing else []), *recorder.recorded]
    transport = recorder.transport or (existing.transport if existing else "labs")
    model = existing.model if existing else _recorded_model(interactions[0].request, transport)
    cassette = Cassette(
        transport=transport,
        provenance=provenance,
        recorded_at=datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        model=model,
        client_version=__version__,
        server=str(url or "pplx-labs emulator"),
        note=f"recorded by {request.node.nodeid}",
        connection=existing.connection if existing and existing.connection else recorder.connection,
        interactions=interactions,
    )
    save_cassette(cassette, path)


def _recorded_model(request: dict[str, Any], transport: str) -> str:
    """The Labs model name a recorded request asked (a web body names its ``model_preference``)."""
    if transport != "web":
        return str(request.get("model", ""))
    from langchain_pplx_labs.web.codec import labs_model_name

    params = request.get("params")
    preference = params.get("model_preference") if isinstance(params, dict) else None
    return labs_model_name(preference) if isinstance(preference, str) and preference else ""


def _model_kwargs(request: pytest.FixtureRequest, overrides: dict[str, Any]) -> dict[str, Any]:
    from langchain_pplx_labs.recording.cassette import load_cassette

    marker = request.node.get_closest_marker("pplx_labs")
    from_marker = {
        k: v for k, v in (marker.kwargs if marker else {}).items() if k not in ("cassette", "speed")
    }
    path = cast(Path, request.getfixturevalue("pplx_labs_cassette_path"))
    recorded: dict[str, Any] = {}
    if path.exists():
        # The cassette's model and transport, so it replays whatever $PPLX_LABS_TRANSPORT says.
        cassette = load_cassette(path)
        recorded = {"model": cassette.model, "transport": cassette.transport}
    return {**DEFAULT_MODEL_KWARGS, **recorded, **overrides, **from_marker}


def _local_model(
    request: pytest.FixtureRequest, server: EmulatorThread, overrides: dict[str, Any]
) -> ChatPerplexityLabs:
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs

    kwargs = {k: v for k, v in _model_kwargs(request, overrides).items() if k not in _UPSTREAM_ONLY}
    return ChatPerplexityLabs(base_url=server.base_url, **kwargs)


@pytest.fixture
def pplx_labs_cassette(
    request: pytest.FixtureRequest,
    _pplx_labs_replay_server: EmulatorThread,
    pplx_labs_replayer: CassetteResponder | RecordingResponder,
    pplx_labs_model_kwargs: dict[str, Any],
) -> Iterator[ChatPerplexityLabs]:
    """A ``ChatPerplexityLabs`` bound to the replay server, answering from this test's cassette (sync use)."""
    chat = _local_model(request, _pplx_labs_replay_server, pplx_labs_model_kwargs)
    yield chat
    chat.close()


@_async_fixture
async def applx_labs_cassette(
    request: pytest.FixtureRequest,
    _pplx_labs_replay_server: EmulatorThread,
    pplx_labs_replayer: CassetteResponder | RecordingResponder,
    pplx_labs_model_kwargs: dict[str, Any],
) -> AsyncIterator[ChatPerplexityLabs]:
    """Like ``pplx_labs_cassette`` for async tests: closed on the test's own event loop."""
    chat = _local_model(request, _pplx_labs_replay_server, pplx_labs_model_kwargs)
    yield chat
    await chat.aclose()
