"""Rewrite one field of a rollout's line 1 in place, keeping the inode and, where it can, the length."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .rollout_index import read_line1


@dataclass
class Line1Edit:
    old: bytes  # line 1 as it is (no newline)
    new: bytes  # line 1 as it will be
    growth: int  # bytes added to the line (0 when padded to the same length)


def _token(key: str, value: Any) -> bytes:
    return (json.dumps(key) + ":" + json.dumps(value, ensure_ascii=False, separators=(",", ":"))).encode()


def edit_payload_field(line: bytes, key: str, old_value: Any, new_value: Any) -> Optional[Line1Edit]:
    """Swap `payload[key]` from old to new; pad with JSON whitespace so the length stays when it can.

    Returns None when the line does not hold exactly one such field with the old value.
    """
    pattern = re.compile(re.escape(_token(key, old_value)) + rb"([ \t]*)")
    matches = list(pattern.finditer(line))
    if len(matches) != 1:
        return None
    m = matches[0]
    room = m.end() - m.start()
    token = _token(key, new_value)
    growth = max(0, len(token) - room)
    token += b" " * max(0, room - len(token))
    new = line[:m.start()] + token + line[m.end():]
    try:
        obj = json.loads(line)
        want = json.loads(new)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("payload"), dict):
        return None
    obj["payload"][key] = new_value
    if want != obj:
        return None  # the match was not the payload's field
    return Line1Edit(old=line, new=new, growth=growth)


def write_line1(path: Path, expected_old: bytes, new: bytes, mtime_ns: int) -> None:
    """Replace line 1 in place (same inode); a longer or shorter line rewrites the rest after it."""
    fd = os.open(str(path), os.O_RDWR)
    try:
        head = os.pread(fd, len(expected_old) + 1, 0)
        if head != expected_old + b"\n":
            raise RuntimeError(f"{path}: line 1 changed since the plan was made")
        if len(new) == len(expected_old):
            os.pwrite(fd, new, 0)
        else:
            size = os.fstat(fd).st_size
            rest = os.pread(fd, size - len(expected_old), len(expected_old))
            data = new + rest
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.utime(str(path), ns=(mtime_ns, mtime_ns))


def current_line1(path: Path) -> Optional[bytes]:
    line, _err = read_line1(path)
    return line
