"""Edit one field of a rollout's line 1 in place: same inode, same length where the value allows.

An edit is recorded as a small span (offset, old bytes, new bytes) plus digests of the whole line
before and after, so a journal stays small and a rollback restores the exact bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Dict, Optional, Tuple


LINE1_LIMIT = 8 * 1024 * 1024  # line 1 is ~20 KB; anything past this is not a real session_meta
_CHUNK = 64 * 1024


def read_line1(path: Path, limit: int = LINE1_LIMIT) -> Tuple[Optional[bytes], Optional[str]]:
    """Line 1's bytes (no newline) or why not; reads no more than `limit` bytes."""
    try:
        with open(path, "rb", buffering=0) as fh:
            return _rest_of_line1(fh, limit)
    except OSError as exc:
        return None, exc.strerror or str(exc)


def _rest_of_line1(fh: BinaryIO, limit: int) -> Tuple[Optional[bytes], Optional[str]]:
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


@lru_cache(maxsize=1024)
def field_token(key: str, value: Any) -> bytes:
    """`"key":value` as Codex writes it (compact JSON); cached: a home has few distinct values."""
    return (json.dumps(key) + ":" + json.dumps(value, ensure_ascii=False, separators=(",", ":"))).encode()


def find_field(line: bytes, key: str, value: Any) -> Optional[Tuple[int, int]]:
    """(start, end) of `"key":value` plus any padding after it, when it occurs exactly once."""
    token = field_token(key, value)
    if line.count(token) != 1:
        return None
    start = line.find(token)
    end = start + len(token)
    while end < len(line) and line[end] in b" \t":
        end += 1
    return start, end


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Line1Edit:
    offset: int
    old_span: bytes
    new_span: bytes
    old_len: int
    old_sha: str = ""
    new_sha: str = ""

    @property
    def growth(self) -> int:
        return len(self.new_span) - len(self.old_span)

    def inverse(self) -> "Line1Edit":
        return Line1Edit(self.offset, self.new_span, self.old_span, self.old_len + self.growth,
                         self.new_sha, self.old_sha)

    def to_record(self) -> Dict[str, Any]:
        from .artifacts import b64
        return {"offset": self.offset, "old_span": b64(self.old_span), "new_span": b64(self.new_span),
                "old_len": self.old_len, "old_sha": self.old_sha, "new_sha": self.new_sha}

    @classmethod
    def from_record(cls, rec: Dict[str, Any]) -> "Line1Edit":
        from .artifacts import unb64
        return cls(int(rec["offset"]), unb64(rec["old_span"]), unb64(rec["new_span"]), int(rec["old_len"]),
                   str(rec["old_sha"]), str(rec["new_sha"]))


def plan_field_edit(span: Tuple[int, int], key: str, old_value: Any, new_value: Any) -> Line1Edit:
    """The span edit that swaps the value, padded with JSON whitespace to keep the length if it can.
    The line's length and digests are filled in by `seal`, right before writing."""
    start, end = span
    token = field_token(key, new_value)
    room = end - start
    token += b" " * max(0, room - len(token))
    old_span = field_token(key, old_value)
    old_span += b" " * (room - len(old_span))
    return Line1Edit(start, old_span, token, -1)


def seal(path: Path, edit: Line1Edit, key: str, new_value: Any) -> Line1Edit:
    """Check the planned edit against line 1 as it is now, and record its length and both digests."""
    line, err = read_line1(path)
    if line is None or line[edit.offset:edit.offset + len(edit.old_span)] != edit.old_span:
        raise ValueError(f"{path}: line 1 changed since the plan was made{f' ({err})' if err else ''}")
    new = line[:edit.offset] + edit.new_span + line[edit.offset + len(edit.old_span):]
    obj, want = json.loads(line), json.loads(new)
    obj["payload"][key] = new_value
    if want != obj:
        raise ValueError(f"{path}: the planned edit does not change only payload.{key}")
    edit.old_len = len(line)
    edit.old_sha, edit.new_sha = digest(line), digest(new)
    return edit


def state_of(path: Path, edit: Line1Edit) -> str:
    """'old', 'new', 'torn' (span neither, rest intact) or 'changed' (line 1 is something else)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(max(edit.old_len, edit.old_len + edit.growth) + 1)
    except OSError:
        return "changed"
    cut = head.find(b"\n")
    line = head[:cut] if cut >= 0 else head
    if digest(line) == edit.old_sha:
        return "old"
    if digest(line) == edit.new_sha:
        return "new"
    if edit.growth == 0 and len(line) == edit.old_len:
        mended = line[:edit.offset] + edit.old_span + line[edit.offset + len(edit.old_span):]
        if digest(mended) == edit.old_sha:
            return "torn"
    return "changed"


def apply_edit(path: Path, edit: Line1Edit, mtime_ns: int) -> None:
    """Write the edit in place (same inode: Codex may hold the file open). Same length: only the
    span is written; otherwise the rest of the file is rewritten after it. mtime set to `mtime_ns`."""
    with open(path, "r+b") as fh:
        if edit.growth == 0:
            fh.seek(edit.offset)
            fh.write(edit.new_span)
        else:
            fh.seek(edit.offset + len(edit.old_span))
            rest = fh.read()
            fh.seek(edit.offset)
            fh.write(edit.new_span + rest)
            fh.truncate()
    os.utime(str(path), ns=(mtime_ns, mtime_ns))
