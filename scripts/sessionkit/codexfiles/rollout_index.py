"""One walk of `sessions/` and `archived_sessions/`, and bounded reads of a rollout's line 1."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.line1 import LINE1_LIMIT, read_line1
from sessionkit.codexfiles.record import Record

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ROLLOUT_NAME = re.compile(
    r"^rollout-(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}-\d{2}-\d{2})-(?P<thread>" + _UUID + r")"
    r"(?:_(?P<rollout>" + _UUID + r"))?\.jsonl(?P<zst>\.zst)?$")


class RolloutFile:
    """One rollout file found by the walk. Slotted: a heavy user has 100,000 of them."""

    __slots__ = ("key", "archived", "thread_id", "date", "compressed", "is_symlink", "size", "linked_root", "_path")

    def __init__(self, key: str, archived: bool, thread_id: str, date: str, compressed: bool,
                 is_symlink: bool, linked_root: bool = False) -> None:
        self.key = key  # the full path as a string: what the index is looked up by
        self.archived = archived  # found under archived_sessions/
        self.thread_id = thread_id
        self.date = date  # YYYY-MM-DD from the file name (local time, as Codex names it)
        self.compressed = compressed
        self.is_symlink = is_symlink
        self.size = -1  # bytes when its head was read (snapshot.gather); -1: not read
        self.linked_root = linked_root  # under a symlinked sessions/ or archived_sessions/: read, never written
        self._path: Optional[Path] = None

    @property
    def path(self) -> Path:
        """`key` as a Path, made once when first asked (most files are never asked)."""
        if self._path is None:
            self._path = Path(self.key)
        return self._path

    @property
    def name(self) -> str:
        return os.path.basename(self.key)

    @property
    def row_path(self) -> str:
        """The path a row names for this file: a compressed `.jsonl.zst` keeps its `.jsonl` path."""
        return self.key[:-4] if self.compressed else self.key


class RolloutIndex(Record):
    """Every rollout under a home, by thread id, from a single walk."""
    __slots__ = ("files", "by_thread", "by_path", "malformed", "skipped_links", "unreadable")
    files: List[RolloutFile]
    by_thread: Dict[str, List[RolloutFile]]
    by_path: Dict[str, RolloutFile]
    malformed: List[Path]  # *.jsonl whose name Codex cannot parse
    skipped_links: List[Path]  # symlinked folders, not followed
    unreadable: List[Tuple[Path, str]]

    def __init__(self, files: Optional[List[RolloutFile]] = None,
                 by_thread: Optional[Dict[str, List[RolloutFile]]] = None,
                 by_path: Optional[Dict[str, RolloutFile]] = None, malformed: Optional[List[Path]] = None,
                 skipped_links: Optional[List[Path]] = None, unreadable: Optional[List[Tuple[Path, str]]] = None) -> None:
        self.files = [] if files is None else files
        self.by_thread = {} if by_thread is None else by_thread
        self.by_path = {} if by_path is None else by_path
        self.malformed = [] if malformed is None else malformed
        self.skipped_links = [] if skipped_links is None else skipped_links
        self.unreadable = [] if unreadable is None else unreadable

    @property
    def active(self) -> List[RolloutFile]:
        return [f for f in self.files if not f.archived]

    @property
    def archived(self) -> List[RolloutFile]:
        return [f for f in self.files if f.archived]

    def add(self, rf: RolloutFile) -> None:
        self.files.append(rf)
        self.by_thread.setdefault(rf.thread_id, []).append(rf)
        self.by_path[rf.key] = rf
        if rf.compressed:  # Codex reads `X.jsonl.zst` for a row naming `X.jsonl` (a plain X.jsonl wins)
            self.by_path.setdefault(rf.row_path, rf)


def _walk(folder: Path, archived: bool, index: RolloutIndex, linked_root: bool = False) -> None:
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            index.unreadable.append((current, exc.strerror or str(exc)))
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                link = entry.is_symlink()
                if link and entry.is_dir():
                    index.skipped_links.append(Path(entry.path))
                    continue
            except OSError as exc:
                index.unreadable.append((Path(entry.path), exc.strerror or str(exc)))
                continue
            name = entry.name
            if not (name.endswith(".jsonl") or name.endswith(".jsonl.zst")):
                continue
            match = ROLLOUT_NAME.match(name)
            if not match:
                index.malformed.append(Path(entry.path))
                continue
            try:
                regular = entry.is_file()  # d_type: no stat for a plain file
            except OSError:
                regular = False
            if not regular:  # a FIFO, socket or device would block a read forever: never opened
                index.unreadable.append((Path(entry.path), "not a regular file (never opened)"))
                continue
            index.add(RolloutFile(key=entry.path, archived=archived, thread_id=norm_id(match.group("thread")),
                                  date=sys.intern(match.group("date")), compressed=bool(match.group("zst")), is_symlink=link,
                                  linked_root=linked_root))


def build_index(home_root: Path) -> RolloutIndex:
    """The one walk: never call this per thread."""
    index = RolloutIndex()
    for sub, archived in (("sessions", False), ("archived_sessions", True)):
        folder = home_root / sub
        if folder.is_dir():  # a symlinked root (on another disk) is followed, as Codex lists and reads it
            _walk(folder, archived, index, linked_root=folder.is_symlink())
        elif folder.is_symlink():
            index.skipped_links.append(folder)  # a dangling link
    index.files.sort(key=lambda f: f.key)
    return index


class SessionMeta:
    """What line 1 (`session_meta`) says; `error` set when it cannot be used. Slotted: one per rollout."""

    __slots__ = ("id", "key", "model_provider", "has_provider", "cwd", "source_kind",
                 "forked_from_id", "parent_key", "error")

    def __init__(self, error: Optional[str] = None) -> None:
        self.id: Optional[str] = None  # as written (what an edit of line 1 keeps)
        self.key: Optional[str] = None  # `id` normalised (codexfiles/ids.py): what is compared
        self.model_provider: Optional[str] = None
        self.has_provider = False
        self.cwd: Optional[str] = None
        self.source_kind = ""  # cli, vscode, exec, subagent, ...
        self.forked_from_id: Optional[str] = None
        self.parent_key: Optional[str] = None  # `forked_from_id` normalised
        self.error = error


_BASE_INSTRUCTIONS = b',"base_instructions":'


def source_kind(source: object) -> str:
    """`"cli"` -> cli; `{"subagent": "review"}` -> subagent."""
    if isinstance(source, dict):
        return sys.intern(str(next(iter(source), "")))
    return sys.intern(source) if isinstance(source, str) else ""


def not_unicode(text: str) -> bool:
    """A lone surrogate (`\\ud800` escaped in JSON, or a name that is not UTF-8): Python decodes it,
    but it cannot be encoded, bound into SQLite, nor read by Codex's JSON parser (serde_json)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _bad_field(p: Dict[str, object]) -> Optional[str]:
    """The first field of session_meta this tool reads that Codex could not parse either."""
    tid, provider, cwd, source = p.get("id"), p.get("model_provider"), p.get("cwd"), p.get("source")
    if tid.__class__ is str and provider.__class__ is str and cwd.__class__ is str and \
            source.__class__ is str and p.get("forked_from_id") is None:
        try:  # the usual line 1: four strings, one encode
            (tid + provider + cwd + source).encode("utf-8")
            return None
        except UnicodeEncodeError:
            pass
    for key in ("id", "model_provider", "cwd", "forked_from_id"):
        value = p.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"session_meta.{key} is a {type(value).__name__}, not a string"
        if not_unicode(value):
            return f"session_meta.{key} holds a lone surrogate escape (not valid Unicode)"
    source = p.get("source")
    if isinstance(source, dict):
        source = next(iter(source), "")
    if isinstance(source, str) and not_unicode(source):
        return "session_meta.source holds a lone surrogate escape (not valid Unicode)"
    return None


def parse_session_meta(line: bytes) -> SessionMeta:
    meta = SessionMeta()
    try:  # a usual line starts with `{`: decoded here, skipping json's encoding sniffing (BOM, UTF-16)
        obj = json.loads(line.decode("utf-8", "surrogatepass") if line[:1] == b"{" else line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        meta.error = "line 1 is not JSON (truncated or corrupt)"
        return meta
    if not isinstance(obj, dict) or obj.get("type") != "session_meta" or not isinstance(obj.get("payload"), dict):
        meta.error = "line 1 is not a session_meta record"
        return meta
    p = obj["payload"]
    bad = _bad_field(p)
    if bad:
        meta.error = bad
        return meta
    meta.id = p.get("id")
    if meta.id is None:
        meta.error = "session_meta has no id"
    else:
        meta.key = norm_id(meta.id)
    meta.has_provider = "model_provider" in p
    provider = p.get("model_provider")
    if isinstance(provider, str):
        meta.model_provider = sys.intern(provider)
    meta.cwd = sys.intern(p["cwd"]) if isinstance(p.get("cwd"), str) else None
    meta.source_kind = source_kind(p.get("source"))
    meta.forked_from_id = p.get("forked_from_id")
    if meta.forked_from_id:
        meta.parent_key = norm_id(meta.forked_from_id)
    return meta


def load_session_meta(path: Path, limit: int = LINE1_LIMIT) -> SessionMeta:
    """Line 1 read whole (bounded), but JSON-decoded only up to base_instructions when that part
    holds every field asked about: Codex writes ~20 KB of instructions after id, cwd, source and
    model_provider. A line that does not end in `}` is not a whole record, so it is decoded in full."""
    line, err = read_line1(path, limit)
    if line is None:
        return SessionMeta(error=err)
    return meta_from_line(line)


def meta_from_line(line: bytes) -> SessionMeta:
    """A SessionMeta from line 1's bytes, decoding only the part before base_instructions when it can."""
    at = line.find(_BASE_INSTRUCTIONS)
    if at > 0 and line.endswith(b"}"):
        meta = parse_session_meta(line[:at] + b"}}")
        if meta.error is None and meta.has_provider:
            return meta
    return parse_session_meta(line)


LINKED_ROOT = ("its folder (sessions/ or archived_sessions/) is a symlink out of the Codex home: read, never "
               "written (a run writes only inside the home; move the folder back to let it change this session)")


def unusable_reason(rf: RolloutFile, meta: SessionMeta, thread_id: str) -> Optional[str]:
    """Why this file cannot be written for this thread (Codex trusts a rollout only when its
    session_meta.id is the thread), or None when it can."""
    if rf.is_symlink:  # the walk follows no symlinked folder below the roots
        return "the file is a symlink: never written through"
    if meta.error:
        return f"line 1 is unusable ({meta.error})"
    if not meta.key or meta.key != norm_id(thread_id):
        return "line 1 belongs to another thread (session_meta.id differs)"
    if rf.compressed:  # usable when this Python or system can read zstd (a run decompresses it first)
        from sessionkit.codexfiles.zstd import missing_reason
        return missing_reason()
    return None


def row_path_of(file_path: str) -> str:
    """The path a row keeps for a rollout file: `X.jsonl` for `X.jsonl.zst` (as Codex keeps it)."""
    return file_path[:-4] if file_path.endswith(".jsonl.zst") else file_path


def file_path_for(row_path: str, rf: RolloutFile) -> str:
    """Where `rf` lies when a row names `row_path`: a compressed file keeps its `.zst`."""
    return row_path + ".zst" if rf.compressed and not row_path.endswith(".zst") else row_path
