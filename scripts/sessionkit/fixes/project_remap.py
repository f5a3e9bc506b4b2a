"""The repair's `--remap-prefix` of project roots (Codex 0.171's `project_roots` in state_5):
one journaled RowUpdate per root the remap moves, in every state DB of the home."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.projects import PROJECT_ROOTS, load_projects, root_gone


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
            elif root_gone(path):
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
