"""The answer's events: what every service's codec reads from its stream and the LangChain layer turns into chunks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict


class Source(BaseModel):
    """A cited source; the server sends bare URLs or objects with ``url``/``title``."""

    model_config = ConfigDict(extra="allow")

    url: str
    title: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """New text from the model's thinking (a think section, a plan's goals)."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The answer's end: its sources, the server's counters, and the web app's thread ids when sent."""

    sources: tuple[Source, ...]
    rich_sources: bool
    tokens_streamed: int | None
    elapsed_time: float | None
    thread: dict[str, str] | None = None
    """``backend_uuid``, ``read_write_token``, ``thread_url_slug`` as the web stream sent them (a follow-up's ids)."""
    extras: dict[str, Any] | None = None
    """What else the stream sent for the answer, in ChatPerplexity's names: ``images``, ``related_questions``."""


StreamEvent = TextDelta | ReasoningDelta | Finished


def finished(
    citations: Sequence[str | Source | dict[str, Any]],
    *,
    tokens_streamed: int | None = None,
    elapsed_time: float | None = None,
    thread: dict[str, str] | None = None,
    extras: dict[str, Any] | None = None,
) -> Finished:
    """The end event for ``citations`` as a server sent them: bare URLs, or objects with a ``url``."""
    sources = tuple(
        Source(url=c) if isinstance(c, str) else c if isinstance(c, Source) else Source.model_validate(c)
        for c in citations
    )
    rich = any(not isinstance(c, str) for c in citations)
    return Finished(sources, rich, tokens_streamed, elapsed_time, thread or None, extras or None)
