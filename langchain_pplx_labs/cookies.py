"""Cookies in every form users have them (a header, a dict, cookies.txt, a Cookie-Editor export, a HAR file) as one ``Cookie`` header."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from langchain_pplx_labs.errors import PerplexityLabsCookieError

PERPLEXITY_DOMAIN = "perplexity.ai"
"""The site whose cookies a file may give: ``perplexity.ai`` and its subdomains (``www.``, ``.perplexity.ai``)."""
GIVEN = "cookies= / $PPLX_LABS_COOKIES"
"""What a header string or a dict is called in an error (its source is the code or the environment)."""
_NETSCAPE_FIELDS = 7  # domain, include-subdomains, path, secure, expires, name, value (curl's cookies.txt)
_HTTP_ONLY = "#HttpOnly_"  # curl writes an HttpOnly cookie's line with this prefix, not as a comment


def cookie_header(value: str | os.PathLike[str] | Mapping[str, str]) -> str:
    """The ``Cookie`` header ``value`` stands for.

    A string with ``=`` is the header itself; any other string, or a path, names a cookie file
    (:func:`read_cookie_file`); a mapping is ``{name: value}``. Raises :class:`PerplexityLabsCookieError`
    for what a header cannot carry (a control character such as CR or LF, a ``;`` in a value).
    """
    if isinstance(value, Mapping):
        return join_cookies(((str(name), str(text)) for name, text in value.items()), source=GIVEN)
    if isinstance(value, str) and "=" in value:
        return _checked_header(value.strip())
    return read_cookie_file(Path(os.fspath(value)).expanduser())


def read_cookie_file(path: Path) -> str:
    """The perplexity.ai cookies of a Netscape ``cookies.txt``, a Cookie-Editor JSON export or a HAR file,
    as one ``Cookie`` header; expired ones are left out (gpt4free 8.8.6 drops expired HAR cookies too)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PerplexityLabsCookieError(
            f"No cookie file at {source}: cookies= takes a Cookie header (name=value; ...), a dict, or the path "
            "of a cookies.txt, Cookie-Editor JSON or HAR file",
            source=source,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PerplexityLabsCookieError(
            f"Cannot read the cookie file {source}: {exc}", source=source
        ) from None
    kept, seen = _parse(text, source)
    if not kept:
        others = f" ({seen} for other sites or expired)" if seen else ""
        raise PerplexityLabsCookieError(
            f"The cookie file {source} holds no live {PERPLEXITY_DOMAIN} cookie{others}: export the cookies "
            f"of www.{PERPLEXITY_DOMAIN} while signed in",
            source=source,
        )
    return join_cookies(kept.items(), source=source)


def join_cookies(pairs: Iterable[tuple[str, str]], *, source: str) -> str:
    """``name=value; ...`` of ``pairs``, each checked (a later pair of the same name wins)."""
    cookies: dict[str, str] = {}
    for name, value in pairs:
        check_cookie(name, value, source=source)
        cookies[name] = value
    if not cookies:
        raise PerplexityLabsCookieError(f"No cookie given in {source}", source=source)
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def check_cookie(name: str, value: str, *, source: str) -> None:
    """Raise unless ``name=value`` can go in a ``Cookie`` header (the value itself is never quoted)."""
    if not name or any(c in name for c in " \t;=,") or _control(name):
        raise PerplexityLabsCookieError(f"Invalid cookie name {name!r} in {source}", source=source)
    if (bad := _control(value)) is not None:
        raise PerplexityLabsCookieError(
            f"The cookie {name!r} in {source} has a control character ({bad}) in its value, which an HTTP "
            "header cannot carry: copy the value again, without line breaks",
            source=source,
        )
    if ";" in value:
        raise PerplexityLabsCookieError(
            f"The cookie {name!r} in {source} has a ';' in its value", source=source
        )


def is_perplexity_host(host: str) -> bool:
    """``host`` (a cookie's domain, a URL's host) is perplexity.ai or one of its subdomains."""
    host = host.strip().lstrip(".").lower()
    return host == PERPLEXITY_DOMAIN or host.endswith("." + PERPLEXITY_DOMAIN)


def _checked_header(header: str) -> str:
    if (bad := _control(header)) is not None:
        raise PerplexityLabsCookieError(
            f"The Cookie header in {GIVEN} has a control character ({bad}), which an HTTP header cannot "
            "carry: copy it again, without line breaks",
            source=GIVEN,
        )
    return header


def _control(text: str) -> str | None:
    """The name of the first control character in ``text`` (``CR``, ``LF``, ``0x1b``), or ``None``."""
    for char in text:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return {"\r": "CR", "\n": "LF", "\t": "TAB", "\x00": "NUL"}.get(char, f"0x{ord(char):02x}")
    return None


def _parse(text: str, source: str) -> tuple[dict[str, str], int]:
    """The file's live perplexity.ai cookies, and how many cookies it held in all."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise PerplexityLabsCookieError(
                f"The cookie file {source} is not valid JSON (line {exc.lineno}: {exc.msg})", source=source
            ) from None
        rows = list(_json_rows(data, source))
    else:
        rows = list(_netscape_rows(text, source))
    now = time.time()
    kept = {
        name: value
        for host, name, value, expires in rows
        if is_perplexity_host(host) and not _expired(expires, now)
    }
    return kept, len(rows)


Row = tuple[str, str, str, float | None]
"""A cookie as a file holds it: host, name, value, expiry in seconds since the epoch (``None``: a session cookie)."""


def _netscape_rows(text: str, source: str) -> Iterator[Row]:
    """curl's ``cookies.txt``: seven tab-separated fields a line; ``#`` comments, ``#HttpOnly_`` kept."""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.removeprefix(_HTTP_ONLY)
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != _NETSCAPE_FIELDS:
            raise PerplexityLabsCookieError(
                f"The cookie file {source} is neither JSON nor a Netscape cookies.txt: line {number} has "
                f"{len(fields)} tab-separated fields, not {_NETSCAPE_FIELDS}",
                source=source,
            )
        domain, _, _, _, expires, name, value = fields
        seconds = _number(expires)
        yield domain, name, value, (seconds if seconds else None)  # 0: a session cookie


def _json_rows(data: Any, source: str) -> Iterator[Row]:
    if isinstance(data, dict) and isinstance(data.get("log"), dict):
        yield from _har_rows(data["log"], source)
        return
    if not isinstance(data, list):
        raise PerplexityLabsCookieError(
            f"The cookie file {source} is JSON but neither a Cookie-Editor export (a list of cookies) nor a "
            'HAR file ({"log": {"entries": ...}})',
            source=source,
        )
    for index, cookie in enumerate(data):
        if not isinstance(cookie, dict) or not isinstance(cookie.get("name"), str) or "value" not in cookie:
            raise PerplexityLabsCookieError(
                f"The cookie file {source}: item {index} is not a cookie (an object with name and value)",
                source=source,
            )
        expires = None if cookie.get("session") else _number(cookie.get("expirationDate"))
        yield str(cookie.get("domain", "")), cookie["name"], str(cookie["value"]), expires


def _har_rows(log: Mapping[str, Any], source: str) -> Iterator[Row]:
    """A HAR's requests to perplexity.ai: their ``cookies``, else their ``Cookie`` header (as gpt4free reads them)."""
    entries = log.get("entries")
    if not isinstance(entries, list):
        raise PerplexityLabsCookieError(f"The HAR file {source} has no log.entries list", source=source)
    for entry in entries:
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            continue
        host = urlsplit(str(request.get("url", ""))).hostname or ""
        cookies = request.get("cookies") or []
        for cookie in cookies if isinstance(cookies, list) else []:
            if isinstance(cookie, dict) and isinstance(cookie.get("name"), str):
                yield (
                    str(cookie.get("domain") or host),
                    cookie["name"],
                    str(cookie.get("value", "")),
                    _har_expiry(cookie),
                )
        if cookies:
            continue
        for header in request.get("headers") or []:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "cookie":
                for part in str(header.get("value", "")).split(";"):
                    name, sep, value = part.partition("=")
                    if sep and name.strip():
                        yield host, name.strip(), value.strip(), None


def _har_expiry(cookie: Mapping[str, Any]) -> float | None:
    """A HAR cookie's ``expires``: ISO 8601 (the HAR spec), or seconds as some browsers write."""
    expires = cookie.get("expires")
    if isinstance(expires, str) and expires and not expires.replace(".", "", 1).isdigit():
        from datetime import UTC, datetime

        try:
            parsed = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return _number(expires)


def _number(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _expired(expires: float | None, now: float) -> bool:
    return expires is not None and expires < now
