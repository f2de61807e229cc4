"""The emulator (and optionally the latency proxy) in a process of its own, for clean client timings.

In the client's process the emulator's thread competes with the client for the GIL: every socket
call the client makes lets it run, and the client then waits up to the switch interval to get the
GIL back, which puts milliseconds of the emulator's work into the client's wall time.
Run as ``python -m benchmarks._emulator_process SCENARIO_JSON RTT [WEB_VARIANT_JSON]`` (``@FILE`` for a
scenario too long for a command line); prints the URL, then serves until its stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from benchmarks._common import stop_child


@contextlib.contextmanager
def emulator_process(
    scenario: dict[str, Any] | None = None,
    rtt: float | None = None,
    web_variant: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Serve the emulator (scripted with ``scenario``; behind the proxy if ``rtt``; its web side worded as
    ``web_variant``, a :class:`WebVariant`'s fields) in a child; yields its URL."""
    script = json.dumps(scenario or {})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        file.write(script)  # a long answer exceeds what one command-line argument may hold (128 KiB)
    arguments = [f"@{file.name}", str(rtt or 0), json.dumps(web_variant or {})]
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._emulator_process", *arguments],
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
        stop_child(child)
        os.unlink(file.name)


def _serve(scenario: dict[str, Any], rtt: float, web_variant: dict[str, Any]) -> None:
    from benchmarks.latency_proxy import ProxyThread
    from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator
    from langchain_pplx_labs.emulator.web import WebVariant

    with EmulatorThread(LabsEmulator(web_variant=WebVariant(**web_variant))) as thread:
        if scenario:
            thread.call(lambda: thread.emulator.script(**scenario))
        with contextlib.ExitStack() as stack:
            url = thread.base_url
            if rtt:
                url = stack.enter_context(ProxyThread(thread.base_url, rtt)).base_url
            print(url, flush=True)
            sys.stdin.read()  # until the parent closes our stdin


def _scenario(argument: str) -> dict[str, Any]:
    if argument.startswith("@"):
        with open(argument[1:]) as file:
            argument = file.read()
    scenario: dict[str, Any] = json.loads(argument)
    return scenario


if __name__ == "__main__":
    _serve(_scenario(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3]) if len(sys.argv) > 3 else {})
