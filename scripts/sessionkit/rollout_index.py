"""One walk of `sessions/` and `archived_sessions/`, and bounded reads of a rollout's line 1."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .line1 import find_field

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
ROLLOUT_NAME = re.compile(
    r"^rollout-(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}-\d{2}-\d{2})-(?P<thread>" + _UUID + r")"
    r"(?:_(?P<rollout>" + _UUID + r"))?\.jsonl(?P<zst>\.zst)?$")
LINE1_LIMIT = 8 * 1024 * 1024  # line 1 is ~20 KB; anything past this is not a real session_meta
_CHUNK = 64 * 1024


@dataclass
class RolloutFile:
    key: str  # the full path as a string: what the index is looked up by
    archived: bool  # found under archived_sessions/
    thread_id: str
    date: str  # YYYY-MM-DD from the file name (local time, as Codex names it)
    compressed: bool
    is_symlink: bool

    @property
    def path(self) -> Path:
        return Path(self.key)

    @property
    def name(self) -> str:
        return os.path.basename(self.key)


@dataclass
class RolloutIndex:
    """Every rollout under a home, by thread id, from a single walk."""

    files: List[RolloutFile] = field(default_factory=list)
    by_thread: Dict[str, List[RolloutFile]] = field(default_factory=dict)
    by_path: Dict[str, RolloutFile] = field(default_factory=dict)
    malformed: List[Path] = field(default_factory=list)  # *.jsonl whose name Codex cannot parse
    skipped_links: List[Path] = field(default_factory=list)  # symlinked folders, not followed
    unreadable: List[Tuple[Path, str]] = field(default_factory=list)

    @property
    def active(self) -> List[RolloutFile]:
        return [f for f in self.files if not f.archived]

    @property
    def archived(self) -> List[RolloutFile]:
        return [f for f in self.files if f.archived]

    def add(self, rf: RolloutFile) -> None:
        self.files.append(rf)
        self.by_thread.setdefault(rf.thread_id.lower(), []).append(rf)
        self.by_path[rf.key] = rf


def parse_rollout_name(name: str) -> Optional[re.Match]:
    return ROLLOUT_NAME.match(name)


def _walk(folder: Path, archived: bool, index: RolloutIndex) -> None:
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
            index.add(RolloutFile(key=entry.path, archived=archived, thread_id=match.group("thread").lower(),
                                  date=match.group("date"), compressed=bool(match.group("zst")), is_symlink=link))


def build_index(home_root: Path) -> RolloutIndex:
    """The one walk: never call this per thread."""
    index = RolloutIndex()
    for sub, archived in (("sessions", False), ("archived_sessions", True)):
        folder = home_root / sub
        if folder.is_dir() and not folder.is_symlink():
            _walk(folder, archived, index)
        elif folder.is_symlink():
            index.skipped_links.append(folder)
    index.files.sort(key=lambda f: f.key)
    return index


@dataclass
class SessionMeta:
    """What line 1 (`session_meta`) says; `error` set when it cannot be used."""

    raw_len: int = 0  # bytes of line 1, newline excluded
    id: Optional[str] = None
    model_provider: Optional[str] = None
    has_provider: bool = False
    provider_span: Optional[Tuple[int, int]] = None  # where `"model_provider":"..."` sits in line 1
    cwd: Optional[str] = None
    source: Optional[object] = None
    history_mode: Optional[str] = None
    forked_from_id: Optional[str] = None
    timestamp: Optional[str] = None
    error: Optional[str] = None


def read_line1(path: Path, limit: int = LINE1_LIMIT) -> Tuple[Optional[bytes], Optional[str]]:
    """Line 1's bytes (no newline) or why not; reads no more than `limit` bytes."""
    try:
        with open(path, "rb") as fh:
            buf = b""
            while len(buf) <= limit:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    return (buf, None) if buf else (None, "empty file")
                cut = chunk.find(b"\n")
                if cut >= 0:
                    return buf + chunk[:cut], None
                buf += chunk
            return None, f"line 1 longer than {limit} bytes"
    except OSError as exc:
        return None, exc.strerror or str(exc)


def parse_session_meta(line: bytes) -> SessionMeta:
    meta = SessionMeta(raw_len=len(line))
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        meta.error = "line 1 is not JSON (truncated or corrupt)"
        return meta
    if not isinstance(obj, dict) or obj.get("type") != "session_meta" or not isinstance(obj.get("payload"), dict):
        meta.error = "line 1 is not a session_meta record"
        return meta
    p = obj["payload"]
    meta.id = p.get("id") if isinstance(p.get("id"), str) else None
    if meta.id is None:
        meta.error = "session_meta has no id"
    meta.has_provider = "model_provider" in p
    meta.model_provider = p.get("model_provider") if isinstance(p.get("model_provider"), str) else None
    if meta.model_provider is not None:
        meta.provider_span = find_field(line, "model_provider", meta.model_provider)
    meta.cwd = p.get("cwd") if isinstance(p.get("cwd"), str) else None
    meta.source = p.get("source")
    meta.history_mode = p.get("history_mode") if isinstance(p.get("history_mode"), str) else None
    meta.forked_from_id = p.get("forked_from_id") if isinstance(p.get("forked_from_id"), str) else None
    meta.timestamp = p.get("timestamp") if isinstance(p.get("timestamp"), str) else None
    return meta


def load_session_meta(path: Path, limit: int = LINE1_LIMIT) -> SessionMeta:
    line, err = read_line1(path, limit)
    if line is None:
        return SessionMeta(error=err)
    return parse_session_meta(line)
