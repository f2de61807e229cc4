"""``pplx-labs doctor``: walk the steps a question takes and name the first one that fails, with its cause."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from langchain_pplx_labs._cliargs import CliError, model_name, number, proxy_url
from langchain_pplx_labs._plural import counted
from langchain_pplx_labs.cli._shared import (
    MODEL_DEFAULT_HELP,
    add_base_url_flag,
    add_ca_file_flag,
    add_impersonate_flag,
    add_protocol_flag,
    add_transport_flag,
    is_loopback,
    labs_protocol,
    trusted_context,
)
from langchain_pplx_labs.protocol import DEFAULT_BASE_URL, default_model

if TYPE_CHECKING:
    from langchain_pplx_labs.doctor.walk import Report, Step
    from langchain_pplx_labs.protocol import LabsProtocol
    from langchain_pplx_labs.settings import Service

QUESTION = "What is the capital of France?"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pplx-labs doctor``."""
    doctor = subparsers.add_parser(
        "doctor", help="ask one question step by step and say which step fails and why"
    )
    add_base_url_flag(doctor)
    doctor.add_argument("--model", type=model_name, default=None, help=MODEL_DEFAULT_HELP)
    doctor.add_argument("--question", default=QUESTION, help=f"what to ask (default {QUESTION!r})")
    doctor.add_argument(
        "--system",
        default=None,
        help="system prompt sent before the question, as ask --system (default none), so --record matches ask's",
    )
    doctor.add_argument(
        "--timeout",
        type=number(float, minimum=0, inclusive=False),
        default=15.0,
        help="seconds each step may take",
    )
    doctor.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    doctor.add_argument(
        "--record", metavar="FILE", default=None, help="also save a redacted cassette of the session"
    )
    add_protocol_flag(doctor, help_text="LabsProtocol fields")
    doctor.add_argument(
        "--proxy",
        type=proxy_url,
        default=None,
        help="http://, socks4:// or socks5:// proxy (with a port) to connect through, as proxy=... does",
    )
    add_transport_flag(doctor)
    add_impersonate_flag(doctor)
    add_ca_file_flag(doctor)
    doctor.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the doctor; exit 0 when the question got an answer, 1 otherwise."""
    transport = _transport(args)
    protocol = labs_protocol(args)
    base_url = args.base_url or _environment_base_url()
    model = args.model if args.model is not None else default_model(transport)
    planned: tuple[str, ...]
    if transport == "web":
        from langchain_pplx_labs.doctor.web import WEB_STEPS
        from langchain_pplx_labs.doctor.web import diagnose_web as diagnose

        planned = WEB_STEPS
    else:
        from langchain_pplx_labs.doctor.labs import diagnose
        from langchain_pplx_labs.doctor.walk import STEPS

        planned = STEPS
    voice = {"impersonate": _impersonate(args)} if transport == "web" else {}
    trust = trusted_context(args) or True
    # Without --json each step prints as it completes: a silent step takes up to --timeout seconds.
    lines = None if args.json else _StepLines(protocol, sys.stdout)
    done: list[Step] = []

    def on_step(step: Step) -> None:
        done.append(step)
        if lines is not None:
            lines.step(step)

    if lines is not None:
        lines.header(base_url, transport, planned)
    try:
        report = asyncio.run(
            diagnose(
                base_url,
                model,
                protocol,
                args.timeout,
                args.question,
                proxy=args.proxy,
                ssl_option=trust,
                on_step=on_step,
                system=args.system,
                **voice,
            )
        )
    except KeyboardInterrupt:
        step = planned[len(done)] if len(done) < len(planned) else planned[-1]
        print(
            f"pplx-labs doctor: interrupted during {step!r} ({len(done)} of {counted(len(planned), 'step')} passed)",
            file=sys.stderr,
            flush=True,
        )
        raise
    recorded = asyncio.run(_record(args, base_url, model, protocol, transport)) if args.record else ""
    if args.json:
        data = report.as_json()
        if recorded:
            data["recorded"] = recorded
        print(json.dumps(data, ensure_ascii=False))
    else:
        _conclude(report, sys.stdout)
        if recorded:
            print(recorded)
    return 0 if report.ok else 1


def _transport(args: argparse.Namespace) -> Service:
    """``--transport``, else ``$PPLX_LABS_TRANSPORT``, else ``web`` (as ``ChatPerplexityLabs`` reads it)."""
    transport = args.transport or os.environ.get("PPLX_LABS_TRANSPORT") or "web"
    if transport == "web":
        return "web"
    if transport == "labs":
        return "labs"
    raise CliError(f"Invalid PPLX_LABS_TRANSPORT {transport!r}: use 'labs' or 'web'")


def _environment_base_url() -> str:
    """``$PPLX_LABS_BASE_URL``, else the live site, checked as ``ChatPerplexityLabs.base_url`` checks it."""
    from langchain_pplx_labs.settings import check_base_url

    try:
        return check_base_url(os.environ.get("PPLX_LABS_BASE_URL") or DEFAULT_BASE_URL)
    except ValueError as exc:  # its PerplexityLabsInputError
        raise CliError(f"$PPLX_LABS_BASE_URL: {exc}") from None


def _impersonate(args: argparse.Namespace) -> str | None:
    """``--impersonate``, else ``$PPLX_LABS_IMPERSONATE``, else ``chrome`` (as ``ChatPerplexityLabs`` reads it)."""
    from langchain_pplx_labs.settings import DEFAULT_IMPERSONATE, check_impersonate

    given = args.impersonate or os.environ.get("PPLX_LABS_IMPERSONATE") or DEFAULT_IMPERSONATE
    try:
        return check_impersonate(given)
    except ValueError as exc:  # a PPLX_LABS_IMPERSONATE that no curl_cffi target is
        raise CliError(f"$PPLX_LABS_IMPERSONATE: {exc}") from None


class _StepLines:
    """The doctor's lines: the header, then each step the moment it completes, aligned on the planned names."""

    def __init__(self, protocol: LabsProtocol, out: TextIO) -> None:
        self.protocol, self.out, self.width = protocol, out, 0

    def header(self, base_url: str, transport: Service, planned: tuple[str, ...]) -> None:
        web = transport == "web"
        path = self.protocol.web_path if web else self.protocol.socketio_path
        self.width = max(len(name) for name in planned)
        self.out.write(f"pplx-labs doctor: {base_url}{path}\n")
        self.out.flush()

    def step(self, step: Step) -> None:
        mark = "✔" if step.ok else "✘"
        self.out.write(f"{mark} {step.name:<{self.width}} {step.ms:>7.0f} ms  {step.detail}".rstrip() + "\n")
        self.out.flush()


def _print(report: Report, protocol: LabsProtocol, out: TextIO) -> None:
    """The whole report at once, as the lines print while it is walked."""
    lines = _StepLines(protocol, out)
    lines.header(report.base_url, report.transport, report.planned)
    for step in report.steps:
        lines.step(step)
    _conclude(report, out)


def _conclude(report: Report, out: TextIO) -> None:
    """What the walk found, after its steps."""
    if report.ok:
        out.write(
            f"{'The web app' if report.transport == 'web' else 'Labs'} answered: {report.answer[:200]}\n"
        )
        return
    failed = report.steps[-1].name if report.steps else report.planned[0]
    verdict = f"Verdict: {report.verdict}\n" if report.verdict else ""
    out.write(
        f"\n{verdict}Failed at: {failed}\nEvidence: {report.evidence}\nWhat to change: {report.advice}\n"
    )


async def _record(
    args: argparse.Namespace, base_url: str, model: str, protocol: LabsProtocol, transport: Service
) -> str:
    """Ask again through the recorder (over ``transport``) and save a redacted cassette; says what happened."""
    from langchain_pplx_labs.doctor.walk import asked
    from langchain_pplx_labs.protocol import build_payload
    from langchain_pplx_labs.recording import UpstreamUnreachableError, record_cassette, save_cassette
    from langchain_pplx_labs.recording.recorder import upstream_headers

    payload = build_payload(model, asked(args.question, args.system), protocol=protocol)
    # A loopback server is an emulator or a stand-in, never the live playground.
    loopback = is_loopback(urlsplit(base_url).hostname or "")
    try:
        cassette = await record_cassette(
            base_url,
            [payload],
            provenance="synthetic" if loopback else "live",
            note="recorded by pplx-labs doctor",
            headers=upstream_headers(protocol=protocol),
            silence=args.timeout,
            connect_timeout=args.timeout,
            protocol=protocol,
            proxy=args.proxy,
            transport=transport,
        )
    except UpstreamUnreachableError as exc:
        return f"nothing recorded: {exc}"
    path = save_cassette(cassette, args.record)
    what = "message" if transport == "web" else "frame"
    return f"recorded {counted(len(cassette.interactions[0].frames), what)} to {path}"
