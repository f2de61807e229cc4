"""Shared by the examples: run against the in-process Labs emulator unless --base-url is given."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator, Responder


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--base-url", help="a live Labs server; default: the offline emulator")
    parser.add_argument("--model", default="sonar-pro", help="Labs model name")
    return parser.parse_args()


@contextmanager
def labs_server(base_url: str | None, responder: Responder | None = None) -> Iterator[str]:
    """Yield the URL to talk to: ``base_url``, or a fresh emulator answering with ``responder``."""
    if base_url:
        yield base_url
        return
    with EmulatorThread(LabsEmulator(responder)) as thread:
        yield thread.base_url
