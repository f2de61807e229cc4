"""A real TCP proxy that delays every chunk by half the round-trip time in each direction."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from urllib.parse import urlsplit

DEFAULT_RTT = 0.050


class LatencyProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target`` and adds ``rtt`` to every round trip."""

    def __init__(self, target_url: str, rtt: float = DEFAULT_RTT) -> None:
        parts = urlsplit(target_url)
        self.target_host = parts.hostname or "127.0.0.1"
        self.target_port = parts.port or 80
        self.rtt = rtt
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        # A deep backlog: the concurrency benchmark opens hundreds of sockets at once.
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # The TCP connect itself costs one round trip, as on a real network.
            await asyncio.sleep(self.rtt)
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
            await asyncio.gather(
                _delayed_pipe(client_reader, upstream_writer, self.rtt / 2),
                _delayed_pipe(upstream_reader, client_writer, self.rtt / 2),
            )
            upstream_writer.close()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            client_writer.close()
            self._tasks.discard(task)


async def _delayed_pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    # Chunks keep their order and each arrives `delay` after it was read: a fixed-latency link.
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        # A peer that went away ends the delivery quietly: nobody may be left to read its error.
        with contextlib.suppress(OSError):
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.write_eof()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                break
        await sender
    except (OSError, asyncio.CancelledError):
        sender.cancel()
        # Awaited, not just cancelled: a loop stopped right after would report it destroyed pending.
        await asyncio.gather(sender, return_exceptions=True)
        raise


class ProxyThread:
    """Runs a :class:`LatencyProxy` on its own loop, so the measured client's loop stays clean."""

    def __init__(self, target_url: str, rtt: float = DEFAULT_RTT) -> None:
        self.proxy = LatencyProxy(target_url, rtt)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(timeout=10)
        return self.proxy

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
