"""Models dropped without close() clean up silently on every path; a forked child gets its own loop."""

from __future__ import annotations

import concurrent.futures
import socket
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import trustme

from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator

# Each path runs in a fresh interpreter more than once: the leaks it guards against came
# from races (a close still in flight at exit) that showed in some runs only.
RUNS = 3

# Quiet only asyncio's slow-callback notes (dev mode, loaded machine); its errors
# ("Task was destroyed but it is pending!", "never retrieved") stay on stderr.
_PRELUDE = textwrap.dedent(
    """
    import asyncio, gc, logging, sys
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    from langchain_pplx_labs import ChatPerplexityLabs
    URL = sys.argv[1]
    """
)

_SYNC_FAILURES = _PRELUDE + textwrap.dedent(
    """
    for _ in range(3):
        try:
            ChatPerplexityLabs(base_url=URL, max_retries=0, connect_timeout=5).invoke("hi")
        except Exception as exc:
            print(type(exc).__name__)
        gc.collect()
    """
)

_SYNC_ANSWERS = _PRELUDE + textwrap.dedent(
    """
    for _ in range(2):
        print(ChatPerplexityLabs(base_url=URL).invoke("hi").content)
        gc.collect()
    """
)

_ASYNC_PATHS = _PRELUDE + textwrap.dedent(
    """
    async def main():
        for url in (URL, sys.argv[2]):
            for _ in range(2):
                try:
                    print((await ChatPerplexityLabs(base_url=url, max_retries=0).ainvoke("hi")).content)
                except Exception as exc:
                    print(type(exc).__name__)
                gc.collect()

    asyncio.run(main())
    gc.collect()
    """
)


def _run_quietly(script: str, *args: str) -> str:
    """Run ``script`` in ``python -X dev -W error``; stderr must stay empty. Returns stdout."""
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.stderr == "", result.stderr
    assert result.returncode == 0
    return result.stdout


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture(scope="module")
def tls_url() -> Iterator[str]:
    """An https emulator whose certificate (a private CA's) the default TLS settings refuse."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    with EmulatorThread(LabsEmulator(ssl_context=context)) as thread:
        yield thread.base_url


@pytest.fixture(scope="module")
def polling_url() -> Iterator[str]:
    """An emulator that refuses WebSocket: every close ends in a goodbye POST, the slowest close."""
    with EmulatorThread(LabsEmulator(refuse_websocket=True)) as thread:
        yield thread.base_url


def test_dropped_after_a_refused_connect() -> None:
    url = _closed_port()
    for _ in range(RUNS):
        assert _run_quietly(_SYNC_FAILURES, url).split() == ["PerplexityLabsConnectionError"] * 3


def test_dropped_after_a_tls_mismatch(tls_url: str) -> None:
    for _ in range(RUNS):
        assert _run_quietly(_SYNC_FAILURES, tls_url).split() == ["PerplexityLabsConnectionError"] * 3


def test_dropped_after_plain_http_to_a_tls_port(tls_url: str) -> None:
    url = tls_url.replace("https://", "http://")
    for _ in range(RUNS):
        assert _run_quietly(_SYNC_FAILURES, url).split() == ["PerplexityLabsConnectionError"] * 3


def _resolves_fast(host: str) -> bool | None:
    """False if ``host`` fails to resolve within 5 s, True if it resolves, None if too slow."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        lookup = pool.submit(socket.getaddrinfo, host, 80)
        try:
            lookup.result(timeout=5)
        except socket.gaierror:
            return False
        except concurrent.futures.TimeoutError:
            return None
    return True


def test_dropped_after_an_unresolvable_host() -> None:
    if _resolves_fast("nonexistent.invalid") is not False:
        pytest.skip("name resolution does not fail fast here")
    for _ in range(RUNS):
        out = _run_quietly(_SYNC_FAILURES, "http://nonexistent.invalid")
        assert out.split() == ["PerplexityLabsConnectionError"] * 3


@pytest.mark.parametrize("server", ["websocket", "polling"])
def test_dropped_after_answers(server: str, base_url: str, polling_url: str) -> None:
    url = base_url if server == "websocket" else polling_url
    for _ in range(RUNS):
        out = _run_quietly(_SYNC_ANSWERS, url)
        assert out.count("This is the offline Perplexity Labs emulator") == 2, out


def test_dropped_on_the_async_path_under_asyncio_run(polling_url: str) -> None:
    refused = _closed_port()
    for _ in range(RUNS):
        out = _run_quietly(_ASYNC_PATHS, polling_url, refused)
        assert out.count("This is the offline Perplexity Labs emulator") == 2, out
        assert out.count("PerplexityLabsConnectionError") == 2, out


# -- fork -------------------------------------------------------------------------------------

_FORK = _PRELUDE + textwrap.dedent(
    """
    import multiprocessing, os, signal, warnings

    chat = ChatPerplexityLabs(base_url=URL, max_retries=0, timeout=20)
    print("parent", chat.invoke("before the fork").content)  # starts the background loop

    def ask_in_child(label):
        signal.alarm(30)  # a regression must fail the child, not hang the test
        print(label, chat.invoke("in the child").content, flush=True)

    with warnings.catch_warnings():
        # 3.12+: "This process is multi-threaded, use of fork() may lead to deadlocks"
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
        if pid == 0:
            try:
                ask_in_child("child")
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child-status", os.waitstatus_to_exitcode(status))
        process = multiprocessing.get_context("fork").Process(target=ask_in_child, args=("mp-child",))
        process.start()
        process.join(60)
        print("mp-child-status", process.exitcode)
    print("parent", chat.invoke("after the fork").content)
    pool = next(iter(chat._client._pools.values()))
    print("parent-sockets-opened", pool.connections_opened)
    chat.close()
    """
)


def test_forked_children_get_their_own_loop_and_leave_the_parents_sockets_alone(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer="forked fine")
    lines = _run_quietly(_FORK, base_url).splitlines()
    assert lines[0] == "parent forked fine"
    assert "child forked fine" in lines
    assert "child-status 0" in lines
    assert "mp-child forked fine" in lines
    assert "mp-child-status 0" in lines
    assert lines[-2:] == ["parent forked fine", "parent-sockets-opened 1"]  # its warm socket survived
    assert len(emulator.requests) == 4
    assert emulator.connections == 3  # the parent's one, and one per child
