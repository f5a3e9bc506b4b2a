"""Writer locks in batches that fit the open-file limit: a run (or an undo) whose threads do not
all fit is worked through batch by batch, each batch's locks held only while its own work runs.
Shared by the apply (writerun) and the undo, so both batch the same way."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TypeVar

import os

from sessionkit.codexfiles.faults import point
from sessionkit.ui.progress import Progress
from sessionkit.codexfiles.writerlock import WriterLocks, locks_per_batch

T = TypeVar("T")


def split_batches(items: Sequence[T], thread_of: Callable[[T], Optional[str]], size: int,
                  loose_last: bool = False) -> List[List[T]]:
    """Items grouped by thread into batches of at most `size` threads (first appearance order, list
    order kept inside a batch); a thread is never split. Items without a thread join the first
    batch (an apply makes a folder before the moves into it) or, with loose_last, the last one
    (an undo removes it after them). All threads fit: one batch, the items as given."""
    threads = list(dict.fromkeys(t for t in map(thread_of, items) if t))
    if len(threads) <= size:
        return [list(items)]
    index = {t: i // size for i, t in enumerate(threads)}
    out: List[List[T]] = [[] for _ in range(index[threads[-1]] + 1)]
    loose = len(out) - 1 if loose_last else 0
    for item in items:
        t = thread_of(item)
        out[index[t] if t else loose].append(item)
    return out


def run_batches(home_root: Path, batches: List[List[T]], thread_of: Callable[[T], Optional[str]],
                work: Callable[[int, List[T], Dict[str, str]], None], progress: Optional[Progress] = None) -> None:
    """For each batch: take its threads' writer locks (under the coordination lock), call
    work(batch number, batch, {thread id: why its lock was refused}), release them before the next.
    A fault point sits between batches; the locks are released on any exit."""
    locks = WriterLocks(home_root)
    for n, batch in enumerate(batches, 1):
        if n > 1:
            point("batch")
        if len(batches) > 1 and progress is not None:
            progress.note(f"batch {n} of {len(batches)}: {len({thread_of(i) for i in batch} - {None})} session(s)")
        try:
            refused = locks.take_many(list(dict.fromkeys(t for t in map(thread_of, batch) if t)))  # type: ignore[arg-type]
            work(n, batch, refused)
        finally:
            locks.release_all()


def locks_beside_home_lock(threads: int) -> int:
    """locks_per_batch as an undo of the run will size it, with the home lock's descriptor open (one
    stand-in descriptor held meanwhile, so a refusal still writes nothing): a run applied at the
    lowest open-file limit it accepts is undone at that limit, after an error or by rollback.py."""
    try:
        stand_in = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        stand_in = -1  # not even one more descriptor: locks_per_batch refuses
    try:
        return locks_per_batch(threads)
    finally:
        if stand_in >= 0:
            os.close(stand_in)
