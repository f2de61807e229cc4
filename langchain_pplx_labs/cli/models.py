"""``pplx-labs models``: the web app's models, read live from ``/rest/models/config``, as a table or JSON."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import TYPE_CHECKING, TextIO

from langchain_pplx_labs.cli._shared import (
    add_base_url_flag,
    add_ca_file_flag,
    add_impersonate_flag,
    add_protocol_flag,
    impersonate_option,
    labs_protocol,
    maybe_emulator,
    trusted_context,
)

if TYPE_CHECKING:
    from langchain_pplx_labs.web.models import ModelList

_COLUMNS = ("IDENTIFIER", "LABEL", "PROVIDER", "MODE", "TIER", "REASONING", "DEFAULT")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``models`` and its flags, bound to :func:`run`."""
    models = commands.add_parser(
        "models", help="list the web app's models (its live list, or the record's when it cannot be read)"
    )
    where = models.add_mutually_exclusive_group()
    where.add_argument("--emulator", action="store_true", help="list an in-process emulator's models")
    add_base_url_flag(where)
    models.add_argument(
        "--json", action="store_true", help="one JSON object: source, reason and the models' fields"
    )
    add_protocol_flag(models)
    add_impersonate_flag(models)
    add_ca_file_flag(models)
    models.set_defaults(run=run)
    return models


def run(args: argparse.Namespace) -> int:
    return asyncio.run(list_models(args, sys.stdout, sys.stderr))


async def list_models(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print the list to ``out``; when it is the record's fallback, say why on ``err``."""
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs

    protocol = labs_protocol(args)
    async with maybe_emulator(args.emulator, protocol) as emulator_url:
        base_url = emulator_url or args.base_url
        where = {"base_url": base_url} if base_url else {}
        trusted = trusted_context(args)
        trust = {"ssl_context": trusted} if trusted is not None else {}
        model = ChatPerplexityLabs(
            transport="web", protocol=protocol, **impersonate_option(args), **trust, **where
        )
        try:
            models = await model.alist_models()
        finally:
            await model.aclose()
    out.write(as_json(models) if args.json else as_table(models))
    if models.source == "fallback" and not args.json:
        err.write(f"pplx-labs: note: the web app's list was not read ({models.reason}): the record's list\n")
    return 0


def as_json(models: ModelList) -> str:
    """``{"source", "reason", "models": [{identifier, label, mode, provider, subscription_tier, ...}]}``."""
    rows = [dataclasses.asdict(model) for model in models]
    return json.dumps({"source": models.source, "reason": models.reason, "models": rows}) + "\n"


def as_table(models: ModelList) -> str:
    """A header, then one model a line in aligned columns (``-``: no tier needed, or not said)."""
    rows = [_COLUMNS] + [
        (
            model.identifier,
            model.label,
            model.provider or "-",
            model.mode or "-",
            model.subscription_tier or "-",
            "yes" if model.reasoning else "no",
            "yes" if model.is_default else "no",
        )
        for model in models
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )
