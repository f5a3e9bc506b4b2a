"""Read a rollout's line 1 (its session_meta), bounded: the edits are planned by rollout_edit."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Optional, Tuple

from sessionkit.codexfiles import host


LINE1_LIMIT = 8 * 1024 * 1024  # line 1 is ~20 KB; anything past this is not a real session_meta
_CHUNK = 64 * 1024


def read_line1(path: Path, limit: int = LINE1_LIMIT) -> Tuple[Optional[bytes], Optional[str]]:
    """Line 1's bytes (no newline) or why not; reads no more than `limit` bytes. The common case
    (line 1 within the first read) is one open, fstat and read, no file object."""
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | host.BINARY)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device named like a rollout: never read
            return None, "not a regular file"
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        first = os.read(fd, _CHUNK)
        cut = first.find(b"\n")
        if cut >= 0:
            return first[:cut], None
        with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:  # a long line 1 (or a short read): the rest
            fh.seek(len(first))
            return _rest_of_line1(fh, limit, first)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    finally:
        os.close(fd)


def _rest_of_line1(fh: BinaryIO, limit: int, buf: bytes = b"") -> Tuple[Optional[bytes], Optional[str]]:
    """Line 1 read on from `buf` (what was read before), while no more than `limit` bytes are held."""
    while len(buf) <= limit:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return (buf, None) if buf else (None, "empty file")
        cut = chunk.find(b"\n")
        if cut >= 0:
            return buf + chunk[:cut], None
        buf += chunk
    return None, f"line 1 longer than {limit} bytes"


