"""Projects (Codex 0.171: the desktop app's sidebar groups) in state_5: `projects` and their
`project_roots` (absolute folders). Codex never fixes a root after the folder moved; the audit
reports roots that are gone and `--remap-prefix` moves them (one journaled RowUpdate per root)."""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.statedb import open_readonly

PROJECT_ROOTS = "project_roots"


@dataclass
class Project:
    id: str
    name: str
    roots: List[Tuple[int, str]] = field(default_factory=list)  # (position, path) in order


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


def _gone(path: str) -> bool:
    return not (path and "\x00" not in path and os.path.isabs(path) and os.path.isdir(path))


def missing_roots(projects: List[Project], gone: Callable[[str], bool] = _gone) -> List[Dict[str, Any]]:
    """Projects with at least one root folder that does not exist, and those roots."""
    out = []
    for p in projects:
        lost = [path for _pos, path in p.roots if gone(path)]
        if lost:
            out.append({"project_id": p.id, "name": safe_str(p.name), "missing_roots": [safe_str(x) for x in lost],
                        "roots": len(p.roots)})
    return out


def audit_section(db: Path, max_samples: int) -> Dict[str, Any]:
    """The audit's integrity counts for projects (read-only)."""
    projects = load_projects(db)
    lost = missing_roots(projects)
    return {"projects_total": len(projects), "projects_missing_roots_count": len(lost),
            "projects_missing_roots_sample": lost[:max_samples]}


def remap_ops(db: Path, remap: Callable[[str], str]) -> List[Any]:
    """One RowUpdate per root whose folder the remap moves (undone exactly by the rollback)."""
    from sessionkit.runlog.ops import RowUpdate
    ops = []
    for p in load_projects(db):
        for pos, path in p.roots:
            new = remap(path)
            if new != path:
                ops.append(RowUpdate(str(db), PROJECT_ROOTS, {"project_id": p.id, "position": pos},
                                     {"path": path}, {"path": new}))
    return ops


def remap_plan(db: Path, remap: Callable[[str], str], max_samples: int) -> Dict[str, Any]:
    """What the repair's dry-run says about projects: roots it would move, and those still gone after."""
    moves = []
    still_gone = []
    for p in load_projects(db):
        for _pos, path in p.roots:
            new = remap(path)
            if new != path:
                moves.append({"project_id": p.id, "name": safe_str(p.name), "from": safe_str(path),
                              "to": safe_str(new)})
            elif _gone(path):
                still_gone.append({"project_id": p.id, "name": safe_str(p.name), "root": safe_str(path)})
    return {"project_roots_to_remap": len(moves), "project_roots_sample": moves[:max_samples],
            "project_roots_still_missing": len(still_gone), "project_roots_missing_sample": still_gone[:max_samples]}


def remap_plan_ops(home: Any, remaps: List[Tuple[str, str]], other_dbs: List[Path],
                   max_samples: int = 10) -> Tuple[List[Any], Dict[str, Any]]:
    """The repair's project part for --remap-prefix: the RowUpdates of every state DB of the home
    (the used one and the desktop app's), and the used DB's summary for the report."""
    from sessionkit.codexfiles.rollout_edit import remap as remap_one
    pairs = [(a, b) for a, b in remaps]

    def remap(value: str) -> str:
        return remap_one(value, pairs)
    ops: List[Any] = []
    for db in [home.state_db.path, *other_dbs]:
        ops += remap_ops(Path(db), remap)
    return ops, remap_plan(home.state_db.path, remap, max_samples)
