"""Responses kept for ``previous_response_id``: each one's conversation as chat messages, per process, bounded."""

from __future__ import annotations

import collections
from typing import Any

MAX_RESPONSES = 1024
"""Responses remembered per process, the least recently used forgotten first."""
MAX_CHARS = 32_000_000
"""Characters of conversation remembered per process in all: a bound on memory whatever the sizes."""

ChatMessages = list[dict[str, Any]]


def _size(messages: ChatMessages) -> int:
    return sum(
        len(str(message.get("content") or "")) + len(str(message.get("tool_calls") or ""))
        for message in messages
    )


class StoredResponses:
    """Response id → the conversation it ended (its input, earlier turns included, and its output)."""

    def __init__(self, max_responses: int = MAX_RESPONSES, max_chars: int = MAX_CHARS) -> None:
        self.max_responses = max_responses
        self.max_chars = max_chars
        self._kept: collections.OrderedDict[str, tuple[ChatMessages, int]] = collections.OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, response_id: str) -> ChatMessages | None:
        """The conversation ``response_id`` ended, ``None`` when this process does not have it."""
        kept = self._kept.get(response_id)
        if kept is None:
            return None
        self._kept.move_to_end(response_id)
        return list(kept[0])

    def put(self, response_id: str, conversation: ChatMessages) -> None:
        """Keep ``conversation`` under ``response_id``; the oldest go while either bound is passed."""
        size = _size(conversation)
        if size > self.max_chars:
            return  # larger than the whole store: not kept, so continuing it is a clear 400
        self._kept[response_id] = (list(conversation), size)
        self._chars += size
        while len(self._kept) > self.max_responses or self._chars > self.max_chars:
            _, (_, gone) = self._kept.popitem(last=False)
            self._chars -= gone
