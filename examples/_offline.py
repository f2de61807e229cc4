"""Shared by the examples: run against the in-process emulator unless --base-url is given."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator, Responder
from langchain_pplx_labs.protocol import WEB_MODELS, default_model


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--base-url", help="another server, e.g. https://www.perplexity.ai; default: the offline emulator"
    )
    # The examples ask over the model's own transport: the web app unless PPLX_LABS_TRANSPORT=labs.
    # So the default is that transport's model: a Labs name over the web warns (and is most likely refused).
    transport = os.environ.get("PPLX_LABS_TRANSPORT", "web")
    parser.add_argument(
        "--model",
        default=default_model(transport),
        help=f"model name (default: %(default)s); web: {', '.join(WEB_MODELS)}; "
        "with PPLX_LABS_TRANSPORT=labs, a Labs name such as r1-1776 or sonar-pro",
    )
    return parser.parse_args()


@contextmanager
def labs_server(base_url: str | None, responder: Responder | None = None) -> Iterator[str]:
    """Yield the URL to talk to: ``base_url``, or a fresh emulator answering with ``responder``."""
    if base_url:
        yield base_url
        return
    with EmulatorThread(LabsEmulator(responder)) as thread:
        yield thread.base_url
