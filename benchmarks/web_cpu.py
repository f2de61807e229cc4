"""Client CPU per web answer of 2,000 SSE messages: this version, an older commit and ChatOpenAI, side by side."""

# ``python -m benchmarks.web_cpu [--quick] [--reps N] [--baseline-ref REF]``, or ``python -m benchmarks --only
# web_cpu``. One answer (6,000 characters of markdown with eight sources, in 3-character pieces: 2,000 SSE
# messages) is streamed by three clients, each in a process of its own that holds only that client
# (``_web_cpu_client.py``), asked in interleaved rounds after a warm-up; CPU is the client process's
# (``time.process_time``) from the call to the end of the stream:
# - this version: ``ChatPerplexityLabs(transport="web").astream`` (one warm model) against the emulator,
#   which serves its default web variant (``WebVariant()``: the schematized stream, ``final_sse_message``),
#   in a process of its own at no delay (``_emulator_process.py``);
# - the same against the same emulator from ``--baseline-ref`` (default c2bcc78, the code before issue 26's
#   redesign): ``git archive`` of its ``langchain_pplx_labs/`` into a temp dir put first on the client's
#   ``sys.path``; skipped, with the reason printed, outside a git checkout (an sdist);
# - langchain-openai's ``ChatOpenAI.astream`` against ``peer.py``'s loopback OpenAI-style server (a thread of
#   this process) streaming the same text in the same 2,000 pieces.
# Bytes are what the client read from its sockets (HTTP framing included), messages the SSE ``data:`` lines
# in them.

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import percentile, stop_child
from benchmarks._emulator_process import emulator_process
from benchmarks.peer import SSEServerThread

DEFAULT_BASELINE_REF = "c2bcc78"
MESSAGES = 2_000
PIECE = 3  # characters per message: the web app streams an answer a token or so at a time
MODEL = "auto"  # the web transport's default model; no plan, every message is answer text
TARGET = 0.5  # the most this version may spend of either reference's CPU (issue 26)
ROOT = Path(__file__).resolve().parent.parent
CLIENT_SCRIPT = Path(__file__).resolve().parent / "_web_cpu_client.py"
LABS_CALL = 'ChatPerplexityLabs(transport="web").astream'
OPENAI_CALL = "langchain-openai ChatOpenAI.astream, loopback OpenAI SSE server"
PLAIN_CALL = 'ChatPerplexityLabs(transport="web", impersonate=None).astream (aiohttp, as c2bcc78)'
FLOOR_CALL = "this version above the wire: the same 2,000 deltas played from memory into astream"

_PARAGRAPHS = (
    "## What changed\n\nThe web client now reads the stream as it arrives: each server-sent event carries a "
    "small patch to the answer, and the client hands the new text on as soon as it is parsed [1]. Sources "
    "arrive once, when the search finishes, and are attached to the answer's metadata [2][3].\n\n",
    "- **Parsing**: every `data:` line is decoded once; an unfinished line is kept in pieces until its end "
    "arrives, so a long line is not scanned again on every read [4].\n"
    "- **Connections**: a warm question reuses a pooled keep-alive connection and costs one round trip to "
    "its first token [5].\n"
    "- **Failures**: a refusal, a rate limit or a dropped connection becomes a typed error that names its "
    "cause, and nothing is retried once text has been streamed [6].\n\n",
    "## Why it matters\n\nA chat model that streams spends most of its time waiting; what it does between "
    "two messages is the part users feel when many answers run at once. Fewer copies of the answer so far "
    "mean less work per message, and the cost of an answer grows with its length, not with its square [7]. "
    "Benchmarks compare the client with the version before and with a widely used peer [8].\n\n",
)
SOURCES = [
    {
        "url": f"https://example.org/source-{index}",
        "title": f"Source {index}: notes on streaming chat clients",
        "snippet": "Server-sent events deliver an answer piece by piece; a client parses each event once "
        "and forwards the new text without rebuilding what came before.",
    }
    for index in range(1, 9)
]


def answer_text() -> str:
    """The answer every client streams: ``MESSAGES * PIECE`` characters of markdown citing the sources."""
    size = MESSAGES * PIECE
    text = ""
    while len(text) < size:
        text += "".join(_PARAGRAPHS)
    return text[:size]


@dataclass
class Client:
    """One client's child process and what its answers cost."""

    name: str
    child: subprocess.Popen[str]
    package: str = ""
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    read_bytes: int = 0
    messages: int = 0

    def answer(self, expected: str) -> dict[str, Any]:
        """One answer streamed by the child; raises if it streamed other text than ``expected``."""
        assert self.child.stdin is not None
        self.child.stdin.write("ask\n")
        self.child.stdin.flush()
        found = _reply(self.child, self.name)
        if found["sha256"] != hashlib.sha256(expected.encode()).hexdigest():
            raise RuntimeError(f"{self.name}: streamed {found['chars']} characters, not the answer")
        return found

    def record(self, found: dict[str, Any]) -> None:
        self.cpu.append(found["cpu"])
        self.wall.append(found["wall"])
        self.read_bytes, self.messages = found["bytes"], found["messages"]


def _reply(child: subprocess.Popen[str], name: str) -> dict[str, Any]:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"{name}: the client process ended (exit {child.wait()})")
    found: dict[str, Any] = json.loads(line)
    return found


@contextlib.contextmanager
def client_process(name: str, kind: str, url: str, root: str) -> Iterator[Client]:
    """A client (``kind``: ``labs-web``, ``labs-web-plain``, ``openai`` or ``floor``) in a child process, ``root`` first."""
    child = subprocess.Popen(
        [sys.executable, str(CLIENT_SCRIPT), kind, url, root, MODEL],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield Client(name, child, package=_reply(child, name)["package"] or "")
    finally:
        stop_child(child)


@contextlib.contextmanager
def package_at(ref: str) -> Iterator[tuple[str | None, str]]:
    """``langchain_pplx_labs/`` as of ``ref``, extracted into a temp dir: (that dir, the commit), or
    (``None``, why not) outside a git checkout or for a ref git does not know."""
    try:
        commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}").decode().strip()
        toplevel = Path(_git("rev-parse", "--show-toplevel").decode().strip()).resolve()
        if toplevel != ROOT:
            raise RuntimeError(f"the benchmarks are not in a git checkout (the nearest is {toplevel})")
        archive = _git("archive", "--format=tar", commit, "langchain_pplx_labs")
    except (OSError, RuntimeError) as exc:
        yield None, f"skipped: no copy of {ref} ({exc})"
        return
    with tempfile.TemporaryDirectory(prefix="web-cpu-baseline-") as directory:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 on
                tar.extractall(directory, filter="data")
            else:
                tar.extractall(directory)  # trusted: our own repository's archive
        yield directory, commit


def _git(*arguments: str) -> bytes:
    done = subprocess.run(["git", "-C", str(ROOT), *arguments], capture_output=True)
    if done.returncode:
        raise RuntimeError(done.stderr.decode(errors="replace").strip() or f"git {arguments[0]} failed")
    return done.stdout


def _measure(clients: list[Client], expected: str, warmup: int, reps: int) -> None:
    """``warmup`` untimed answers each, then ``reps`` rounds, each client once a round, the order rotating."""
    for _ in range(warmup):
        for client in clients:
            client.answer(expected)  # untimed: imports and first-use costs are not per-answer CPU
    for index in range(reps):
        start = index % len(clients)
        for client in clients[start:] + clients[:start]:
            client.record(client.answer(expected))


def _ratio(row: Client, reference: Client | None) -> str:
    if reference is None:
        return "-"
    return f"{statistics.median(row.cpu) / statistics.median(reference.cpu):.2f}x"


def _table(clients: list[Client], baseline: Client | None, peer: Client, ref: str) -> None:
    print(
        f"\n## CPU per web answer, {MESSAGES:,} SSE messages (lower is better; target this version "
        f"<= {TARGET}x {ref} and <= {TARGET}x ChatOpenAI)\n"
    )
    print(
        f"| client | n | median CPU per answer | p95 | ratio vs {ref} | ratio vs ChatOpenAI "
        "| messages read | bytes read | wall median |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in clients:
        print(
            f"| {row.name} | {len(row.cpu)} | {statistics.median(row.cpu) * 1000:.2f} ms "
            f"| {percentile(row.cpu, 95) * 1000:.2f} ms | {_ratio(row, baseline)} | {_ratio(row, peer)} "
            f"| {row.messages:,} | {row.read_bytes / 1000:,.1f} KB | {statistics.median(row.wall) * 1000:.1f} ms |"
        )


def _clients(
    stack: contextlib.ExitStack, emulator: str, openai_url: str, baseline_root: str | None, ref: str
) -> tuple[Client, Client | None, Client]:
    """The clients' processes, started side by side: (this version, the baseline or None, ChatOpenAI)."""
    ours = stack.enter_context(client_process(f"this version, {LABS_CALL}", "labs-web", emulator, str(ROOT)))
    baseline = None
    if baseline_root is not None:
        baseline = stack.enter_context(
            client_process(f"{ref}, {LABS_CALL}", "labs-web", emulator, baseline_root)
        )
    peer = stack.enter_context(client_process(OPENAI_CALL, "openai", openai_url, ""))
    return ours, baseline, peer


def run(
    quick: bool, rtt: float = 0.0, reps: int | None = None, baseline_ref: str = DEFAULT_BASELINE_REF
) -> None:
    """Print the table. ``rtt`` is ignored: CPU, not latency, straight to both servers."""
    del rtt
    text = answer_text()
    pieces = [text[at : at + PIECE] for at in range(0, len(text), PIECE)]
    scenario = {"answer": text, "chunk_size": PIECE, "citations": SOURCES}
    with contextlib.ExitStack() as stack:
        baseline_root, baseline_note = stack.enter_context(package_at(baseline_ref))
        emulator = stack.enter_context(emulator_process(scenario=scenario))
        openai_url = stack.enter_context(SSEServerThread(pieces)).base_url
        ours, baseline, peer = _clients(stack, emulator, openai_url, baseline_root, baseline_ref)
        # What this version's answer costs above its events (LangChain's per-chunk work and ours): the floor
        # under any codec, in the same run.
        played = stack.enter_context(tempfile.NamedTemporaryFile("w", suffix=".json"))
        json.dump({"pieces": pieces, "sources": SOURCES}, played)
        played.flush()
        floor = stack.enter_context(client_process(FLOOR_CALL, "floor", played.name, str(ROOT)))
        # The codec's own share, on the baseline's HTTP client: this version over aiohttp.
        plain = stack.enter_context(
            client_process(f"this version, {PLAIN_CALL}", "labs-web-plain", emulator, str(ROOT))
        )
        clients = [ours, plain, *([baseline] if baseline else []), peer, floor]
        _measure(clients, text, warmup=1 if quick else 3, reps=reps or (3 if quick else 30))
    _table(clients, baseline, peer, baseline_ref)
    print(
        f"\nthe answer: {len(text):,} characters and {len(SOURCES)} sources, the emulator's default web variant "
        "(`WebVariant()`: schematized stream), no delay; CPU: the client's process (`process_time`), which "
        "holds nothing else"
    )
    print(f"\n{baseline_ref}: {baseline_note}" + (f", package from {baseline.package}" if baseline else ""))
    print(f"\nthis version: package from {ours.package}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web_cpu", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one warm-up and 3 rounds")
    parser.add_argument("--reps", type=int, default=None, help="timed rounds (default 30)")
    parser.add_argument(
        "--baseline-ref",
        default=DEFAULT_BASELINE_REF,
        help="the commit to compare with (default %(default)s)",
    )
    args = parser.parse_args(argv)
    run(args.quick, reps=args.reps, baseline_ref=args.baseline_ref)


if __name__ == "__main__":
    main()
