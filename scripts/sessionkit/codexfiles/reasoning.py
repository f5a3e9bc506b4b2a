"""Which rollouts carry encrypted reasoning (`encrypted_content`): such a thread may fail to continue
after a provider or login switch (`invalid_encrypted_content`), whatever the storage says."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Tuple
from sessionkit.codexfiles.paths import open_regular

MARKER = b'"encrypted_content":"'  # a string value; `"encrypted_content":null` carries nothing
_CHUNK = 1024 * 1024


def carries_encrypted_reasoning(path: Path) -> Optional[bool]:
    """True at the first `"encrypted_content":"..."` (the rest of the file is not read); None when
    the file cannot be read."""
    keep = len(MARKER) - 1
    tail = b""
    try:
        with open_regular(path) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    return False
                if MARKER in tail + chunk[:keep] or MARKER in chunk:
                    return True
                tail = chunk[-keep:]
    except OSError:
        return None


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
