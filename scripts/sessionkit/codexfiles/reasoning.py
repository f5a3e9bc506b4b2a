"""Which rollouts carry encrypted reasoning (`encrypted_content`): such a thread may fail to continue
after a provider or login switch (`invalid_encrypted_content`), whatever the storage says."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Iterable, List, Optional, Tuple
from sessionkit.codexfiles.paths import open_regular
from sessionkit.codexfiles.zstd import ZST, open_zst

MARKER = b'"encrypted_content":"'  # a string value; `"encrypted_content":null` carries nothing
_CHUNK = 1024 * 1024


def _stream(path: Path) -> Any:
    """The rollout's bytes: a `.jsonl`, or its `.jsonl.zst` read decompressed (Codex keeps the row's
    `.jsonl` path for a compressed rollout)."""
    p = str(path)
    if p.endswith(ZST):
        return open_zst(p)
    if not os.path.lexists(p) and os.path.isfile(p + ZST):
        return open_zst(p + ZST)
    return open_regular(path)


def _scan(fh: BinaryIO) -> bool:
    keep = len(MARKER) - 1
    tail = b""
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            return False
        if MARKER in tail + chunk[:keep] or MARKER in chunk:
            return True
        tail = chunk[-keep:]


def carries_encrypted_reasoning(path: Path) -> Optional[bool]:
    """True at the first `"encrypted_content":"..."` (the rest of the file is not read); None when
    the file cannot be read (a damaged compressed file, or no zstd reader here)."""
    found = None
    try:
        with _stream(path) as fh:
            found = _scan(fh)
    except OSError:  # a compressed file left unread after a hit ends its reader with an error
        return True if found else None
    return found


def count_encrypted(paths: Iterable[Tuple[str, Optional[Path]]]) -> Tuple[List[str], List[str]]:
    """(thread ids whose rollout carries encrypted reasoning, thread ids whose rollout could not be
    read) over (thread id, rollout path) pairs: only the files given, each up to its first hit."""
    hits: List[str] = []
    unread: List[str] = []
    for tid, path in paths:
        if path is None:
            continue
        found = carries_encrypted_reasoning(path)
        if found:
            hits.append(tid)
        elif found is None:
            unread.append(tid)
    return hits, unread
