"""Where Codex keeps a thread's name: `threads.name` in the state DB, and the latest
`thread/name/set` record in session_index.jsonl (the only place a legacy thread's name lives)."""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from stat import S_ISREG
from typing import Any, Dict, Optional

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.statedb import open_readonly

SESSION_INDEX = "session_index.jsonl"


def names_from_session_index(home: Any) -> Dict[str, str]:
    """The latest name `thread/name/set` recorded per thread id (lower case) in session_index.jsonl;
    a thread whose latest entry is empty has no name. Unreadable lines are skipped."""
    root = Path(home) if isinstance(home, (str, os.PathLike)) else home.root
    out: Dict[str, str] = {}
    path = root / SESSION_INDEX
    try:
        if not S_ISREG(os.lstat(str(path)).st_mode):
            return out  # a symlink, FIFO or folder: never followed or read
        fh = open(path, "rb")
    except OSError:
        return out
    with fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                continue
            name = rec.get("thread_name")
            out[norm_id(rec["id"])] = name if isinstance(name, str) else ""
    return {k: v for k, v in out.items() if v.strip()}


def named_threads(state_db: Path) -> Optional[Dict[str, str]]:
    """thread id (lower case) -> its `threads.name` where not NULL (what a re-created row has); None
    when the schema has no name column."""
    conn = open_readonly(state_db)
    try:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(threads)")}
        if "name" not in cols:
            return None
        return {norm_id(str(t)): str(n) for t, n in conn.execute(
            "SELECT id, name FROM threads WHERE name IS NOT NULL")}
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
