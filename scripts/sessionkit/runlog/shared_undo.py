"""What a rollback leaves of changes several threads share (an imported project with its folders
and key, a section, the names appended to session_index.jsonl): undone only when every thread of
the run it serves is undone and no row outside the run points at it; the rows of one unit (a
project, its folders, its key) stand or fall together. A thread's own row that rows outside the run
now point at (queued input, an attachment added in DEST) tells that Codex acted on the thread."""
from __future__ import annotations

import os
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from sessionkit import UserError
from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.statedb import open_readonly
from sessionkit.runlog.ops import NEW, OLD, TORN, Op, table_columns

Extra = Dict[int, List[Tuple[str, int]]]  # id(op) -> [(table, rows outside the run pointing at it)]
UNREADABLE = -1  # the referencing table could not be read: counted as pointing (left alone)
ACTED = "Codex added {what} for it since the run (it was used in DEST)"
SERVES = "it also serves thread {tid}, which is left alone"
POINTED = "{what} outside this run point at it"
UNIT = "it goes with {what}, which is left alone"


@lru_cache(maxsize=64)
def _real(path: str) -> str:
    return os.path.realpath(path)


def _grouped(db: str, table: str, column: str) -> Optional[Dict[Any, int]]:
    """How many rows of `table` hold each value of `column` (a missing DB or table: none); None
    when it cannot be read."""
    if not os.path.isfile(db):
        return {}
    try:
        conn = open_readonly(Path(db))
    except (sqlite3.DatabaseError, UserError, OSError):
        return None
    try:
        if column not in table_columns(conn, table):
            return {}
        return dict(conn.execute(f'SELECT "{column}", count(*) FROM "{table}" GROUP BY "{column}"').fetchall())
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()


def outside_refs(ops: Sequence[Op], states: Sequence[str]) -> Extra:
    """For each op still as the run left it that names referencing rows (Op.referenced_by): the
    rows there now that the run did not insert (one GROUP BY per referencing table, not per op)."""
    live = [(op, st) for op, st in zip(ops, states) if st in (NEW, TORN)]
    pointing = [(op, refs) for op, _st in live for refs in [op.referenced_by()] if refs]
    wanted: Dict[Tuple[str, str], Set[str]] = {}  # (db, table) -> columns
    for _op, refs in pointing:
        for db, table, column, _v in refs:
            wanted.setdefault((_real(db), table), set()).add(column)
    if not wanted:
        return {}
    counts = {(db, t, c): _grouped(db, t, c) for (db, t), cols in wanted.items() for c in cols}
    mine: Dict[Tuple[str, str, str, Any], int] = {}  # rows the run inserted that still hold its values
    for op, st in live:
        if st != NEW or not op.DB_OP:
            continue
        db = _real(str(op.db()))
        for ref in op.rows():  # only the tables something points from (not every history row's)
            for c in wanted.get((db, ref.table), ()):
                ok, v = op.inserted_value(ref.table, c)
                if ok:
                    mine[(db, ref.table, c, v)] = mine.get((db, ref.table, c, v), 0) + 1
    out: Extra = {}
    for op, refs in pointing:
        for db, table, column, value in refs:
            got = counts[(_real(db), table, column)]
            n = UNREADABLE if got is None else got.get(value, 0) - mine.get((_real(db), table, column, value), 0)
            if n:
                out.setdefault(id(op), []).append((table, n))
    return out


def _rows_text(found: List[Tuple[str, int]]) -> str:
    return ", ".join(f"{table} (unreadable)" if n == UNREADABLE else f"{n} row(s) of {table}" for table, n in found)


def thread_holds(ops: Sequence[Op], extra: Extra) -> Dict[str, str]:
    """Threads whose own rows rows outside the run now point at, each with why it is left alone."""
    out: Dict[str, str] = {}
    for op in ops:
        if op.thread_id and id(op) in extra and op.thread_id not in out:
            out[op.thread_id] = ACTED.format(what=_rows_text(extra[id(op)]))
    return out


def what(op: Op) -> str:
    """`projects ['p1']`: the row a shared op made, else its subject (the index file)."""
    rows = op.rows()
    if rows:
        return f"{rows[0].table} {[safe_str(v) if isinstance(v, str) else v for v in rows[0].key.values()]}"
    return safe_str(op.subject())


def shared_holds(ops: Sequence[Op], states: Sequence[str], left: Set[str], extra: Extra) -> Dict[int, str]:
    """id(op) -> why a change of no thread stays: a thread it serves is left alone (`left`), rows
    outside the run point at it, or a row of its unit stays (changed since, or held itself)."""
    held: Dict[int, str] = {}
    shared = [(op, st) for op, st in zip(ops, states) if not op.thread_id]
    for op, st in shared:
        if st not in (NEW, TORN):
            continue
        stays = next((t for t in op.served() if t in left), None)
        if stays is not None:
            held[id(op)] = SERVES.format(tid=safe_str(stays))
        elif id(op) in extra:
            held[id(op)] = POINTED.format(what=_rows_text(extra[id(op)]))
    units: Dict[str, List[Tuple[Op, str]]] = {}
    for op, st in shared:
        if op.unit():
            units.setdefault(str(op.unit()), []).append((op, st))
    for members in units.values():
        cause = next((o for o, st in members if id(o) in held or st not in (NEW, TORN, OLD)), None)
        if cause is None:
            continue
        for o, st in members:
            if st in (NEW, TORN) and id(o) not in held:
                held[id(o)] = UNIT.format(what=what(cause))
    return held


def drop_served(steps: List[Tuple[Op, str]], left: Set[str]) -> Tuple[List[Tuple[Op, str]], List[str]]:
    """At undo time (threads Codex held open are left): the shared steps that serve one of them,
    and their units, are left too; returns the steps kept and what was left, with why."""
    held = shared_holds([o for o, _ in steps], [s for _, s in steps], left, {})
    if not held:
        return steps, []
    return ([(o, s) for o, s in steps if id(o) not in held],
            [f"{what(o)}: {held[id(o)]}; left alone" for o, _ in steps if id(o) in held])


FORKED = "forked in DEST since the run as {fork}, whose history starts in this thread's rollout"


def forks_since(ops: Sequence[Op], states: Sequence[str], since_ns: Optional[int]) -> Dict[str, str]:
    """Threads of the run a thread made since the run was forked from (real 0.171: a fork's line 1
    names its parent, `forked_from_id`, and reads its first turns from the parent's rollout, so a
    fork loses them when the parent's file goes). Only rows created since the run are read."""
    from sessionkit.codexfiles.line1 import read_line1
    from sessionkit.codexfiles.rollout_index import parse_session_meta
    if not since_ns:
        return {}
    mine: Dict[str, Set[str]] = {}  # state DB -> ids of threads rows the run inserted, still there
    for op, st in zip(ops, states):
        if op.thread_id and st in (NEW, TORN) and op.inserted_value("threads", "id")[0]:  # rows it made
            mine.setdefault(str(op.db()), set()).add(norm_id(op.thread_id))
    out: Dict[str, str] = {}
    for db, ids in mine.items():
        try:
            conn = open_readonly(Path(db))
        except (sqlite3.DatabaseError, UserError, OSError):
            continue
        try:
            if "created_at" not in table_columns(conn, "threads"):
                continue
            rows = conn.execute("SELECT id, rollout_path FROM threads WHERE created_at >= ?",
                                (since_ns // 1_000_000_000 - 1,)).fetchall()
        except sqlite3.DatabaseError:
            continue
        finally:
            conn.close()
        for fork, path in rows:
            if not isinstance(fork, str) or norm_id(fork) in ids or not isinstance(path, str):
                continue
            line, _err = read_line1(Path(path))  # decoded whole: forked_from_id may follow the instructions
            parent = (parse_session_meta(line).parent_key or "") if line else ""
            if parent in ids:
                tid = next(t for o in ops for t in [o.thread_id] if t and t.lower() == parent)
                out.setdefault(tid, FORKED.format(fork=safe_str(fork)))
    return out
