"""The package's import graph, read from its source: no import circle, only the command line imports the CLI, few import aiohttp."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "langchain_pplx_labs"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
CLI = f"{PACKAGE}.cli"
# Issue #26, a web-native core: aiohttp (and aiohttp-socks) only below the HTTP transport seam, in the
# Labs wing and its doctor; the emulator, the gateway and the CLI (servers and their front) not counted.
AIOHTTP = {"aiohttp", "aiohttp_socks"}
AIOHTTP_IMPORTERS_OUTSIDE_SERVERS = 5
SERVERS = ("emulator", "gateway", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, *, type_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every ``import`` / ``from`` of the module, at module level or in a function; ``if TYPE_CHECKING`` ones too
    when ``type_only``."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if not type_only and _is_type_checking_block(node):
            assert isinstance(node, ast.If)
            pending.extend(node.orelse)  # the ``else:`` of ``if TYPE_CHECKING`` does run
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return found


def _targets(module: str, statement: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's modules that ``statement`` in ``module`` imports (``from x import sub`` names ``x.sub``)."""
    if isinstance(statement, ast.Import):
        return {alias.name for alias in statement.names if alias.name in MODULES}
    base = statement.module or ""
    if statement.level:  # relative: resolved against the importing module's package
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(statement.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    submodules = {f"{base}.{alias.name}" for alias in statement.names} & MODULES.keys()
    names_only = len(submodules) < len(statement.names)  # some names are attributes of ``base`` itself
    return submodules | ({base} if base in MODULES and names_only else set())


def import_graph(*, type_only: bool = False) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (with ``type_only``, also those only type checkers import)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        statements = _imports(tree, type_only=type_only)
        edges = set().union(*(_targets(module, statement) for statement in statements))
        graph[module] = edges - {module}
    return graph


def importers_of(packages: set[str]) -> set[str]:
    """The package's modules importing any of ``packages``: at module level, in a function or for type checkers only."""
    found: set[str] = set()
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for statement in _imports(tree, type_only=True):
            if isinstance(statement, ast.Import):
                names = [alias.name for alias in statement.names]
            else:
                names = [statement.module or ""] if statement.level == 0 else []
            if any(name.split(".")[0] in packages for name in names):
                found.add(module)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as ``[a, b, ..., a]``, or ``[]`` when the graph has none (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str]:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done and (cycle := visit(target)):
                return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return []

    for start in sorted(graph):
        if start not in done and (cycle := visit(start)):
            return cycle
    return []


def test_the_reader_sees_the_packages_modules_and_imports() -> None:
    # The graph is only worth its verdicts if it reads what is there: known modules and known arrows.
    graph = import_graph()
    assert {PACKAGE, f"{PACKAGE}.protocol", f"{PACKAGE}.gateway.app", CLI} <= graph.keys()
    assert f"{PACKAGE}.protocol" in graph[f"{PACKAGE}.chat_models"]
    assert f"{PACKAGE}.emulator" in graph[f"{PACKAGE}.pytest_plugin"]  # a function-level import
    # ``if TYPE_CHECKING:`` imports count only when asked for.
    assert f"{PACKAGE}.chat_models" not in graph[PACKAGE]
    assert f"{PACKAGE}.chat_models" in import_graph(type_only=True)[PACKAGE]
    # aiohttp's importers: ``import aiohttp``, ``from aiohttp_socks import`` in a function, not our transports.aiohttp.
    aiohttp_importers = importers_of(AIOHTTP)
    assert {f"{PACKAGE}.transports.aiohttp", f"{PACKAGE}.gateway.app"} <= aiohttp_importers
    assert f"{PACKAGE}.transports" not in aiohttp_importers


def test_the_cycle_finder_finds_a_circle_and_only_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_module_of_the_package_is_in_an_import_circle() -> None:
    assert find_cycle(import_graph()) == []


def test_no_circle_even_through_type_only_imports() -> None:
    # An ``if TYPE_CHECKING:`` import never runs, so it cannot break an import; it is still a dependency:
    # two modules that name each other's types are one unit, and a type checker must read both together.
    assert find_cycle(import_graph(type_only=True)) == []


def test_the_emulators_web_side_does_not_know_the_client() -> None:
    # Issue #28: the emulator serves the record on its own; what both sides name lives in web_evidence.
    graph = import_graph(type_only=True)
    client = sorted(
        target for target in graph[f"{PACKAGE}.emulator.web"] if target.startswith(f"{PACKAGE}.web")
    )
    assert client == [f"{PACKAGE}.web_evidence"]


def test_the_emulators_web_side_does_not_know_the_server() -> None:
    # The server builds the web endpoint; the endpoint needs only what ``WebHost`` names.
    graph = import_graph(type_only=True)
    assert f"{PACKAGE}.emulator.web" in graph[f"{PACKAGE}.emulator.server"]
    assert f"{PACKAGE}.emulator.server" not in graph[f"{PACKAGE}.emulator.web"]


def test_only_the_command_line_imports_the_command_line() -> None:
    # The CLI sits on top: a lower layer importing it, even for a type, is an upward arrow.
    upward = {
        module: sorted(target for target in targets if target == CLI or target.startswith(f"{CLI}."))
        for module, targets in import_graph(type_only=True).items()
        if not (module == CLI or module.startswith(f"{CLI}."))
    }
    assert {module: targets for module, targets in upward.items() if targets} == {}


def test_few_modules_outside_the_servers_and_the_cli_import_aiohttp() -> None:
    # Everything else reaches the network through the seam (transports/) or the Labs wing (labs/).
    outside = sorted(
        module
        for module in importers_of(AIOHTTP)
        if not any(
            module == f"{PACKAGE}.{server}" or module.startswith(f"{PACKAGE}.{server}.") for server in SERVERS
        )
    )
    assert len(outside) <= AIOHTTP_IMPORTERS_OUTSIDE_SERVERS, outside


# The layers, lowest first: a module may import its own layer and those below, never one above.
# A module's layer is that of the longest prefix listed here that names it (``web`` covers ``web.codec``).
LAYERS: dict[str, int] = {
    # 0: what every layer uses: errors, the answer's events, small pure helpers
    "errors": 0,
    "events": 0,
    "_json": 0,
    "_lazy": 0,
    "_sync": 0,
    "_teardown": 0,
    "_tracing": 0,
    "_content_blocks": 0,
    "_text_chunks": 0,
    "_first_call": 0,
    "_waiting": 0,
    "_version": 0,
    "_plural": 0,
    # 1: the protocol as data, settings, what LangChain messages become
    "protocol": 1,
    "web_evidence": 1,
    "settings": 1,
    "refusals": 1,
    "cookies": 1,
    "session_file": 1,
    "_profiles": 1,
    "messages": 1,
    "attachments": 1,
    "tools": 1,
    "structured": 1,
    # 2: sans-IO codecs: bytes and messages <-> events
    "web.codec": 2,
    "web.sse": 2,
    "labs.packets": 2,
    "labs.frames": 2,
    "labs.wire": 2,
    # 3: the HTTP transport seam and its implementations
    "transports": 3,
    # 4: a session on one service (the Labs wing, the web app)
    "labs": 4,
    "web": 4,
    "web.models": 4,
    # 5: sessions pooled, one question = one stream of events with retries
    "pool": 5,
    "client": 5,
    # 6: the LangChain layer
    "_answer": 6,
    "_chunks": 6,
    "_stop": 6,
    "_reporting": 6,
    "_fields": 6,
    "chat_models": 6,
    # 7: clients of the layers above (never copies of them)
    "doctor": 7,
    "recording": 7,
    "emulator": 7,
    "gateway": 7,
    "gateway.mcp": 7,  # the MCP server: the mcp SDK, over the chat model
    "pytest_plugin": 7,
    "_cliargs": 7,
    "cli": 8,
}


def layer_of(module: str) -> int:
    name = module.removeprefix(f"{PACKAGE}.")
    if module == PACKAGE:
        return 8  # the package's face: its lazy names reach every layer
    prefixes = [prefix for prefix in LAYERS if name == prefix or name.startswith(prefix + ".")]
    assert prefixes, f"{module} has no layer: add it to LAYERS"
    return LAYERS[max(prefixes, key=len)]


def test_every_module_has_a_layer_and_the_layer_reader_reads_prefixes() -> None:
    assert layer_of(f"{PACKAGE}.web.codec") == 2
    assert layer_of(f"{PACKAGE}.web.session") == 4
    assert layer_of(f"{PACKAGE}.labs.connection") == 4
    for module in MODULES:
        layer_of(module)


def test_no_upward_arrow() -> None:
    # Type-only imports count: a lower layer naming a higher one's types depends on it all the same.
    upward = sorted(
        f"{module} ({layer_of(module)}) -> {target} ({layer_of(target)})"
        for module, targets in import_graph(type_only=True).items()
        for target in targets
        if layer_of(target) > layer_of(module)
    )
    assert upward == []


def test_the_two_services_do_not_know_each_other() -> None:
    # Labs is its own wing and the web app its own: what they share lives below both.
    graph = import_graph(type_only=True)
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        for mine, theirs in (("web", "labs"), ("labs", "web"))
        if module.startswith(f"{PACKAGE}.{mine}") and target.startswith(f"{PACKAGE}.{theirs}")
    )
    assert crossing == []
