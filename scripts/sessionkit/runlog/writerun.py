"""The one executor of every --apply: checks, locks, backups, a durable journal record before each
change, files then DBs (one transaction per DB), and undoing itself on any exit."""
from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from sessionkit.codexfiles.record import Record
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from sessionkit.codexfiles.reasons import SKIPPED_WITH
from sessionkit import UserError
from sessionkit.runlog.artifacts import backup_into, new_run_dir, private_file, durable
from sessionkit.ui.commands import home_command
from sessionkit.codexfiles.faults import point
from sessionkit.codexfiles.home import CodexHome
from sessionkit.runlog.commits import COMMIT_FIRST
from sessionkit.runlog.journal import Journal, begin_record
from sessionkit.codexfiles.locks import scan_activity
from sessionkit.runlog.ops import NOOP, Op, check_op_columns, group_of
from sessionkit.runlog.scope import allowed_roots, forget_resolved, home_dbs, op_problem
from sessionkit.codexfiles.paths import safe_str
from sessionkit.ui.progress import Progress
from sessionkit.ui.cli import applied_run
from sessionkit.runlog.safety import HomeLock, check_folders_inside, check_writable, refuse_if_running, rows_not_as_planned
from sessionkit.codexfiles.statedb import open_readwrite
from sessionkit.runlog.lockbatch import locks_beside_home_lock, run_batches, split_batches
from sessionkit.runlog.undo import apply_undo, plan_undo
from sessionkit.codexfiles.writerlock import LOCK_DIR, lock_names

BATCH = 2000  # op records per journal write (one fsync each); every batch precedes its changes


class RunResult(Record):
    __slots__ = ("run_dir", "journal", "manifest", "backups", "applied", "rows", "skipped")

    def __init__(self, run_dir: Path, journal: Path, manifest: Path, backups: Dict[str, Path],
                 applied: Optional[Counter] = None, rows: Optional[Dict[str, int]] = None,
                 skipped: Optional[List[Tuple[str, str]]] = None) -> None:
        self.run_dir = run_dir
        self.journal = journal
        self.manifest = manifest
        self.backups = backups  # DB path -> its backup
        self.applied = Counter() if applied is None else applied  # op kind -> count applied
        self.rows = {} if rows is None else rows  # DB path -> rows changed
        self.skipped = [] if skipped is None else skipped  # (thread id or path, reason)

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
    drifted = {id(o): why for o, why in rows_not_as_planned(runnable)}  # skipped with its reason, never the end
    for o in runnable:
        if id(o) in drifted:
            if o.thread_id:
                bad_threads.setdefault(o.thread_id, drifted[id(o)])
            else:
                skipped.append((safe_str(o.subject()), drifted[id(o)]))
    todo = [o for o in runnable if id(o) not in drifted and not (o.thread_id and o.thread_id in bad_threads)]
    per_batch = locks_beside_home_lock(len({o.thread_id for o in todo if o.thread_id}))
    with HomeLock(home):
        run = new_run_dir(home.artifacts_dir, kind)
        journal = Journal(run.journal_path)
        result = RunResult(run.path, run.journal_path, run.path / f"{kind}_{run.stamp}.csv", {})
        try:
            journal.write({**begin_record(kind, home.root, roots, sorted(dbs), len(ops)), COMMIT_FIRST: True})
            journal.write(lock_record(home.root, runnable))
            batches = split_batches(todo, group_of(todo), per_batch)  # a fork in its parent's batch
            applier = _Batches(kind, journal, result, batches, bad_threads, skipped, progress,
                               manifest_csv, [str(p) for p in extra_dbs])
            run_batches(home.root, batches, _thread_of, applier.batch, progress)
            result.skipped = skipped + sorted(bad_threads.items())
            journal.write({"op": "end", "status": "complete"})  # locks released: a kill now leaves the finished run
            # (an error or Ctrl-C before this returns still undoes it: the caller has reported nothing yet)
        except BaseException as exc:  # noqa: B902 - Ctrl-C too: put back what was done
            journal.close()  # after the end record too: a run not yet reported is undone, never left said as failed
            raise _undo_after_failure(home, run.path, exc) from None
        journal.close()
    applied_run(home_command(home, "rollback.py", "--manifest", run.path, "--apply"))  # it stands from here on
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
            n = commit_rows(self.journal, db, mine)
            self.result.applied.update(o.KIND for o in mine)
            self.result.rows[db] = self.result.rows.get(db, 0) + n


def commit_rows(journal: Journal, db: str, mine: List[Op]) -> int:
    """One transaction applying `mine` (their records already on disk). The `commit` record is
    written inside it, before COMMIT, and an `abort` record when it did not commit: op records
    followed by neither never reached the DB (COMMIT_FIRST), so an undo never undoes them."""
    conn = open_readwrite(Path(db))
    committed = False
    try:
        conn.execute("BEGIN IMMEDIATE")
        check_op_columns(conn, mine)
        n = 0
        for o in mine:
            n += o.apply_db(conn)
        point("commit")
        journal.write({"op": "commit", "db": db, "rows": n})
        with CtrlCHeld():  # COMMIT and knowing it are one step: a Ctrl-C waits until both are done
            conn.execute("COMMIT")
            committed = True
        return n
    except BaseException as exc:  # noqa: B902 - Ctrl-C too: the transaction is rolled back, and said so
        if not committed:
            _roll_back(conn)
            _abort_record(journal, db)
        if isinstance(exc, sqlite3.DatabaseError):
            raise UserError(f"{db}: {exc}") from None
        raise
    finally:
        conn.close()


def _roll_back(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # closing the connection rolls back what is left


def _abort_record(journal: Journal, db: str) -> None:
    """`abort`: this DB's transaction did not commit. Unwritten (a full disk), the run's `commit`
    record (if on disk) has each op judged by its state instead, as a kill at COMMIT does."""
    try:
        journal.write({"op": "abort", "db": db})
    except (OSError, ValueError):
        pass


class CtrlCHeld:
    """SIGINT noted, not raised, inside the block; raised as KeyboardInterrupt when it ends well
    (or, with reraise=False, left in `got` for the caller to raise where it can clean up)."""

    def __init__(self, reraise: bool = True) -> None:
        self.reraise = reraise
        self.got = False

    def __enter__(self) -> "CtrlCHeld":
        self.got = False
        try:
            self.old: object = signal.signal(signal.SIGINT, self._note)
        except ValueError:  # not the main thread: no handler of ours runs there anyway
            self.old = None
        return self

    def _note(self, _sig: int, _frame: object) -> None:
        self.got = True

    def __exit__(self, typ: object, *_rest: object) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)  # type: ignore[arg-type]
        if self.got and typ is None and self.reraise:
            raise KeyboardInterrupt


def lock_record(home_root: Path, ops: Sequence[Op]) -> Dict[str, object]:
    """Written before any writer lock is taken: the lock files this run may create, so a rollback
    after a kill removes exactly those (when no one holds them)."""
    d = home_root / LOCK_DIR
    present = lock_names(home_root)  # one listing; a name listed is checked as before (a dangling link)
    tids = [t for t in dict.fromkeys(o.thread_id for o in ops if o.thread_id)
            if f"{t}.lock" not in present or not (d / f"{t}.lock").exists()]
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
