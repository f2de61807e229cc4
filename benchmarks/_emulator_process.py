"""The emulator (and optionally the latency proxy) in a process of its own, for clean client timings.

In the client's process the emulator's thread competes with the client for the GIL: every socket
call the client makes lets it run, and the client then waits up to the switch interval to get the
GIL back, which puts milliseconds of the emulator's work into the client's wall time.
Run as ``python -m benchmarks._emulator_process SCENARIO_JSON RTT``; prints the URL, then serves
until its stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def emulator_process(scenario: dict[str, Any] | None = None, rtt: float | None = None) -> Iterator[str]:
    """Serve the emulator (scripted with ``scenario``; behind the proxy if ``rtt``) in a child; yields its URL."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._emulator_process", json.dumps(scenario or {}), str(rtt or 0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url:
            raise RuntimeError("the emulator process did not start")
        yield url
    finally:
        assert child.stdin is not None
        child.stdin.close()  # the child's cue to stop
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _serve(scenario: dict[str, Any], rtt: float) -> None:
    from benchmarks.latency_proxy import ProxyThread
    from langchain_pplx_labs.emulator import EmulatorThread

    with EmulatorThread() as thread:
        if scenario:
            thread.call(lambda: thread.emulator.script(**scenario))
        with contextlib.ExitStack() as stack:
            url = thread.base_url
            if rtt:
                url = stack.enter_context(ProxyThread(thread.base_url, rtt)).base_url
            print(url, flush=True)
            sys.stdin.read()  # until the parent closes our stdin


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]), float(sys.argv[2]))
