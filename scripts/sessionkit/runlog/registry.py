"""Every kind of operation a journal may hold, by its record's `op`: the journal's reader builds
operations here. A new kind of change is one Op class, listed once in OP_CLASSES."""
from __future__ import annotations

from typing import Any, Dict, Type

from sessionkit.runlog.decompress import Decompress
from sessionkit.runlog.ops import (FileCreate, Line1Rewrite, Mkdir, Move, OffsetShift, Op, RecordError, RolloutRewrite,
                                   RowDelete, RowInsert, RowUpdate, SymlinkRepoint)
from sessionkit.runlog.session_index import IndexAppend


OP_CLASSES: Dict[str, Type[Op]] = {c.KIND: c for c in (Mkdir, Move, Line1Rewrite, FileCreate, SymlinkRepoint,
                                                       RowUpdate, RowInsert, RowDelete, OffsetShift,
                                                       RolloutRewrite, Decompress, IndexAppend)}


def op_from_record(rec: Dict[str, Any]) -> Op:
    """Strictly: an unknown kind or a malformed field is a RecordError (one line, exit 2)."""
    cls = OP_CLASSES.get(rec.get("op", ""))
    if cls is None:
        raise RecordError(f"unknown journal operation {rec.get('op')!r}")
    try:
        return cls.from_record(rec)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"journal record {rec.get('op')!r} is malformed ({exc})") from None
