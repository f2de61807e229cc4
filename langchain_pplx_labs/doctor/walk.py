"""What both doctor walks share: the report, the steps' timing, the connect's judgement, evidence and advice."""

from __future__ import annotations

import contextlib
import os
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from langchain_pplx_labs.errors import (
    INSTEAD,
    PerplexityLabsBlockedError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsNotFoundError,
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsRetiredError,
    PerplexityLabsServerError,
    PerplexityLabsSilentError,
    PerplexityLabsTimeoutError,
    caused_by,
)
from langchain_pplx_labs.protocol import DEFAULT_BASE_URL, LabsMessage, LabsProtocol
from langchain_pplx_labs.session_file import model_cookies
from langchain_pplx_labs.settings import (
    DEFAULT_IMPERSONATE,
    ConnectionSettings,
    Service,
    Timeouts,
    browser_headers,
)

# The aiohttp transport's proxy failures (the Labs dialer is built on it), and the seam's (the curl_cffi one's).
from langchain_pplx_labs.transports.aiohttp import ProxyConnectionError, ProxyError
from langchain_pplx_labs.transports.base import ProxyConnectError, ProxyTunnelError

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
    on_step: Callable[[Step], None] | None = field(default=None, repr=False, compare=False)
    """Called with each step as it completes (the CLI prints it at once)."""

    def add(self, step: Step) -> None:
        """Note ``step`` and tell ``on_step``."""
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

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
    """The settings a walk connects with: the model's headers, its cookies (``$PPLX_LABS_COOKIES``, else the
    ``pplx-labs login`` session), every timeout ``timeout``."""
    headers = browser_headers(protocol)
    cookies = model_cookies(os.environ.get("PPLX_LABS_COOKIES"))
    if cookies:
        headers["Cookie"] = cookies
    timeouts = Timeouts(connect=timeout, handshake=timeout, first_token=timeout, idle=timeout, total=None)
    return ConnectionSettings(base_url, tuple(headers.items()), timeouts, protocol)


def asked(question: str, system: str | None) -> list[LabsMessage]:
    """The doctor's conversation: ``question``, after ``system`` if not empty (as ``ask --system`` sends it)."""
    turns: list[LabsMessage] = [{"role": "system", "content": system}] if system and system.strip() else []
    return [*turns, {"role": "user", "content": question}]


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
        self.impersonate: str | None = DEFAULT_IMPERSONATE
        """The browser the web walk's transport speaks as (``None``: plain aiohttp); Labs' dials with aiohttp."""
        self.ssl_option: ssl.SSLContext | bool = True
        """What TLS trusts: a context (a private CA), ``True`` (the default CAs) or ``False`` (nothing checked)."""
        self.system: str | None = None
        """A system prompt sent before the question (``--system``); none when empty."""
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
        impersonate: str | None = DEFAULT_IMPERSONATE,
        ssl_option: ssl.SSLContext | bool = True,
        on_step: Callable[[Step], None] | None = None,
        system: str | None = None,
    ) -> Report:
        """Ask ``question`` through this walk's transport (and ``proxy``, speaking as ``impersonate``),
        timing and judging each step; ``on_step`` is called with each step as it completes. ``system``, if
        not empty, goes before the question as ``pplx-labs ask --system`` sends it."""
        report = Report(base_url, transport=cls.transport, planned=cls.planned, on_step=on_step)
        settings = walk_settings(base_url, protocol, step_seconds)
        walk = cls(report, settings, model, question, proxy)
        walk.impersonate, walk.ssl_option = impersonate, ssl_option
        walk.system = system
        with contextlib.suppress(Failed):
            await walk.run()
        return report

    def conversation(self) -> list[LabsMessage]:
        """The conversation asked: the question, after the system prompt if there is one."""
        return asked(self.question, self.system)

    async def run(self) -> None:
        """Walk every step; a failing one raises ``Failed`` once it is in the report."""
        raise NotImplementedError

    def passed(self, name: str, detail: str = "", *, until: float | None = None) -> None:
        now = time.monotonic() if until is None else until
        self.report.add(Step(name, True, round((now - self.mark) * 1000, 1), detail))
        self.mark = now

    def failed(self, name: str, detail: str, evidence: str, advice: str) -> Failed:
        now = time.monotonic()
        self.report.add(Step(name, False, round((now - self.mark) * 1000, 1), detail))
        self.report.evidence, self.report.advice = evidence, advice
        return Failed(name)

    def connect_failed(self, exc: BaseException) -> Failed:
        if self.proxy and caused_by(
            exc, (ProxyConnectionError, ProxyError, ProxyConnectError, ProxyTunnelError)
        ):
            where = proxy_address(self.proxy)
            if caused_by(exc, (ProxyConnectionError, ProxyConnectError)):
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
        return f"{scheme} through the proxy {proxy_address(self.proxy)}" if self.proxy else scheme


def short(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def event_summary(events: Counter[str]) -> str:
    return ", ".join(f"{name} ×{count}" for name, count in events.most_common(5))


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


def proxy_address(proxy: str) -> str:
    """``scheme://host:port`` of a proxy URL, without its credentials (a report gets pasted into bugs)."""
    parts = urlsplit(proxy)
    return f"{parts.scheme}://{parts.hostname}:{parts.port}"
