"""What Codex 0.171 keeps about a thread besides its row and history: its project (and the project's
idempotency keys), section and pin, goal, sub-agent spawn edge, attachments, queued input (and the
queue's change revision), read receipt, dynamic tools and model-facing ids (state_5, goals_1,
queue_1). An import reads them from the source and plans them as RowInserts into DEST (rollback
removes them)."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.record import Record
from sessionkit.codexfiles.statedb import open_readonly

STATE_DB, GOALS_DB, QUEUE_DB = "state_5.sqlite", "goals_1.sqlite", "queue_1.sqlite"
PINNED = "01984de2-8f74-7c91-a3b2-5c5e937cf318"  # the built-in Pinned section: the same id in every home
THREAD_COLUMNS = ("project_id", "thread_section_id", "section_position", "section_entered_at_ms")
# (DB file, table, the column naming the thread, the key columns, what a user calls it)
PER_THREAD: Tuple[Tuple[str, str, str, Tuple[str, ...], str], ...] = (
    (STATE_DB, "thread_spawn_edges", "child_thread_id", ("child_thread_id",), "sub-agent link"),
    (STATE_DB, "thread_attachments", "thread_id", ("id",), "attachment"),
    (STATE_DB, "thread_read_receipts", "thread_id", ("thread_id",), "read state"),
    (GOALS_DB, "thread_goals", "thread_id", ("thread_id",), "goal"),
    (GOALS_DB, "thread_goal_continuation_deferrals", "thread_id", ("thread_id",), "goal deferral"),
    (QUEUE_DB, "queued_items", "thread_id", ("id",), "queued input"),
    # Codex 0.130 reads a thread's dynamic tools here; 0.148-0.171 keep them in line 1 (copied with
    # the rollout) and only delete these rows with the thread
    (STATE_DB, "thread_dynamic_tools", "thread_id", ("thread_id", "position"), "dynamic tool"),
    # the ids the model saw (per session: a generator state at ordinal 0, then external key -> ordinal)
    (STATE_DB, "session_model_ids", "session_id", ("session_id", "kind", "external_key"), "model-facing id"),
)
REVISIONS, SEQUENCE = "queued_thread_revisions", "sqlite_sequence"  # queue_1: a DB-wide change counter
KEYS = "project_idempotency_keys"
EXTRA_TABLES = tuple(t for _d, t, _c, _k, _w in PER_THREAD) + (
    "projects", "project_roots", "thread_sections", KEYS, REVISIONS)
HISTORY_DB = "thread_history_1.sqlite"
HISTORY_TABLES = ("thread_turns", "thread_items", "thread_realtime_items", "thread_history_projection_state")
# Which ids pick a table's rows: the threads', their history keys' (a reverted thread's newer files are
# keyed by their rollout uuid), their projects' or their sections'.
THREADS, HISTORY, PROJECTS, SECTIONS = "threads", "history", "projects", "sections"
# Every table an import carries, as (DB file, table, the column naming its owner, which ids): an
# export copies exactly these rows of the threads it picks (sessionkit/fixes/export.py), so an
# import from an export brings what an import from the home would.
CARRIED: Tuple[Tuple[str, str, str, str], ...] = (
    ((STATE_DB, "threads", "id", THREADS),)
    + tuple((HISTORY_DB, t, "thread_id", HISTORY) for t in HISTORY_TABLES)
    + tuple((d, t, c, THREADS) for d, t, c, _k, _w in PER_THREAD)
    + ((STATE_DB, "projects", "id", PROJECTS), (STATE_DB, "project_roots", "project_id", PROJECTS),
       (STATE_DB, KEYS, "project_id", PROJECTS), (STATE_DB, "thread_sections", "id", SECTIONS),
       (QUEUE_DB, REVISIONS, "thread_id", THREADS)))
NO_DB = "DEST has no {db} (a Codex older than 0.171 keeps no {what}): not brought"
NOT_UTF8 = "{what}: its {column} is not UTF-8 text (a copy would change its type): not brought"
KEY_TAKEN = ("project {name}'s idempotency key {key}: DEST's key names another project (a create with it "
             "there returns that one): not brought")


class HomeTables(Record):
    """One home's extra tables, read once: rows as dicts, by thread where they belong to one."""
    __slots__ = ("dbs", "columns", "thread_cols", "projects", "roots", "sections", "per_thread", "taken", "keys",
                 "key_owner", "revisions", "revision_top", "sequence")
    dbs: Dict[str, Path]  # file name -> path (only those that exist)
    columns: Dict[str, List[str]]  # table -> columns
    thread_cols: Dict[str, Dict[str, Any]]  # thread id -> THREAD_COLUMNS
    projects: Dict[str, Dict[str, Any]]
    roots: Dict[str, List[Dict[str, Any]]]  # project id -> rows by position
    sections: Dict[str, Dict[str, Any]]
    per_thread: Dict[str, Dict[str, List[Dict[str, Any]]]]  # table -> tid -> rows
    taken: Dict[str, set]  # table -> keys present (tuples)
    keys: Dict[str, List[Dict[str, Any]]]  # project id -> idempotency key rows
    key_owner: Dict[str, Any]  # idempotency key -> project id
    revisions: Dict[str, int]  # thread id (lower) -> its queue revision
    revision_top: int  # the highest revision the queue DB has used (its rows and sqlite_sequence)
    sequence: Optional[int]  # sqlite_sequence's seq for queued_thread_revisions (None: no row)

    def __init__(self) -> None:
        self.dbs, self.columns, self.thread_cols, self.projects, self.roots = {}, {}, {}, {}, {}
        self.sections, self.per_thread, self.taken, self.keys, self.key_owner = {}, {}, {}, {}, {}
        self.revisions: Dict[str, int] = {}
        self.revision_top = 0
        self.sequence: Optional[int] = None


class Undecodable(bytes):
    """A TEXT value that is not UTF-8: read, so one bad row costs only itself, never copied (the
    import's source rows too: such a row is rebuilt from its rollout)."""


def decode_text(raw: bytes) -> Any:
    """A sqlite3 text_factory: TEXT as str, or Undecodable when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return Undecodable(raw)


def bad_column(row: Dict[str, Any]) -> Optional[str]:
    """The first column of a row whose TEXT is not UTF-8, or None."""
    return next((k for k, v in row.items() if isinstance(v, Undecodable)), None)


def _tables(conn: sqlite3.Connection) -> List[str]:
    return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]


def _rows(conn: sqlite3.Connection, table: str) -> Tuple[List[str], List[Dict[str, Any]]]:
    cur = conn.execute(f'SELECT * FROM "{table}"')
    cols = [d[0] for d in cur.description]
    return cols, [dict(zip(cols, r)) for r in cur]


def read_home(dbs: Dict[str, Optional[Path]], connect: Callable[[Path], sqlite3.Connection] = open_readonly
              ) -> HomeTables:
    """The extra tables of the DBs given (missing ones and tables are simply absent)."""
    out = HomeTables()
    for name, path in dbs.items():
        if path is None or not path.is_file():
            continue
        out.dbs[name] = path
        try:
            conn = connect(path)
        except sqlite3.DatabaseError:
            continue
        conn.text_factory = decode_text
        try:
            have = set(_tables(conn))
            if name == STATE_DB:
                _read_state(conn, have, out)
            if name == QUEUE_DB and REVISIONS in have:
                _read_revisions(conn, have, out)
            for db, table, tcol, key, _what in PER_THREAD:
                if db != name or table not in have:
                    continue
                cols, rows = _rows(conn, table)
                out.columns[table] = cols
                by: Dict[str, List[Dict[str, Any]]] = {}
                for r in rows:
                    if isinstance(r.get(tcol), str):
                        by.setdefault(norm_id(r[tcol]), []).append(r)
                out.per_thread[table] = by
                out.taken[table] = {tuple(r[k] for k in key) for r in rows}
        except sqlite3.DatabaseError:
            pass
        finally:
            conn.close()
    return out


def _read_state(conn: sqlite3.Connection, have: set, out: HomeTables) -> None:
    tcols = [r[1] for r in conn.execute("PRAGMA table_info(threads)")]
    out.columns["threads"] = tcols
    wanted = [c for c in THREAD_COLUMNS if c in tcols]
    if wanted:
        sel = ", ".join(f'"{c}"' for c in wanted)
        for row in conn.execute(f"SELECT id, {sel} FROM threads"):
            if isinstance(row[0], str):
                out.thread_cols[norm_id(row[0])] = dict(zip(wanted, row[1:]))
    for table in ("projects", "project_roots", "thread_sections"):
        if table not in have:
            continue
        cols, rows = _rows(conn, table)
        out.columns[table] = cols
        if table == "projects":
            out.projects = {r["id"]: r for r in rows}
        elif table == "project_roots":
            for r in sorted(rows, key=lambda r: (str(r["project_id"]), not _number(r["position"]),
                                                 r["position"] if _number(r["position"]) else 0)):
                out.roots.setdefault(r["project_id"], []).append(r)
        else:
            out.sections = {r["id"]: r for r in rows}
    if KEYS in have:
        cols, rows = _rows(conn, KEYS)
        out.columns[KEYS] = cols
        for r in rows:
            out.keys.setdefault(r["project_id"], []).append(r)
            out.key_owner[r["key"]] = r["project_id"]


def _read_revisions(conn: sqlite3.Connection, have: set, out: HomeTables) -> None:
    cols, rows = _rows(conn, REVISIONS)
    out.columns[REVISIONS] = cols
    out.revisions = {norm_id(r["thread_id"]): r["revision"] for r in rows if isinstance(r.get("revision"), int)}
    if SEQUENCE in have:
        got = conn.execute(f"SELECT seq FROM {SEQUENCE} WHERE name=?", (REVISIONS,)).fetchall()
        out.sequence = got[0][0] if len(got) == 1 and isinstance(got[0][0], int) else None
    out.revision_top = max(list(out.revisions.values()) + [out.sequence or 0, 0])


class Insert(Record):
    """One row DEST gets: (DB file name, table, row, key); a shared one (a project, its folders and
    key, a section) also the threads it serves, what points at it, and its unit (runlog/shared_undo.py)."""
    __slots__ = ("db", "table", "row", "key", "serves", "refs", "unit")
    db: str
    table: str
    row: Dict[str, Any]
    key: Dict[str, Any]
    serves: Optional[List[str]]
    refs: Optional[List[List[str]]]
    unit: Optional[str]

    def __init__(self, db: str, table: str, row: Dict[str, Any], key: Dict[str, Any],
                 serves: Optional[List[str]] = None, refs: Optional[List[List[str]]] = None,
                 unit: Optional[str] = None) -> None:
        self.db, self.table, self.row, self.key = db, table, row, key
        self.serves, self.refs, self.unit = serves, refs, unit


# rows that point at a project or section the import made: it stays while any one outside the run does
PROJECT_REFS = [[STATE_DB, "threads", "project_id"], [STATE_DB, "project_roots", "project_id"],
                [STATE_DB, KEYS, "project_id"]]
SECTION_REFS = [[STATE_DB, "threads", "thread_section_id"]]
BAD_ROOT = "its project's folder row {position!r} is not a (whole-number position, text path) pair: not brought"


def thread_refs() -> List[List[str]]:
    """Rows that point at an imported thread: one DEST made since the run (queued input, an
    attachment, a sub-agent it spawned, a fork attached to it) means Codex acted on the thread, which
    the rollback then keeps."""
    return [[db, table, col] for db, table, col, _k, _w in PER_THREAD] + \
        [[STATE_DB, "thread_spawn_edges", "parent_thread_id"], [STATE_DB, "threads", "attached_thread_parent_id"]]


def _number(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Update(Record):
    """One row DEST changes: (DB file name, table, key, old values, new values)."""
    __slots__ = ("db", "table", "key", "old", "new")
    db: str
    table: str
    key: Dict[str, Any]
    old: Dict[str, Any]
    new: Dict[str, Any]

    def __init__(self, db: str, table: str, key: Dict[str, Any], old: Dict[str, Any], new: Dict[str, Any]) -> None:
        self.db, self.table, self.key, self.old, self.new = db, table, key, old, new


class ThreadExtras(Record):
    """What comes with one imported thread, what it cannot bring (and why), its row's columns."""
    __slots__ = ("columns", "inserts", "brings", "cannot")
    columns: Dict[str, Any]
    inserts: List[Any]  # Insert, or an Update (its queue revision DEST kept)
    brings: List[str]
    cannot: List[str]

    def __init__(self, columns: Optional[Dict[str, Any]] = None, inserts: Optional[List[Any]] = None,
                 brings: Optional[List[str]] = None, cannot: Optional[List[str]] = None) -> None:
        self.columns = {} if columns is None else columns
        self.inserts = [] if inserts is None else inserts
        self.brings = [] if brings is None else brings
        self.cannot = [] if cannot is None else cannot


class Planner:
    """Matches the source's projects and sections to DEST's once, for every imported thread."""

    def __init__(self, src: HomeTables, dest: HomeTables, remap: Callable[[str], str]) -> None:
        self.src, self.dest, self.remap = src, dest, remap
        self.project_ids: Dict[str, Optional[str]] = {}  # source project id -> DEST id
        self.section_ids: Dict[str, Optional[str]] = {}
        self.shared: List[Any] = []  # Insert/Update: projects, sections, keys (once, before the threads)
        self.notes: Dict[str, str] = {}
        self.key_notes: Dict[str, List[str]] = {}  # source project id -> its keys not brought, and why
        self._sequence: Optional[Any] = None  # the one Insert/Update of the queue's sqlite_sequence
        self._position = max([p.get("position") for p in dest.projects.values() if _number(p.get("position"))]
                             + [-1]) + 1  # a position of another type ('top') is DEST's own: not counted
        self.users: Dict[str, List[str]] = {}  # unit -> the threads it serves (one list, shared by its Inserts)
        self.root_notes: Dict[str, List[str]] = {}  # source project id -> its folder rows not brought, and why

    def _unit(self, unit: str) -> List[str]:
        return self.users.setdefault(unit, [])

    def _fit(self, table: str, row: Dict[str, Any]) -> Dict[str, Any]:
        """The row with only the columns DEST's table has."""
        cols = self.dest.columns.get(table, [])
        return {k: v for k, v in row.items() if k in cols}

    def project(self, pid: str) -> Tuple[Optional[str], str]:
        if pid in self.project_ids:
            return self.project_ids[pid], self.notes[pid]
        got, note = self._project(pid)
        self.project_ids[pid], self.notes[pid] = got, note
        return got, note

    def _project(self, pid: str) -> Tuple[Optional[str], str]:
        got, note = self._project_row(pid)
        if got is not None:
            self._keys(pid, got)
        return got, note

    def _keys(self, pid: str, got: str) -> None:
        """The project's idempotency keys, pointing at its DEST id: a client's project/create or
        project/import retried with one of them in DEST returns this project instead of a second
        one, as it did in the source. A key DEST already gives another project stays DEST's."""
        if KEYS not in self.dest.columns:
            return
        name = safe_str(str(self.src.projects.get(pid, {}).get("name")))
        for r in self.src.keys.get(pid, []):
            key = r.get("key")
            if bad_column(r):
                self.key_notes.setdefault(pid, []).append(NOT_UTF8.format(
                    what=f"project {name!r}'s idempotency key", column=bad_column(r)))
                continue
            owner = self.dest.key_owner.get(key)
            if owner == got:
                continue
            if owner is not None:
                self.key_notes.setdefault(pid, []).append(KEY_TAKEN.format(name=repr(name), key=repr(safe_str(str(key)))))
                continue
            self.shared.append(Insert(STATE_DB, KEYS, self._fit(KEYS, dict(r, project_id=got)), {"key": key},
                                      self._unit(f"project {got}"), None, f"project {got}"))
            self.dest.key_owner[key] = got

    def _revision(self, key: str, thread_value: Any, items: int) -> Optional[Any]:
        """A thread whose queued input comes along gets a queue revision row of DEST's numbering (the
        source's number means nothing here), inserted before its items: queue_1's triggers upsert
        the row on every insert/update/delete of queued_items (revision = MAX+1), so with the row
        there they only move its number, which the rollback ignores when it deletes the row after
        the items (RowInsert's VOLATILE). A row DEST kept for the thread (a thread deleted there
        keeps its revision row) is renumbered instead and set back by the rollback. sqlite_sequence
        is set once for the import, journaled, to the last number used, and set back likewise."""
        d = self.dest
        if REVISIONS not in d.columns:
            return None
        n = d.revision_top + 1
        d.revision_top = n + items  # each item's insert trigger moves the row to MAX+1
        kept = d.revisions.get(key)
        d.revisions[key] = n
        if self._sequence is None:
            self._sequence = (Insert(QUEUE_DB, SEQUENCE, {"name": REVISIONS, "seq": n}, {"name": REVISIONS})
                              if d.sequence is None else
                              Update(QUEUE_DB, SEQUENCE, {"name": REVISIONS}, {"seq": d.sequence}, {"seq": n}))
            self.shared.append(self._sequence)
        elif isinstance(self._sequence, Insert):
            self._sequence.row["seq"] = n
        else:
            self._sequence.new["seq"] = n
        if kept is not None:
            return Update(QUEUE_DB, REVISIONS, {"thread_id": thread_value}, {"revision": kept}, {"revision": n})
        return Insert(QUEUE_DB, REVISIONS, self._fit(REVISIONS, {"revision": n, "thread_id": thread_value}),
                      {"thread_id": thread_value})

    def _project_row(self, pid: str) -> Tuple[Optional[str], str]:
        src = self.src.projects.get(pid)
        if src is None:
            return None, "its project is not in the source's projects table"
        bad = [c for c in [bad_column(src)] + [bad_column(r) for r in self.src.roots.get(pid, [])] if c]
        if bad:
            return None, NOT_UTF8.format(what="its project", column=bad[0])
        if "projects" not in self.dest.columns or "project_roots" not in self.dest.columns:
            return None, NO_DB.format(db="projects table", what="projects")
        name = src.get("name")
        good = [r for r in self.src.roots.get(pid, []) if _number(r.get("position")) and isinstance(r.get("path"), str)]
        self.root_notes[pid] = [BAD_ROOT.format(position=safe_str(str(r.get("position"))))
                                for r in self.src.roots.get(pid, []) if r not in good]
        roots = [self.remap(r["path"]) for r in good]
        if pid in self.dest.projects:
            return pid, f"project {safe_str(str(name))!r} (already in DEST)"
        for did, d in sorted(self.dest.projects.items()):
            if d.get("name") == name and [r["path"] for r in self.dest.roots.get(did, [])] == roots:
                return did, f"project {safe_str(str(name))!r} (DEST's project of the same name and folders)"
        row = dict(src, position=self._position)
        self._position += 1
        unit, users = f"project {pid}", self._unit(f"project {pid}")
        self.shared.append(Insert(STATE_DB, "projects", self._fit("projects", row), {"id": pid}, users,
                                  PROJECT_REFS, unit))
        for r in good:
            new = dict(r, path=self.remap(r["path"]))
            self.shared.append(Insert(STATE_DB, "project_roots", self._fit("project_roots", new),
                                      {"project_id": pid, "position": r["position"]}, users, None, unit))
        self.dest.projects[pid] = row
        self.dest.roots[pid] = [{"path": p} for p in roots]
        return pid, f"project {safe_str(str(name))!r} (created in DEST)"

    def section(self, sid: str) -> Tuple[Optional[str], str]:
        if sid in self.section_ids:
            return self.section_ids[sid], self.notes[sid]
        got, note = self._section(sid)
        self.section_ids[sid], self.notes[sid] = got, note
        return got, note

    def _section(self, sid: str) -> Tuple[Optional[str], str]:
        if "thread_sections" not in self.dest.columns:
            return None, NO_DB.format(db="thread_sections table", what="sections or pins")
        src = self.src.sections.get(sid)
        if sid == PINNED:
            if PINNED not in self.dest.sections:
                row = src if src and not bad_column(src) else {"id": PINNED, "name": "Pinned"}
                self.shared.append(Insert(STATE_DB, "thread_sections", self._fit("thread_sections", row),
                                          {"id": PINNED}, self._unit(f"section {PINNED}"), SECTION_REFS,
                                          f"section {PINNED}"))
                self.dest.sections[PINNED] = row
            return PINNED, "pinned"
        if src is None:
            return None, "its section is not in the source's thread_sections table"
        if bad_column(src):
            return None, NOT_UTF8.format(what="its section", column=bad_column(src))
        name = src.get("name")
        shown = safe_str(str(name))
        if self.dest.sections.get(sid, {}).get("name") == name:
            return sid, f"section {shown!r} (already in DEST)"
        # Codex 0.171 lets a user name a section "Pinned" and give several sections one name: the
        # built-in Pinned is never matched by name, and of several DEST sections of one name none is
        # guessed (the source's own comes as a new one)
        same = [did for did, d in sorted(self.dest.sections.items()) if did != PINNED and d.get("name") == name]
        if len(same) == 1:
            return same[0], f"section {shown!r} (DEST's section of that name)"
        if sid in self.dest.sections:
            return None, f"DEST has another section with the id of section {shown!r}: not brought"
        self.shared.append(Insert(STATE_DB, "thread_sections", self._fit("thread_sections", src), {"id": sid},
                                  self._unit(f"section {sid}"), SECTION_REFS, f"section {sid}"))
        self.dest.sections[sid] = src
        if same:
            return sid, f"section {shown!r} (created in DEST: DEST has {len(same)} sections of that name)"
        return sid, f"section {shown!r} (created in DEST)"

    def thread(self, tid: str, thread_key: Optional[str] = None) -> ThreadExtras:
        """What comes with thread `tid` (its row's stored id) from the source's tables; `thread_key` is
        its normalised id (codexfiles/ids.py), `tid` itself when not given."""
        tkey = tid if thread_key is None else thread_key
        out = ThreadExtras()
        cols = self.src.thread_cols.get(tkey, {})
        dest_cols = self.dest.columns.get("threads", [])
        pid = cols.get("project_id")
        if isinstance(pid, str) and pid:
            got, note = self.project(pid)
            (out.brings if got else out.cannot).append(note)
            out.cannot.extend(self.key_notes.get(pid, []) + self.root_notes.get(pid, []) if got else [])
            if got and "project_id" in dest_cols:
                out.columns["project_id"] = got
                self.users.get(f"project {got}", []).append(tid)
        sid = cols.get("thread_section_id")
        if isinstance(sid, str) and sid:
            got, note = self.section(sid)
            (out.brings if got else out.cannot).append(note)
            if got and "thread_section_id" in dest_cols:
                out.columns["thread_section_id"] = got
                self.users.get(f"section {got}", []).append(tid)
                for c in ("section_position", "section_entered_at_ms"):
                    if c in dest_cols and c in cols:
                        out.columns[c] = cols[c]
        for db, table, _tcol, key, what in PER_THREAD:
            rows = self.src.per_thread.get(table, {}).get(tkey, [])
            if not rows:
                continue
            if db not in self.dest.dbs or table not in self.dest.columns:
                out.cannot.append(NO_DB.format(db=db if db not in self.dest.dbs else f"{table} table",
                                               what=what + "s"))
                continue
            for r in rows:
                if bad_column(r):
                    out.cannot.append(NOT_UTF8.format(what=what, column=bad_column(r)))
                    continue
                k = tuple(r[c] for c in key)
                if k in self.dest.taken.setdefault(table, set()):
                    out.cannot.append(f"{what}: DEST already has a {table} row {list(k)}")
                    continue
                self.dest.taken[table].add(k)
                out.inserts.append(Insert(db, table, self._fit(table, r), dict(zip(key, k))))
                out.brings.append(what)
        queued = [i for i in out.inserts if i.table == "queued_items"]
        rev = self._revision(tkey, queued[0].row.get("thread_id", tid), len(queued)) if queued else None
        if rev is not None:
            out.inserts.insert(out.inserts.index(queued[0]), rev)
        return out


def summary(items: Sequence[str]) -> List[str]:
    """`goal`, `attachment`, `attachment` -> `goal`, `2 attachments` (in first-seen order)."""
    counts: Dict[str, int] = {}
    for i in items:
        counts[i] = counts.get(i, 0) + 1
    return [k if n == 1 else f"{n} {k}s" for k, n in counts.items()]


def reason_counts(reasons: Sequence[str]) -> List[List[Any]]:
    """[reason, how many times] over every imported thread, most frequent first (then as first seen)."""
    counts: Dict[str, int] = {}
    for r in reasons:
        counts[r] = counts.get(r, 0) + 1
    order = {r: i for i, r in enumerate(counts)}
    return [[r, n] for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], order[kv[0]]))]
