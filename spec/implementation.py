"""The implementation under test: `mc`, a stand-in for the module named by MEGACONTEXT_IMPL.

Every spec imports `mc` from here and uses only the public API of contract §4, as the Array API
conformance suite does with its `xp`. Environment (contract §2):

  MEGACONTEXT_IMPL       module path of the implementation (default: `megacontext`, the
                         reference)
  MEGACONTEXT_IMPL_PATH  optional directory put first on sys.path before that import, for a
                         port that is not installed (a relative path counts from the current
                         directory)

`mc.X` looks X up on that module at each access. A name the port declared unimplemented
(`declare_unimplemented`) raises pytest's skip exception instead, so the test, fixture or whole
spec module (when the access happens at import time) is reported as skipped "not implemented",
never as a collection error. A name the port lacks without declaring it raises AttributeError
naming the implementation and the name.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

DEFAULT_IMPL = "megacontext"
IMPL_NAME = os.environ.get("MEGACONTEXT_IMPL") or DEFAULT_IMPL
IMPL_PATH: str | None = os.environ.get("MEGACONTEXT_IMPL_PATH") or None


class ImplementationImportError(Exception):
    """The implementation under test cannot be imported; the message is one line."""


_module: ModuleType | None = None
_unimplemented: dict[str, str] = {}  # public name -> skip reason


def load() -> ModuleType:
    """Import the implementation under test once (prepending MEGACONTEXT_IMPL_PATH to sys.path)
    and return it. Raises ImplementationImportError with a one-line message when the path is not
    a directory, the module is not found, or importing it raises."""
    global _module
    if _module is not None:
        return _module
    where = ""
    if IMPL_PATH is not None:
        path = Path(IMPL_PATH).expanduser().resolve()
        if not path.is_dir():
            raise ImplementationImportError(
                f"MEGACONTEXT_IMPL_PATH={IMPL_PATH}: not a directory"
            )
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
        where = f" in MEGACONTEXT_IMPL_PATH={IMPL_PATH} or"
    try:
        _module = importlib.import_module(IMPL_NAME)
    except ModuleNotFoundError as err:
        if err.name is not None and (IMPL_NAME == err.name or IMPL_NAME.startswith(err.name + ".")):
            raise ImplementationImportError(
                f"MEGACONTEXT_IMPL={IMPL_NAME}: no module named {err.name!r}{where} on sys.path"
                + ("" if where else " (set MEGACONTEXT_IMPL_PATH to the directory that holds "
                   "it, or install it)")
            ) from None
        raise ImplementationImportError(
            f"MEGACONTEXT_IMPL={IMPL_NAME}: importing it raised ModuleNotFoundError: {err} "
            f"(python -c 'import {IMPL_NAME}' shows the traceback)"
        ) from None
    except Exception as err:
        first = (str(err).splitlines() or [""])[0]
        raise ImplementationImportError(
            f"MEGACONTEXT_IMPL={IMPL_NAME}: importing it raised {type(err).__name__}: {first} "
            f"(python -c 'import {IMPL_NAME}' shows the traceback)"
        ) from None
    return _module


def origin() -> str:
    """Where the implementation was imported from (its file), for report headers."""
    module = load()
    return str(getattr(module, "__file__", None) or module.__spec__.origin)


def declare_unimplemented(names: dict[str, str]) -> None:
    """Make `mc.<name>` skip with the given reason for every name (public name -> reason)."""
    _unimplemented.clear()
    _unimplemented.update(names)


def is_unimplemented(name: str) -> bool:
    return name in _unimplemented


class _Implementation:
    """`mc`: attribute access forwarded to the implementation under test."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        reason = _unimplemented.get(name)
        if reason is not None:
            raise pytest.skip.Exception(reason, allow_module_level=True)
        module = load()
        try:
            return getattr(module, name)
        except AttributeError:
            raise AttributeError(
                f"the implementation under test (MEGACONTEXT_IMPL={IMPL_NAME}) has no public "
                f"name {name!r} (contract §4); implement it, or declare it in the xfails file "
                f"with a line `unimplemented: {name}` (or its topic)"
            ) from None

    def __dir__(self):
        return dir(load())

    def __repr__(self) -> str:
        return f"<implementation under test: {IMPL_NAME}>"


mc = _Implementation()
