"""Rebuild the synthetic cassette corpus in ``cassettes/`` by recording the emulator: ``python -m ...build_corpus``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_pplx_labs.emulator import Emit, LabsEmulator, Scenario, Step, progress_frame
from langchain_pplx_labs.emulator.script import made_up_answer
from langchain_pplx_labs.protocol import build_payload, progress_event
from langchain_pplx_labs.recording.cassette import CASSETTE_SUFFIX, save_cassette
from langchain_pplx_labs.recording.recorder import record_cassette

logger = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]
CORPUS_DIR = _REPO / "cassettes" / "test_cassettes"
"""In the source checkout, not the current folder, so running it from elsewhere leaves no stray folder.
Named after the test module, so ``@pytest.mark.vcr`` tests find their cassette by test name."""

Turn = list[tuple[str, str]]


@dataclass
class Entry:
    """One corpus cassette: how to script the emulator and which conversation to record."""

    name: str
    note: str
    turns: list[Turn]
    model: str = "sonar-pro"
    reply: Scenario | list[Step] = field(default_factory=Scenario)
    blocked: bool = False


def _ask(question: str) -> list[Turn]:
    return [[("user", question)]]


def _shrinking_steps() -> list[Step]:
    event = progress_event("sonar-pro")
    outputs = [
        "The answer",
        "The answer is 42",
        "The answer is 42",
        "The answer is",
        "The answer is 42, as computed",
    ]
    steps: list[Step] = [
        Emit(event, progress_frame(text, elapsed=0.1 * n)) for n, text in enumerate(outputs, 1)
    ]
    final = "The answer is 42, as computed by Deep Thought [1]."
    cited = ["https://en.wikipedia.org/wiki/42_(number)"]
    steps.append(Emit(event, progress_frame(final, elapsed=0.7, citations=cited, final=True)))
    return steps


_LONG = " ".join(
    f"Paragraph {n}: Paris has been a centre of finance, diplomacy, commerce and science [1]."
    for n in range(700)
)
_UNICODE = (
    "Grüße aus Zürich — Ελληνικά, 日本語のテキスト, עברית מימין לשמאל, "
    "العربية من اليمين إلى اليسار, emoji 👩‍👩‍👧‍👦 🇫🇷 🚀 ✨ [1]."
)
_JSON = '{"city": "Paris", "country": "France", "population_millions": 2.1, "sources": [1, 2]}'

CORPUS: list[Entry] = [
    Entry(
        "test_plain_answer_with_citations",
        "URL citations on the final frame",
        _ask("What is the capital of France?"),
    ),
    Entry(
        "test_citation_objects",
        "citations as objects with url and title",
        _ask("What is LangChain?"),
        reply=Scenario(
            citations=[
                {
                    "url": "https://python.langchain.com/docs/introduction/",
                    "title": "Introduction | LangChain",
                },
                {"url": "https://github.com/langchain-ai/langchain", "title": "langchain-ai/langchain"},
            ]
        ),
    ),
    Entry(
        "test_no_citations",
        "an answer without sources",
        _ask("Say hello."),
        reply=Scenario(answer="Hello!", citations=[]),
    ),
    Entry(
        "test_long_answer",
        "an answer over 50 KB in many frames",
        _ask("Tell me everything about Paris."),
        reply=Scenario(answer=_LONG, chunk_size=1500),
    ),
    Entry(
        "test_sonar_reasoning",
        "thinking with an explicit <think> tag",
        _ask("Why is the sky blue?"),
        model="sonar-reasoning",
    ),
    Entry(
        "test_sonar_reasoning_pro",
        "thinking with an explicit <think> tag",
        _ask("What is Socket.IO?"),
        model="sonar-reasoning-pro",
    ),
    Entry(
        "test_r1_1776_without_opening_tag",
        "r1-1776 starts inside the think section",
        _ask("What is the capital of France?"),
        model="r1-1776",
    ),
    Entry(
        "test_multi_turn_with_system_prompt",
        "two turns of one conversation with a system prompt",
        [
            [
                ("system", "Answer concisely and cite your sources."),
                ("user", "What is the capital of France?"),
            ],
            [
                ("system", "Answer concisely and cite your sources."),
                ("user", "What is the capital of France?"),
                ("assistant", made_up_answer("What is the capital of France?")),
                ("user", "And what is LangChain?"),
            ],
        ],
    ),
    Entry(
        "test_failed_status",
        "status failed with the server's text",
        _ask("Break please."),
        model="sonar-reasoning-pro",
        reply=Scenario(fail="Error in processing query", fail_after=2),
    ),
    Entry(
        "test_cloudflare_403",
        "the handshake answered by a Cloudflare challenge page",
        _ask("Hello?"),
        blocked=True,
    ),
    Entry(
        "test_silent_mid_stream",
        "the server goes silent after two frames",
        _ask("Go quiet."),
        reply=Scenario(stall_after=2, chunk_size=10),
    ),
    Entry(
        "test_disconnect_mid_stream",
        "the socket closes after two frames",
        _ask("Hang up."),
        reply=Scenario(drop_after=2, chunk_size=10),
    ),
    Entry(
        "test_unknown_extra_events",
        "unknown events between progress frames",
        _ask("What is Socket.IO?"),
        reply=Scenario(extra_events=True),
    ),
    Entry(
        "test_non_ascii_emoji_rtl",
        "multi-byte text split mid-word across frames",
        _ask("Say hello in many scripts."),
        reply=Scenario(answer=_UNICODE, chunk_size=3),
    ),
    Entry(
        "test_shrinking_and_repeated_output",
        "an output that repeats, then shrinks, then grows",
        _ask("What is the answer?"),
        reply=_shrinking_steps(),
    ),
    Entry(
        "test_json_structured_output",
        "a JSON answer for structured output",
        _ask("Give Paris facts as JSON."),
        reply=Scenario(answer=_JSON),
    ),
]


def payloads_for(entry: Entry) -> list[dict[str, Any]]:
    """The payloads ``ChatPerplexityLabs`` sends for each turn of ``entry``."""
    return [
        build_payload(entry.model, [{"role": role, "content": text} for role, text in turn])  # type: ignore[typeddict-item]
        for turn in entry.turns
    ]


async def build(out: Path, names: Sequence[str] = ()) -> list[Path]:
    """Record every corpus entry (or the named ones) from an in-process emulator into ``out``."""
    written: list[Path] = []
    async with LabsEmulator() as emulator:
        for entry in CORPUS:
            if names and entry.name not in names:
                continue
            emulator.reset()
            reply = entry.reply
            if isinstance(reply, Scenario) and not reply.delay:
                # Some pacing, so cassettes carry real timing for --speed to scale.
                reply = reply.model_copy(update={"delay": 0.01, "first_delay": 0.05})
            emulator.script(reply)
            emulator.blocked = entry.blocked
            cassette = await record_cassette(
                emulator.base_url,
                payloads_for(entry),
                provenance="synthetic",
                note=entry.note,
                server="pplx-labs emulator",
                silence=0.5,
            )
            written.append(save_cassette(cassette, out / f"{entry.name}{CASSETTE_SUFFIX}"))
            logger.info("recorded %s", written[-1])
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m langchain_pplx_labs.recording.build_corpus", description=__doc__
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"folder to write (default {CORPUS_DIR} in a source checkout)"
    )
    parser.add_argument("names", nargs="*", help="only these entries")
    args = parser.parse_args(argv)
    valid = [entry.name for entry in CORPUS]
    unknown = [name for name in args.names if name not in valid]
    if unknown:
        parser.error(f"unknown entry {', '.join(unknown)}; valid entries: {', '.join(valid)}")
    if args.out is None:
        if not (_REPO / "pyproject.toml").is_file():
            # An installed package has no corpus folder; writing into site-packages helps no one.
            parser.error("not running from a source checkout: give --out FOLDER")
        args.out = CORPUS_DIR
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(build(args.out, args.names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
