"""The redaction filter applied at record time: secrets and identities never reach a cassette."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

REDACTED = "<redacted>"

SENSITIVE_HEADERS = frozenset(
    {"cookie", "set-cookie", "authorization", "proxy-authorization", "x-api-key", "cf-ray", "x-request-id"}
)
"""Header names (lower case) always replaced."""

SENSITIVE_KEYS = frozenset(
    {
        "sid",
        "jwt",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "cookie",
        "session",
        "password",
    }
)
"""JSON keys (lower case) whose values are replaced anywhere: auth, handshake, payloads and frames."""

WEB_SENSITIVE_KEYS = frozenset(
    {"visitor_id", "frontend_uuid", "frontend_context_uuid", "user_nextauth_id", "read_write_token"}
)
"""Keys a web recording also replaces: the browser's and each question's ids (new on every ask, so a
``<redacted>`` one matches any on replay), the signed-in user's id, and the thread's write token."""


@dataclass(frozen=True)
class Redactor:
    """What to hide, configurable per recording.

    ``headers`` and ``keys`` are matched case-insensitively; ``user_agent=True``
    also hides the User-Agent (it can identify a machine); ``placeholder``
    replaces every hidden value, so cassettes show *that* something was there.
    """

    headers: frozenset[str] = SENSITIVE_HEADERS
    keys: frozenset[str] = SENSITIVE_KEYS
    user_agent: bool = False
    placeholder: str = REDACTED
    extra_headers: Iterable[str] = field(default=())
    extra_keys: Iterable[str] = field(default=())

    def for_web(self) -> Redactor:
        """This redactor, also hiding :data:`WEB_SENSITIVE_KEYS` (what a web recording applies)."""
        return dataclasses.replace(self, extra_keys=(*self.extra_keys, *WEB_SENSITIVE_KEYS))

    @property
    def header_names(self) -> frozenset[str]:
        """Lower-case names of the headers whose values are redacted."""
        names = {name.lower() for name in (*self.headers, *self.extra_headers)}
        if self.user_agent:
            names.add("user-agent")
        return frozenset(names)

    @property
    def key_names(self) -> frozenset[str]:
        """Lower-case JSON keys whose values are redacted, at any depth."""
        return frozenset(name.lower() for name in (*self.keys, *self.extra_keys))

    def redact_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """A copy of ``headers`` with sensitive values replaced."""
        hidden = self.header_names
        return {
            name: self.placeholder if name.lower() in hidden else value for name, value in headers.items()
        }

    def redact_data(self, data: Any) -> Any:
        """A copy of JSON-like ``data`` with the values of sensitive keys replaced, at any depth."""
        hidden = self.key_names
        return self._walk(data, hidden)

    def _walk(self, data: Any, hidden: frozenset[str]) -> Any:
        if isinstance(data, Mapping):
            return {
                key: self.placeholder if str(key).lower() in hidden else self._walk(value, hidden)
                for key, value in data.items()
            }
        if isinstance(data, list | tuple):
            return [self._walk(item, hidden) for item in data]
        return data
