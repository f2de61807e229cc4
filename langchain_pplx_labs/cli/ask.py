"""``pplx-labs ask``: stream one answer to stdout, its sources as footnotes."""

from __future__ import annotations

import argparse
import base64
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from langchain_pplx_labs._cliargs import CliError, model_name, positive_seconds
from langchain_pplx_labs.attachments import MAX_ATTACHMENT_BYTES, over_the_limit
from langchain_pplx_labs.cli._shared import (
    MODEL_DEFAULT_HELP,
    add_base_url_flag,
    add_ca_file_flag,
    add_impersonate_flag,
    add_protocol_flag,
    add_transport_flag,
    impersonate_option,
    labs_protocol,
    maybe_emulator,
    transport_option,
    trusted_context,
)
from langchain_pplx_labs.protocol import RECENCY_FILTERS, SEARCH_SOURCES

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

DEFAULT_SYSTEM = "Answer concisely and cite your sources."
"""The system prompt of ``ask`` and ``cassette record`` alike over Labs, so a CLI recording replays with ``ask``.

Over the web there is none by default: the web app takes one question, and a system turn would make it a
transcript of the conversation instead of the question itself."""

SYSTEM_HELP = (
    f'system prompt (default over labs: "{DEFAULT_SYSTEM}"; over the web: none); --system "" sends none'
)


def default_system(system: str | None, transport: str) -> str | None:
    """``--system`` as given, else ``DEFAULT_SYSTEM`` over Labs and none over the web."""
    if system is not None:
        return system
    return DEFAULT_SYSTEM if transport == "labs" else None


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``ask`` and its flags; the caller binds the command to ``ask``."""
    ask = commands.add_parser("ask", help="stream an answer and print its sources as footnotes")
    ask.add_argument("question")
    ask.add_argument("--model", type=model_name, default=None, help=MODEL_DEFAULT_HELP)
    where = ask.add_mutually_exclusive_group()
    where.add_argument("--emulator", action="store_true", help="answer offline from an in-process emulator")
    add_base_url_flag(where)
    ask.add_argument("--system", default=None, help=SYSTEM_HELP)
    ask.add_argument("--show-reasoning", action="store_true", help="also print the model's thinking")
    ask.add_argument(
        "--first-token-timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds to wait for the first frame (default 60): a silent server fails after it",
    )
    _add_web_flags(ask)
    add_protocol_flag(ask)
    add_transport_flag(ask)
    add_impersonate_flag(ask)
    add_ca_file_flag(ask)
    return ask


def _add_web_flags(ask: argparse.ArgumentParser) -> None:
    """The web app's search options and attachments, under ChatPerplexityLabs' field names."""
    ask.add_argument("--search-mode", choices=list(SEARCH_SOURCES), help="where to search (web)")
    ask.add_argument(
        "--search-recency-filter", choices=RECENCY_FILTERS, help="only sources this recent (web)"
    )
    ask.add_argument("--disable-search", action="store_true", help="answer without searching (web)")
    ask.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="FILE",
        help="an image or a file to send with the question, repeatable (web, signed in: pplx-labs login)",
    )


def _web_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model fields the web flags set (none when not given, so the model's defaults stand)."""
    given = {"search_mode": args.search_mode, "search_recency_filter": args.search_recency_filter}
    options: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    return {**options, "disable_search": True} if args.disable_search else options


def attachment_block(path: str) -> dict[str, Any]:
    """``path``'s bytes as a LangChain v1 content block (the model checks its type and size)."""
    size = Path(path).stat().st_size  # a missing file: one OSError line naming it
    if size > MAX_ATTACHMENT_BYTES:  # said before reading it all in, in the model's words
        raise CliError(f"{path} {over_the_limit(size)}")
    data = Path(path).read_bytes()
    mime = mimetypes.guess_type(path)[0] or ""
    return {
        "type": "image" if mime.startswith("image/") else "file",
        "base64": base64.b64encode(data).decode("ascii"),
        "mime_type": mime,
        "filename": Path(path).name,
    }


def conversation(
    question: str, system: str | None, files: list[dict[str, Any]] | None = None
) -> list[BaseMessage]:
    """The messages ``ask`` sends and ``cassette record`` records: one builder, so recordings replay."""
    from langchain_core.messages import HumanMessage, SystemMessage

    # An empty system turn is still a message the server sees; "" means "no system prompt".
    asked = HumanMessage([{"type": "text", "text": question}, *files]) if files else HumanMessage(question)
    return [*([SystemMessage(system)] if system and system.strip() else []), asked]


async def ask(args: argparse.Namespace, out: TextIO) -> int:
    """Stream the answer to ``out`` (thinking too with ``--show-reasoning``), then the numbered sources."""
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs
    from langchain_pplx_labs.errors import PerplexityLabsError

    protocol = labs_protocol(args)
    async with maybe_emulator(args.emulator, protocol) as emulator_url:
        base_url = emulator_url or args.base_url
        where = {"base_url": base_url} if base_url else {}
        # No --model: the model's own default, which follows the transport.
        named = {"model": args.model} if args.model is not None else {}
        waits = {"first_token_timeout": args.first_token_timeout} if args.first_token_timeout else {}
        voice = impersonate_option(args)
        trusted = trusted_context(args)
        trust = {"ssl_context": trusted} if trusted is not None else {}
        files = [attachment_block(path) for path in args.attach]
        model = ChatPerplexityLabs(
            protocol=protocol,
            **named,
            **transport_option(args),
            **voice,
            **trust,
            **where,
            **waits,
            **_web_options(args),
        )
        citations: list[str] = []
        thinking = False
        started = False
        try:
            messages = conversation(args.question, default_system(args.system, model.transport), files)
            async for chunk in model.astream(messages):
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
