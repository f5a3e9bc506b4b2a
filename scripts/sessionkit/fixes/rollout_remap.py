"""The bytes DEST gets for an imported rollout when folders are remapped, through the one rollout
editor (rollout_edit.EditedCopy): every folder record Codex reads back, a fork's history_base
moved with its parent's copy; plus the map that moves thread_history_1's byte offsets with the
lines that changed length."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

from sessionkit.codexfiles.ids import norm_id
from sessionkit.codexfiles.rollout_edit import EditedCopy, Shift, shift


class RolloutRemapper:
    """Streams each file once per use; remembers each file's shifts (a fork needs its parent's)."""

    def __init__(self, line1: Any) -> None:
        self.line1 = line1  # importer.Line1Rewriter: line-1 edits, remaps, files by history key
        self.shifts_of: Dict[str, List[Shift]] = {}
        self.stack: Set[str] = set()
        self.copy = EditedCopy(line1.remaps)

    def shifts(self, path: Path) -> List[Shift]:
        key = str(path)
        if key not in self.shifts_of:
            for _chunk in self.stream(path):
                pass
        return self.shifts_of.get(key, [])

    def moved(self, path: Path, offset: int) -> int:
        """An offset into the source file, as it is in DEST's copy."""
        return shift(offset, self.shifts(path))

    def stream(self, path: Path) -> Iterator[bytes]:
        """DEST's bytes for this file, line by line; its shifts are recorded as it goes."""
        key = str(path)
        old_len, edits, _growth, _issue = self.line1.for_file(path)
        line1_set = self._line1_set(path, edits)
        shifts: List[Shift] = []
        self.stack.add(key)
        try:
            yield from self.copy.stream(path, line1_set, old_len if edits else None, shifts)
        finally:
            self.stack.discard(key)
        self.shifts_of[key] = shifts

    def _line1_set(self, path: Path, edits: Any) -> Optional[Dict[str, Any]]:
        """Line 1's planned fields; a fork's history_base moved by its parent's copy as streamed
        (the parent may have grown past line 1 too)."""
        if not edits:
            return None
        out = {}
        for key, old, value in edits:
            if key == "history_base":
                value = dict(old, end_byte_offset=self._parent_offset(old))
            out[key] = value
        return out

    def _parent_offset(self, base: Dict[str, Any]) -> int:
        old = base["end_byte_offset"]
        parent = self.line1.by_key.get(norm_id(str(base.get("thread_id"))))
        if parent is None or parent.key in self.stack:
            return old
        return self.moved(parent.path, old)
