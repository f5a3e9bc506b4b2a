"""Read a rollout's line 1 (its session_meta), bounded: the edits are planned by rollout_edit."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Optional, Tuple
from sessionkit.codexfiles.paths import open_regular


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
