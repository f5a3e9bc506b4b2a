"""Where a run may write: the Codex home, the folder of the state DB it uses, and this home's
databases. The executor checks every planned op against it; rollback and restore check a
(possibly hostile) journal's ops the same way."""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Callable, List, Optional, Sequence, Set, Tuple

from sessionkit.codexfiles.history_offsets import history_db_path
from sessionkit.codexfiles.home import CodexHome
from sessionkit.codexfiles.paths import inside_test, safe_str
from sessionkit.runlog.ops import Op


def allowed_roots(home: CodexHome) -> List[str]:
    """Where a run may write: the Codex home and the folder of the state DB it uses (resolved)."""
    roots = [os.path.realpath(str(home.root)), os.path.realpath(str(home.state_db.path.parent))]
    return sorted(set(roots))


@lru_cache(maxsize=4096)
def _real_dir(folder: str) -> str:
    return os.path.realpath(folder)


@lru_cache(maxsize=64)
def _real_path(db: str) -> str:
    return os.path.realpath(db)  # a journal names a handful of DBs, each on thousands of ops


def forget_resolved() -> None:
    """Folders may have changed since an earlier run in this process: resolve them again."""
    _real_dir.cache_clear()
    _real_path.cache_clear()
    _folder_inside.cache_clear()


def path_allowed(path: str, roots: Sequence[str]) -> bool:
    """Inside a root after resolving every symlink on the way to its folder (the last part is not
    followed: a symlink we repoint or a file we rename is judged by where it sits)."""
    if not path or "\x00" in path:
        return False
    key = roots if type(roots) is tuple else tuple(roots)
    folder, sep, name = path.rpartition("/")  # thousands of paths a run: the plain POSIX case first
    if _PLAIN and sep and folder and not folder.endswith("/") and name not in ("", ".", "..") and \
            path.startswith("/") and _folder_inside(folder, key):
        return True
    if not os.path.isabs(path):
        return False
    folder, name = os.path.split(path)
    if name in ("", ".", ".."):
        return False
    if _folder_inside(folder, key):  # a name in a folder inside (or at) a root lies inside it
        return True
    real = os.path.join(_real_dir(folder), name)
    return any(test(real) for test in _inside_tests(key))


_PLAIN = os.sep == "/" and not os.altsep  # POSIX: "/" alone separates, a path is absolute when it starts so


@lru_cache(maxsize=4096)
def _folder_inside(folder: str, roots: Tuple[str, ...]) -> bool:
    real = _real_dir(folder)
    return any(test(real) or real == root for test, root in zip(_inside_tests(roots), roots))


@lru_cache(maxsize=16)
def _inside_tests(roots: Tuple[str, ...]) -> List[Callable[[str], bool]]:
    return [inside_test(r) for r in roots]  # a journal's thousands of paths, under the same two roots


def op_problem(op: Op, roots: Sequence[str], dbs: Set[str]) -> Optional[str]:
    """Why this op may not run here: a path outside the roots or a DB that is not this home's."""
    roots = roots if type(roots) is tuple else tuple(roots)
    for p in op.paths():
        if not path_allowed(p, roots):
            return f"{safe_str(p)} is outside the Codex home and its state-DB folder"
    db = op.db()
    if db is not None and (_real_path(db) not in dbs or not path_allowed(db, roots)):
        return f"{safe_str(db)} is not a database of this home"
    return None


def home_dbs(home: CodexHome) -> Set[str]:
    out = set()
    for d in [home.state_db, *home.other_dbs]:
        out.add(os.path.realpath(str(d.path)))
        out.add(os.path.realpath(str(history_db_path(d.path))))
        for name in ("goals_1.sqlite", "queue_1.sqlite"):  # 0.171's per-thread DBs beside the state DB
            out.add(os.path.realpath(str(d.path.parent / name)))
    return out
