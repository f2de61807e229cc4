"""The web app's email sign-in on the emulator: CSRF, a one-time code "sent", its redirect link, the callback that sets
the session cookie, a TOTP challenge, and sessions that expire.

The routes and bodies are those perplexity-webui-scraper 1.2.1 (``cli/commands/get_session_token.py``) and
perplexity-web-mcp-cli 0.16.1 (``auth.py``) send; what the service answers beyond what those clients read is ours,
listed in docs/web_transport.md ("Sign-in"). No mail goes anywhere: a code is kept in :attr:`Accounts.last_code`
(and :attr:`Accounts.codes`) for a test to read.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import orjson
from aiohttp import web

from langchain_pplx_labs.protocol import LabsProtocol
from langchain_pplx_labs.web_evidence import BEARER_PREFIX, WEB_SESSION_COOKIES

CSRF = "/api/auth/csrf"
SIGNIN_EMAIL = "/api/auth/signin/email"
OTP_REDIRECT = "/api/auth/otp-redirect-link"
CALLBACK_EMAIL = "/api/auth/callback/email"
"""next-auth's email callback: the clients follow whatever ``redirect`` says; this path is ours (next-auth's own)."""
TOTP_VERIFY = ("/api/auth/totp-challenge/verify", "/api/auth/totp/challenge-verify")
"""perplexity-web-mcp-cli 0.16.1's path, then perplexity-webui-scraper 1.2.1's: they disagree, both are served."""
TOTP_CHALLENGE = "/auth/totp-challenge"
ERROR_PAGE = "/auth/error"
CSRF_COOKIE = "next-auth.csrf-token"
"""next-auth's CSRF cookie name over http (ours: the record's clients keep cookies without naming them)."""
SESSION_COOKIE = WEB_SESSION_COOKIES[0]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Accounts:
    """Email sign-in with one-time codes, optional TOTP, and expired sessions, for :class:`WebEndpoint`'s app."""

    def __init__(self) -> None:
        self.last_code: str | None = None
        """The latest one-time code "emailed" (six digits, single use)."""
        self.codes: dict[str, str] = {}
        """The pending code of each email."""
        self.totp_codes: dict[str, str] = {}
        """Accounts with TOTP on, and the code their authenticator shows (set one to rehearse 2FA)."""
        self.sessions: dict[str, str] = {}
        """Session tokens issued, and whose they are."""
        self.expired: set[str] = set()
        """Session tokens the service no longer knows: :meth:`expire` adds one."""
        self.calls: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()
        """Requests answered as an expired session's, by path."""
        self._csrf: set[str] = set()
        self._links: dict[str, tuple[str, str]] = {}  # callback token -> (email, callbackUrl)
        self._challenges: dict[str, tuple[str, str]] = {}  # TOTP challenge token -> (email, callbackUrl)

    def install(self, app: web.Application, protocol: LabsProtocol) -> None:
        """Add the sign-in routes, and the expired-session answers in front of ``protocol``'s web routes."""
        app.router.add_get(CSRF, self._csrf_token)
        app.router.add_post(SIGNIN_EMAIL, self._signin)
        app.router.add_post(OTP_REDIRECT, self._otp_redirect)
        app.router.add_get(CALLBACK_EMAIL, self._callback)
        for path in TOTP_VERIFY:
            app.router.add_post(path, self._totp)
        app.middlewares.append(self._expired_sessions(protocol))

    def paths(self) -> tuple[str, ...]:
        return (CSRF, SIGNIN_EMAIL, OTP_REDIRECT, CALLBACK_EMAIL, *TOTP_VERIFY)

    def expire(self, token: str | None = None) -> None:
        """Make ``token`` (default: every session issued) unknown to the service from now on."""
        self.expired.update([token] if token is not None else self.sessions)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]  # every field back to its first value

    # -- the routes ------------------------------------------------------------------------

    async def _csrf_token(self, request: web.Request) -> web.Response:
        self.calls[CSRF] += 1
        token = secrets.token_hex(32)
        self._csrf.add(token)
        response = web.json_response({"csrfToken": token})
        response.set_cookie(CSRF_COOKIE, token, path="/", httponly=True, samesite="Lax")
        return response

    async def _signin(self, request: web.Request) -> web.Response:
        """``POST /api/auth/signin/email?version=2.18&source=default``: ``email``, ``csrfToken``, ``useNumericOtp``,
        ``json``, ``callbackUrl`` (both clients send exactly these)."""
        self.calls[SIGNIN_EMAIL] += 1
        body = await _json_body(request)
        email, csrf = body.get("email"), body.get("csrfToken")
        if csrf not in self._csrf or request.cookies.get(CSRF_COOKIE) != csrf:
            return _error(403, "csrf", "The CSRF token is missing or does not match its cookie")
        if not isinstance(email, str) or "@" not in email:
            return _error(400, "invalid_email", "Enter a valid email address")
        self.last_code = self.codes[email] = f"{secrets.randbelow(10**6):06d}"
        return web.json_response(
            {"url": f"{_origin(request)}/api/auth/verify-request?provider=email&type=email"}
        )

    async def _otp_redirect(self, request: web.Request) -> web.Response:
        """``POST /api/auth/otp-redirect-link``: ``email``, ``otp``, ``redirectUrl``, ``emailLoginMethod: "web-otp"``;
        answers ``{"redirect": ...}`` (what both clients read), a wrong code a 400."""
        self.calls[OTP_REDIRECT] += 1
        body = await _json_body(request)
        email, otp, redirect = body.get("email"), body.get("otp"), body.get("redirectUrl", "/")
        if not isinstance(email, str) or self.codes.get(email) != otp:
            return _error(400, "invalid_otp", "Invalid verification code")
        del self.codes[email]
        link = secrets.token_urlsafe(24)
        self._links[link] = (email, str(redirect))
        query = f"callbackUrl={quote(str(redirect), safe='')}&token={link}&email={quote(email, safe='')}"
        return web.json_response({"redirect": f"{CALLBACK_EMAIL}?{query}"})

    async def _callback(self, request: web.Request) -> web.Response:
        """The link's callback: a redirect setting the session cookie, to the TOTP challenge when the account has
        TOTP on, or to the error page (``error=Verification``) for a link unknown or used."""
        self.calls[CALLBACK_EMAIL] += 1
        found = self._links.pop(request.query.get("token", ""), None)
        if found is None:
            raise web.HTTPFound(f"{ERROR_PAGE}?error=Verification")
        email, callback = found
        if email in self.totp_codes:
            challenge = secrets.token_urlsafe(24)
            self._challenges[challenge] = (email, callback)
            raise web.HTTPFound(f"{TOTP_CHALLENGE}?token={challenge}")
        response = web.HTTPFound(callback)
        self._sign_in(response, email)
        raise response

    async def _totp(self, request: web.Request) -> web.Response:
        """``POST`` ``{"token", "code"}``: the session cookie and ``{"redirect": ...}``; a wrong code, ``{"error"}``."""
        self.calls[TOTP_VERIFY[0]] += 1
        body = await _json_body(request)
        found = self._challenges.get(str(body.get("token", "")))
        if found is None:
            return _error(400, "invalid_challenge", "The challenge expired: sign in again")
        email, callback = found
        if body.get("code") != self.totp_codes[email]:
            return _error(400, "invalid_totp", "Invalid authentication code")
        del self._challenges[str(body["token"])]
        response = web.json_response({"redirect": urlsplit(callback).path or "/"})
        self._sign_in(response, email)
        return response

    def _sign_in(self, response: web.StreamResponse, email: str) -> None:
        token = "emulator-session-" + secrets.token_urlsafe(32)
        self.sessions[token] = email
        response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, secure=True, samesite="Lax")

    # -- expired sessions ------------------------------------------------------------------

    def _expired_sessions(self, protocol: LabsProtocol) -> Any:
        """A session token in :attr:`expired` is no session: the session check answers ``{}`` (next-auth's answer
        without a session), the ask a 403 and ``/rest/`` routes a 401 (the answers the clients read as an expired
        token: perplexity-webui-scraper's 403, perplexity-web-mcp-cli's 401/403; the bodies are ours)."""

        @web.middleware
        async def expired_sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
            if session_token(request) not in self.expired:
                return await handler(request)
            self.refused[request.path] += 1
            if request.path == protocol.web_session_path:
                return web.json_response({})
            if request.path == protocol.web_path:
                return _error(403, "session_expired", "Your session has expired. Please sign in again.")
            if request.path.startswith("/rest/"):
                return _error(401, "unauthorized", "Not signed in")
            return await handler(request)

        return expired_sessions


def session_token(request: web.Request) -> str:
    """The session's token: a next-auth session cookie, or an ``Authorization: Bearer`` token (pxcli)."""
    for name in WEB_SESSION_COOKIES:
        if request.cookies.get(name):
            return request.cookies[name]
    authorization = request.headers.get("Authorization", "")
    return authorization[len(BEARER_PREFIX) :].strip() if authorization.startswith(BEARER_PREFIX) else ""


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        body = {key: values[0] for key, values in parse_qs(await request.text()).items()}
    return body if isinstance(body, dict) else {}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"
