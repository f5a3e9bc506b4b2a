"""Projects (Codex 0.171: the desktop app's sidebar groups) in state_5: `projects` and their
`project_roots` (absolute folders), read as Codex wrote them. Codex never fixes a root after the
folder moved: the audit counts roots that are gone, `--remap-prefix` moves them."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.record import Record
from sessionkit.codexfiles.statedb import open_readonly

PROJECT_ROOTS = "project_roots"


class Project(Record):
    __slots__ = ("id", "name", "roots")
    id: str
    name: str
    roots: List[Tuple[int, str]]  # (position, path) in order

    def __init__(self, id: str, name: str, roots: Optional[List[Tuple[int, str]]] = None) -> None:  # noqa: A002
        self.id, self.name, self.roots = id, name, [] if roots is None else roots


def load_projects(db: Path) -> List[Project]:
    """Every project with its roots; [] for a DB without the tables (before 0.171)."""
    if not db.is_file():
        return []
    conn = open_readonly(db)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"projects", PROJECT_ROOTS} <= names:
            return []
        out = {pid: Project(pid, name) for pid, name in conn.execute("SELECT id, name FROM projects ORDER BY id")}
        for pid, pos, path in conn.execute(f"SELECT project_id, position, path FROM {PROJECT_ROOTS} "
                                           "ORDER BY project_id, position"):
            if pid in out and isinstance(path, str):
                out[pid].roots.append((pos, path))
    except sqlite3.DatabaseError:
        return []
    finally:
        conn.close()
    return list(out.values())


def root_gone(path: str) -> bool:
    return not (path and "\x00" not in path and os.path.isabs(path) and os.path.isdir(path))


def missing_roots(projects: List[Project], gone: Callable[[str], bool] = root_gone) -> List[Dict[str, Any]]:
    """Projects with at least one root folder that does not exist, and those roots."""
    out = []
    for p in projects:
        lost = [path for _pos, path in p.roots if gone(path)]
        if lost:
            out.append({"project_id": p.id, "name": safe_str(p.name), "missing_roots": [safe_str(x) for x in lost],
                        "roots": len(p.roots)})
    return out
