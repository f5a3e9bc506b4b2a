"""Undo a run from its journal: only what still holds the value the run wrote, a thread's file and
row together or not at all; idempotent."""
from __future__ import annotations

import os
import re
import sqlite3
from sessionkit.codexfiles.record import Record
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from sessionkit.codexfiles.reasons import CHANGED_SINCE_PLAN, DELETED, GROUP_TOGETHER, LEFT_ALONE_WITH
from sessionkit import UserError
from sessionkit.runlog.artifacts import BackupsAhead, backup_into, list_runs
from sessionkit.codexfiles.faults import point
from sessionkit.codexfiles.home import CodexHome
from sessionkit.runlog.commits import reached
from sessionkit.runlog.journal import Journal, read_records
from sessionkit.runlog.ops import CHANGED, GONE, NEW, OLD, TORN, Op, RowUpdate, check_columns, check_op_columns, group_of
from sessionkit.runlog.registry import op_from_record
from sessionkit.runlog.runstate import run_state
from sessionkit.runlog.scope import allowed_roots, forget_resolved, home_dbs, op_problem, path_allowed
from sessionkit.runlog.shared_undo import drop_served, forks_since, outside_refs, shared_holds, thread_holds, what
from sessionkit.codexfiles.paths import safe_str, user_path
from sessionkit.codexfiles.statedb import open_readonly, transaction
from sessionkit.runlog.lockbatch import run_batches, split_batches
from sessionkit.ui.progress import Progress
from sessionkit.codexfiles.writerlock import LOCK_DIR, lock_names, locks_per_batch, remove_stale_locks, remove_unused_lock_dir

RUN_RECORDS = ("begin", "locks", "backup", "manifest", "skip", "batch", "commit", "end", "undone", "restore",
               "abort")


class Run(Record):
    """A run folder read back: its begin record, its ops in journal order, how it ended."""
    __slots__ = ("path", "begin", "ops", "complete", "undone", "manifest", "locks", "backups", "left", "deleted",
                 "restores")

    def __init__(self, path: Path, begin: Dict[str, Any], ops: List[Op], complete: bool, undone: Optional[str],
                 manifest: Optional[str], locks: Optional[Dict[str, Any]] = None,
                 backups: Optional[Dict[str, str]] = None, left: Optional[List[str]] = None,
                 deleted: Optional[List[str]] = None, restores: Optional[List[Dict[str, Any]]] = None) -> None:
        self.path = path
        self.begin = begin
        self.ops = ops
        self.complete = complete
        self.undone = undone  # None, "failure", "rollback" or "partial" (an undo that left something alone)
        self.manifest = manifest
        self.locks = {} if locks is None else locks
        self.backups = {} if backups is None else backups  # DB path -> its pre-run backup
        self.left = [] if left is None else left  # what the last undo left alone, each with its reason
        self.deleted = [] if deleted is None else deleted  # what was deleted since the run and left deleted
        self.restores = [] if restores is None else restores  # `restore` records (--restore-db)

    @property
    def began(self) -> bool:
        """False for a run stopped before its begin record was on disk: it changed nothing."""
        return bool(self.begin)

    @property
    def status(self) -> str:
        """Its state in words (runstate: decided once, the same words in --list, results and summaries)."""
        return run_state(self).status

    @property
    def applied(self) -> bool:
        """Holds changes a rollback could still undo (an undo that left something alone included)."""
        return self.undone in (None, "partial") and self.began

    def touches(self) -> Set[str]:
        return {o.subject() for o in self.ops}


def read_run(run_dir: Path, with_ops: bool = True) -> Run:
    """A run folder's journal, checked record by record; `with_ops=False`: its state only (begin,
    end, undone, restore records), its changes not built (a state read after an undo)."""
    journal = run_dir / "journal.jsonl"
    if not journal.is_file():
        raise UserError(f"{run_dir} holds no journal.jsonl: not a run folder of these scripts")
    recs = read_records(journal)
    if not recs:
        if stopped_before_begin(run_dir):
            return Run(run_dir, {}, [], False, None, None)
        raise UserError(f"{journal} holds no whole record, yet the run folder holds more than an unfinished "
                        f"begin record (damaged?): kept as it is; nothing was changed")
    if recs[0]["op"] != "begin":
        raise UserError(f"{journal} does not start with a begin record: not a session-migration journal")
    ops: List[Op] = []
    complete, undone, manifest = False, None, None
    locks: Dict[str, Any] = {}
    backups: Dict[str, str] = {}
    left: List[str] = []
    deleted: List[str] = []
    restores: List[Dict[str, Any]] = []
    batches: List[int] = []  # [n, of] of the last batch record
    for rec in recs[1:]:
        op = rec["op"]
        if op == "begin":
            raise UserError(f"{journal}: a second begin record")
        if op == "end":
            complete = True
        elif op == "undone":  # the last one tells: an undo that left anything alone is partial
            conflicts = rec.get("conflicts", 0)
            left = [str(x) for x in rec.get("left", [])] if isinstance(rec.get("left"), list) else []
            deleted = [str(x) for x in rec.get("deleted", [])] if isinstance(rec.get("deleted"), list) else []
            if isinstance(conflicts, int) and conflicts > 0:
                undone = "partial"
                left = left or [f"{conflicts} item(s) (not named by this older journal)"]
            else:
                undone = "failure" if rec.get("by") == "failure" else "rollback"
        elif op == "restore":
            from sessionkit.runlog.ops import strict
            restores.append(strict(rec, {"db": "str", "backup": "str", "saved": "str"}, {"forced": "list"}))
        elif op == "manifest":
            manifest = str(rec.get("path"))
        elif op == "backup":
            from sessionkit.runlog.ops import strict
            b = strict(rec, {"db": "str", "backup": "str"}, {})
            backups[b["db"]] = b["backup"]
        elif op == "locks":
            from sessionkit.runlog.ops import strict
            locks = strict(rec, {"created": "list", "dir_existed": "bool", "coordination_existed": "bool"}, {})
            if not all(isinstance(t, str) for t in locks["created"]):
                raise UserError(f"{journal}: a locks record is malformed")
        elif op == "batch":
            from sessionkit.runlog.ops import strict
            b = strict(rec, {"n": "int", "of": "int", "threads": "int"}, {})
            if [b["n"] - 1, b["of"]] != (batches or [0, b["of"]]) or not 1 <= b["n"] <= b["of"] or b["threads"] < 1:
                raise UserError(f"{journal}: a batch record is malformed or out of order")
            batches = [b["n"], b["of"]]
        elif op not in RUN_RECORDS and with_ops:
            ops.append(op_from_record(rec))
    ops = reached(recs, ops, RUN_RECORDS) if with_ops else ops  # never the DB ops whose transaction did not commit
    return Run(run_dir, recs[0], ops, complete, undone, manifest, locks, backups, left, deleted, restores)


class UndoPlan(Record):
    __slots__ = ("run_dir", "kind", "complete", "steps", "cleanups", "already", "conflicts", "deleted", "left_ids",
                 "deleted_ids", "locks", "undone_before", "stale_locks", "began", "started_ns")

    def __init__(self, run_dir: Path, kind: str, complete: bool, locks: Optional[Dict[str, Any]] = None,
                 undone_before: bool = False, began: bool = True) -> None:
        self.run_dir = run_dir
        self.kind = kind
        self.complete = complete
        self.steps: List[Tuple[Op, str]] = []  # (op, state) to undo, newest first
        self.cleanups: List[Op] = []  # temporary files left by a kill
        self.already = 0
        self.conflicts: List[str] = []
        self.deleted: List[str] = []  # deleted since the run (thread/delete): left deleted
        self.left_ids: Set[str] = set()  # threads with a change left alone (planned or at undo time)
        self.deleted_ids: Set[str] = set()  # threads deleted since the run: not put back
        self.locks = {} if locks is None else locks  # the run's "locks" record
        self.undone_before = undone_before  # the journal already says "rolled back" (or failed, undone)
        self.stale_locks = 0  # lock files (and .coordination.lock) a killed run left behind
        self.began = began  # False: the run stopped before its begin record; nothing to undo or record
        self.started_ns: Optional[int] = None  # the run's start (a thread forked from one of its threads since)

    @property
    def actions(self) -> int:
        return len(self.steps) + len(self.cleanups) + self.stale_locks

    def needs_record(self) -> bool:
        """An apply has something to do or to write down: steps, leftovers, or a run whose every
        change is already original (or deleted since) that its journal does not yet call undone."""
        return bool(self.actions) or (self.began and not self.conflicts and not self.undone_before)


Target = Union["Run", Path]  # a run read once, or a bare manifest CSV (or a journal that could not be read)


def find_run(home: CodexHome, manifest: Optional[str]) -> Optional[Target]:
    """The run a manifest (CSV, run folder or journal) names, read once; else the newest run that is
    applied (partly undone included), so --latest walks back through several runs; None when every
    recorded run is undone: nothing left to undo. A bare CSV of the original design
    (`provider_migration_<ts>.csv`, no journal beside it) stands for itself."""
    if manifest:
        p = user_path(manifest)
        if not p.exists():
            raise UserError(f"no such manifest or run folder: {p}")
        if not p.is_dir():
            if not (p.parent / "journal.jsonl").is_file():
                if not path_allowed(str(p), [os.path.realpath(str(home.root))]):  # before the lock makes .tmp/
                    raise UserError(f"refusing: the manifest {safe_str(p)} is outside the Codex home")
                return p
            p = p.parent
        return read_run(p)
    runs = list_runs(home.artifacts_dir)
    for path in reversed(runs):
        try:
            run = read_run(path)
        except UserError:
            return path  # a damaged journal is shown (plan_undo says why), not passed over silently
        if run.applied:
            return run
    return None


def runs_until(home: CodexHome, where: str) -> List[Run]:
    """The applied runs from the newest down to (and including) the run `where` names, newest first."""
    p = user_path(where)
    if not p.exists():
        raise UserError(f"no such run folder: {p}")
    folder = p if p.is_dir() else p.parent
    if not (folder / "journal.jsonl").is_file():
        raise UserError(f"--until wants a run folder (or its journal or manifest): {safe_str(p)}")
    real = os.path.realpath(str(folder))
    runs = list_runs(home.artifacts_dir)
    idx = next((i for i, r in enumerate(runs) if os.path.realpath(str(r)) == real), None)
    if idx is None:
        raise UserError(f"--until {safe_str(p)} is not a run recorded under {safe_str(home.artifacts_dir)}")
    out = []
    for path in reversed(runs[idx:]):
        run = read_run(path)  # a damaged journal stops here, before anything is undone
        if run.applied:
            out.append(run)
    return out


def as_run(target: Target) -> Optional[Run]:
    """The run of a target (read now if it is a run folder); None for a bare manifest CSV."""
    if isinstance(target, Run):
        return target
    return None if target.is_file() else read_run(target)


def later_dependents(home: CodexHome, target: Target) -> List[Tuple[Path, int]]:
    """Newer applied runs that changed threads this run changed: undo those first."""
    run = as_run(target)
    if run is None:
        return []
    runs = list_runs(home.artifacts_dir)
    real = os.path.realpath(str(run.path))
    idx = next((i for i, r in enumerate(runs) if os.path.realpath(str(r)) == real), None)
    if idx is None:
        return []
    mine = run.touches()
    out = []
    for r in runs[idx + 1:]:
        try:
            other = read_run(r)
        except UserError:
            continue
        shared = mine & other.touches()
        if other.applied and shared:
            out.append((r, len(shared)))
    return out


def describe_runs(home: CodexHome) -> List[Dict[str, Any]]:
    out = []
    for path in list_runs(home.artifacts_dir):
        try:
            run = read_run(path)
        except UserError as exc:
            out.append({"run_dir": safe_str(path), "kind": "?", "started": None, "changes": None,
                        "status": f"unreadable ({exc})", "manifest": None})
            continue
        out.append({"run_dir": safe_str(path), "kind": run.begin.get("kind", run_kind(path)), "started": run.begin.get("ts"),
                    "changes": run.begin.get("changes"), "status": run.status, "manifest": run.manifest})
    return out


def _roots(home: CodexHome) -> List[str]:
    return allowed_roots(home)


def check_ops(home: CodexHome, ops: List[Op], where: Path) -> None:
    """Every path and DB of a (hostile) journal inside this home and its state-DB folder."""
    forget_resolved()  # folders may have changed since an earlier check in this process
    roots, dbs = tuple(_roots(home)), home_dbs(home)
    for op in ops:
        why = op_problem(op, roots, dbs)
        if why:
            raise UserError(f"refusing: {where} names a path outside the Codex home: {why}")


def check_against_backups(run: Run, journal: Path, ops: List[Op]) -> None:
    """The values a rollback would write back must be the ones the run's own backup holds: an
    edited record (other columns, other values) is refused, not written."""
    conns: Dict[str, sqlite3.Connection] = {}
    seen: Set[Any] = set()
    run_real = os.path.realpath(str(run.path))
    inside: Dict[str, bool] = {}  # backup -> it lies in the run folder (resolved once per backup)
    ahead: Dict[Any, Dict[Any, List[Any]]] = {}  # rows of a shape read in bulk: {key value: [row]}
    try:
        for op in ops:
            back = op.written_back()
            if back is None:
                continue
            table, key, want = back
            db = str(op.db())
            backup = run.backups.get(db)
            if backup is not None and backup not in inside:
                inside[backup] = os.path.dirname(os.path.realpath(backup)) == run_real
            if backup is None or not inside[backup]:
                raise UserError(f"refusing: {journal} changes rows of {db} without a backup of it in the run folder")
            if backup not in conns:
                conns[backup] = open_readonly(Path(backup))
            conn = conns[backup]
            try:
                sig = (backup, table, tuple(key), tuple(want))
                if sig not in seen:
                    check_columns(conn, table, list(key) + list(want), None)
                    seen.add(sig)
                    ahead[sig] = _rows_ahead(conn, table, list(want), [o.written_back() for o in ops],  # type: ignore[misc]
                                             sig)
                rows = ahead[sig].get(_one_key(key), [])
                if not rows:  # not read ahead (another key, not found by its exact value): read alone
                    w = " AND ".join(f'"{c}" IS ?' for c in key)
                    cols = ", ".join(f'"{c}"' for c in want)
                    rows = conn.execute(f'SELECT {cols} FROM "{table}" WHERE {w}', list(key.values())).fetchall()
            except (sqlite3.DatabaseError, UserError):
                rows = []
            if not rows or dict(zip(want, rows[0])) != want:  # the first row found holds them
                raise UserError(f"refusing: {journal}: the {op.KIND} of {key} does not match the run's own "
                                f"backup (edited journal?); nothing was changed")
    finally:
        for c in conns.values():
            c.close()


def _one_key(key: Dict[str, Any]) -> Any:
    """The value of a one-column str key (what a bulk read can find by its exact value), else None."""
    if len(key) != 1:
        return None
    (value,) = key.values()
    return value if isinstance(value, str) else None


def _rows_ahead(conn: sqlite3.Connection, table: str, want: List[str], backs: List[Any],
                sig: Any) -> Dict[Any, List[Any]]:
    """The `want` columns of every row the written-back values of this shape name, read 500 keys a
    query, where the key is the table's one-column primary key (at most one row a key):
    {key value: [row]}, a key found only by its exact value. {} otherwise."""
    _backup, _table, keycols, _want = sig
    pk = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")') if r[5]]
    if len(keycols) != 1 or pk != list(keycols):
        return {}
    keys = [_one_key(b[1]) for b in backs if b is not None and b[0] == table and tuple(b[1]) == keycols
            and tuple(b[2]) == tuple(want)]
    keys = list(dict.fromkeys(k for k in keys if k is not None))
    out: Dict[Any, List[Any]] = {}
    cols = ", ".join(f'"{c}"' for c in [keycols[0], *want])
    for at in range(0, len(keys), 500):
        chunk = keys[at:at + 500]
        for r in conn.execute(f'SELECT {cols} FROM "{table}" WHERE "{keycols[0]}" IN ({", ".join("?" * len(chunk))})',
                              chunk):
            out.setdefault(r[0], []).append(r[1:])
    return out


def plan_undo(home: CodexHome, target: Target, checked: Optional[Callable[[], None]] = None) -> UndoPlan:
    """`checked`: called once the journal's paths and DBs are known to be this home's (an --apply's
    backups begin then: BackupsAhead.start)."""
    run = as_run(target)
    if run is None:
        assert isinstance(target, Path)
        return _plan_from_csv(home, target)
    run_dir = run.path
    journal = run_dir / "journal.jsonl"
    if not run.began:
        return UndoPlan(run_dir, run_kind(run_dir), False, began=False)
    if os.path.realpath(str(run.begin.get("codex_dir", ""))) != os.path.realpath(str(home.root)):
        raise UserError(f"{journal} belongs to the Codex home {run.begin.get('codex_dir')!r}, not {home.root}")
    check_ops(home, run.ops, journal)
    if checked is not None:
        checked()
    plan = UndoPlan(run_dir, str(run.begin.get("kind")), run.complete, locks=run.locks,
                    undone_before=run.undone in ("rollback", "failure"))
    plan.started_ns = run.begin.get("started_ns") if isinstance(run.begin.get("started_ns"), int) else None
    _plan_ops(plan, run.ops)
    check_against_backups(run, journal, [o for o, _ in plan.steps])  # only what would be written back
    if run.locks:
        d = home.root / LOCK_DIR
        names = lock_names(home.root)  # one listing, not a stat per thread
        plan.stale_locks = sum(1 for t in run.locks["created"] if f"{t}.lock" in names) + \
            int(not run.locks["coordination_existed"] and os.path.lexists(str(d / ".coordination.lock")))
    return plan


def stopped_before_begin(run_dir: Path) -> bool:
    """Killed before its begin record was whole: the folder holds only journal.jsonl, and that holds
    nothing or the start of one record (no line end of any kind). Every change waits for that
    record, and backups, copies and the manifest come after it."""
    try:
        if os.listdir(str(run_dir)) != ["journal.jsonl"]:
            return False
        data = (run_dir / "journal.jsonl").read_bytes()
    except OSError:
        return False
    return b"\n" not in data and b"\r" not in data and (data == b"" or data.startswith(b'{"v":'))


def run_kind(run_dir: Path) -> str:
    """`provider_migration` from `provider_migration_20261127_205531_1`: for a run with no begin record."""
    m = re.match(r"(.+)_\d{8}_\d{6}(?:_\d+)?$", run_dir.name)
    return m.group(1) if m else "?"


def _states(ops: List[Op]) -> List[str]:
    """Each op judged (itself) against the home now, newest first as the undo meets them: a file a
    later op of the run moved is judged where it lies (a rewrite in archived_sessions/, then the
    unarchive's move); a DB op through one read-only connection per DB."""
    conns: Dict[str, sqlite3.Connection] = {}
    out: List[str] = []
    moved: Dict[str, str] = {}  # a file's path when the op ran -> where later ops of the run put it
    in_db: Dict[int, str] = {}  # id(op) -> its state: DB ops judged first, in bulk (the DB as it is now)
    groups: Dict[Tuple[Any, type], List[Op]] = {}
    for op in ops:
        if op.DB_OP:
            groups.setdefault((op.db(), type(op)), []).append(op)
    try:
        for (db, cls), members in groups.items():
            if not os.path.isfile(db):
                states = [CHANGED] * len(members)
            else:
                if db not in conns:
                    conns[db] = open_readonly(Path(db))
                states = _judge_db_ops(conns[db], cls, members)
            in_db.update(zip(map(id, members), states))
        for op in reversed(ops):
            if op.DB_OP:
                out.append(in_db[id(op)])
                continue
            judged = op
            for p in op.files():
                if p in moved:
                    judged = judged.at(p, moved[p])
            st = judged.judge()
            rel = op.relocation()
            if rel is not None and st == NEW:
                moved[rel[0]] = moved.get(rel[1], rel[1])
            out.append(st)
    finally:
        for c in conns.values():
            c.close()
    out.reverse()
    return out


def _judge_db_ops(conn: sqlite3.Connection, cls: type, ops: List[Op]) -> List[str]:
    """The ops of one class on one DB judged together (Op.judge_all); where their tables or columns
    are not as the journal says, one by one: only the ops that name them are CHANGED."""
    try:
        check_op_columns(conn, ops)
        return cls.judge_all(conn, ops)  # type: ignore[attr-defined, no-any-return]
    except (sqlite3.DatabaseError, UserError):
        pass
    out, checked = [], set()
    for op in ops:
        try:
            table = op.columns()[0]
            if table not in checked:
                check_op_columns(conn, [op])
                checked.add(table)
            out.append(op.judge(conn))
        except (sqlite3.DatabaseError, UserError):
            out.append(CHANGED)
    return out


def _describe(op: Op) -> str:
    return safe_str(op.subject()) if op.thread_id else what(op)  # a shared row by its table and key


# DELETED: codexfiles/reasons.py


def _partners(ops: List[Op], alone: Any) -> Dict[str, str]:
    """Threads that go with a thread left alone (Op.together), each with that thread."""
    more: Dict[str, str] = {}
    for op in ops:
        for n in op.together():
            if op.thread_id and n in alone and op.thread_id not in alone:
                more[op.thread_id] = n
            if op.thread_id in alone and n not in alone:
                more[n] = op.thread_id  # type: ignore[assignment]
    return more


def _plan_ops(plan: UndoPlan, ops: List[Op]) -> None:
    """Steps (newest first), conflicts and deletions, a thread judged whole: a thread whose changes
    are all gone or original was deleted since and stays deleted; one that is changed or gone in
    part is left alone whole and named."""
    states = _states(ops)
    per: Dict[str, List[str]] = {}
    for op, st in zip(ops, states):
        if op.thread_id:
            per.setdefault(op.thread_id, []).append(st)
    refusal = {id(op): why for op, st in zip(ops, states) if st in (NEW, TORN) for why in [op.undo_refusal()] if why}
    deleted = {t for t, sts in per.items() if GONE in sts and all(s in (GONE, OLD) for s in sts)}
    split = {t for t, sts in per.items() if t not in deleted and any(s in (CHANGED, GONE) for s in sts)} | \
        {op.thread_id for op in ops if id(op) in refusal and op.thread_id}
    extra = outside_refs(ops, states)  # rows outside the run pointing at what it made (shared_undo.py)
    acted = {t: why for t, why in {**forks_since(ops, states, plan.started_ns), **thread_holds(ops, extra)}.items()
             if t not in split and t not in deleted}
    split |= set(acted)
    plan.conflicts += [f"{safe_str(t)}: {why}; this thread is left alone whole" for t, why in sorted(acted.items())]
    partner = {}  # a thread left alone with a thread it goes with (Op.together: a fork and its parent)
    while True:
        more = _partners(ops, split)
        if not more:
            break
        split.update(more)
        partner.update(more)
    plan.conflicts += [f"{t}: {LEFT_ALONE_WITH.format(other=safe_str(n))} {GROUP_TOGETHER}"
                       for t, n in sorted(partner.items())]
    held = shared_holds(ops, states, split, extra)  # a project, section, name list of threads left alone
    for op, st in zip(ops, states):
        if op.leftover():
            plan.cleanups.append(op)
        if op.thread_id in deleted:
            continue
        if id(op) in held:
            plan.conflicts.append(f"{what(op)}: {held[id(op)]}; left alone")
            continue
        if op.thread_id in split:
            if id(op) in refusal:
                plan.conflicts.append(f"{_describe(op)}: {refusal[id(op)]}; this thread is left alone whole")
            elif st in (CHANGED, GONE):
                plan.conflicts.append(f"{_describe(op)}: {op.changed_reason()}; this thread is "
                                      f"left alone whole (its file and row stay together)")
            continue
        if st == OLD:
            plan.already += 1
        elif st in (NEW, TORN) and refusal.get(id(op)):
            plan.conflicts.append(f"{_describe(op)}: {refusal[id(op)]}; left alone")
        elif st in (NEW, TORN):
            plan.steps.append((op, st))
        elif st == GONE:
            plan.deleted.append(f"{_describe(op)}: {DELETED}")
        else:
            plan.conflicts.append(f"{_describe(op)}: {op.changed_reason()}; left alone")
    plan.deleted += [f"{safe_str(t)}: {DELETED}" for t in sorted(deleted)]
    plan.deleted_ids |= deleted | {op.thread_id for op, st in zip(ops, states) if st == GONE and op.thread_id
                                   and op.thread_id not in split}
    plan.left_ids |= split | {op.thread_id for op, st in zip(ops, states) if op.thread_id and (
        id(op) in held or (st in (NEW, TORN) and refusal.get(id(op))) or st not in (OLD, NEW, TORN, GONE))}
    plan.steps.reverse()


def _plan_from_csv(home: CodexHome, manifest: Path) -> UndoPlan:
    """A bare manifest CSV (`id,old_provider,new_provider,ts`, as the original design wrote):
    the DB rows only, each back to old_provider where it still holds new_provider."""
    import csv  # a bare manifest only (the original design's): not on a journal's path
    check_ops(home, [RowUpdate(str(home.state_db.path), "threads", {"id": "x"}, {"model_provider": ""},
                               {"model_provider": ""})], manifest)
    if not path_allowed(str(manifest), [os.path.realpath(str(home.root))]):
        raise UserError(f"refusing: the manifest {manifest} is outside the Codex home")
    plan = UndoPlan(manifest.parent, "provider_migration (manifest only)", True)
    ops: List[Op] = []
    bad = UserError(f"{manifest}: not a provider migration manifest (id,old_provider,new_provider,ts)")
    try:
        with open(manifest, newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                if not rec.get("id") or rec.get("old_provider") is None or rec.get("new_provider") is None:
                    raise bad
                ops.append(RowUpdate(str(home.state_db.path), "threads", {"id": rec["id"]},
                                     {"model_provider": rec["old_provider"]},
                                     {"model_provider": rec["new_provider"]}, rec["id"]))
    except (UnicodeDecodeError, csv.Error):
        raise bad from None
    _plan_ops(plan, ops)
    return plan


def backups_ahead(home: CodexHome, target: Target) -> BackupsAhead:
    """The backups of this home's DBs the run's ops change, begun now, while the undo is planned
    (BackupsAhead: what the undo does not take is removed)."""
    run = target if isinstance(target, Run) else None
    mine = home_dbs(home)
    dbs = [db for db in dict.fromkeys(o.db() for o in (run.ops if run else []) if o.DB_OP)
           if db is not None and os.path.realpath(db) in mine and os.path.isfile(db)]
    return BackupsAhead(run.path if run else Path(), dbs, _backup_tag())


def _backup_tag() -> str:
    return f"pre_rollback_{datetime.now().strftime('%Y%m%d_%H%M%S')}"


def apply_undo(home: CodexHome, plan: UndoPlan, by: str = "rollback",
               progress: Optional[Progress] = None, ahead: Optional[BackupsAhead] = None) -> Dict[str, Any]:
    """DB ops first (a backup of each DB, then one transaction per DB), then file ops newest first,
    each thread under its writer lock; a thread Codex holds open is left alone whole. More threads
    than the open-file limit holds locks for go in batches, ops of no thread (folders) in the last.
    `ahead`: the backups begun while planning (backups_ahead), taken instead of made."""
    if ahead is not None:
        ahead.wait()  # its descriptors closed before the open-file room for the locks is counted
    per_batch = locks_per_batch(len({o.thread_id for o, _ in plan.steps if o.thread_id}))
    group = group_of([o for o, _ in plan.steps])  # a fork and its parent in one batch
    batches = split_batches(plan.steps, lambda step: group(step[0]), per_batch, loose_last=True)
    undo = _UndoBatches(plan, by, batches, ahead)
    run_batches(home.root, batches, _step_thread, undo.batch, progress)
    if plan.locks:  # lock files a killed run left: removed when no one holds them
        remove_stale_locks(home.root, plan.locks["created"])
        if not plan.locks["coordination_existed"]:
            remove_unused_lock_dir(home.root, coordination_too=True, folder_too=not plan.locks["dir_existed"])
    journal = plan.run_dir / "journal.jsonl"
    if journal.is_file() and not plan.run_dir.is_file() and plan.began:
        try:
            j = Journal(journal)
            try:  # conflicts > 0: partly undone; the run stays undoable and is never pruned without --force
                j.write({"op": "undone", "by": by, **{k: v for k, v in undo.counts.items()},
                         "conflicts": len(plan.conflicts), "left": plan.conflicts[:LEFT_KEPT],
                         "deleted": plan.deleted[:LEFT_KEPT]})
            finally:
                j.close()
        except OSError:
            pass  # the undo is done; the next rollback finds every op already original
    return {"db_backups": undo.backups, **undo.counts}


LEFT_KEPT = 1000  # names of what was left alone kept in the journal (the count is always whole)


def _step_thread(step: Tuple[Op, str]) -> Optional[str]:
    return step[0].thread_id


class _UndoBatches:
    """The undo of one batch of threads, under their writer locks: (first batch: back up every DB
    any batch changes) its DB ops in one transaction per DB, its temporary files, its file ops."""

    def __init__(self, plan: UndoPlan, by: str, batches: List[List[Tuple[Op, str]]],
                 ahead: Optional[BackupsAhead] = None) -> None:
        self.plan, self.by, self.batches = plan, by, batches
        self.ahead = ahead if ahead is not None and ahead.folder == plan.run_dir else None
        self.tag = self.ahead.tag if self.ahead else _backup_tag()
        self.counts = {"rows_reverted": 0, "line1_restored": 0, "files_moved_back": 0, "undone": 0}
        for o, _ in plan.steps:
            if o.COUNTS.undone:
                self.counts.setdefault(o.COUNTS.undone, 0)
        self.backups: List[str] = []
        self.dbs: List[str] = []
        self.cleanups = list(plan.cleanups)
        self.refused: Set[str] = set()  # threads left alone at undo time (Codex held them), every batch

    def batch(self, n: int, steps: List[Tuple[Op, str]], refused: Dict[str, str]) -> None:
        own = {o.thread_id for o, _ in steps}
        refused = dict(refused)
        while True:  # a fork and its parent: both undone or both left alone
            more = _partners([o for o, _ in steps], refused)
            if not more:
                break
            refused.update({t: f"{LEFT_ALONE_WITH.format(other=safe_str(n))}, {refused[n]}" for t, n in more.items()})
        self.plan.conflicts += [f"{tid}: {why}; left alone" for tid, why in refused.items()]
        steps = [(o, s) for o, s in steps if o.thread_id not in refused]
        self.refused.update(refused)
        self.plan.left_ids.update(refused)
        steps, shared_left = drop_served(steps, self.refused)  # what serves a thread left here stays too
        self.plan.conflicts += shared_left
        if n == 1:
            self._backups([o for o, _ in steps] + [o for b in self.batches[1:] for o, _ in b])
        for db in self.dbs:
            mine = [o for o, _ in steps if o.DB_OP and o.db() == db]
            if mine:
                self._rows(db, mine)
        self._clean(n == len(self.batches), own)
        for o, _st in steps:
            if o.DB_OP:
                continue
            if o.revert_if_still():
                self._counted(o)
            else:  # written since the plan (under the lock now): left as it is, and said
                self.plan.conflicts.append(f"{_describe(o)}: {CHANGED_SINCE_PLAN}; left alone")
                if o.thread_id:
                    self.plan.left_ids.add(o.thread_id)

    def _clean(self, last: bool, own: Set[Optional[str]]) -> None:
        """Temporary files a kill left, before the file undos (a folder the run made is then empty
        again): those of this batch's threads; in the last batch, all that are left."""
        now = [c for c in self.cleanups if last or c.thread_id in own]
        self.cleanups = [c for c in self.cleanups if not (last or c.thread_id in own)]
        for c in now:
            c.clean()

    def _backups(self, ops: List[Op]) -> None:
        """Every DB a batch will change, before the first change (a failed run's own backup is the
        state before it: none then)."""
        self.dbs = list(dict.fromkeys(o.db() for o in ops if o.DB_OP))  # type: ignore[misc]
        if self.by == "failure":
            return
        for db in self.dbs:
            made = self.ahead.take(db) if self.ahead else backup_into(self.plan.run_dir, db, self.tag)
            self.backups.append(str(made))

    def _rows(self, db: str, mine: List[Op]) -> None:
        with transaction(Path(db)) as conn:
            check_op_columns(conn, mine)
            i = 0
            while i < len(mine):  # each run of ops of one class, in order: judged again under the lock
                j = i + 1
                while j < len(mine) and type(mine[j]) is type(mine[i]):
                    j += 1
                done, rows = type(mine[i]).revert_all(conn, mine[i:j])  # type: ignore[attr-defined]
                if mine[i].COUNTS.undone:
                    self.counts[mine[i].COUNTS.undone] += rows
                self.counts["undone"] += done
                i = j
            point("undo-commit")

    def _counted(self, o: Op) -> None:
        """A file op undone (revert_if_still)."""
        self.counts["undone"] += 1
        if o.COUNTS.undone:
            self.counts[o.COUNTS.undone] += 1
        point("undo-file")


SUMMARY_COUNTS = ("rows_to_revert", "rows_to_delete", "rows_to_restore", "offsets_to_revert", "line1_to_restore",
                  "files_to_move_back", "other_to_undo")


def summary(plan: UndoPlan, sample: int) -> Dict[str, Any]:
    """What an undo plan holds, each op counted where it says it counts (Op.COUNTS.to_undo)."""
    counts = dict.fromkeys(SUMMARY_COUNTS, 0)
    for o, _ in plan.steps:
        counts[o.COUNTS.to_undo] = counts.get(o.COUNTS.to_undo, 0) + 1
    rows = [safe_str(o.subject()) for o, _ in plan.steps if o.COUNTS.to_undo == "rows_to_revert"]
    notes = [safe_str(n) for n in (o.undo_sample() for o, _ in plan.steps) if n]
    return {"run_dir": safe_str(plan.run_dir), "kind": plan.kind, "run_complete": plan.complete, **counts,
            "temporary_files_to_remove": len(plan.cleanups), "lock_files_to_remove": plan.stale_locks,
            "already_original": plan.already, "conflicts": len(plan.conflicts), "left_deleted": len(plan.deleted),
            "conflict_sample": plan.conflicts[:sample], "deleted_sample": plan.deleted[:sample],
            "rows_sample": rows[:sample], "moves_sample": notes[:sample]}
