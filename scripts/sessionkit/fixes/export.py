"""Export chosen threads of a Codex home as a home subset in one archive (`.tar.gz` or `.zip`) that
`session_import.py --from` reads: each thread whole (files, rows in every DB, names), a manifest,
and nothing else. The home is only read, as the audit reads it (no byte, mtime, -wal or -shm)."""
from __future__ import annotations

import io
import json
import os
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, IO, Iterable, List, Optional, Sequence, Set, Tuple

from sessionkit.codexfiles.reasons import SKIP_NO_FILE, SKIP_OUTSIDE, SKIP_UNREADABLE  # noqa: F401
from sessionkit.codexfiles.ids import norm_id
from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.fixes.archive_src import HISTORY_DB, STATE_DB
from sessionkit.codexfiles.home import CodexHome
from sessionkit.codexfiles.paths import is_inside, open_regular, safe_str
from sessionkit.codexfiles.record import Record
from sessionkit.codexfiles.rollout_index import ROLLOUT_NAME, parse_session_meta
from sessionkit.codexfiles.thread_files import history_key, is_segment
from sessionkit.codexfiles.line1 import read_line1
from sessionkit.codexfiles.statedb import open_readonly
from sessionkit.codexfiles.thread_tables import CARRIED
from sessionkit.codexfiles.zstd import ZST

FORMAT = "codex-session-export"
FORMAT_VERSION = 1
MANIFEST = "export-manifest.json"
GOALS_DB = "goals_1.sqlite"
QUEUE_DB = "queue_1.sqlite"
EXPORT_DBS = (STATE_DB, HISTORY_DB, GOALS_DB, QUEUE_DB)  # never logs_2 or memories_1
ARCHIVED_CHOICES = ("exclude", "include", "only")
SUFFIXES = (".tar.gz", ".tgz", ".zip")
_CHUNK = 1024 * 1024
_IN_CHUNK = 500  # SQLite's bound-parameter limit is 999 on old builds
COMPRESS_LEVEL = 1  # gzip -1: rollouts (repeated instructions) still shrink ~20x, several times faster than -9

# Why a thread is in the export (or not).
WHY_CHOSEN = "chosen"
WHY_FORK_PARENT = "fork parent of"
WHY_SUBAGENT = "sub-agent of"
WHY_ATTACHED = "attached parent of"
# SKIP_NO_FILE, SKIP_OUTSIDE, SKIP_UNREADABLE: codexfiles/reasons.py
NOTE_PARTIAL = "being written: exported up to its last complete line"


class Picked:
    """One thread in the export. Slotted: `--all` on a big home picks 100,000."""

    __slots__ = ("id", "rollout_path", "archived", "cwd", "created_at", "updated_at", "title", "name",
                 "project_id", "section_id", "attached_parent", "cli_version", "why", "files", "notes")

    def __init__(self, row: Dict[str, Any], why: str) -> None:
        self.id = norm_id(str(row["id"]))
        self.rollout_path = _text(row.get("rollout_path"))
        self.archived = bool(row.get("archived"))
        self.cwd = _text(row.get("cwd"))
        self.created_at = row.get("created_at")
        self.updated_at = row.get("updated_at")
        self.title = _text(row.get("title"))
        self.name = _text(row.get("name")) or None
        self.project_id = row.get("project_id") or None
        self.section_id = row.get("thread_section_id") or None
        self.attached_parent = norm_id((_text(row.get("attached_thread_parent_id")) or "")) or None
        self.cli_version = _text(row.get("cli_version"))
        self.why = why
        self.files: List["Member"] = []
        self.notes: List[str] = []

    @property
    def size(self) -> int:
        return sum(m.size for m in self.files)


class Member:
    """One archive member: a file of the home (up to `size` bytes) or a scratch file we built."""

    __slots__ = ("arcname", "src", "size", "mtime")

    def __init__(self, arcname: str, src: str, size: int, mtime: float) -> None:
        self.arcname = arcname
        self.src = src
        self.size = size
        self.mtime = mtime


class Selection(Record):
    __slots__ = ("threads", "folder", "since", "until", "archived", "all")
    threads: Sequence[str]
    folder: Optional[str]
    since: Optional[float]  # epoch seconds: last activity at or after
    until: Optional[float]  # epoch seconds: started before
    archived: str
    all: bool

    def __init__(self, threads: Sequence[str] = (), folder: Optional[str] = None, since: Optional[float] = None,
                 until: Optional[float] = None, archived: str = "exclude", all: bool = False) -> None:  # noqa: A002
        self.threads, self.folder, self.since, self.until = threads, folder, since, until
        self.archived, self.all = archived, all


class ExportPlan(Record):
    __slots__ = ("home", "picked", "skipped", "names", "index_lines", "provider", "reader")
    home: CodexHome
    picked: List[Picked]
    skipped: List[Tuple[str, str, str]]  # (id, label, reason)
    names: Dict[str, str]  # id -> session_index name (last one)
    index_lines: List[bytes]  # session_index.jsonl lines of picked ids
    provider: Optional[str]
    reader: DbReader

    def __init__(self, home: CodexHome, picked: Optional[List[Picked]] = None,
                 skipped: Optional[List[Tuple[str, str, str]]] = None, names: Optional[Dict[str, str]] = None,
                 index_lines: Optional[List[bytes]] = None, provider: Optional[str] = None,
                 reader: Optional[DbReader] = None) -> None:
        self.home = home
        self.picked = [] if picked is None else picked
        self.skipped = [] if skipped is None else skipped
        self.names = {} if names is None else names
        self.index_lines = [] if index_lines is None else index_lines
        self.provider = provider
        self.reader = DbReader() if reader is None else reader

    @property
    def ids(self) -> List[str]:
        return [p.id for p in self.picked]

    @property
    def file_bytes(self) -> int:
        return sum(p.size for p in self.picked)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    return str(v)


class _RawText(bytes):
    """A TEXT value that is not UTF-8: its bytes, written back as TEXT (CAST), never as a BLOB."""


def _keep_text(raw: bytes) -> Any:
    """TEXT read for copying: str when it is UTF-8, else its bytes as _RawText (copied byte for byte
    and still TEXT, so an import sees it as the source's own DB shows it)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _RawText(raw)


def parse_time(text: str, end_of_day: bool = False) -> float:
    """`YYYY-MM-DD` (local; with end_of_day the next midnight) or an ISO date-time, as epoch seconds."""
    raw = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            day = datetime.strptime(raw, "%Y-%m-%d")
            stamp = day.timestamp()
            return stamp + 86400 if end_of_day else stamp
        value = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
        return value.timestamp() if value.tzinfo else value.astimezone().timestamp()
    except (ValueError, OverflowError, OSError):  # year 1 or 9999 in local time overflows too
        raise UserError(f"{safe_str(text)!r} is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM) "
                        f"this machine can count from 1970") from None


def check_target(to: str, home: CodexHome) -> Path:
    """--to: a new .tar.gz/.tgz/.zip in an existing folder outside the home; never an existing file."""
    path = Path(os.path.abspath(os.path.expanduser(to)))
    if not path.name.lower().endswith(SUFFIXES):
        raise UserError(f"--to {safe_str(to)}: name it .tar.gz, .tgz or .zip")
    if os.path.lexists(str(path)):
        raise UserError(f"--to {safe_str(path)} exists; refusing to overwrite it (name a new file)")
    if not path.parent.is_dir():
        raise UserError(f"--to {safe_str(path)}: no folder {safe_str(path.parent)}")
    for root in {str(home.root), str(home.state_db.path.parent)}:
        if is_inside(os.path.realpath(str(path.parent)), os.path.realpath(root)):
            raise UserError(f"--to {safe_str(path)} is inside the Codex home; the export never writes there "
                            f"(pick a folder outside {safe_str(root)})")
    return path


class DbReader:
    """Opens the home's DBs without changing a byte of them. A DB beside a `-shm` (a Codex that has
    it open) is read through a private copy of the DB and its WAL, taken when neither changes while
    copied: a reader sharing the wal-index would write its read marks into the `-shm`. Any other DB
    is opened as the audit opens it (open_readonly). The copies live in a private scratch folder."""

    TRIES = 5

    def __init__(self) -> None:
        self.scratch: Optional[Path] = None
        self.copies: Dict[str, Path] = {}

    def open(self, db: Path) -> sqlite3.Connection:
        if not os.path.exists(str(db) + "-shm"):
            return open_readonly(db)
        copy = self.copies.get(str(db))
        if copy is None:
            try:
                copy = self._copy(db)
            except OSError:  # no private temp folder (Codex's read-only sandbox): read as the audit does
                return open_readonly(db)
            self.copies[str(db)] = copy
        return open_readonly(copy)

    def _copy(self, db: Path) -> Path:
        if self.scratch is None:
            import tempfile  # only when a DB is copied to be read
            self.scratch = Path(tempfile.mkdtemp(prefix="codex-export-read-"))
        for attempt in range(self.TRIES):
            dest = self.scratch / f"{len(self.copies)}.{attempt}.{db.name}"
            before = _stamps(db)
            for suffix in ("", "-wal"):
                if os.path.exists(str(db) + suffix):
                    _copy_file(str(db) + suffix, str(dest) + suffix)
            if _stamps(db) == before:
                return dest
        raise UserError(f"{db} kept changing while it was copied ({self.TRIES} tries); run the export again "
                        f"when Codex is idle")

    def close(self) -> None:
        if self.scratch is not None:
            for child in self.scratch.iterdir():
                child.unlink()
            self.scratch.rmdir()
            self.scratch = None


def _stamps(db: Path) -> Tuple[Tuple[int, int], ...]:
    out = []
    for suffix in ("", "-wal"):
        try:
            st = os.stat(str(db) + suffix)
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((-1, 0))
    return tuple(out)


def _copy_file(src: str, dst: str) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
    try:
        with open_regular(src, buffering=0) as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                os.write(fd, chunk)
    finally:
        os.close(fd)


# ---- selection -------------------------------------------------------------------------------

def _read_index(root: Path) -> Tuple[Dict[str, str], Dict[str, List[bytes]]]:
    """session_index.jsonl: the last name per id, and every line of each id (copied as they are)."""
    names: Dict[str, str] = {}
    lines: Dict[str, List[bytes]] = {}
    try:
        with open_regular(root / "session_index.jsonl") as fh:
            data = fh.read()
    except OSError:
        return names, lines
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            key = norm_id(rec["id"])
            lines.setdefault(key, []).append(raw)
            if isinstance(rec.get("thread_name"), str):
                names[key] = rec["thread_name"]
    return names, lines


def _columns(conn: sqlite3.Connection, table: str) -> List[str]:
    return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]


_ROW_COLS = ("id", "rollout_path", "archived", "cwd", "created_at", "updated_at", "title", "name", "project_id",
             "thread_section_id", "attached_thread_parent_id", "cli_version")


def _select(conn: sqlite3.Connection, cols: Sequence[str], where: str, params: Sequence[Any]) -> List[Dict[str, Any]]:
    have = set(cols)
    wanted = [c for c in _ROW_COLS if c in have]
    sql = "SELECT " + ", ".join(f'"{c}"' for c in wanted) + " FROM threads" + (f" WHERE {where}" if where else "")
    return [dict(zip(wanted, r)) for r in conn.execute(sql, list(params))]


def _rows_by_id(conn: sqlite3.Connection, cols: Sequence[str], ids: Iterable[str]) -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []
    ids = list(ids)
    for n in range(0, len(ids), _IN_CHUNK):
        part = ids[n:n + _IN_CHUNK]
        out += _select(conn, cols, "id IN (" + ",".join("?" * len(part)) + ")", part)
    return out


def _resolve_refs(conn: sqlite3.Connection, cols: Sequence[str], refs: Sequence[str],
                  names: Dict[str, str]) -> List[str]:
    """Each --thread as a thread id: an id, else a name (threads.name, else session_index.jsonl)."""
    out: List[str] = []
    for ref in refs:
        key = norm_id(ref.strip())
        if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", key):
            if not _rows_by_id(conn, cols, [key]):
                raise UserError(f"--thread {safe_str(ref)}: no thread with that id in this home's index")
            out.append(key)
            continue
        hits: Set[str] = set()
        if "name" in cols:
            hits |= {norm_id(str(r[0])) for r in conn.execute("SELECT id FROM threads WHERE name = ?", (ref,))}
        hits |= {tid for tid, name in names.items() if name == ref}
        if hits:
            hits = {norm_id(r["id"]) for r in _rows_by_id(conn, cols, hits)}
        if not hits:
            raise UserError(f"--thread {safe_str(ref)!r}: no thread has that id or name")
        if len(hits) > 1:
            raise UserError(f"--thread {safe_str(ref)!r}: {len(hits)} threads have that name "
                            f"({', '.join(sorted(hits))}); pass the id")
        out += sorted(hits)
    return out


def _filter_sql(sel: Selection, cols: Sequence[str]) -> Tuple[str, List[Any]]:
    parts: List[str] = []
    params: List[Any] = []
    if sel.archived == "exclude":
        parts.append("archived = 0")
    elif sel.archived == "only":
        parts.append("archived != 0")
    if sel.folder is not None:
        folder = sel.folder.rstrip("/") or "/"
        parts.append("(cwd = ? OR substr(cwd, 1, ?) = ?)")
        prefix = folder if folder.endswith("/") else folder + "/"
        params += [folder, len(prefix), prefix]
    if sel.since is not None:
        parts.append("updated_at >= ?")
        params.append(int(sel.since))
    if sel.until is not None:
        parts.append("created_at < ?")
        params.append(int(sel.until))
    return " AND ".join(parts), params


def has_filter(sel: Selection) -> bool:
    """Anything but named threads: a filter over the whole index (named threads always come)."""
    return bool(sel.all or sel.folder is not None or sel.since is not None or sel.until is not None
                or sel.archived == "only")


def plan_export(home: CodexHome, sel: Selection) -> ExportPlan:
    """The threads to export, with what comes along (fork parents, sub-agents) and their files.
    Selected in SQL; per-thread work only for the picked ones."""
    plan = ExportPlan(home)
    try:
        return _plan_export(plan, home, sel)
    except BaseException:  # a bad --thread, a DB that keeps changing, Ctrl-C: no private copy left behind
        plan.reader.close()
        raise


def _plan_export(plan: ExportPlan, home: CodexHome, sel: Selection) -> ExportPlan:
    names, index_lines = _read_index(home.root)
    conn = plan.reader.open(home.state_db.path)
    try:
        cols = _columns(conn, "threads")
        if not cols or "id" not in cols:
            raise UserError(f"{home.state_db.path} has no threads table: is it a Codex state DB?")
        chosen: Dict[str, Picked] = {}
        named = _resolve_refs(conn, cols, list(sel.threads), names) if sel.threads else []
        for row in _rows_by_id(conn, cols, named):
            chosen.setdefault(norm_id(str(row["id"])), Picked(row, WHY_CHOSEN))
        if has_filter(sel):
            where, params = _filter_sql(sel, cols)
            for row in _select(conn, cols, where, params):
                key = norm_id(str(row["id"]))
                if key not in chosen:
                    chosen[key] = Picked(row, WHY_CHOSEN)
        _add_relatives(conn, cols, home, chosen)
        plan.picked = sorted(chosen.values(), key=lambda p: (p.created_at or 0, p.id))
    finally:
        conn.close()
    listing: Dict[str, Dict[str, List[str]]] = {}
    kept: List[Picked] = []
    for p in plan.picked:
        p.name = p.name or names.get(p.id)
        reason = _find_files(home, p, listing)
        if reason:
            plan.skipped.append((p.id, label(p), reason))
        else:
            kept.append(p)
    plan.picked = kept
    plan.names = {p.id: names[p.id] for p in kept if p.id in names}
    plan.index_lines = [line for p in kept for line in index_lines.get(p.id, [])]
    plan.provider = home.config.model_provider if home.config.provider_source != "default" else None
    return plan


def _add_relatives(conn: sqlite3.Connection, cols: Sequence[str], home: CodexHome, chosen: Dict[str, Picked]) -> None:
    """Fork parents (line 1's forked_from_id, attached_thread_parent_id) and sub-agents (spawn edges),
    until nothing more comes along: a thread is exported whole."""
    has_edges = bool(conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='thread_spawn_edges'")
                     .fetchone())
    todo = list(chosen.values())
    while todo:
        wanted: Dict[str, str] = {}
        for p in todo:
            parent = _fork_parent(p)
            for pid, why in ((parent, WHY_FORK_PARENT), (p.attached_parent, WHY_ATTACHED)):
                if pid and pid not in chosen:
                    wanted.setdefault(pid, f"{why} {p.id}")
        if has_edges:
            ids = [p.id for p in todo]
            for n in range(0, len(ids), _IN_CHUNK):
                part = ids[n:n + _IN_CHUNK]
                for parent, child in conn.execute(
                        "SELECT lower(parent_thread_id), lower(child_thread_id) FROM thread_spawn_edges "
                        "WHERE parent_thread_id IN (" + ",".join("?" * len(part)) + ")", part):
                    if child and child not in chosen:
                        wanted.setdefault(child, f"{WHY_SUBAGENT} {parent}")
        todo = []
        for row in _rows_by_id(conn, cols, wanted):
            key = norm_id(str(row["id"]))
            if key not in chosen:
                chosen[key] = Picked(row, wanted[key])
                todo.append(chosen[key])


def _fork_parent(p: Picked) -> Optional[str]:
    line, _err = read_line1(Path(p.rollout_path)) if p.rollout_path else (None, None)
    if line is None:
        return None
    return parse_session_meta(line).parent_key  # decoded whole: forked_from_id may follow base_instructions


def _list(folder: str, listing: Dict[str, Dict[str, List[str]]]) -> Dict[str, List[str]]:
    """A folder's rollout names by thread id, listed once per run (archived_sessions/ is flat)."""
    if folder not in listing:
        by_thread: Dict[str, List[str]] = {}
        try:
            for e in os.scandir(folder):
                m = ROLLOUT_NAME.match(e.name)
                if m and e.is_file(follow_symlinks=False):  # a compressed `.zst` too (exported as it is)
                    by_thread.setdefault(norm_id(m.group("thread")), []).append(e.name)
        except OSError:
            pass
        listing[folder] = by_thread
    return listing[folder]


def _find_files(home: CodexHome, p: Picked, listing: Dict[str, Dict[str, List[str]]]) -> Optional[str]:
    """Every rollout file of a thread (its row's file and a reverted thread's newer segments), each
    to its last complete line; None, or why the thread cannot be exported."""
    primary = p.rollout_path
    sessions, archived = str(home.sessions_dir), str(home.archived_dir)
    if not primary or not (is_inside(primary, sessions) or is_inside(primary, archived)):
        return SKIP_OUTSIDE
    if not os.path.lexists(primary) and os.path.isfile(primary + ZST):
        primary += ZST  # compressed by Codex (the row keeps the `.jsonl` name): exported as it is
    if not os.path.isfile(primary) or os.path.islink(primary):
        return SKIP_NO_FILE
    folders = [os.path.dirname(primary)] + ([archived] if p.archived else [])
    for stamp in (p.created_at, p.updated_at):
        if isinstance(stamp, int) and stamp > 0:
            try:
                folders.append(os.path.join(sessions, datetime.fromtimestamp(stamp).strftime("%Y/%m/%d")))
            except (OverflowError, OSError, ValueError):
                pass
    paths = {primary}
    for folder in dict.fromkeys(folders):
        for name in _list(folder, listing).get(p.id, ()):
            paths.add(os.path.join(folder, name))
    root = str(home.root)
    for path in sorted(paths):
        if path.endswith(ZST) and path[:-len(ZST)] in paths:
            continue  # Codex is decompressing it (both exist for a moment): the `.jsonl` is the thread
        try:
            size, mtime, whole = whole_length(path) if path.endswith(ZST) else complete_length(path)
        except OSError:
            return SKIP_UNREADABLE
        if not whole:
            p.notes.append(f"{NOTE_PARTIAL} ({os.path.basename(path)}: {size} bytes exported)")
        p.files.append(Member(os.path.relpath(path, root).replace(os.sep, "/"), path, size, mtime))
    return None


def whole_length(path: str) -> Tuple[int, float, bool]:
    """A compressed rollout is written whole by Codex (never appended to): all of its bytes."""
    with open_regular(path, buffering=0) as fh:
        st = os.fstat(fh.fileno())
        return st.st_size, st.st_mtime, True


def complete_length(path: str) -> Tuple[int, float, bool]:
    """(bytes up to and including the last newline, mtime, whether that is the whole file): a
    line Codex is writing now is left out, never cut in half."""
    with open_regular(path, buffering=0) as fh:
        st = os.fstat(fh.fileno())
        size = st.st_size
        end = size
        while end > 0:
            start = max(0, end - 65536)
            fh.seek(start)
            chunk = fh.read(end - start)
            at = chunk.rfind(b"\n")
            if at >= 0:
                cut = start + at + 1
                return cut, st.st_mtime, cut == size
            end = start
        return 0, st.st_mtime, size == 0


def label(p: Picked) -> str:
    """`"name or title", date, folder`, with control characters escaped."""
    from sessionkit.ui.labels import readable_time, short_title
    from sessionkit.ui.labels import shown
    return f"{shown(short_title(p.name or p.title))}, {readable_time(p.created_at)}, {shown(p.cwd) or '(no folder)'}"


# ---- DB subsets ------------------------------------------------------------------------------

def _rule(db: str, table: str, cols: Sequence[str], keys: Dict[str, Set[str]]) -> Optional[Tuple[str, Set[str], str]]:
    """Which rows of a table come along: (column, values, extra condition) or None (schema only)."""
    have = set(cols)
    if table == "_sqlx_migrations":
        return ("", set(), "")
    for carried_db, carried, column, ids in CARRIED:  # what an import carries, by the column it reads
        if (carried_db, carried) == (db, table) and column in have:
            return (column, keys[ids], "")
    if "thread_id" in have:
        return ("thread_id", keys["history"] if db == HISTORY_DB else keys["threads"], "")
    if "project_id" in have and table.startswith("project"):
        return ("project_id", keys["projects"], "")
    return None


def subset_db(src: Path, dest: Path, keys: Dict[str, Set[str]], reader: Optional[DbReader] = None) -> Dict[str, int]:
    """A new DB at `dest` with src's schema and only the rows of the exported threads; src is read
    through DbReader (no -wal/-shm created or changed). Rows copied per table."""
    conn = (reader or DbReader()).open(src)
    conn.text_factory = _keep_text
    fd = os.open(str(dest), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
    os.close(fd)
    out = sqlite3.connect(str(dest), isolation_level=None)
    counts: Dict[str, int] = {}
    try:
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                               "AND name NOT LIKE 'sqlite_%' ORDER BY rowid").fetchall()
        out.execute("BEGIN")
        made: List[str] = []
        for kind, name, _tbl, sql in objects:
            if kind != "table":
                continue
            try:
                out.execute(sql)
                made.append(name)
            except sqlite3.OperationalError:  # a virtual table's shadow table, made with it
                continue
        virtual = {n for k, n, _t, s in objects if k == "table" and str(s).upper().startswith("CREATE VIRTUAL")}
        for name in made:
            if name in virtual or any(name.startswith(v + "_") for v in virtual):
                continue
            cols = _columns(conn, name)
            rule = _rule(src.name, name, cols, keys)
            if rule is None:
                continue
            counts[name] = _copy_rows(conn, out, name, cols, rule)
        for kind, name, _tbl, sql in objects:
            if kind in ("index", "trigger", "view"):
                out.execute(sql)
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        out.execute(f"PRAGMA user_version = {int(user_version)}")
        out.execute("COMMIT")
    finally:
        out.close()
        conn.close()
    return counts


def _insert_rows(out: sqlite3.Connection, table: str, cols: Sequence[str], rows: List[Any]) -> None:
    """Rows as they are, each value of the storage class it had: a row with TEXT that is not UTF-8
    is written alone with that value CAST back to TEXT (bound as bytes it would become a BLOB)."""
    names = ", ".join(f'"{c}"' for c in cols)
    out.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * len(cols))})',
                    [r for r in rows if not any(isinstance(v, _RawText) for v in r)])
    for r in rows:
        if any(isinstance(v, _RawText) for v in r):
            marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, _RawText) else "?" for v in r)
            out.execute(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', [bytes(v) if isinstance(v, _RawText)
                                                                               else v for v in r])


def _copy_rows(conn: sqlite3.Connection, out: sqlite3.Connection, table: str, cols: Sequence[str],
               rule: Tuple[str, Set[str], str]) -> int:
    column, values, both = rule
    names = ", ".join(f'"{c}"' for c in cols)
    if not column:
        rows = conn.execute(f'SELECT {names} FROM "{table}"').fetchall()
        _insert_rows(out, table, cols, rows)
        return len(rows)
    n = 0
    ids = sorted(values)
    for at in range(0, len(ids), _IN_CHUNK):
        part = ids[at:at + _IN_CHUNK]
        marks = ",".join("?" * len(part))
        sql = f'SELECT {names} FROM "{table}" WHERE "{column}" IN ({marks})'
        rows = conn.execute(sql, part).fetchall()
        if both:
            at_col = cols.index(both)
            rows = [r for r in rows if isinstance(r[at_col], str) and norm_id(r[at_col]) in values]
        _insert_rows(out, table, cols, rows)
        n += len(rows)
    return n


def db_keys(plan: ExportPlan) -> Dict[str, Set[str]]:
    ids = set(plan.ids)
    history = set(ids)
    for p in plan.picked:
        for m in p.files:
            name = os.path.basename(m.arcname)
            if is_segment(name):
                history.add(history_key(name))  # type: ignore[arg-type]
    return {"threads": ids, "history": history,
            "projects": {str(p.project_id) for p in plan.picked if p.project_id},
            "sections": {str(p.section_id) for p in plan.picked if p.section_id}}


# ---- writing the archive ---------------------------------------------------------------------

class _Hashing(io.RawIOBase):
    """Reads exactly `size` bytes of a file, hashing them: a shorter file is an error, never a
    member shorter than its header says."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self.fh = fh
        self.left = size
        import hashlib  # only when an archive is written (a dry-run makes no digest)
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self.left <= 0:
            return b""
        want = self.left if n is None or n < 0 else min(n, self.left)
        data = self.fh.read(want)
        if not data:
            raise OSError(f"{getattr(self.fh, 'name', 'a file')} became shorter while it was exported")
        self.left -= len(data)
        self.sha.update(data)
        return data


def source_version(plan: ExportPlan) -> Optional[str]:
    """The newest Codex version that wrote one of the exported threads (their rows' cli_version)."""
    def key(v: str) -> Tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:3])
    versions = [p.cli_version for p in plan.picked if re.match(r"^\d+\.\d+", p.cli_version or "")]
    return max(versions, key=key) if versions else None


def manifest(plan: ExportPlan, digests: Dict[str, Tuple[int, str]], now: float) -> Dict[str, Any]:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_at": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source_codex_version": source_version(plan),
        "source_home": safe_str(plan.home.root),
        "threads": [{"id": p.id, "name": p.name, "title": p.title, "cwd": p.cwd, "archived": p.archived,
                     "why": p.why, "files": [m.arcname for m in p.files], "notes": p.notes}
                    for p in plan.picked],
        "members": [{"name": n, "size": s, "sha256": h} for n, (s, h) in sorted(digests.items())],
    }


def manifest_bytes(obj: Dict[str, Any]) -> bytes:
    """The manifest as valid UTF-8 JSON: text as it is, a lone surrogate (a name that was not UTF-8
    in the home) as its `\\udcXX` escape, which reads back as the same string."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda m: "\\u%04x" % ord(m.group()), text).encode("utf-8")


def _config_toml(provider: Optional[str]) -> bytes:
    """Only the provider the threads were made with (what an import reads): no other setting."""
    return (f"model_provider = {json.dumps(provider)}\n" if provider else "").encode("utf-8")


def build_members(plan: ExportPlan, scratch: Path) -> List[Member]:
    """The archive's members in order: DB subsets (read first, so a thread being written has no
    history row past the file bytes read after), the names, the config line, the rollout files."""
    keys = db_keys(plan)
    out: List[Member] = []
    now = datetime.now().timestamp()
    db_dir = plan.home.state_db.path.parent
    for name in EXPORT_DBS:
        src = db_dir / name
        if not src.is_file():
            continue
        dest = scratch / name
        subset_db(src, dest, keys, plan.reader)
        out.append(Member(name, str(dest), dest.stat().st_size, now))
    if plan.index_lines:
        data = b"".join(line + b"\n" for line in plan.index_lines)
        out.append(_scratch_file(scratch, "session_index.jsonl", data, now))
    cfg = _config_toml(plan.provider)
    if cfg:
        out.append(_scratch_file(scratch, "config.toml", cfg, now))
    for p in plan.picked:
        out += p.files
    return out


def _scratch_file(scratch: Path, name: str, data: bytes, mtime: float) -> Member:
    path = scratch / name
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return Member(name, str(path), len(data), mtime)


def write_export(plan: ExportPlan, target: Path, progress: Any = None) -> Dict[str, Any]:
    """Write the archive beside `target` (0600), then link it into place: an existing file is never
    replaced, and a run that stops leaves no half archive under the name."""
    check_target(str(target), plan.home)
    import tempfile  # only when an archive is written
    scratch = Path(tempfile.mkdtemp(prefix=".codex-export-", dir=str(target.parent)))
    part = scratch / ("export" + (".zip" if target.name.lower().endswith(".zip") else ".tar.gz"))
    try:
        members = build_members(plan, scratch)
        digests: Dict[str, Tuple[int, str]] = {}
        now = datetime.now().timestamp()
        zipped = target.name.lower().endswith(".zip")
        fd = os.open(str(part), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
        with os.fdopen(fd, "wb") as raw:
            writer = _ZipWriter(raw) if zipped else _TarWriter(raw)
            for n, m in enumerate(members, 1):
                with open_regular(m.src, buffering=0) as fh:
                    stream = _Hashing(fh, m.size)
                    writer.add(m.arcname, stream, m.size, m.mtime)
                digests[m.arcname] = (m.size, stream.sha.hexdigest())
                if progress is not None:
                    progress.tick("exporting", n, len(members))
            body = manifest_bytes(manifest(plan, digests, now))
            writer.add(MANIFEST, io.BytesIO(body), len(body), now)
            clamped = writer.clamped
            writer.close()
            raw.flush()
            os.fsync(raw.fileno())
        if progress is not None:
            progress.done()
        _place(part, target)
    finally:
        for child in scratch.iterdir() if scratch.is_dir() else ():
            child.unlink()
        if scratch.is_dir():
            scratch.rmdir()
    return {"archive": str(target), "members": len(members) + 1, "threads": len(plan.picked),
            "bytes": target.stat().st_size, "manifest": MANIFEST, "dates_clamped": clamped}


def _place(part: Path, target: Path) -> None:
    """Link the finished archive to its name (fails if the name exists: no overwrite, even in a
    race); where links are not supported, rename after a last check."""
    try:
        os.link(str(part), str(target))
    except FileExistsError:
        raise UserError(f"--to {safe_str(target)} appeared while exporting; refusing to overwrite it") from None
    except OSError:
        if os.path.lexists(str(target)):
            raise UserError(f"--to {safe_str(target)} appeared while exporting; refusing to overwrite it") from None
        os.rename(str(part), str(target))
        return
    part.unlink()


class _TarWriter:
    clamped = 0  # a tar keeps every date

    def __init__(self, raw: IO[bytes]) -> None:
        import tarfile  # the archive formats: only the one written
        self.tarfile = tarfile
        self.tf = tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=COMPRESS_LEVEL)

    def add(self, name: str, stream: Any, size: int, mtime: float) -> None:
        info = self.tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(mtime), 0o600
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.tf.addfile(info, stream)

    def close(self) -> None:
        self.tf.close()


ZIP_FIRST = (1980, 1, 1, 0, 0, 0)
ZIP_LAST = (2107, 12, 31, 23, 59, 58)


def _local(mtime: float) -> Tuple[int, ...]:
    try:
        return tuple(datetime.fromtimestamp(mtime).timetuple()[:6])
    except (OverflowError, OSError, ValueError):
        return ZIP_LAST if mtime > 0 else ZIP_FIRST


def zip_date(mtime: float) -> Tuple[int, int, int, int, int, int]:
    """A member's date as a zip can hold it (1980 to 2107): the nearest end when outside."""
    t = _local(mtime)
    return min(max(t, ZIP_FIRST), ZIP_LAST)  # type: ignore[return-value]


class _ZipWriter:
    def __init__(self, raw: IO[bytes]) -> None:
        import zipfile
        self.zipfile = zipfile
        self.zf = zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True,
                                  compresslevel=COMPRESS_LEVEL)
        self.clamped = 0  # members whose date the zip format cannot hold

    def add(self, name: str, stream: Any, size: int, mtime: float) -> None:
        stamp = zip_date(mtime)
        if stamp != _local(mtime):
            self.clamped += 1
        info = self.zipfile.ZipInfo(name, date_time=stamp)
        info.external_attr = (0o100600 << 16)
        info.compress_type = self.zipfile.ZIP_DEFLATED
        info.file_size = size
        with self.zf.open(info, "w", force_zip64=size > 0x7FFFFFFF) as dst:
            while True:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                dst.write(chunk)

    def close(self) -> None:
        self.zf.close()


# ---- reading an export's manifest ------------------------------------------------------------

def read_manifest(data: bytes) -> Dict[str, Any]:
    """An export's manifest, strictly: the format, a version this code knows, every field typed."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise UserError(f"{MANIFEST} is not JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise UserError(f"{MANIFEST} is not a {FORMAT} manifest")
    if obj.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{MANIFEST} has format_version {obj.get('format_version')!r}; this tool reads "
                        f"{FORMAT_VERSION} only")
    threads, members = obj.get("threads"), obj.get("members")
    if not isinstance(threads, list) or not all(isinstance(t, dict) and isinstance(t.get("id"), str)
                                                and isinstance(t.get("files"), list) for t in threads):
        raise UserError(f"{MANIFEST}: 'threads' is not a list of threads")
    if not isinstance(members, list) or not all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("size"), int)
            and isinstance(m.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", m["sha256"]) for m in members):
        raise UserError(f"{MANIFEST}: 'members' is not a list of {{name, size, sha256}}")
    return obj


def verify_archive(path: Path) -> Dict[str, Any]:
    """Check an export: its manifest names every other member with its size and sha256, and nothing
    else is in it. The manifest, or UserError."""
    import hashlib
    import tarfile
    import zipfile
    found: Dict[str, Tuple[int, str]] = {}
    body: Optional[bytes] = None

    def take(name: str, opener: Callable[[], Optional[IO[bytes]]]) -> None:
        nonlocal body
        fh = opener()
        if fh is None:
            raise UserError(f"{safe_str(path)}: member {safe_str(name)} cannot be read")
        with fh:
            if name == MANIFEST:
                body = fh.read()
                return
            sha, size = hashlib.sha256(), 0
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                sha.update(chunk)
                size += len(chunk)
            found[name] = (size, sha.hexdigest())

    if path.name.lower().endswith(".zip"):
        with zipfile.ZipFile(str(path)) as zf:
            for info in zf.infolist():
                take(info.filename, lambda i=info: zf.open(i))
    else:
        with tarfile.open(str(path), "r:*") as tf:
            for info in tf.getmembers():
                if not info.isreg():
                    raise UserError(f"{safe_str(path)}: member {safe_str(info.name)} is not a regular file")
                take(info.name, lambda i=info: tf.extractfile(i))
    if body is None:
        raise UserError(f"{safe_str(path)} holds no {MANIFEST}")
    obj = read_manifest(body)
    listed = {m["name"]: (m["size"], m["sha256"]) for m in obj["members"]}
    if listed != found:
        bad = sorted(set(listed) ^ set(found)) or sorted(n for n in listed if listed[n] != found.get(n))
        raise UserError(f"{safe_str(path)}: members differ from the manifest ({', '.join(bad[:5])})")
    return obj



def verify_if_export(src: str) -> Optional[Dict[str, Any]]:
    """Before an import reads an archive: one this tool wrote (its manifest at the top) is checked
    whole (every member's size and sha256, nothing more); any other archive is left to the import's
    own checks. The manifest, or None; a damaged export is a UserError."""
    path = Path(os.path.expanduser(src))
    if not path.is_file() or not path.name.lower().endswith(SUFFIXES + (".tar",)):
        return None
    import tarfile  # only for an archive
    import zipfile
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(str(path)) as zf:
                present = MANIFEST in zf.namelist()
        else:
            with tarfile.open(str(path), "r:*") as tf:
                present = any(info.name == MANIFEST for info in tf)
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile):
        return None  # not readable as an archive: the import says why
    return verify_archive(path) if present else None
