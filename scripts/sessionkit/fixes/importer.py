"""Plan an import of another home's sessions into this one: which threads, which files where,
which rows (threads, thread_history_1), which line-1 rewrites; skipped and conflicting ones with
the reason. Reads only: SRC through archive_src, DEST through the usual one walk and one SELECT."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from sessionkit.codexfiles.record import Record
from sessionkit.codexfiles.reasons import IMPORT_NO_FILE, IMPORT_SYMLINK
from sessionkit.codexfiles.ids import norm_id
from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.fixes.archive_src import HISTORY_DB, STATE_DB, SourceHome, private_db_copy
from sessionkit.codexfiles.home import CodexHome, read_config
from sessionkit.ui.commands import args_text
from sessionkit.ui.labels import shown
from sessionkit.codexfiles.line1 import LINE1_LIMIT, read_line1
from sessionkit.codexfiles.paths import has_prefix, home_prefix_counts, is_inside, safe_str
from sessionkit.codexfiles.thread_files import first_file, history_key
from sessionkit.codexfiles.rollout_index import (RolloutFile, RolloutIndex, SessionMeta, build_index, load_session_meta,
                            parse_session_meta, row_path_of, unusable_reason)
from sessionkit.fixes.rollout_remap import RolloutRemapper
from sessionkit.codexfiles.rollout_edit import Remap, apply_spans, digest_range, folder_changes, needles, parse_remaps, plan_fields, plan_line, remap, \
    without_folders  # noqa: F401  (parse_remaps: session_import.py's)
from sessionkit.codexfiles.thread_tables import (GOALS_DB, QUEUE_DB, Planner, Undecodable, decode_text, read_home,
                                                reason_counts, summary)
from sessionkit.codexfiles.rollout_scan import row_from_rollout
from sessionkit.codexfiles.statedb import open_readonly
from sessionkit.codexfiles.versions import HISTORY_MODE_COLUMN_NAME

HISTORY_TABLES = ("thread_turns", "thread_items", "thread_realtime_items", "thread_history_projection_state")
# thread_history_1 columns holding byte offsets into the rollout file (shifted when line 1 changes length)
OFFSET_COLUMNS = {"thread_turns": ("rollout_byte_offset", "rollout_end_byte_offset"),
                  "thread_history_projection_state": ("next_rollout_byte_offset",)}
# columns pointing into SRC tables an import does not carry: left empty in DEST
DROPPED_REFERENCES = ("thread_section_id", "section_position", "section_entered_at_ms", "project_id")
_CHUNK = 1024 * 1024
HEAD_CHUNK = 32 * 1024  # one read holds a usual line 1 (~21 KB)
# columns the rollout can supply when the source's schema is older than DEST's
ROLLOUT_COLUMNS = ("created_at_ms", "updated_at_ms", "cli_version", "first_user_message", "preview", "model",
                   "reasoning_effort", "history_mode", "originator", "thread_source")


class FileCopy:
    """One rollout file: read from SRC, created at the same relative place in DEST. Slotted, paths
    kept as strings: an import of a whole home plans 100,000 of them."""

    __slots__ = ("src_key", "_rel", "_dst_root", "key", "size", "mtime_ns", "line1_len", "edits", "delta")

    def __init__(self, src_key: str, dst_key: str, rel: str, key: str, size: int, mtime_ns: int, line1_len: int,
                 edits: Tuple[Tuple[str, Any, Any], ...] = (), delta: int = 0) -> None:
        self.src_key = src_key
        local = rel.replace("/", os.sep)
        if not (rel and dst_key.endswith(local)):
            raise ValueError(f"{dst_key!r} does not end in {rel!r}")
        # dst_key is DEST's root (one string shared by every file) + rel; rel is the tail of src_key
        # unless the file was staged elsewhere (decompressed): no three paths per file kept
        self._dst_root = sys.intern(dst_key[:len(dst_key) - len(local)])
        self._rel: Union[int, str] = len(local) if src_key.endswith(os.sep + local) else rel
        self.key = key  # its history key in thread_history_1: the `_<rollout-uuid>` if any, else the thread id
        self.size = size
        self.mtime_ns = mtime_ns
        self.line1_len = line1_len
        self.edits = edits  # (payload key, old, new) in line 1; () copies as is
        self.delta = delta  # how much line 1 grows (or shrinks) with the edits

    @property
    def rel(self) -> str:
        """Its path under the home, with `/`: `sessions/2025/01/02/rollout-....jsonl`."""
        n = self._rel
        return self.src_key[-n:].replace(os.sep, "/") if isinstance(n, int) else n

    @property
    def dst_key(self) -> str:
        n = self._rel
        return self._dst_root + (self.src_key[-n:] if isinstance(n, int) else n.replace("/", os.sep))

    @property
    def src(self) -> Path:
        return Path(self.src_key)

    @property
    def dst(self) -> Path:
        return Path(self.dst_key)

    def new_line1(self) -> Optional[bytes]:
        """Line 1 as DEST gets it, rebuilt from SRC when needed (a plan of 100,000 threads keeps
        no 20 KB lines); None when the file is copied byte for byte."""
        if not self.edits:
            return None
        line, err = read_line1(self.src)
        if line is None or len(line) != self.line1_len:
            raise UserError(f"{self.src} changed since the plan was made ({err or 'line 1 differs'})")
        edit = plan_line(line, (), {k: v for k, _old, v in self.edits}, first=True)  # the one editor
        new = apply_spans(line, edit.spans, True)
        if edit.problem or len(new) - len(line) != self.delta:
            raise UserError(f"{self.src}: {edit.problem or 'line 1 changed since the plan was made'}")
        return new

    @property
    def boundary(self) -> int:
        """Offset of line 2 in SRC's file: offsets at or past it move by `delta`."""
        return self.line1_len + 1

    @property
    def new_size(self) -> int:
        return self.size + self.delta


_NO_NOTES: Tuple[str, ...] = ()  # shared by every thread without a note


class ThreadImport:
    """One thread to import: its files and what its row will say. Slotted: one per thread."""

    __slots__ = ("thread_id", "key", "files", "builder", "primary", "use_src_row", "row_from", "title",
                 "name", "created", "cwd_before", "cwd_after", "archived", "provider", "history_turns", "why",
                 "notes", "extras")

    def __init__(self, thread_id: str, files: List[FileCopy], builder: "RowBuilder", primary: RolloutFile,
                 primary_dst: str, use_src_row: bool, row_from: str, title: str, name: Optional[str],
                 created: Optional[int], cwd_before: str, cwd_after: str, archived: bool, provider: str,
                 history_turns: int, why: str = "in the source", notes: Optional[List[str]] = None,
                 key: Optional[str] = None) -> None:
        self.thread_id = thread_id  # as the source's row stores it
        self.key = thread_id if key is None else key  # normalised (codexfiles/ids.py)
        self.files = files
        self.builder = builder
        self.primary = primary  # the file the row points at (primary_dst: its copy's path in DEST)
        self.use_src_row = use_src_row
        self.row_from = row_from  # "source row", "rollout", ...
        self.title = title
        self.name = name
        self.created = created
        self.cwd_before = cwd_before
        self.cwd_after = cwd_after
        self.archived = archived
        self.provider = provider
        self.history_turns = history_turns
        self.why = why
        self.notes = notes if notes else _NO_NOTES  # one shared empty list: 100,000 threads, few notes
        self.extras: Any = None  # thread_tables.ThreadExtras: its project, section, goal, ... (plan_import)

    @property
    def primary_dst(self) -> str:
        return next(fc.dst_key for fc in self.files if fc.src_key == self.primary.key)

    @property
    def row(self) -> Dict[str, Any]:
        """The threads row DEST gets, built when asked (a dry-run of 100,000 threads keeps none)."""
        return self.builder.build(self.thread_id, self.primary, self.primary_dst, self.name, self.use_src_row)[0]


class Skip(Record):
    __slots__ = ("thread_id", "title", "reason")

    def __init__(self, thread_id: str, title: str, reason: str) -> None:
        self.thread_id = thread_id
        self.title = title
        self.reason = reason


class ImportPlan(Record):
    __slots__ = ("source", "dest", "threads_in_source", "imports", "skipped", "conflicts", "mkdirs", "remaps",
                 "suggested_remap", "provider_hint", "provider_command", "suggested_remap_args", "provider_args",
                 "src_history_db", "dest_history_db", "notes", "remapper", "shared", "table_dbs")

    def __init__(self, source: SourceHome, dest: CodexHome, threads_in_source: int = 0,
                 imports: Optional[List[ThreadImport]] = None, skipped: Optional[List[Skip]] = None,
                 conflicts: Optional[List[Skip]] = None, mkdirs: Optional[List[Path]] = None,
                 remaps: Optional[List[Remap]] = None, suggested_remap: Optional[str] = None,
                 provider_hint: Optional[str] = None, provider_command: Optional[str] = None,
                 suggested_remap_args: Optional[List[str]] = None, provider_args: Optional[List[str]] = None,
                 src_history_db: Optional[Path] = None, dest_history_db: Optional[Path] = None,
                 notes: Optional[List[str]] = None, remapper: Optional[RolloutRemapper] = None,
                 shared: Optional[List[Any]] = None, table_dbs: Optional[Dict[str, Path]] = None) -> None:
        self.source = source
        self.dest = dest
        self.threads_in_source = threads_in_source
        self.imports = [] if imports is None else imports
        self.skipped = [] if skipped is None else skipped  # already in DEST, or not importable
        self.conflicts = [] if conflicts is None else conflicts  # DEST has a different thread with the id
        self.mkdirs = [] if mkdirs is None else mkdirs
        self.remaps = [] if remaps is None else remaps
        self.suggested_remap = suggested_remap
        self.provider_hint = provider_hint
        self.provider_command = provider_command  # the provider_migrate.py arguments the hint names
        # the same two, as arguments
        self.suggested_remap_args = [] if suggested_remap_args is None else suggested_remap_args
        self.provider_args = [] if provider_args is None else provider_args  # provider_migrate.py's arguments, unquoted
        self.src_history_db = src_history_db
        self.dest_history_db = dest_history_db
        self.notes = [] if notes is None else notes
        self.remapper = remapper
        self.shared = [] if shared is None else shared  # thread_tables.Insert: projects, sections created once
        self.table_dbs = {} if table_dbs is None else table_dbs  # DEST's DB files by name (thread_tables)

    def __repr__(self) -> str:  # as the dataclass did: remapper left out
        shown = ("source", "dest", "threads_in_source", "imports", "skipped", "conflicts", "mkdirs", "remaps",
                 "suggested_remap", "provider_hint", "provider_command", "suggested_remap_args", "provider_args",
                 "src_history_db", "dest_history_db", "notes", "shared", "table_dbs")
        return "ImportPlan(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"

# The columns the plan reads from SRC's rows (a dry-run of 100,000 threads keeps no whole row):
# rollout_path as which of the thread's files it names (its place in the walk's list), "title" as the first non-empty of title, preview and
# first_user_message (cut to what a report shows).
PLAN_COLUMNS = ("rollout_path", "created_at", "name", "cwd", "model_provider", "history_mode")
TITLE_COLUMNS = ("title", "preview", "first_user_message")
TITLE_CHARS = 100
PLANNED = ("id", "cwd", "created_at", "model_provider", "history_mode")  # a planned row's fields the plan reports


class SourceInputs(Record):
    """SRC read once: the plan's columns by id, the walk, names from session_index.jsonl, history
    turn counts. Whole rows are read only for an apply (`row`)."""
    __slots__ = ("source", "rows", "columns", "index", "names", "history_db", "history_turns", "provider", "notes",
                 "all_columns", "bad_text", "state_copy", "cased", "home_prefixes", "in_place", "_whole")

    def __init__(self, source: SourceHome, rows: Dict[str, tuple], columns: List[str], index: RolloutIndex,
                 names: Dict[str, str], history_db: Optional[Path], history_turns: Dict[str, int], provider: str,
                 notes: Optional[List[str]] = None, all_columns: Optional[List[str]] = None,
                 bad_text: Optional[Set[str]] = None, state_copy: Optional[Path] = None,
                 cased: Optional[Dict[str, str]] = None, home_prefixes: Optional[Dict[str, int]] = None,
                 in_place: bool = False, _whole: Optional[Dict[str, tuple]] = None) -> None:
        self.source = source
        self.rows = rows  # lower-case id -> the plan's values, in `columns` order (a dict per row costs 3x)
        self.columns = columns
        self.index = index
        self.names = names
        self.history_db = history_db
        self.history_turns = history_turns
        self.provider = provider
        self.notes = [] if notes is None else notes
        self.all_columns = [] if all_columns is None else all_columns  # SRC's threads columns, in table order
        self.bad_text = set() if bad_text is None else bad_text  # ids whose row holds TEXT that is not UTF-8
        self.state_copy = state_copy  # the private copy of SRC's state DB the rows came from
        self.cased = {} if cased is None else cased  # a row's id where it is not lower-case
        self.home_prefixes = {} if home_prefixes is None else home_prefixes  # the homes the rows' rollout_path name
        self.in_place = in_place  # a dry-run: SRC's DBs read where they are, read-only (connect_src)
        self._whole = _whole

    def __repr__(self) -> str:  # as the dataclass did: _whole left out
        shown = ("source", "rows", "columns", "index", "names", "history_db", "history_turns", "provider", "notes",
                 "all_columns", "bad_text", "state_copy", "cased", "home_prefixes", "in_place")
        return "SourceInputs(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in shown) + ")"


    def plan_row(self, tid: str) -> Optional[Dict[str, Any]]:
        """The plan's columns of the thread's row (NULLS: its NULL columns as bits)."""
        values = self.rows.get(tid)
        if values is None:
            return None
        row = dict(zip(self.columns, values))
        row["id"] = self.cased.get(tid, tid)
        return row

    def ids_with_null(self, columns: Sequence[str]) -> Set[str]:
        """Lower-case ids of the rows with NULL in any of these columns (one query; usually none)."""
        cols = [c for c in columns if c in self.all_columns]
        if not cols or self.state_copy is None:
            return set()
        conn = connect_src(self.state_copy, self.source.scratch)
        conn.text_factory = lambda b: b.decode("utf-8", "replace")
        try:
            where = " OR ".join('"' + c.replace('"', '""') + '" IS NULL' for c in cols)
            return {norm_id(str(i)) for (i,) in conn.execute(f"SELECT id FROM threads WHERE {where}")}
        finally:
            conn.close()

    def row(self, tid: str) -> Optional[Dict[str, Any]]:
        """The whole row, every column (read from the private copy on first use: at --apply)."""
        if tid not in self.rows:
            return None
        if self._whole is None:
            self._whole = _whole_rows(self.state_copy, self.source.scratch) if self.state_copy is not None else {}
        values = self._whole.get(tid)
        return None if values is None else dict(zip(self.all_columns, values))


def _find_db(root: Path, name: str) -> Optional[Path]:
    for folder in (root, root / "sqlite"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_names(root: Path) -> Dict[str, str]:
    """`thread/name/set` appends `{"id","thread_name","updated_at"}`; the last one per id counts."""
    out: Dict[str, str] = {}
    path = root / "session_index.jsonl"
    try:
        data = path.read_bytes()
    except OSError:
        return out
    for raw in data.split(b"\n"):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str) and isinstance(rec.get("thread_name"), str):
            out[norm_id(rec["id"])] = rec["thread_name"]
    return out


def _plan_query(columns: List[str]) -> Tuple[str, List[str]]:
    """SELECT of the plan's columns, the title, each row's NULL columns as one integer, then the
    whole row (decoded, so that a value that is not UTF-8 is found, but not kept)."""
    quote = lambda c: '"' + c.replace('"', '""') + '"'  # noqa: E731
    names = [c for c in PLAN_COLUMNS if c in columns]
    exprs = [quote(c) for c in names]
    titles = [f"NULLIF({quote(c)}, '')" for c in TITLE_COLUMNS if c in columns]
    if titles:
        exprs.append(f"substr(COALESCE({', '.join(titles)}, ''), 1, {TITLE_CHARS})")
        names.append("title")
    return f"SELECT {', '.join(exprs)}, * FROM threads", names


def _read_rows(conn: sqlite3.Connection, columns: List[str], index: RolloutIndex) -> Tuple[Dict[str, tuple], List[str], Set[str],
                                                                        Dict[str, str], Dict[str, int]]:
    """(lower-case id -> the plan's values, their names, ids with TEXT that is not UTF-8, ids not in
    lower case, the homes rollout_path names). SQLite's own decoder reads every column (a value
    that is not UTF-8 raises: only then is the table read again through one that marks it)."""
    query, names = _plan_query(columns)
    try:
        return _rows_of(conn.execute(query), names, columns, index, False)
    except sqlite3.OperationalError:  # a value that is not UTF-8 (else the retry raises again)
        pass
    conn.text_factory = decode_text
    return _rows_of(conn.execute(query), names, columns, index, True)


def _rows_of(cur: Any, names: List[str], columns: List[str], index: RolloutIndex, marked: bool
             ) -> Tuple[Dict[str, tuple], List[str], Set[str], Dict[str, str], Dict[str, int]]:
    keep = len(names)
    at = keep + columns.index("id")
    path_at = names.index("rollout_path") if "rollout_path" in names else -1
    by_thread = index.by_thread
    rows: Dict[str, tuple] = {}
    bad: Set[str] = set()
    cased: Dict[str, str] = {}
    paths: List[str] = []
    shared: Dict[Any, Any] = {}  # folders, providers, history modes: one string each, not one per row
    share = shared.setdefault
    intern = sys.intern
    for values in cur:
        tid = values[at]
        if not isinstance(tid, str):
            continue
        key = intern(norm_id(tid))
        if tid != key:
            cased[key] = tid
        kept = [share(v, v) if v.__class__ is str and len(v) <= 200 else v for v in values[:keep]]
        if path_at >= 0:  # all the plan needs of it: which of the thread's files it names, if one
            p = kept[path_at]
            if isinstance(p, str):
                paths.append(p)
            base = _text(p).replace("\\", "/").rpartition("/")[2]
            named = [i for i, f in enumerate(by_thread.get(key, ())) if row_path_of(f.name) == base]
            kept[path_at] = named[0] if len(named) == 1 else -1
        rows[key] = tuple(kept)
        if marked and any(isinstance(v, Undecodable) for v in values):
            bad.add(key)
    prefixes = dict(home_prefix_counts(paths, "\x00"))  # "\x00": names no home, so every old home counts
    names = ["rollout_file" if n == "rollout_path" else n for n in names]
    return rows, names, bad, cased, prefixes


def _whole_rows(db: Path, scratch: Path) -> Dict[str, tuple]:
    """Every row of SRC's threads table, whole (for --apply), TEXT that is not UTF-8 as Undecodable."""
    conn = connect_src(db, scratch)
    conn.text_factory = decode_text
    try:
        out: Dict[str, tuple] = {}
        cur = conn.execute("SELECT * FROM threads")
        at = [d[0] for d in cur.description].index("id")
        for values in cur:
            if isinstance(values[at], str):
                out[norm_id(values[at])] = values
        return out
    finally:
        conn.close()


def connect_src(db: Path, scratch: Path) -> sqlite3.Connection:
    """One of SRC's DBs to read: a file in the scratch folder (a private copy, an archive's member)
    as usual; SRC's own file only through statedb.open_readonly (no -shm created or rewritten)."""
    if is_inside(db, scratch):
        return sqlite3.connect(str(db))
    try:
        conn = open_readonly(db)
    except UserError as exc:
        raise sqlite3.DatabaseError(str(exc)) from None
    conn.text_factory = str  # TEXT that is not UTF-8 raises, as in a copy (_read_rows marks it then)
    return conn


def _src_db(db: Path, scratch: Path, in_place: bool) -> Tuple[Optional[Path], sqlite3.Connection]:
    """(the file read, open): a dry-run reads SRC's DB in place, read-only (connect_src); an apply,
    or a DB open_readonly refuses (a writer's unfinished journal), reads a private copy (DB + WAL)."""
    if in_place:
        try:
            return db, connect_src(db, scratch)
        except sqlite3.DatabaseError:
            pass
    copy = private_db_copy(db, scratch)
    if copy is None:
        raise sqlite3.DatabaseError(f"{safe_str(db)} is gone")
    return copy, sqlite3.connect(str(copy))


def read_source(source: SourceHome, in_place: bool = False) -> SourceInputs:
    """SRC's DBs are read through private copies (DB + WAL) in the scratch folder, or, for a
    dry-run (in_place), in place through open_readonly; SRC is never written. An unreadable state
    DB is not the end: the rows are then rebuilt from the rollouts."""
    rows: Dict[str, tuple] = {}
    columns: List[str] = []
    all_columns: List[str] = []
    index = _shared_ids(build_index(source.root))
    bad: Set[str] = set()
    cased: Dict[str, str] = {}
    prefixes: Dict[str, int] = {}
    copy: Optional[Path] = None
    notes: List[str] = [f"archive member not extracted: {m}" for m in source.skipped_members[:20]]
    state = _find_db(source.root, STATE_DB)
    if state is not None:
        try:
            copy, conn = _src_db(state, source.scratch, in_place)
            try:
                all_columns = [r[1] for r in conn.execute("PRAGMA table_info(threads)")]
                if all_columns and "id" in all_columns:
                    rows, columns, bad, cased, prefixes = _read_rows(conn, all_columns, index)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            rows, columns, all_columns, bad, copy, cased, prefixes = {}, [], [], set(), None, {}, {}
            notes.append(f"the source's {STATE_DB} is unreadable ({exc}): every row is rebuilt from its "
                         f"rollout, so names and archive dates from the source DB are lost")
    else:
        notes.append(f"the source has no {STATE_DB}: every row is rebuilt from its rollout")
    history_db: Optional[Path] = None
    turns: Dict[str, int] = {}
    hist = (state.parent / HISTORY_DB) if state is not None else _find_db(source.root, HISTORY_DB)
    if hist is not None and hist.is_file():
        try:
            history_db, conn = _src_db(hist, source.scratch, in_place)
            try:
                turns = {sys.intern(norm_id(str(k))): int(n) for k, n in conn.execute(
                    "SELECT thread_id, count(*) FROM thread_turns GROUP BY thread_id")}
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            history_db, turns = None, {}
            notes.append(f"the source's {HISTORY_DB} is unreadable ({exc}): the imported threads read 0 "
                         f"turns until resumed, and archived ones cannot be resumed")
    provider = "openai"
    try:
        provider = read_config(source.root).model_provider
    except UserError as exc:
        notes.append(f"the source's config.toml: {exc}; rows rebuilt from a rollout without a provider get 'openai'")
    return SourceInputs(source, rows, columns, index, _read_names(source.root),
                        history_db, turns, provider, notes, all_columns, bad, copy, cased, prefixes, in_place)


def _shared_ids(index: RolloutIndex) -> RolloutIndex:
    """Each thread id one string, shared by the walk, the rows and the history counts (sys.intern):
    the plan of a 100,000-thread home otherwise holds six copies of each."""
    intern = sys.intern
    for rf in index.files:
        rf.thread_id = intern(rf.thread_id)
    index.by_thread = {intern(k): v for k, v in index.by_thread.items()}
    return index


# A DEST whose threads table has no history_mode column is a Codex from before paginated history
# (versions.HISTORY_MODE_COLUMN: real 0.130 lists no paginated thread and reads its turns empty).
UNREADABLE_PAGINATED = ("paginated history (Codex 0.148+), which this home's older Codex (as 0.130) neither "
                        "lists nor reads: import it once a newer Codex has opened this home")


def _paginated(line1: Optional[bytes]) -> bool:
    """Whether line 1 says the file keeps paginated history (its turns in the newer event format)."""
    try:
        payload = json.loads(line1 or b"").get("payload")
    except (ValueError, RecursionError, AttributeError):
        return False
    return isinstance(payload, dict) and payload.get("history_mode") == "paginated"


class DestInputs(Record):
    __slots__ = ("home", "index", "rows", "columns", "history_db", "history_keys", "history_columns",
                 "before_paginated")

    def __init__(self, home: CodexHome, index: RolloutIndex, rows: Dict[str, Tuple[str, str]],
                 columns: List[Tuple[str, bool, bool]], history_db: Optional[Path], history_keys: Set[str],
                 history_columns: Dict[str, List[str]]) -> None:
        self.home = home
        self.index = index
        self.rows = rows  # id -> (rollout_path, cwd)
        self.columns = columns  # (name, not null, has default)
        self.history_db = history_db
        self.history_keys = history_keys
        self.history_columns = history_columns
        # DEST's Codex predates paginated threads (it reads legacy ones only): asked once a thread
        self.before_paginated = not any(c == HISTORY_MODE_COLUMN_NAME for c, _nn, _d in columns)


def read_dest(home: CodexHome) -> DestInputs:
    conn = open_readonly(home.state_db.path)
    try:
        info = list(conn.execute("PRAGMA table_info(threads)"))
        rows = {norm_id(str(i)): (str(p), str(c)) for i, p, c in conn.execute("SELECT id, rollout_path, cwd FROM threads")}
    finally:
        conn.close()
    if not info:
        raise UserError(f"{home.state_db.path} has no threads table: start Codex once on this home")
    columns = [(r[1], bool(r[3]), r[4] is not None or bool(r[5])) for r in info]
    hist = home.state_db.path.parent / HISTORY_DB
    keys: Set[str] = set()
    hcols: Dict[str, List[str]] = {}
    if hist.is_file():
        conn = open_readonly(hist)
        try:
            for t in HISTORY_TABLES:
                hcols[t] = [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
            keys = {norm_id(str(k)) for (k,) in conn.execute(
                "SELECT thread_id FROM thread_turns UNION SELECT thread_id FROM thread_history_projection_state "
                "UNION SELECT thread_id FROM thread_items")}
        finally:
            conn.close()
    return DestInputs(home, build_index(home.root), rows, columns, hist if hist.is_file() else None, keys, hcols)


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ("" if v is None else str(v))


_UNCHANGED = ((), 0, None)


class Line1Rewriter:
    """New line 1 bytes for each SRC file: cwd and runtime_workspace_roots remapped, a fork's
    history_base.end_byte_offset moved with its parent's line 1. Only those tokens change."""

    def __init__(self, src: SourceInputs, remaps: Sequence[Remap]) -> None:
        self.src = src
        self.remaps = list(remaps)
        self.memo: Dict[str, Any] = {}  # path -> for_file's answer, or line 1's length when nothing changes
        # the file behind each history key: a thread id (its first file) or a segment's rollout uuid
        self.by_key: Dict[str, RolloutFile] = {}
        for f in src.index.files:
            key = history_key(f.name)
            if key:
                self.by_key.setdefault(sys.intern(key), f)
        # a remapped prefix as it appears inside a JSON string (no match: line 1 is left as is)
        self.needles = needles(self.remaps)
        self.stack: Set[str] = set()

    def for_file(self, path: Union[str, Path], line: Optional[bytes] = None
                 ) -> Tuple[int, Tuple[Tuple[str, Any, Any], ...], int, Optional[str]]:
        """(line 1 length, edits, growth, problem or None)."""
        key = str(path)
        got = self.memo.get(key)
        if got is not None:
            return (got, (), 0, None) if got.__class__ is int else got
        self.stack.add(key)
        try:
            result = self._rewrite(path, line)
        finally:
            self.stack.discard(key)
        self.memo[key] = result[0] if result[1:] == _UNCHANGED else result  # most files: their length only
        return result

    def _parent_shift(self, base: Dict[str, Any]) -> int:
        parent = base.get("thread_id")  # a history key: the parent's thread id, or a segment's uuid
        rf = self.by_key.get(norm_id(parent)) if isinstance(parent, str) else None
        if rf is None or rf.key in self.stack:
            return 0
        old_len, _edits, growth, _ = self.for_file(rf.key)
        end = base.get("end_byte_offset")
        if not isinstance(end, int) or end < old_len + 1:
            return 0
        return growth

    def _rewrite(self, path: Union[str, Path], line: Optional[bytes]
                 ) -> Tuple[int, Tuple[Tuple[str, Any, Any], ...], int, Optional[str]]:
        err = None
        if line is None:
            line, err = read_line1(path)
        if line is None:
            return 0, (), 0, err
        forked = b'"history_base"' in line
        if not forked and not any(n in line for n in self.needles):
            return len(line), (), 0, None  # nothing to change: no JSON decoding of ~20 KB
        payload = _payload(line, whole=forked)
        if payload is None:
            return len(line), (), 0, None  # not a session_meta: copied as is
        changes: List[Tuple[str, Any, Any]] = [(key, old, new) for _h, key, old, new in folder_changes(
            {"type": "session_meta", "payload": payload}, self.remaps)]
        base = payload.get("history_base")
        shift = self._parent_shift(base) if isinstance(base, dict) else 0
        if shift:
            changes.append(("history_base", base, dict(base, end_byte_offset=base["end_byte_offset"] + shift)))
        if not changes:
            return len(line), (), 0, None
        edit = plan_fields(line, {k: (old, v) for k, old, v in changes})  # the one finder; the copy checks it
        if edit.problem:
            return len(line), (), 0, f"{edit.problem}: left as is"
        return len(line), tuple(changes), edit.growth, None


def _read_head(path: str, limit: int = LINE1_LIMIT) -> Tuple[Optional[bytes], Optional[str], Optional[os.stat_result]]:
    """(line 1, why not, the file's stat) in one open, fstat and read, as the audit reads a head
    (a longer line 1 read on, bounded); a FIFO, socket or device is never read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | host.BINARY)
    except OSError as exc:
        return None, exc.strerror or str(exc), None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a regular file", None
        parts: List[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, HEAD_CHUNK if not parts else _CHUNK)
            if not chunk:
                return (b"".join(parts), None, st) if parts else (None, "empty file", st)
            cut = chunk.find(b"\n")
            if cut >= 0:
                return b"".join(parts) + chunk[:cut] if parts else chunk[:cut], None, st
            parts.append(chunk)
            got += len(chunk)
        return None, f"line 1 longer than {limit} bytes", st
    except OSError as exc:
        return None, exc.strerror or str(exc), None
    finally:
        os.close(fd)


def _meta(line: bytes) -> SessionMeta:
    """What load_session_meta tells, from a line already read (decoding only its head when it can)."""
    at = line.find(b',"base_instructions":')
    if at > 0 and line.endswith(b"}"):
        meta = parse_session_meta(line[:at] + b"}}")
        if meta.error is None and meta.has_provider:
            return meta
    return parse_session_meta(line)


def _payload(line: bytes, whole: bool) -> Optional[Dict[str, Any]]:
    """session_meta's payload; only the part before the ~20 KB base_instructions is decoded when
    that is a whole object (Codex writes id, cwd and the workspace roots first)."""
    at = -1 if whole else line.find(b',"base_instructions":')
    for text in ((line[:at] + b"}}") if at > 0 else None, line):
        if text is None:
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("type") == "session_meta" and isinstance(obj.get("payload"), dict):
            return obj["payload"]
    return None


def _title(row: Optional[Dict[str, Any]], names: Dict[str, str], tid: str) -> Tuple[str, Optional[str]]:
    name = None
    if row is not None and row.get("name"):
        name = _text(row["name"])
    name = name or names.get(tid)
    title = ""
    if row is not None:
        title = _text(row.get("title") or row.get("preview") or row.get("first_user_message"))
    return title, name


def _primary(files: List[RolloutFile], row: Optional[Dict[str, Any]]) -> Tuple[Optional[RolloutFile], str]:
    at = row.get("rollout_file", -1) if row is not None else -1
    if at >= 0:  # the one file the row's rollout_path names (read_source: its place in the walk's list)
        return files[at], ""
    plain = [f for f in files if "_" not in f.name]
    if len(plain) == 1:
        return plain[0], ""
    if not plain:
        return None, "only later segments of a reverted thread, no first rollout file"
    return None, f"ambiguous: {len(plain)} rollout files carry this thread id in the source"


def _digest_planned(fc: FileCopy, remapper: RolloutRemapper) -> Tuple[str, int]:
    """sha256 and length of the bytes DEST would get."""
    import hashlib  # only for a thread DEST has: a plain dry-run loads none
    h = hashlib.sha256()
    size = 0
    for chunk in remapper.stream(fc.src):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _body_digest(path: Path, start: int) -> Tuple[str, int]:
    """sha256 and length of a file from `start` on (everything after line 1)."""
    import hashlib
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        fh.seek(start)
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _same_as_dest(files: List[FileCopy], dest: DestInputs, tid: str, remapper: RolloutRemapper
                  ) -> Tuple[Optional[str], bool]:
    """(None, same folders) when DEST already holds every file: the bytes an import writes, or
    those followed by turns added since, or the same lines but for their folders (imported with
    another remap); else (what differs, False)."""
    theirs = {f.name: f for f in dest.index.by_thread.get(tid, [])}
    same_folders = True
    for fc in files:
        other = theirs.get(fc.dst.name)
        if other is None:
            return f"DEST has this thread id without the file {fc.dst.name}", False
        want, size = _digest_planned(fc, remapper)
        if digest_range(str(other.path), size) == want:
            continue
        if not _same_but_folders(fc.src, other.path):
            return f"DEST's {safe_str(other.path)} holds other content", False
        same_folders = False
    return None, same_folders


def _same_but_folders(src: Path, dst: Path) -> bool:
    """Every line of SRC's file is in DEST's, in order, equal but for the fields this tool writes:
    the folder records an import may remap (rollout_edit.FOLDER_RECORDS) and line 1's provider (a
    migration after an import); DEST may go on with turns added since."""
    try:
        with open(src, "rb") as a, open(dst, "rb") as b:
            for mine in a:
                theirs = b.readline()
                if mine == theirs:
                    continue
                if not (mine.endswith(b"\n") and theirs.endswith(b"\n")):
                    return False
                mine_obj, theirs_obj = _without_folders(mine), _without_folders(theirs)
                if mine_obj is None or mine_obj != theirs_obj:
                    return False
    except OSError:
        return False
    return True


def _without_folders(line: bytes) -> Optional[Dict[str, Any]]:
    """The decoded line without what a remap or a migration rewrites (never conversation content)."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    if obj.get("type") == "session_meta" and isinstance(obj.get("payload"), dict):
        obj["payload"].pop("model_provider", None)
    return without_folders(obj)


class RowBuilder:
    """A thread's DEST row: from SRC's row (only the columns DEST has), or as Codex's backfill
    would build it from the rollout, with this import's path, folder, archive state and name."""

    def __init__(self, src: SourceInputs, dest: DestInputs, remaps: Sequence[Remap]) -> None:
        self.src = src
        self.remaps = list(remaps)
        self.dest_cols = [c for c, _nn, _d in dest.columns]
        self.needed = [c for c, nn, has_default in dest.columns if nn and not has_default]
        have = set(src.all_columns)
        self.lacking = [c for c in self.dest_cols if c not in have and c in ROLLOUT_COLUMNS]
        self.absent = [c for c in self.needed if c not in have]  # NOT NULL in DEST, not in SRC's table
        self.null_ids: Optional[Set[str]] = None  # rows with NULL in a column DEST needs (asked when planning)

    def build(self, tid: str, primary: RolloutFile, primary_dst: str, name: Optional[str], use_src_row: bool,
              planned: Optional[Dict[str, Any]] = None, meta_cwd: Optional[str] = None
              ) -> Tuple[Dict[str, Any], str, str]:
        """(the row, where it came from, the folder before the remap). Given `planned` (the plan's
        columns of SRC's row: PLAN_COLUMNS) only what the plan reports; else the whole row (--apply)."""
        whole = planned is None
        src_row = (self.src.row(tid) if whole else planned) if use_src_row else None
        base, row_from = self._base(src_row, primary, tid, whole)
        cwd = _text(base.get("cwd")) or (meta_cwd if meta_cwd is not None else load_session_meta(primary.path).cwd) \
            or ""
        if not whole:  # what the plan reports of it
            planned_row = {c: base.get(c) for c in PLANNED}
            planned_row.update(id=_text(planned_row["id"]) or tid, cwd=remap(cwd, self.remaps))
            return planned_row, row_from, cwd
        row = {c: base[c] for c in self.dest_cols if c in base}
        row.update({"id": _text(row.get("id")) or tid, "rollout_path": primary_dst,
                    "cwd": remap(cwd, self.remaps), "archived": int(primary.archived)})
        if whole and "archived_at" in self.dest_cols:
            row["archived_at"] = (row.get("archived_at") or int(os.stat(primary.key).st_mtime)) \
                if primary.archived else None
        for c in DROPPED_REFERENCES:
            if c in row:
                row[c] = None
        if name and "name" in self.dest_cols:
            row["name"] = name
        return row, row_from, cwd

    def _base(self, src_row: Optional[Dict[str, Any]], primary: RolloutFile, tid: str, whole: bool
              ) -> Tuple[Dict[str, Any], str]:
        """Every NOT NULL column DEST needs, and the columns an older source schema lacks (an
        empty preview hides a thread), come from the rollout."""
        if src_row is None:
            return row_from_rollout(primary.path, tid, primary.archived, self.src.provider), "rollout"
        lacking = self.lacking
        if whole:
            missing = [c for c in self.needed if src_row.get(c) is None]
        else:  # the plan's columns: which rows hold NULL where DEST needs a value, asked once
            if self.null_ids is None:
                self.null_ids = self.src.ids_with_null(self.needed)
            missing = self.absent + (["(NULL)"] if tid in self.null_ids else [])
        if not (lacking or missing):
            return src_row, "source row"
        scanned = row_from_rollout(primary.path, tid, primary.archived, self.src.provider)
        for c in lacking + [c for c in self.needed if src_row.get(c) is None]:
            if scanned.get(c) is not None:
                src_row[c] = scanned[c]
        return src_row, "source row (older schema, filled from the rollout)"


def plan_import(src: SourceInputs, dest: DestInputs, remaps: Sequence[Remap] = (),
                thread_ids: Sequence[str] = ()) -> ImportPlan:
    """One pass over SRC's threads with dictionary look-ups into both walks. `thread_ids` are keys
    (codexfiles/ids.py: normalised where they entered, as `--thread-id` is)."""
    plan = ImportPlan(source=src.source, dest=dest.home, remaps=list(remaps),
                      src_history_db=src.history_db, dest_history_db=dest.history_db, notes=list(src.notes))
    all_ids = set(src.rows) | set(src.index.by_thread)
    plan.threads_in_source = len(all_ids)
    wanted = set(thread_ids)
    unknown = sorted(wanted - all_ids)
    if unknown:
        raise UserError(f"--thread-id {unknown[0]}: no such thread in the source")
    selected = _with_fork_parents(src, wanted, dest) if wanted else {t: "in the source" for t in all_ids}
    rewriter = Line1Rewriter(src, remaps)
    plan.remapper = RolloutRemapper(rewriter)
    builder = RowBuilder(src, dest, remaps)
    taken: Set[str] = set()
    present: Dict[str, bool] = {}
    made: Set[str] = set()
    at = src.columns.index("created_at") if "created_at" in src.columns else -1
    for tid in sorted(selected, key=lambda t: (_created(src, t, at), t)):
        _plan_thread(plan, tid, selected[tid], src, dest, rewriter, builder, taken, made, present)
    _suggest(plan, src, dest, remaps)
    _plan_tables(plan, src, dest, remaps)
    idx = src.index
    if idx.skipped_links:
        plan.notes.append(f"{len(idx.skipped_links)} symlinked folder(s) in the source were not followed "
                          f"(e.g. {safe_str(idx.skipped_links[0])}): import from the folder they point at")
    if idx.malformed or idx.unreadable:
        plan.notes.append(f"{len(idx.malformed)} file(s) in the source's sessions folders are not rollout names "
                          f"and {len(idx.unreadable)} could not be read: not imported")
    if dest.history_db is None and any(t.history_turns for t in plan.imports):
        plan.notes.append(f"DEST has no {HISTORY_DB} yet (Codex makes it when it first writes or reads a paginated "
                          f"thread): the rollouts and rows are imported; their history rows are not. Codex shows "
                          f"each paginated thread with 0 turns until it is resumed once (archived ones: unarchive "
                          f"first)")
    return plan


def _plan_tables(plan: ImportPlan, src: SourceInputs, dest: DestInputs, remaps: Sequence[Remap]) -> None:
    """Each imported thread's project, section, pin, goal, sub-agent link, attachments, queued input
    and read state (thread_tables.py), read from SRC's DB copies and matched against DEST's."""
    folder = dest.home.state_db.path.parent
    dest_dbs = {n: folder / n for n in (STATE_DB, GOALS_DB, QUEUE_DB)}
    d = read_home({n: p for n, p in dest_dbs.items() if p.is_file()})
    state = _find_db(plan.source.root, STATE_DB)
    src_dbs: Dict[str, Optional[Path]] = {}
    for name in (STATE_DB, GOALS_DB, QUEUE_DB):
        copy = plan.source.scratch / "db" / name
        original = (state.parent / name) if state is not None else plan.source.root / name
        src_dbs[name] = copy if copy.is_file() else original if src.in_place and original.is_file() else \
            private_db_copy(original, plan.source.scratch)
    s = read_home(src_dbs, connect=lambda p: _src_db(p, plan.source.scratch, True)[1])  # a copy as is
    planner = Planner(s, d, lambda v: remap(v, remaps))
    names = None
    for t in plan.imports:
        extras = planner.thread(t.thread_id, t.key)
        names = names or list(extras.__slots__)
        t.extras = extras if any(getattr(extras, n) for n in names) else None  # most bring nothing
    plan.shared = planner.shared
    plan.table_dbs = dict(d.dbs)


def _created(src: SourceInputs, tid: str, at: int) -> int:
    row = src.rows.get(tid)
    v = row[at] if row is not None and at >= 0 else None
    if isinstance(v, int):
        return v
    files = src.index.by_thread.get(tid)
    if not files:
        return 0
    y, m, d = files[0].date.split("-")  # no strptime: it loads _strptime, locale and calendar
    return int(datetime(int(y), int(m), int(d)).timestamp())


def _with_fork_parents(src: SourceInputs, wanted: Set[str], dest: DestInputs) -> Dict[str, str]:
    """The chosen threads plus each fork's parent the child reads its start from (unless DEST has it)."""
    out = {t: "chosen" for t in wanted}
    todo = list(wanted)
    while todo:
        tid = todo.pop()
        first = first_file(src.index.by_thread.get(tid, []))
        if first is None:
            continue
        if first.compressed:  # read decompressed, as Codex reads it
            from sessionkit.codexfiles.zstd import line1_of
            line, err = line1_of(first.key)
            parent = (parse_session_meta(line) if line is not None else SessionMeta(error=err)).parent_key
        else:
            parent = load_session_meta(first.path).parent_key
        if parent and parent not in out and parent not in dest.rows and parent in src.index.by_thread:
            out[parent] = f"parent of fork {tid}"
            todo.append(parent)
    return out


def _plan_thread(plan: ImportPlan, tid: str, why: str, src: SourceInputs, dest: DestInputs,
                 rewriter: Line1Rewriter, builder: RowBuilder, taken: Set[str], made: Set[str],
                 present: Dict[str, bool]) -> None:
    row = src.plan_row(tid)
    notes: List[str] = []
    if row is not None and tid in src.bad_text:
        row = None
        notes.append("its source row holds text that is not UTF-8: the row is rebuilt from the rollout")
    title, name = _title(row, src.names, tid)
    files = src.index.by_thread.get(tid, [])

    def skip(reason: str, conflict: bool = False) -> None:
        (plan.conflicts if conflict else plan.skipped).append(Skip(tid, name or title, reason))

    if not files:
        return skip(IMPORT_NO_FILE)
    if any(f.is_symlink for f in files):
        return skip(IMPORT_SYMLINK)
    origin: Dict[str, str] = {}  # a compressed file's decompressed copy -> its key in the source
    if any(f.compressed for f in files):
        files, problem = _decompressed(plan, files, origin)
        if problem:
            return skip(problem)
        notes.append("its rollout is zstd-compressed in the source: DEST gets it decompressed "
                     "(as Codex's resume writes it)")
    primary, problem = _primary(files, row)
    if primary is None:
        return skip(problem)
    primary_line, err, primary_st = _read_head(primary.key)  # read once: for the checks and for the rewrite
    meta = _meta(primary_line) if primary_line is not None else SessionMeta(error=err)
    problem = unusable_reason(primary, meta, tid)
    if problem:
        return skip(problem)
    if dest.before_paginated and _paginated(primary_line):
        return skip(UNREADABLE_PAGINATED)
    root = plan.source.root
    copies: List[FileCopy] = []
    prefix = str(root).rstrip(os.sep) + os.sep
    dest_prefix = str(dest.home.root) + os.sep
    primary_dst = ""
    slots: List[str] = []
    for rf in (files if len(files) == 1 else sorted(files, key=lambda f: f.key)):
        at = row_path_of(origin.get(rf.key, rf.key))  # the file's place in SRC (its .jsonl name): DEST's is the same
        slots.append(at)
        rel = at[len(prefix):].replace(os.sep, "/") if at.startswith(prefix) else ""
        if not rel.startswith(("sessions/", "archived_sessions/")) or "/../" in rel:
            return skip(f"{safe_str(rf.key)} is not under the source's sessions folders")
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            return skip(f"{safe_str(rel)}: a folder name that is not UTF-8 (no DB row can name it)")
        dst_str = dest_prefix + rel.replace("/", os.sep)
        if rf is primary:
            primary_dst = dst_str
        st = primary_st if rf is primary and primary_st is not None else os.stat(rf.key)
        old_len, edits, growth, issue = rewriter.for_file(rf.key, primary_line if rf is primary else None)
        if issue:
            notes.append(f"{rf.name}: {issue}")
        key = history_key(rf.name, tid)
        key = rf.thread_id if key == rf.thread_id else sys.intern(key)  # one shared string per id
        copies.append(FileCopy(rf.key, dst_str, rel, key, st.st_size, st.st_mtime_ns, old_len, edits, growth))
    if tid in dest.rows or tid in dest.index.by_thread:
        assert plan.remapper is not None
        differs, same_line1 = _same_as_dest(copies, dest, tid, plan.remapper) if tid in dest.rows else \
            ("DEST has a rollout with this id but no row", False)
        if differs is None:
            return skip("already in DEST (the same thread)" if same_line1 else
                        "already in DEST (the same thread; its folders or provider differ: imported with "
                        "another remap, or migrated since)")
        return skip(f"DEST already has a different thread with this id ({differs})", conflict=True)
    folders = []
    for fc, at in zip(copies, slots):
        dst = fc.dst_key
        folders.append(os.path.dirname(dst))
        if at in taken or dst in dest.index.by_path or (_folder_exists(folders[-1], present)
                                                        and os.path.lexists(dst)):
            return skip(f"{safe_str(fc.dst)} already exists in DEST", conflict=True)
        if fc.key in dest.history_keys:
            return skip(f"DEST's {HISTORY_DB} already has rows for {fc.key}", conflict=True)
    archived = primary.archived
    built, row_from, cwd_before = builder.build(tid, primary, primary_dst, name, row is not None,
                                                planned=row if row is not None else {}, meta_cwd=meta.cwd)
    for folder, at in zip(folders, slots):
        taken.add(at)  # SRC's own path string: a taken place costs no new string
        if folder not in made:
            _plan_dirs(plan, folder, str(dest.home.root), made)
    turns = sum(src.history_turns.get(fc.key, 0) for fc in copies)
    if src.history_db is not None and turns == 0 and _text(built.get("history_mode")) == "paginated":
        notes.append("the source keeps no history rows for it: " + (
            "it reads 0 turns until resumed once" if not archived else
            "archived, so it reads 0 turns and cannot be resumed until unarchived"))
    plan.imports.append(ThreadImport(
        thread_id=_text(built["id"]), key=tid, files=copies, builder=builder, primary=primary, primary_dst=primary_dst,
        use_src_row=row is not None, row_from=row_from, title=title, name=name,
        created=built.get("created_at") if isinstance(built.get("created_at"), int) else None,
        cwd_before=cwd_before, cwd_after=built["cwd"], archived=archived,
        provider=meta.model_provider or _text(built.get("model_provider")), history_turns=turns,
        why=why, notes=notes))


def _decompressed(plan: ImportPlan, files: List[RolloutFile], origin: Dict[str, str]
                  ) -> Tuple[List[RolloutFile], Optional[str]]:
    """A thread's files with each compressed one replaced by its decompressed copy in the private
    scratch folder (mtime kept): DEST gets the `.jsonl`, the source is never written."""
    from sessionkit.codexfiles.zstd import missing_reason, open_zst, digest_stream
    why = missing_reason()
    if why:
        return files, why
    out: List[RolloutFile] = []
    for rf in files:
        if not rf.compressed:
            out.append(rf)
            continue
        folder = plan.source.scratch / "decompressed" / rf.thread_id
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        dst = folder / row_path_of(rf.name)
        try:
            fd = os.open(str(dst), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
            try:
                with open_zst(rf.key) as fh:
                    digest_stream(fh, fd)
            finally:
                os.close(fd)
            st = os.stat(rf.key)
            os.utime(str(dst), ns=(st.st_mtime_ns, st.st_mtime_ns))
        except OSError as exc:
            return files, f"the zstd-compressed rollout does not decompress ({exc.strerror or exc})"
        copy = RolloutFile(key=str(dst), archived=rf.archived, thread_id=rf.thread_id, date=rf.date,
                           compressed=False, is_symlink=False)
        origin[copy.key] = rf.key
        out.append(copy)
    return out, None


def _folder_exists(folder: str, present: Dict[str, bool]) -> bool:
    """Whether DEST has the folder now (remembered: a home's threads share a few hundred day folders,
    and no file of a folder DEST lacks needs its own look-up)."""
    known = present.get(folder)
    if known is None:
        known = present[folder] = os.path.isdir(folder)
    return known


def _plan_dirs(plan: ImportPlan, folder: str, root: str, made: Set[str]) -> None:
    """Folders DEST lacks, parents first; `made` remembers every folder already seen (one string
    look-up per file: a home's threads share a few hundred day folders)."""
    chain = []
    while folder != root and folder not in made and not os.path.exists(folder):
        chain.append(folder)
        folder = os.path.dirname(folder)
    made.add(folder)
    for d in reversed(chain):
        made.add(d)
        plan.mkdirs.append(Path(d))


def _user_home(codex_home: str) -> Optional[str]:
    norm = codex_home.replace("\\", "/").rstrip("/")
    return norm.rsplit("/", 1)[0] if norm.endswith("/.codex") else None


def _suggest(plan: ImportPlan, src: SourceInputs, dest: DestInputs, remaps: Sequence[Remap]) -> None:
    """The old user home from SRC's rows' rollout_path, when the cwds are under it; and the
    provider migration when the imported threads are on another provider than DEST's."""
    root = dest.home.root
    if not remaps:
        here = os.path.normpath(str(root))
        olds = Counter({h: n for h, n in src.home_prefixes.items() if os.path.normpath(h) != here})
        if olds:
            old_home = max(olds.items(), key=lambda kv: kv[1])[0]  # most_common(1), without heapq
            old_user, new_user = _user_home(old_home), _user_home(str(root))
            cwds = [t.cwd_before for t in plan.imports]
            if old_user and new_user and old_user != new_user and any(has_prefix(c, old_user) for c in cwds):
                n = sum(1 for c in cwds if has_prefix(c, old_user))
                plan.suggested_remap_args = ["--remap-prefix", f"{old_user}={new_user}"]
                plan.suggested_remap = args_text(plan.suggested_remap_args)
                plan.notes.append(f"{n} thread(s) were made in folders under {safe_str(old_user)} (the old "
                                  f"user home); with {plan.suggested_remap} they list under the same folders here")
    current = dest.home.config.model_provider
    others: Dict[str, int] = {}
    for t in plan.imports:
        if t.provider and t.provider != current:
            others[t.provider] = others.get(t.provider, 0) + 1
    if others:
        listed = ", ".join(f"{p} ({n})" for p, n in sorted(others.items()))
        plan.provider_args = ["--target-provider", current] + [
            w for p in sorted(others) for w in ("--from-provider", p)] + ["--include-archived"]
        plan.provider_command = args_text(["provider_migrate.py", *plan.provider_args])
        plan.provider_hint = (f"{sum(others.values())} imported thread(s) are on another provider than this "
                              f"home's {shown(current)!r}: {shown(listed)}. The editors list only "
                              f"{shown(current)!r}; after the import run {plan.provider_command}")


def _local(ts: Optional[int]) -> str:
    if not ts:
        return ""
    try:
        return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return ""


def plan_report(plan: ImportPlan, sample: int) -> Dict[str, Any]:
    """The report a person reads before --apply: titles, dates and folders, not only ids."""
    imp = plan.imports
    return {
        "source": safe_str(plan.source.origin), "source_kind": plan.source.kind,
        "source_home": safe_str(plan.source.root) if plan.source.kind == "folder" else None,
        "threads_in_source": plan.threads_in_source,
        "to_import": len(imp), "to_import_active": sum(1 for t in imp if not t.archived),
        "to_import_archived": sum(1 for t in imp if t.archived),
        "already_present": sum(1 for s in plan.skipped if s.reason.startswith("already in DEST")),
        "skipped": len(plan.skipped), "conflicts": len(plan.conflicts),
        "files_to_copy": sum(len(t.files) for t in imp),
        "bytes_to_copy": sum(fc.new_size for t in imp for fc in t.files),
        "line1_rewrites": sum(1 for t in imp for fc in t.files if fc.edits),
        "history_turns_to_copy": sum(t.history_turns for t in imp),
        "folders_to_create": len(plan.mkdirs),
        "remaps": [f"{o}={n}" for o, n in plan.remaps],
        "remapped_threads": sum(1 for t in imp if t.cwd_before != t.cwd_after),
        "suggested_remap": plan.suggested_remap, "provider_hint": plan.provider_hint,
        "suggested_provider_migration": plan.provider_command,
        "notes": plan.notes,
        "imports_sample": [{
            "thread_id": t.thread_id, "name": t.name, "title": t.title[:100], "created": _local(t.created),
            "folder": safe_str(t.cwd_after), "folder_before": safe_str(t.cwd_before), "archived": t.archived,
            "provider": t.provider, "files": [fc.rel for fc in t.files], "history_turns": t.history_turns,
            "row_from": t.row_from, "why": t.why, "notes": list(t.notes),
            "comes_with": summary(t.extras.brings) if t.extras else [],
            "cannot_bring": t.extras.cannot if t.extras else []} for t in imp[:sample]],
        "comes_with": summary([b.split(" '")[0] for t in imp if t.extras for b in t.extras.brings]),
        "cannot_bring": sum(len(t.extras.cannot) for t in imp if t.extras),
        "cannot_bring_reasons": reason_counts([c for t in imp if t.extras for c in t.extras.cannot]),
        "skipped_sample": [{"thread_id": s.thread_id, "title": s.title[:100], "reason": s.reason}
                           for s in plan.skipped[:sample]],
        "conflicts_sample": [{"thread_id": s.thread_id, "title": s.title[:100], "reason": s.reason}
                             for s in plan.conflicts[:sample]],
    }


def shift_offsets(table: str, row: Dict[str, Any], fc: FileCopy, remapper: RolloutRemapper) -> Dict[str, Any]:
    """A history row with its byte offsets valid for DEST's copy of the file."""
    cols = OFFSET_COLUMNS.get(table, ())
    if not cols:
        return row
    out = dict(row)
    for col in cols:
        v = out.get(col)
        if isinstance(v, int):
            out[col] = remapper.moved(fc.src, v)
    return out


def history_rows(plan: ImportPlan, dest_columns: Dict[str, List[str]]) -> Dict[str, Dict[str, List[Dict[str, Any]]]]:
    """thread id -> table -> rows to insert into DEST's thread_history_1 (only the columns DEST has),
    one SELECT per table over SRC's private copy."""
    out: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    if plan.src_history_db is None or not plan.imports:
        return out
    remapper = plan.remapper
    assert remapper is not None
    by_key: Dict[str, Tuple[str, FileCopy]] = {}
    for t in plan.imports:
        for fc in t.files:
            by_key[fc.key] = (t.thread_id, fc)
    conn = connect_src(plan.src_history_db, plan.source.scratch)
    try:
        for table in HISTORY_TABLES:
            cols = dest_columns.get(table) or []
            src_cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            use = [c for c in src_cols if c in cols]
            if "thread_id" not in use:
                continue
            cur = conn.execute(f"SELECT {', '.join(chr(34) + c + chr(34) for c in use)} FROM {table}")
            for values in cur:
                rec = dict(zip(use, values))
                hit = by_key.get(norm_id(str(rec["thread_id"])))
                if hit is None:
                    continue
                tid, fc = hit
                out.setdefault(tid, {}).setdefault(table, []).append(shift_offsets(table, rec, fc, remapper))
    finally:
        conn.close()
    return out
