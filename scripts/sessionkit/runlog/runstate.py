"""Where a recorded run stands, decided once: `status` is its one wording (the JSON value of
`rollback.py --list`), `state` the same words with what to know or do next (the text shown)."""
from __future__ import annotations

from sessionkit.codexfiles.record import FrozenRecord
from typing import Any, Optional

STOPPED, PARTLY, FAILED, ROLLED_BACK, APPLIED, INCOMPLETE = (
    "stopped", "partly", "failed", "rolled_back", "applied", "incomplete")
UNDONE = (FAILED, ROLLED_BACK)  # nothing of the run left: --latest passes over it
PRUNABLE = (ROLLED_BACK, FAILED, STOPPED)  # its folder may go (an applied one: only when not the newest)


class RunState(FrozenRecord):
    __slots__ = ("key", "left", "restores", "forked")

    def __init__(self, key: str, left: int = 0, restores: int = 0, forked: bool = False) -> None:
        self.key = key
        self.left = left  # items the last undo left alone (PARTLY)
        self.restores = restores  # times --restore-db put one of its backups back (APPLIED)
        self.forked = forked  # what is left stays while a fork made since the run exists (PARTLY)

    @property
    def status(self) -> str:
        """The run's state in words: the same words start `state`."""
        return {STOPPED: "stopped before any change", PARTLY: f"partly rolled back: {self.left} left alone",
                FAILED: "failed, undone", ROLLED_BACK: "rolled back", APPLIED: "applied",
                INCOMPLETE: "incomplete (killed?)"}[self.key]

    def state(self, newest: bool = False) -> str:
        """`status`, then what to know or do next: never other words for the same state."""
        if self.key == APPLIED:
            notes = (["newest"] if newest else []) + \
                ([f"its DB restored from a backup {self.restores} time(s)"] if self.restores else [])
            return self.status + (f" ({', '.join(notes)})" if notes else "")
        hint = {STOPPED: " (nothing to undo)", PARTLY: " (kept while the fork made since exists)" if self.forked else
                " (rollback.py --latest finishes it once they are free)",
                FAILED: " (by itself)", INCOMPLETE: ", rollback.py finishes it"}.get(self.key, "")
        return self.status + hint


def left_by_fork(item: object) -> bool:
    """An item a rollback left alone because a fork made since the run reads its first turns from
    the run's grown file (ops.FORKED_SINCE, shared_undo.FORKED): it stays while that fork exists."""
    return "forked since the run" in str(item) or "forked in DEST since the run" in str(item)


def state_of(began: bool, undone: Optional[str], complete: bool, left: int = 0, restores: int = 0,
             forked: bool = False) -> RunState:
    """The one decision: `undone` is the journal's last undo (None, "failure", "rollback", "partial")."""
    if not began:
        return RunState(STOPPED)
    if undone == "partial":
        return RunState(PARTLY, left=left, forked=forked)
    if undone == "failure":
        return RunState(FAILED)
    if undone:
        return RunState(ROLLED_BACK)
    return RunState(APPLIED, restores=restores) if complete else RunState(INCOMPLETE)


def run_state(run: Any) -> RunState:
    """The state of a run read back (undo.Run)."""
    return state_of(run.began, run.undone, run.complete, len(run.left), len(run.restores),
                    any(left_by_fork(x) for x in run.left))
