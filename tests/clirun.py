"""Runs ``pplx-labs`` in this process through its own entry function, or as the installed command.

Most CLI tests are about what the command prints and its exit code: ``run_cli`` calls ``cli.main`` with
the arguments, the environment and stdin a shell would give it, and captures stdout and stderr, in
milliseconds rather than the second and a half a new interpreter costs. What only a real process shows
(signals, a closed pipe, ``-X dev`` at exit, the console script) uses ``command`` with ``subprocess``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from langchain_pplx_labs import cli


@dataclass(frozen=True)
class CliResult:
    """What one run printed and returned, as ``subprocess.CompletedProcess`` names them."""

    returncode: int
    stdout: str
    stderr: str


def command(*args: str) -> list[str]:
    """The installed ``pplx-labs`` script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("pplx-labs")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "langchain_pplx_labs.cli", *args]


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """The process environment without any ``PPLX_LABS_*`` variable, plus ``env``; restored afterwards."""
    saved = dict(os.environ)
    try:
        for key in [key for key in os.environ if key.startswith("PPLX_LABS_")]:
            del os.environ[key]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(*args: str, env: Mapping[str, str] | None = None, stdin: str = "") -> CliResult:
    """``pplx-labs ARGS`` run by ``cli.main`` here, with no ``PPLX_LABS_*`` variable but those in ``env``.

    Call it from a sync test: the command runs its own event loop, as it does from a shell.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    with (
        _environment(env or {}),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
        _stdin(stdin),
    ):
        try:
            code = cli.main(list(args))
        except SystemExit as exit_:  # argparse's usage errors, --help and --version
            code = _exit_code(exit_.code)
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1, as the interpreter does
    return 1
