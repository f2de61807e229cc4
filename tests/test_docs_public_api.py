"""Every public name is listed in its module's ``__all__`` and documented."""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import sys
from types import ModuleType
from typing import Any

import pytest

PUBLIC_MODULES = [
    "langchain_pplx_labs",
    "langchain_pplx_labs.errors",
    "langchain_pplx_labs.emulator",
    "langchain_pplx_labs.emulator.rules",
    "langchain_pplx_labs.recording",
    "langchain_pplx_labs.gateway",
]
# Values without a docstring of their own; documented where they are defined.
_UNDOCUMENTED_DUNDERS = {"__version__"}


def attribute_docstrings(module: ModuleType) -> dict[str, str]:
    """``NAME = value`` followed by a string literal: the documentation tools' attribute docstring."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):  # no source: nothing documented there
        return {}
    found: dict[str, str] = {}
    for first, second in itertools.pairwise(tree.body):
        targets = first.targets if isinstance(first, ast.Assign) else []
        if isinstance(first, ast.AnnAssign):
            targets = [first.target]
        if isinstance(second, ast.Expr) and isinstance(second.value, ast.Constant):
            for target in targets:
                if isinstance(target, ast.Name) and isinstance(second.value.value, str):
                    found[target.id] = second.value.value
    return found


def own_docstring(obj: Any, name: str, module: ModuleType) -> str:
    """The docstring written for ``obj`` itself (not one inherited from its type or a base class)."""
    if inspect.isclass(obj):
        return str(obj.__dict__.get("__doc__") or "")
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return obj.__doc__ or ""
    # A value (tuple, type alias ...): documented by a string right after its assignment,
    # in the module listing it or in the module it comes from.
    for candidate in {module, *_defining_modules(name)}:
        text = attribute_docstrings(candidate).get(name)
        if text:
            return text
    return ""


def _defining_modules(name: str) -> list[ModuleType]:
    return [
        mod
        for key, mod in list(sys.modules.items())
        if key.startswith("langchain_pplx_labs") and name in vars(mod) and not key.endswith("__main__")
    ]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_name_in_all_exists_and_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no module docstring"
    names = list(getattr(module, "__all__", []))
    assert names, f"{module_name} has no __all__"
    assert len(names) == len(set(names)), f"{module_name}.__all__ lists a name twice"
    missing = []
    for name in names:
        obj = getattr(module, name)  # also resolves lazy (PEP 562) attributes
        if name in _UNDOCUMENTED_DUNDERS:
            continue
        if not own_docstring(obj, name, module).strip():
            missing.append(name)
    assert missing == [], f"{module_name}: no docstring for {missing}"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES[1:])
def test_every_public_definition_is_in_all(module_name: str) -> None:
    """What a module defines without a leading underscore is public: it must be listed."""
    module = importlib.import_module(module_name)
    defined = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module_name
    }
    assert defined <= set(module.__all__), f"{module_name} defines {sorted(defined - set(module.__all__))}"


def test_the_errors_are_exported_from_the_package() -> None:
    import langchain_pplx_labs
    from langchain_pplx_labs import errors

    error_classes = {
        name for name, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, Exception)
    }
    assert error_classes == {
        "PerplexityLabsError",
        "PerplexityLabsInputError",
        "PerplexityLabsModelAccessError",
        "PerplexityLabsConnectionError",
        "PerplexityLabsBlockedError",
        "PerplexityLabsDisconnectedError",
        "PerplexityLabsServerError",
        "PerplexityLabsProtocolError",
        "PerplexityLabsNotFoundError",
        "PerplexityLabsTimeoutError",
        "PerplexityLabsRetiredError",
        "PerplexityLabsRateLimitError",
        "PerplexityLabsSilentError",
        "PerplexityLabsAttachmentError",
        "PerplexityLabsAttachmentsNotSupportedError",
        "PerplexityLabsCookieError",
        "PerplexityLabsSessionExpiredError",
        "PerplexityLabsSignInError",
    }
    assert error_classes <= set(langchain_pplx_labs.__all__)


def test_the_checker_finds_a_missing_docstring() -> None:
    module = ModuleType("sample")

    class Documented:
        """Has one."""

    class Bare(Documented):
        pass

    assert own_docstring(Documented, "Documented", module) == "Has one."
    assert own_docstring(Bare, "Bare", module) == ""  # the base class's docstring does not count
    assert own_docstring((1, 2), "NOT_DEFINED_ANYWHERE", module) == ""


def undocumented_members(cls: type) -> list[str]:
    """Public methods and properties ``cls`` defines without a docstring (an overridden one may inherit it)."""
    missing = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            doc = member.__doc__
        elif callable(getattr(member, "__func__", member)):
            doc = inspect.getdoc(getattr(cls, name))
        else:
            continue
        if not (doc or "").strip():
            missing.append(name)
    return missing


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_methods_of_exported_classes_have_docstrings(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = {
        name: undocumented_members(obj)
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name)) and undocumented_members(obj)
    }
    assert missing == {}


def test_undocumented_members_sees_methods_and_properties() -> None:
    class Sample:
        def documented(self) -> None:
            """Yes."""

        def bare(self) -> None:
            pass

        @property
        def bare_property(self) -> int:
            return 1

    assert undocumented_members(Sample) == ["bare", "bare_property"]
