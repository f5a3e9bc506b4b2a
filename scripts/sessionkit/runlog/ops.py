"""The journal as typed operations: each kind of change is one class that writes its record,
reads it back strictly, names the paths and columns it may touch, applies itself, recognises the
old, new and torn states, and undoes itself. Planners build lists of these; `writerun.execute`
runs them; `undo` reverses them. The on-disk format is documented in docs/journal-format.md."""
from __future__ import annotations

import binascii
import json
import os
import re
import sqlite3
import sys
from pathlib import Path
import stat as _st
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

from sessionkit.codexfiles.record import FrozenRecord
from sessionkit.codexfiles.reasons import CHANGED_SINCE_PLAN, CHANGED_WHILE_READ, NOT_REGULAR, NO_HISTORY_BASE
from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.codexfiles.faults import point
from sessionkit.codexfiles.history_offsets import read_offsets, set_offsets, shifted
from sessionkit.codexfiles.paths import file_sig, write_all
from sessionkit.codexfiles.line1 import read_line1
from sessionkit.codexfiles.paths import open_regular
from sessionkit.codexfiles.rollout_edit import (apply_spans, digest_range, line1_shifts, long_text, plan_file, plan_line,
                                                ranges, shift, unshift)

OLD, NEW, TORN, CHANGED = "old", "new", "torn", "changed"
NOOP = "\x00nothing to do"  # prepare(): drop this op silently (e.g. a folder that exists by now)
CHUNK = 1024 * 1024
TMP_SUFFIX = ".session-migration.tmp"

# Columns an operation may write, per table: anything else in a record is refused (item 8).
UPDATE_COLUMNS: Dict[str, Tuple[str, ...]] = {
    "threads": ("rollout_path", "cwd", "archived", "archived_at", "updated_at", "updated_at_ms",
                "model_provider", "name"),
    "thread_turns": ("rollout_byte_offset", "rollout_end_byte_offset"),
    "thread_history_projection_state": ("next_rollout_byte_offset",),
    "project_roots": ("path",),  # a project's folder, remapped with --remap-prefix (sessionkit/fixes/project_remap.py)
    "sqlite_sequence": ("seq",),  # queue_1's revision counter, moved with the revisions an import adds
    "queued_thread_revisions": ("revision",),  # a revision row DEST kept for a thread the import brings
}
# Tables whose whole rows may be inserted or deleted (every column of the real table allowed).
ROW_TABLES = ("threads", "thread_turns", "thread_items", "thread_realtime_items",
              "thread_history_projection_state",
              # what else belongs to a thread (sessionkit/codexfiles/thread_tables.py: an import brings them)
              "projects", "project_roots", "thread_sections", "thread_spawn_edges", "thread_attachments",
              "thread_read_receipts", "thread_goals", "thread_goal_continuation_deferrals", "queued_items",
              "queued_thread_revisions", "project_idempotency_keys", "thread_dynamic_tools", "session_model_ids",
              "sqlite_sequence")


class RecordError(UserError):
    """A journal record that is not what this code writes: the rollback refuses the run."""


def sha256_file(path: Path) -> Tuple[int, str]:
    import hashlib  # digests are made by --apply and the rollback: a dry-run loads none (issue 24)
    h = hashlib.sha256()
    size = 0
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def sha_with_spans(data: bytes, spans: Sequence[Tuple[int, bytes, bytes]]) -> str:
    """sha(apply_spans(data, spans, True)) without building the new bytes (spans sorted, in old
    coordinates, as the one editor makes them): line 1 is ~20 KB and its edits a few bytes."""
    import hashlib
    h, view, pos = hashlib.sha256(), memoryview(data), 0
    for off, old, new in spans:
        h.update(view[pos:off])
        h.update(new)
        pos = off + len(old)
    h.update(view[pos:])
    return h.hexdigest()


def tmp_beside(path: Path) -> Path:
    return Path(tmp_name(str(path)))


def tmp_name(path: str) -> str:
    """`.<name>.session-migration.tmp` in the same folder (same filesystem: the rename is atomic)."""
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}{TMP_SUFFIX}")


def enc(value: Any) -> Any:
    """A DB value as JSON: bytes become {"$b64": ...}."""
    if isinstance(value, bytes):
        import base64
        return {"$b64": base64.b64encode(value).decode("ascii")}
    return value


def dec(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        import base64
        if list(value) != ["$b64"] or not isinstance(value["$b64"], str):
            raise RecordError(f"{where}: a value is neither a scalar nor a $b64 blob")
        return base64.b64decode(value["$b64"], validate=True)
    if value is not None and not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise RecordError(f"{where}: a value is not a SQLite scalar")
    return value


def _b64(data: bytes) -> str:
    import base64
    return base64.b64encode(data).decode("ascii")


_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")  # base64.b64decode(validate=True)'s own check, compiled once
_STRICT = {"strict_mode": True} if sys.version_info >= (3, 11) else {}  # as validate=True decodes there


def _unb64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise RecordError(f"{where}: bytes field is not base64 text")
    try:
        if _BASE64.fullmatch(text) is None:
            raise ValueError
        return binascii.a2b_base64(text, **_STRICT)  # thousands a journal: what b64decode(validate=True) does
    except ValueError:  # binascii.Error (bad padding) too
        raise RecordError(f"{where}: bytes field is not base64") from None


_TYPES = {"str": str, "int": int, "dict": dict, "list": list, "bool": bool}
_SPECS = {t + q: (base, q == "?") for t, base in _TYPES.items() for q in ("", "?")}  # "str?" -> (str, nullable)
_ALWAYS = frozenset(("v", "ts", "op"))


class Spec:
    """A record's fields (name: type, "?" for nullable), required and optional, compiled once: the
    reader checks thousands of records of a kind against it."""

    def __init__(self, required: Dict[str, str], optional: Dict[str, str]) -> None:
        self.allowed = frozenset(required) | frozenset(optional) | _ALWAYS
        self.fields = [(name, *_SPECS[typ], needed, typ.rstrip("?"))
                       for fields, needed in ((required, True), (optional, False)) for name, typ in fields.items()]
        # the fast path's table: name -> (type, nullable, required, the name as written here: interned,
        # so keyword arguments built from the result match their parameters by identity); v, ts, op: None
        self.types: Dict[str, Any] = {n: (base, nullable, needed, n) for n, base, nullable, needed, _t in self.fields}
        self.types.update(dict.fromkeys(_ALWAYS - self.types.keys()))
        self.required = sum(1 for f in self.fields if f[3])


_MISSING = object()
_UNKNOWN = object()
_SPEC_OF: Dict[Tuple[Any, ...], Spec] = {}  # a spec written inline at a reader, compiled once per process


def _spec_of(required: Dict[str, str], optional: Dict[str, str]) -> Spec:
    key = (tuple(required.items()), tuple(optional.items()))
    spec = _SPEC_OF.get(key)
    if spec is None:
        spec = _SPEC_OF[key] = Spec(required, optional)
    return spec


def strict(rec: Dict[str, Any], required: Union[Dict[str, str], Spec],
           optional: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The record's fields, each of its declared type; an unknown or missing field is an error.
    A well-formed record is checked in one pass over its own fields (thousands a journal); any
    doubt goes to the field-by-field check, which names what is wrong."""
    spec = required if isinstance(required, Spec) else _spec_of(required, optional or {})
    types, out, needed = spec.types, {}, 0
    for name, value in rec.items():
        t = types.get(name, _UNKNOWN)
        if t is None:  # v, ts, op
            continue
        if t is _UNKNOWN:
            break
        if type(value) is t[0]:
            if t[0] is str and "\x00" in value:
                break
        elif value is not None or not t[1]:
            break  # another type (a bool for an int ...): the full check decides
        out[t[3]] = value
        needed += t[2]
    else:
        if needed == spec.required:
            return out
    return _strict_fields(rec, spec)


def _strict_fields(rec: Dict[str, Any], spec: Spec) -> Dict[str, Any]:
    if not spec.allowed.issuperset(rec):
        extra = set(rec) - spec.allowed
        raise RecordError(f"journal record {rec.get('op')!r}: unknown field(s) {', '.join(sorted(extra))}")
    out = {}
    for name, base, nullable, needed, typ in spec.fields:
        value = rec.get(name, _MISSING)
        if value is _MISSING:
            if needed:
                raise RecordError(f"journal record {rec.get('op')!r}: missing field {name!r}")
            continue
        if value is None and nullable:
            out[name] = None
            continue
        if type(value) is not base and (not isinstance(value, base) or (base is int and isinstance(value, bool))):
            raise RecordError(f"journal record {rec.get('op')!r}: field {name!r} is not {typ}")
        if base is str and "\x00" in value:
            raise RecordError(f"journal record {rec.get('op')!r}: field {name!r} holds a NUL")
        out[name] = value
    return out


def _ident(name: str, allowed: Sequence[str], where: str) -> str:
    if name not in allowed:
        raise RecordError(f"{where}: {name!r} is not one of {', '.join(allowed)}")
    return name


def table_columns(conn: sqlite3.Connection, table: str) -> List[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


def check_op_columns(conn: sqlite3.Connection, ops: Sequence["Op"]) -> None:
    """Before any SQL an op list builds: each op's columns allowed and real (one PRAGMA per table)."""
    seen: set = set()
    for o in ops:
        table, cols, allowed = o.columns()
        sig = (table, tuple(cols) + tuple(o.key_columns()), allowed is None)
        if sig not in seen:
            seen.add(sig)
            check_columns(conn, table, list(cols), allowed)
            check_columns(conn, table, o.key_columns(), None)


def check_columns(conn: sqlite3.Connection, table: str, cols: Sequence[str], allowed: Optional[Sequence[str]]) -> None:
    """Every column named is allowed for this op and exists in the real table."""
    real = set(table_columns(conn, table))
    for c in cols:
        if (allowed is not None and c not in allowed) or c not in real:
            raise UserError(f"refusing: column {c!r} of {table} is not one this operation may touch")


def _where(values: Dict[str, Any]) -> Tuple[str, List[Any]]:
    return " AND ".join(f'"{c}" IS ?' for c in values), list(values.values())


# Columns Codex itself rewrites without a user's act (real 0.171: a `thread/list {searchTerm}`
# re-derives a row's updated_at(_ms) from the rollout's mtime and created_at(_ms) from its line 1):
# not judged when deciding whether an INSERTED row is still ours (a continued thread is told by its
# file, which the same run created and judges by digest).
# Counters SQLite and Codex's triggers move by themselves (queue_1's triggers upsert a thread's
# revision on every change of its queue, and each upsert moves AUTOINCREMENT's sqlite_sequence): a
# rollback puts back the value from before the run whatever they became, never judging them.
COUNTERS: Dict[str, Tuple[str, ...]] = {"sqlite_sequence": ("seq",), "queued_thread_revisions": ("revision",)}
VOLATILE: Dict[str, Tuple[str, ...]] = {"threads": ("created_at", "created_at_ms", "updated_at", "updated_at_ms"),
                                         **COUNTERS}

_SCHEMAS: Dict[Tuple[str, ...], sqlite3.Connection] = {}


def _schema_copy(conn: sqlite3.Connection, table: str, triggers: bool = True) -> Optional[sqlite3.Connection]:
    """An in-memory DB holding only this table as the real DB defines it (its defaults and its
    triggers on itself): where an insert's whole row is worked out without writing the real DB."""
    kinds = "('table', 'trigger')" if triggers else "('table')"
    rows = conn.execute("SELECT type, sql FROM sqlite_master WHERE tbl_name=? AND sql IS NOT NULL "
                        f"AND type IN {kinds} ORDER BY type='trigger', name", (table,)).fetchall()
    sig = tuple(sql for _t, sql in rows)
    if not rows or rows[0][0] != "table":
        return None
    mem = _SCHEMAS.get(sig)
    if mem is None:
        if len(_SCHEMAS) > 16:
            for old in _SCHEMAS.values():
                old.close()
            _SCHEMAS.clear()
        mem = sqlite3.connect(":memory:", isolation_level=None)
        try:
            for sql in sig:
                mem.execute(sql)
        except sqlite3.DatabaseError:
            mem.close()
            return None
        _SCHEMAS[sig] = mem
    return mem


def whole_row(conn: sqlite3.Connection, table: str, row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Every column of the row an INSERT of `row` into `table` makes (defaults and the table's own
    triggers applied), as the DB defines the table now: columns added since get their defaults.
    None when the table cannot be copied (judged on the recorded columns alone then). A trigger that
    reaches another table (not copied) fails the insert: worked out without triggers then, which
    can only make a row look changed (left alone), never make a changed row look like ours."""
    for triggers in (True, False):
        mem = _schema_copy(conn, table, triggers)
        if mem is None:
            return None
        got = _probe(mem, table, row)
        if got is not None:
            return got
    return None


def _probe(mem: sqlite3.Connection, table: str, row: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    mem.execute("SAVEPOINT probe")
    try:
        names = ", ".join(f'"{c}"' for c in row)
        mem.execute(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(row))})', list(row.values()))
        got = mem.execute(f'SELECT * FROM "{table}" LIMIT 2')  # the copy holds this one row only
        cols = [d[0] for d in got.description]
        found = got.fetchall()
        values = found[0] if len(found) == 1 else None
    except sqlite3.DatabaseError:
        return None
    finally:
        mem.execute("ROLLBACK TO probe")
        mem.execute("RELEASE probe")
    return dict(zip(cols, values)) if values is not None else None


def current_rows(conn: sqlite3.Connection, table: str, key: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The whole rows (every column) found by `key`."""
    w, args = _where(key)
    cur = conn.execute(f'SELECT * FROM "{table}" WHERE {w}', args)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def same_row(table: str, a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    """Equal in every column but the ones Codex rewrites by itself (VOLATILE)."""
    skip = VOLATILE.get(table, ())
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


class RowRef(FrozenRecord):
    """A row an operation changes (see Op.rows)."""
    __slots__ = ("db", "table", "key", "columns")

    def __init__(self, db: str, table: str, key: Dict[str, Any], columns: Optional[Tuple[str, ...]] = None) -> None:
        self.db = db
        self.table = table
        self.key = key
        self.columns = columns


class Counts(FrozenRecord):
    """How one operation is counted: in `rollback.py --list` (`listed`), in an undo plan's summary
    (`to_undo`) and in an undo's result (`undone`); "" where it is not counted by itself."""
    __slots__ = ("listed", "to_undo", "undone")

    def __init__(self, listed: str = "", to_undo: str = "other_to_undo", undone: str = "") -> None:
        self.listed = listed
        self.to_undo = to_undo
        self.undone = undone


GONE = "gone"  # what the op changed no longer exists at all (a thread removed with thread/delete)


class Op:
    """One change. File ops: prepare/apply/state/undo. DB ops (DB_OP): apply_db/state_db/undo_db.
    Each op also describes itself (COUNTS, files, rows, judge, revert), so lists, plans and
    results ask it instead of switching on its kind."""

    KIND: ClassVar[str] = ""
    DB_OP: ClassVar[bool] = False
    COUNTS: ClassVar[Counts] = Counts()
    thread_id: Optional[str]
    # Each op's fields, as its explicit __init__ takes them, and those of them that only planning
    # uses (neither compared nor shown): a dataclass's eq and repr without the generated code it
    # execs at import (issue 24).
    _INIT: ClassVar[Tuple[str, ...]] = ()
    _PLAN_ONLY: ClassVar[Tuple[str, ...]] = ()

    def _fields(self) -> List[str]:
        return [n for n in self._INIT if n not in self._PLAN_ONLY]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        names = self._fields()
        return [getattr(self, n) for n in names] == [getattr(other, n) for n in names]

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields()) + ")"

    def replaced(self, **changes: Any) -> "Op":
        """A copy with some fields changed (dataclasses.replace: what __init__ sets by itself is not copied)."""
        return type(self)(**{**{n: getattr(self, n) for n in self._INIT}, **changes})

    # ---- what it is and touches
    def files(self) -> List[str]:
        """The home's files this op changes for good (temporaries and kept copies left out)."""
        return []

    def rows(self) -> List["RowRef"]:
        """Each row this op changes: its DB, table, key (a part of the key: every row it selects)
        and the columns it writes (None: the whole row)."""
        return []

    def subject(self) -> str:
        """How a report names what this op changed: its thread, else its first path or DB."""
        return self.thread_id or (self.paths() or [self.db() or "?"])[0]

    def value_change(self, column: str) -> Optional[Tuple[Any, Any]]:
        """(old, new) of a column this op sets (e.g. model_provider), else None."""
        return None

    def undo_sample(self) -> Optional[str]:
        """One line saying what its undo does, where that helps a reader (a move: `dst -> src`)."""
        return None

    def relocation(self) -> Optional[Tuple[str, str]]:
        """(from, to) when this op moves a file: an earlier op's file is judged where it went."""
        return None

    def writes_through(self) -> List[str]:
        """Files its undo writes in place (same inode): never done through a hard link."""
        return []

    def undo_refusal(self) -> Optional[str]:
        """Why its undo may not run now (a file it would write in place has other hard links)."""
        for p in self.writes_through():
            why = _linked(p, _links(p))
            if why:
                return why
        return None

    def at(self, old: str, new: str) -> "Op":
        """This op as if its file `old` lay at `new` (a later op of the run moved it); by default
        an op whose file cannot be judged elsewhere is itself."""
        return self

    def written_back(self) -> Optional[Tuple[str, Dict[str, Any], Dict[str, Any]]]:
        """(table, key, values) of the row values its undo writes into a DB, which the run's own
        backup must hold (an edited journal cannot make a rollback write anything else)."""
        return None

    # ---- how its state is checked and how it is undone
    def judge(self, conn: Optional[sqlite3.Connection] = None) -> str:
        """OLD, NEW, TORN, CHANGED, or GONE (changed, and what it changed is not there at all)."""
        st = self.state_db(conn) if self.DB_OP else self.state()  # type: ignore[arg-type]
        if st == CHANGED and (self.gone_db(conn) if self.DB_OP else self.gone()):  # type: ignore[arg-type]
            return GONE
        return st

    def gone(self) -> bool:
        """No file this op changed is on disk any more (deleted since the run)."""
        subjects = self.files()
        return bool(subjects) and not any(os.path.lexists(p) for p in subjects)

    def gone_db(self, conn: sqlite3.Connection) -> bool:
        return False

    def revert_if_new(self, conn: sqlite3.Connection) -> Optional[int]:
        """A DB op, under the caller's transaction: undone when it still holds what the run wrote
        (the rows it changed), else None (left as it is)."""
        if self.state_db(conn) != NEW:
            return None
        return self.revert(conn)

    @classmethod
    def judge_all(cls, conn: sqlite3.Connection, ops: Sequence["Op"]) -> List[str]:
        """judge(conn) of each of these ops (all of this class, one DB, their columns checked), in
        order; a class whose ops read rows may read them in bulk. By default one by one."""
        return [o.judge(conn) for o in ops]

    @classmethod
    def revert_all(cls, conn: sqlite3.Connection, ops: Sequence["Op"]) -> Tuple[int, int]:
        """revert_if_new of each op (all of this class, in order, one transaction): (ops undone,
        rows changed)."""
        done = rows = 0
        for o in ops:
            n = o.revert_if_new(conn)
            if n is not None:
                done, rows = done + 1, rows + n
        return done, rows

    def revert_if_still(self) -> bool:
        """A file op, under its thread's writer lock: undone when it is still new (or torn), judged
        again (cheaply where nothing moved since the plan); False: left as it is."""
        if self.state() not in (NEW, TORN):
            return False
        self.revert()
        return True

    def revert(self, conn: Optional[sqlite3.Connection] = None) -> int:
        """Undo it (a DB op inside the caller's transaction); returns the rows it changed."""
        if self.DB_OP:
            return self.undo_db(conn)  # type: ignore[arg-type]
        self.undo()
        return 0

    def to_record(self) -> Dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "Op":
        raise NotImplementedError

    def paths(self) -> List[str]:
        """Every path this op may create, write, rename or remove."""
        return []

    def db(self) -> Optional[str]:
        return None

    def together(self) -> List[str]:
        """Other threads this change goes with: skipped when any of them is (a fork and its parent)."""
        return []

    def join(self, thread_id: str) -> bool:
        """Record that this change goes with `thread_id`'s (a sub-agent with its parent: codexfiles.
        thread_graph); False when its record cannot say so."""
        return False

    # ---- a change shared by several threads of the run (runlog/shared_undo.py judges these)
    def served(self) -> List[str]:
        """Threads of the run this change (of no thread: a project, a section, a name list) serves:
        it is undone only when each of them is."""
        return []

    def referenced_by(self) -> List[Tuple[str, str, str, Any]]:
        """(DB path, table, column, value): rows there holding `value` that this run did not make
        point at what this op made (a thread moved into an imported project): then it stays."""
        return []

    def unit(self) -> Optional[str]:
        """Name of the rows judged and undone together with this one (a project, its folders, its key)."""
        return None

    def inserted_value(self, table: str, column: str) -> Tuple[bool, Any]:
        """(True, value) when this op inserted a row of `table` holding `value` in `column`."""
        return False, None

    def changed_reason(self) -> str:
        """Why a rollback leaves this change alone when its state is CHANGED."""
        return f"{self.KIND} changed since the run"

    def key_columns(self) -> List[str]:
        return []

    def columns(self) -> Tuple[str, List[str], Optional[Sequence[str]]]:
        """(table, columns written, allow-list or None for whole-row ops)."""
        return "", [], ()

    def prepare(self, run_dir: Path) -> Optional[str]:
        """Under the thread's writer lock, right before the run: check the file is as planned and
        fill in what the record needs. A reason string skips the thread."""
        return None

    # file ops
    def apply(self) -> None:
        raise NotImplementedError

    def state(self) -> str:
        raise NotImplementedError

    def undo(self) -> None:
        raise NotImplementedError

    def leftover(self) -> bool:
        """A temporary file of this op is still on disk (a kill mid-write)."""
        return False

    def clean(self) -> None:
        pass

    # DB ops
    def apply_db(self, conn: sqlite3.Connection) -> int:
        raise NotImplementedError

    def state_db(self, conn: sqlite3.Connection) -> str:
        raise NotImplementedError

    def undo_db(self, conn: sqlite3.Connection) -> int:
        raise NotImplementedError


def _join(op: Any, thread_id: str) -> bool:
    """Op.join for an op that records "with" (with_threads)."""
    if thread_id != op.thread_id and thread_id not in op.with_threads:
        op.with_threads.append(thread_id)
    return True


def _with(op: Any) -> Dict[str, Any]:
    """The "with" field of a record: written only when the op goes with other threads."""
    return {"with": list(op.with_threads)} if op.with_threads else {}


def _with_read(value: List[Any], kind: str) -> List[str]:
    if not all(isinstance(t, str) and t for t in value):
        raise RecordError(f"journal record {kind!r}: 'with' names no thread")
    return list(value)


def _set_mtime(fd: int, path: str, ns: int) -> None:
    """Both times of the open file `fd` (the one just written: no second lookup of its path) where
    the system sets them through a descriptor, else through `path`."""
    if os.utime in os.supports_fd:
        os.utime(fd, ns=(ns, ns))
    else:
        os.utime(path, ns=(ns, ns))


def _sig_now(path: str) -> Optional[Tuple[int, int, int, int, int]]:
    try:
        return file_sig(os.lstat(path))
    except OSError:
        return None


def _pread(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes at `offset` (fewer at the end of the file), the descriptor's position unused."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    """All of `data` at `offset` (short writes looped)."""
    if not hasattr(os, "pwrite"):
        os.lseek(fd, offset, os.SEEK_SET)
        write_all(fd, data)
        return
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(28, "No space left on device (short write)")
        view, offset = view[n:], offset + n


def _linked(path: str, links: int) -> Optional[str]:
    if links > 1:
        return (f"{path} has {links} hard links (a backup made with cp -al or rsnapshot?): undoing in place "
                "would change the other copies too")
    return None


def _links(path: str) -> int:
    try:
        return os.lstat(path).st_nlink
    except OSError:
        return 0


def _remove_tmp(tmp: Union[str, Path]) -> None:
    try:
        st = os.lstat(str(tmp))
    except OSError:
        return
    import stat as _st
    if _st.S_ISREG(st.st_mode) or _st.S_ISLNK(st.st_mode):
        os.unlink(str(tmp))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_new_file(tmp: Path, parts, mode: int, mtime_ns: Optional[int]) -> int:
    """Write `parts` (bytes, (path, offset) to copy the rest of a file, or (path, offset, length)
    to copy a range of it) to a new file, in
    chunks, fsynced; a fault point between chunks. Returns the size written."""
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
    size = 0
    try:
        for part in parts:
            if isinstance(part, bytes):
                write_all(fd, part)
                size += len(part)
                point("chunk")
                continue
            src, offset = part[0], part[1]
            left = part[2] if len(part) > 2 else -1  # (path, offset, length): a bounded range
            with open_regular(src) as fh:
                fh.seek(offset)
                while left != 0:
                    chunk = fh.read(CHUNK if left < 0 else min(CHUNK, left))
                    if not chunk:
                        if left > 0:
                            raise OSError(5, f"{src} ended before the range to copy")
                        break
                    write_all(fd, chunk)
                    size += len(chunk)
                    left -= len(chunk) if left > 0 else 0
                    point("chunk")
        os.fchmod(fd, mode & 0o7777)
        os.fsync(fd)
    finally:
        os.close(fd)
    if mtime_ns is not None:
        os.utime(str(tmp), ns=(mtime_ns, mtime_ns))
    return size


# ---------------------------------------------------------------- files


class Mkdir(Op):
    """A folder the run creates (a date folder); undo removes it only when it is still empty."""
    KIND: ClassVar[str] = "mkdir"
    COUNTS: ClassVar[Counts] = Counts("folders_created")

    _INIT: ClassVar[Tuple[str, ...]] = ("path", "thread_id")

    def __init__(self, path: str, thread_id: Optional[str] = None) -> None:
        self.path = path
        self.thread_id = thread_id

    def to_record(self) -> Dict[str, Any]:
        return {"op": self.KIND, "path": self.path, "thread_id": self.thread_id}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "Mkdir":
        return cls(**strict(rec, {"path": "str"}, {"thread_id": "str?"}))

    def paths(self) -> List[str]:
        return [self.path]

    def prepare(self, run_dir: Path) -> Optional[str]:
        if os.path.isdir(self.path) and not os.path.islink(self.path):
            return NOOP
        return f"{self.path} exists and is not a folder" if os.path.lexists(self.path) else None

    def apply(self) -> None:
        os.mkdir(self.path, 0o755)

    def state(self) -> str:
        if not os.path.lexists(self.path):
            return OLD
        return NEW if os.path.isdir(self.path) and not os.path.islink(self.path) else CHANGED

    def undo(self) -> None:
        try:
            os.rmdir(self.path)
        except OSError:
            pass  # not empty: something else lives there now


class Move(Op):
    """Rename a rollout inside the home, never over a file; mtime set to new_mtime_ns if given."""
    KIND: ClassVar[str] = "move"
    COUNTS: ClassVar[Counts] = Counts("moves", "files_to_move_back", "files_moved_back")

    _INIT: ClassVar[Tuple[str, ...]] = ("thread_id", "src", "dst", "new_mtime_ns", "mtime_ns", "size", "ino")

    def __init__(self, thread_id: Optional[str], src: str, dst: str, new_mtime_ns: Optional[int] = None,
                 mtime_ns: int = 0, size: int = -1, ino: int = 0) -> None:
        self.thread_id = thread_id
        self.src = src
        self.dst = dst
        self.new_mtime_ns = new_mtime_ns
        self.mtime_ns = mtime_ns
        self.size = size
        self.ino = ino

    def files(self) -> List[str]:
        return [self.dst]

    def gone(self) -> bool:
        return not os.path.lexists(self.src) and not os.path.lexists(self.dst)

    def undo_sample(self) -> Optional[str]:
        return f"{self.dst} -> {self.src}"

    def relocation(self) -> Optional[Tuple[str, str]]:
        return self.src, self.dst

    def to_record(self) -> Dict[str, Any]:
        return {"op": self.KIND, "thread_id": self.thread_id, "src": self.src, "dst": self.dst,
                "new_mtime_ns": self.new_mtime_ns, "mtime_ns": self.mtime_ns, "size": self.size, "ino": self.ino}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "Move":
        return cls(**strict(rec, {"thread_id": "str?", "src": "str", "dst": "str", "mtime_ns": "int",
                                  "size": "int", "ino": "int"}, {"new_mtime_ns": "int?"}))

    def paths(self) -> List[str]:
        return [self.src, self.dst]

    def prepare(self, run_dir: Path) -> Optional[str]:
        try:
            st = os.lstat(self.src)
        except OSError as exc:
            return f"{self.src}: {exc.strerror}"
        import stat as _st
        if not _st.S_ISREG(st.st_mode):
            return f"{self.src} is not a regular file (a symlink?)"
        if st.st_nlink > 1 and self.new_mtime_ns is not None:
            return (f"the rollout has {st.st_nlink} hard links (a backup made with cp -al or rsnapshot?): setting "
                    "its mtime would change the other copies too; skipped")
        if os.path.lexists(self.dst):
            return f"{self.dst} already exists"
        self.mtime_ns, self.size, self.ino = st.st_mtime_ns, st.st_size, st.st_ino
        return None

    def apply(self) -> None:
        if os.path.lexists(self.dst):
            raise UserError(f"{self.dst} appeared while writing")
        os.rename(self.src, self.dst)
        if self.new_mtime_ns is not None:
            os.utime(self.dst, ns=(self.new_mtime_ns, self.new_mtime_ns))

    def state(self) -> str:
        s, d = os.path.lexists(self.src), os.path.lexists(self.dst)
        if s and not d:
            return OLD
        if d and not s and os.path.isfile(self.dst) and not os.path.islink(self.dst):
            return NEW  # not its inode: a grown line 1 renamed over it since is still this file
        return CHANGED

    def undo(self) -> None:
        if os.path.lexists(self.src):
            raise UserError(f"{self.src} exists: not moving {self.dst} back over it")
        st = os.stat(self.dst)
        after = self.new_mtime_ns if self.new_mtime_ns is not None else self.mtime_ns
        untouched = st.st_mtime_ns == after and st.st_size == self.size and st.st_nlink == 1  # never utime a shared inode
        os.makedirs(os.path.dirname(self.src), exist_ok=True)
        os.rename(self.dst, self.src)
        if untouched:  # nothing newer than the run in it: its old mtime back (item 14)
            os.utime(self.src, ns=(self.mtime_ns, self.mtime_ns))


FORKED_SINCE = ("forked since the run at an offset past its grown lines (undoing it alone would cut the "
                "fork's history)")


def forks_made_since(path: str, shifts: List[List[int]], backup: Optional[str]) -> List[str]:
    """Forks Codex made after the run (their UUIDv7 id is newer than the run's kept copy) whose
    history_base points into this file at or past its first grown line (offsets of the grown
    file): the ids, from the rollouts of the dates since the run."""
    from sessionkit.codexfiles.thread_graph import forks_since
    if not shifts or not backup:
        return []
    try:
        since_ms = int(os.stat(backup).st_mtime * 1000)
    except OSError:
        return []
    first = shifts[0][0] + shifts[0][1]  # the first grown line's end, in the grown file
    return forks_since(Path(path), since_ms, first)


_spans_apply = apply_spans  # the one editor's span math (rollout_edit); names kept for callers
_digest_range = digest_range
_ranges = ranges
_shift = shift
_unshift = unshift


class RolloutEdit(Op):
    """What the two rollout rewrites share: byte spans of the old file, a growth that decides
    in-place or beside-and-rename, and the temporary file a kill may leave beside the rollout."""
    path: str
    spans: List[Tuple[int, bytes, bytes]]
    COUNTS: ClassVar[Counts] = Counts("line1_rewrites", "line1_to_restore", "line1_restored")

    def _edit_fields(self, thread_id: Optional[str], path: str, set: Dict[str, Any], expect_mtime_ns: Optional[int],
                     expect_size: Optional[int], old_values: Optional[Dict[str, Any]],
                     spans: Optional[List[Tuple[int, bytes, bytes]]], old_sha: str, new_sha: str, size: int,
                     mtime_ns: int, mode: int, backup: Optional[str], old_file_sha: Optional[str],
                     new_file_sha: Optional[str], with_threads: Optional[List[str]]) -> None:
        """The fields both rewrites have (each __init__ sets its own after these)."""
        self.thread_id = thread_id
        self.path = path
        self.set = set
        self.expect_mtime_ns = expect_mtime_ns
        self.expect_size = expect_size
        self.old_values = {} if old_values is None else old_values
        self.spans = [] if spans is None else spans  # absolute, old file
        self.old_sha = old_sha
        self.new_sha = new_sha
        self.size = size
        self.mtime_ns = mtime_ns
        self.mode = mode
        self.backup = backup  # the kept copy of a grown file
        self.old_file_sha = old_file_sha
        self.new_file_sha = new_file_sha
        self.with_threads = [] if with_threads is None else with_threads  # recorded as "with" (Op.join)

    def join(self, thread_id: str) -> bool:
        return _join(self, thread_id)

    def files(self) -> List[str]:
        return [self.path]

    def writes_through(self) -> List[str]:
        return [self.path] if self.growth == 0 else []  # a grown file is written beside and renamed

    def at(self, old: str, new: str) -> "Op":
        return self.replaced(path=new) if self.path == old else self

    @property
    def growth(self) -> int:
        seen = self.__dict__.get("_growth_of")  # asked many times an op (state, writes_through, undo)
        if seen is None or seen[0] is not self.spans or seen[1] != len(self.spans):
            seen = self.__dict__["_growth_of"] = (self.spans, len(self.spans),
                                                  sum(len(n) - len(o) for _, o, n in self.spans))
        return seen[2]

    @property
    def tmp(self) -> str:
        seen = self.__dict__.get("_tmp_of")  # asked several times an op (paths, leftover, clean): named once
        if seen is None or seen[0] != self.path:
            seen = self.__dict__["_tmp_of"] = (self.path, tmp_name(self.path))
        return seen[1]

    def boundaries(self) -> List[List[int]]:
        """(boundary, delta) pairs: offsets into the file at or past a boundary move by its delta
        (history rows, cursors, forks' history_base). Line 1 only: everything from line 2 on."""
        return line1_shifts(self.old_len, self.growth)  # type: ignore[attr-defined]

    def leftover(self) -> bool:
        """Only a grown rewrite (and its undo) writes a temporary file beside the rollout: a same-length
        one writes in place, both ways, so a kill leaves none of it (no lstat a thread then)."""
        return self.growth != 0 and os.path.lexists(self.tmp)

    def clean(self) -> None:
        _remove_tmp(self.tmp)

    def _write_spans(self, forward: bool) -> None:
        """Every span's new (or old) bytes in place: same length, same inode."""
        fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | host.BINARY)
        try:
            for n, (off, old, new) in enumerate(self.spans):
                if n:
                    point("chunk")
                _pwrite(fd, new if forward else old, off)
        finally:
            os.close(fd)

    def _apply_in_place(self) -> None:
        self._write_spans(True)
        point("written")  # the new bytes with a new mtime: the undo must put the old mtime back
        os.utime(self.path, ns=(self.mtime_ns, self.mtime_ns))  # type: ignore[attr-defined]

    def _undo_in_place(self) -> None:
        """New or torn: the old bytes back over every span. Nothing appended since (same size): its
        old mtime back too, even after a kill between the write and the mtime; else today's kept."""
        fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | host.BINARY)
        try:
            self._write_back(fd, os.fstat(fd))  # the file written, as it was before the write
        finally:
            os.close(fd)

    def _write_back(self, fd: int, st: os.stat_result) -> None:
        """The old bytes over every span of the open file `fd` (`st`: it before the write), then its
        mtime: the old one when nothing was appended since, else today's kept."""
        for n, (off, old, _new) in enumerate(self.spans):
            if n:
                point("chunk")
            _pwrite(fd, old, off)
        point("undo-written")  # the old bytes, today's mtime: still `torn` (below) until the mtime is back
        keep = self.mtime_ns if st.st_size == self.size else st.st_mtime_ns  # type: ignore[attr-defined]
        _set_mtime(fd, self.path, keep)

    def state(self) -> str:
        """The file's state; a grown file that a fork made since the run points into past its first
        grown line is CHANGED: undoing it alone would cut that fork's history (left alone, named)."""
        st = self._file_state()
        if st == NEW and self.growth:
            forks = forks_made_since(self.path, self.boundaries(), self.backup)  # type: ignore[attr-defined]
            if forks:
                self.conflict = (f"{FORKED_SINCE}: {', '.join(forks[:3])}" + (" and more" if len(forks) > 3 else ""))
                return CHANGED
        return st

    def changed_reason(self) -> str:
        return getattr(self, "conflict", None) or super().changed_reason()

    def _file_state(self) -> str:
        raise NotImplementedError

    def _old_or_mtime_torn(self) -> str:
        """Old bytes: `old`, unless a same-length rewrite left today's mtime on a file that holds
        nothing newer (same size): a kill between the undo's write and its mtime. That is `torn`,
        so the next rollback puts the mtime back too."""
        if self.growth == 0:
            try:
                st = os.stat(self.path)
            except OSError:
                return OLD
            if st.st_size == self.size and st.st_mtime_ns != self.mtime_ns:  # type: ignore[attr-defined]
                return TORN
        return OLD


_LINE1_SPEC = Spec({"thread_id": "str?", "path": "str", "set": "dict", "old_values": "dict", "spans": "list",
                    "old_len": "int", "size": "int", "mtime_ns": "int", "mode": "int"},
                   {"old_sha": "str", "new_sha": "str",  # absent only beside a `cut` of a same-length rewrite
                    "backup": "str?", "old_file_sha": "str?", "new_file_sha": "str?", "with": "list",
                    "cut": "list", "old_cut_sha": "str", "new_cut_sha": "str"})


class Line1Rewrite(RolloutEdit):
    """Set payload field(s) of a rollout's line 1 (`session_meta`): same length when JSON padding
    allows (written in place, same inode), else the grown file is written beside and renamed over
    (the writer lock is held; a full copy is kept in the run folder). See docs/journal-format.md."""
    KIND: ClassVar[str] = "line1"

    _INIT: ClassVar[Tuple[str, ...]] = ("thread_id", "path", "set", "expect_mtime_ns", "expect_size", "old_values",
                                        "spans", "old_len", "old_sha", "new_sha", "size", "mtime_ns", "mode", "backup",
                                        "old_file_sha", "new_file_sha", "with_threads", "cut", "old_cut_sha",
                                        "new_cut_sha", "expect_growth")
    _PLAN_ONLY: ClassVar[Tuple[str, ...]] = ("expect_growth",)

    def __init__(self, thread_id: Optional[str], path: str, set: Dict[str, Any],
                 expect_mtime_ns: Optional[int] = None, expect_size: Optional[int] = None,
                 old_values: Optional[Dict[str, Any]] = None, spans: Optional[List[Tuple[int, bytes, bytes]]] = None,
                 old_len: int = 0, old_sha: str = "", new_sha: str = "", size: int = 0, mtime_ns: int = 0,
                 mode: int = 0o600, backup: Optional[str] = None, old_file_sha: Optional[str] = None,
                 new_file_sha: Optional[str] = None, with_threads: Optional[List[str]] = None,
                 cut: Optional[List[int]] = None, old_cut_sha: Optional[str] = None,
                 new_cut_sha: Optional[str] = None, expect_growth: Optional[int] = None) -> None:
        self._edit_fields(thread_id, path, set, expect_mtime_ns, expect_size, old_values, spans, old_sha, new_sha,
                          size, mtime_ns, mode, backup, old_file_sha, new_file_sha, with_threads)
        self.old_len = old_len
        # The long base_instructions text of line 1 ([start, end) in the old line; no span reaches it) and
        # the digests of the line without it plus its newline, old and new: a rollback judges line 1 on
        # those (~1 KB read) instead of the whole ~20 KB line. None: judged on the whole line (older journals).
        self.cut = cut
        self.old_cut_sha = old_cut_sha
        self.new_cut_sha = new_cut_sha
        # Not journaled: the growth the plan found (the history offsets it planned to move or not); a
        # line 1 whose edit grows otherwise under the writer lock is skipped as changed since the plan.
        self.expect_growth = expect_growth
        # Not journaled: the file's signature when this process last read line 1, and what it found (the
        # state judged, or the line as prepare() checked it): read again only when the signature moved.
        self._seen = None
        self._prepared = None

    def together(self) -> List[str]:
        return list(self.with_threads)

    def to_record(self) -> Dict[str, Any]:
        rec = {"op": self.KIND, "thread_id": self.thread_id, "path": self.path, "set": self.set,
               "old_values": self.old_values,
               "spans": [[o, _b64(a), _b64(b)] for o, a, b in self.spans], "old_len": self.old_len}
        if not self._lean():  # the whole line's digests: judged (and applied) on them
            rec["old_sha"], rec["new_sha"] = self.old_sha, self.new_sha
        rec.update(size=self.size, mtime_ns=self.mtime_ns, mode=self.mode)
        if self.growth:  # the kept copy and the whole file's digests (a same-length rewrite has none)
            rec.update(backup=self.backup, old_file_sha=self.old_file_sha, new_file_sha=self.new_file_sha)
        rec.update(_with(self))
        if self.cut is not None:
            rec.update(cut=list(self.cut), old_cut_sha=self.old_cut_sha, new_cut_sha=self.new_cut_sha)
        return rec

    def _lean(self) -> bool:
        """A same-length rewrite judged on its `cut`: the whole line's digests are neither computed
        nor journaled (nothing reads them: the rollback and a re-read apply check the cut)."""
        return self.cut is not None and self.growth == 0

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "Line1Rewrite":
        f = strict(rec, _LINE1_SPEC)
        f["with_threads"] = _with_read(f.pop("with", []), "line1")
        spans = []
        for s in f.pop("spans"):
            if not (isinstance(s, list) and len(s) == 3 and isinstance(s[0], int) and s[0] >= 0):
                raise RecordError("journal record 'line1': a span is malformed")
            spans.append((s[0], _unb64(s[1], "line1 span"), _unb64(s[2], "line1 span")))
        op = cls(spans=spans, **f)
        if op.growth and not (op.backup and op.old_file_sha and op.new_file_sha):
            raise RecordError("journal record 'line1': a growing rewrite without its kept copy")
        if (op.cut, op.old_cut_sha, op.new_cut_sha).count(None) not in (0, 3):
            raise RecordError("journal record 'line1': cut, old_cut_sha and new_cut_sha go together")
        digests = ("old_sha" in f) + ("new_sha" in f)
        if digests == 1 or (digests == 0 and not op._lean()):
            raise RecordError("journal record 'line1': old_sha and new_sha are left out only together, and "
                              "only beside the cut of a same-length rewrite")
        cut = op.cut
        if cut is not None and not (len(cut) == 2 and type(cut[0]) is int and type(cut[1]) is int
                                    and 0 <= cut[0] < cut[1] <= op.old_len
                                    and max([o + len(a) for o, a, _ in spans] or [0]) <= cut[0]):
            raise RecordError("journal record 'line1': cut is malformed")
        return op

    def paths(self) -> List[str]:
        return [self.path, self.tmp] + ([self.backup] if self.backup else [])

    def prepare(self, run_dir: Path) -> Optional[str]:
        import stat as _st
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            return f"{self.path}: {exc.strerror}"
        if not _st.S_ISREG(st.st_mode):
            return NOT_REGULAR
        if st.st_nlink > 1:  # item 4: never write through a shared inode
            return (f"the rollout has {st.st_nlink} hard links (a backup made with cp -al or rsnapshot?): "
                    "writing it would change the other copies too; skipped")
        if (self.expect_mtime_ns is not None and st.st_mtime_ns != self.expect_mtime_ns) or \
                (self.expect_size is not None and st.st_size != self.expect_size):
            return CHANGED_SINCE_PLAN
        if os.path.lexists(self.tmp):
            return f"{self.tmp} exists (left by another run?): skipped"
        line, err = read_line1(self.path)  # type: ignore[arg-type]  # a str opens as well
        if line is None:
            return f"line 1 unreadable ({err})"
        edit = plan_line(line, (), self.set, first=True)  # the one editor's field finder
        if edit.problem:
            return edit.problem
        spans = edit.spans
        if self.expect_growth is not None and sum(len(n) - len(o) for _, o, n in spans) != self.expect_growth:
            return CHANGED_SINCE_PLAN  # planned same-length (no history offsets to move) or the other way
        self.old_values.update(edit.old_values)
        self.spans, self.old_len = spans, len(line)
        self.size, self.mtime_ns, self.mode = st.st_size, st.st_mtime_ns, st.st_mode & 0o7777
        self._record_cut(line, st.st_size, edit.cut)
        if not self._lean():  # two ~20 KB digests a thread, only where something reads them
            self.old_sha, self.new_sha = sha(line), sha_with_spans(line, spans)
        else:  # apply's re-check of the whole line, in this process only (a CRC: a sixth of a digest's time)
            import zlib
            self.__dict__["_old_crc"] = zlib.crc32(line)
        if self.growth:
            self._keep_copy(run_dir, line, apply_spans(line, spans, True))
        self._prepared = file_sig(st)  # taken before the read: a change after it moves the signature
        return None

    def _record_cut(self, line: bytes, size: int, found: Optional[Tuple[int, int]] = None) -> None:
        """The long text of line 1 to leave out of the rollback's check (see `cut`; `found`: the
        plan's long_text of this line): only when the line ends with its newline in the file and
        every span lies before the text."""
        cut = (found or long_text(line)) if size > len(line) else None
        if cut is None or any(off + len(old) > cut[0] for off, old, _ in self.spans):
            self.cut = self.old_cut_sha = self.new_cut_sha = None
            return
        import hashlib
        view, tail = memoryview(line), line[cut[1]:] + b"\n"
        old_h, new_h, pos = hashlib.sha256(view[:cut[0]]), hashlib.sha256(), 0
        for off, was, now in self.spans:  # the new head streamed (spans sorted, all before the text)
            new_h.update(view[pos:off])
            new_h.update(now)
            pos = off + len(was)
        new_h.update(view[pos:cut[0]])
        old_h.update(tail)
        new_h.update(tail)
        self.cut = [cut[0], cut[1]]
        self.old_cut_sha, self.new_cut_sha = old_h.hexdigest(), new_h.hexdigest()

    def _keep_copy(self, run_dir: Path, line: bytes, new: bytes) -> None:
        """The whole file, copied into the run folder (0600) and checked, with both whole-file digests."""
        name = f"{self.thread_id or sha(self.path.encode())[:16]}.rollout.bak"
        dest = run_dir / name
        import hashlib
        old_h, new_h = hashlib.sha256(), hashlib.sha256()
        new_h.update(new)
        fd = os.open(str(dest), os.O_WRONLY | os.O_CREAT | os.O_EXCL | host.BINARY, 0o600)
        try:
            with open_regular(self.path) as fh:
                first = True
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    write_all(fd, chunk)
                    old_h.update(chunk)
                    new_h.update(chunk[len(line):] if first else chunk)
                    first = False
            os.fsync(fd)
        finally:
            os.close(fd)
        if sha256_file(dest) != (self.size, old_h.hexdigest()):
            raise OSError(5, f"the kept copy {dest} does not match {self.path}")
        self.backup, self.old_file_sha, self.new_file_sha = str(dest), old_h.hexdigest(), new_h.hexdigest()

    def apply(self) -> None:
        if not self.spans:
            return
        if self.growth == 0 and self._prepared is not None and _sig_now(self.path) == self._prepared:
            self._apply_in_place()  # the file as prepare() read and checked it: not read again
            return
        p = Path(self.path)
        line, _ = read_line1(p)
        assert line is not None and self._is_old(line), f"{p}: line 1 changed under the lock"
        if self.growth == 0:
            self._apply_in_place()
            return
        new = _spans_apply(line, self.spans, True)
        _write_new_file(Path(self.tmp), [new, (self.path, len(line))], self.mode, self.mtime_ns)
        host.replace_file(self.tmp, self.path)
        _fsync_dir(p.parent)

    def _is_old(self, line: bytes) -> bool:
        """Line 1 as prepare() read it: by the whole line's digest, or (a lean record) by the whole
        line's CRC prepare() kept and the digest of the line without its cut text, followed by the
        newline the file held then."""
        if not self._lean():
            return sha(line) == self.old_sha
        start, end = self.cut  # type: ignore[misc]
        import zlib
        if len(line) != self.old_len or zlib.crc32(line) != self.__dict__.get("_old_crc"):
            return False
        try:
            with open_regular(self.path, buffering=0) as fh:
                fh.seek(self.old_len)
                newline = fh.read(1)
        except OSError:
            return False
        return sha(line[:start] + line[end:] + newline) == self.old_cut_sha

    def _line(self) -> Optional[bytes]:
        line, _ = read_line1(self.path)  # type: ignore[arg-type]  # a str opens as well
        return line

    def _file_state(self) -> str:
        """Judged from line 1's digest; judged again (the plan's judgement re-checked under the
        writer lock) only when the file's signature moved since."""
        if not self.spans:
            return OLD
        if self._seen is None and self.cut is not None:  # judged for the first time: the fstat of the
            state = self._judge_cut()  # file it opens (not followed) is the lstat, taken before its reads
            st = self.__dict__.pop("_cut_st", None)
            if st is not None:
                self.__dict__["_nlink"] = (self.path, st.st_nlink)  # undo_refusal asks next
                self._seen = (file_sig(st), state)
            return state
        try:
            st = os.lstat(self.path)
        except OSError:
            return CHANGED
        if not _st.S_ISREG(st.st_mode):
            return CHANGED
        self.__dict__["_nlink"] = (self.path, st.st_nlink)  # undo_refusal asks next: no second lstat
        sig = file_sig(st)  # before the read: a change after it moves the signature
        if self._seen is not None and self._seen[0] == sig:
            return self._seen[1]
        state = self._judge_line() if self.cut is None else self._judge_cut()
        self._seen = (sig, state)
        return state

    def revert_if_still(self) -> bool:
        """A same-length rewrite the plan judged new or torn: the file opened for the write (not
        followed) is the one judged when its signature is the one the judgement saw (nothing wrote
        it since), and is written back through that one descriptor; anything else is judged again."""
        seen = self._seen
        if self.growth or seen is None or seen[1] not in (NEW, TORN) or not self.spans:
            return super().revert_if_still()
        try:
            fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
                         | host.BINARY)
        except OSError:
            return super().revert_if_still()
        try:
            st = os.fstat(fd)
            if file_sig(st) != seen[0]:
                os.close(fd)
                fd = -1
                return super().revert_if_still()
            self._write_back(fd, st)
        finally:
            if fd >= 0:
                os.close(fd)
        return True

    def undo_refusal(self) -> Optional[str]:
        """As Op's, from the links the judgement just saw (its lstat), not a second lstat."""
        seen = self.__dict__.pop("_nlink", None)
        if seen is None or seen[0] != self.path:
            return super().undo_refusal()
        return _linked(self.path, seen[1]) if self.writes_through() else None

    def _judge_line(self) -> str:
        line = self._line()
        if line is None:
            return CHANGED
        digest = sha(line)
        if digest == self.new_sha:
            return NEW
        if digest == self.old_sha:
            return self._old_or_mtime_torn()
        if self.growth == 0 and len(line) == self.old_len:
            mended = line
            for off, old, _new in self.spans:
                mended = mended[:off] + old + mended[off + len(old):]
            if sha(mended) == self.old_sha:
                return TORN
        return CHANGED

    def _judge_cut(self) -> str:
        """Line 1 judged without reading its long base_instructions text (Codex writes line 1 once
        and never rewrites it; no span reaches the text): the bytes before it and the bytes after it
        through line 1's newline, old or new, against the recorded digests. Two reads of ~1 KB."""
        start, end = self.cut  # type: ignore[misc]
        g, rest = self.growth, self.old_len + 1 - end  # rest: the tail's length with the newline
        at = end + min(g, 0)  # the tail, old and new, in one read
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
                         | host.BINARY)
        except OSError:
            return CHANGED
        try:
            st = os.fstat(fd)
            if not _st.S_ISREG(st.st_mode):
                return CHANGED
            head = _pread(fd, start + max(g, 0), 0)
            tail = _pread(fd, rest + abs(g), at)
        except OSError:
            return CHANGED
        finally:
            os.close(fd)
        self.__dict__["_cut_st"] = st  # the file judged, as it was before the reads (_file_state)
        if sha(head[:start + g] + tail[end + g - at:end + g - at + rest]) == self.new_cut_sha:
            return NEW
        old_head, old_tail = head[:start], tail[end - at:end - at + rest]
        if sha(old_head + old_tail) == self.old_cut_sha:
            return self._old_or_mtime_torn()
        if g == 0 and len(old_head) == start:
            mended = old_head
            for off, was, _new in self.spans:
                mended = mended[:off] + was + mended[off + len(was):]
            if sha(mended + old_tail) == self.old_cut_sha:
                return TORN
        return CHANGED

    def undo(self) -> None:
        if self.growth == 0:  # in place: no temporary file is ever made (a kill's leftovers: plan cleanups)
            self._undo_in_place()
            return
        self.clean()
        st = os.stat(self.path)
        line = self._line()
        assert line is not None
        exact = st.st_size == self.size + self.growth and sha256_file(Path(self.path))[1] == self.new_file_sha
        if exact and self.backup and os.path.isfile(self.backup) and \
                sha256_file(Path(self.backup)) == (self.size, self.old_file_sha):
            parts: list = [(self.backup, 0)]  # the kept copy, byte for byte
        else:  # turns added since: old line 1 + everything after the current one
            parts = [_spans_apply(line, self.spans, False), (self.path, len(line))]
        mtime = self.mtime_ns if exact else st.st_mtime_ns
        _write_new_file(Path(self.tmp), parts, st.st_mode, mtime)
        host.replace_file(self.tmp, self.path)
        _fsync_dir(Path(self.path).parent)


class RolloutRewrite(RolloutEdit):
    """Rewrite field spans on several lines of one rollout as one change, planned by the one editor
    (rollout_edit.plan_file): `set` on line 1's session_meta payload (a fork's history_base moved
    with its `parent`'s rewrite), and every folder record Codex reads back under `remaps`. Same
    length when JSON padding allows (each span written in place, same inode), else one grown file
    written beside and renamed over, with one kept copy.
    `shifts` lists (start of the line after a grown line, its growth) for the history offsets.
    Old/new/torn are judged by the digest of the file up to the end of the last changed line, so
    turns appended since are kept by the undo. See docs/journal-format.md ("rollout_rewrite")."""
    KIND: ClassVar[str] = "rollout_rewrite"

    _INIT: ClassVar[Tuple[str, ...]] = ("thread_id", "path", "set", "remaps", "expect_mtime_ns", "expect_size",
                                        "old_values", "spans", "shifts", "prefix_len", "old_sha", "new_sha",
                                        "cwd_lines", "size", "mtime_ns", "mode", "backup", "old_file_sha",
                                        "new_file_sha", "parent", "with_threads")
    _PLAN_ONLY: ClassVar[Tuple[str, ...]] = ("parent",)

    def __init__(self, thread_id: Optional[str], path: str, set: Dict[str, Any],
                 remaps: Optional[List[List[str]]] = None, expect_mtime_ns: Optional[int] = None,
                 expect_size: Optional[int] = None, old_values: Optional[Dict[str, Any]] = None,
                 spans: Optional[List[Tuple[int, bytes, bytes]]] = None, shifts: Optional[List[List[int]]] = None,
                 prefix_len: int = 0, old_sha: str = "", new_sha: str = "", cwd_lines: int = 0, size: int = 0,
                 mtime_ns: int = 0, mode: int = 0o600, backup: Optional[str] = None,
                 old_file_sha: Optional[str] = None, new_file_sha: Optional[str] = None,
                 parent: Optional[RolloutEdit] = None, with_threads: Optional[List[str]] = None) -> None:
        # old_sha, new_sha: of the old bytes through the last changed line, and of the same lines as
        # rewritten; with_threads: the parent, read back
        self._edit_fields(thread_id, path, set, expect_mtime_ns, expect_size, old_values, spans, old_sha, new_sha,
                          size, mtime_ns, mode, backup, old_file_sha, new_file_sha, with_threads)
        self.remaps = [] if remaps is None else remaps
        self.shifts = [] if shifts is None else shifts  # [start of next line, growth], old file
        self.prefix_len = prefix_len  # old bytes through the last changed line (its newline included)
        self.cwd_lines = cwd_lines  # lines past line 1 whose cwd was rewritten
        self.parent = parent  # a fork's, while planned

    def together(self) -> List[str]:
        """A fork's rewrite goes with its parent's (neither without the other, nor its undo)."""
        own = [self.parent.thread_id] if self.parent is not None and self.parent.thread_id else []
        return own + [t for t in self.with_threads if t not in own]

    def boundaries(self) -> List[List[int]]:
        """(boundary, delta) pairs for OffsetShift: offsets at or past a boundary move by its delta."""
        return [list(s) for s in self.shifts]

    def to_record(self) -> Dict[str, Any]:
        return {"op": self.KIND, "thread_id": self.thread_id, "path": self.path, "set": self.set,
                "remaps": [list(r) for r in self.remaps], "old_values": self.old_values,
                "spans": [[o, _b64(a), _b64(b)] for o, a, b in self.spans],
                "shifts": [list(s) for s in self.shifts], "prefix_len": self.prefix_len,
                "old_sha": self.old_sha, "new_sha": self.new_sha, "cwd_lines": self.cwd_lines,
                "size": self.size, "mtime_ns": self.mtime_ns, "mode": self.mode, "backup": self.backup,
                "old_file_sha": self.old_file_sha, "new_file_sha": self.new_file_sha,
                **({"with": self.together()} if self.together() else {})}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "RolloutRewrite":
        where = "journal record 'rollout_rewrite'"
        f = strict(rec, {"thread_id": "str?", "path": "str", "set": "dict", "remaps": "list",
                         "old_values": "dict", "spans": "list", "shifts": "list", "prefix_len": "int",
                         "old_sha": "str", "new_sha": "str", "cwd_lines": "int", "size": "int",
                         "mtime_ns": "int", "mode": "int"},
                   {"backup": "str?", "old_file_sha": "str?", "new_file_sha": "str?", "with": "list"})
        f["with_threads"] = f.pop("with", [])
        if not all(isinstance(t, str) and t for t in f["with_threads"]):
            raise RecordError(f"{where}: 'with' names no thread")
        spans = []
        for s in f.pop("spans"):
            if not (isinstance(s, list) and len(s) == 3 and isinstance(s[0], int) and not isinstance(s[0], bool)
                    and s[0] >= 0):
                raise RecordError(f"{where}: a span is malformed")
            spans.append((s[0], _unb64(s[1], "rollout_rewrite span"), _unb64(s[2], "rollout_rewrite span")))
        if any(a[0] + len(a[1]) > b[0] for a, b in zip(spans, spans[1:])) or \
                any(o + len(a) > f["prefix_len"] or len(b) < len(a) for o, a, b in spans):
            raise RecordError(f"{where}: spans overlap, shrink or lie past the rewritten lines")
        for r in f["remaps"]:
            if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r)):
                raise RecordError(f"{where}: a remap is malformed")
        for s in f["shifts"]:
            if not (isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                  for x in s) and s[0] > 0 and s[1] > 0):
                raise RecordError(f"{where}: a shift is malformed")
        if [s[0] for s in f["shifts"]] != sorted({s[0] for s in f["shifts"]}):
            raise RecordError(f"{where}: shifts are not in file order")
        op = cls(spans=spans, **f)
        if sum(s[1] for s in op.shifts) != op.growth or op.prefix_len < 0 or op.cwd_lines < 0:
            raise RecordError(f"{where}: its shifts do not add up to its growth")
        if op.growth and not (op.backup and op.old_file_sha and op.new_file_sha):
            raise RecordError(f"{where}: a growing rewrite without its kept copy")
        return op

    def paths(self) -> List[str]:
        return [self.path, self.tmp] + ([self.backup] if self.backup else [])

    def _fork_base(self) -> Optional[str]:
        """A fork whose parent's rewrite grows: its history_base.end_byte_offset (an offset into the
        parent's file) moves with the parent's lines, read under both writer locks."""
        if self.parent is None:
            return None
        shifts = self.parent.boundaries() if self.parent.spans else []
        line, err = read_line1(Path(self.path))
        if line is None:
            return f"line 1 unreadable ({err})"
        try:
            base = json.loads(line)["payload"]["history_base"]
            end = base["end_byte_offset"]
            assert isinstance(base, dict) and isinstance(end, int) and not isinstance(end, bool)
        except (ValueError, KeyError, TypeError, AssertionError):
            return NO_HISTORY_BASE
        if shift(end, shifts) != end:
            self.set = dict(self.set, history_base=dict(base, end_byte_offset=shift(end, shifts)))
        return None

    def prepare(self, run_dir: Path) -> Optional[str]:
        import stat as _st
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            return f"{self.path}: {exc.strerror}"
        if not _st.S_ISREG(st.st_mode):
            return NOT_REGULAR
        if st.st_nlink > 1:
            return (f"the rollout has {st.st_nlink} hard links (a backup made with cp -al or rsnapshot?): "
                    "writing it would change the other copies too; skipped")
        if (self.expect_mtime_ns is not None and st.st_mtime_ns != self.expect_mtime_ns) or \
                (self.expect_size is not None and st.st_size != self.expect_size):
            return CHANGED_SINCE_PLAN
        if os.path.lexists(self.tmp):
            return f"{self.tmp} exists (left by another run?): skipped"
        why = self._fork_base()
        if why:
            return why
        plan = plan_file(self.path, [(a, b) for a, b in self.remaps], self.set)  # the one editor
        if plan.problem:
            return plan.problem
        if plan.size != st.st_size:
            return CHANGED_WHILE_READ
        if not plan.spans:
            return NOOP
        self.old_values, self.cwd_lines = dict(plan.old_values), plan.folder_lines
        self.spans, self.shifts, self.prefix_len = plan.spans, plan.shifts, plan.prefix_len
        self.old_sha, self.new_sha = plan.old_sha, plan.new_sha
        self.size, self.mtime_ns, self.mode = st.st_size, st.st_mtime_ns, st.st_mode & 0o7777
        self.old_file_sha, self.new_file_sha = plan.old_file_sha, plan.new_file_sha
        if self.growth:
            self._keep_copy(run_dir)
        return None

    def _keep_copy(self, run_dir: Path) -> None:
        dest = run_dir / f"{self.thread_id or sha(self.path.encode())[:16]}.rollout.bak"
        _write_new_file(dest, [(self.path, 0)], 0o600, None)
        if sha256_file(dest) != (self.size, self.old_file_sha):
            raise OSError(5, f"the kept copy {dest} does not match {self.path}")
        self.backup = str(dest)

    def apply(self) -> None:
        if not self.spans:
            return
        if _digest_range(self.path, self.prefix_len) != self.old_sha:
            raise UserError(f"{self.path} changed under the writer lock; nothing was kept")
        if self.growth == 0:
            self._apply_in_place()
            return
        tmp = Path(self.tmp)
        _write_new_file(tmp, _ranges(self.path, self.spans, True), self.mode, self.mtime_ns)
        if sha256_file(tmp) != (self.size + self.growth, self.new_file_sha):
            _remove_tmp(tmp)
            raise OSError(5, f"{tmp}: the rewritten copy is not what was planned")
        host.replace_file(self.tmp, self.path)
        _fsync_dir(Path(self.path).parent)

    def _file_state(self) -> str:
        if not self.spans:
            return OLD
        if os.path.islink(self.path) or not os.path.isfile(self.path):
            return CHANGED
        if _digest_range(self.path, self.prefix_len + self.growth) == self.new_sha:
            return NEW
        if _digest_range(self.path, self.prefix_len) == self.old_sha:
            return self._old_or_mtime_torn()
        if self.growth == 0 and _digest_range(self.path, self.prefix_len,
                                              [(o, a) for o, a, _ in self.spans]) == self.old_sha:
            return TORN
        return CHANGED

    def undo(self) -> None:
        self.clean()
        if self.growth == 0:
            self._undo_in_place()
            return
        st = os.stat(self.path)
        exact = st.st_size == self.size + self.growth and sha256_file(Path(self.path))[1] == self.new_file_sha
        if exact and self.backup and os.path.isfile(self.backup) and \
                sha256_file(Path(self.backup)) == (self.size, self.old_file_sha):
            parts: list = [(self.backup, 0)]  # the kept copy, byte for byte
        else:  # turns appended since: the old lines back, everything after them kept
            parts = _ranges(self.path, self.spans, False)
        _write_new_file(Path(self.tmp), parts, st.st_mode, self.mtime_ns if exact else st.st_mtime_ns)
        host.replace_file(self.tmp, self.path)
        _fsync_dir(Path(self.path).parent)


class FileCreate(Op):
    """A new file written into the home (from `source` or `data`); undo deletes it only while its
    size and digest still match."""
    KIND: ClassVar[str] = "file_create"
    COUNTS: ClassVar[Counts] = Counts("files_created")

    _INIT: ClassVar[Tuple[str, ...]] = ("path", "size", "sha256", "source", "data", "mode", "mtime_ns", "thread_id")

    def __init__(self, path: str, size: int = -1, sha256: str = "", source: Optional[str] = None,
                 data: Optional[bytes] = None, mode: int = 0o600, mtime_ns: Optional[int] = None,
                 thread_id: Optional[str] = None) -> None:
        self.path = path
        self.size = size
        self.sha256 = sha256
        self.source = source
        self.data = data
        self.mode = mode
        self.mtime_ns = mtime_ns
        self.thread_id = thread_id

    def files(self) -> List[str]:
        return [self.path]

    @property
    def tmp(self) -> str:
        return tmp_name(self.path)

    def to_record(self) -> Dict[str, Any]:
        return {"op": self.KIND, "path": self.path, "size": self.size, "sha256": self.sha256,
                "source": self.source, "data": None if self.data is None else _b64(self.data),
                "mode": self.mode, "mtime_ns": self.mtime_ns, "thread_id": self.thread_id}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "FileCreate":
        f = strict(rec, {"path": "str", "size": "int", "sha256": "str", "mode": "int"},
                   {"source": "str?", "data": "str?", "mtime_ns": "int?", "thread_id": "str?"})
        if f.get("data") is not None:
            f["data"] = _unb64(f["data"], "file_create data")
        return cls(**f)

    def paths(self) -> List[str]:
        return [self.path, self.tmp]

    def prepare(self, run_dir: Path) -> Optional[str]:
        if os.path.lexists(self.path):
            return f"{self.path} already exists"
        if os.path.lexists(self.tmp):
            return f"{self.tmp} exists (left by another run?)"
        if self.data is not None:
            got = (len(self.data), sha(self.data))
        elif self.source:
            try:
                got = sha256_file(Path(self.source))
            except OSError as exc:
                return f"{self.source}: {exc.strerror}"
        else:
            return "nothing to write"
        if self.sha256 and got != (self.size, self.sha256):
            return f"{self.source or 'the data'} changed since the plan was made"
        self.size, self.sha256 = got
        return None

    def apply(self) -> None:
        parts: list = [self.data] if self.data is not None else [(self.source, 0)]
        _write_new_file(Path(self.tmp), parts, self.mode, self.mtime_ns)
        if sha256_file(Path(self.tmp)) != (self.size, self.sha256):
            raise OSError(5, f"{self.tmp}: the written copy differs from its source")
        if os.path.lexists(self.path):
            raise UserError(f"{self.path} appeared while writing")
        os.rename(self.tmp, self.path)

    def state(self) -> str:
        if not os.path.lexists(self.path):
            return OLD
        if os.path.isfile(self.path) and not os.path.islink(self.path) and \
                sha256_file(Path(self.path)) == (self.size, self.sha256):
            return NEW
        return CHANGED

    def leftover(self) -> bool:
        return os.path.lexists(self.tmp)

    def clean(self) -> None:
        _remove_tmp(Path(self.tmp))

    def undo(self) -> None:
        self.clean()
        os.unlink(self.path)


class SymlinkRepoint(Op):
    """Point a symlink inside the home elsewhere (e.g. packages/app-server-daemon/current)."""
    KIND: ClassVar[str] = "symlink"
    COUNTS: ClassVar[Counts] = Counts("symlinks_repointed")

    _INIT: ClassVar[Tuple[str, ...]] = ("path", "old_target", "new_target", "thread_id")

    def __init__(self, path: str, old_target: str, new_target: str, thread_id: Optional[str] = None) -> None:
        self.path = path
        self.old_target = old_target
        self.new_target = new_target
        self.thread_id = thread_id

    def files(self) -> List[str]:
        return [self.path]

    @property
    def tmp(self) -> str:
        return tmp_name(self.path)

    def to_record(self) -> Dict[str, Any]:
        return {"op": self.KIND, "path": self.path, "old_target": self.old_target,
                "new_target": self.new_target, "thread_id": self.thread_id}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "SymlinkRepoint":
        return cls(**strict(rec, {"path": "str", "old_target": "str", "new_target": "str"}, {"thread_id": "str?"}))

    def paths(self) -> List[str]:
        return [self.path, self.tmp]

    def prepare(self, run_dir: Path) -> Optional[str]:
        if not os.path.islink(self.path) or os.readlink(self.path) != self.old_target:
            return f"{self.path} no longer points at {self.old_target}"
        if os.path.lexists(self.tmp):
            return f"{self.tmp} exists"
        return None

    def _point(self, target: str) -> None:
        _remove_tmp(Path(self.tmp))
        os.symlink(target, self.tmp)
        os.rename(self.tmp, self.path)

    def apply(self) -> None:
        self._point(self.new_target)

    def state(self) -> str:
        if not os.path.islink(self.path):
            return CHANGED
        now = os.readlink(self.path)
        return NEW if now == self.new_target else OLD if now == self.old_target else CHANGED

    def leftover(self) -> bool:
        return os.path.lexists(self.tmp)

    def clean(self) -> None:
        _remove_tmp(Path(self.tmp))

    def undo(self) -> None:
        self._point(self.old_target)


# ---------------------------------------------------------------- databases


_SQL: Dict[Tuple[Any, ...], str] = {}  # statements by their shape (kind, table, columns): built once per run, not per row


def _vals(d: Any, where: str) -> Dict[str, Any]:
    if not isinstance(d, dict) or not d:
        raise RecordError(f"{where}: expected a non-empty column map")
    return {str(k): v if type(v) is str or type(v) is int else dec(v, where) for k, v in d.items()}  # noqa: E721


_ROW_UPDATE_SPEC = Spec({"db": "str", "table": "str", "key": "dict", "old": "dict", "new": "dict"},
                        {"thread_id": "str?", "with": "list"})


class RowUpdate(Op):
    """Change allowed columns of one row (found by `key`) from `old` to `new`."""
    KIND: ClassVar[str] = "row_update"
    DB_OP: ClassVar[bool] = True
    COUNTS: ClassVar[Counts] = Counts("row_updates", "rows_to_revert", "rows_reverted")

    _INIT: ClassVar[Tuple[str, ...]] = ("db_path", "table", "key", "old", "new", "thread_id", "with_threads")

    def __init__(self, db_path: str, table: str, key: Dict[str, Any], old: Dict[str, Any], new: Dict[str, Any],
                 thread_id: Optional[str] = None, with_threads: Optional[List[str]] = None) -> None:
        self.db_path = db_path
        self.table = table
        self.key = key
        self.old = old
        self.new = new
        self.thread_id = thread_id
        self.with_threads = [] if with_threads is None else with_threads  # recorded as "with" (Op.join)
        self.__post_init__()

    def together(self) -> List[str]:
        return list(self.with_threads)

    def join(self, thread_id: str) -> bool:
        return _join(self, thread_id)

    def rows(self) -> List[RowRef]:
        return [RowRef(self.db_path, self.table, self.key, tuple(self.new))]

    def value_change(self, column: str) -> Optional[Tuple[Any, Any]]:
        return (self.old[column], self.new[column]) if column in self.new else None

    def gone_db(self, conn: sqlite3.Connection) -> bool:
        return not current_rows(conn, self.table, self.key)

    def written_back(self) -> Optional[Tuple[str, Dict[str, Any], Dict[str, Any]]]:
        return self.table, self.key, self.old

    def __post_init__(self) -> None:
        if self.table not in UPDATE_COLUMNS:
            _ident(self.table, list(UPDATE_COLUMNS), "row_update table")
        allowed = UPDATE_COLUMNS[self.table]
        for c in (*self.old, *self.new):
            if c not in allowed:
                _ident(c, allowed, f"row_update of {self.table}")
        if self.old.keys() != self.new.keys():
            raise RecordError("row_update: old and new name different columns")

    def to_record(self) -> Dict[str, Any]:
        return {"op": self.KIND, "db": self.db_path, "table": self.table, "thread_id": self.thread_id,
                "key": {k: enc(v) for k, v in self.key.items()}, "old": {k: enc(v) for k, v in self.old.items()},
                "new": {k: enc(v) for k, v in self.new.items()}, **_with(self)}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "RowUpdate":
        f = strict(rec, _ROW_UPDATE_SPEC)
        return cls(f["db"], f["table"], _vals(f["key"], "row_update key"), _vals(f["old"], "row_update old"),
                   _vals(f["new"], "row_update new"), f.get("thread_id"), _with_read(f.get("with", []), "row_update"))

    def db(self) -> Optional[str]:
        return self.db_path

    def columns(self) -> Tuple[str, List[str], Optional[Sequence[str]]]:
        return self.table, list(self.new), UPDATE_COLUMNS[self.table]

    def key_columns(self) -> List[str]:
        return list(self.key)

    def _keycols(self) -> List[str]:
        return list(self.key)

    def _current(self, conn: sqlite3.Connection) -> Optional[Dict[str, Any]]:
        cols = list(self.new)
        shape = ("current", self.table, tuple(cols), tuple(self.key))
        sql = _SQL.get(shape)
        if sql is None:
            sql = _SQL[shape] = (f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{self.table}" '
                                 f"WHERE {_where(self.key)[0]}")
        rows = conn.execute(sql, list(self.key.values())).fetchall()
        return dict(zip(cols, rows[0])) if len(rows) == 1 else None

    def apply_db(self, conn: sqlite3.Connection) -> int:
        w, args = _where({**self.key, **self.old})
        shape = ("apply", self.table, tuple(self.new), w)
        sql = _SQL.get(shape)
        if sql is None:
            sets = ", ".join(f'"{c}"=?' for c in self.new)
            sql = _SQL[shape] = f'UPDATE "{self.table}" SET {sets} WHERE {w}'
        n = conn.execute(sql, list(self.new.values()) + args).rowcount
        if n != 1:
            raise UserError(f"{self.table} row {self.key} changed since the plan was made; nothing was kept")
        return n

    def _judged(self) -> List[str]:
        """The columns that say whether the row still holds what the run wrote: every one it wrote
        (updated_at included: Codex bumps it when the thread is continued, which must stop the undo;
        a search re-derives it from the mtime the run set, the same value); COUNTERS aside."""
        return [c for c in self.new if c not in COUNTERS.get(self.table, ())]

    def state_db(self, conn: sqlite3.Connection) -> str:
        cur = self._current(conn)
        if cur is None:
            return CHANGED
        cols = self._judged()
        pick = lambda d: {c: d[c] for c in cols}  # noqa: E731
        return NEW if pick(cur) == pick(self.new) else OLD if pick(cur) == pick(self.old) else CHANGED

    def undo_db(self, conn: sqlite3.Connection) -> int:
        sets = ", ".join(f'"{c}"=?' for c in self.old)
        w, args = _where({**self.key, **{c: self.new[c] for c in self._judged()}})
        return conn.execute(f'UPDATE "{self.table}" SET {sets} WHERE {w}', list(self.old.values()) + args).rowcount

    def _revert_sql(self) -> Tuple[str, List[Any]]:
        """The old values back where the key finds exactly one row and that row holds every value
        the run wrote (state_db's NEW, judged by SQLite): its SQL (built once per shape) and arguments."""
        judged = self._judged()
        shape = ("revert", self.table, tuple(self.old), tuple(self.key), tuple(judged))
        sql = _SQL.get(shape)
        if sql is None:
            sets = ", ".join(f'"{c}"=?' for c in self.old)
            w, _args = _where({**self.key, **{c: self.new[c] for c in judged}})
            sql = _SQL[shape] = (f'UPDATE "{self.table}" SET {sets} WHERE {w} AND (SELECT count(*) FROM '
                                 f'"{self.table}" WHERE {_where(self.key)[0]}) = 1')
        args = list({**self.key, **{c: self.new[c] for c in judged}}.values())
        return sql, list(self.old.values()) + args + list(self.key.values())

    def revert_if_new(self, conn: sqlite3.Connection) -> Optional[int]:
        """One statement, no read before it (see _revert_sql)."""
        sql, args = self._revert_sql()
        return conn.execute(sql, args).rowcount or None

    @classmethod
    def revert_all(cls, conn: sqlite3.Connection, ops: Sequence[Op]) -> Tuple[int, int]:
        """The ops' statements, each as revert_if_new runs it, in order: a run of ops of one shape
        in one executemany. Each changes at most one row, so the rows changed count the ops undone."""
        done, i = 0, 0
        while i < len(ops):
            sql, args = ops[i]._revert_sql()  # type: ignore[attr-defined]
            batch = [args]
            i += 1
            while i < len(ops):
                nxt, more = ops[i]._revert_sql()  # type: ignore[attr-defined]
                if nxt != sql:
                    break
                batch.append(more)
                i += 1
            done += conn.executemany(sql, batch).rowcount
        return done, done

    @classmethod
    def judge_all(cls, conn: sqlite3.Connection, ops: Sequence[Op]) -> List[str]:
        """state_db, then GONE as judge() decides, for rows found by exactly their key value where the
        key is the table's one-column primary key and no column is a counter: one query per 500
        rows of a shape, the row compared with `new` and `old` at once (every column it wrote is
        judged). Any other op, and a key not found so, is judged alone (judge)."""
        out: List[Optional[str]] = [None] * len(ops)
        pks: Dict[str, Optional[str]] = {}
        groups: Dict[Tuple[Any, ...], List[int]] = {}
        for i, o in enumerate(ops):
            key, table = o.key, o.table  # type: ignore[attr-defined]
            if len(key) == 1 and table not in COUNTERS:
                (kc, kv), = key.items()
                if type(kv) is str:
                    if table not in pks:
                        info = [r for r in conn.execute(f'PRAGMA table_info("{table}")') if r[5]]
                        pks[table] = info[0][1] if len(info) == 1 else None
                    if pks[table] == kc:
                        groups.setdefault((table, kc, tuple(o.new)), []).append(i)  # type: ignore[attr-defined]
                        continue
            out[i] = o.judge(conn)
        for (table, kc, cols), members in groups.items():
            names = ", ".join(f'"{c}"' for c in cols)
            for at in range(0, len(members), 500):
                chunk = members[at:at + 500]
                found: Dict[Any, Optional[Tuple[Any, ...]]] = {}
                for r in conn.execute(f'SELECT "{kc}", {names} FROM "{table}" WHERE "{kc}" IN '
                                      f'({", ".join("?" * len(chunk))})', [ops[i].key[kc] for i in chunk]):  # type: ignore[attr-defined]
                    found[r[0]] = r[1:] if r[0] not in found else None  # a key found twice: judged alone
                for i in chunk:
                    o = ops[i]
                    row = found.get(o.key[kc])  # type: ignore[attr-defined]
                    if row is None:
                        out[i] = o.judge(conn)
                        continue
                    cur = dict(zip(cols, row))
                    out[i] = NEW if cur == o.new else OLD if cur == o.old else CHANGED  # type: ignore[attr-defined]
        return out  # type: ignore[return-value]


class RowInsert(Op):
    """Insert one whole row; undo deletes it only while every recorded value still matches."""
    # optional (absent in older records): threads of the run it serves, [DB file beside this one,
    # table, column] whose rows pointing at its key hold it, the rows undone with it (Op.served ...)
    KIND: ClassVar[str] = "row_insert"
    DB_OP: ClassVar[bool] = True
    COUNTS: ClassVar[Counts] = Counts("row_inserts", "rows_to_delete", "rows_reverted")

    _INIT: ClassVar[Tuple[str, ...]] = ("db_path", "table", "row", "key", "thread_id", "serves", "refs", "together_as")

    def __init__(self, db_path: str, table: str, row: Dict[str, Any], key: Dict[str, Any],
                 thread_id: Optional[str] = None, serves: Optional[List[str]] = None,
                 refs: Optional[List[List[str]]] = None, together_as: Optional[str] = None) -> None:
        self.db_path = db_path
        self.table = table
        self.row = row
        self.key = key
        self.thread_id = thread_id
        self.serves = serves
        self.refs = refs
        self.together_as = together_as
        self.__post_init__()

    def rows(self) -> List[RowRef]:
        return [RowRef(self.db_path, self.table, self.key)]

    def __post_init__(self) -> None:
        _ident(self.table, ROW_TABLES, f"{self.KIND} table")
        for r in self.refs or []:
            if not (isinstance(r, list) and len(r) == 3 and all(isinstance(x, str) for x in r)) or \
                    "/" in r[0] or os.sep in r[0] or r[0] in ("", ".", "..") or not r[2].isidentifier() \
                    or r[1] not in ROW_TABLES:
                raise RecordError(f"{self.KIND} refs: not [DB file name, table, column]")
        if self.serves is not None and not all(isinstance(t, str) for t in self.serves):
            raise RecordError(f"{self.KIND} serves: not a list of thread ids")

    def to_record(self) -> Dict[str, Any]:
        rec = {"op": self.KIND, "db": self.db_path, "table": self.table, "thread_id": self.thread_id,
               "key": {k: enc(v) for k, v in self.key.items()}, "row": {k: enc(v) for k, v in self.row.items()}}
        extra = {"serves": self.serves, "refs": self.refs, "with_rows": self.together_as}
        return dict(rec, **{k: v for k, v in extra.items() if v is not None})

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "RowInsert":
        f = strict(rec, {"db": "str", "table": "str", "key": "dict", "row": "dict"},
                   {"thread_id": "str?", "serves": "list", "refs": "list", "with_rows": "str"})
        return cls(f["db"], f["table"], _vals(f["row"], f"{cls.KIND} row"), _vals(f["key"], f"{cls.KIND} key"),
                   f.get("thread_id"), f.get("serves"), f.get("refs"), f.get("with_rows"))

    def served(self) -> List[str]:
        return list(self.serves or [])

    def referenced_by(self) -> List[Tuple[str, str, str, Any]]:
        if not self.refs or len(self.key) != 1:
            return []
        value = next(iter(self.key.values()))
        folder = os.path.dirname(self.db_path) + os.sep
        return [(folder + db, table, column, value) for db, table, column in self.refs]

    def unit(self) -> Optional[str]:
        return self.together_as

    def inserted_value(self, table: str, column: str) -> Tuple[bool, Any]:
        return (True, self.row[column]) if table == self.table and column in self.row else (False, None)

    def db(self) -> Optional[str]:
        return self.db_path

    def columns(self) -> Tuple[str, List[str], Optional[Sequence[str]]]:
        return self.table, list(self.row) + list(self.key), None

    def key_columns(self) -> List[str]:
        return list(self.key)

    def _count(self, conn: sqlite3.Connection, values: Dict[str, Any]) -> int:
        w, args = _where(values)
        return int(conn.execute(f'SELECT count(*) FROM "{self.table}" WHERE {w}', args).fetchone()[0])

    def _insert(self, conn: sqlite3.Connection) -> int:
        names = ", ".join(f'"{c}"' for c in self.row)
        return conn.execute(f'INSERT INTO "{self.table}" ({names}) VALUES ({", ".join("?" * len(self.row))})',
                            list(self.row.values())).rowcount

    def _delete(self, conn: sqlite3.Connection) -> int:
        skip = VOLATILE.get(self.table, ())
        w, args = _where({k: v for k, v in {**self.row, **self.key}.items() if k not in skip or k in self.key})
        n = conn.execute(f'DELETE FROM "{self.table}" WHERE rowid IN (SELECT rowid FROM "{self.table}" '
                         f"WHERE {w} LIMIT 1)", args).rowcount
        return n

    def _present(self, conn: sqlite3.Connection) -> str:
        """`same`: the row found by its key is, in EVERY column (ones Codex set or added since
        included; VOLATILE ones aside), the row this insert makes; `other`: it differs; `absent`."""
        rows = current_rows(conn, self.table, self.key)
        if not rows:
            return "absent"
        if len(rows) > 1:
            return "other"
        want = whole_row(conn, self.table, self.row)
        if want is None:  # the table cannot be copied (sqlite_sequence): the recorded columns alone
            skip = VOLATILE.get(self.table, ())
            kept = {k: v for k, v in self.row.items() if k not in skip}
            return "same" if self._count(conn, {**self.key, **kept}) == 1 else "other"
        return "same" if same_row(self.table, rows[0], want) else "other"

    def apply_db(self, conn: sqlite3.Connection) -> int:
        if self._count(conn, self.key):
            raise UserError(f"{self.table} row {self.key} appeared since the plan was made")
        return self._insert(conn)

    def state_db(self, conn: sqlite3.Connection) -> str:
        return {"same": NEW, "absent": OLD, "other": CHANGED}[self._present(conn)]

    def undo_db(self, conn: sqlite3.Connection) -> int:
        return self._delete(conn)


class RowDelete(RowInsert):
    """Delete one whole row, keeping every value so the undo puts it back exactly."""
    KIND: ClassVar[str] = "row_delete"
    COUNTS: ClassVar[Counts] = Counts("row_deletes", "rows_to_restore", "rows_reverted")

    def written_back(self) -> Optional[Tuple[str, Dict[str, Any], Dict[str, Any]]]:
        return self.table, self.key, self.row

    def inserted_value(self, table: str, column: str) -> Tuple[bool, Any]:
        return False, None

    def apply_db(self, conn: sqlite3.Connection) -> int:
        n = self._delete(conn)
        if n != 1:
            raise UserError(f"{self.table} row {self.key} changed since the plan was made")
        return n

    def state_db(self, conn: sqlite3.Connection) -> str:
        return {"same": OLD, "absent": NEW, "other": CHANGED}[self._present(conn)]

    def undo_db(self, conn: sqlite3.Connection) -> int:
        return self._insert(conn)


class OffsetShift(Op):
    """thread_history_1.sqlite byte offsets of one thread past line 1, moved by `delta` when line 1
    grows; undo moves back everything past the grown line (turns added since included)."""
    KIND: ClassVar[str] = "offsets"
    DB_OP: ClassVar[bool] = True
    COUNTS: ClassVar[Counts] = Counts("offset_shifts", "offsets_to_revert")

    _INIT: ClassVar[Tuple[str, ...]] = ("db_path", "thread_id", "boundary", "delta", "old", "new", "after", "shifts")
    _PLAN_ONLY: ClassVar[Tuple[str, ...]] = ("after",)

    def __init__(self, db_path: str, thread_id: Optional[str], boundary: int, delta: int, old: List[Any],
                 new: List[Any], after: Optional[Op] = None, shifts: Optional[List[List[int]]] = None) -> None:
        self.db_path = db_path
        self.thread_id = thread_id
        self.boundary = boundary
        self.delta = delta
        self.old = old
        self.new = new
        self.after = after  # not recorded
        self.shifts = shifts  # several grown lines: [boundary, delta] each, in order

    def rows(self) -> List[RowRef]:
        return [RowRef(self.db_path, "thread_turns", {"thread_id": self.thread_id}, UPDATE_COLUMNS["thread_turns"]),
                RowRef(self.db_path, "thread_history_projection_state", {"thread_id": self.thread_id},
                       UPDATE_COLUMNS["thread_history_projection_state"])]

    def gone_db(self, conn: sqlite3.Connection) -> bool:
        assert self.thread_id is not None
        return read_offsets(conn, self.thread_id) == ([], -1)

    def prepare(self, run_dir: Path) -> Optional[str]:
        """Planned with the rewrite it follows (Line1Rewrite or RolloutRewrite): its boundaries and
        deltas are known once that is prepared."""
        if self.after is not None:
            if not getattr(self.after, "growth", 0):
                return NOOP
            assert self.thread_id is not None
            shifts = self.after.boundaries()  # type: ignore[attr-defined]
            try:  # read again under the thread's writer lock: a turn Codex added since the plan moves too
                from sessionkit.codexfiles.statedb import open_readonly
                conn = open_readonly(Path(self.db_path))
                try:
                    turns, proj = read_offsets(conn, self.thread_id)
                finally:
                    conn.close()
            except (sqlite3.Error, UserError) as exc:
                return f"{self.db_path}: history offsets not read ({exc})"
            self.old = [[list(t) for t in turns], proj]
            done = OffsetShift.plan_shifts(self.db_path, self.thread_id, (self.old[0], self.old[1]), shifts)
            self.boundary, self.delta, self.new, self.shifts = done.boundary, done.delta, done.new, done.shifts
        return None

    def shift_list(self) -> List[List[int]]:
        return [list(s) for s in self.shifts] if self.shifts is not None else [[self.boundary, self.delta]]

    def to_record(self) -> Dict[str, Any]:
        rec = {"op": self.KIND, "db": self.db_path, "thread_id": self.thread_id, "boundary": self.boundary,
               "delta": self.delta, "old": self.old, "new": self.new}
        if self.shifts is not None and self.shift_list() != [[self.boundary, self.delta]]:
            rec["shifts"] = self.shift_list()  # one boundary: the record stays as before
        return rec

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "OffsetShift":
        f = strict(rec, {"db": "str", "thread_id": "str", "boundary": "int", "delta": "int", "old": "list",
                         "new": "list"}, {"shifts": "list"})
        shifts = f.pop("shifts", None)
        if shifts is not None:
            if not shifts or not all(isinstance(s, list) and len(s) == 2 and all(
                    isinstance(x, int) and not isinstance(x, bool) for x in s) and s[0] >= 0 for s in shifts) \
                    or [s[0] for s in shifts] != sorted({s[0] for s in shifts}) \
                    or f["boundary"] != shifts[0][0] or f["delta"] != sum(s[1] for s in shifts):
                raise RecordError("journal record 'offsets': malformed shifts")
        for side in ("old", "new"):
            v = f[side]
            if not (len(v) == 2 and isinstance(v[0], list) and isinstance(v[1], int) and all(
                    isinstance(t, list) and len(t) == 3 and isinstance(t[1], int) and isinstance(t[2], int)
                    for t in v[0])):
                raise RecordError("journal record 'offsets': malformed offsets")
        return cls(f["db"], f["thread_id"], f["boundary"], f["delta"], f["old"], f["new"], shifts=shifts)

    @classmethod
    def plan_shifts(cls, db_path: str, thread_id: str, offsets: Tuple[list, int],
                    shifts: List[List[int]]) -> "OffsetShift":
        """Offsets moved by the CUMULATIVE growth of every grown line before them."""
        turns, proj = offsets
        new_turns = [[t, _shift(o, shifts), _shift(e, shifts)] for t, o, e in turns]
        return cls(db_path, thread_id, shifts[0][0], sum(d for _, d in shifts), [[list(t) for t in turns], proj],
                   [new_turns, _shift(proj, shifts) if proj >= 0 else proj], shifts=[list(s) for s in shifts])

    @classmethod
    def following(cls, db_path: str, rewrite: Line1Rewrite, offsets: Tuple[list, int]) -> "OffsetShift":
        """The shift a growing `rewrite` needs; filled in when the rewrite is prepared."""
        turns, proj = offsets
        old = [[list(t) for t in turns], proj]
        return cls(db_path, rewrite.thread_id, 0, 0, old, old, after=rewrite)

    @classmethod
    def plan(cls, db_path: str, thread_id: str, offsets: Tuple[list, int], boundary: int, delta: int) -> "OffsetShift":
        turns, proj = offsets
        new_turns = [[t, shifted(o, boundary, delta), shifted(e, boundary, delta)] for t, o, e in turns]
        return cls(db_path, thread_id, boundary, delta, [[list(t) for t in turns], proj],
                   [new_turns, shifted(proj, boundary, delta) if proj >= 0 else proj])

    def db(self) -> Optional[str]:
        return self.db_path

    def columns(self) -> Tuple[str, List[str], Optional[Sequence[str]]]:
        return "thread_turns", list(UPDATE_COLUMNS["thread_turns"]), UPDATE_COLUMNS["thread_turns"]

    def apply_db(self, conn: sqlite3.Connection) -> int:
        assert self.thread_id is not None
        set_offsets(conn, self.thread_id, [tuple(t) for t in self.new[0]], self.new[1])
        return 1

    def state_db(self, conn: sqlite3.Connection) -> str:
        assert self.thread_id is not None
        turns, proj = read_offsets(conn, self.thread_id)
        cur = [[list(t) for t in turns], proj]
        if cur == self.old:
            return OLD
        return NEW if cur[0][:len(self.new[0])] == self.new[0] else CHANGED

    def undo_db(self, conn: sqlite3.Connection) -> int:
        assert self.thread_id is not None
        shifts = self.shift_list()
        turns, proj = read_offsets(conn, self.thread_id)
        set_offsets(conn, self.thread_id,
                    [(t, _unshift(o, shifts), _unshift(x, shifts)) for t, o, x in turns],
                    _unshift(proj, shifts) if proj >= 0 else proj)
        return 1


def group_of(ops: Sequence[Op]):  # type: ignore[no-untyped-def]
    """Batch key of an op: the first thread of its group (Op.together: a fork and its parent), so
    a group is never split across batches; locks are still taken per thread."""
    root: Dict[str, str] = {}

    def find(t: str) -> str:
        while root.get(t, t) != t:
            t = root[t]
        return t
    for o in ops:
        for n in o.together():
            if o.thread_id and find(n) != find(o.thread_id):  # in any order, chains and all (no cycle)
                root[find(o.thread_id)] = find(n)
    return lambda o: find(o.thread_id) if o.thread_id else None
