"""The web app's email sign-in: a one-time code sent, then exchanged for the session cookies (TOTP when the account has it).

The steps and bodies are what perplexity-webui-scraper 1.2.1 (``get_session_token.py``) and perplexity-web-mcp-cli
0.16.1 (``auth.py``) send: ``GET /api/auth/csrf``; ``POST /api/auth/signin/email`` (the code is mailed);
``POST /api/auth/otp-redirect-link`` with the code, which answers a ``redirect``; that link, not followed
automatically, whose redirect sets the session cookie, or points at ``/auth/totp-challenge?token=``, whose
``POST /api/auth/totp-challenge/verify`` sets it. Cookies set along the way are kept and sent back, as the
clients' curl_cffi sessions do. Everything goes through the HTTP transport seam.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import orjson

from langchain_pplx_labs.errors import WEB_APP, PerplexityLabsSignInError, excerpt_of
from langchain_pplx_labs.protocol import LabsProtocol
from langchain_pplx_labs.refusals import shared_refusal
from langchain_pplx_labs.settings import BROWSER_USER_AGENT
from langchain_pplx_labs.transports.base import HTTPTransport, Request, Response
from langchain_pplx_labs.web.codec import WEB_SESSION_COOKIES, web_page_headers

CSRF = "/api/auth/csrf"
SIGNIN_EMAIL = "/api/auth/signin/email"
OTP_REDIRECT = "/api/auth/otp-redirect-link"
TOTP_VERIFY = "/api/auth/totp-challenge/verify"
"""perplexity-web-mcp-cli 0.16.1's path (perplexity-webui-scraper 1.2.1 has ``/api/auth/totp/challenge-verify``)."""
TOTP_CHALLENGE = "/auth/totp-challenge"
CALLBACK_LANDING = "/?login-source=floatingSignup"
"""Where the sign-in lands after the callback: both clients' ``callbackUrl`` / ``redirectUrl``."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_BYTES = 64 * 1024
# Set-Cookie lines joined by ", " (the transport's headers): split where a new name=value starts, not in a date.
_NEXT_COOKIE = re.compile(r",\s*(?=[^;,=\s]+=)")


class TotpRequired(PerplexityLabsSignInError):
    """The account has TOTP on: :meth:`EmailSignIn.finish_totp` with ``challenge`` and the authenticator's code."""

    def __init__(self, challenge: str) -> None:
        super().__init__(
            f"{WEB_APP} asks for the account's TOTP code: pass --totp-code too", step="the TOTP challenge"
        )
        self.challenge = challenge


class EmailSignIn:
    """One sign-in, in its steps: :meth:`send_code` mails the code, :meth:`verify` exchanges it for the session."""

    def __init__(
        self,
        base_url: str,
        http: HTTPTransport,
        *,
        protocol: LabsProtocol | None = None,
        version: str = "2.18",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._protocol = protocol or LabsProtocol()
        self._query = f"?version={version}&source=default"
        self.jar: dict[str, str] = {}
        """Cookies the web app set so far (sent back with each request)."""

    @property
    def session_cookies(self) -> dict[str, str]:
        """The session cookie(s) the sign-in ended with (next-auth splits a long one into ``.0``, ``.1``, ...)."""
        names = WEB_SESSION_COOKIES
        return {k: v for k, v in self.jar.items() if k in names or k.rpartition(".")[0] in names}

    async def send_code(self, email: str) -> None:
        """Ask the web app to mail ``email`` a one-time code."""
        status, data = await self._call("GET", CSRF, "the CSRF token")
        csrf = data.get("csrfToken") if status == 200 else None
        if not isinstance(csrf, str) or not csrf:
            raise self._failed("the CSRF token", status, data)
        body = {
            "email": email,
            "csrfToken": csrf,
            "useNumericOtp": "true",
            "json": "true",
            "callbackUrl": self.base_url + CALLBACK_LANDING,
        }
        status, data = await self._call("POST", SIGNIN_EMAIL + self._query, "sending the code", body)
        if status != 200:
            raise self._failed("sending the code", status, data)

    async def verify(self, email: str, code: str, *, totp: str | None = None) -> dict[str, str]:
        """Exchange ``code`` (or the emailed link itself) for the session cookies; ``totp`` when the account asks."""
        link = code if code.startswith(("http://", "https://")) else await self._redirect_link(email, code)
        status, headers = await self._get_head(link)
        location = headers.get("location", "") if status in _REDIRECTS else ""
        if "error=" in location:
            raise PerplexityLabsSignInError(
                f"{WEB_APP} did not accept the code: its link led to {location} (a code used, expired or "
                "mistyped): run pplx-labs login again for a new one",
                step="the sign-in link",
            )
        if TOTP_CHALLENGE in location:
            challenge = parse_qs(urlsplit(location).query).get("token", [""])[0]
            if totp is None:
                raise TotpRequired(challenge)
            return await self.finish_totp(challenge, totp)
        return self._signed_in()

    async def finish_totp(self, challenge: str, code: str) -> dict[str, str]:
        """Answer the TOTP ``challenge`` with the authenticator's ``code``: the session cookies."""
        body = {"token": challenge, "code": code}
        status, data = await self._call("POST", TOTP_VERIFY + self._query, "the TOTP code", body)
        if status >= 400 or data.get("error"):
            raise self._failed("the TOTP code", status, data)
        return self._signed_in()

    def _signed_in(self) -> dict[str, str]:
        cookies = self.session_cookies
        if not cookies:
            raise PerplexityLabsSignInError(
                f"{WEB_APP} completed the sign-in without setting a session cookie ({', '.join(WEB_SESSION_COOKIES)})",
                step="the sign-in link",
            )
        return cookies

    async def _redirect_link(self, email: str, code: str) -> str:
        body = {
            "email": email,
            "otp": code,
            "redirectUrl": self.base_url + CALLBACK_LANDING,
            "emailLoginMethod": "web-otp",
        }
        status, data = await self._call("POST", OTP_REDIRECT, "checking the code", body)
        redirect = data.get("redirect") if status == 200 else None
        if not isinstance(redirect, str) or not redirect:
            raise self._failed("checking the code", status, data)
        return urljoin(self.base_url + "/", redirect)

    # -- HTTP ------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, step: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Send one JSON request; its status and JSON object (``{}`` for anything else)."""
        headers = {"Accept": "application/json", **self._headers()}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self.base_url + path
        request = Request(method, url, headers, orjson.dumps(dict(body)) if body is not None else b"")
        async with await self._http.handle_request(request) as response:
            self._keep_cookies(response)
            raw = await response.read(_READ_BYTES)
        text = raw.decode("utf-8", "replace")
        refused = shared_refusal(
            url,
            response.status,
            response.headers,
            text,
            blocked=f"Perplexity blocked {step}",
            behind="The web app",
            service=WEB_APP,
        )
        if refused is not None:
            raise refused
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = {"message": excerpt_of(text.strip())} if text.strip() else {}
        return response.status, data if isinstance(data, dict) else {}

    async def _get_head(self, url: str) -> tuple[int, dict[str, str]]:
        """GET ``url`` without following it: the status and headers (the session cookie comes in them)."""
        request = Request("GET", url, {"Accept": "text/html", **self._headers()})
        async with await self._http.handle_request(request) as response:
            self._keep_cookies(response)
            await response.read(_READ_BYTES)
        return response.status, response.headers

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": BROWSER_USER_AGENT, **web_page_headers(self._protocol)}
        if self.jar:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.jar.items())
        return headers

    def _keep_cookies(self, response: Response) -> None:
        for line in _NEXT_COOKIE.split(response.headers.get("set-cookie", "")):
            name, sep, rest = line.partition("=")
            value, _, attributes = rest.partition(";")
            if not sep or not name.strip():
                continue
            if re.search(r"(?i)max-age=0\b", attributes) or not value.strip():
                self.jar.pop(name.strip(), None)  # a cookie deleted
            else:
                self.jar[name.strip()] = value.strip()

    def _failed(self, step: str, status: int, data: Mapping[str, Any]) -> PerplexityLabsSignInError:
        said = next((data[k] for k in ("message", "error", "detail") if isinstance(data.get(k), str)), "")
        words = f": {said}" if said else ""
        return PerplexityLabsSignInError(
            f"{WEB_APP} refused {step} (HTTP {status}){words}", step=step, status=status
        )
