"""The ``pplx-labs`` command: ask a question, list the models, serve the offline emulator, or serve the gateway."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from langchain_pplx_labs import __version__
from langchain_pplx_labs._cliargs import CliError
from langchain_pplx_labs.cli import ask, cassette, doctor, gateway, login, mcp, models, serve
from langchain_pplx_labs.cli.ask import DEFAULT_SYSTEM, conversation

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["DEFAULT_SYSTEM", "EXIT_BROKEN_PIPE", "CliError", "build_parser", "conversation", "main"]

EXIT_BROKEN_PIPE = 141
"""Exit code when the reader of stdout goes away (``| head``): 128 + SIGPIPE, as a shell reports a Unix tool."""

_ask = ask.ask
"""What ``pplx-labs ask`` runs, looked up here at each call so a test can put a failing one in its place."""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``pplx-labs: error:`` line too (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pplx-labs: error: {message} (see {self.prog} --help)\n")


DESCRIPTION = (
    "Perplexity from the command line: ask a question (ask), list the web app's models (models), check why "
    "asking fails (doctor), sign in (login, logout), serve the offline emulator (serve), show or record "
    "cassettes (cassette), serve the gateway (gateway), or serve the MCP tools (mcp). Run pplx-labs "
    "COMMAND --help for a command's flags."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pplx-labs``: every failure is one ``pplx-labs: error:`` line, never a traceback.

    Exit codes: 0 done, 1 error, 2 usage error, 130 interrupted, 141 stdout closed by its reader.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last guard: whatever went wrong, one line and no traceback
        return _error(_message(exc), notes=getattr(exc, "__notes__", ()))


def _error(message: str, *, notes: Sequence[str] = ()) -> int:
    # Multi-line messages (a payload diff) are written so their first line says what happened.
    line = next((part for part in message.splitlines() if part.strip()), message).strip()
    # Notes say what the error means (a silent Labs may be retired): on the same line, so it stays one.
    said = [" ".join(note.split()) for note in notes if isinstance(note, str) and note.strip()]
    print(f"pplx-labs: error: {'; '.join([line, *said])}", file=sys.stderr)
    return 1


def _message(exc: Exception) -> str:
    from pydantic import ValidationError

    from langchain_pplx_labs.errors import PerplexityLabsError

    if isinstance(exc, ValidationError):
        return _validation_message(exc)
    if isinstance(exc, OSError):
        return _os_message(exc)
    if isinstance(exc, (CliError, PerplexityLabsError, ValueError)):  # CassetteError is a PerplexityLabsError
        return str(exc) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {exc}"


def _reader_gone() -> int:
    # `pplx-labs ask ... | head -c 5`: the reader has what it wanted. Stay quiet like a Unix tool,
    # and point stdout at devnull so the interpreter's last flush cannot raise again at exit.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_BROKEN_PIPE


def _validation_message(exc: ValidationError) -> str:
    # pydantic's text spans lines and links to its docs; the user needs the field and why.
    return "; ".join(_field_message(error["loc"], error["msg"]) for error in exc.errors())


def _field_message(loc: tuple[int | str, ...], msg: str) -> str:
    field, message = ".".join(map(str, loc)), msg.removeprefix("Value error, ")
    # Our checks name their field ("Invalid base_url 'foo': ..."): not "base_url: Invalid base_url".
    return message if message.startswith(f"Invalid {field} ") else f"{field}: {message}"


def _os_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage mistakes argparse cannot see alone: exit code 2 like its own errors."""
    failing = getattr(args, "fail", None) is not None or any(
        getattr(args, name, False) for name in ("failed", "rate_limited")
    )
    if getattr(args, "fail_after", None) is not None and not failing:
        parser.error("--fail-after needs --fail TEXT, --failed or --rate-limited (the failure to send)")
    if getattr(args, "question", None) is not None and not args.question.strip():
        parser.error("the question is empty")
    if getattr(args, "proxy", None) and getattr(args, "emulator", False):
        parser.error(
            "--proxy is for recording a --base-url server; the in-process --emulator is reached directly"
        )
    if getattr(args, "gate", False) and not args.tls:  # serve
        parser.error("--gate reads the TLS ClientHello: pass --tls too")
    if getattr(args, "follow_tools", False):
        if getattr(args, "cassettes", None):  # serve
            parser.error("--follow-tools and --cassettes both choose the answers; pass one of them")
        if not getattr(args, "emulator", True):  # gateway
            parser.error("--follow-tools needs --emulator (it chooses how the emulator answers)")


def build_parser() -> argparse.ArgumentParser:
    """The ``pplx-labs`` parser: each command's flags, and in ``run`` the function that carries it out."""
    parser = _Parser(prog="pplx-labs", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Subcommand parsers are _Parser too (argparse uses the parent's class); typed as the base for add_parser().
    commands: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(  # type: ignore[assignment]
        required=True, metavar="COMMAND"
    )
    # Every command module is light to import: what a command needs (LangChain, aiohttp) loads when it runs.
    ask.add_parser(commands).set_defaults(run=_run_ask)
    serve.add_parser(commands)
    cassette.add_parser(commands)
    gateway.add_parser(commands)
    doctor.add_parser(commands)
    models.add_parser(commands)
    login.add_parsers(commands)
    mcp.add_parser(commands)
    return parser


def _run_ask(args: argparse.Namespace) -> int:
    return asyncio.run(_ask(args, sys.stdout))
