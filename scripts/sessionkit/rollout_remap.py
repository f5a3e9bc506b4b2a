"""The bytes DEST gets for an imported rollout when folders are remapped: line 1 (cwd, workspace
roots, a fork's history_base offset) and the cwd of every turn_context line (real Codex 0.171
resumes a thread in its last turn_context's cwd and writes that back into the row), plus the
map that moves thread_history_1's byte offsets with the lines that changed length."""
from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from . import UserError

Shift = Tuple[int, int]  # (offset in the source file where a changed line ended, its growth)


class RolloutRemapper:
    """Streams each file once per use; remembers each file's shifts (a fork needs its parent's)."""

    def __init__(self, line1: Any) -> None:
        self.line1 = line1  # importer.Line1Rewriter: line-1 edits, remaps, files by history key
        self.shifts_of: Dict[str, List[Shift]] = {}
        self.stack: Set[str] = set()
        self.kinds = (b'"turn_context"', b'"thread_settings_applied"')

    def shifts(self, path: Path) -> List[Shift]:
        key = str(path)
        if key not in self.shifts_of:
            for _chunk in self.stream(path):
                pass
        return self.shifts_of.get(key, [])

    def moved(self, path: Path, offset: int) -> int:
        """An offset into the source file, as it is in DEST's copy."""
        shifts = self.shifts(path)
        if not shifts:
            return offset
        at = bisect.bisect_right([b for b, _d in shifts], offset)
        return offset + sum(d for _b, d in shifts[:at])

    def stream(self, path: Path) -> Iterator[bytes]:
        """DEST's bytes for this file, line by line; its shifts are recorded as it goes."""
        from .importer import apply_edits, remap
        key = str(path)
        self.stack.add(key)
        shifts: List[Shift] = []
        offset = 0
        remaps = self.line1.remaps
        needles = self.line1.needles
        try:
            with open(path, "rb") as fh:
                for n, raw in enumerate(fh):
                    out = raw
                    if n == 0:
                        out = self._line1(path, raw)
                    elif remaps and any(k in raw for k in self.kinds) and any(x in raw for x in needles):
                        body = raw[:-1] if raw.endswith(b"\n") else raw
                        new = self._turn_context(body, remaps, apply_edits, remap)
                        if new is not None:
                            out = new + raw[len(body):]
                    if len(out) != len(raw):
                        shifts.append((offset + len(raw), len(out) - len(raw)))
                    offset += len(raw)
                    yield out
        finally:
            self.stack.discard(key)
        self.shifts_of[key] = shifts

    def _line1(self, path: Path, raw: bytes) -> bytes:
        from .importer import apply_edits
        old_len, edits, _growth, _issue = self.line1.for_file(path)
        if not edits:
            return raw
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if len(body) != old_len:
            raise UserError(f"{path} changed since the plan was made (line 1 differs)")
        final = []
        for key, old, value in edits:
            if key == "end_byte_offset":  # the parent's copy may have grown past line 1 too
                value = self._parent_offset(body, old)
            final.append((key, old, value))
        new, problem = apply_edits(body, [e for e in final if e[1] != e[2]])
        if new is None:
            raise UserError(f"{path}: {problem}")
        return new + raw[len(body):]

    def _parent_offset(self, line: bytes, old: int) -> int:
        try:
            base = json.loads(line)["payload"]["history_base"]
            parent = self.line1.by_key.get(str(base["thread_id"]).lower())
        except (ValueError, KeyError, TypeError):
            return old
        if parent is None or parent.key in self.stack:
            return old
        return self.moved(parent.path, old)

    @staticmethod
    def _turn_context(body: bytes, remaps: List[Tuple[str, str]], apply_edits: Any, remap: Any) -> Optional[bytes]:
        """A turn_context's cwd, or a thread_settings_applied event's cwd and workspace roots (0.171
        resumes a thread with the last settings it applied): each token swapped once, checked."""
        try:
            obj = json.loads(body)
        except ValueError:
            return None
        payload = obj.get("payload") if isinstance(obj, dict) else None
        if not isinstance(payload, dict):
            return None
        if obj.get("type") == "turn_context":
            target = payload
        elif obj.get("type") == "event_msg" and payload.get("type") == "thread_settings_applied" \
                and isinstance(payload.get("thread_settings"), dict):
            target = payload["thread_settings"]
        else:
            return None
        changes = []
        if isinstance(target.get("cwd"), str) and remap(target["cwd"], remaps) != target["cwd"]:
            changes.append(("cwd", target["cwd"], remap(target["cwd"], remaps)))
        roots = target.get("runtime_workspace_roots")
        if isinstance(roots, list) and all(isinstance(r, str) for r in roots):
            moved = [remap(r, remaps) for r in roots]
            if moved != roots:
                changes.append(("runtime_workspace_roots", roots, moved))
        if not changes:
            return None
        new = body
        for key, old, value in changes:
            token = _token(key, old)
            if new.count(token) != 1:
                return None  # not written the way Codex writes it: the line is left as is
            new = new.replace(token, _token(key, value))
            target[key] = value
        try:
            return new if json.loads(new) == obj else None
        except ValueError:
            return None


def _token(key: str, value: Any) -> bytes:
    return (json.dumps(key) + ":" + json.dumps(value, ensure_ascii=False, separators=(",", ":"))).encode()
