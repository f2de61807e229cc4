"""The doctor's walk over the web transport: one question through the web session's own requests, each step judged."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import orjson

from langchain_pplx_labs._plural import counted
from langchain_pplx_labs.doctor.walk import (
    STEPS,
    Failed,
    Report,
    StepWalk,
    advice_for,
    event_summary,
    evidence_of,
    short,
)
from langchain_pplx_labs.errors import (
    PerplexityLabsBlockedError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsServerError,
    PerplexityLabsSessionExpiredError,
    PerplexityLabsTimeoutError,
    excerpt_of,
)
from langchain_pplx_labs.events import Finished, StreamEvent, TextDelta
from langchain_pplx_labs.protocol import LabsProtocol, build_payload
from langchain_pplx_labs.settings import ConnectionSettings
from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.transports.base import HTTPTransport, Request, Response
from langchain_pplx_labs.transports.tap import HTTPTap, TappedTransport
from langchain_pplx_labs.web.account import quota_summary, read_quota
from langchain_pplx_labs.web.codec import WEB_SESSION_COOKIES, web_request_body
from langchain_pplx_labs.web.session import WebSession, is_event_stream
from langchain_pplx_labs.web.sse import SSEMessage

WEB_STEPS = (
    STEPS[0],
    "session check",
    "ask accepted",
    "first SSE message",
    "first answer text",
    "final message with sources",
)
CONNECT, SESSION, ACCEPTED, FIRST_MESSAGE, FIRST_TEXT, FINAL = WEB_STEPS
# The older stream, which the web app sent until 2025-12 (docs/web_transport.md): a fallback to try.
_TEXT_STREAM = (
    "LabsProtocol(web_params={'use_schematized_api': False, 'send_back_text_in_streaming_api': True})"
)
_SIGN_IN = f"send a signed-in browser session's cookies ({WEB_SESSION_COOKIES[0]}) in $PPLX_LABS_COOKIES (cookies=...)"


class _WebWalk(StepWalk, HTTPTap):
    """One walk through the web app's steps (the session check, then one ask read to its end), seen through two
    taps: the HTTP transport's (the first connection, each answer's head) and the session's (each message)."""

    transport = "web"
    planned = WEB_STEPS

    def __init__(
        self, report: Report, settings: ConnectionSettings, model: str, question: str, proxy: str | None
    ) -> None:
        super().__init__(report, settings, model, question, proxy)
        self.answers: dict[str, tuple[float, Response]] = {}
        """The latest HTTP answer at each path (under ``base_url``'s own path, ``root``), and when its head came."""
        self.root = urlsplit(settings.base_url).path.rstrip("/")
        self.signed_in = False
        self.asked = ""
        self.events: Counter[str] = Counter()
        self.first_message: tuple[float, SSEMessage] | None = None
        self.first_text: tuple[float, str] | None = None
        self.text_in_message = 0
        self.quota = ""
        """A signed-in account's remaining quotas, as the session step says them (``""``: none read)."""

    @property
    def protocol(self) -> LabsProtocol:
        return self.settings.protocol

    @property
    def messages(self) -> int:
        return sum(self.events.values())

    def on_request(self, request: Request) -> None:
        if self.tcp_at is None:
            self.tcp_at = time.monotonic()

    def on_response(self, request: Request, response: Response) -> None:
        self.answers[urlsplit(request.url).path.removeprefix(self.root)] = (time.monotonic(), response)

    def on_message(self, message: SSEMessage) -> None:
        """The session's tap: each SSE message as it is read."""
        self.events[message.event] += 1
        if self.first_message is None:
            self.first_message = (time.monotonic(), message)

    def on_events(self, events: list[StreamEvent]) -> None:
        """The session's tap: what the message just read made (the first answer text, say)."""
        if self.first_text is None:
            text = next((e.text for e in events if isinstance(e, TextDelta) and e.text), None)
            if text is not None:
                self.first_text = (time.monotonic(), text)
                self.text_in_message = self.messages

    async def run(self) -> None:
        # Dialling as the pool's transport does, watched by the walk's clocks.
        dialled = http_transport(
            connect_timeout=self.settings.timeouts.connect,
            proxy=self.proxy,
            ssl_option=self.ssl_option,
            impersonate=self.impersonate,
        )
        http = TappedTransport(dialled, self)
        connection = WebSession(self.settings, http, tap=self, impersonate=self.impersonate)
        try:
            await self._open(connection, http)
            await self._ask(connection)
        finally:
            await connection.close(graceful=False)
            await http.aclose()

    async def _open(self, connection: WebSession, http: HTTPTransport) -> None:
        try:
            await connection.open()
        except PerplexityLabsError as exc:
            if self.tcp_at is None:
                raise self.connect_failed(exc) from None
            self.passed(CONNECT, self.connect_detail(), until=self.tcp_at)
            raise self._judged(SESSION, exc) from None
        self.passed(CONNECT, self.connect_detail(), until=self.tcp_at)
        self.signed_in = connection.signed_in
        if self.signed_in:  # one GET more, counted in the session check's time (the account's own question)
            quota = await read_quota(http, self.settings, within=self.settings.timeouts.connect)
            self.quota = quota_summary(quota) if quota is not None else ""
        self.passed(SESSION, self._session_detail())

    def _session_detail(self) -> str:
        if self.signed_in:
            quota = f"; quota: {self.quota}" if self.quota else ""
            return f"signed in (the session names a user){quota}"
        if any(name.lower() == "cookie" for name, _ in self.settings.headers):
            return "anonymous: the cookies sent ($PPLX_LABS_COOKIES) are not signed in"
        return "anonymous (no cookies sent)"

    async def _ask(self, connection: WebSession) -> None:
        payload = build_payload(self.model, self.conversation(), protocol=self.protocol)
        # The body the session will send, by the codec's own function: what the server was asked for.
        ids = {"frontend_uuid": "", "visitor_id": "", "frontend_context_uuid": ""}
        params = web_request_body(payload, signed_in=self.signed_in, protocol=self.protocol, **ids)["params"]
        self.asked = f"model_preference {params.get('model_preference')!r}, mode {params.get('mode')!r}"
        events = connection.query(payload)
        try:
            await self._read(events)
        except PerplexityLabsError as exc:
            raise self._judged(self._pass_reached(), exc) from None
        finally:
            await events.aclose()

    async def _read(self, events: Any) -> None:
        text: list[str] = []
        async for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, Finished):
                self.report.answer = "".join(text)
                self._finished(len(event.sources))
                return

    def _finished(self, sources: int) -> None:
        pending = self._pass_reached()
        if pending != FINAL:  # the last message came without answer text
            raise self.failed(
                pending,
                "the final message carried no answer text",
                f"{counted(self.messages, 'SSE message')} ({event_summary(self.events)}), no answer text in any",
                f"the web app's stream may have changed: try the older text stream, {_TEXT_STREAM}, "
                "else report a bug with this output (--json)",
            )
        self.passed(FINAL, f"{counted(self.messages, 'message')}, {counted(sources, 'source')}")

    def _pass_reached(self) -> str:
        """Pass every step of the ask whose moment came; the name of the first whose moment did not."""
        answered, seen = self.answers.get(self.protocol.web_path, (None, None))
        accepted = (
            answered if seen is not None and is_event_stream(seen) else None
        )  # as the session judges it
        reached = [(ACCEPTED, accepted, self._accepted_detail)]
        first = self.first_message
        reached.append((FIRST_MESSAGE, first[0] if first else None, self._first_message_detail))
        text = self.first_text
        reached.append((FIRST_TEXT, text[0] if text else None, self._first_text_detail))
        for name, at, detail in reached:
            if at is None:
                return name
            self.passed(name, detail(), until=at)
        return FINAL

    def _accepted_detail(self) -> str:
        seen = self.answers[self.protocol.web_path][1]
        return f"HTTP {seen.status} {_media_type(seen)}; {self.asked}"

    def _first_message_detail(self) -> str:
        assert self.first_message is not None
        message = self.first_message[1]
        try:
            data = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            return f"event {message.event!r}, data not JSON"
        status = data.get("status") if isinstance(data, dict) else None
        return f"event {message.event!r}" + (f", status {status}" if isinstance(status, str) else "")

    def _first_text_detail(self) -> str:
        assert self.first_text is not None
        return f"{excerpt_of(self.first_text[1], 40)!r} (message {self.text_in_message})"

    # -- judging a failure -------------------------------------------------------------------

    def _judged(self, step: str, exc: PerplexityLabsError) -> Failed:
        """``step`` failed with ``exc``: what was seen there, and the web app's own advice."""
        path = self.protocol.web_session_path if step == SESSION else self.protocol.web_path
        seen = self.answers[path][1] if path in self.answers else None
        status = seen.status if seen is not None else None
        detail = self._detail(step, exc, seen)
        if isinstance(exc, PerplexityLabsBlockedError) and exc.challenge:
            self.report.verdict = self._challenge_verdict()
        return self.failed(step, detail, self._evidence(exc), self._advice(step, exc, status))

    def _challenge_verdict(self) -> str:
        if self.impersonate is None:
            return (
                "Cloudflare challenged this client's TLS fingerprint: --impersonate none (plain aiohttp) is "
                "not a browser's; keep impersonate (the default, chrome)"
            )
        return (
            f"Cloudflare challenged this client though it speaks as {self.impersonate} (--impersonate): it "
            "does not admit that fingerprint, or this network; a newer browser target, a browser's cookies "
            "or another network may pass"
        )

    def _detail(self, step: str, exc: PerplexityLabsError, seen: Response | None) -> str:
        if isinstance(exc, PerplexityLabsBlockedError):
            what = "Cloudflare's challenge (cf-mitigated)" if exc.challenge else "from Cloudflare"
            return f"HTTP {exc.status} {what}"
        if isinstance(exc, PerplexityLabsRateLimitError):
            how = f"HTTP {seen.status}, " if seen is not None and seen.status == 429 else ""
            return f"{how}rate limited" + (f" ({exc.error_code})" if exc.error_code else "")
        if isinstance(exc, PerplexityLabsNotFoundError) and exc.status is not None:
            if 300 <= exc.status < 400:
                return f"HTTP {exc.status} redirect to {exc.excerpt or '(nowhere)'}"
            if exc.status == 200 and seen is not None:
                kind = _media_type(seen) or "no content type"
                return (
                    f"HTTP 200 but {kind}, not {'a JSON session' if step == SESSION else 'an event stream'}"
                )
            return f"HTTP {exc.status}"
        if isinstance(exc, PerplexityLabsServerError):
            return f"status failed: {exc.server_message!r}"
        if isinstance(exc, PerplexityLabsTimeoutError | PerplexityLabsDisconnectedError):
            return short(exc)
        if seen is not None and seen.status >= 300:
            return f"HTTP {seen.status}"
        return short(exc)

    def _evidence(self, exc: PerplexityLabsError) -> str:
        if isinstance(exc, PerplexityLabsTimeoutError):
            arrived = f"{self.messages} ({event_summary(self.events)})" if self.events else "none"
            return f"{exc}; SSE messages that arrived: {arrived}"
        if isinstance(exc, PerplexityLabsProtocolError):
            return f"an SSE message we cannot read: {exc.excerpt!r}"
        evidence = evidence_of(exc)
        if isinstance(exc, PerplexityLabsRateLimitError) and not self.signed_in:
            evidence += "; asked anonymously"
        return evidence

    def _advice(self, step: str, exc: PerplexityLabsError, status: int | None) -> str:
        protocol = self.protocol
        if isinstance(exc, PerplexityLabsBlockedError) and exc.challenge and self.impersonate is None:
            return (
                "Cloudflare's fingerprint challenge: drop --impersonate none (impersonate=None in code, "
                "PPLX_LABS_IMPERSONATE=none) so the web transport speaks as Chrome"
            )
        if isinstance(exc, PerplexityLabsBlockedError) and exc.challenge:
            return (
                f"Cloudflare's challenge, though speaking as {self.impersonate}: try --impersonate with a newer "
                "browser (a newer curl_cffi), a browser's cookies (cf_clearance in $PPLX_LABS_COOKIES / "
                "cookies=...), another network, or a proxy (--proxy / proxy=...)"
            )
        if isinstance(exc, PerplexityLabsBlockedError):
            return (
                "a Cloudflare page: the web app refuses this client from here. Send a browser's cookies "
                "($PPLX_LABS_COOKIES / cookies=...), try another network, or a proxy (--proxy / proxy=...)"
            )
        if isinstance(exc, PerplexityLabsRateLimitError):
            sign_in = "" if self.signed_in else f"; anonymous asks are limited first: sign in, {_SIGN_IN}"
            return f"a rate limit: wait before asking again, do not loop (retries only prolong it){sign_in}"
        if isinstance(exc, PerplexityLabsNotFoundError):
            field, path = (
                ("web_session_path", protocol.web_session_path)
                if step == SESSION
                else ("web_path", protocol.web_path)
            )
            redirect = exc.status is not None and 300 <= exc.status < 400
            expected = "no event stream" if step == ACCEPTED else "no JSON session"
            moved = "a redirect" if redirect else expected if exc.status == 200 else f"HTTP {exc.status}"
            sign_in = " (and cookies, if it leads to a sign-in page)" if redirect else ""
            return (
                f"the web endpoint moved ({moved} at {path}): check --base-url{sign_in}; set "
                f"LabsProtocol({field}=...) to where it is now (--protocol FILE.json)"
            )
        if isinstance(exc, PerplexityLabsSessionExpiredError):
            return (
                "the session expired: run pplx-labs login again (or send fresh cookies, $PPLX_LABS_COOKIES)"
            )
        if status in (401, 403):
            return f"the web app wants a signed-in session: {_SIGN_IN}"
        if isinstance(exc, PerplexityLabsTimeoutError):
            return self._silence_advice(step, exc)
        if isinstance(exc, PerplexityLabsServerError):
            return (
                "the web app failed the question: try another --model (auto, turbo) or later; if it keeps "
                "failing, the request may lack a field it now wants: LabsProtocol(web_params=..., "
                "web_version=...) (--protocol FILE.json)"
            )
        if isinstance(exc, PerplexityLabsDisconnectedError):
            return "the web app ended the stream mid-answer: ask again; if it repeats, report it with this output (--json)"
        if isinstance(exc, PerplexityLabsProtocolError):
            return f"the web app's stream changed its format: try {_TEXT_STREAM}, else report a bug with this output"
        if status is not None and status >= 500:
            return (
                "the web app failed to answer (a server error): try again later; check --proxy if you use one"
            )
        return advice_for(exc, step=CONNECT if step == CONNECT else "")

    def _silence_advice(self, step: str, exc: PerplexityLabsTimeoutError) -> str:
        raise_it = "raise the timeout (--timeout; first_token_timeout=... and idle_timeout=... in code)"
        if exc.which in ("connect", "handshake"):
            return advice_for(exc)
        if step == ACCEPTED:
            return f"the web app took the request and sent no answer headers: {raise_it}; check a proxy or firewall"
        if step == FIRST_MESSAGE:
            return (
                f"a silent event stream: {raise_it}; if it stays silent, the web app may want other request "
                f"fields: LabsProtocol(web_params=..., web_version=...) (--protocol FILE.json), now version "
                f"{self.protocol.web_version!r}"
            )
        if step == FIRST_TEXT:
            return (
                f"messages came, none with answer text this client reads: if the web app is only slow, "
                f"{raise_it}; else its stream may have changed: try the older text stream, {_TEXT_STREAM}, "
                "or report a bug with this output"
            )
        return f"the stream went silent mid-answer: {raise_it}, or ask again"


diagnose_web = _WebWalk.diagnose
"""Ask a question through the web transport's own connection code, timing and judging each step."""


def _media_type(response: Response) -> str:
    """``text/event-stream`` of ``Content-Type: text/event-stream; charset=utf-8``."""
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
