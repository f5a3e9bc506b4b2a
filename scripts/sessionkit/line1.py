"""Find and plan edits of fields in a rollout's line 1 (the writes are ops.Line1Rewrite).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Optional, Tuple
from .paths import open_regular


LINE1_LIMIT = 8 * 1024 * 1024  # line 1 is ~20 KB; anything past this is not a real session_meta
_CHUNK = 64 * 1024


def read_line1(path: Path, limit: int = LINE1_LIMIT) -> Tuple[Optional[bytes], Optional[str]]:
    """Line 1's bytes (no newline) or why not; reads no more than `limit` bytes."""
    try:
        with open_regular(path, buffering=0) as fh:
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


def field_token(key: str, value: Any) -> bytes:
    """`"key":value` as Codex writes it (compact JSON, UTF-8 unescaped; a lone surrogate passes
    through as the bytes a file would hold). Scalars are cached: a home has few distinct values."""
    if isinstance(value, (list, dict)):
        return _encode_token(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    return _scalar_token(key, value)


@lru_cache(maxsize=1024)
def _scalar_token(key: str, value: Any) -> bytes:
    return _encode_token(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _encode_token(key: str, value_json: str) -> bytes:
    return (json.dumps(key) + ":" + value_json).encode("utf-8", "surrogatepass")


def find_field(line: bytes, key: str, value: Any) -> Optional[Tuple[int, int]]:
    """(start, end) of `"key":value` plus any padding after it, when it occurs exactly once."""
    return find_token(line, field_token(key, value))


def find_token(line: bytes, token: bytes) -> Optional[Tuple[int, int]]:
    """(start, end) of the token plus any padding after it, when it occurs exactly once."""
    if line.count(token) != 1:
        return None
    start = line.find(token)
    end = start + len(token)
    while end < len(line) and line[end] in b" \t":
        end += 1
    return start, end


@dataclass
class Line1Edit:
    """A planned span swap (the plan's view: which field, how many bytes it grows); the write itself
    is an ops.Line1Rewrite, which re-reads the file under the thread's writer lock."""
    offset: int
    old_span: bytes
    new_span: bytes
    old_len: int
    old_sha: str = ""
    new_sha: str = ""

    @property
    def growth(self) -> int:
        return len(self.new_span) - len(self.old_span)


def plan_field_edit(span: Tuple[int, int], key: str, old_value: Any, new_value: Any) -> Line1Edit:
    """The span edit that swaps the value, padded with JSON whitespace to keep the length if it can.
    The write is an ops.Line1Rewrite, which checks the line again right before writing."""
    start, end = span
    token = field_token(key, new_value)
    room = end - start
    token += b" " * max(0, room - len(token))
    old_span = field_token(key, old_value)
    old_span += b" " * (room - len(old_span))
    return Line1Edit(start, old_span, token, -1)
