"""Replay cassettes through the emulator: match each question to a recorded interaction and play its frames."""

from __future__ import annotations

import difflib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langchain_pplx_labs.emulator.script import Drop, Emit, LabsRequest, Raw, Stall, Step
from langchain_pplx_labs.errors import PerplexityLabsError
from langchain_pplx_labs.recording.cassette import (
    CASSETTE_SUFFIX,
    Cassette,
    Interaction,
    Transport,
    load_cassette,
)
from langchain_pplx_labs.recording.recorder import UpstreamUnreachableError, record_interaction
from langchain_pplx_labs.recording.redact import REDACTED, Redactor
from langchain_pplx_labs.web.sse import sse_message

logger = logging.getLogger(__name__)

_FOREVER = 3600.0


class CassetteNotFoundError(PerplexityLabsError, FileNotFoundError):
    """A test asked for a cassette that does not exist and the record mode forbids recording it."""

    def __init__(self, path: Path, record_mode: str) -> None:
        super().__init__(
            f"Cassette {path} not found and --record-mode={record_mode} forbids recording it; "
            "record it with --record-mode=once (or `pplx-labs cassette record --out ...`)"
        )
        self.path = path


class CassetteMismatchError(PerplexityLabsError):
    """The question sent matches no recorded one; ``source`` holds the closest, ``diff`` is expected → sent.

    The first line of the message says it all (for one-line reports such as the CLI's):
    the cassette, which of its requests is closest, and the first line that differs.
    """

    def __init__(
        self, source: str, expected: Mapping[str, Any] | None, sent: Mapping[str, Any], *, index: int = 0
    ) -> None:
        self.diff = payload_diff(expected or {}, sent)
        where = f"{source} (closest recorded request: #{index + 1})" if expected is not None else source
        super().__init__(
            f"Request does not match cassette {where}{_first_difference(self.diff)}\n"
            f"diff of expected (-) vs sent (+) payload:\n{self.diff}"
        )
        self.source = source
        self.index = index
        self.expected = expected
        self.sent = sent


class CassetteTransportError(CassetteMismatchError):
    """The question came over one transport and the cassettes served hold only the other kind.

    A Labs cassette holds Socket.IO frames and a web one the web app's SSE messages: neither
    replays to the other's client, so the message names both transports and how to fix it.
    """

    def __init__(self, source: str, recorded: str, sent: Mapping[str, Any], *, asked: str) -> None:
        PerplexityLabsError.__init__(
            self,
            f"Request does not match cassette {source}: it holds {recorded} recordings, but the question "
            f"came over the {asked} transport; replay it with ChatPerplexityLabs(transport={recorded!r}), "
            f"or record a {asked} cassette (pplx-labs cassette record --transport {asked})",
        )
        self.diff = ""
        self.source = source
        self.index = 0
        self.expected = None
        self.sent = sent
        self.recorded = recorded
        self.asked = asked


def _first_difference(diff: str) -> str:
    removed = next((line[1:].strip() for line in diff.splitlines() if line.startswith("-  ")), None)
    added = next((line[1:].strip() for line in diff.splitlines() if line.startswith("+  ")), None)
    if removed is None or added is None:
        return ""
    return f": recorded {removed.rstrip(',')} but sent {added.rstrip(',')}"


def payload_similarity(expected: Mapping[str, Any], sent: Mapping[str, Any]) -> float:
    """How alike two payloads are, 0 to 1: difflib's ratio of their pretty JSON texts."""
    return difflib.SequenceMatcher(None, _pretty(expected), _pretty(sent), autojunk=False).ratio()


def payload_diff(expected: Mapping[str, Any], sent: Mapping[str, Any]) -> str:
    """A readable unified diff of two payloads, as sorted, indented JSON."""
    return "".join(
        difflib.unified_diff(
            _pretty(expected).splitlines(keepends=True),
            _pretty(sent).splitlines(keepends=True),
            fromfile="expected (cassette)",
            tofile="sent",
        )
    )


def _pretty(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def payload_matches(expected: Any, sent: Any) -> bool:
    """Equality where a redacted value in the cassette matches whatever was sent."""
    if expected == REDACTED:
        return True
    if isinstance(expected, dict) and isinstance(sent, dict):
        return expected.keys() == sent.keys() and all(payload_matches(expected[k], sent[k]) for k in expected)
    if isinstance(expected, list) and isinstance(sent, list):
        return len(expected) == len(sent) and all(map(payload_matches, expected, sent))
    return bool(expected == sent)


def interaction_steps(
    interaction: Interaction, *, speed: float = 0.0, transport: Transport = "labs"
) -> list[Step]:
    """The emulator steps that play ``interaction``; delays are recorded gaps × ``speed`` (0 = no waiting).

    For a ``web`` interaction an event is an SSE message the web endpoint writes as recorded (its
    event name, its JSON data), and a raw frame is a message whose data is written verbatim.
    """
    steps: list[Step] = []
    previous = 0.0
    for frame in interaction.frames:
        delay = max(0.0, frame.at - previous) * speed
        previous = frame.at
        if frame.kind == "event":
            steps.append(Emit(frame.event or "", frame.data, delay))
        elif frame.kind == "raw" and transport == "web":
            event = frame.event if frame.event and frame.event != "message" else ""
            steps.append(Raw(sse_message(str(frame.data), event, newline="\r\n")[:-4], delay))
        elif frame.kind == "raw":
            steps.append(Raw(str(frame.data), delay))
        elif frame.kind == "drop":
            steps.append(Drop(delay))
        else:
            steps.append(Stall(_FOREVER))
    if not interaction.frames and interaction.refusal is None:
        steps.append(Stall(_FOREVER))
    return steps


class CassetteResponder:
    """An emulator responder answering from cassettes; unmatched questions fail fast with a diff.

    Each question plays the first recorded interaction with an equal payload that
    was not played yet (then played ones again, so retries and repeats work).
    Mismatches are kept in ``mismatches`` for the test to report.
    """

    def __init__(self, cassettes: Mapping[str, Cassette], *, speed: float = 0.0) -> None:
        self.cassettes = dict(cassettes)
        self.speed = speed
        self.mismatches: list[CassetteMismatchError] = []
        self.played: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_paths(cls, paths: Sequence[str | Path], *, speed: float = 0.0) -> CassetteResponder:
        """Load cassette files, or every ``*.labs.yaml`` under folders, recursively."""
        files: list[Path] = []
        for path in map(Path, paths):
            files.extend(sorted(path.rglob(f"*{CASSETTE_SUFFIX}")) if path.is_dir() else [path])
        return cls({str(file): load_cassette(file) for file in files}, speed=speed)

    @property
    def refuses_connections(self) -> bool:
        """True when the only thing recorded is an HTTP refusal (a blocked session)."""
        interactions = [i for c in self.cassettes.values() for i in c.interactions]
        return bool(interactions) and all(i.refusal is not None for i in interactions)

    def __call__(self, request: LabsRequest) -> list[Step]:
        steps = self.match(request)
        return self._mismatch(request) if steps is None else steps

    def match(self, request: LabsRequest) -> list[Step] | None:
        """The steps of the recorded interaction matching ``request``, or ``None``.

        A question asked over the web is matched by its web body against web cassettes only,
        one over Socket.IO by its payload against Labs cassettes only.
        """
        transport = _transport_of(request)
        with self._lock:
            found = self._find(_sent(request), transport)
            if found is None:
                return None
            self.played.append(found)
        source, index = found
        interaction = self.cassettes[source].interactions[index]
        return interaction_steps(interaction, speed=self.speed, transport=transport)

    def _find(self, sent: Mapping[str, Any], transport: Transport) -> tuple[str, int] | None:
        candidates = [
            (source, index)
            for source, cassette in self.cassettes.items()
            if cassette.transport == transport
            for index, interaction in enumerate(cassette.interactions)
            if interaction.refusal is None and payload_matches(interaction.request, sent)
        ]
        fresh = [candidate for candidate in candidates if candidate not in self.played]
        return (fresh or candidates or [None])[0]  # type: ignore[list-item]

    def _mismatch(self, request: LabsRequest) -> list[Step]:
        transport, sent = _transport_of(request), _sent(request)
        error: CassetteMismatchError
        others = [source for source, c in self.cassettes.items() if c.transport != transport]
        if others and len(others) == len(self.cassettes):
            recorded = self.cassettes[others[0]].transport
            error = CassetteTransportError(others[0], recorded, sent, asked=transport)
        else:
            source, index, expected = self._closest(sent, transport)
            error = CassetteMismatchError(source, expected, sent, index=index)
        self.mismatches.append(error)
        # One line: the client gets the whole diff in its error, so a test report shows it once.
        logger.warning("%s", str(error).splitlines()[0])
        # Answer with a failed frame so the client stops at once instead of timing out.
        return [Emit(request.progress_event, {"status": "failed", "text": str(error)})]

    def _closest(
        self, sent: Mapping[str, Any], transport: Transport
    ) -> tuple[str, int, Mapping[str, Any] | None]:
        """The recorded request most like ``sent`` (earlier cassettes win ties), to diff against."""
        recorded = [
            (source, index, interaction.request)
            for source, cassette in self.cassettes.items()
            if cassette.transport == transport
            for index, interaction in enumerate(cassette.interactions)
        ]
        if not recorded:
            return next(iter(self.cassettes), "<no cassettes>"), 0, None
        return max(recorded, key=lambda candidate: payload_similarity(candidate[2], sent))


def _transport_of(request: LabsRequest) -> Transport:
    return "web" if request.web_body is not None else "labs"


def _sent(request: LabsRequest) -> Mapping[str, Any]:
    """What a recording of ``request`` holds as its request: the web body, or the Labs payload."""
    return request.web_body if request.web_body is not None else request.payload


class RecordingResponder:
    """An emulator responder that records unmatched questions from ``upstream`` and plays them back.

    With ``replay`` set, recorded interactions are served first (``new_episodes``);
    new ones land in ``recorded``. A refused handshake upstream reaches the client
    as a dropped socket; the cassette keeps the real refusal for later replays.
    An unreachable upstream lands in ``unreachable`` and nothing is recorded.
    ``headers`` and ``proxy`` are used towards ``upstream`` only; the emulator's ``LabsProtocol``
    (path, events, auth) is used towards it too.
    """

    def __init__(
        self,
        upstream: str,
        *,
        replay: CassetteResponder | None = None,
        redactor: Redactor | None = None,
        silence: float = 10.0,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
    ) -> None:
        self.upstream = upstream
        self.replay = replay
        self.redactor = redactor or Redactor()
        self.silence = silence
        self.headers = headers
        self.proxy = proxy
        self.recorded: list[Interaction] = []
        self.transport: Transport | None = None
        """The transport of what was recorded (``None`` before the first recording)."""
        self.unreachable: list[UpstreamUnreachableError] = []
        self.connection: dict[str, Any] = {}

    async def __call__(self, request: LabsRequest) -> list[Step]:
        steps = self.replay.match(request) if self.replay is not None else None
        if steps is not None:
            return steps
        transport = _transport_of(request)
        try:
            interaction = await record_interaction(
                self.upstream,
                request.payload,
                transport=transport,
                body=request.web_body,  # a web client's own body, so its replay matches it
                headers=self.headers,
                proxy=self.proxy,
                redactor=self.redactor,
                silence=self.silence,
                connection_info=None if self.connection else self.connection,
                protocol=request.protocol,  # the upstream speaks what the replay server was set up to speak
            )
        except UpstreamUnreachableError as exc:
            self.unreachable.append(exc)
            # A failed frame stops the client at once with the real reason, not a vague drop.
            text = f"{exc}; no cassette was written"
            return [Emit(request.progress_event, {"status": "failed", "text": text})]
        self.recorded.append(interaction)
        self.transport = transport
        if interaction.refusal is not None:
            return [Drop()]
        return interaction_steps(interaction, transport=transport)
