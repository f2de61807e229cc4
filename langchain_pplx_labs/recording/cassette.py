"""The cassette format: a pydantic model of one recorded conversation and its YAML form."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from langchain_pplx_labs.errors import PerplexityLabsError

CASSETTE_VERSION = 1
CASSETTE_SUFFIX = ".labs.yaml"
"""Distinct from vcrpy's ``.yaml`` so both kinds can share pytest-recording's folders without clashing."""
_APPEND_KEY = "output_append"

Transport = Literal["labs", "web"]
"""What a cassette holds: ``labs`` Socket.IO frames, or ``web`` Server-Sent Events of the web app's ask."""


class CassetteError(PerplexityLabsError):
    """A cassette file cannot be read or is not a valid cassette; the message names the file."""


class Frame(BaseModel):
    """One thing the server did, ``at`` seconds after the question was sent."""

    model_config = ConfigDict(extra="forbid")

    at: float = Field(ge=0)
    kind: Literal["event", "stall", "drop", "raw"] = "event"
    """``event``: a Socket.IO event (web: an SSE message, its JSON ``data``); ``stall``: silent from here on;
    ``drop``: socket (web: stream) closed; ``raw``: a raw packet (web: a message whose data is not JSON)."""
    event: str | None = None
    data: Any = None


class HttpRefusal(BaseModel):
    """The HTTP answer that refused the Socket.IO handshake (e.g. a Cloudflare 403 page)."""

    model_config = ConfigDict(extra="forbid")

    status: int
    headers: dict[str, str] = {}
    body: str = ""


class Interaction(BaseModel):
    """One question (the ``perplexity_labs`` payload, or the web ask's body) and everything the server answered."""

    model_config = ConfigDict(extra="forbid")

    request: dict[str, Any]
    refusal: HttpRefusal | None = None
    frames: list[Frame] = []


class Cassette(BaseModel):
    """One conversation: a header, the connection as seen (redacted) and its interactions."""

    model_config = ConfigDict(extra="forbid")

    version: int = CASSETTE_VERSION
    transport: Transport = "labs"
    """``labs``: Socket.IO frames of the playground; ``web``: the web app's SSE messages (absent: ``labs``)."""
    provenance: Literal["synthetic", "live", "public-report"]
    """``synthetic``: recorded from the emulator; ``live``: from the real playground; ``public-report``:
    frames a public report quoted (written by hand, never recorded), named in ``source``."""
    source: str = ""
    """Where the frames were published, with its date (an issue URL, a repository path): required for
    ``public-report``."""
    recorded_at: str
    model: str
    client_version: str
    server: str = ""
    note: str = ""
    connection: dict[str, Any] = {}
    """Headers, auth and handshake facts of the recorded session, after redaction."""
    interactions: list[Interaction] = []

    @model_validator(mode="after")
    def _public_report_names_its_source(self) -> Cassette:
        if self.provenance == "public-report" and not self.source.strip():
            raise ValueError(
                "a public-report cassette must name its source (URL or repository path, and date)"
            )
        return self


def dump_cassette(cassette: Cassette) -> str:
    """The YAML text of ``cassette``; growing ``output`` strings are stored as appended text only."""
    document = cassette.model_dump(mode="json", exclude_none=True)
    for interaction in document["interactions"]:
        _compact_frames(interaction["frames"])
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def parse_cassette(text: str, *, source: str = "<string>") -> Cassette:
    """Parse YAML text written by :func:`dump_cassette` (or by hand)."""
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise CassetteError(f"Cassette {source} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(document, dict):
        raise CassetteError(f"Cassette {source} is not a mapping")
    version = document.get("version", CASSETTE_VERSION)
    if version != CASSETTE_VERSION:  # a newer format read by an older pplx-labs, or a typo
        raise CassetteError(
            f"Cassette {source} has version {version!r}: this pplx-labs reads version {CASSETTE_VERSION} only"
        )
    for interaction in document.get("interactions") or []:
        if isinstance(interaction, dict):
            _expand_frames(interaction.get("frames") or [])
    try:
        return Cassette.model_validate(document)
    except ValidationError as exc:
        raise CassetteError(f"Cassette {source} is malformed: {_first_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's text spans several lines (context, snippet); the position and the problem fit on one.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else str(problem)


def _first_problem(exc: ValidationError) -> str:
    # pydantic's own text spans many lines and links to its docs; one field and why is enough to fix it.
    errors = exc.errors()
    first = errors[0]
    where = ".".join(map(str, first["loc"])) or "document"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def load_cassette(path: str | Path) -> Cassette:
    """Read the cassette at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CassetteError(f"Cannot read cassette {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # a binary file (an archive, a pcap) given by mistake
        raise CassetteError(
            f"Cassette {path} is not a text file: byte {exc.start} is not UTF-8 (a cassette is YAML text)"
        ) from None
    return parse_cassette(text, source=str(path))


def save_cassette(cassette: Cassette, path: str | Path) -> Path:
    """Write ``cassette`` to ``path``, creating folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_cassette(cassette), encoding="utf-8")
    return path


def _compact_frames(frames: list[dict[str, Any]]) -> None:
    # Cumulative outputs make long answers quadratic in size; keeping only the new text
    # keeps cassettes small and diffs readable, and loading restores the exact frames.
    previous = ""
    for frame in frames:
        if frame.get("kind") == "event":
            del frame["kind"]  # the default; keeps frames short
        data = frame.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("output"), str):
            continue
        output: str = data["output"]
        if previous and len(output) > len(previous) and output.startswith(previous):
            rest = {key: value for key, value in data.items() if key != "output"}
            frame["data"] = {_APPEND_KEY: output[len(previous) :], **rest}
        previous = output


def _expand_frames(frames: list[Any]) -> None:
    previous = ""
    for frame in frames:
        data = frame.get("data") if isinstance(frame, dict) else None
        if not isinstance(data, dict):
            continue
        if isinstance(data.get(_APPEND_KEY), str):
            rest = {key: value for key, value in data.items() if key != _APPEND_KEY}
            frame["data"] = data = {"output": previous + data[_APPEND_KEY], **rest}
        if isinstance(data.get("output"), str):
            previous = data["output"]


_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Dumper(_BaseDumper):  # type: ignore[valid-type,misc]
    """Safe dumper that writes multi-line text as ``|`` blocks, so answers read like text."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
