"""The typed errors every failure of a Labs query surfaces as."""

from __future__ import annotations

__all__ = [
    "INSTEAD",
    "LABS",
    "RETIREMENT_EVIDENCE",
    "SIGN_IN_AGAIN",
    "WEB_APP",
    "PerplexityLabsAttachmentError",
    "PerplexityLabsAttachmentsNotSupportedError",
    "PerplexityLabsBlockedError",
    "PerplexityLabsConnectionError",
    "PerplexityLabsCookieError",
    "PerplexityLabsDisconnectedError",
    "PerplexityLabsError",
    "PerplexityLabsInputError",
    "PerplexityLabsModelAccessError",
    "PerplexityLabsNotFoundError",
    "PerplexityLabsProtocolError",
    "PerplexityLabsRateLimitError",
    "PerplexityLabsRetiredError",
    "PerplexityLabsServerError",
    "PerplexityLabsSessionExpiredError",
    "PerplexityLabsSignInError",
    "PerplexityLabsSilentError",
    "PerplexityLabsTimeoutError",
    "caused_by",
    "excerpt_of",
]


class PerplexityLabsError(Exception):
    """Base of every error this package raises.

    ``partial_content`` holds the answer text streamed before the failure, so a
    caller never loses what it already received. A failed query also says how many
    ``attempts`` it made (retries included) and its ``elapsed`` seconds, backoff included.
    """

    attempts: int = 1
    elapsed: float | None = None

    def __init__(self, message: str, *, partial_content: str = "") -> None:
        super().__init__(message)
        self.partial_content = partial_content


class PerplexityLabsInputError(PerplexityLabsError, ValueError):
    """The request cannot be sent as given (bad message, model name, URL, size).

    ``param``: the request field at fault (``"model"``), when one is (the gateway's 400 names it).
    """

    def __init__(self, message: str, *, partial_content: str = "", param: str | None = None) -> None:
        super().__init__(message, partial_content=partial_content)
        self.param = param


class PerplexityLabsModelAccessError(PerplexityLabsInputError):
    """The web app's model list says ``model`` needs a session this one is not: signed in, or a paid tier.

    Raised before the question is sent. ``required_tier``: the list's ``subscription_tier`` for it;
    ``session_tier``: this session's (``None`` anonymous); ``usable``: the listed models this session has.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        required_tier: str,
        session_tier: str | None,
        usable: tuple[str, ...],
    ) -> None:
        super().__init__(message, param="model")
        self.model = model
        self.required_tier = required_tier
        self.session_tier = session_tier
        self.usable = usable


class PerplexityLabsAttachmentError(PerplexityLabsInputError):
    """An image or file content block cannot be attached as given (too big, bad base64, a URL, a type).

    ``filename`` names the file (the block's own name, or the one made from its type).
    """

    def __init__(self, message: str, *, filename: str = "") -> None:
        super().__init__(message)
        self.filename = filename


class PerplexityLabsAttachmentsNotSupportedError(PerplexityLabsInputError):
    """The conversation has attachments where they cannot go: over Labs, or a web session not signed in.

    Raised before anything is sent or uploaded.
    """


class PerplexityLabsCookieError(PerplexityLabsInputError):
    """The cookies given cannot be sent: a malformed cookie file, a value with a control character.

    ``source`` names where they came from (a file's path, ``cookies=``, ``$PPLX_LABS_COOKIES``); the
    message names the problem and never quotes a cookie's value.
    """

    def __init__(self, message: str, *, source: str) -> None:
        super().__init__(message)
        self.source = source


class PerplexityLabsConnectionError(PerplexityLabsError, ConnectionError):
    """The Socket.IO connection could not be opened or was lost."""


SIGN_IN_AGAIN = "run `pplx-labs login` again (or send a fresh browser session's cookies, cookies=...)"
"""The way back from an expired session."""


class PerplexityLabsSessionExpiredError(PerplexityLabsConnectionError):
    """The session cookies were sent but the web app no longer knows them: the sign-in expired or was revoked.

    Seen as the session check answering no user (``{}``) to a session token, or a 401/403 to one.
    ``evidence`` says which; never retried (asking again sends the same dead token).
    """

    def __init__(self, evidence: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(
            f"The web app's session has expired: {evidence} at {url}. To sign in, {SIGN_IN_AGAIN}"
        )
        self.evidence = evidence
        self.url = url
        self.status = status


class PerplexityLabsBlockedError(PerplexityLabsConnectionError):
    """The server refused us with a block page (Cloudflare 403 / challenge).

    ``challenge``: Cloudflare's challenge (``cf-mitigated: challenge``), which it gives a client whose
    TLS fingerprint is not a browser's: the web transport's ``impersonate`` is what passes it.
    """

    def __init__(
        self, message: str, *, status: int | None = None, excerpt: str = "", challenge: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt
        self.challenge = challenge


class PerplexityLabsNotFoundError(PerplexityLabsConnectionError):
    """No Labs endpoint answers at the URL tried (a 404, or a page that is not Engine.IO): ``url`` names it."""

    def __init__(self, message: str, *, url: str, status: int | None = None, excerpt: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.excerpt = excerpt


LABS = "Perplexity Labs"
"""The name a Labs (Socket.IO) error gives the service that failed, refused or went silent (``service=``)."""
WEB_APP = "Perplexity's web app"
"""The name a web transport's error gives the service that failed, refused or went silent (``service=``)."""

UNTRUSTED_CERTIFICATE = " (TLS certificate not trusted: pass ssl_context= with your CA, or verify_ssl=False)"
"""What a connect failure adds when the server's certificate was not trusted (both services' connects)."""

RETIREMENT_EVIDENCE = (
    "Perplexity retired Labs in 2025-09: labs.perplexity.ai has redirected to www.perplexity.ai since "
    "(gpt4free issue #3193, 2025-09-28), and gpt4free marked its Labs client not working (2025-10-02)"
)
"""What the public record says about the retirement, with its sources (docs/retirement.md has them all)."""
INSTEAD = (
    'use ChatPerplexityLabs(transport="web") (Perplexity\'s web app), or the paid API through '
    "langchain-perplexity's ChatPerplexity"
)
"""What to use instead of the Socket.IO playground."""


class PerplexityLabsRetiredError(PerplexityLabsConnectionError):
    """The endpoint answered the way a retired Labs does (a redirect to the main site, its HTML, silence).

    ``evidence`` says what was seen. Never retried: asking again meets the same answer.
    """

    def __init__(
        self, message: str, *, evidence: str, url: str = "", status: int | None = None, excerpt: str = ""
    ) -> None:
        super().__init__(message)
        self.evidence = evidence
        self.url = url
        self.status = status
        self.excerpt = excerpt

    @classmethod
    def seen(
        cls, evidence: str, *, url: str = "", status: int | None = None, excerpt: str = ""
    ) -> PerplexityLabsRetiredError:
        """The error for ``evidence`` (what the endpoint did): it says Labs was retired, and what to use instead."""
        message = f"Perplexity Labs is retired: {evidence}. {RETIREMENT_EVIDENCE}. Instead, {INSTEAD}"
        return cls(message, evidence=evidence, url=url, status=status, excerpt=excerpt)


class PerplexityLabsSignInError(PerplexityLabsError):
    """``pplx-labs login`` could not sign in: ``step`` names where, the message carries the server's words."""

    def __init__(self, message: str, *, step: str, status: int | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.status = status


class PerplexityLabsDisconnectedError(PerplexityLabsConnectionError):
    """The socket closed in the middle of an answer."""


class PerplexityLabsServerError(PerplexityLabsError):
    """The server reported ``status: failed``; ``server_message`` is its own text."""

    def __init__(
        self, server_message: str, *, model: str = "", partial_content: str = "", service: str = LABS
    ) -> None:
        where = f" (model {model!r})" if model else ""
        super().__init__(
            f"{service} failed the query{where}: {server_message}", partial_content=partial_content
        )
        self.server_message = server_message
        self.model = model
        self.service = service
        """Who failed it: :data:`LABS` or :data:`WEB_APP`."""


class PerplexityLabsRateLimitError(PerplexityLabsServerError):
    """The server refused the question for a rate limit (``error_code`` such as ``FREE_TIER_RATE_LIMITED``).

    Not retried, whatever ``retry_server_failures`` says: asking again at once only prolongs the limit.
    """

    def __init__(
        self,
        server_message: str,
        *,
        error_code: str = "",
        model: str = "",
        partial_content: str = "",
        service: str = LABS,
    ) -> None:
        super().__init__(server_message, model=model, partial_content=partial_content, service=service)
        self.error_code = error_code
        self.quota: dict[str, object] | None = None
        """A signed-in session's remaining quotas (``/rest/rate-limit/all``) when they could be read, else ``None``."""
        named = [f"model {model!r}"] * bool(model) + [f"error_code {error_code}"] * bool(error_code)
        where = f" ({', '.join(named)})" if named else ""
        # A message that is only the code (the web app's, with no text) is said once, in the parentheses.
        said = f": {server_message}" if server_message and server_message != error_code else ""
        self.args = (f"{service} refused the query for a rate limit{where}{said}. Wait before asking again",)


class PerplexityLabsProtocolError(PerplexityLabsError):
    """A frame arrived that we cannot understand; ``excerpt`` shows its start."""

    def __init__(self, message: str, *, excerpt: str = "", partial_content: str = "") -> None:
        shown = f": {excerpt!r}" if excerpt else ""
        super().__init__(f"{message}{shown}", partial_content=partial_content)
        self.excerpt = excerpt


class PerplexityLabsTimeoutError(PerplexityLabsError, TimeoutError):
    """A configured timeout fired; ``which`` names it (connect, handshake, first_token, idle, total).

    Once a query gives up, the message also says which attempt this was out of how many it
    could have made, and the whole call's time: ``... (attempt 1 of 1, 0.52s in total)``.
    """

    def __init__(self, which: str, seconds: float, *, partial_content: str = "", service: str = LABS) -> None:
        self._fired = f"{service} {which} timeout fired after {seconds:g}s"
        super().__init__(self._fired, partial_content=partial_content)
        self.which = which
        self.seconds = seconds

    def account(self, attempt: int, allowed: int, elapsed: float) -> None:
        """Record that the query ended here, on ``attempt`` of ``allowed``, ``elapsed`` seconds in."""
        self.attempts = attempt
        self.elapsed = elapsed
        self.args = (f"{self._fired} (attempt {attempt} of {allowed}, {elapsed:.2f}s in total)",)


class PerplexityLabsSilentError(PerplexityLabsRetiredError, PerplexityLabsTimeoutError):
    """The server took the question and sent no frame at all before the first-token timeout.

    A retired Labs answers so: it keeps the socket and the question and says nothing. Such a
    silence is also what a very slow model looks like, so this is both a retired error and the
    ``first_token`` timeout it always was: its message is the timeout's, the retirement is in
    ``evidence`` and in a note (``__notes__``, printed with the traceback).
    """

    def __init__(self, seconds: float, *, url: str = "") -> None:
        PerplexityLabsTimeoutError.__init__(self, "first_token", seconds)
        self.evidence = f"the server took the question and sent no frame at all in {seconds:g}s"
        self.url = url
        self.status = None
        self.excerpt = ""
        self.add_note(
            f"Perplexity Labs may be retired: {self.evidence}. {RETIREMENT_EVIDENCE}. If the model is "
            f"only slow, raise first_token_timeout; otherwise {INSTEAD}"
        )


def excerpt_of(raw: object, limit: int = 120) -> str:
    """Return a short printable start of ``raw`` for error messages."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text if len(text) <= limit else text[:limit] + "…"


def caused_by(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    """Whether an instance of ``kind`` is anywhere in the cause/context chain of ``exc``.

    Clients re-raise each other's errors (engine.io raises aiohttp's bare, a transport raises from
    the client's own): what happened is often a few links down the chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
