"""Models dropped without close() clean up silently on every path; a forked child gets its own loop."""

from __future__ import annotations

import concurrent.futures
import socket
import ssl
import textwrap
from collections.abc import Iterator

import pytest
import trustme
from devmode import Scenario, run_clean_under_dev_mode, run_scenarios_under_dev_mode

from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator

# Each path runs in a fresh interpreter more than once: the leaks it guards against came
# from races (a close still in flight at exit) that showed in some runs only. The paths of
# one run share that interpreter (one child per run, not one per path and run), each
# reporting its own output; what the interpreter prints at exit is checked for every path.
RUNS = 3

# Quiet only asyncio's slow-callback notes (dev mode, loaded machine); its errors
# ("Task was destroyed but it is pending!", "never retrieved") stay on stderr.
_PRELUDE = textwrap.dedent(
    """
    import asyncio, gc, logging, sys
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    from langchain_pplx_labs import ChatPerplexityLabs
    """
)

_PATHS = textwrap.dedent(
    """
    def sync_failures(url):
        for _ in range(3):
            try:
                ChatPerplexityLabs(transport="labs", base_url=url, max_retries=0, connect_timeout=5).invoke("hi")
            except Exception as exc:
                print(type(exc).__name__)
            gc.collect()

    def sync_answers(url):
        for _ in range(2):
            print(ChatPerplexityLabs(transport="labs", base_url=url).invoke("hi").content)
            gc.collect()

    def async_paths(*urls):
        async def main():
            for url in urls:
                for _ in range(2):
                    try:
                        print((await ChatPerplexityLabs(transport="labs", base_url=url, max_retries=0).ainvoke("hi")).content)
                    except Exception as exc:
                        print(type(exc).__name__)
                    gc.collect()

        asyncio.run(main())
        gc.collect()

    def hand_made_loop(url, transport):
        # No asyncio.run: the loop never runs shutdown_asyncgens, and the model is not closed.
        llm = ChatPerplexityLabs(transport=transport, base_url=url, model="sonar" if transport == "labs" else "auto")
        loop = asyncio.new_event_loop()
        print(loop.run_until_complete(llm.ainvoke("hi")).content)
        loop.close()
        print("closed", loop.is_closed())
        loop.close()  # twice, as asyncio allows
        del llm, loop
        gc.collect()

    SCENARIOS = {
        "hand-made-loop-labs": lambda: hand_made_loop(WEBSOCKET, "labs"),
        "hand-made-loop-web": lambda: hand_made_loop(WEBSOCKET, "web"),
        "refused-connect": lambda: sync_failures(REFUSED),
        "tls-mismatch": lambda: sync_failures(TLS),
        "plain-http-to-tls": lambda: sync_failures(TLS.replace("https://", "http://")),
        "unresolvable-host": lambda: sync_failures("http://nonexistent.invalid"),
        "answers-websocket": lambda: sync_answers(WEBSOCKET),
        "answers-polling": lambda: sync_answers(POLLING),
        "async-path": lambda: async_paths(POLLING, REFUSED),
    }
    """
)


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


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


@pytest.fixture(scope="module")
def websocket_url() -> Iterator[str]:
    """An emulator of its own with default answers (the shared one is scripted by other tests)."""
    with EmulatorThread(LabsEmulator()) as thread:
        yield thread.base_url


@pytest.fixture(scope="module")
def runs(tls_url: str, polling_url: str, websocket_url: str) -> list[dict[str, Scenario]]:
    """Every path, in each of ``RUNS`` fresh ``-X dev -W error`` interpreters."""
    urls = {"REFUSED": _closed_port(), "TLS": tls_url, "POLLING": polling_url, "WEBSOCKET": websocket_url}
    script = _PRELUDE + "".join(f"{name} = {url!r}\n" for name, url in urls.items()) + _PATHS
    # The async path last, after the failed sync calls: the garbage collector then runs engine.io's
    # client __del__ on this thread, whose asyncio.get_event_loop() (3.11) used to make and set a
    # loop nobody closed, so asyncio.run warned "unclosed event loop" (fixed in polling.py).
    names = [
        "refused-connect",
        "tls-mismatch",
        "plain-http-to-tls",
        "answers-websocket",
        "answers-polling",
    ]
    # Only where a bad name fails at once: elsewhere its test skips, and must not slow the others.
    if _resolves_fast("nonexistent.invalid") is False:
        names.append("unresolvable-host")
    names += ["async-path", "hand-made-loop-labs", "hand-made-loop-web"]
    # The runs side by side: each mostly waits on its imports and sockets, and a loaded machine
    # is where the exit races showed.
    with concurrent.futures.ThreadPoolExecutor(RUNS) as pool:
        return list(pool.map(lambda _: run_scenarios_under_dev_mode(script, names), range(RUNS)))


def _outputs(runs: list[dict[str, Scenario]], name: str) -> list[str]:
    """What the path ``name`` printed in each run, each run checked for leaks and its exit code."""
    return [run[name].assert_clean() for run in runs]


@pytest.mark.system
@pytest.mark.parametrize(
    "path", ["refused-connect", "tls-mismatch", "plain-http-to-tls", "unresolvable-host"]
)
def test_dropped_after_a_failed_connect(path: str, runs: list[dict[str, Scenario]]) -> None:
    if path not in runs[0]:
        pytest.skip("name resolution does not fail fast here")
    for out in _outputs(runs, path):
        assert out.split() == ["PerplexityLabsConnectionError"] * 3


@pytest.mark.system
@pytest.mark.parametrize("server", ["websocket", "polling"])
def test_dropped_after_answers(server: str, runs: list[dict[str, Scenario]]) -> None:
    for out in _outputs(runs, f"answers-{server}"):
        assert out.count("This is the offline Perplexity Labs emulator") == 2, out


@pytest.mark.system
def test_dropped_on_the_async_path_under_asyncio_run(runs: list[dict[str, Scenario]]) -> None:
    for out in _outputs(runs, "async-path"):
        assert out.count("This is the offline Perplexity Labs emulator") == 2, out
        assert out.count("PerplexityLabsConnectionError") == 2, out


@pytest.mark.system
@pytest.mark.parametrize("transport", ["labs", "web"])
def test_dropped_on_a_hand_made_loop_closes_with_the_loop(
    transport: str, runs: list[dict[str, Scenario]]
) -> None:
    # Issue 31: new_event_loop + run_until_complete + close printed "Task was destroyed but it is pending!",
    # "Unclosed client session" and "Event loop is closed"; loop.close() now closes the pools first.
    for out in _outputs(runs, f"hand-made-loop-{transport}"):
        assert out.splitlines()[-1] == "closed True", out
        assert out.count("This is the offline Perplexity Labs emulator") == 1, out


# -- fork -------------------------------------------------------------------------------------

# A process of its own, not a scenario of the batch: the subject is a fork of a parent whose only
# model is this one (its background loop, its one warm socket), and the emulator's counts are
# this test's alone.
_FORK = _PRELUDE + textwrap.dedent(
    """
    import multiprocessing, os, signal, warnings

    URL = sys.argv[1]
    chat = ChatPerplexityLabs(transport="labs", base_url=URL, max_retries=0, timeout=20)
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
    pool = next(iter(chat._current_client._pools.values()))
    print("parent-sockets-opened", pool.connections_opened)
    chat.close()
    """
)


@pytest.mark.system
def test_forked_children_get_their_own_loop_and_leave_the_parents_sockets_alone(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer="forked fine")
    lines = run_clean_under_dev_mode(_FORK, base_url).splitlines()
    assert lines[0] == "parent forked fine"
    assert "child forked fine" in lines
    assert "child-status 0" in lines
    assert "mp-child forked fine" in lines
    assert "mp-child-status 0" in lines
    assert lines[-2:] == ["parent forked fine", "parent-sockets-opened 1"]  # its warm socket survived
    assert len(emulator.requests) == 4
    assert emulator.connections == 3  # the parent's one, and one per child
