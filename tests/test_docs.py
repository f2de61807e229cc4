"""The user guide is true: ChatPerplexityLabs's docstring, the README and docs/*.md run against the emulator.

Every fenced ``python`` block runs, in order, in one namespace, with ``PPLX_LABS_BASE_URL``
pointing at an in-process emulator that follows tool and schema prompts (what
``pplx-labs serve --follow-tools`` serves). A ``text`` block right after a ``python`` block
is what that code prints, compared with doctest's checker (``...`` matches anything).
Every relative link in the README, CONTRIBUTING.md and docs/*.md points to a file that exists.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import doctest
import inspect
import io
import itertools
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator
from langchain_pplx_labs.emulator.rules import schema_follower

# The docs and examples run as a user runs them: the system tier.
pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parent.parent
DOCS_PAGE = ROOT / "docs" / "chat_perplexity_labs.md"
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
_CHECKER = doctest.OutputChecker()
_OPTIONS = doctest.ELLIPSIS


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, its dedented text and the line it starts on."""

    lang: str
    code: str
    line: int


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced code block of a markdown text (or a docstring holding markdown)."""
    return [
        Block(m["lang"], textwrap.dedent(m["body"]), text.count("\n", 0, m.start()) + 1)
        for m in _FENCE.finditer(text)
    ]


def run_blocks(blocks: list[Block], where: str) -> dict[str, Any]:
    """Run the python blocks in one namespace; check each against the text block that follows it."""
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for index, block in enumerate(blocks):
        if block.lang != "python":
            continue
        printed = _run(block, namespace, where)
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if following is not None and following.lang == "text":
            want, got = following.code.rstrip() + "\n", printed.rstrip() + "\n"
            if not _CHECKER.check_output(want, got, _OPTIONS):
                raise AssertionError(
                    f"{where}, block at line {block.line} printed:\n{got}\nbut the text at line "
                    f"{following.line} says:\n{want}"
                )
    return namespace


def _run(block: Block, namespace: dict[str, Any], where: str) -> str:
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT  # docs show `await llm.ainvoke(...)` as in a notebook
    code = compile(block.code, f"<{where}, line {block.line}>", "exec", flags=flags)
    out = io.StringIO()
    # A block that warns fails: a reader's first example must not print a warning (a Labs name on the web).
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        if code.co_flags & inspect.CO_COROUTINE:
            asyncio.run(eval(code, namespace))
        else:
            exec(code, namespace)
    return out.getvalue()


def close_models(namespace: dict[str, Any]) -> int:
    """Close every model the examples made (they hold warm sockets); return how many."""
    models = [value for value in namespace.values() if isinstance(value, ChatPerplexityLabs)]
    for model in models:
        model.close()
    return len(models)


@pytest.fixture(scope="module")
def follower() -> Iterator[EmulatorThread]:
    with EmulatorThread(LabsEmulator(schema_follower)) as thread:
        yield thread


@pytest.fixture
def docs_server(follower: EmulatorThread, monkeypatch: pytest.MonkeyPatch) -> EmulatorThread:
    """The emulator the docs talk to, reached through the documented environment variable."""
    monkeypatch.setenv("PPLX_LABS_BASE_URL", follower.base_url)
    monkeypatch.delenv("PPLX_LABS_COOKIES", raising=False)
    follower.call(follower.emulator.reset)
    follower.call(lambda: follower.emulator.script(schema_follower))
    return follower


# -- the helpers themselves -----------------------------------------------------------------


def test_run_blocks_fails_when_printed_output_differs() -> None:
    blocks = fenced_blocks('```python\nprint("Paris")\n```\n\n```text\nLyon\n```\n')
    assert [b.lang for b in blocks] == ["python", "text"]
    with pytest.raises(AssertionError, match="printed:\nParis"):
        run_blocks(blocks, "sample")
    ok = fenced_blocks(
        '    ```python\n    x = 2\n    print("id", x)\n    ```\n    ```text\n    id ...\n    ```\n'
    )
    assert run_blocks(ok, "sample")["x"] == 2


def test_run_blocks_fails_when_a_block_warns() -> None:
    code = 'from langchain_pplx_labs import ChatPerplexityLabs\nChatPerplexityLabs(transport="web", model="sonar-pro")\n'
    with pytest.raises(UserWarning, match=r"model='sonar-pro' is a name of Labs and the paid API"):
        run_blocks(fenced_blocks(f"```python\n{code}```\n"), "sample")
    warned = fenced_blocks('```python\nimport warnings\nwarnings.warn("deprecated soon")\n```\n')
    with pytest.raises(UserWarning, match="deprecated soon"):
        run_blocks(warned, "sample")


# -- ChatPerplexityLabs's docstring -----------------------------------------------------------

DOCSTRING_SECTIONS = [
    "Setup",
    "Instantiate",
    "Transport",
    "Invoke",
    "Stream",
    "Async",
    "Tool calling",
    "Structured output",
    "Reasoning output",
    "Token usage",
    "Response metadata",
]


def test_docstring_has_the_partner_package_sections() -> None:
    doc = ChatPerplexityLabs.__doc__ or ""
    titles = re.findall(r'^\s*\?\?\?\+? info "([^"]+)"', doc, re.M)
    assert titles[: len(DOCSTRING_SECTIONS)] == DOCSTRING_SECTIONS
    # Every section from Instantiate on shows runnable code.
    sections = re.split(r'^\s*\?\?\?\+? info "', doc, flags=re.M)[1:]
    for section in sections:
        title = section.split('"', 1)[0]
        if title not in DOCSTRING_SECTIONS[:1]:
            assert "```python" in section, f"section {title!r} has no python example"


def test_docstring_examples_run_and_print_what_they_show(docs_server: EmulatorThread) -> None:
    doc = inspect.cleandoc(ChatPerplexityLabs.__doc__ or "")
    blocks = fenced_blocks(doc)
    checked = sum(1 for a, b in itertools.pairwise(blocks) if (a.lang, b.lang) == ("python", "text"))
    assert checked >= 11  # every section with output has its output checked
    namespace = run_blocks(blocks, "ChatPerplexityLabs docstring")
    assert namespace["llm"].base_url == docs_server.base_url  # the env variable reached the model
    assert close_models(namespace) == 4  # llm, labs, reasoner, v1_llm
    asked = {payload["model"] for payload in docs_server.emulator.requests}
    # Web names only, and Labs' default over Labs: `auto` asks `turbo` for an anonymous session.
    assert asked == {"turbo", "pplx_reasoning", "r1-1776"}


# -- docs/chat_perplexity_labs.md -------------------------------------------------------------

PAGE_SECTIONS = [
    "Overview",
    "Setup",
    "Instantiation",
    "Invocation",
    "Chaining",
    "Streaming",
    "Tool calling",
    "Structured output",
    "Sources and citations",
    "Reasoning",
    "API reference",
]


def test_docs_page_has_the_integration_page_sections() -> None:
    page = DOCS_PAGE.read_text(encoding="utf-8")
    assert re.findall(r"^## (.+)$", page, re.M) == PAGE_SECTIONS
    assert "| Tool calling | Structured output | JSON mode | Image input |" in page
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/chat_perplexity_labs.md)" in readme


def test_docs_page_runs_and_prints_what_it_shows(docs_server: EmulatorThread) -> None:
    blocks = fenced_blocks(DOCS_PAGE.read_text(encoding="utf-8"))
    checked = sum(1 for a, b in itertools.pairwise(blocks) if (a.lang, b.lang) == ("python", "text"))
    assert checked >= 12
    namespace = run_blocks(blocks, DOCS_PAGE.name)
    assert close_models(namespace) == 6  # llm, web_llm, paid, v1_llm, reasoner, signed_in
    # `auto` asks `turbo` anonymously and `pplx_pro` signed in (the attachment's session).
    asked = {payload["model"] for payload in docs_server.emulator.requests}
    assert asked == {"turbo", "pplx_pro", "pplx_reasoning"}


def test_every_field_says_what_it_is_for() -> None:
    """The init args are documented once, on the fields (the class docstring has no table repeating them)."""
    source = (ROOT / "langchain_pplx_labs" / "_fields.py").read_text(encoding="utf-8")
    (fields_class,) = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef) and node.name == "ModelFields"
    ]
    body = fields_class.body
    documented, undocumented = set(), set()
    for node, following in itertools.pairwise([*body, None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            has_doc = (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
                and following.value.value.strip() != ""
            )
            (documented if has_doc else undocumented).add(node.target.id)
    documented.discard("model_config")
    undocumented.discard("model_config")
    assert not undocumented, f"fields without a docstring: {sorted(undocumented)}"
    assert {"model", "base_url", "timeout", "cookies", "max_retries", "protocol"} <= documented
    assert documented <= set(ChatPerplexityLabs.model_fields)
    assert "Key init args" not in (ChatPerplexityLabs.__doc__ or "")


def test_outputs_shown_are_what_pplx_labs_serve_follow_tools_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    """The docs say: start `pplx-labs serve --follow-tools --port 0` to reproduce the outputs."""
    command = [sys.executable, "-m", "langchain_pplx_labs.cli", "serve", "--follow-tools", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as server:
        try:
            assert server.stdout is not None
            url = server.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            monkeypatch.setenv("PPLX_LABS_BASE_URL", url)
            monkeypatch.delenv("PPLX_LABS_COOKIES", raising=False)
            for name, text, models in [
                ("ChatPerplexityLabs docstring", inspect.cleandoc(ChatPerplexityLabs.__doc__ or ""), 4),
                (DOCS_PAGE.name, DOCS_PAGE.read_text(encoding="utf-8"), 6),
            ]:
                assert close_models(run_blocks(fenced_blocks(text), name)) == models
        finally:
            server.terminate()
            server.wait(timeout=30)


# -- the README and the other docs/*.md pages ---------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A page whose python blocks run in-process: what it must show and leave behind."""

    path: str
    """Relative to the repository root."""
    checked_outputs: int
    """Python blocks followed by the ``text`` block of what they print."""
    models: int
    """``ChatPerplexityLabs`` instances the page leaves in its namespace (closed after the run)."""


RUNNABLE_PAGES = (
    Page("README.md", checked_outputs=1, models=3),  # the quickstart: llm, web, labs (closed by their `with`)
    Page("docs/tools_and_agents.md", checked_outputs=1, models=0),  # its model is made inline
    Page("docs/protocol.md", checked_outputs=1, models=2),  # llm, rehearsed
    Page("docs/cassettes.md", checked_outputs=0, models=0),  # a pytest file: tests/test_recording.py runs it
    Page("docs/web_transport.md", checked_outputs=1, models=0),  # the codec alone, on a stream written out
    Page("docs/retirement.md", checked_outputs=0, models=0),  # the emulator options of each verdict
    Page("docs/mcp.md", checked_outputs=1, models=0),  # the SDK's stdio client on `pplx-labs mcp --emulator`
)
RUN_BY_THEIR_OWN_TESTS = {
    "docs/chat_perplexity_labs.md": "test_docs_page_runs_and_prints_what_it_shows",
    "docs/gateway.md": "test_gateway_page_runs_against_pplx_labs_gateway",
}
WITHOUT_PYTHON = {
    "docs/browser_voice.md": "a table of measurements of HTTP clients; tests/test_transports_curl.py and test_ja4.py check ours",
    "docs/conformance.md": "tables of what is tested where",
    "docs/doctor.md": "shell commands and the report they print",
    "docs/emulator.md": "the emulator's flags and options, exercised by tests/test_cli.py and the emulator tests",
    "docs/performance.md": "measurements; the code that makes them is benchmarks/",
    "docs/reliability.md": "behaviour tested by tests/test_reliability.py, test_timeouts.py and others",
}


def test_every_docs_page_is_run_or_marked_as_without_python() -> None:
    listed = {page.path for page in RUNNABLE_PAGES} | set(RUN_BY_THEIR_OWN_TESTS) | set(WITHOUT_PYTHON)
    present = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").glob("*.md")}
    assert present - listed == set(), "a docs page no test runs: add it to a list above"
    assert listed - present - {"README.md"} == set(), "listed pages that do not exist"
    for path in WITHOUT_PYTHON:
        langs = {block.lang for block in fenced_blocks((ROOT / path).read_text(encoding="utf-8"))}
        assert "python" not in langs, f"{path} has python now: list it in RUNNABLE_PAGES"


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=[page.path for page in RUNNABLE_PAGES])
def test_page_runs_and_prints_what_it_shows(page: Page, docs_server: EmulatorThread) -> None:
    blocks = fenced_blocks((ROOT / page.path).read_text(encoding="utf-8"))
    assert any(block.lang == "python" for block in blocks)
    checked = sum(1 for a, b in itertools.pairwise(blocks) if (a.lang, b.lang) == ("python", "text"))
    assert checked == page.checked_outputs
    namespace = run_blocks(blocks, page.path)
    assert close_models(namespace) == page.models


def test_readme_first_screen_gives_the_service_status() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:25])
    for fact in [
        "retired",
        "labs.perplexity.ai redirects to",
        "#3193",
        "2025-10-02",
        "2025-12-11",
        "https://www.perplexity.ai/rest/sse/perplexity_ask",
        'transport="web"',
        'transport="labs"',
        '`ChatPerplexityLabs()` (`transport="web"`, the default',  # the default is the live service
        "PerplexityLabsRetiredError",
        "langchain-perplexity",
    ]:
        assert fact in first_screen, fact


def test_readme_is_a_front_door() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) < 12_000
    assert "make demo" in readme
    assert "make test" in readme  # CI runs the README's test command
    # Not on PyPI (issue #31): how to install from a checkout or a wheel, and where `make demo` puts the command.
    assert "pip install langchain-pplx-labs" not in readme
    assert "pip install ." in readme
    assert "pip install dist/*.whl" in readme
    assert ".venv/bin/pplx-labs" in readme


def test_no_page_recommends_langgraphs_deprecated_create_react_agent() -> None:
    """Issue #31: deprecated since LangGraph 1.0; langchain's ``create_agent`` is the loop to use."""
    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "examples").glob("*")),
    ]
    for page in pages:
        if not page.is_file():
            continue
        paragraphs = re.split(r"\n\s*\n", page.read_text(encoding="utf-8"))
        for paragraph in paragraphs:
            if "create_react_agent" in paragraph:
                assert "deprecated" in paragraph, (page.name, paragraph)
                assert "create_agent`" in paragraph, (page.name, paragraph)


GATEWAY_PAGE = ROOT / "docs" / "gateway.md"
GATEWAY_PAGE_ADDRESS = "http://127.0.0.1:8000"  # `pplx-labs gateway`'s default, as the page shows it


def test_gateway_page_runs_against_pplx_labs_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's client blocks, with the address a `pplx-labs gateway --port 0` printed in place of the default."""
    for client_package in (
        "openai",
        "langchain_openai",
        "langchain_perplexity",
        "anthropic",
        "langchain_anthropic",
    ):
        pytest.importorskip(client_package)
    monkeypatch.delenv("PERPLEXITY_BASE_URL", raising=False)  # the page sets it; undone after the test
    monkeypatch.delenv("PPLX_LABS_COOKIES", raising=False)
    text = GATEWAY_PAGE.read_text(encoding="utf-8")
    assert sum(b.code.count(GATEWAY_PAGE_ADDRESS) for b in fenced_blocks(text) if b.lang == "python") == 6
    command = [sys.executable, "-m", "langchain_pplx_labs.cli", "gateway", "--emulator", "--follow-tools"]
    with subprocess.Popen(
        [*command, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as server:
        try:
            assert server.stdout is not None
            root = server.stdout.readline().strip()
            assert root.startswith("http://127.0.0.1:")
            blocks = [
                replace(b, code=b.code.replace(GATEWAY_PAGE_ADDRESS, root)) for b in fenced_blocks(text)
            ]
            checked = sum(1 for a, b in itertools.pairwise(blocks) if (a.lang, b.lang) == ("python", "text"))
            assert checked == 6
            namespace = run_blocks(blocks, GATEWAY_PAGE.name)
            # The clients keep keep-alive sockets to the gateway: close them before it goes.
            namespace["client"].close()
            namespace["chat_openai"].root_client.close()
            namespace["chat_perplexity"].client.close()
            namespace["anthropic_client"].close()
        finally:
            server.terminate()
            server.wait(timeout=30)


# -- links ----------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\((?P<target>[^()\s]+)\)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    words = re.sub(r"[^\w\- ]", "", _INLINE_CODE.sub(lambda m: m[0].strip("`"), heading).strip().lower())
    return words.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {github_anchor(m[1]) for m in re.finditer(r"^#{1,6} +(.+?) *$", text, re.M)}


def broken_links(path: Path, root: Path) -> list[str]:
    """Relative links of a markdown file whose file (or heading anchor) does not exist."""
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    broken = []
    for m in _LINK.finditer(text):
        target = m["target"]
        if re.match(r"^[a-z][a-z+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        relative = linked.relative_to(root).as_posix() if linked.is_relative_to(root) else str(linked)
        if not linked.exists():
            broken.append(f"{target} (no file {relative})")
        elif anchor and linked.suffix == ".md" and anchor not in anchors_of(linked):
            broken.append(f"{target} (no heading #{anchor} in {relative})")
    return broken


def test_broken_links_finds_missing_files_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# The `gateway`: clients\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[a](docs/a.md#the-gateway-clients) [b](docs/b.md) [c](docs/a.md#nope) [d](#status)\n"
        "## Status\n[w](https://example.com/x.md)\n"
        "```python\nx = y[0](z)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page, tmp_path) == [
        "docs/b.md (no file docs/b.md)",
        "docs/a.md#nope (no heading #nope in docs/a.md)",
    ]


def test_relative_links_point_to_files_that_exist() -> None:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 10
    broken = {page.relative_to(ROOT).as_posix(): broken_links(page, ROOT) for page in pages}
    assert {page: links for page, links in broken.items() if links} == {}
