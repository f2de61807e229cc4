"""The doctor's walk over Labs: one question through the Labs connection's own code, each step timed and judged."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

import aiohttp

from langchain_pplx_labs._plural import counted
from langchain_pplx_labs.doctor.walk import (
    STEPS,
    Failed,
    StepWalk,
    advice_for,
    event_summary,
    evidence_of,
    short,
    web_walk_command,
)
from langchain_pplx_labs.errors import (
    INSTEAD,
    RETIREMENT_EVIDENCE,
    PerplexityLabsConnectionError,
    PerplexityLabsError,
    PerplexityLabsRetiredError,
    PerplexityLabsSilentError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.events import Finished, TextDelta
from langchain_pplx_labs.labs.connection import LabsConnection, diagnose_refusal
from langchain_pplx_labs.labs.dial import LabsDialer
from langchain_pplx_labs.labs.wire import Wire
from langchain_pplx_labs.protocol import build_payload
from langchain_pplx_labs.settings import ConnectionSettings


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
            connect_timeout=self.settings.timeouts.connect,
            proxy=self.proxy,
            ssl_option=self.ssl_option,
            traces=[self._clock()],
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
        payload = build_payload(self.model, self.conversation(), protocol=protocol)
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
                    self.passed(STEPS[6], f"{counted(count, 'frame')}, {counted(sources, 'source')}")
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
        return self.failed(
            STEPS[6], f"after {counted(count, 'frame')}: {exc}", evidence_of(exc), advice_for(exc)
        )

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

    def on_event(self, event: str, *args: Any) -> None:
        self.events[event] += 1
        if self.settings.protocol.is_progress_event(event):
            self.last_progress = event
            self.frames += 1
        super().on_event(event, *args)


def _transport_of(wire: Wire | None) -> str:
    sio = getattr(wire, "_sio", None)
    return str(getattr(getattr(sio, "eio", None), "current_transport", "") or "")


def _keys(auth: dict[str, Any]) -> str:
    return "{" + ", ".join(repr(key) for key in auth) + "}" if auth else "{}"


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
