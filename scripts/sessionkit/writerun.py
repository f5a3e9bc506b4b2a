"""The one executor of every --apply: checks, locks, backups, a durable journal record before each
change, files then DBs (one transaction per DB), and undoing itself on any exit."""
from __future__ import annotations

import os
import signal
from functools import lru_cache
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from . import UserError
from .artifacts import backup_db, new_run_dir, private_file, durable
from .commands import home_command
from .faults import point
from .home import CodexHome
from .journal import Journal, begin_record
from .locks import scan_activity
from .ops import NOOP, Op, check_op_columns
from .paths import is_inside, safe_str
from .progress import Progress
from .safety import HomeLock, check_writable, refuse_if_running
from .statedb import transaction
from .writerlock import LOCK_DIR, WriterLocks, reserve_descriptors

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


def allowed_roots(home: CodexHome) -> List[str]:
    """Where a run may write: the Codex home and the folder of the state DB it uses (resolved)."""
    roots = [os.path.realpath(str(home.root)), os.path.realpath(str(home.state_db.path.parent))]
    return sorted(set(roots))


@lru_cache(maxsize=4096)
def _real_dir(folder: str) -> str:
    return os.path.realpath(folder)


def path_allowed(path: str, roots: Sequence[str]) -> bool:
    """Inside a root after resolving every symlink on the way to its folder (the last part is not
    followed: a symlink we repoint or a file we rename is judged by where it sits)."""
    if not path or "\x00" in path or not os.path.isabs(path):
        return False
    name = os.path.basename(path)
    if name in ("", ".", ".."):
        return False
    real = os.path.join(_real_dir(os.path.dirname(path)), name)
    return any(is_inside(real, r) for r in roots)


def op_problem(op: Op, roots: Sequence[str], dbs: Set[str]) -> Optional[str]:
    """Why this op may not run here: a path outside the roots or a DB that is not this home's."""
    for p in op.paths():
        if not path_allowed(p, roots):
            return f"{safe_str(p)} is outside the Codex home and its state-DB folder"
    db = op.db()
    if db is not None and (os.path.realpath(db) not in dbs or not path_allowed(db, roots)):
        return f"{safe_str(db)} is not a database of this home"
    return None


def home_dbs(home: CodexHome) -> Set[str]:
    from .history_offsets import history_db_path
    out = set()
    for d in [home.state_db, *home.other_dbs]:
        out.add(os.path.realpath(str(d.path)))
        out.add(os.path.realpath(str(history_db_path(d.path))))
    return out


def check_artifacts_inside(home: CodexHome) -> None:
    """Backups, journal and lock live under <home>/.tmp: refuse when that leads out of the home."""
    art = home.artifacts_dir
    probe = art
    while not os.path.lexists(str(probe)) and probe != home.root:
        probe = probe.parent
    real = os.path.realpath(str(probe))
    if not is_inside(real, os.path.realpath(str(home.root))):
        raise UserError(f"refusing: {safe_str(probe)} leads outside the Codex home (to {safe_str(real)}), "
                        f"where backups and the journal would land; make it a plain folder. Nothing was changed")


def execute(home: CodexHome, kind: str, ops: Sequence[Op], manifest_csv: bytes, force: bool,
            progress: Optional[Progress] = None, extra_dbs: Sequence[Path] = ()) -> RunResult:
    """Run planned ops: refuse while Codex runs (unless force), back up every DB touched, journal
    each batch durably before it is applied, files first then one transaction per DB. On any
    exit before the end (errors, Ctrl-C) the run undoes itself or names the one undo command."""
    progress = progress or Progress(None)
    _real_dir.cache_clear()  # folders may have changed since an earlier run in this process
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
    reserve_descriptors(len({op.thread_id for op in runnable if op.thread_id}))
    with HomeLock(home):
        run = new_run_dir(home.artifacts_dir, kind)
        journal = Journal(run.journal_path)
        locks = WriterLocks(home.root)
        result = RunResult(run.path, run.journal_path, run.path / f"{kind}_{run.stamp}.csv", {})
        try:
            journal.write(begin_record(kind, home.root, roots, sorted(dbs), len(ops)))
            journal.write(lock_record(home.root, runnable))
            runnable = _lock_and_prepare(runnable, locks, run.path, bad_threads)
            skipped += sorted(bad_threads.items())
            result.skipped = skipped
            touched = list(dict.fromkeys([o.db() for o in runnable if o.DB_OP] + [str(p) for p in extra_dbs]))
            records = []
            for db in touched:
                assert db is not None
                dest = run.path / f"{Path(db).name}.pre_{kind}.bak"
                n = 1
                while os.path.lexists(str(dest)):  # two DBs of one name (<home>/ and <home>/sqlite/)
                    n += 1
                    dest = run.path / f"{Path(db).name}.{n}.pre_{kind}.bak"
                b = backup_db(Path(db), dest)
                result.backups[db] = b
                records.append({"op": "backup", "db": db, "backup": str(b)})
            private_file(result.manifest, manifest_csv)
            records.append({"op": "manifest", "path": str(result.manifest)})
            records += [{"op": "skip", "thread_id": t, "reason": r} for t, r in skipped]
            journal.write_batch(records)
            file_ops = [o for o in runnable if not o.DB_OP]
            progress.phase("writing files")
            for start in range(0, len(file_ops), BATCH):
                batch = file_ops[start:start + BATCH]
                journal.write_batch(o.to_record() for o in batch)
                for o in batch:
                    o.apply()
                    result.applied[o.KIND] += 1
                    point("file")
                progress.tick("writing files", start + len(batch), len(file_ops))
            progress.done()
            if file_ops:
                durable()
            for db in touched:
                mine = [o for o in runnable if o.DB_OP and o.db() == db]
                if not mine:
                    continue
                for start in range(0, len(mine), BATCH):
                    journal.write_batch(o.to_record() for o in mine[start:start + BATCH])
                n = 0
                with transaction(Path(db)) as conn:
                    check_op_columns(conn, mine)
                    for o in mine:
                        n += o.apply_db(conn)
                        result.applied[o.KIND] += 1
                    point("commit")
                result.rows[db] = n
                journal.write({"op": "commit", "db": db, "rows": n})
            locks.release_all()  # before the end record: a kill after it leaves exactly the finished run
            journal.write({"op": "end", "status": "complete"})
        except BaseException as exc:  # noqa: B902 - Ctrl-C too: put back what was done
            locks.release_all()
            journal.close()
            if journal.ended:  # finished before the fault: nothing to undo
                raise
            raise _undo_after_failure(home, run.path, exc) from None
        journal.close()
    return result


def lock_record(home_root: Path, ops: Sequence[Op]) -> Dict[str, object]:
    """Written before any writer lock is taken: the lock files this run may create, so a rollback
    after a kill removes exactly those (when no one holds them)."""
    d = home_root / LOCK_DIR
    tids = [t for t in dict.fromkeys(o.thread_id for o in ops if o.thread_id)
            if not (d / f"{t}.lock").exists()]
    return {"op": "locks", "created": tids, "dir_existed": d.is_dir(),
            "coordination_existed": (d / ".coordination.lock").exists()}


def _lock_and_prepare(ops: List[Op], locks: WriterLocks, run_dir: Path, bad: Dict[str, str]) -> List[Op]:
    """Take each thread's writer lock and re-check its files under it; a thread that fails either
    is skipped whole (its file and row change together or not at all)."""
    wanted = [t for t in dict.fromkeys(o.thread_id for o in ops if o.thread_id) if t not in bad]
    bad.update(locks.take_many(wanted))  # type: ignore[arg-type]
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
    return [o for o in out if not (o.thread_id and o.thread_id in bad)]


def _undo_after_failure(home: CodexHome, run_dir: Path, exc: BaseException) -> UserError:
    """A run stopped halfway puts back what it did (Ctrl-C held off meanwhile), then says so."""
    from .undo import apply_undo, plan_undo
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
    left = f"; {len(plan.conflicts)} item(s) left alone: see {home_command(home, 'rollback.py', '--manifest', run_dir)}" \
        if plan.conflicts else ""
    return UserError(f"{what}; the {result['undone']} change(s) already made were undone, "
                     f"the home is as before{left}. Journal: {run_dir / 'journal.jsonl'}")
