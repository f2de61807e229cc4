"""``pplx-labs login`` and ``logout``: the web app's email sign-in, its session kept in a user-only file the model reads."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from langchain_pplx_labs._cliargs import CliError, positive_seconds
from langchain_pplx_labs.cli._shared import add_base_url_flag, add_impersonate_flag
from langchain_pplx_labs.protocol import DEFAULT_BASE_URL

if TYPE_CHECKING:
    from langchain_pplx_labs.web.signin import EmailSignIn

LOGIN_HELP = "sign in to the web app with an emailed one-time code and keep the session for the model"
LOGOUT_HELP = "delete the session pplx-labs login kept"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``login`` and ``logout``, each bound to what it runs."""
    login = commands.add_parser("login", help=LOGIN_HELP, description=LOGIN_HELP)
    login.add_argument("--email", default=None, help="the account's email (prompted for when not given)")
    login.add_argument(
        "--code",
        default=None,
        help="the 6-digit code (or the link) mailed by an earlier `login --email` (prompted for when not given; "
        "without a terminal to ask, login sends the code and stops)",
    )
    login.add_argument(
        "--totp-code", default=None, help="the authenticator's 6-digit code, for accounts with TOTP"
    )
    add_base_url_flag(login)
    login.add_argument(
        "--timeout", type=positive_seconds, default=30.0, help="seconds each request may take (default 30)"
    )
    _add_session_file_flag(login)
    add_impersonate_flag(login)
    login.set_defaults(run=run_login)
    logout = commands.add_parser("logout", help=LOGOUT_HELP, description=LOGOUT_HELP)
    _add_session_file_flag(logout)
    logout.set_defaults(run=run_logout)


def _add_session_file_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--session-file",
        default=None,
        metavar="PATH",
        help="where the session is kept (default $PPLX_LABS_SESSION_FILE, else $XDG_CONFIG_HOME/pplx-labs/"
        "session.json or the platform's config folder)",
    )


def run_login(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.session_file import save_session
    from langchain_pplx_labs.settings import check_base_url

    path = _session_file(args)
    base_url = check_base_url(args.base_url or os.environ.get("PPLX_LABS_BASE_URL") or DEFAULT_BASE_URL)
    email = (args.email or _ask("Email: ") or "").strip()
    if "@" not in email:
        raise CliError(f"{email!r} is not an email address" if email else "no email given (--email)")
    cookies = asyncio.run(_sign_in(args, base_url, email))
    if cookies is None:
        return 0  # the code went out; the second run finishes
    save_session(path, cookies, email=email, base_url=base_url)
    print(f"Signed in as {email}; the session is kept in {path} (readable by you alone).", file=sys.stderr)
    return 0


def run_logout(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.session_file import delete_session

    path = _session_file(args)
    said = f"Signed out: deleted {path}." if delete_session(path) else f"No session to delete at {path}."
    print(said, file=sys.stderr)
    return 0


async def _sign_in(args: argparse.Namespace, base_url: str, email: str) -> dict[str, str] | None:
    """The session cookies, or ``None`` once the code was sent with no terminal to read it from."""
    from langchain_pplx_labs.settings import DEFAULT_IMPERSONATE, check_impersonate
    from langchain_pplx_labs.transports import http_transport
    from langchain_pplx_labs.web.signin import EmailSignIn

    impersonate = args.impersonate or os.environ.get("PPLX_LABS_IMPERSONATE") or DEFAULT_IMPERSONATE
    http = http_transport(connect_timeout=args.timeout, impersonate=check_impersonate(impersonate))
    try:
        async with asyncio.timeout(args.timeout * 4):  # four requests at most, each within --timeout
            flow = EmailSignIn(base_url, http)
            code = args.code
            if code is None:
                await flow.send_code(email)
                print(f"A sign-in code was sent to {email}.", file=sys.stderr)
                code = _ask("Code from the email: ")
                if not code:
                    print(f"Finish with: pplx-labs login --email {email} --code CODE", file=sys.stderr)
                    return None
            return await _verify(flow, email, code.strip(), args.totp_code)
    finally:
        await http.aclose()


async def _verify(flow: EmailSignIn, email: str, code: str, totp: str | None) -> dict[str, str]:
    from langchain_pplx_labs.web.signin import TotpRequired

    try:
        return await flow.verify(email, code, totp=totp)
    except TotpRequired as needed:
        answer = _ask("TOTP code from your authenticator: ")
        if not answer:
            raise CliError(f"{needed}") from None
        return await flow.finish_totp(needed.challenge, answer.strip())


def _ask(prompt: str) -> str | None:
    """A line typed at ``prompt`` (on stderr); ``None`` when stdin has none to give (a script, a closed pipe)."""
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    if not line:
        print(file=sys.stderr)
        return None
    return line.strip() or None


def _session_file(args: argparse.Namespace) -> Path:
    from langchain_pplx_labs.session_file import SESSION_FILE_ENV, session_path

    if args.session_file:
        return Path(args.session_file).expanduser()
    path = session_path()
    if path is None:
        raise CliError(f"${SESSION_FILE_ENV} is empty (no session file): pass --session-file PATH")
    return path
