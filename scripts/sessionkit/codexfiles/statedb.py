"""Open Codex's state DB without changing it, and read `threads` whatever its schema age."""
from __future__ import annotations

import os
import sqlite3
import stat
import sys
from functools import lru_cache
from pathlib import Path
from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional
from urllib.parse import quote

from sessionkit import UserError
from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.paths import safe_str

# The columns every schema Codex ever wrote; iter_threads reads the newer ones where they exist.
REQUIRED_COLUMNS = ("id", "rollout_path", "archived", "model_provider", "cwd", "source")
BUSY_TIMEOUT_S = 5.0


class ThreadRow:
    """One `threads` row as far as session visibility goes. Slotted: one per thread."""

    __slots__ = ("id", "rollout_path", "archived", "model_provider", "cwd", "source", "created_at",
                 "updated_at", "archived_at", "preview", "history_mode", "updated_at_ms", "source_kind", "key")

    def __init__(self, id: str, rollout_path: str, archived: bool, model_provider: str, cwd: str,
                 source: str, created_at: Optional[int] = None, updated_at: Optional[int] = None,
                 archived_at: Optional[int] = None, preview: Optional[str] = None,
                 history_mode: Optional[str] = None, updated_at_ms: Optional[int] = None) -> None:
        self.id = id
        self.rollout_path = rollout_path
        self.archived = archived
        self.model_provider = sys.intern(model_provider)
        self.cwd = sys.intern(cwd)
        self.source = sys.intern(source)
        self.created_at = created_at
        self.updated_at = updated_at
        self.archived_at = archived_at
        self.preview = preview  # None: the schema has no preview column
        self.history_mode = history_mode
        self.updated_at_ms = updated_at_ms
        self.source_kind = _source_kind(self.source)
        self.key = norm_id(id)  # compared in this form; `id` as stored finds the row


@lru_cache(maxsize=256)
def _source_kind(source: str) -> str:
    """`cli`, `vscode`, `exec`, ...; an object such as {"subagent": ...} gives its key."""
    src = source.strip()
    if src.startswith("{"):
        key = src[1:].split(":", 1)[0].strip().strip('"')
        return sys.intern(key or src)
    return sys.intern(src.strip('"'))


def sqlite_uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(os.fsencode(str(path)))}?{query}"  # bytes: a path that is not UTF-8 too (edges)


def _lenient_text(raw: bytes) -> str:
    """TEXT that is not valid UTF-8 still reads (as surrogate escapes) instead of failing the run."""
    return raw.decode("utf-8", "surrogateescape")


def open_readonly(path: Path) -> sqlite3.Connection:
    """Read-only and side-effect free, the WAL included; creates no file anywhere.

    No WAL (or an empty one): `immutable=1`. A WAL and its `-shm`: `mode=ro` with `readonly_shm=1`,
    sharing the wal-index with a running Codex but never writing it: a stale `-shm` (a Codex
    killed after a commit, or the one 0.171 leaves at a normal exit) would otherwise be rebuilt,
    its bytes and mtime changed; SQLite reads the WAL into its own heap instead. A WAL with no `-shm` (a writer killed before a checkpoint):
    `mode=ro` would create the `-shm` (and fails where the folder is read-only), so the WAL is
    read into this connection's own heap instead: exclusive locking mode never opens shared
    memory, and the `unix-none` VFS lets a read-only file take that lock; nobody else has the
    DB open in WAL mode, or the `-shm` would exist. A hot rollback journal (no WAL): `mode=ro`,
    never `immutable=1`, which would read the half-written pages of a killed writer.
    """
    if not path.is_file():
        raise UserError(f"no state DB at {path}")
    try:
        wal_size = os.stat(str(path) + "-wal").st_size
    except OSError:
        wal_size = -1
    has_shm = os.path.exists(str(path) + "-shm")
    if hot_journal(path):  # immutable would read pages a killed writer left half-written
        uri, heap_wal = sqlite_uri(path, mode="ro"), False
    elif wal_size < 0 or (wal_size == 0 and not has_shm):
        uri, heap_wal = sqlite_uri(path, mode="ro", immutable="1"), False
    elif has_shm:
        uri, heap_wal = sqlite_uri(path, mode="ro", readonly_shm="1"), False
    else:
        uri, heap_wal = sqlite_uri(path, mode="ro", vfs="unix-none"), True
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
        conn.text_factory = _lenient_text
        if heap_wal:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        if hot_journal(path) and "readonly" in str(exc):
            raise UserError(f"{path} holds a transaction a stopped writer left unfinished ({path}-journal); "
                            f"SQLite puts the DB back the next time a writer opens it: start Codex once, or "
                            f"`rollback.py --latest --apply` if it was one of these scripts; nothing was changed") from None
        raise UserError(f"{path} is not a readable SQLite database ({exc})") from None
    return conn


def hot_journal(path: Path) -> bool:
    """A rollback journal with content beside a DB in rollback-journal mode: a writer is
    mid-transaction, or was killed in one. In WAL mode (a `-wal` beside it) a `-journal` is a stale
    leftover SQLite never reads; a symlink or folder of that name is not a journal either."""
    if os.path.lexists(str(path) + "-wal"):
        return False
    try:
        st = os.lstat(str(path) + "-journal")
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


def settle_hot_journal(path: Path) -> bool:
    """Let SQLite roll back what a killed writer left (a hot rollback journal) by opening the DB
    for writing, as Codex would on start: the DB is then its last committed state. Run only by a
    writer, under the home lock, with no Codex running."""
    if not hot_journal(path):
        return False
    conn = open_readwrite(path)
    conn.close()
    return True


def unbindable(values: Iterable[object]) -> Optional[str]:
    """Why one of these values cannot be written to SQLite as it is, or None: the plan skips such
    an item with this reason, so the apply never meets it."""
    for v in values:
        if v is None or isinstance(v, (float, bytes)):
            continue
        if isinstance(v, int):
            if not -(1 << 63) <= v < (1 << 63):
                return "a number too large for SQLite"
            continue
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return f"text that is not valid UTF-8 ({safe_str(v)[:80]!r})"
            continue
        return f"a value of type {type(v).__name__}"
    return None


DB_COMPANIONS = ("", "-wal", "-shm", "-journal")  # the files SQLite writes for one DB


def shared_inode(path: Path) -> Optional[str]:
    """Why writing this DB would change data somewhere else too, or None: the DB or its `-wal`,
    `-shm` or `-journal` has a second hard link (a home copied with `cp -al` or rsnapshot)."""
    real = os.path.realpath(str(path))  # SQLite writes the DB a symlink leads to, its companions beside it
    for name in dict.fromkeys(base + suffix for suffix in DB_COMPANIONS for base in (str(path), real)):
        try:
            st = os.stat(name)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            return (f"refusing: {safe_str(name)} has {st.st_nlink} hard links (a copy made with cp -al or "
                    f"rsnapshot?): writing it would change the other copies too. Nothing was changed; with "
                    f"Codex closed, give each file of that DB its own copy (copy it, then move the copy over it) "
                    f"and run again")
    return None


def open_readwrite(path: Path) -> sqlite3.Connection:
    """A writer connection with explicit transactions and Codex's busy timeout; never one through a
    shared inode (the callers check before any change; this is the last guard)."""
    shared = shared_inode(path)
    if shared:
        raise UserError(shared)
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = %d" % int(BUSY_TIMEOUT_S * 1000))
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path} is not a writable SQLite database ({exc})") from None
    return conn


def thread_columns(conn: sqlite3.Connection, db_path: Path) -> List[str]:
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(threads)")]
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{db_path}: cannot read the threads table ({exc})") from None
    if not cols:
        raise UserError(f"{db_path} has no threads table: is it a Codex state DB?")
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise UserError(f"{db_path}: the threads table lacks column(s) {', '.join(missing)}")
    return cols


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def iter_threads(conn: sqlite3.Connection, db_path: Path) -> Iterator[ThreadRow]:
    """One SELECT over every row, reading only the columns this schema has (NULL for the others),
    in ThreadRow's order: no per-row dict on a home of 100,000 threads."""
    cols = thread_columns(conn, db_path)
    has = set(cols)
    preview = "preview" if "preview" in has else "first_user_message" if "first_user_message" in has else None
    wanted = (*REQUIRED_COLUMNS, "created_at", "updated_at", "archived_at", preview, "history_mode", "updated_at_ms")
    sql = "SELECT " + ", ".join(f'"{c}"' if c in has else "NULL" for c in wanted) + " FROM threads"
    text = _text
    try:
        for tid, path, archived, provider, cwd, source, created, updated, archived_at, prev, mode, ms in _fetch_all(conn, sql):
            yield ThreadRow(
                tid if tid.__class__ is str else text(tid), path if path.__class__ is str else text(path),
                bool(archived), provider if provider.__class__ is str else text(provider),
                cwd if cwd.__class__ is str else text(cwd), source if source.__class__ is str else text(source),
                created, updated, archived_at,
                None if preview is None else prev if prev.__class__ is str else text(prev),
                None if mode is None else mode if mode.__class__ is str else text(mode), ms)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{db_path}: reading threads failed ({exc})") from None


def _fetch_all(conn: sqlite3.Connection, sql: str) -> list:
    """Every row, decoded by SQLite itself (fast); only when some TEXT is not UTF-8 read again with
    the lenient decoder (surrogate escapes), so one bad value never stops the run."""
    lenient = conn.text_factory
    conn.text_factory = str
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        conn.text_factory = lenient
        return conn.execute(sql).fetchall()
    finally:
        conn.text_factory = lenient


def load_threads(db_path: Path) -> List[ThreadRow]:
    conn = open_readonly(db_path)
    try:
        return list(iter_threads(conn, db_path))
    finally:
        conn.close()


@contextmanager
def transaction(db: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE .. COMMIT) on a DB; rolled back on any error."""
    conn = open_readwrite(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.DatabaseError):
            raise UserError(f"{db}: {exc}") from None
        raise
    finally:
        conn.close()
