"""The `turn_context` lines of a rollout: each turn writes one with `payload.cwd`, and a resumed
thread takes the cwd of the LAST one (real Codex 0.171, references/real-codex.md (a)), so a
remapped project folder must be rewritten there as well as in line 1."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

MARK = b'"turn_context"'


@dataclass
class TurnContextCwd:
    """One turn_context line: where it starts, its length (no newline) and its cwd."""
    offset: int
    length: int
    cwd: str


def iter_lines(path: Path) -> Iterator[Tuple[int, bytes]]:
    """(offset, line without its newline) for every line, streamed: a rollout can be large."""
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            yield offset, line
            offset += len(raw)


def turn_context_cwd(line: bytes) -> Optional[str]:
    """payload.cwd of a turn_context line, or None (another type, no cwd, not JSON)."""
    if MARK not in line:
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("type") != "turn_context" or not isinstance(obj.get("payload"), dict):
        return None
    cwd = obj["payload"].get("cwd")
    return cwd if isinstance(cwd, str) else None


def scan_turn_contexts(path: Path) -> List[TurnContextCwd]:
    """Every turn_context line past line 1 with its cwd: one full read of this rollout."""
    out = []
    for offset, line in iter_lines(path):
        if offset == 0:
            continue
        cwd = turn_context_cwd(line)
        if cwd is not None:
            out.append(TurnContextCwd(offset, len(line), cwd))
    return out


def remap_prefix(value: str, remaps: List[Tuple[str, str]]) -> str:
    """`value` with the first matching OLD prefix (on a path boundary) replaced by its NEW."""
    from .paths import has_prefix, replace_prefix
    for old, new in remaps:
        if has_prefix(value, old):
            return replace_prefix(value, old, new) or value
    return value
