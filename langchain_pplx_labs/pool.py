"""Warm Labs connections for one event loop: reuse, idle close, dead-socket replacement, limits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from langchain_pplx_labs._teardown import GRACEFUL_CLOSE_SECONDS, settle_closes
from langchain_pplx_labs.errors import (
    PerplexityLabsConnectionError,
    PerplexityLabsRetiredError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.labs.connection import LabsConnection, diagnose_refusal
from langchain_pplx_labs.labs.dial import LabsDialer
from langchain_pplx_labs.settings import DEFAULT_IMPERSONATE, ConnectionSettings, Transport
from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.transports.base import HTTPTransport
from langchain_pplx_labs.web.models import ModelList, read_model_list
from langchain_pplx_labs.web.session import WebSession

logger = logging.getLogger(__name__)

# How long a fallback is remembered: long enough that a server which refuses the fast path
# costs one failed attempt per ten minutes, short enough that a transient refusal does not
# pin a long-running process to the slow path for good.
FALLBACK_MEMORY_SECONDS = 600.0

# How much of an abandoned answer the pool reads to keep its socket, in output characters of
# its (cumulative) frames: past that, a cold connect is cheaper than the rest of the tail.
DRAIN_MAX_CHARS = 8 * 1024 * 1024
# How long a question kept waiting by drains (every slot of max_connections taken, some by
# drains) waits before the oldest drain is ended to free its slot: about what a cold connect
# costs, so a drain about to finish still hands over its warm socket.
DRAIN_YIELD_SECONDS = 1.0


Session = LabsConnection | WebSession
"""A warm connection to one service that answers one question at a time: a Labs socket or a web session."""


class FallbackMemory:
    """Base URLs that needed a slower path, each forgotten ``seconds`` after it was noted."""

    def __init__(self, seconds: float = FALLBACK_MEMORY_SECONDS) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}

    def add(self, base_url: str) -> None:
        self._until[base_url] = time.monotonic() + self.seconds

    def __contains__(self, base_url: object) -> bool:
        until = self._until.get(str(base_url))
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._until[str(base_url)]
        return False


# Base URLs whose server refused a direct WebSocket: go straight to the polling handshake.
_POLLING_ONLY = FallbackMemory()
# Base URLs whose server dropped a question sent right behind CONNECT: wait for the ack there.
_NO_PIPELINING = FallbackMemory()


@dataclass(frozen=True)
class PoolSettings:
    """How many sockets a pool may hold and how long an unused one stays open."""

    max_connections: int = 16
    idle_timeout: float | None = 60.0
    proxy: str | None = None
    ssl: ssl.SSLContext | bool = True
    drain_timeout: float = 30.0
    """Seconds an abandoned answer may be read in the background to keep its socket; 0: close it."""
    drain_max_chars: int = DRAIN_MAX_CHARS
    impersonate: str | None = DEFAULT_IMPERSONATE
    """The browser the web transport speaks as (curl_cffi's target); ``None``: plain aiohttp. Not Labs'."""


class PoolClosedError(PerplexityLabsConnectionError):
    """The pool was closed (``aclose``) before or while a connection was being made; not retried."""

    def __init__(self) -> None:
        super().__init__("This Labs connection pool is closed")


class Lease:
    """A connection borrowed from the pool; mark it ``reusable`` after a clean answer.

    ``abandoned``: the caller stopped reading mid-answer (not an error): the pool drains the
    rest of the answer in the background and keeps the socket if it ends in time.
    """

    def __init__(self, connection: Session, *, fresh: bool) -> None:
        self.connection = connection
        self.fresh = fresh
        self.reusable = False
        self.abandoned = False


class ConnectionPool:
    """Keeps connected Labs sockets for one loop and hands out one per query."""

    def __init__(self, settings: ConnectionSettings, pool: PoolSettings) -> None:
        self.settings = settings
        self.pool_settings = pool
        self.connections_opened = 0
        self.drains_completed = 0
        self._idle: list[tuple[Session, asyncio.TimerHandle | None]] = []
        self._in_use: set[Session] = set()
        # Connections mid-open are in neither list above; aclose() must reach them too.
        self._opening: set[Session] = set()
        self._none_opening = asyncio.Event()
        self._none_opening.set()
        self._limit = asyncio.Semaphore(pool.max_connections)
        # Labs' wires speak on the Labs dialer's session; the web wire through an HTTP transport.
        self._session: LabsDialer | None = None
        self._http: HTTPTransport | None = None
        self._closed = False
        # Sockets reading an abandoned answer to its end; each holds its slot of ``_limit``.
        self._draining: dict[Session, asyncio.Task[None]] = {}
        # The web app's model list, read once (live, or the record's after a failed read).
        self._models: ModelList | None = None
        self._models_read = asyncio.Lock()

    @property
    def models_read(self) -> ModelList | None:
        """The web app's model list if this pool read it already, else ``None`` (nothing is read)."""
        return self._models

    async def model_list(self) -> ModelList:
        """The web app's model list, read on first call through the pool's HTTP transport with the
        session's headers and cookies (bounded by the connect timeout); the record's list if that failed."""
        async with self._models_read:  # concurrent first callers share one read
            if self._models is None:
                self._models = await read_model_list(self._http_transport(), self.settings)
        return self._models

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def draining_count(self) -> int:
        return len(self._draining)

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Lease]:
        """Borrow a connection; it goes back warm if the lease was marked reusable (or drained)."""
        # Acquired by hand: a socket handed to a drain keeps its slot until the drain ends.
        await self._acquire_slot()
        handed_to_drain = False
        try:
            lease = await self._take()
            self._in_use.add(lease.connection)
            try:
                yield lease
            finally:
                handed_to_drain = await self._give_back(lease)
        finally:
            if not handed_to_drain:
                self._limit.release()

    async def _acquire_slot(self) -> None:
        """Take a slot of ``max_connections``; drains hold theirs only while nobody waits long."""
        while self._limit.locked() and self._draining:
            try:
                async with asyncio.timeout(DRAIN_YIELD_SECONDS):
                    await self._limit.acquire()
                return
            except TimeoutError:
                # A question waits on answers nobody reads any more: end the oldest such read
                # (its socket closes and its slot frees up) rather than wait for all of it.
                oldest = next(iter(self._draining.values()), None)
                if oldest is not None:
                    oldest.cancel()
                    await asyncio.wait([oldest])
        await self._limit.acquire()

    async def _give_back(self, lease: Lease) -> bool:
        """Pool, drain or close a returned connection; True if a drain now holds it (and its slot)."""
        connection = lease.connection
        if connection.pipelining_dropped:
            _NO_PIPELINING.add(self.settings.base_url)
        self._in_use.discard(connection)
        usable = connection.alive and not connection.busy and not self._closed
        if usable and (lease.reusable or lease.abandoned) and not connection.answer_open:
            self._park(connection)
            return False
        if usable and lease.abandoned and self.pool_settings.drain_timeout > 0:
            task = asyncio.get_running_loop().create_task(self._drain(connection), name="labs-drain")
            self._draining[connection] = task
            return True
        # Only a socket whose answer ended cleanly gets a goodbye; any other may have a
        # dead peer, and the caller's error must not wait on it.
        ended = lease.reusable or (lease.abandoned and not connection.answer_open)
        await connection.close(graceful=ended and connection.alive and not connection.busy)
        return False

    async def _drain(self, connection: Session) -> None:
        """Read an abandoned answer to its last frame, then pool the socket; else close it."""
        ended = False
        try:
            ended = await self._answer_ends(connection)
        finally:
            self._draining.pop(connection, None)
            if ended and connection.alive and not self._closed:
                self.drains_completed += 1
                self._park(connection)
            self._limit.release()
            if not ended or self._closed:
                logger.debug("abandoned Labs answer not drained; closing its socket")
                await connection.close(graceful=False)

    async def _answer_ends(self, connection: Session) -> bool:
        """Wait for the answer in flight to end, within the drain limits and ``idle`` silence."""
        settings = self.pool_settings
        idle = self.settings.timeouts.idle
        started = connection.stray_heard_at = time.monotonic()
        while connection.answer_open:
            if not connection.alive or connection.stray_chars > settings.drain_max_chars:
                return False
            now = time.monotonic()
            left = started + settings.drain_timeout - now
            if idle is not None:
                left = min(left, connection.stray_heard_at + idle - now)
            if left <= 0:
                return False
            connection.stray_news.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await connection.stray_news.wait()
        return connection.alive

    async def warmup(self) -> None:
        """Open one socket ahead of the first question."""
        async with self.lease() as lease:
            await lease.connection.wait_ready()
            lease.reusable = True

    async def aclose(self) -> None:
        """Close every socket (idle, in use or still connecting), the HTTP session and transport.

        Shielded like a socket's close: a cancelled caller must not cut the session from
        under goodbyes still on their way (a polling server would keep those sessions).
        """
        closing = asyncio.ensure_future(self._close_all())
        _background.add(closing)
        closing.add_done_callback(_background.discard)
        await asyncio.shield(closing)

    async def _close_all(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for _, timer in idle:
            if timer is not None:
                timer.cancel()
        busy = self._in_use | self._opening
        # A drain, cancelled, closes its own socket (its finally).
        drains = list(self._draining.values())
        for drain in drains:
            drain.cancel()
        try:
            # Together, not one by one: each close is bounded, but they should not add up.
            await asyncio.gather(
                *(connection.close() for connection, _ in idle),
                *(connection.close(graceful=False) for connection in busy),
                *(_ended(drain) for drain in drains),
            )
            await self._settle()
        finally:
            if self._session is not None:
                session, self._session = self._session, None
                await session.aclose()
            if self._http is not None:
                http, self._http = self._http, None
                await http.aclose()

    async def _settle(self) -> None:
        """Let cut-short connects finish and polling goodbyes go out while the session is open."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GRACEFUL_CLOSE_SECONDS):
                await self._none_opening.wait()
        await settle_closes()

    async def _take(self) -> Lease:
        if self._closed:
            raise PoolClosedError()
        while self._idle:
            connection, timer = self._idle.pop()
            if timer is not None:
                timer.cancel()
            if connection.alive and not connection.answer_open:
                return Lease(connection, fresh=False)
            await connection.close(graceful=False)
        return Lease(await self._open(), fresh=True)

    def _park(self, connection: Session) -> None:
        idle_timeout = self.pool_settings.idle_timeout
        timer = None
        if idle_timeout is not None:
            timer = asyncio.get_running_loop().call_later(idle_timeout, self._expire, connection)
        self._idle.append((connection, timer))

    def _expire(self, connection: Session) -> None:
        for index, (candidate, _) in enumerate(self._idle):
            if candidate is connection:
                del self._idle[index]
                task = asyncio.get_running_loop().create_task(connection.close())
                _background.add(task)
                task.add_done_callback(_background.discard)
                return

    async def _open(self) -> Session:
        base_url = self.settings.base_url
        order: list[Transport]
        if self.settings.service == "web":
            order = ["web"]  # one way in: no fallback, no pipelining, no Engine.IO endpoint to diagnose
        elif base_url in _POLLING_ONLY:
            order = ["polling"]
        else:
            order = ["websocket", "polling"]
        failure: PerplexityLabsConnectionError | None = None
        for transport in order:
            try:
                connection = await self._open_one(transport)
            except (PerplexityLabsConnectionError, PerplexityLabsTimeoutError) as exc:
                if self._closed:
                    raise PoolClosedError() from exc
                if isinstance(exc, PerplexityLabsTimeoutError | PerplexityLabsRetiredError):
                    raise  # the other transport would meet the same answer
                failure = exc
                logger.debug("connect over %s failed: %s", transport, exc)
                continue
            if transport == "polling" and "websocket" in order:
                _POLLING_ONLY.add(base_url)
            self.connections_opened += 1
            logger.debug("opened a Labs socket to %s over %s", base_url, transport)
            return connection
        assert failure is not None
        if order == ["web"]:
            raise failure  # the web wire named the cause already (it saw the HTTP answer)
        cause = failure.__cause__ or failure
        raise await diagnose_refusal(self.settings, self._http_session(), cause) from failure

    async def _open_one(self, transport: Transport) -> Session:
        connection: Session
        if transport == "web":
            connection = WebSession(
                self.settings, self._http_transport(), impersonate=self.pool_settings.impersonate
            )
        else:
            connection = LabsConnection(self.settings, self._http_session())
        self._opening.add(connection)
        self._none_opening.clear()
        try:
            await connection.open(transport, pipelined=self.settings.base_url not in _NO_PIPELINING)
        finally:
            self._opening.discard(connection)
            if not self._opening:
                self._none_opening.set()
        if self._closed:
            # aclose() ran while we connected and could not see this socket yet.
            await connection.close(graceful=False)
            raise PoolClosedError()
        return connection

    def _http_session(self) -> LabsDialer:
        if self._closed:
            # A closed pool must not build a session nobody would close.
            raise PoolClosedError()
        if self._session is None:
            # aiohttp bounds the TCP connect; the handshake after it has its own budget (see open).
            self._session = LabsDialer(
                connect_timeout=self.settings.timeouts.connect,
                proxy=self.pool_settings.proxy,
                ssl_option=self.pool_settings.ssl,
                keep_idle=self.pool_settings.idle_timeout,
            )
        return self._session

    def _http_transport(self) -> HTTPTransport:
        if self._closed:
            raise PoolClosedError()  # as _http_session: nothing would close it
        if self._http is None:
            # An idle keep-alive connection stays as long as the pool keeps an idle connection on it:
            # with aiohttp's default (15 s) a web "connection" parked for longer would silently lose
            # its TCP (and TLS) connection and pay a new connect on its next question.
            self._http = http_transport(
                connect_timeout=self.settings.timeouts.connect,
                proxy=self.pool_settings.proxy,
                ssl_option=self.pool_settings.ssl,
                keep_idle=self.pool_settings.idle_timeout,
                impersonate=self.pool_settings.impersonate,
            )
        return self._http


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait for a cancelled ``task`` to finish, whatever it ends with."""
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        logger.debug("a Labs drain failed: %r", task.exception())


_background: set[asyncio.Task[None]] = set()
