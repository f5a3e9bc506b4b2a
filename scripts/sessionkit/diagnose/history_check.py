"""Is a paginated thread's stored history (`thread_history_1.sqlite`) whole? Codex reads it from
there only and never repairs it on read; checked cheaply from the cursor, the last turn and the file size."""
from __future__ import annotations

import json
import os
import sqlite3
from stat import S_ISREG
from pathlib import Path
from typing import Any, Dict, List, Optional

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.history_offsets import history_db_path
from sessionkit.codexfiles.paths import open_regular, safe_str
from sessionkit.codexfiles.rollout_index import RolloutFile
from sessionkit.codexfiles.thread_files import history_key as key_of, is_segment
from sessionkit.codexfiles.statedb import open_readonly
from sessionkit.codexfiles.record import Record
# re-exported: the names Codex keeps, read where the history check reads them
from sessionkit.codexfiles.thread_names import named_threads, names_from_session_index  # noqa: F401

HISTORY_TABLES = ("thread_turns", "thread_items", "thread_realtime_items", "thread_history_projection_state")
TAIL_LIMIT = 4 * 1024 * 1024  # a gap is scanned only up to its first turn, and never past this much

# kind -> what a user sees (the order is the order of the report)
KINDS = {
    "turns_missing_before_cursor": "shows only its start: turns before the cursor have no rows",
    "rows_missing_cursor_kept": "shows no turns: its rows are gone but the cursor is kept",
    "projection_ahead": "history ahead of a shorter rollout (an older copy restored): ghost turns, new turns never shown",
    "cursor_past_eof": "cursor past the end of the file: lines appended later are dropped",
    "cursor_off_line": "cursor inside a line of a file that changed under it: new turns are misread",
    "cursor_missing": "turn rows without a cursor",
    "not_built": "no history rows yet: reads show 0 turns until the thread is opened once",
    "no_history_db": "no thread_history_1.sqlite in this home yet: reads show 0 turns until the thread is opened once",
}
NO_HISTORY_DB = "no_history_db"  # an import, or an older Codex's exec, left paginated threads in a home without one
RESET_KINDS = tuple(k for k in KINDS if k not in ("not_built", NO_HISTORY_DB))  # what deleting the rows fixes
_TURN_STARTS = (b'"type":"task_started"', b'"type":"turn_started"')


class KeyState:
    """What the history DB holds for one key: its cursor and its last turn. Slotted: one per thread."""

    __slots__ = ("cursor", "last_ordinal", "last_start", "last_end", "last_user", "last_item")

    def __init__(self, cursor: int = -1, last_ordinal: int = -1, last_start: int = -1, last_end: int = -1,
                 last_user: bool = False, last_item: int = -1) -> None:
        self.cursor = cursor  # next_rollout_byte_offset; -1: no cursor row
        self.last_ordinal = last_ordinal  # the last turn's rollout_ordinal; -1: no turn row
        self.last_start = last_start
        self.last_end = last_end  # -1: still open (or never recorded)
        self.last_user = last_user  # the last turn names its first user item
        self.last_item = last_item  # the highest item ordinal; -1: no item row

    @property
    def has_turns(self) -> bool:
        return self.last_ordinal >= 0


def _int(v: object) -> int:
    return int(v) if isinstance(v, int) else -1


# One pass over the cursor table; each thread's last turn and last item found by index seeks
# (idx_thread_turns_page, idx_thread_items_page), so a home's millions of item rows are never scanned.
_CURSORS_SQL = """
SELECT p.thread_id, p.next_rollout_byte_offset, t.rollout_ordinal, t.rollout_byte_offset,
       t.rollout_end_byte_offset, t.first_user_item_id IS NOT NULL,
       (SELECT max(i.rollout_ordinal) FROM thread_items i WHERE i.thread_id = p.thread_id)
FROM thread_history_projection_state p
LEFT JOIN thread_turns t ON t.rowid =
       (SELECT x.rowid FROM thread_turns x WHERE x.thread_id = p.thread_id ORDER BY x.rollout_ordinal DESC LIMIT 1)"""
_KEY_SQL = """
SELECT rollout_ordinal, rollout_byte_offset, rollout_end_byte_offset, first_user_item_id IS NOT NULL,
       (SELECT max(rollout_ordinal) FROM thread_items WHERE thread_id = ?1)
FROM thread_turns WHERE thread_id = ?1 ORDER BY rollout_ordinal DESC LIMIT 1"""


class HistoryRows(Record):
    """The history DB read once: every cursor with its key's last turn, in a dict by key."""
    __slots__ = ("path", "exists", "raw", "conn", "error")
    path: Path
    exists: bool
    raw: Dict[str, tuple]  # key -> (cursor, last ordinal, start, end, user item?, last item)
    conn: Optional[sqlite3.Connection]  # open while checking: keys with no cursor are looked up
    error: Optional[str]

    def __init__(self, path: Path, exists: bool, raw: Optional[Dict[str, tuple]] = None,
                 conn: Optional[sqlite3.Connection] = None, error: Optional[str] = None) -> None:
        self.path, self.exists, self.raw = path, exists, {} if raw is None else raw
        self.conn, self.error = conn, error

    def state(self, key: str) -> KeyState:
        """A key with no cursor row (rare: never built, or damaged) is looked up by itself."""
        st = self.raw.get(key)
        if st is not None:
            return KeyState(*(_int(v) for v in st[:4]), bool(st[4]), _int(st[5]))
        if self.conn is None:
            return KeyState()
        try:
            row = self.conn.execute(_KEY_SQL, (key,)).fetchone()
        except sqlite3.DatabaseError:
            row = None
        if row is None:
            return KeyState()
        return KeyState(-1, _int(row[0]), _int(row[1]), _int(row[2]), bool(row[3]), _int(row[4]))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Finding(Record):
    __slots__ = ("thread_id", "key", "kind", "rollout", "segment", "thread_key")
    thread_id: str
    key: str  # the history key: the thread id, or the `_<rollout-uuid>` of a reverted thread's newer file
    kind: str
    rollout: str
    segment: bool  # an older segment of a reverted thread (not the file the row points at)
    thread_key: str  # the thread's normalised id (ThreadRow.key); thread_id is the row's stored id

    def __init__(self, thread_id: str, key: str, kind: str, rollout: str, segment: bool = False,
                 thread_key: str = "") -> None:
        self.thread_id, self.key, self.kind, self.rollout = thread_id, key, kind, rollout
        self.segment, self.thread_key = segment, thread_key

    def as_dict(self) -> Dict[str, Any]:
        out = {"thread_id": self.thread_id, "kind": self.kind, "key": self.key, "rollout": safe_str(self.rollout)}
        if self.segment:
            out["older_segment"] = True
        return out


class HistoryCheck(Record):
    __slots__ = ("findings", "checked", "skipped_live", "names_lost", "history_db", "history_db_exists", "error")
    findings: List[Finding]
    checked: int
    skipped_live: List[str]
    names_lost: Dict[str, str]  # thread id -> name in session_index.jsonl
    history_db: Optional[str]
    history_db_exists: bool
    error: Optional[str]

    def __init__(self, findings: Optional[List[Finding]] = None, checked: int = 0,
                 skipped_live: Optional[List[str]] = None, names_lost: Optional[Dict[str, str]] = None,
                 history_db: Optional[str] = None, history_db_exists: bool = False,
                 error: Optional[str] = None) -> None:
        self.findings = [] if findings is None else findings
        self.checked = checked
        self.skipped_live = [] if skipped_live is None else skipped_live
        self.names_lost = {} if names_lost is None else names_lost
        self.history_db, self.history_db_exists, self.error = history_db, history_db_exists, error

    def by_kind(self) -> Dict[str, int]:
        out = {k: 0 for k in KINDS}
        for f in self.findings:
            out[f.kind] += 1
        return out


def history_key(rollout_name: str, thread_id: str) -> str:
    """Rows are keyed by thread id, or by the rollout uuid of a reverted thread's newer file."""
    return key_of(rollout_name, thread_id) if is_segment(rollout_name) else thread_id


def read_history_rows(db: Path) -> HistoryRows:
    """One query over the cursors (never a query per healthy thread); the caller closes it."""
    out = HistoryRows(path=db, exists=db.is_file())
    if not out.exists:
        return out
    try:
        out.conn = open_readonly(db)
        out.raw = {norm_id(str(r[0])): r[1:] for r in out.conn.execute(_CURSORS_SQL)}
    except Exception as exc:  # noqa: BLE001 - an unreadable history DB is reported, never the end of the audit
        out.error = str(exc) if str(db) in str(exc) else f"{db}: {exc}"
        out.close()
    return out


def _is_turn_start(line: bytes) -> bool:
    if not any(m in line for m in _TURN_STARTS):
        return False
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    p = obj.get("payload") if isinstance(obj, dict) else None
    return obj.get("type") == "event_msg" and isinstance(p, dict) and p.get("type") in ("task_started", "turn_started")


def turn_between(path: str, start: int, stop: int, skip_first: bool = False) -> bool:
    """Does a turn start in [start, stop)? Reads only up to the first one found."""
    try:
        with open_regular(path) as fh:
            fh.seek(start)
            read = 0
            first = True
            while start + read < stop and read < TAIL_LIMIT:
                line = fh.readline()
                if not line:
                    return False
                at = start + read
                read += len(line)
                if first and skip_first:
                    first = False
                    continue
                first = False
                if at < stop and _is_turn_start(line):
                    return True
    except OSError:
        return False
    return False


def _byte_before(path: str, offset: int) -> Optional[bytes]:
    try:
        with open_regular(path) as fh:
            fh.seek(offset - 1)
            return fh.read(1)
    except (OSError, ValueError):
        return None


def classify(path: str, size: int, st: KeyState) -> Optional[str]:
    """The kind of damage, or None when the rows can stand for the file. Reads at most the gap
    after the last turn up to the next turn start, or one byte before the cursor."""
    if st.has_turns and max(st.last_end, st.last_start) > size:
        return "projection_ahead"
    if st.cursor < 0:
        if st.has_turns:
            return "cursor_missing"
        return "not_built" if turn_between(path, 0, size) else None
    if st.cursor > size:
        return "cursor_past_eof"
    if 0 < st.cursor < size and _byte_before(path, st.cursor) != b"\n":
        return "cursor_off_line"
    if not st.has_turns:
        return "rows_missing_cursor_kept" if st.cursor > 0 and turn_between(path, 0, st.cursor) else None
    if st.last_user and st.last_item < st.last_ordinal:
        return "rows_missing_cursor_kept"  # the last turn's items are gone
    gap = max(st.last_end, st.last_start)
    if gap < st.cursor and turn_between(path, gap, st.cursor, skip_first=st.last_end < st.last_start):
        return "turns_missing_before_cursor"
    return None


def _size(path: str) -> Optional[int]:
    """The size of a regular file; None for anything else (never opened) or when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if S_ISREG(st.st_mode) else None


def check_history(inputs: Any) -> HistoryCheck:
    """Every paginated thread whose row points at an indexed rollout (and every older segment of a
    reverted one), checked against its rows; live threads are left out. `inputs` is the audit's AuditInputs."""
    home = inputs.home
    result = HistoryCheck()
    db = history_db_path(home.state_db.path)
    result.history_db = str(db)
    rows = read_history_rows(db)
    result.error = rows.error
    result.history_db_exists = rows.exists
    if not rows.exists and not rows.error:
        _no_history_db(inputs, result)
    if not rows.exists or rows.error:
        result.names_lost = names_lost(home, inputs.rows)
        return result  # nothing to compare with: Codex has not written paginated history in this home
    try:
        _check_rows(inputs, rows, result)
    finally:
        rows.close()
    result.names_lost = names_lost(home, inputs.rows)
    return result


def _no_history_db(inputs: Any, result: HistoryCheck) -> None:
    """No history DB beside the state DB: each paginated thread with a turn is read with 0 turns
    (real 0.171) until a resume builds its rows from the rollout, which holds every turn. Its file is
    read up to its first turn start (a row's preview is no proof: a row re-created from a file has one)."""
    live = set(inputs.activity.live_threads) | {inputs.activity.agent_thread_id or ""}  # normalised by the lock scan
    for row in inputs.rows:
        rf: Optional[RolloutFile] = inputs.index.by_path.get(row.rollout_path) \
            if row.history_mode == "paginated" else None
        tid = row.key
        if rf is None or rf.is_symlink or rf.thread_id != tid:
            continue
        if tid in live:
            result.skipped_live.append(row.id)
            continue
        result.checked += 1
        size = rf.size if rf.size >= 0 else _size(rf.key)
        if not rf.compressed and size is not None and turn_between(rf.key, 0, size):
            result.findings.append(Finding(row.id, tid, NO_HISTORY_DB, rf.key, thread_key=tid))
    result.findings.sort(key=lambda f: f.thread_id)
    result.skipped_live.sort()


def _check_rows(inputs: Any, rows: HistoryRows, result: HistoryCheck) -> None:
    live = set(inputs.activity.live_threads)
    own = (inputs.activity.agent_thread_id or "")
    by_path, get = inputs.index.by_path, rows.raw.get
    for row in inputs.rows:
        if row.history_mode != "paginated":
            continue
        rf: Optional[RolloutFile] = by_path.get(row.rollout_path)
        tid = row.key
        if rf is None or rf.compressed or rf.is_symlink or rf.thread_id != tid:
            continue  # a stale path, another file, or a symlink (never followed): not compared
        if tid in live or tid == own:
            result.skipped_live.append(row.id)
            continue
        result.checked += 1
        key = rf.key
        reverted = is_segment(rf.name)
        if not reverted:
            size = rf.size if rf.size >= 0 else _size(key)  # the size gather saw: no second stat
            if size is None:
                continue
            rec = get(tid)
            if rec is not None and rec[0] == size == rec[3] and (not rec[4] or (rec[5] is not None and rec[5] >= rec[1])):
                continue  # the common case: cursor, last turn's end and file size agree; its items are there
            kind = classify(key, size, rows.state(tid))
            if kind:
                result.findings.append(Finding(row.id, tid, kind, key, thread_key=tid))
            continue
        files = [rf] + [f for f in inputs.index.by_thread.get(tid, [])
                        if f.key != key and not f.compressed and not f.is_symlink]
        for n, f in enumerate(files):  # a reverted thread: its older files keep their own rows
            size = f.size if f.size >= 0 else _size(f.key)
            if size is None:
                continue
            fkey = history_key(f.name, tid)
            kind = classify(f.key, size, rows.state(fkey))
            if kind:
                result.findings.append(Finding(row.id, fkey, kind, f.key, segment=n > 0, thread_key=tid))
    result.findings.sort(key=lambda f: (f.thread_id, f.segment, f.rollout))
    result.skipped_live.sort()


def names_lost(home: Any, rows: List[Any]) -> Dict[str, str]:
    """Rows with no name whose thread session_index.jsonl names: the name a re-created row lost."""
    recorded = names_from_session_index(home)
    if not recorded:
        return {}
    named = named_threads(home.state_db.path)
    if named is None:
        return {}
    return {r.id: recorded[r.key] for r in sorted(rows, key=lambda r: r.id)
            if r.key in recorded and r.key not in named
            and r.history_mode == "paginated"}  # a legacy thread's name is shown from the index (0.171)


def integrity_report(check: HistoryCheck, max_samples: int) -> Dict[str, Any]:
    """The audit's `integrity` keys for history and names."""
    return {
        "history_incomplete_count": len(check.findings),
        "history_incomplete_by_kind": check.by_kind(),
        "history_incomplete_sample": [f"{f.thread_id} ({f.kind}{', older segment' if f.segment else ''})"
                                      for f in check.findings[:max_samples]],
        "history_incomplete_detail": [f.as_dict() for f in check.findings[:max_samples]],
        "history_checked": check.checked,
        "history_skipped_live": len(check.skipped_live),
        "history_db_exists": check.history_db_exists,
        "history_db_error": check.error,
        "names_lost_count": len(check.names_lost),
        "names_lost_sample": [f"{t}: {safe_str(n)}" for t, n in list(check.names_lost.items())[:max_samples]],
        "names_lost_detail": [{"thread_id": t, "name": safe_str(n)} for t, n in list(check.names_lost.items())[:max_samples]],
    }


def history_findings(integrity: Dict[str, Any]) -> List[str]:
    """Finding lines for the audit, one per kind present."""
    out: List[str] = []
    for kind, n in (integrity.get("history_incomplete_by_kind") or {}).items():
        if n and kind == NO_HISTORY_DB:
            out.append(f"{n} paginated thread(s) have no stored history yet (this home has no thread_history_1.sqlite, "
                       f"e.g. after an import or an older Codex's exec): Codex lists them but shows 0 turns until "
                       f"each is opened once, which builds it from its session file (that file holds every turn); "
                       f"session_repair.py --apply --rebuild-history has Codex do that now")
        elif n:
            out.append(f"{n} paginated thread(s) with incomplete history ({kind}): {KINDS[kind]}; "
                       f"session_repair.py --apply --rebuild-history")
    if integrity.get("history_db_error"):
        out.append(f"the history DB could not be read: {integrity['history_db_error']}")
    if integrity.get("names_lost_count"):
        out.append(f"{integrity['names_lost_count']} thread(s) lost their name (session_index.jsonl has one, "
                   f"the row none): session_repair.py --apply")
    return out
