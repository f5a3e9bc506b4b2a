"""Fault-injection points for tests. They do nothing unless a test installs a hook in-process
(tests/faultrun.py does, before it runs a script): no environment variable turns them on."""
from __future__ import annotations

from typing import Callable, Optional

_HOOK: Optional[Callable[[str], None]] = None


def install(hook: Optional[Callable[[str], None]]) -> None:
    """Tests only: call `hook(label)` at every fault point from now on (None removes it)."""
    global _HOOK
    _HOOK = hook


def point(label: str) -> None:
    """A place where a kill, an interrupt or an I/O error must leave an undoable run."""
    if _HOOK is not None:
        _HOOK(label)
