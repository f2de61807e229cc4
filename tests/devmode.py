"""Runs code under ``python -X dev -W error`` and checks what a leak prints (one place for every leak test).

A busy machine makes asyncio's debug mode print notes such as ``Executing <Task ...> took 0.118 seconds``:
those say nothing about a leak, so the checks here look for the symptoms of one, never for an empty stderr.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

LEAK_SYMPTOMS = (
    "Unclosed",  # aiohttp's client session and connector
    "unclosed",  # ResourceWarning: unclosed <socket ...>, unclosed transport
    "was destroyed but it is pending",
    "never awaited",
    "never retrieved",
    "Event loop is closed",
    "ResourceWarning",
    "Warning:",  # any other warning, printed because -W error made it an exception
    "Exception ignored",  # an error in __del__ or a callback, which Python can only print
    "Traceback",
)
"""What asyncio, aiohttp, the socket module and the warnings machinery print about what was left behind."""


def leaks_in(stderr: str) -> list[str]:
    """The lines of ``stderr`` that name a leak symptom (empty when nothing leaked)."""
    return [line for line in stderr.splitlines() if any(symptom in line for symptom in LEAK_SYMPTOMS)]


def assert_no_leaks(stderr: str) -> None:
    """Fail with the whole ``stderr`` when any line of it names a leak symptom."""
    assert not leaks_in(stderr), stderr


def run_under_dev_mode(argv: Sequence[str], *, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``python -X dev -W error ARGV`` (``-c SCRIPT ...`` or ``-m MODULE ...``), its output captured."""
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_clean_under_dev_mode(script: str, *args: str, timeout: float = 90) -> str:
    """Run ``script`` with ``args``; it must exit 0 with no leak symptom on stderr. Returns its stdout."""
    result = run_under_dev_mode(["-c", script, *args], timeout=timeout)
    assert result.returncode == 0, result.stderr
    assert_no_leaks(result.stderr)
    return result.stdout


MARK = "@@scenario "
"""Starts a line naming the scenario whose output follows, on stdout and stderr alike."""

AT_EXIT = "<at exit>"
"""The last section: what the interpreter printed after every scenario had run (shutdown, atexit, gc)."""

_DRIVER = textwrap.dedent(
    """

    def _run_scenarios(names):
        import gc as _gc
        import sys as _sys
        import traceback as _traceback

        def _mark(name):
            for stream in (_sys.stdout, _sys.stderr):
                print(f"\\n{MARK}{name}", file=stream, flush=True)

        for name in names:
            _mark(name)
            try:
                SCENARIOS[name]()
            except BaseException:
                _traceback.print_exc()
            _gc.collect()
        _mark(AT_EXIT)

    _run_scenarios(__import__("sys").argv[1:])
    """
)


@dataclass(frozen=True)
class Scenario:
    """What one scenario of a batch printed, and what the interpreter printed at exit after all of them."""

    started: bool
    stdout: str
    stderr: str
    exit_stderr: str
    returncode: int

    def assert_clean(self) -> str:
        """No leak symptom in this scenario's stderr nor at exit, exit code 0; returns its stdout."""
        assert self.started, f"the scenario never started; the child printed:\n{self.exit_stderr}"
        assert self.returncode == 0, self.stderr + self.exit_stderr
        assert_no_leaks(self.stderr)
        assert_no_leaks(self.exit_stderr)
        return self.stdout


def _sections(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines(keepends=True):
        if line.startswith(MARK):
            current = line.removeprefix(MARK).rstrip("\n")
            sections[current] = []
        else:
            sections[current].append(line)
    return {name: "".join(lines).removesuffix("\n") for name, lines in sections.items()}


def run_scenarios_under_dev_mode(
    script: str, names: Sequence[str], *, timeout: float = 120
) -> dict[str, Scenario]:
    """Run the scenarios ``names`` of ``script`` one after another in one ``-X dev -W error`` child.

    ``script`` defines ``SCENARIOS``, a dict of name -> function of no argument; ``names`` are passed in
    ``sys.argv[1:]`` (any value a scenario needs goes into ``script`` itself). Each scenario's output comes
    back apart, so one test per scenario reports its own leaks; a scenario that raises prints its traceback
    into its own section. Whatever the interpreter prints at shutdown belongs to no single scenario: every
    scenario's ``assert_clean`` checks it.
    """
    code = script + _DRIVER.replace("MARK", repr(MARK)).replace("AT_EXIT", repr(AT_EXIT))
    result = run_under_dev_mode(["-c", code, *names], timeout=timeout)
    out, err = _sections(result.stdout), _sections(result.stderr)
    exit_stderr = err.get("", "") + err.get(AT_EXIT, "")
    return {
        name: Scenario(
            started=name in out,
            stdout=out.get(name, ""),
            stderr=err.get(name, ""),
            exit_stderr=exit_stderr,
            returncode=result.returncode,
        )
        for name in names
    }
