"""PEP 562 lazy public names for a package ``__init__``: each loads from its module on first use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_names(
    namespace: dict[str, Any], lazy: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the module whose ``globals()`` is ``namespace``.

    ``lazy`` maps each public name to the module defining it; a loaded name is kept in
    ``namespace``, so it costs one import, once.
    """
    module_name = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        """Load a public name from its module on first access and keep it (PEP 562)."""
        module = lazy.get(name)
        if module is None:
            # AttributeError (not ImportError) lets ``from package import submodule`` import the submodule.
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        """The module's own names plus the lazy public ones, for ``dir()`` and completion."""
        return sorted({*namespace, *namespace.get("__all__", ())})

    return __getattr__, __dir__
