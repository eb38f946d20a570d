"""Import every family file so that its @register calls fill the registry.

Every module of this package is a family file, except the infrastructure named here.
"""
import importlib
import pkgutil
from pathlib import Path

_PACKAGE = __name__.rsplit(".", 1)[0]
_INFRASTRUCTURE = {"base", "registry"}

for _info in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if not _info.name.startswith("_") and _info.name not in _INFRASTRUCTURE:
        importlib.import_module(f"{_PACKAGE}.{_info.name}")
