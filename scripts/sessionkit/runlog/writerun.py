"""The one executor of every --apply: checks, locks, backups, a durable journal record before each
change, files then DBs (one transaction per DB), and undoing itself on any exit."""
from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from sessionkit.codexfiles.reasons import SKIPPED_WITH
from sessionkit import UserError
from sessionkit.runlog.artifacts import backup_into, new_run_dir, private_file, durable
from sessionkit.ui.commands import home_command
from sessionkit.codexfiles.faults import point
from sessionkit.codexfiles.home import CodexHome
from sessionkit.runlog.journal import Journal, begin_record
from sessionkit.codexfiles.locks import scan_activity
from sessionkit.runlog.ops import NOOP, Op, check_op_columns, group_of
from sessionkit.runlog.scope import allowed_roots, forget_resolved, home_dbs, op_problem
from sessionkit.codexfiles.paths import safe_str
from sessionkit.ui.progress import Progress
from sessionkit.runlog.safety import HomeLock, check_folders_inside, check_writable, refuse_if_running
from sessionkit.codexfiles.statedb import transaction
from sessionkit.runlog.lockbatch import locks_beside_home_lock, run_batches, split_batches
from sessionkit.runlog.undo import apply_undo, plan_undo
from sessionkit.codexfiles.writerlock import LOCK_DIR

BATCH = 2000  # op records per journal write (one fsync each); every batch precedes its changes


@dataclass
class RunResult:
    run_dir: Path
    journal: Path
    manifest: Path
    backups: Dict[str, Path]  # DB path -> its backup
    applied: Counter = field(default_factory=Counter)  # op kind -> count applied
    rows: Dict[str, int] = field(default_factory=dict)  # DB path -> rows changed
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (thread id or path, reason)

    def rollback_command(self, home: CodexHome) -> str:
        return home_command(home, "rollback.py", "--manifest", self.run_dir, "--apply")


def check_artifacts_inside(home: CodexHome) -> None:
    """Backups, journal and lock live under <home>/.tmp/session-migration: refuse when that leads out."""
    check_folders_inside(home)


def execute(home: CodexHome, kind: str, ops: Sequence[Op], manifest_csv: bytes, force: bool,
            progress: Optional[Progress] = None, extra_dbs: Sequence[Path] = ()) -> RunResult:
    """Run planned ops: refuse while Codex runs (unless force), back up every DB touched, journal
    each batch durably before it is applied, files first then one transaction per DB. More threads
    than the open-file limit holds locks for go in batches, each whole (locks, files, one transaction
    per DB). On any exit before the end (errors, Ctrl-C) the run undoes itself, every batch, or
    names the one undo command."""
    progress = progress or Progress(None)
    forget_resolved()  # folders may have changed since an earlier run in this process
    roots = allowed_roots(home)
    dbs = home_dbs(home)
    refuse_if_running(scan_activity(home.root), force)
    check_artifacts_inside(home)
    check_writable(home, [Path(d) for d in sorted({o.db() for o in ops if o.db()})])  # type: ignore[misc]
    skipped: List[Tuple[str, str]] = []
    bad_threads: Dict[str, str] = {}
    runnable: List[Op] = []
    for op in ops:
        why = op_problem(op, roots, dbs)
        if why is None:
            runnable.append(op)
        elif op.thread_id:
            bad_threads.setdefault(op.thread_id, why)
        else:
            skipped.append((safe_str(op.paths()[0] if op.paths() else op.db()), why))
    todo = [o for o in runnable if not (o.thread_id and o.thread_id in bad_threads)]
    per_batch = locks_beside_home_lock(len({o.thread_id for o in todo if o.thread_id}))
    with HomeLock(home):
        run = new_run_dir(home.artifacts_dir, kind)
        journal = Journal(run.journal_path)
        result = RunResult(run.path, run.journal_path, run.path / f"{kind}_{run.stamp}.csv", {})
        try:
            journal.write(begin_record(kind, home.root, roots, sorted(dbs), len(ops)))
            journal.write(lock_record(home.root, runnable))
            batches = split_batches(todo, group_of(todo), per_batch)  # a fork in its parent's batch
            applier = _Batches(kind, journal, result, batches, bad_threads, skipped, progress,
                               manifest_csv, [str(p) for p in extra_dbs])
            run_batches(home.root, batches, _thread_of, applier.batch, progress)
            result.skipped = skipped + sorted(bad_threads.items())
            journal.write({"op": "end", "status": "complete"})  # locks released: a kill now leaves the finished run
        except BaseException as exc:  # noqa: B902 - Ctrl-C too: put back what was done
            journal.close()
            if journal.ended:  # finished before the fault: nothing to undo
                raise
            raise _undo_after_failure(home, run.path, exc) from None
        journal.close()
    return result


def _thread_of(op: Op) -> Optional[str]:
    return op.thread_id


class _Batches:
    """The work of one batch of a run, under its threads' writer locks: re-check, (first batch:
    back up every DB any batch touches, write the manifest), journal, files, one transaction per DB."""

    def __init__(self, kind: str, journal: Journal, result: RunResult, batches: List[List[Op]],
                 bad: Dict[str, str], skipped: List[Tuple[str, str]], progress: Progress,
                 manifest_csv: bytes, extra_dbs: List[str]) -> None:
        self.kind, self.run_dir, self.journal, self.result = kind, result.run_dir, journal, result
        self.batches, self.bad, self.skipped, self.progress = batches, bad, skipped, progress
        self.manifest_csv = manifest_csv
        self.extra_dbs = extra_dbs  # DBs backed up even when no op changes them
        self.touched: List[str] = []
        self.reported: Set[str] = set()

    def batch(self, n: int, ops: List[Op], refused: Dict[str, str]) -> None:
        mark = {"op": "batch", "n": n, "of": len(self.batches), "threads": len({o.thread_id for o in ops} - {None})}
        self.bad.update(refused)
        ops = _prepare(ops, self.run_dir, self.bad)
        records = self._backups(ops) if n == 1 else []
        if len(self.batches) > 1:  # a run in one batch: its journal as it always was
            records.append(mark)
        new = sorted((t, r) for t, r in self.bad.items() if t not in self.reported)
        self.reported.update(t for t, _ in new)
        records += [{"op": "skip", "thread_id": t, "reason": r} for t, r in (self.skipped if n == 1 else []) + new]
        self.journal.write_batch(records)
        self._files([o for o in ops if not o.DB_OP], n)
        self._rows(ops)

    def _backups(self, first: List[Op]) -> List[Dict[str, object]]:
        """Every DB an op of any batch may change, backed up before the first change; and the manifest's record."""
        later = [o for b in self.batches[1:] for o in b]
        self.touched = list(dict.fromkeys([o.db() for o in first + later if o.DB_OP] + self.extra_dbs))  # type: ignore[misc]
        records: List[Dict[str, object]] = []
        for db in self.touched:
            b = backup_into(self.run_dir, db, f"pre_{self.kind}")
            self.result.backups[db] = b
            records.append({"op": "backup", "db": db, "backup": str(b)})
        private_file(self.result.manifest, self.manifest_csv)
        records.append({"op": "manifest", "path": str(self.result.manifest)})
        return records

    def _files(self, file_ops: List[Op], n: int) -> None:
        label = "writing files" if len(self.batches) == 1 else f"writing files (batch {n} of {len(self.batches)})"
        self.progress.phase(label)
        for start in range(0, len(file_ops), BATCH):
            chunk = file_ops[start:start + BATCH]
            self.journal.write_batch(o.to_record() for o in chunk)
            for o in chunk:
                o.apply()
                self.result.applied[o.KIND] += 1
                point("file")
            self.progress.tick(label, start + len(chunk), len(file_ops))
        self.progress.done()
        if file_ops:
            durable(f for o in file_ops for f in o.files())

    def _rows(self, ops: List[Op]) -> None:
        for db in self.touched:
            mine = [o for o in ops if o.DB_OP and o.db() == db]
            if not mine:
                continue
            for start in range(0, len(mine), BATCH):
                self.journal.write_batch(o.to_record() for o in mine[start:start + BATCH])
            n = 0
            with transaction(Path(db)) as conn:
                check_op_columns(conn, mine)
                for o in mine:
                    n += o.apply_db(conn)
                    self.result.applied[o.KIND] += 1
                point("commit")
            self.result.rows[db] = self.result.rows.get(db, 0) + n
            self.journal.write({"op": "commit", "db": db, "rows": n})


def lock_record(home_root: Path, ops: Sequence[Op]) -> Dict[str, object]:
    """Written before any writer lock is taken: the lock files this run may create, so a rollback
    after a kill removes exactly those (when no one holds them)."""
    d = home_root / LOCK_DIR
    tids = [t for t in dict.fromkeys(o.thread_id for o in ops if o.thread_id)
            if not (d / f"{t}.lock").exists()]
    return {"op": "locks", "created": tids, "dir_existed": d.is_dir(),
            "coordination_existed": (d / ".coordination.lock").exists()}


def _prepare(ops: List[Op], run_dir: Path, bad: Dict[str, str]) -> List[Op]:
    """Re-check each op under its thread's writer lock; a thread whose lock was refused or whose op
    fails is skipped whole (its file and row change together or not at all)."""
    out = []
    for o in ops:
        if o.thread_id and o.thread_id in bad:
            continue
        why = o.prepare(run_dir)
        if why == NOOP:
            continue
        if why:
            if o.thread_id:
                bad[o.thread_id] = why
            continue
        out.append(o)
    while True:  # a thread goes with the threads its changes need (a fork and its parent): none without the others
        more = {t: SKIPPED_WITH.format(other=safe_str(n), why=bad[n]) for o in ops for n in o.together()
                for t in (o.thread_id,) if t and n in bad and t not in bad}
        more.update({n: SKIPPED_WITH.format(other=safe_str(o.thread_id), why=bad[o.thread_id]) for o in ops
                     for n in o.together() if o.thread_id in bad and n not in bad})
        if not more:
            break
        bad.update(more)
    return [o for o in out if not (o.thread_id and o.thread_id in bad)]


def _undo_after_failure(home: CodexHome, run_dir: Path, exc: BaseException) -> UserError:
    """A run stopped halfway puts back what it did (Ctrl-C held off meanwhile), then says so."""
    what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"stopped by an error ({exc})"
    cmd = home_command(home, "rollback.py", "--manifest", run_dir, "--apply")
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        plan = plan_undo(home, run_dir)
        result = apply_undo(home, plan, by="failure")
    except BaseException as again:  # noqa: B902 - report both, never a traceback
        return UserError(f"{what}; undoing the partial run also failed ({again}). Fix the cause, then run: {cmd}")
    finally:
        signal.signal(signal.SIGINT, old)
    if plan.conflicts:  # the run stays applied (partly rolled back) and undoable: never "as before"
        return UserError(f"{what}; {result['undone']} change(s) already made were undone, but {len(plan.conflicts)} "
                         f"item(s) were left alone (first: {plan.conflicts[0]}); once they are free run: {cmd}")
    return UserError(f"{what}; the {result['undone']} change(s) already made were undone, "
                     f"the home is as before. Journal: {run_dir / 'journal.jsonl'}")
