"""Thread ids as compared everywhere: normalised once where they enter (the rollout walk, the DB
row readers, the lock scan, command-line arguments), so no comparison lowers them again. Codex
writes UUIDs in lower case; a hand-edited row, name index or argument may not. A row's stored id
is kept as it is for the SQL that finds it (ThreadRow.id), its normalised form beside it (.key), and
every plan object made from it carries that key (MovePlan/RowChange/RolloutPlan.key, a planned
insert's "id", Finding.thread_key): tests/test_ids_once.py names the only callers of norm_id."""
from __future__ import annotations

from typing import Iterable, Set


def norm_id(value: object) -> str:
    """The one form a thread id (or a segment's rollout uuid) is compared in."""
    s = value if value.__class__ is str else str(value)
    return s if s.islower() else s.lower()  # a lower-case id stays the same object: no copy per row


def norm_ids(values: Iterable[object]) -> Set[str]:
    """A set of thread ids, each normalised (ids named to a library function)."""
    return {norm_id(v) for v in values}
