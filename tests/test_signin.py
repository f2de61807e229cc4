"""Sign-in: cookies in every form users have them, ``pplx-labs login`` / ``logout``, an expired session, the quota."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from clirun import run_cli
from langchain_core.load import dumps
from pydantic import ValidationError

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator, Scenario
from langchain_pplx_labs.emulator.script import RATE_LIMIT_FRAME
from langchain_pplx_labs.errors import (
    PerplexityLabsCookieError,
    PerplexityLabsRateLimitError,
    PerplexityLabsSessionExpiredError,
)
from langchain_pplx_labs.recording.recorder import upstream_headers
from langchain_pplx_labs.session_file import default_session_path

TOKEN = "tok-7f3a"
EXPECTED = f"__Secure-next-auth.session-token={TOKEN}; cf_clearance=cf-91"
"""The Cookie header every form below stands for: the two perplexity.ai cookies, in the file's order."""
FUTURE = int(time.time()) + 86_400
PAST = int(time.time()) - 86_400


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No cookies from the environment and no session file but the test's own."""
    monkeypatch.delenv("PPLX_LABS_COOKIES", raising=False)
    monkeypatch.setenv("PPLX_LABS_SESSION_FILE", str(tmp_path / "no-session.json"))


def _ask(emulator: LabsEmulator, **fields: object) -> str:
    """One question over the web with ``fields``; the Cookie header the emulator's ask received."""
    model = ChatPerplexityLabs(base_url=emulator.base_url, transport="web", max_retries=0, **fields)  # type: ignore[arg-type]
    try:
        model.invoke("Capital of France?")
    finally:
        model.close()
    headers = emulator.web.headers[-1]
    return next(value for name, value in headers.items() if name.lower() == "cookie")


# -- cookies in every form --------------------------------------------------------------------


def _netscape(path: Path) -> Path:
    path.write_text(
        "# Netscape HTTP Cookie File\n"
        "# https://curl.se/docs/http-cookies.html\n\n"
        f"#HttpOnly_.perplexity.ai\tTRUE\t/\tTRUE\t{FUTURE}\t__Secure-next-auth.session-token\t{TOKEN}\n"
        f".perplexity.ai\tTRUE\t/\tTRUE\t0\tcf_clearance\tcf-91\n"
        f".perplexity.ai\tTRUE\t/\tTRUE\t{PAST}\told\tgone\n"
        f".example.com\tTRUE\t/\tFALSE\t{FUTURE}\tother\tsite\n"
    )
    return path


def _cookie_editor(path: Path) -> Path:
    rows = [
        {"domain": ".perplexity.ai", "expirationDate": FUTURE, "hostOnly": False, "httpOnly": True,
         "name": "__Secure-next-auth.session-token", "path": "/", "sameSite": "lax", "secure": True,
         "session": False, "storeId": "0", "value": TOKEN},
        {"domain": "www.perplexity.ai", "hostOnly": True, "httpOnly": True, "name": "cf_clearance", "path": "/",
         "secure": True, "session": True, "value": "cf-91"},
        {"domain": ".perplexity.ai", "expirationDate": PAST, "name": "old", "value": "gone", "session": False},
        {"domain": "accounts.google.com", "name": "SID", "value": "google", "session": True},
    ]  # fmt: skip
    path.write_text(json.dumps(rows))
    return path


def _har(path: Path, *, header_only: bool = False) -> Path:
    cookies = [
        {"name": "__Secure-next-auth.session-token", "value": TOKEN, "expires": "2099-01-01T00:00:00.000Z"},
        {"name": "cf_clearance", "value": "cf-91"},
    ]
    header = {"name": "cookie", "value": f"__Secure-next-auth.session-token={TOKEN}; cf_clearance=cf-91"}
    entries = [
        {"request": {"method": "GET", "url": "https://cdn.example.com/x.js", "headers": [],
                     "cookies": [{"name": "tracker", "value": "elsewhere"}]}},
        {"request": {"method": "POST", "url": "https://www.perplexity.ai/rest/sse/perplexity_ask",
                     "headers": [header], "cookies": [] if header_only else cookies}},
    ]  # fmt: skip
    path.write_text(json.dumps({"log": {"version": "1.2", "creator": {"name": "test"}, "entries": entries}}))
    return path


def test_a_header_string_reaches_the_emulator_as_given(emulator: LabsEmulator) -> None:
    assert _ask(emulator, cookies=EXPECTED) == EXPECTED


def test_a_dict_reaches_the_emulator_as_one_header(emulator: LabsEmulator) -> None:
    cookies = {"__Secure-next-auth.session-token": TOKEN, "cf_clearance": "cf-91"}
    assert _ask(emulator, cookies=cookies) == EXPECTED


@pytest.mark.parametrize(
    "write",
    [_netscape, _cookie_editor, _har, lambda path: _har(path, header_only=True)],
    ids=["netscape", "cookie-editor", "har-cookies", "har-header"],
)
def test_each_cookie_file_reaches_the_emulator_as_its_perplexity_cookies(
    emulator: LabsEmulator, tmp_path: Path, write: object
) -> None:
    path = write(tmp_path / "cookies.file")  # type: ignore[operator]
    assert _ask(emulator, cookies=str(path)) == EXPECTED
    assert _ask(emulator, cookies=path) == EXPECTED


def test_the_environment_may_name_a_cookie_file(
    emulator: LabsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPLX_LABS_COOKIES", str(_netscape(tmp_path / "cookies.txt")))
    assert _ask(emulator) == EXPECTED


def test_the_recorder_sends_the_cookies_the_model_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A recording stands in for the model: a cookie file named by the environment is read, not sent as a path.
    monkeypatch.setenv("PPLX_LABS_COOKIES", str(_netscape(tmp_path / "cookies.txt")))
    assert upstream_headers()["Cookie"] == EXPECTED


def _cookie_error(**fields: object) -> PerplexityLabsCookieError:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(base_url="http://127.0.0.1:9", **fields)  # type: ignore[arg-type]
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, PerplexityLabsCookieError)
    assert "s3cret" not in str(caught.value)  # the refused value is never quoted back
    return error


@pytest.mark.parametrize(
    "cookies",
    ["session=s3cret\r\nX-Injected: 1", "a=s3cret\nb=2", {"a": "s3cret\r\n"}, {"a": "s3cret\x1b"}],
    ids=["crlf-header", "lf-header", "crlf-dict", "escape-dict"],
)
def test_a_control_character_is_a_cookie_error_at_construction(cookies: object) -> None:
    error = _cookie_error(cookies=cookies)
    assert "control character" in str(error)
    assert ("(CR)" in str(error)) or ("(LF)" in str(error)) or ("(0x1b)" in str(error))


def test_a_control_character_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "editor.json"
    path.write_text(json.dumps([{"domain": ".perplexity.ai", "name": "a", "value": "s3cret\r\nx"}]))
    error = _cookie_error(cookies=str(path))
    assert str(error) == (
        f"The cookie 'a' in {path} has a control character (CR) in its value, which an HTTP header cannot "
        "carry: copy the value again, without line breaks"
    )
    assert error.source == str(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[{broken", "is not valid JSON (line 1: Expecting property name enclosed in double quotes)"),
        ('{"name": "a"}', "is JSON but neither a Cookie-Editor export"),
        ('[{"domain": ".perplexity.ai"}]', "item 0 is not a cookie (an object with name and value)"),
        ('{"log": {"version": "1.2"}}', "has no log.entries list"),
        (".perplexity.ai\tTRUE\t/\tsession\n", "line 1 has 4 tab-separated fields, not 7"),
        (
            f".example.com\tTRUE\t/\tFALSE\t{FUTURE}\tother\tsite\n",
            "holds no live perplexity.ai cookie (1 for other",
        ),
    ],
    ids=["bad-json", "json-object", "not-a-cookie", "har-no-entries", "netscape-fields", "no-perplexity"],
)
def test_a_malformed_file_is_a_cookie_error_naming_the_file_and_the_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "cookies.txt"
    path.write_text(content)
    error = _cookie_error(cookies=str(path))
    assert str(path) in str(error)
    assert problem in str(error)


def test_a_missing_file_is_a_cookie_error_saying_what_cookies_takes(tmp_path: Path) -> None:
    error = _cookie_error(cookies=str(tmp_path / "nowhere.txt"))
    assert str(error).startswith(
        f"No cookie file at {tmp_path / 'nowhere.txt'}: cookies= takes a Cookie header"
    )


def test_cookies_read_from_a_file_stay_secret(tmp_path: Path) -> None:
    model = ChatPerplexityLabs(base_url="http://127.0.0.1:9", cookies=str(_netscape(tmp_path / "c.txt")))
    assert model.cookies is not None
    assert model.cookies.get_secret_value() == EXPECTED
    assert TOKEN not in repr(model)
    assert TOKEN not in dumps(model)


# -- the session file and pplx-labs login / logout ------------------------------------------------


def test_the_session_file_is_in_xdg_config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_session_path() == tmp_path / "pplx-labs" / "session.json"
    monkeypatch.delenv("PPLX_LABS_SESSION_FILE")
    assert ChatPerplexityLabs(base_url="http://127.0.0.1:9").session_file == str(
        tmp_path / "pplx-labs" / "session.json"
    )


def _login(
    emulator: LabsEmulator, email: str, session: Path, *extra: str, typed: str = ""
) -> tuple[int, str]:
    """``login --email`` without a terminal (the code is sent), then ``login --code`` with the code the emulator
    mailed; the second run's exit code and stderr."""
    common = ("--base-url", emulator.base_url, "--session-file", str(session), "--email", email)
    sent = run_cli("login", *common)
    assert (sent.returncode, sent.stdout) == (0, "")
    assert f"A sign-in code was sent to {email}." in sent.stderr
    assert f"Finish with: pplx-labs login --email {email} --code CODE" in sent.stderr
    code = emulator.web.accounts.last_code
    assert code is not None
    assert len(code) == 6
    assert code.isdigit()
    done = run_cli("login", *common, "--code", code, *extra, stdin=typed)
    return done.returncode, done.stderr


def test_login_writes_a_user_only_session_the_next_model_run_uses(
    emulator: LabsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = tmp_path / "config" / "session.json"
    code, stderr = _login(emulator, "a@b.c", session)
    assert code == 0, stderr
    assert f"Signed in as a@b.c; the session is kept in {session} (readable by you alone)." in stderr
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    (token, email), = emulator.web.accounts.sessions.items()  # fmt: skip
    assert email == "a@b.c"
    assert token not in stderr
    assert json.loads(session.read_text())["cookies"] == {"__Secure-next-auth.session-token": token}

    monkeypatch.setenv("PPLX_LABS_SESSION_FILE", str(session))
    before = emulator.web.session_checks
    assert _ask(emulator) == f"__Secure-next-auth.session-token={token}"
    assert emulator.web.session_checks == before + 1
    assert emulator.web.bodies[-1]["params"]["mode"] == "copilot"  # asked signed in
    # session_file=None turns it off: nothing is sent.
    model = ChatPerplexityLabs(base_url=emulator.base_url, session_file=None)
    assert model.cookies is None

    out = run_cli("logout", "--session-file", str(session))
    assert (out.returncode, out.stderr) == (0, f"Signed out: deleted {session}.\n")
    assert not session.exists()
    again = run_cli("logout", "--session-file", str(session))
    assert (again.returncode, again.stderr) == (0, f"No session to delete at {session}.\n")


def test_a_wrong_code_is_the_servers_refusal_in_one_line(emulator: LabsEmulator, tmp_path: Path) -> None:
    run_cli(
        "login", "--base-url", emulator.base_url, "--email", "a@b.c", "--session-file", str(tmp_path / "s")
    )
    wrong = "999999" if emulator.web.accounts.last_code != "999999" else "999998"
    out = run_cli(
        "login", "--base-url", emulator.base_url, "--email", "a@b.c", "--code", wrong,
        "--session-file", str(tmp_path / "s"),
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr == (
        "pplx-labs: error: Perplexity's web app refused checking the code (HTTP 400): Invalid verification code\n"
    )
    assert not (tmp_path / "s").exists()


def test_a_used_code_says_to_log_in_again(emulator: LabsEmulator, tmp_path: Path) -> None:
    code, _ = _login(emulator, "a@b.c", tmp_path / "s")
    assert code == 0
    # The emulator's code was single use; a second exchange of the same code is refused.
    used = emulator.web.accounts.last_code
    out = run_cli(
        "login", "--base-url", emulator.base_url, "--email", "a@b.c", "--code", str(used),
        "--session-file", str(tmp_path / "t"),
    )  # fmt: skip
    assert out.returncode == 1
    assert "refused checking the code (HTTP 400)" in out.stderr


def test_an_account_with_totp_needs_its_code(emulator: LabsEmulator, tmp_path: Path) -> None:
    emulator.web.accounts.totp_codes["t@b.c"] = "654321"
    code, stderr = _login(emulator, "t@b.c", tmp_path / "s")
    assert code == 1
    assert stderr.endswith(
        "pplx-labs: error: Perplexity's web app asks for the account's TOTP code: pass --totp-code too\n"
    )
    code, stderr = _login(emulator, "t@b.c", tmp_path / "s", "--totp-code", "123456")
    assert (code, stderr) == (1, "pplx-labs: error: Perplexity's web app refused the TOTP code (HTTP 400): "
                                 "Invalid authentication code\n")  # fmt: skip
    code, stderr = _login(emulator, "t@b.c", tmp_path / "s", "--totp-code", "654321")
    assert code == 0, stderr
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o600
    # On a terminal, the TOTP code is asked for.
    code, stderr = _login(emulator, "t@b.c", tmp_path / "typed", typed="654321\n")
    assert code == 0, stderr
    assert "TOTP code from your authenticator: " in stderr
    assert (tmp_path / "typed").exists()


def test_a_malformed_session_file_is_a_cookie_error_naming_it(tmp_path: Path) -> None:
    session = tmp_path / "session.json"
    session.write_text("{not json")
    error = _cookie_error(session_file=str(session))
    assert str(error) == (
        f"The session file {session} is not JSON (line 1: Expecting property name enclosed in double quotes): "
        "run `pplx-labs logout`, then `pplx-labs login`"
    )


# -- an expired session and the quota ------------------------------------------------------------


def test_an_expired_session_is_its_own_error_with_the_way_back(emulator: LabsEmulator) -> None:
    cookies = "__Secure-next-auth.session-token=stale-token"
    emulator.web.accounts.expire("stale-token")
    model = ChatPerplexityLabs(base_url=emulator.base_url, cookies=cookies, max_retries=2)
    with pytest.raises(PerplexityLabsSessionExpiredError) as caught:
        model.invoke("Hi")
    model.close()
    assert str(caught.value) == (
        "The web app's session has expired: the session check named no user for the session cookie sent at "
        f"{emulator.base_url}/api/auth/session. To sign in, run `pplx-labs login` again (or send a fresh "
        "browser session's cookies, cookies=...)"
    )
    assert emulator.web.asks == 0  # nothing asked anonymously in its place
    assert emulator.web.accounts.refused == {"/api/auth/session": 1}  # not retried


def test_a_session_expiring_under_a_warm_connection_is_the_same_error(emulator: LabsEmulator) -> None:
    model = ChatPerplexityLabs(base_url=emulator.base_url, cookies="__Secure-next-auth.session-token=t1")
    try:
        model.invoke("Hi")
        emulator.web.accounts.expire("t1")
        with pytest.raises(PerplexityLabsSessionExpiredError) as caught:
            model.invoke("Hi again")
    finally:
        model.close()
    assert "pplx-labs login" in str(caught.value)


def test_a_signed_in_rate_limit_carries_the_quota_left(emulator: LabsEmulator) -> None:
    emulator.script(Scenario(failure=RATE_LIMIT_FRAME))
    model = ChatPerplexityLabs(base_url=emulator.base_url, cookies="__Secure-next-auth.session-token=t2")
    with pytest.raises(PerplexityLabsRateLimitError) as caught:
        model.invoke("Hi")
    model.close()
    assert str(caught.value).endswith(
        "Wait before asking again. Quota left: Pro Search 300 left, Deep Research 20 left, Labs 50 left, "
        "Browser Agent 10 left"
    )
    assert caught.value.quota is not None
    assert caught.value.quota["remaining_pro"] == 300


def test_an_anonymous_rate_limit_reads_no_quota(emulator: LabsEmulator) -> None:
    emulator.script(Scenario(failure=RATE_LIMIT_FRAME))
    model = ChatPerplexityLabs(base_url=emulator.base_url)
    with pytest.raises(PerplexityLabsRateLimitError) as caught:
        model.invoke("Hi")
    model.close()
    assert caught.value.quota is None
    assert "Quota" not in str(caught.value)
    assert emulator.web.calls["/rest/rate-limit/all"] == 0


def test_the_doctor_shows_the_quota_of_the_login_session(emulator: LabsEmulator, tmp_path: Path) -> None:
    session = tmp_path / "session.json"
    assert _login(emulator, "a@b.c", session)[0] == 0
    out = run_cli("doctor", "--base-url", emulator.base_url, env={"PPLX_LABS_SESSION_FILE": str(session)})
    assert out.returncode == 0, out.stderr
    session_line = next(line for line in out.stdout.splitlines() if line.startswith("✔ session check"))
    assert session_line.endswith(
        "ms  signed in (the session names a user); quota: Pro Search 300 left, Deep Research 20 "
        "left, Labs 50 left, Browser Agent 10 left"
    )
