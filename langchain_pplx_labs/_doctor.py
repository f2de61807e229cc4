"""The doctor's walk: one question through the client's own connection code, each step timed and judged."""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyError

from langchain_pplx_labs.errors import (
    INSTEAD,
    RETIREMENT_EVIDENCE,
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsRetiredError,
    PerplexityLabsServerError,
    PerplexityLabsSilentError,
    PerplexityLabsTimeoutError,
    caused_by,
)
from langchain_pplx_labs.events import Finished, TextDelta
from langchain_pplx_labs.labs.connection import LabsConnection, diagnose_refusal
from langchain_pplx_labs.labs.dial import LabsDialer
from langchain_pplx_labs.labs.wire import Wire
from langchain_pplx_labs.protocol import DEFAULT_BASE_URL, LabsProtocol, build_payload
from langchain_pplx_labs.settings import ConnectionSettings, Service, Timeouts, browser_headers

QUESTION = "What is the capital of France?"
STEPS = (
    "connect (TCP, TLS)",
    "Engine.IO open",
    "Socket.IO connect with auth",
    "WebSocket",
    "question sent",
    "first frame",
    "final frame with sources",
)


@dataclass
class Step:
    """One step's outcome: ``detail`` says what was seen."""

    name: str
    ok: bool
    ms: float
    detail: str = ""


@dataclass
class Report:
    """Every step walked; on a failure, what was seen and what to change.

    ``verdict`` says what the failure means for the service as a whole, when it says anything
    (a retired Labs); it is empty otherwise.
    """

    base_url: str
    steps: list[Step] = field(default_factory=list)
    evidence: str = ""
    advice: str = ""
    answer: str = ""
    verdict: str = ""
    transport: Service = "labs"
    planned: tuple[str, ...] = STEPS
    """The walk's steps in order (the Labs playground's, or the web app's)."""

    @property
    def ok(self) -> bool:
        return len(self.steps) == len(self.planned) and all(step.ok for step in self.steps)

    def as_json(self) -> dict[str, Any]:
        steps = [asdict(step) for step in self.steps]
        data: dict[str, Any] = {"ok": self.ok, "transport": self.transport, "steps": steps}
        if not self.ok:
            data.update(evidence=self.evidence, advice=self.advice)
        if self.verdict:
            data["verdict"] = self.verdict
        return data


class Failed(Exception):
    """A step failed: the report has its evidence and advice."""


def walk_settings(base_url: str, protocol: LabsProtocol, timeout: float) -> ConnectionSettings:
    """The settings a walk connects with: the model's headers, ``$PPLX_LABS_COOKIES``, every timeout ``timeout``."""
    headers = browser_headers(protocol)
    cookies = os.environ.get("PPLX_LABS_COOKIES")
    if cookies:
        headers["Cookie"] = cookies
    timeouts = Timeouts(connect=timeout, handshake=timeout, first_token=timeout, idle=timeout, total=None)
    return ConnectionSettings(base_url, tuple(headers.items()), timeouts, protocol)


class StepWalk:
    """What both walks do alike: time each step from the end of the one before, and judge the connect."""

    transport: ClassVar[Service]
    planned: ClassVar[tuple[str, ...]]

    def __init__(
        self, report: Report, settings: ConnectionSettings, model: str, question: str, proxy: str | None
    ) -> None:
        self.report = report
        self.settings = settings
        self.model = model
        self.question = question
        self.proxy = proxy
        self.mark = time.monotonic()
        self.tcp_at: float | None = None

    @classmethod
    async def diagnose(
        cls,
        base_url: str,
        model: str,
        protocol: LabsProtocol,
        step_seconds: float,
        question: str = QUESTION,
        *,
        proxy: str | None = None,
    ) -> Report:
        """Ask ``question`` through this walk's transport (and ``proxy``), timing and judging each step."""
        report = Report(base_url, transport=cls.transport, planned=cls.planned)
        settings = walk_settings(base_url, protocol, step_seconds)
        with contextlib.suppress(Failed):
            await cls(report, settings, model, question, proxy).run()
        return report

    async def run(self) -> None:
        """Walk every step; a failing one raises ``Failed`` once it is in the report."""
        raise NotImplementedError

    def passed(self, name: str, detail: str = "", *, until: float | None = None) -> None:
        now = time.monotonic() if until is None else until
        self.report.steps.append(Step(name, True, round((now - self.mark) * 1000, 1), detail))
        self.mark = now

    def failed(self, name: str, detail: str, evidence: str, advice: str) -> Failed:
        now = time.monotonic()
        self.report.steps.append(Step(name, False, round((now - self.mark) * 1000, 1), detail))
        self.report.evidence, self.report.advice = evidence, advice
        return Failed(name)

    def connect_failed(self, exc: BaseException) -> Failed:
        if self.proxy and caused_by(exc, (ProxyConnectionError, ProxyError)):
            where = _proxy_address(self.proxy)
            if caused_by(exc, ProxyConnectionError):
                detail = f"the proxy {where} refused the connection"
                advice = (
                    f"nothing accepts connections at the proxy {where}: start the proxy, or check --proxy"
                )
            else:
                detail = f"the proxy {where} could not reach {self.settings.base_url}"
                advice = (
                    "the proxy answered but opened no tunnel: check its credentials and rules, --base-url"
                )
            how = " (scheme, host and port; proxy=... in ChatPerplexityLabs)"
            return self.failed(STEPS[0], detail, short(exc), advice + how)
        return self.failed(STEPS[0], short(exc), evidence_of(exc), advice_for(exc, step=STEPS[0]))

    def connect_detail(self) -> str:
        scheme = "TCP + TLS" if self.settings.base_url.startswith("https") else "TCP"
        return f"{scheme} through the proxy {_proxy_address(self.proxy)}" if self.proxy else scheme


class _Walk(StepWalk):
    """One walk through the steps, on a session traced like the pool's."""

    transport = "labs"
    planned = STEPS

    def failed_by(self, name: str, exc: PerplexityLabsError, detail: str = "") -> Failed:
        """``name`` failed with ``exc``: its evidence, advice and, for a retired Labs, the verdict."""
        self.report.verdict = _verdict(exc)
        advice = advice_for(exc, base_url=self.settings.base_url)
        return self.failed(name, detail or str(exc), evidence_of(exc), advice)

    async def run(self) -> None:
        self.responses: list[tuple[float, str, int]] = []  # each HTTP answer: when, its URL, its status
        # A dialer as the pool's (``proxy``, the connect budget), also timing the connect and each answer.
        dialer = LabsDialer(
            connect_timeout=self.settings.timeouts.connect, proxy=self.proxy, traces=[self._clock()]
        )
        async with contextlib.aclosing(dialer) as session:
            connection = await self._open(session)
            try:
                await self._ask(connection)
            finally:
                await connection.close(graceful=False)

    def _clock(self) -> aiohttp.TraceConfig:
        async def connected(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
            if self.tcp_at is None:
                self.tcp_at = time.monotonic()

        async def answered(
            session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
        ) -> None:
            self.responses.append((time.monotonic(), str(params.url), params.response.status))

        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(connected)
        trace.on_request_end.append(answered)
        return trace

    async def _open(self, session: LabsDialer) -> _Observed:
        direct = _Observed(self.settings, session)
        try:
            await direct.open("websocket", pipelined=True)
        except PerplexityLabsRetiredError as exc:
            # A redirect to the main site: polling would be sent there too.
            self.passed(STEPS[0], self.connect_detail(), until=self.tcp_at)
            raise self.failed_by(STEPS[1], exc, _retired_detail(exc)) from None
        except (PerplexityLabsConnectionError, PerplexityLabsTimeoutError) as exc:
            if self.tcp_at is None:
                raise self.connect_failed(exc) from None
            return await self._open_polling(session, exc)
        self.passed(STEPS[0], self.connect_detail(), until=self.tcp_at)
        self.passed(STEPS[1], "over a direct WebSocket")
        try:
            await self._connected(direct)
        except BaseException:
            await direct.close(graceful=False)
            raise
        self.passed(STEPS[3], "direct", until=self.mark)
        return direct

    async def _open_polling(self, session: LabsDialer, refused: BaseException) -> _Observed:
        self.passed(STEPS[0], self.connect_detail(), until=self.tcp_at)
        polling = _Observed(self.settings, session)
        try:
            await polling.open("polling")
        except PerplexityLabsTimeoutError as exc:
            raise self.failed(STEPS[1], str(exc), evidence_of(exc), advice_for(exc)) from None
        except PerplexityLabsRetiredError as exc:
            raise self.failed_by(STEPS[1], exc, _retired_detail(exc)) from None
        except PerplexityLabsConnectionError as exc:
            opened = self._first_polling_answer()
            if opened is not None and polling.server_refused:
                # The Engine.IO session opened; the server refused our Socket.IO CONNECT.
                self.passed(STEPS[1], "over polling", until=opened)
                raise self._refused(polling.refused or "refused") from None
            error = await diagnose_refusal(self.settings, session, exc.__cause__ or exc)
            detail = _retired_detail(error) if isinstance(error, PerplexityLabsRetiredError) else ""
            raise self.failed_by(STEPS[1], error, detail) from None
        self.passed(STEPS[1], "over polling", until=self._first_polling_answer())
        self.passed(STEPS[2], f"auth {_keys(self.settings.protocol.auth)} accepted")
        upgraded = _transport_of(polling.wire) == "websocket"
        how = "polling, then upgraded to a WebSocket" if upgraded else "polling only (no WebSocket upgrade)"
        self.passed(STEPS[3], f"direct WebSocket refused ({short(refused)}); {how}", until=self.mark)
        return polling

    async def _connected(self, connection: _Observed) -> None:
        try:
            await connection.wait_ready()
        except PerplexityLabsTimeoutError as exc:
            raise self.failed(STEPS[2], str(exc), "no CONNECT acknowledgement", advice_for(exc)) from None
        except PerplexityLabsConnectionError:
            raise self._refused(connection.refused or "refused") from None
        self.passed(STEPS[2], f"auth {_keys(self.settings.protocol.auth)} accepted")

    async def _ask(self, connection: _Observed) -> None:
        protocol = self.settings.protocol
        payload = build_payload(self.model, [{"role": "user", "content": self.question}], protocol=protocol)
        events = connection.query(payload)
        try:
            await self._events(connection, events)
        finally:
            await events.aclose()

    async def _events(self, connection: _Observed, events: Any) -> None:
        text: list[str] = []
        first = True
        try:
            async for event in events:
                if first:
                    first = False
                    self._first_frame(connection)
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, Finished):
                    self.report.answer = "".join(text)
                    sources, count = len(event.sources), connection.frames
                    self.passed(STEPS[6], f"{count} frames, {sources} source{'s' * (sources != 1)}")
                    return
        except PerplexityLabsError as exc:
            if first and connection.frames:
                self._first_frame(connection)  # a frame came, and failed the answer (or made no text)
            raise self._answer_failed(connection, connection.frames, exc) from None

    def _first_frame(self, connection: _Observed) -> None:
        self.passed(
            STEPS[4], f"{self.settings.protocol.query_event} ({self.model})", until=connection.sent_at
        )
        self.passed(STEPS[5], connection.last_progress)

    def _answer_failed(self, connection: _Observed, count: int, exc: PerplexityLabsError) -> Failed:
        if connection.sent_at is None:
            return self.failed(STEPS[4], str(exc), evidence_of(exc), advice_for(exc))
        if count == 0:
            self.passed(
                STEPS[4], f"{self.settings.protocol.query_event} ({self.model})", until=connection.sent_at
            )
            arrived = event_summary(connection.events)
            evidence = f"{evidence_of(exc)}; events that arrived: {arrived or 'none'}"
            self.report.verdict = _verdict(exc)
            return self.failed(
                STEPS[5], str(exc), evidence, _first_frame_advice(exc, connection.events, self)
            )
        return self.failed(STEPS[6], f"after {count} frames: {exc}", evidence_of(exc), advice_for(exc))

    def _refused(self, reason: str) -> Failed:
        auth = _keys(self.settings.protocol.auth)
        return self.failed(
            STEPS[2],
            f"CONNECT with auth {auth} refused",
            f"the server's refusal: {reason}",
            "the server wants other CONNECT auth: set LabsProtocol(auth=...) (--protocol FILE.json)",
        )

    def _first_polling_answer(self) -> float | None:
        """When the polling handshake's first GET was answered (the Engine.IO OPEN), if it was."""
        for at, url, status in self.responses:
            if "transport=polling" in url and "sid=" not in url and status == 200:
                return at
        return None


diagnose = _Walk.diagnose
"""Ask a question through the client's own connection code (and a proxy), timing and judging each step."""


class _Observed(LabsConnection):
    """A LabsConnection that also notes when the question left and every event name that arrived."""

    def __init__(self, settings: ConnectionSettings, session: LabsDialer) -> None:
        super().__init__(settings, session)
        self.sent_at: float | None = None
        self.events: Counter[str] = Counter()
        self.last_progress = ""
        self.frames = 0
        """Progress frames that arrived for the question."""
        self.server_refused = False

    def on_connect_error(self, data: Any = None) -> None:
        # The server's own CONNECT_ERROR carries an object; engine.io's failures arrive as text.
        self.server_refused = isinstance(data, dict)
        super().on_connect_error(data)

    @property
    def refused(self) -> str | None:
        return self._refused

    @property
    def wire(self) -> Wire | None:
        return self._wire

    async def _emit(self, wire: Wire, payload: Any) -> None:
        await super()._emit(wire, payload)
        self.sent_at = time.monotonic()

    def on_event(self, event: str, *args: Any) -> None:
        self.events[event] += 1
        if self.settings.protocol.is_progress_event(event):
            self.last_progress = event
            self.frames += 1
        super().on_event(event, *args)


def _proxy_address(proxy: str) -> str:
    """``scheme://host:port`` of a proxy URL, without its credentials (a report gets pasted into bugs)."""
    parts = urlsplit(proxy)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"


def _transport_of(wire: Wire | None) -> str:
    sio = getattr(wire, "_sio", None)
    return str(getattr(getattr(sio, "eio", None), "current_transport", "") or "")


def _keys(auth: dict[str, Any]) -> str:
    return "{" + ", ".join(repr(key) for key in auth) + "}" if auth else "{}"


def short(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def event_summary(events: Counter[str]) -> str:
    return ", ".join(f"{name} ×{count}" for name, count in events.most_common(5))


def _verdict(exc: BaseException) -> str:
    """What ``exc`` says about Labs as a whole: retired (or, for silence, maybe retired), else nothing."""
    if isinstance(exc, PerplexityLabsSilentError):
        return (
            f"Labs may be retired: a retired Labs takes the question and says nothing. {RETIREMENT_EVIDENCE}"
        )
    if isinstance(exc, PerplexityLabsRetiredError):
        return f"Labs is retired. {RETIREMENT_EVIDENCE}"
    return ""


def _retired_detail(exc: PerplexityLabsRetiredError) -> str:
    """The failed step's own line: what the endpoint did instead of Engine.IO."""
    if exc.status is not None and 300 <= exc.status < 400:
        return f"HTTP {exc.status} redirect to {exc.excerpt}"
    return f"HTTP {exc.status}: Perplexity's main site, not Engine.IO"


def evidence_of(exc: BaseException) -> str:
    if isinstance(exc, PerplexityLabsSilentError):
        return short(exc)  # the timeout's own text: the verdict says what the silence means
    if isinstance(exc, PerplexityLabsRetiredError):
        return exc.evidence
    if isinstance(exc, PerplexityLabsRateLimitError):
        code = f" ({exc.error_code})" if exc.error_code else ""
        # The web codec's text is the code itself when the server gave none: said once.
        said = f": {exc.server_message!r}" if exc.server_message not in ("", exc.error_code) else ""
        return f"the server refused the question for a rate limit{code}{said}"
    if isinstance(exc, PerplexityLabsNotFoundError):
        return f"HTTP {exc.status} at {exc.url}: {exc.excerpt!r}"
    if isinstance(exc, PerplexityLabsBlockedError):
        return f"HTTP {exc.status}: {exc.excerpt!r}"
    if isinstance(exc, PerplexityLabsServerError):
        return f"the server answered status failed: {exc.server_message!r}"
    if isinstance(exc, PerplexityLabsProtocolError):
        return f"a frame we cannot read: {exc.excerpt!r}"
    return short(exc)


def web_walk_command(base_url: str) -> str:
    """The command that walks the web app where a retired Labs was asked (its ``--base-url`` when not the default)."""
    where = "" if base_url.rstrip("/") == DEFAULT_BASE_URL else f" --base-url {base_url}"
    return f"pplx-labs doctor --transport web{where}"


def advice_for(exc: BaseException, *, step: str = "", base_url: str = DEFAULT_BASE_URL) -> str:
    if isinstance(exc, PerplexityLabsRetiredError) and not isinstance(exc, PerplexityLabsSilentError):
        return (
            f"Labs' Socket.IO endpoint is gone: try: {web_walk_command(base_url)}; in code, {INSTEAD} "
            "(docs/retirement.md)"
        )
    if isinstance(exc, PerplexityLabsRateLimitError):
        return "a rate limit: wait before asking again; do not loop (retries only prolong it)"
    if isinstance(exc, PerplexityLabsBlockedError):
        return (
            "a Cloudflare page: Labs refuses this client from here. Send browser cookies "
            "($PPLX_LABS_COOKIES / cookies=...), use a proxy (proxy=...), or try another network"
        )
    if isinstance(exc, PerplexityLabsNotFoundError):
        return (
            "no Labs endpoint at that URL: check --base-url (base_url); if Labs moved its Socket.IO "
            "endpoint, set LabsProtocol(socketio_path=...) (--protocol FILE.json)"
        )
    if isinstance(exc, PerplexityLabsTimeoutError) and exc.which in ("connect", "handshake"):
        return f"the server did not answer the {exc.which} in time: check the host, a proxy or firewall; raise --timeout"
    if isinstance(exc, PerplexityLabsServerError):
        return (
            "Labs itself failed the question: try another --model or later; if its text names the "
            "payload, set LabsProtocol(payload_version=...)"
        )
    if isinstance(exc, PerplexityLabsDisconnectedError):
        return "the server closed the socket mid-answer: ask again; if it repeats, record a cassette (--record) for a report"
    if isinstance(exc, PerplexityLabsProtocolError):
        return (
            "Labs changed its frame format: record a cassette (--record FILE) and attach it to a bug report"
        )
    if step == STEPS[0] and "certificate" in short(exc).lower():
        return (
            "the server's TLS certificate is not trusted: fix the clock or CA bundle, or pass "
            "ssl_context= with your CA to ChatPerplexityLabs (an intercepting proxy needs its CA)"
        )
    if step == STEPS[0]:
        return "nothing answers at that host and port: check --base-url, the network or a proxy"
    return "record a cassette (--record FILE) and attach it to a bug report"


def _first_frame_advice(exc: PerplexityLabsError, events: Counter[str], walk: _Walk) -> str:
    protocol = walk.settings.protocol
    if events:
        name = events.most_common(1)[0][0]
        guess = name.replace(walk.model, "{model}") if walk.model in name else name
        return (
            f"the answer arrives on an event LabsProtocol does not expect (progress_event "
            f"{protocol.progress_event!r}): set LabsProtocol(progress_event={guess!r})"
        )
    if isinstance(exc, PerplexityLabsTimeoutError):
        retired = ""
        if isinstance(exc, PerplexityLabsSilentError):
            command = web_walk_command(walk.settings.base_url)
            retired = f"; or, Labs being retired, try: {command}; in code, {INSTEAD}"
        return (
            f"a silent server: raise the first-token timeout (--timeout, first_token_timeout=...); if it "
            f"stays silent, Labs may have renamed the question event: LabsProtocol(query_event=...), now "
            f"{protocol.query_event!r}{retired}"
        )
    return advice_for(exc)
