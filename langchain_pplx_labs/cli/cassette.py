"""``pplx-labs cassette``: show a cassette as a transcript, or record one question as a cassette."""

from __future__ import annotations

import argparse
import asyncio
import sys
from urllib.parse import urlsplit

from langchain_pplx_labs._cliargs import positive_seconds, proxy_url, server_root
from langchain_pplx_labs._plural import counted
from langchain_pplx_labs.cli._shared import (
    MODEL_DEFAULT_HELP,
    add_protocol_flag,
    add_transport_flag,
    is_loopback,
    labs_protocol,
    maybe_emulator,
    transport_option,
)
from langchain_pplx_labs.cli.ask import SYSTEM_HELP, conversation, default_system
from langchain_pplx_labs.protocol import DEFAULT_BASE_URL


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``cassette show`` and ``cassette record``."""
    cassette = commands.add_parser("cassette", help="show or record Labs and web cassettes")
    actions = cassette.add_subparsers(required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print a cassette as a readable transcript")
    show.add_argument("file")
    show.add_argument("--frames", action="store_true", help="also list every frame with its time")
    add_protocol_flag(show)  # which events are the answer's frames, for a cassette of a changed Labs
    show.set_defaults(run=run_show)
    record = actions.add_parser("record", help="ask one question and save the session as a cassette")
    record.add_argument("question")
    record.add_argument("--out", required=True, help="cassette file to write")
    record.add_argument("--model", default=None, help=MODEL_DEFAULT_HELP)
    record.add_argument(
        "--system",
        default=None,
        help=f"{SYSTEM_HELP}, as ask",
    )
    where = record.add_mutually_exclusive_group()
    where.add_argument("--emulator", action="store_true", help="record an in-process emulator (synthetic)")
    where.add_argument(
        "--base-url",
        type=server_root,
        default=DEFAULT_BASE_URL,
        help="server to record (live; synthetic on loopback)",
    )
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
    add_protocol_flag(record)
    add_transport_flag(record)
    record.set_defaults(run=run_record)
    return cassette


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: use 'Name: value'")
    return name.strip(), value.strip()


def run_show(args: argparse.Namespace) -> int:
    """Print the cassette's transcript to stdout."""
    from langchain_pplx_labs.recording import load_cassette
    from langchain_pplx_labs.recording.transcript import format_transcript

    cassette = load_cassette(args.file)  # a CassetteError names the file; main prints it
    transcript = format_transcript(
        cassette, source=args.file, frames=args.frames, protocol=labs_protocol(args)
    )
    sys.stdout.write(transcript)
    return 0


def run_record(args: argparse.Namespace) -> int:
    """Ask the question once through the recorder and save the cassette."""
    return asyncio.run(_record(args))


async def _record(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs
    from langchain_pplx_labs.messages import to_payload
    from langchain_pplx_labs.recording import Redactor, record_cassette, save_cassette
    from langchain_pplx_labs.recording.recorder import upstream_headers

    # The payload exactly as `ask` (and any ChatPerplexityLabs) sends it, so the recording replays.
    protocol = labs_protocol(args)
    # No --model: the model's own default, which follows the transport (as for ask).
    named = {"model": args.model} if args.model else {}
    defaults = ChatPerplexityLabs(protocol=protocol, **named, **transport_option(args))
    payload = to_payload(
        conversation(args.question, default_system(args.system, defaults.transport)),
        defaults.model,
        protocol=protocol,
        max_input_chars=defaults.max_input_chars,
    )
    extra = dict(args.header)
    # Headers given on the command line are usually credentials: none is saved in clear.
    redactor = Redactor(user_agent=args.redact_user_agent, extra_headers=tuple(extra))
    # A loopback server is an emulator or a stand-in, never the live service (as the doctor's --record).
    loopback = is_loopback(urlsplit(args.base_url).hostname or "")
    async with maybe_emulator(args.emulator, protocol) as emulator_url:
        cassette = await record_cassette(
            emulator_url or args.base_url,
            [payload],
            provenance="synthetic" if emulator_url or loopback else "live",
            note=args.note,
            server="pplx-labs emulator" if emulator_url else args.base_url,
            headers=upstream_headers(extra, protocol=protocol),
            proxy=None if emulator_url else args.proxy,
            redactor=redactor,
            silence=args.silence,
            protocol=protocol,
            transport=defaults.transport,
        )
    path = save_cassette(cassette, args.out)
    what = "message" if cassette.transport == "web" else "frame"
    print(f"recorded {counted(len(cassette.interactions[0].frames), what)} to {path}", file=sys.stderr)
    return 0
