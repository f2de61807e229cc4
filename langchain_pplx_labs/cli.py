"""The ``pplx-labs`` command: ask a question, serve the offline emulator, or serve the gateway."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO

from langchain_pplx_labs import __version__
from langchain_pplx_labs._cliargs import count, port, positive_int, positive_seconds, proxy_url, seconds
from langchain_pplx_labs.protocol import DEFAULT_BASE_URL, DEFAULT_MODEL, KNOWN_MODELS

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from pydantic import ValidationError

    from langchain_pplx_labs.emulator.script import LabsRequest, Responder, Scenario, Step
    from langchain_pplx_labs.protocol import LabsProtocol
    from langchain_pplx_labs.recording import CassetteResponder


# Scenario fault fields exposed as ``serve --<name> N``.
_FAULT_FLAGS = {
    "stall-after": "go silent with the socket open",
    "drop-after": "close the socket mid-answer",
    "garbage-after": "send an undecodable packet",
    "wrong-types-after": "send a frame whose output is not a string",
    "binary-after": "send a binary frame",
    "fail-after": "send status failed (with --fail TEXT)",
}


DEFAULT_SYSTEM = "Answer concisely and cite your sources."
"""The system prompt of ``ask`` and ``cassette record`` alike, so a CLI recording replays with ``ask``."""

EXIT_BROKEN_PIPE = 141
"""Exit code when the reader of stdout goes away (``| head``): 128 + SIGPIPE, as a shell reports a Unix tool."""


class CliError(Exception):
    """A failure the user can fix from its message alone; printed without a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``pplx-labs: error:`` line too (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pplx-labs: error: {message} (see {self.prog} --help)\n")


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
        return _error(_message(exc))


def _error(message: str) -> int:
    # Multi-line messages (a payload diff) are written so their first line says what happened.
    line = next((part for part in message.splitlines() if part.strip()), message)
    print(f"pplx-labs: error: {line.strip()}", file=sys.stderr)
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
    return "; ".join(
        f"{'.'.join(map(str, error['loc']))}: {error['msg'].removeprefix('Value error, ')}"
        for error in exc.errors()
    )


def _os_message(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage mistakes argparse cannot see alone: exit code 2 like its own errors."""
    if getattr(args, "fail_after", None) is not None and getattr(args, "fail", None) is None:
        parser.error("--fail-after needs --fail TEXT (the failure text to send)")
    if getattr(args, "question", None) is not None and not args.question.strip():
        parser.error("the question is empty")
    if getattr(args, "proxy", None) and getattr(args, "emulator", False):
        parser.error(
            "--proxy is for recording a --base-url server; the in-process --emulator is reached directly"
        )


def _add_protocol_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--protocol", metavar="FILE.json", default=None, help="LabsProtocol fields (path, event names...)"
    )


def _protocol(args: argparse.Namespace) -> LabsProtocol:
    from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol

    path = getattr(args, "protocol", None)
    return DEFAULT_PROTOCOL if path is None else LabsProtocol.from_file(path)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pplx-labs", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Subcommand parsers are _Parser too (argparse uses the parent's class); typed as the base for add_parser().
    commands: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(  # type: ignore[assignment]
        required=True, metavar="COMMAND"
    )

    ask = commands.add_parser("ask", help="stream an answer and print its sources as footnotes")
    ask.add_argument("question")
    ask.add_argument("--model", default=DEFAULT_MODEL, help=f"one of {', '.join(KNOWN_MODELS)} or newer")
    where = ask.add_mutually_exclusive_group()
    where.add_argument("--emulator", action="store_true", help="answer offline from an in-process emulator")
    where.add_argument("--base-url", default=None, help=f"server root (default {DEFAULT_BASE_URL})")
    ask.add_argument("--system", default=DEFAULT_SYSTEM, help='system prompt; --system "" sends none')
    ask.add_argument("--show-reasoning", action="store_true", help="also print the model's thinking")
    _add_protocol_flag(ask)
    ask.set_defaults(run=_run_ask)

    serve = commands.add_parser("serve", help="run the Labs emulator; prints its base URL first")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port, default=0, help="0 picks a free port")
    serve.add_argument("--chunk-size", type=positive_int, default=24, help="characters per progress frame")
    # Paced like the recorded cassettes by default, so a client that polls sees frames arrive.
    serve.add_argument("--delay", type=seconds, default=0.01, help="seconds between frames (0 for speed)")
    serve.add_argument("--blocked", action="store_true", help="answer every request with a Cloudflare 403")
    serve.add_argument("--refuse-websocket", action="store_true", help="only allow the polling transport")
    serve.add_argument("--fail", metavar="TEXT", default=None, help="fail every query with this server text")
    for flag, what in _FAULT_FLAGS.items():
        serve.add_argument(f"--{flag}", type=count, default=None, metavar="N", help=f"after N frames, {what}")
    serve.add_argument("--first-delay", type=seconds, default=0.05, help="seconds before the first frame")
    serve.add_argument(
        "--allowed-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="accept only this Origin (repeatable); default: none, any https://*.perplexity.ai, its own",
    )
    _add_protocol_flag(serve)
    serve.add_argument(
        "--follow-tools",
        action="store_true",
        help="play a model that obeys tool and JSON-schema prompts (for agents and structured output)",
    )
    serve.set_defaults(run=_run_serve)
    _add_cassette_commands(commands, serve)
    from langchain_pplx_labs.gateway import cli as gateway_cli  # light: heavy imports happen in its run()

    gateway_cli.add_parser(commands)
    from langchain_pplx_labs import doctor  # light too: its walk is imported in run()

    doctor.add_parser(commands)
    return parser


def _run_ask(args: argparse.Namespace) -> int:
    return asyncio.run(_ask(args, sys.stdout))


def conversation(question: str, system: str | None) -> list[BaseMessage]:
    """The messages ``ask`` sends and ``cassette record`` records: one builder, so recordings replay."""
    from langchain_core.messages import HumanMessage, SystemMessage

    # An empty system turn is still a message the server sees; "" means "no system prompt".
    return [*([SystemMessage(system)] if system and system.strip() else []), HumanMessage(question)]


async def _ask(args: argparse.Namespace, out: TextIO) -> int:
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs
    from langchain_pplx_labs.errors import PerplexityLabsError

    protocol = _protocol(args)
    async with _maybe_emulator(args.emulator, protocol) as emulator_url:
        base_url = emulator_url or args.base_url
        where = {"base_url": base_url} if base_url else {}
        model = ChatPerplexityLabs(model=args.model, protocol=protocol, **where)
        citations: list[str] = []
        thinking = False
        started = False
        try:
            async for chunk in model.astream(conversation(args.question, args.system)):
                reasoning = chunk.additional_kwargs.get("reasoning_content", "")
                if args.show_reasoning and reasoning:
                    out.write(("" if thinking else "[thinking] ") + reasoning)
                    thinking = started = True
                if chunk.content:
                    if thinking:
                        out.write("\n[answer] ")
                        thinking = False
                    out.write(str(chunk.content))
                    started = True
                out.flush()
                citations = chunk.response_metadata.get("citations", citations)
        except PerplexityLabsError:
            if started:  # end the half-written answer's line; the error itself goes to stderr
                out.write("\n")
                out.flush()
            raise
        finally:
            await model.aclose()
        out.write("\n")
        if citations:
            out.write("\nSources:\n")
            for number, url in enumerate(citations, start=1):
                out.write(f"[{number}] {url}\n")
    return 0


@contextlib.asynccontextmanager
async def _maybe_emulator(enabled: bool, protocol: LabsProtocol | None = None) -> AsyncIterator[str | None]:
    if not enabled:
        yield None
        return
    from langchain_pplx_labs.emulator import LabsEmulator

    async with LabsEmulator(protocol=protocol or _protocol(argparse.Namespace())) as emulator:
        yield emulator.base_url


def _tool_follower(pacing: Scenario) -> Responder:
    """``schema_follower``'s answers, paced and faulted as the command line asks."""
    from langchain_pplx_labs.emulator import Scenario
    from langchain_pplx_labs.emulator.rules import schema_follower

    flags = pacing.model_dump(exclude={"answer", "reasoning", "citations"})

    def follow(request: LabsRequest) -> Scenario | Sequence[Step]:
        reply = schema_follower(request)
        return reply.model_copy(update=flags) if isinstance(reply, Scenario) else reply

    return follow


def _run_serve(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.emulator import LabsEmulator, Scenario

    fields = (flag.replace("-", "_") for flag in _FAULT_FLAGS)
    faults = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    scenario = Scenario(
        chunk_size=args.chunk_size, delay=args.delay, first_delay=args.first_delay, fail=args.fail, **faults
    )
    if args.follow_tools and args.cassettes:
        raise CliError("--follow-tools and --cassettes both choose the answers; pass one of them")
    replay = _cassette_responder(args)
    emulator = LabsEmulator(
        replay or (_tool_follower(scenario) if args.follow_tools else lambda _request: scenario),
        host=args.host,
        port=args.port,
        blocked=args.blocked or bool(replay and replay.refuses_connections),
        refuse_websocket=args.refuse_websocket,
        protocol=_protocol(args),
        allowed_origins=args.allowed_origin,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await emulator.start()
    except OSError as exc:
        # Port taken, unknown host, no permission: the OS text alone does not say which address.
        await emulator.stop()
        raise CliError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from None
    try:
        print(emulator.base_url, flush=True)
        print(f"Perplexity Labs emulator serving on {emulator.base_url} (Ctrl+C to stop)", file=sys.stderr)
        await stop.wait()
    finally:
        await emulator.stop()
    return 0


def _add_cassette_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], serve: argparse.ArgumentParser
) -> None:
    serve.add_argument(
        "--cassettes", metavar="PATH", default=None, help="replay cassettes (a file or a folder) instead"
    )
    serve.add_argument(
        "--speed", type=seconds, default=0.0, help="cassette timing: 0 = no waits, 1 = as recorded"
    )
    cassette = commands.add_parser("cassette", help="show or record Labs cassettes")
    actions = cassette.add_subparsers(required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print a cassette as a readable transcript")
    show.add_argument("file")
    show.add_argument("--frames", action="store_true", help="also list every frame with its time")
    _add_protocol_flag(show)  # which events are the answer's frames, for a cassette of a changed Labs
    show.set_defaults(run=_run_cassette_show)
    record = actions.add_parser("record", help="ask one question and save the session as a cassette")
    record.add_argument("question")
    record.add_argument("--out", required=True, help="cassette file to write")
    record.add_argument("--model", default=DEFAULT_MODEL)
    record.add_argument(
        "--system",
        default=DEFAULT_SYSTEM,
        help='system prompt, the same default as ask; --system "" sends none',
    )
    where = record.add_mutually_exclusive_group()
    where.add_argument("--emulator", action="store_true", help="record an in-process emulator (synthetic)")
    where.add_argument("--base-url", default=DEFAULT_BASE_URL, help="server to record (live)")
    record.add_argument("--note", default="", help="free text stored in the cassette header")
    record.add_argument("--redact-user-agent", action="store_true", help="also hide the User-Agent")
    record.add_argument(
        "--silence", type=positive_seconds, default=10.0, help="seconds of silence that end a recording"
    )
    record.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header, repeatable; saved redacted (cookies come from $PPLX_LABS_COOKIES)",
    )
    record.add_argument(
        "--proxy",
        type=proxy_url,
        default=None,
        help="http://, socks4:// or socks5:// proxy (with a port) to record through",
    )
    _add_protocol_flag(record)
    record.set_defaults(run=_run_cassette_record)


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: use 'Name: value'")
    return name.strip(), value.strip()


def _cassette_responder(args: argparse.Namespace) -> CassetteResponder | None:
    if not args.cassettes:
        return None
    from langchain_pplx_labs.recording import CassetteResponder

    responder = CassetteResponder.from_paths([args.cassettes], speed=args.speed)
    if not responder.cassettes:
        # Serving nothing would answer every question with a mismatch; say so up front.
        raise CliError(f"no *.labs.yaml cassettes under {args.cassettes}")
    return responder


def _run_cassette_show(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.recording import load_cassette
    from langchain_pplx_labs.recording.transcript import format_transcript

    cassette = load_cassette(args.file)  # a CassetteError names the file; main prints it
    transcript = format_transcript(cassette, source=args.file, frames=args.frames, protocol=_protocol(args))
    sys.stdout.write(transcript)
    return 0


def _run_cassette_record(args: argparse.Namespace) -> int:
    return asyncio.run(_cassette_record(args))


async def _cassette_record(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs
    from langchain_pplx_labs.messages import to_labs_payload
    from langchain_pplx_labs.recording import Redactor, record_cassette, save_cassette
    from langchain_pplx_labs.recording.recorder import upstream_headers

    # The payload exactly as `ask` (and any ChatPerplexityLabs) sends it, so the recording replays.
    protocol = _protocol(args)
    defaults = ChatPerplexityLabs(model=args.model, protocol=protocol)
    payload = to_labs_payload(
        conversation(args.question, args.system),
        defaults.model,
        protocol=protocol,
        max_input_chars=defaults.max_input_chars,
    )
    extra = dict(args.header)
    # Headers given on the command line are usually credentials: none is saved in clear.
    redactor = Redactor(user_agent=args.redact_user_agent, extra_headers=tuple(extra))
    async with _maybe_emulator(args.emulator, protocol) as emulator_url:
        cassette = await record_cassette(
            emulator_url or args.base_url,
            [payload],
            provenance="synthetic" if emulator_url else "live",
            note=args.note,
            server="pplx-labs emulator" if emulator_url else args.base_url,
            headers=upstream_headers(extra, protocol=protocol),
            proxy=None if emulator_url else args.proxy,
            redactor=redactor,
            silence=args.silence,
            protocol=protocol,
        )
    path = save_cassette(cassette, args.out)
    print(f"recorded {len(cassette.interactions[0].frames)} frames to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
