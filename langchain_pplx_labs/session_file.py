"""The signed-in session ``pplx-labs login`` keeps: where its user-only file lives, and writing, reading, deleting it."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from langchain_pplx_labs.cookies import cookie_header, join_cookies
from langchain_pplx_labs.errors import PerplexityLabsCookieError

SESSION_FILE_ENV = "PPLX_LABS_SESSION_FILE"
"""Where the session file is, when not the platform's place (an empty value: no session file)."""
_FORMAT = 1


def default_session_path() -> Path:
    """``$XDG_CONFIG_HOME/pplx-labs/session.json``; without it, the platform's config folder: ``~/.config``,
    ``%APPDATA%`` on Windows, ``~/Library/Application Support`` on macOS."""
    configured = os.environ.get("XDG_CONFIG_HOME")
    if configured:
        root = Path(configured)
    elif sys.platform == "win32":
        root = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Application Support"
    else:
        root = Path.home() / ".config"
    return root / "pplx-labs" / "session.json"


def session_path() -> Path | None:
    """The session file the model and the CLI use: ``$PPLX_LABS_SESSION_FILE`` if set (empty: none), else the default."""
    configured = os.environ.get(SESSION_FILE_ENV)
    if configured is None:
        return default_session_path()
    return Path(configured).expanduser() if configured.strip() else None


def save_session(path: Path, cookies: Mapping[str, str], *, email: str, base_url: str) -> None:
    """Write ``cookies`` to ``path`` readable by the user alone (0600, created so: never readable by others
    for a moment), replacing what was there; its folder is made 0700 if missing."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    document = {"format": _FORMAT, "email": email, "base_url": base_url, "saved_at": int(time.time())}
    text = json.dumps({**document, "cookies": dict(cookies)}, indent=2) + "\n"
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)  # an umask cannot widen it, but an old file of that name could be wider
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_session(path: Path) -> str | None:
    """The ``Cookie`` header of the session saved at ``path``; ``None`` when there is no file."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PerplexityLabsCookieError(
            f"Cannot read the session file {source}: {exc}", source=source
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _malformed(source, f"not JSON (line {exc.lineno}: {exc.msg})") from None
    cookies = document.get("cookies") if isinstance(document, dict) else None
    if not isinstance(cookies, dict) or not all(isinstance(v, str) for v in cookies.values()):
        raise _malformed(source, 'no "cookies" object of strings')
    return join_cookies(cookies.items(), source=source)


def model_cookies(given: str | None) -> str | None:
    """The ``Cookie`` header a model built without ``cookies=`` sends: ``given`` (``$PPLX_LABS_COOKIES``, in any
    form ``cookies=`` takes), else the session file's, else ``None``."""
    if given:
        return cookie_header(given)
    path = session_path()
    return load_session(path) if path is not None else None


def delete_session(path: Path) -> bool:
    """Delete the session file; whether there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _malformed(source: str, problem: str) -> PerplexityLabsCookieError:
    return PerplexityLabsCookieError(
        f"The session file {source} is {problem}: run `pplx-labs logout`, then `pplx-labs login`",
        source=source,
    )
