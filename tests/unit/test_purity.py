"""Pure packages import no asyncio, socket or subprocess (STYLE.md: decide, then do IO).

Imports are read from the source with ``ast`` rather than from ``sys.modules``, so
the test cannot be fooled by what other tests happened to import first, and it
also catches imports inside functions.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

PURE_PACKAGES = ("zeromesh.api", "zeromesh.identity", "zeromesh.hbone", "zeromesh.policy",
                 "zeromesh.routing", "zeromesh.authn", "zeromesh.gateway")
FORBIDDEN = frozenset({"asyncio", "socket", "subprocess"})
# A process entry point that lives beside its package's pure core (the gateway pod's process).
IO_MODULES = frozenset({"zeromesh.gateway.process"})
# Pure modules inside packages that also hold IO (the gateway reuses the waypoint's values).
PURE_MODULES = ("zeromesh.ztunnel.config", "zeromesh.waypoint.config")
ALLOWED_INTERNAL = (*PURE_PACKAGES, *PURE_MODULES, "zeromesh.errors")


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        names.append(info.name)
    return names


def _imports(module: str) -> set[str]:
    mod = importlib.import_module(module)
    assert mod.__file__ is not None
    tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"), filename=mod.__file__)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


MODULES = [*(m for p in PURE_PACKAGES for m in _modules(p) if m not in IO_MODULES), *PURE_MODULES]


def test_every_pure_module_is_found() -> None:
    assert "zeromesh.api" in MODULES and "zeromesh.api.validation" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_no_io_imports(module: str) -> None:
    bad = {name for name in _imports(module) if name.split(".")[0] in FORBIDDEN}
    assert not bad, f"{module} imports {sorted(bad)}; pure packages must not do IO"


@pytest.mark.parametrize("module", MODULES)
def test_only_pure_internal_imports(module: str) -> None:
    internal = {name for name in _imports(module) if name.split(".")[0] == "zeromesh"}
    bad = {name for name in internal if name in IO_MODULES
           or not any(name == a or name.startswith(a + ".") for a in ALLOWED_INTERNAL)}
    assert not bad, f"{module} imports {sorted(bad)}, which may do IO"
