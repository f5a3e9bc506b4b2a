"""The shared snapshot of a home: one walk, one SELECT, one bounded head read per rollout.

The audit, the repair plan and the migration plan all read the home through `gather`, so a home is
read once per run and every thread id is normalised (lower-case) here, once.
"""
from __future__ import annotations

import gc
import json
import re
from operator import attrgetter
from typing import BinaryIO, Dict, List, Optional, Set, Tuple

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.home import CodexHome
from sessionkit.codexfiles.line1 import LINE1_LIMIT, _CHUNK, _rest_of_line1
from sessionkit.codexfiles.locks import CodexActivity, scan_activity
from sessionkit.codexfiles.paths import inside_test, is_absolute_file, open_regular, read_regular, resolves_inside
from sessionkit.codexfiles.record import Record
from sessionkit.ui.progress import Progress
from sessionkit.codexfiles.rollout_index import RolloutFile, RolloutIndex, SessionMeta, build_index, meta_from_line
from sessionkit.codexfiles.statedb import ThreadRow, load_threads
from sessionkit.codexfiles.zstd import read_head as zstd_head
from sessionkit.codexfiles.thread_files import file_for_row

BOM = b"\xef\xbb\xbf"
BOM_ERROR = "line 1 starts with a UTF-8 BOM (Codex 0.171 cannot read it: not listed, not readable)"
HEAD_CHUNK = 32 * 1024  # one read holds a usual line 1 (~21 KB) and the start of line 2
_ROOTS = b'"runtime_workspace_roots":'
_ACCOUNT_SCOPED = b'"account_scoped":true'
_BASE_INSTRUCTIONS = b',"base_instructions":'


class Head:
    """What a rollout's head says beyond line 1's SessionMeta (0.171 fields, shape of the file).
    Slotted: a 0.171 home has one per rollout."""

    __slots__ = ("only_meta", "bom", "roots", "account_scoped")

    def __init__(self, only_meta: bool = False, bom: bool = False, roots: Optional[List[str]] = None,
                 account_scoped: bool = False) -> None:
        self.only_meta = only_meta  # nothing after line 1: thread/list lists no such session
        self.bom = bom  # line 1 starts with a UTF-8 BOM: unreadable to Codex
        self.roots = roots  # session_meta.runtime_workspace_roots (0.171)
        self.account_scoped = account_scoped  # 0.171 writes it true on every session


class AuditInputs(Record):
    """Everything read from the home, once; the audit, repair and migration plans reuse it."""
    __slots__ = ("home", "rows", "index", "metas", "activity", "heads", "rows_by_id", "_exists", "_outside")
    home: CodexHome
    rows: List[ThreadRow]  # sorted by id
    index: RolloutIndex
    metas: Dict[str, SessionMeta]  # by file path
    activity: CodexActivity
    heads: Dict[str, Head]  # by file path, only files with something to say
    rows_by_id: Dict[str, ThreadRow]  # lower-case thread id -> row
    _exists: Dict[str, bool]  # path_exists, remembered
    _outside: Optional[List[ThreadRow]]

    def __init__(self, home: CodexHome, rows: List[ThreadRow], index: RolloutIndex, metas: Dict[str, SessionMeta],
                 activity: CodexActivity, heads: Optional[Dict[str, Head]] = None,
                 rows_by_id: Optional[Dict[str, ThreadRow]] = None) -> None:
        self.home, self.index, self.metas, self.activity = home, index, metas, activity
        self.heads = {} if heads is None else heads
        self.rows = sorted(rows, key=_row_id)  # every report lists by id (one pass when sorted)
        self.rows_by_id = rows_by_id if rows_by_id else {r.key: r for r in self.rows}
        self._exists: Dict[str, bool] = {}
        self._outside: Optional[List[ThreadRow]] = None

    def path_exists(self, path: str) -> bool:
        """A row's rollout_path names a file: indexed by the walk, else one stat per distinct path
        (every report section asks about the same moved or missing paths)."""
        if file_for_row(self.index.by_path, path) is not None:
            return True
        known = self._exists.get(path)
        if known is None:
            known = self._exists[path] = is_absolute_file(path)
        return known

    @property
    def outside_home(self) -> List[ThreadRow]:
        """Rows (in row order) whose rollout_path is outside this Codex home."""
        if self._outside is None:
            inside = inside_test(self.home.root)
            self._outside = [r for r in self.rows if r.rollout_path and not inside(r.rollout_path)]
        return self._outside

    def meta_for(self, rf: RolloutFile) -> SessionMeta:
        return self.metas[rf.key]

    def head_for(self, rf: RolloutFile) -> Head:
        return self.heads.get(rf.key) or _NO_HEAD

    def row_for(self, thread_id: str) -> Optional[ThreadRow]:
        """The row of a thread named as the audit's verdicts name it (a row's stored spelling)."""
        return self.rows_by_id.get(norm_id(thread_id))

    def files_for(self, key: str) -> List[RolloutFile]:
        return self.index.by_thread.get(key, [])

    @property
    def live(self) -> Set[str]:
        """Lower-case ids of threads whose writer lock is held."""
        return set(self.activity.live_threads)

    @property
    def own_thread(self) -> str:
        return (self.activity.agent_thread_id or "")

    def with_rows(self, rows: List[ThreadRow]) -> "AuditInputs":
        """The same files seen through another state DB's rows (the desktop app's DB)."""
        return AuditInputs(home=self.home, rows=rows, index=self.index, metas=self.metas,
                           activity=self.activity, heads=self.heads)


_NO_HEAD = Head()
_row_id = attrgetter("id")


def read_head(path: str, limit: int = LINE1_LIMIT) -> Tuple[Optional[bytes], Optional[str], bool, int]:
    """(line 1, error, only line 1 in the file, file size). One 32 KB read for a usual rollout (line 1
    is ~21 KB), never the whole file: past a longer line 1 the file size answers the last question."""
    try:
        chunk, size = read_regular(path, HEAD_CHUNK)
    except OSError as exc:
        return None, exc.strerror or str(exc), False, -1
    if not chunk:
        return None, "empty file", False, size
    cut = chunk.find(b"\n")
    if cut >= 0:
        if _NOT_SPACE.search(chunk, cut + 1):
            return chunk[:cut], None, False, size
        if size <= len(chunk):
            return chunk[:cut], None, True, size
    try:  # rare: line 1 longer than a chunk, or a chunk that ends in blanks with more file after it
        with open_regular(path, buffering=0) as fh:
            fh.seek(len(chunk))
            if cut >= 0:
                return chunk[:cut], None, not _rest_has_data(fh), size
            more, err = _rest_of_line1(fh, max(0, limit - len(chunk)))
            if more is None and err != "empty file":
                return None, err, False, size
            line = chunk + (more or b"")
            fh.seek(len(line) + 1)  # blanks after line 1 hold nothing either
            return line, None, size <= len(line) + 1 or not _rest_has_data(fh), size
    except OSError as exc:
        return None, exc.strerror or str(exc), False, size


_NOT_SPACE = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # what bytes.strip() would keep


def _rest_has_data(fh: BinaryIO) -> bool:
    """Anything but blanks from here on (bounded: stops at the first chunk with data)."""
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return False
        if _NOT_SPACE.search(chunk):
            return True


def head_extras(line: bytes, only_meta: bool, cwd: Optional[str] = None) -> Optional[Head]:
    """The 0.171 fields of line 1, looked for in the small part before base_instructions, where
    Codex writes them (measured on 0.171): these are report counts, every write re-reads the whole
    line. Roots equal to `[cwd]` (what 0.171 writes) are recognised from the bytes; only other roots
    are JSON-decoded."""
    bom = line.startswith(BOM)
    end = line.find(_BASE_INSTRUCTIONS)
    part = line[:end] if end > 0 else line
    scoped = _ACCOUNT_SCOPED in part
    roots: Optional[List[str]] = None
    at = part.find(_ROOTS)
    if at >= 0 and cwd is not None and _ROOTS + b"[" + json.dumps(cwd, ensure_ascii=False).encode(
            "utf-8", "surrogatepass") + b"]" in part:
        roots = [cwd]
    elif at >= 0:
        whole = part + b"}}" if end > 0 else line
        try:
            value = json.loads(whole.lstrip(BOM))["payload"].get("runtime_workspace_roots")
        except (ValueError, KeyError, TypeError, AttributeError):
            value = None
        if isinstance(value, list):
            roots = [r for r in value if isinstance(r, str)]
    if not (only_meta or bom or scoped or roots):
        return None
    return Head(only_meta=only_meta, bom=bom, roots=roots, account_scoped=scoped)


def gather(home: CodexHome, progress: Optional[Progress] = None) -> AuditInputs:
    """One walk, one SELECT, one bounded head read per rollout file."""
    progress = progress or Progress(None)
    collecting = gc.isenabled()
    gc.disable()  # hundreds of thousands of small acyclic objects: no cycles to collect meanwhile
    try:
        return _gather(home, progress)
    finally:
        gc.freeze()  # what was read lives to the end: later collections need not walk it again
        if collecting:
            gc.enable()


def _gather(home: CodexHome, progress: Progress) -> AuditInputs:
    progress.phase("scanning rollouts")
    index = build_index(home.root)
    progress.phase("reading the state DB")
    rows = load_threads(home.state_db.path)
    metas: Dict[str, SessionMeta] = {}
    heads: Dict[str, Head] = {}
    total = len(index.files)
    for n, rf in enumerate(index.files, 1):
        if rf.is_symlink and not resolves_inside(rf.path, home.root):
            metas[rf.key] = SessionMeta(error="a symlink to outside the Codex home (not followed)")
        else:
            if rf.compressed:  # Codex lists and reads it as before: so does the audit
                line, err, only = zstd_head(rf.key, LINE1_LIMIT)
            else:
                line, err, only, rf.size = read_head(rf.key)
            if line is None:
                metas[rf.key] = SessionMeta(error=err)
            else:
                meta = SessionMeta(error=BOM_ERROR) if line.startswith(BOM) else meta_from_line(line)
                metas[rf.key] = meta
                extra = head_extras(line, only, meta.cwd)
                if extra is not None:
                    heads[rf.key] = extra
        progress.tick("reading line 1 of each rollout", n, total)
    progress.done()
    return AuditInputs(home=home, rows=rows, index=index, metas=metas, activity=scan_activity(home.root),
                       heads=heads)
