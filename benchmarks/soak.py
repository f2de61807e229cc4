"""Soak test (not in CI): thousands of questions with random faults; every fault must be a typed error, nothing leaks.

Run: ``python benchmarks/soak.py`` (defaults: 2,000 sequential questions, then 10 rounds of 100
concurrent ones, 20% of them with a random fault). Prints a markdown report: outcomes by type,
and file descriptors, RSS, asyncio tasks and emulator sockets at start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks._common import memory_kib
from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator
from langchain_pplx_labs.emulator.script import Drop, LabsRequest, Scenario, Step
from langchain_pplx_labs.errors import PerplexityLabsError

ANSWER = "Soak answer with a source [1] and some more words to stream over several frames."
# Fault name -> (scenario fields, expected error class name, expected timeout kind or None).
FAULTS: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "stall_first": ({"stall_after": 0}, "PerplexityLabsTimeoutError", "first_token"),
    "stall_mid": ({"stall_after": 2}, "PerplexityLabsTimeoutError", "idle"),
    "drop_mid": ({"drop_after": 2}, "PerplexityLabsDisconnectedError", None),
    "garbage": ({"garbage_after": 1}, "PerplexityLabsProtocolError", None),
    "wrong_types": ({"wrong_types_after": 1}, "PerplexityLabsProtocolError", None),
    "binary": ({"binary_after": 1}, "PerplexityLabsProtocolError", None),
    "failed": ({"fail": "Error in processing query"}, "PerplexityLabsServerError", None),
    "slow": ({"delay": 0.01}, "ok", None),
    "drop_first": ({}, "ok", None),  # dropped before any frame: retried, then answered
}
_FAULT_RE = re.compile(r"fault=(\w+)")


class FaultyResponder:
    """Answers by the fault named in the question; ``drop_first`` drops only the first try."""

    def __init__(self) -> None:
        self._dropped: set[str] = set()

    def __call__(self, request: LabsRequest) -> Scenario | Sequence[Step]:
        match = _FAULT_RE.search(request.question)
        name = match.group(1) if match else "none"
        if name == "drop_first" and request.question not in self._dropped:
            self._dropped.add(request.question)
            return [Drop()]
        fields = FAULTS[name][0] if name in FAULTS else {}
        return Scenario(answer=ANSWER, chunk_size=16, **fields)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _question(index: int, rng: random.Random, fault_rate: float) -> tuple[str, str]:
    fault = rng.choice(list(FAULTS)) if rng.random() < fault_rate else "none"
    return f"soak question {index} fault={fault}", fault


def _judge(fault: str, outcome: BaseException | Any) -> str:
    """Classify one outcome; anything unexpected is reported with a ``BAD`` prefix."""
    expected, kind = (FAULTS[fault][1], FAULTS[fault][2]) if fault in FAULTS else ("ok", None)
    if not isinstance(outcome, BaseException):
        got = "ok" if outcome.content == ANSWER else "BAD wrong answer"
    elif not isinstance(outcome, PerplexityLabsError):
        return f"BAD untyped {type(outcome).__name__}: {outcome}"
    else:
        got = type(outcome).__name__
        if kind is not None and getattr(outcome, "which", None) != kind:
            got += f" (which={getattr(outcome, 'which', None)}, expected {kind})"
        if kind is not None and getattr(outcome, "which", None) == kind:
            got += f" ({kind})"
    base = got.split(" (")[0]
    return got if base == expected else f"BAD {got} for fault {fault} (expected {expected})"


async def _ask(chat: ChatPerplexityLabs, question: str) -> Any:
    try:
        return await chat.ainvoke(question)
    except Exception as exc:
        return exc


def _snapshot(emulator: LabsEmulator) -> dict[str, int]:
    gc.collect()
    return {
        "fds": _fds(),
        "rss_kib": memory_kib() or -1,
        "asyncio_tasks": len(asyncio.all_tasks()),
        "emulator_open_sockets": emulator.open_sockets,
    }


async def soak(args: argparse.Namespace, emulator: LabsEmulator) -> int:
    rng = random.Random(args.seed)
    outcomes: collections.Counter[str] = collections.Counter()
    chat = ChatPerplexityLabs(
        transport="labs",
        base_url=emulator.base_url,
        model="sonar",
        first_token_timeout=args.timeout,
        idle_timeout=args.timeout,
        timeout=30,
        max_retries=1,
        max_connections=args.max_connections,
    )
    async with chat:
        await chat.ainvoke("warm up")
    snapshots = {"start": _snapshot(emulator)}
    started = time.monotonic()
    async with chat:
        for index in range(args.sequential):
            question, fault = _question(index, rng, args.fault_rate)
            outcomes[_judge(fault, await _ask(chat, question))] += 1
        sequential_s = time.monotonic() - started
        snapshots["after sequential"] = _snapshot(emulator)
        for round_number in range(args.rounds):
            batch = [
                _question(args.sequential + round_number * 1000 + i, rng, args.fault_rate)
                for i in range(args.concurrency)
            ]
            results = await asyncio.gather(*(_ask(chat, q) for q, _ in batch))
            for (_, fault), result in zip(batch, results, strict=True):
                outcomes[_judge(fault, result)] += 1
    total_s = time.monotonic() - started
    await asyncio.sleep(0.5)  # let the emulator notice the closed sockets
    snapshots["end (model closed)"] = _snapshot(emulator)
    _report(args, outcomes, snapshots, sequential_s, total_s)
    leaked = snapshots["end (model closed)"]["fds"] - snapshots["start"]["fds"]
    bad = sum(count for name, count in outcomes.items() if name.startswith("BAD"))
    return 1 if bad or leaked > 2 else 0


def _report(
    args: argparse.Namespace,
    outcomes: collections.Counter[str],
    snapshots: dict[str, dict[str, int]],
    sequential_s: float,
    total_s: float,
) -> None:
    total = args.sequential + args.rounds * args.concurrency
    print(
        f"## Soak: {args.sequential} sequential + {args.rounds}x{args.concurrency} concurrent "
        f"questions, fault rate {args.fault_rate:.0%}, seed {args.seed}\n"
    )
    print(f"{total} questions in {total_s:.1f}s (sequential phase {sequential_s:.1f}s)\n")
    print("| outcome | count |\n|---|---:|")
    for name, count in sorted(outcomes.items(), key=lambda item: (-item[1], item[0])):
        print(f"| {name} | {count} |")
    print("\n| when | fds | RSS (KiB) | asyncio tasks | emulator open sockets |\n|---|---:|---:|---:|---:|")
    for when, snap in snapshots.items():
        print(
            f"| {when} | {snap['fds']} | {snap['rss_kib']} | {snap['asyncio_tasks']} | "
            f"{snap['emulator_open_sockets']} |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=0.5, help="first-token and idle timeouts")
    parser.add_argument("--max-connections", type=int, default=16)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args(argv)
    with EmulatorThread(LabsEmulator(FaultyResponder())) as thread:
        return asyncio.run(soak(args, thread.emulator))


if __name__ == "__main__":
    sys.exit(main())
