"""The `cwd` a rollout records past line 1. Each turn writes a `turn_context` line with
`payload.cwd`; Codex 0.171 also writes `world_state` lines (`payload.cwd`) and `event_msg`
`thread_settings_applied` (`payload.thread_settings.cwd`). A resumed thread takes its folder from
the last `thread_settings_applied` (measured on 0.171: test_real_codex_resume_takes_the_cwd_of_the_
last_thread_settings_applied), not from line 1 or the row, so a remapped project folder is
rewritten in every `"cwd"` field of every line: none of them names the old folder afterwards."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Tuple

MARK = b'"cwd":'


@dataclass
class CwdLine:
    """One line past line 1 holding `"cwd"` fields: where it starts and their values in order."""
    offset: int
    cwds: List[str]


def iter_lines(path: Path) -> Iterator[Tuple[int, bytes]]:
    """(offset, line without its newline) for every line, streamed: a rollout can be large."""
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw[:-1] if raw.endswith(b"\n") else raw
            yield offset, line
            offset += len(raw)


def cwd_values(obj: Any) -> List[str]:
    """Every string value of a `"cwd"` key, at any depth, in document order."""
    out: List[str] = []
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in reversed(list(x.items())):
                if k == "cwd" and isinstance(v, str):
                    out.append(v)
                elif isinstance(v, (dict, list)):
                    stack.append(v)
        elif isinstance(x, list):
            stack.extend(reversed(x))
    return out


def replace_cwds(obj: Any, changes: dict) -> Any:
    """A copy of `obj` with every `"cwd"` string value found in `changes` replaced."""
    if isinstance(obj, dict):
        return {k: (changes.get(v, v) if k == "cwd" and isinstance(v, str) else replace_cwds(v, changes))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [replace_cwds(v, changes) for v in obj]
    return obj


def line_cwds(line: bytes) -> List[str]:
    """The `"cwd"` values of one line, or [] (none, or not JSON): only lines holding the token
    are decoded."""
    if MARK not in line:
        return []
    try:
        return cwd_values(json.loads(line))
    except (ValueError, RecursionError):
        return []


def scan_cwd_lines(path: Path) -> List[CwdLine]:
    """Every line past line 1 with `"cwd"` fields: one full read of this rollout."""
    out = []
    for offset, line in iter_lines(path):
        if offset:
            cwds = line_cwds(line)
            if cwds:
                out.append(CwdLine(offset, cwds))
    return out


def remap_prefix(value: str, remaps: List[Tuple[str, str]]) -> str:
    """`value` with the first matching OLD prefix (on a path boundary) replaced by its NEW."""
    from .paths import has_prefix, replace_prefix
    for old, new in remaps:
        if has_prefix(value, old):
            return replace_prefix(value, old, new) or value
    return value
