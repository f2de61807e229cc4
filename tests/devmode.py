"""Runs a script under ``python -X dev -W error`` and checks that it leaked nothing (one runner for every leak test)."""

from __future__ import annotations

import subprocess
import sys

LEAK_SYMPTOMS = (
    "Unclosed",
    "was destroyed but it is pending",
    "never awaited",
    "never retrieved",
    "Warning",
)
"""What asyncio, aiohttp and the warnings machinery print about sockets, tasks or coroutines left behind."""


def run_clean_under_dev_mode(script: str, *args: str, timeout: float = 90) -> str:
    """Run ``script`` with ``args``; it must exit 0 with no leak symptom on stderr. Returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for symptom in LEAK_SYMPTOMS:
        assert symptom not in result.stderr, result.stderr
    return result.stdout
