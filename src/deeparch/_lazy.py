"""Names of a package imported on first use (PEP 562 ``__getattr__``), so that importing the
package stays light: ``__getattr__, __dir__ = lazy_exports(__name__, TABLE, globals())``."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, table: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """``table``: public name -> the submodule (relative, ``.x``) that defines it. The value
    is cached in ``namespace`` on first use. No submodule may share a public function's name:
    importing ``package.x`` sets the package's attribute ``x`` to the module."""

    def __getattr__(name: str):
        where = table.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where, package), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
