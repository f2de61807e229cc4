"""The client (a pool per event loop, retries before the first token, one question = one stream of events), and a model's cache of it."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr

from langchain_pplx_labs.errors import (
    LABS,
    WEB_APP,
    PerplexityLabsAttachmentsNotSupportedError,
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsRateLimitError,
    PerplexityLabsRetiredError,
    PerplexityLabsServerError,
    PerplexityLabsSessionExpiredError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.events import Finished, StreamEvent
from langchain_pplx_labs.labs.connection import PipelinedQueryDropped
from langchain_pplx_labs.pool import ConnectionPool, PoolClosedError, PoolSettings
from langchain_pplx_labs.protocol import WEB_MODELS, LabsProtocol
from langchain_pplx_labs.settings import ConnectionSettings, Service, Timeouts, browser_headers
from langchain_pplx_labs.web.codec import web_model_preference
from langchain_pplx_labs.web.models import ModelList, access_refusal
from langchain_pplx_labs.web.session import WebSession

logger = logging.getLogger(__name__)

# Timeouts that fire before the server has the question (connecting, handshaking) are
# retried like connection errors. Once it has it, a first_token, idle or total timeout
# means a slow model or a stalled answer: asking again would only wait as long again.
RETRIED_TIMEOUTS = frozenset({"connect", "handshake"})


class Client:
    """Streams answers as events, reusing warm sessions on each event loop.

    A pool belongs to one loop; each loop that uses the client gets its own, and
    the pool closes itself when that loop shuts down (``asyncio.run`` ends).
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        pool: PoolSettings | None = None,
        *,
        max_retries: int = 2,
        retry_server_failures: bool = False,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
    ) -> None:
        self.settings = settings
        self.pool_settings = pool or PoolSettings()
        self.max_retries = max_retries
        self.retry_server_failures = retry_server_failures
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._pools: dict[asyncio.AbstractEventLoop, ConnectionPool] = {}
        self._lifespans: dict[asyncio.AbstractEventLoop, AsyncIterator[None]] = {}
        self._pid = os.getpid()

    async def pool(self) -> ConnectionPool:
        """This loop's pool, created on first use."""
        loop = asyncio.get_running_loop()
        self._forget_closed_loops()
        pool = self._pools.get(loop)
        if pool is None:
            pool = ConnectionPool(self.settings, self.pool_settings)
            self._pools[loop] = pool
            lifespan = self._lifespan(loop, pool)
            await lifespan.__anext__()
            self._lifespans[loop] = lifespan
            _close_pools_before_close(loop, self)
        return pool

    async def _lifespan(self, loop: asyncio.AbstractEventLoop, pool: ConnectionPool) -> AsyncIterator[None]:
        # An async generator is finalised by loop.shutdown_asyncgens(), which asyncio.run
        # calls: that is our hook to close the sockets before the loop goes away.
        try:
            yield
        finally:
            if self._pools.get(loop) is pool:
                del self._pools[loop]
                self._lifespans.pop(loop, None)
            await pool.aclose()

    def _forget_closed_loops(self) -> None:
        if self._pid != os.getpid():
            # A forked child: the pools it inherited hold the parent's sockets. It must
            # neither use them nor close them (a goodbye would end the parent's socket),
            # nor let them be finalised: they are kept, untouched, for the child's life.
            _inherited.append((self._pools, self._lifespans))
            self._pools, self._lifespans = {}, {}
            self._pid = os.getpid()
        # list(): sync calls (the background loop) and user loops in other threads share the dict.
        for loop in [loop for loop in list(self._pools) if loop.is_closed()]:
            self._pools.pop(loop, None)
            self._lifespans.pop(loop, None)

    async def warmup(self) -> None:
        """Open a socket now so the first question skips the handshake."""
        await (await self.pool()).warmup()

    async def model_list(self) -> ModelList:
        """The web app's model list, read once per pool (see :meth:`ConnectionPool.model_list`)."""
        return await (await self.pool()).model_list()

    async def aclose(self) -> None:
        """Close this loop's pool (other loops close theirs when they shut down)."""
        loop = asyncio.get_running_loop()
        pool = self._pools.pop(loop, None)
        lifespan = self._lifespans.pop(loop, None)
        if pool is not None:
            await pool.aclose()
        if lifespan is not None:
            await lifespan.aclose()  # type: ignore[attr-defined]

    async def stream(self, payload: Mapping[str, Any]) -> AsyncIterator[StreamEvent]:
        """Send ``payload`` and yield its answer's events up to and including :class:`Finished`.

        Failures before the first event are retried with backoff, except timeouts after
        the question reached the server (first_token, idle, total: a slow model would be
        asked again and again); once an event was yielded nothing is re-asked, so callers
        never see duplicated text. The ``total`` timeout covers the whole call, retries
        and backoff included. Errors say how many attempts were made and the time spent.
        Images and files (the payload's ``attachments``) go to the web app only: over Labs
        they are refused before anything is sent.
        """
        attachments = payload.get("attachments")
        if attachments and self.settings.service != "web":
            files = ", ".join(map(str, attachments))
            raise PerplexityLabsAttachmentsNotSupportedError(
                f"The question attaches {files}, and only the web app takes images and files: the Labs "
                'playground (transport="labs") answered text alone. Use transport="web" with a signed-in '
                "session's cookies (cookies=...)"
            )
        pool = await self.pool()
        total = self.settings.timeouts.total
        started = time.monotonic()
        attempt = 0
        while True:
            if total is not None and time.monotonic() - started >= total:
                # Nothing left of the budget: do not send the question again.
                service = WEB_APP if self.settings.service == "web" else LABS
                timed_out = PerplexityLabsTimeoutError("total", total, service=service)
                raise self._account(timed_out, attempt, started, retryable=True)
            yielded = False
            try:
                # aclosing: a consumer that stops at the final frame must release the lease now,
                # not when the loop gets round to finalising the generator (another task may
                # be handed the same socket meanwhile).
                async with aclosing(self._attempt(pool, payload, started)) as events:
                    async for event in events:
                        yielded = True
                        yield event
                return
            except _StaleSocket as exc:
                # A pooled socket died while idle: not the server's fault, so ask again at
                # once on a fresh one without spending a retry (dead sockets are not re-pooled).
                logger.debug("pooled Labs socket was dead (%s); using a fresh one", exc)
            except PerplexityLabsError as exc:
                retryable = not yielded and self._retryable(exc)
                delay = self._backoff(attempt)
                # No retry left, or the backoff alone would use up the budget: report it now.
                out_of_budget = total is not None and time.monotonic() + delay - started >= total
                if not retryable or attempt >= self.max_retries or out_of_budget:
                    self._account(exc, attempt + 1, started, retryable=retryable)
                    raise
                attempt += 1
                logger.info("Labs attempt %d failed (%s); retrying in %.2fs", attempt, exc, delay)
                await asyncio.sleep(delay)

    def _account(
        self, exc: PerplexityLabsError, attempts: int, started: float, *, retryable: bool = False
    ) -> PerplexityLabsError:
        """``exc`` with the attempts made and the time spent; a timeout also says so in its message."""
        elapsed = time.monotonic() - started
        allowed = self.max_retries + 1 if retryable else attempts
        if isinstance(exc, PerplexityLabsTimeoutError):
            exc.account(max(attempts, 1), max(allowed, 1), elapsed)
        else:
            exc.attempts, exc.elapsed = attempts, elapsed
        return exc

    async def _attempt(
        self, pool: ConnectionPool, payload: Mapping[str, Any], started: float
    ) -> AsyncGenerator[StreamEvent, None]:
        # ``started`` is when stream() began: each attempt gets only what is left of ``total``.
        async with pool.lease() as lease:
            if isinstance(lease.connection, WebSession):
                lease.reusable = True  # until the question is sent: a refused model leaves the session warm
                await _check_access(pool, payload, lease.connection)
                lease.reusable = False
            streamed = False
            try:
                # A failed answer raises its error here, before any event, so stream() can retry it.
                async with aclosing(lease.connection.query(payload, started=started)) as events:
                    async for event in events:
                        streamed = True
                        yield event
                        if isinstance(event, Finished):
                            lease.reusable = True
                            return
            except (GeneratorExit, asyncio.CancelledError):
                # The caller stopped reading (a break, a stop sequence, a cancel): not a fault
                # of the socket, so the pool drains the rest of the answer and keeps it.
                lease.abandoned = True
                raise
            except PerplexityLabsConnectionError as exc:
                # A pipelined question the server dropped is asked again at once, unpipelined.
                if (
                    streamed
                    or isinstance(exc, PerplexityLabsRetiredError)
                    or (lease.fresh and not isinstance(exc, PipelinedQueryDropped))
                ):
                    raise
                raise _StaleSocket(str(exc)) from exc

    def _retryable(self, exc: PerplexityLabsError) -> bool:
        # Blocked, retired, no endpoint at the URL, rate limited: asking again meets the same
        # answer, or prolongs the limit.
        refusals = (
            PerplexityLabsBlockedError
            | PerplexityLabsRetiredError
            | PerplexityLabsNotFoundError
            | PerplexityLabsRateLimitError
            | PerplexityLabsSessionExpiredError
        )
        if isinstance(exc, refusals | PoolClosedError):
            return False
        if isinstance(exc, PerplexityLabsServerError):
            return self.retry_server_failures
        if isinstance(exc, PerplexityLabsTimeoutError):
            return exc.which in RETRIED_TIMEOUTS
        return isinstance(exc, PerplexityLabsConnectionError)

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)


async def _check_access(pool: ConnectionPool, payload: Mapping[str, Any], session: WebSession) -> None:
    """Refuse, before it is sent, a model the web app's list says this session may not ask.

    The list is read here only for a name outside the record's (:data:`WEB_MODELS`): asking a known
    name never waits on it; once read (by any caller), every ask is judged on it.
    """
    model = str(payload.get("model", ""))
    preference = web_model_preference(model, signed_in=session.signed_in)
    models = pool.models_read
    if models is None and preference not in WEB_MODELS:
        models = await pool.model_list()
    if models is None:
        return
    refusal = access_refusal(
        model, preference, models, signed_in=session.signed_in, tier=session.subscription_tier
    )
    if refusal is not None:
        raise refusal


# What forked children inherited from their parent (see Client._forget_closed_loops).
_inherited: list[object] = []
# The clients with a pool on each loop whose close() closes them first (see _close_pools_before_close).
# Weak: a dropped model's client is not kept alive by the loop it once asked on.
_pooled_on: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet[Client]] = (
    weakref.WeakKeyDictionary()
)


def _close_pools_before_close(loop: asyncio.AbstractEventLoop, client: Client) -> None:
    """Make ``loop.close()`` close ``client``'s pool on it first, as ``asyncio.run`` does.

    ``asyncio.run`` finalises the pool's lifespan (``shutdown_asyncgens``) before closing its loop.
    A loop made by hand (``new_event_loop``, ``run_until_complete``, ``close``: notebooks, older code)
    never does: its sockets, sessions and reader tasks would be left to the garbage collector on a
    closed loop. So that loop's ``close`` runs the pools' close first, on the loop itself.
    """
    clients = _pooled_on.get(loop)
    if clients is not None:
        clients.add(client)
        return
    original = loop.close

    def close() -> None:
        pooled = list(_pooled_on.pop(loop, ()))
        # Only where the loop can run here: not running, and no other loop running in this thread.
        if pooled and not loop.is_closed() and not loop.is_running() and not _in_a_running_loop():
            closing = _close_all(pooled)
            try:
                loop.run_until_complete(closing)
            except Exception as exc:  # the loop's own close must still happen
                closing.close()
                logger.debug("closing pools before their loop closed failed: %r", exc)
        original()

    try:
        loop.close = close  # type: ignore[method-assign]
    except AttributeError:  # a loop class without instance attributes: asyncio.run still closes pools
        return
    _pooled_on[loop] = weakref.WeakSet([client])


def _in_a_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _close_all(clients: list[Client]) -> None:
    for client in clients:
        await client.aclose()


class _StaleSocket(PerplexityLabsConnectionError):
    """A reused (not fresh) socket failed; retried at once on a fresh one if nothing was streamed."""


class ClientOptions(Protocol):
    """What a client is built from: the connection fields of ``ChatPerplexityLabs``."""

    base_url: str
    protocol: LabsProtocol
    transport: Service
    default_headers: dict[str, str] | None
    cookies: SecretStr | None
    connect_timeout: float
    handshake_timeout: float
    first_token_timeout: float | None
    idle_timeout: float | None
    timeout: float | None
    max_connections: int
    pool_idle_timeout: float | None
    proxy: str | None
    impersonate: str | None
    verify_ssl: bool
    ssl_context: ssl.SSLContext | None
    drain_timeout: float
    max_retries: int
    retry_server_failures: bool


def client_settings(options: ClientOptions) -> tuple[ConnectionSettings, PoolSettings]:
    """The connection and pool settings ``options`` ask for; the cookie becomes a ``Cookie`` header."""
    headers = {**browser_headers(options.protocol), **(options.default_headers or {})}
    if options.cookies is not None:
        headers["Cookie"] = options.cookies.get_secret_value()
    timeouts = Timeouts(
        connect=options.connect_timeout,
        handshake=options.handshake_timeout,
        first_token=options.first_token_timeout,
        idle=options.idle_timeout,
        total=options.timeout,
    )
    ssl_option: ssl.SSLContext | bool = options.ssl_context or options.verify_ssl
    return (
        ConnectionSettings(
            options.base_url, tuple(headers.items()), timeouts, options.protocol, options.transport
        ),
        PoolSettings(
            options.max_connections,
            options.pool_idle_timeout,
            options.proxy,
            ssl_option,
            drain_timeout=options.drain_timeout,
            impersonate=options.impersonate,
        ),
    )


@dataclass(frozen=True)
class ClientCache:
    """A model's client for its current settings, and the clients a setting change replaced.

    Immutable, so a shallow model copy shares the client until either changes a setting. Its
    sockets and event loops cannot be copied: a pickled or deep-copied cache comes back empty,
    and the copy opens its own client on first use.
    """

    client: Client | None = None
    key: tuple[Any, ...] | None = None
    # Replaced clients may still hold warm sockets on some loop; aclose() closes them.
    retired: tuple[Client, ...] = ()

    def client_for(self, options: ClientOptions) -> tuple[ClientCache, Client]:
        """The cache to keep and its client for ``options``: this one, or one with a new client."""
        connection, pool = client_settings(options)
        key = (connection, pool, options.max_retries, options.retry_server_failures)
        if self.client is not None and self.key == key:
            return self, self.client
        client = Client(
            connection,
            pool,
            max_retries=options.max_retries,
            retry_server_failures=options.retry_server_failures,
        )
        retired = self.retired if self.client is None else (*self.retired, self.client)
        return ClientCache(client, key, retired), client

    def without_retired(self) -> ClientCache:
        """This cache once its replaced clients are closed: they are forgotten, the current one kept."""
        return ClientCache(self.client, self.key) if self.retired else self

    async def aclose(self) -> None:
        """Close the replaced clients and the current one on this event loop (other loops close
        their pools when they shut down)."""
        for client in (*self.retired, self.client):
            if client is not None:
                await client.aclose()

    def __copy__(self) -> ClientCache:
        return self

    def __reduce__(self) -> tuple[type[ClientCache], tuple[()]]:
        return ClientCache, ()

    def __deepcopy__(self, memo: dict[int, Any]) -> ClientCache:
        return ClientCache()
