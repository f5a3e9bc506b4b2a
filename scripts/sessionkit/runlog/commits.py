"""Which DB operations of a run reached their DB. A run writes each DB's op records, then applies
them in one transaction, writes a `commit` record inside it (before COMMIT) and an `abort` record
when it did not commit; an undo leaves alone every op that never reached the DB (its row may be
someone else's: the desktop app's own row, a row Codex deleted meanwhile)."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from sessionkit.runlog.ops import strict

# A field of the `begin` record: this run writes `commit` before COMMIT (and `abort` when a
# transaction did not commit), so op records of a DB followed by neither never reached it. Older
# journals (without it) wrote `commit` after COMMIT: their unfollowed ops are judged by state.
COMMIT_FIRST = "commit_first"


def reached(recs: Sequence[Dict[str, Any]], ops: List[Any], run_records: Sequence[str]) -> List[Any]:
    """`ops` (parsed from `recs` in order: every record after `begin` whose kind is not in
    `run_records`) without the DB ops that never reached their DB: those an `abort` record
    follows, and, in a COMMIT_FIRST journal without `end`, those no `commit` record follows."""
    pending: Dict[str, List[int]] = {}  # DB -> its ops since its last commit record
    last: Dict[str, List[int]] = {}  # DB -> the ops its last commit record covers (an abort may follow it)
    never: List[int] = []
    i = -1
    for rec in recs[1:]:
        kind = rec["op"]
        if kind == "commit":
            last[str(rec.get("db"))] = pending.pop(str(rec.get("db")), [])
        elif kind == "abort":  # the DB's latest transaction: before its commit record or after it
            db = strict(rec, {"db": "str"}, {})["db"]
            never += pending.pop(db, None) or last.pop(db, [])
        elif kind == "end":
            pending.clear()  # written only after every transaction committed
        elif kind not in run_records:
            i += 1
            if i < len(ops) and ops[i].DB_OP:
                pending.setdefault(str(ops[i].db()), []).append(i)
    if recs and recs[0].get(COMMIT_FIRST) is True:
        never += [j for js in pending.values() for j in js]
    if not never:
        return ops
    drop = set(never)
    return [o for j, o in enumerate(ops) if j not in drop]
