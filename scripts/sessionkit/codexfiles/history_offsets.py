"""Byte offsets into rollouts kept by `thread_history_1.sqlite`; shifted when line 1 grows."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import List, Set, Tuple

from sessionkit.codexfiles.versions import HISTORY_DB_NAME as HISTORY_DB

TurnOffsets = List[Tuple[str, int, int]]  # (turn_id, rollout_byte_offset, rollout_end_byte_offset)


def history_db_path(state_db: Path) -> Path:
    return state_db.parent / HISTORY_DB


def read_offsets(conn: sqlite3.Connection, thread_id: str) -> Tuple[TurnOffsets, int]:
    """(turn offsets, projection next offset or -1) for one thread."""
    turns = [(str(t), o if o is not None else -1, e if e is not None else -1) for t, o, e in conn.execute(
        "SELECT turn_id, rollout_byte_offset, rollout_end_byte_offset FROM thread_turns "
        "WHERE thread_id=? ORDER BY rollout_ordinal", (thread_id,))]
    row = conn.execute("SELECT next_rollout_byte_offset FROM thread_history_projection_state "
                       "WHERE thread_id=?", (thread_id,)).fetchone()
    return turns, (row[0] if row else -1)


def threads_with_offsets(conn: sqlite3.Connection) -> Set[str]:
    """Threads whose history keeps byte offsets into their rollout."""
    rows = conn.execute("SELECT thread_id FROM thread_turns UNION SELECT thread_id FROM thread_history_projection_state")
    return {str(tid) for (tid,) in rows}


def shifted(value: int, boundary: int, delta: int) -> int:
    """An offset at or past `boundary` (the start of line 2) moves by `delta`."""
    return value + delta if value >= boundary else value


def set_offsets(conn: sqlite3.Connection, thread_id: str, turns: TurnOffsets, projection: int) -> None:
    for turn_id, off, end in turns:
        conn.execute("UPDATE thread_turns SET rollout_byte_offset=?, rollout_end_byte_offset=? "
                     "WHERE thread_id=? AND turn_id=?",
                     (None if off < 0 else off, None if end < 0 else end, thread_id, turn_id))
    if projection >= 0:
        conn.execute("UPDATE thread_history_projection_state SET next_rollout_byte_offset=? "
                     "WHERE thread_id=?", (projection, thread_id))
