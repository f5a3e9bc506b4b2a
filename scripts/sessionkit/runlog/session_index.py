"""`session_index.jsonl`: where Codex appends `{"id","thread_name","updated_at"}` on every
`thread/name/set`. Codex 0.171 shows a legacy (non-paginated) thread's name from here only, so an
import writes those names here too: one journaled append (IndexAppend) that undo takes back."""
from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.codexfiles.faults import point
from sessionkit.codexfiles.paths import write_all
from sessionkit.runlog.ops import CHANGED, NEW, OLD, Op, RecordError, _b64, _unb64, strict

SESSION_INDEX = "session_index.jsonl"


def name_lines(names: Sequence[Tuple[str, str]], now: Optional[datetime] = None) -> bytes:
    """The lines Codex itself appends for these (thread id, name) pairs."""
    ts = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return b"".join(json.dumps({"id": t, "thread_name": n, "updated_at": ts}, ensure_ascii=False,
                               separators=(",", ":")).encode("utf-8", "surrogatepass") + b"\n"
                    for t, n in names)


def _read_from(path: str, offset: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read()


class IndexAppend(Op):
    """Append `data` (whole lines) to session_index.jsonl (created when missing). Undo takes exactly
    these bytes out again, keeping anything Codex appended since; the old mtime comes back when
    nothing else changed."""
    KIND: ClassVar[str] = "index_append"
    _INIT: ClassVar[Tuple[str, ...]] = ("path", "data", "old_size", "old_mtime_ns", "lead", "thread_id")

    def __init__(self, path: str, data: bytes, old_size: int = -1, old_mtime_ns: int = 0, lead: bytes = b"",
                 thread_id: Optional[str] = None) -> None:
        self.path = path
        self.data = data
        self.old_size = old_size  # -1: the file did not exist
        self.old_mtime_ns = old_mtime_ns
        self.lead = lead  # a newline first when the old file did not end in one
        self.thread_id = thread_id

    @property
    def added(self) -> bytes:
        return self.lead + self.data

    def served(self) -> List[str]:
        """The threads whose names these lines are (older records too, which name no thread): the
        lines are taken back only when each of those threads is undone."""
        out = []
        for line in self.data.splitlines():
            try:
                tid = json.loads(line.decode("utf-8", "surrogatepass")).get("id")
            except (ValueError, UnicodeDecodeError, AttributeError):
                continue
            if isinstance(tid, str):
                out.append(tid)
        return out

    def to_record(self) -> Dict[str, Any]:
        return {"op": self.KIND, "path": self.path, "data": _b64(self.data), "old_size": self.old_size,
                "old_mtime_ns": self.old_mtime_ns, "lead": _b64(self.lead), "thread_id": self.thread_id}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "IndexAppend":
        f = strict(rec, {"path": "str", "data": "str", "old_size": "int", "old_mtime_ns": "int", "lead": "str"},
                   {"thread_id": "str?"})
        f["data"], f["lead"] = _unb64(f["data"], "index_append data"), _unb64(f["lead"], "index_append lead")
        if os.path.basename(f["path"]) != SESSION_INDEX or f["lead"] not in (b"", b"\n") or \
                not f["data"].endswith(b"\n"):
            raise RecordError("journal record 'index_append': not an append of whole lines to session_index.jsonl")
        return cls(**f)

    def paths(self) -> List[str]:
        return [self.path, self.path + ".sessionkit-tmp"]

    def prepare(self, run_dir: Path) -> Optional[str]:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            self.old_size, self.lead = -1, b""
            return None
        except OSError as exc:
            return f"{self.path}: {exc.strerror}"
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            return f"{self.path} is not a plain file (a symlink or hard link): names not written"
        self.old_size, self.old_mtime_ns = st.st_size, st.st_mtime_ns
        last = _read_from(self.path, st.st_size - 1) if st.st_size else b"\n"
        self.lead = b"" if last == b"\n" else b"\n"
        return None

    def apply(self) -> None:
        flags = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | host.BINARY | (
            os.O_CREAT | os.O_EXCL if self.old_size < 0 else os.O_APPEND)
        fd = os.open(self.path, flags, 0o600)
        try:
            if self.old_size >= 0 and os.fstat(fd).st_size != self.old_size:
                raise UserError(f"{self.path} changed since it was checked")
            write_all(fd, self.added)
            os.fsync(fd)
        finally:
            os.close(fd)
        point("file")

    def _ours_at(self) -> Optional[int]:
        """Where the appended bytes sit now (at the old end), or None."""
        start = max(self.old_size, 0)
        try:
            tail = _read_from(self.path, start)
        except OSError:
            return None
        return start if tail.startswith(self.added) else None

    def state(self) -> str:
        if not os.path.lexists(self.path):
            return OLD if self.old_size < 0 else CHANGED
        size = os.lstat(self.path).st_size
        if size == max(self.old_size, 0) and self.old_size >= 0:
            return OLD
        return NEW if self._ours_at() is not None else CHANGED

    def undo(self) -> None:
        at = self._ours_at()
        if at is None:
            return
        size = os.lstat(self.path).st_size
        if size == at + len(self.added):  # nothing after ours: cut it off (or remove the file we made)
            if self.old_size < 0:
                os.unlink(self.path)
                return
            os.truncate(self.path, self.old_size)
            os.utime(self.path, ns=(self.old_mtime_ns, self.old_mtime_ns))
            return
        rest = _read_from(self.path, at + len(self.added))  # Codex appended since: keep its lines
        tmp = self.path + ".sessionkit-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY, 0o600)
        try:
            with open(self.path, "rb") as fh:
                write_all(fd, fh.read(at))
            write_all(fd, rest)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path)
