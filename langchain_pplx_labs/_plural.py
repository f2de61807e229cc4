"""Counts in messages: ``1 frame``, ``2 frames``."""

from __future__ import annotations


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless the count is one (``1 frame``, ``0 frames``)."""
    return f"{count} {noun}{'s' * (count != 1)}"
