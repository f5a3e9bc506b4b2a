"""Every `"cwd"` value a rollout line holds at any depth: a check that a remapped folder is gone
from the folder records (tests, audits). What the tools rewrite is narrower: only the records
Codex reads back (rollout_edit.FOLDER_RECORDS), never a tool call's arguments or its output."""
from __future__ import annotations

import json
from typing import Any, List

MARK = b'"cwd":'


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


def line_cwds(line: bytes) -> List[str]:
    """The `"cwd"` values of one line, or [] (none, or not JSON): only lines holding the token
    are decoded."""
    if MARK not in line:
        return []
    try:
        return cwd_values(json.loads(line))
    except (ValueError, RecursionError):
        return []
