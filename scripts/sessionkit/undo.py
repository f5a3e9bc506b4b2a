"""Undo a run from its journal: only what still holds the value the run wrote, a thread's file and
row together or not at all; idempotent."""
from __future__ import annotations

import csv
import os
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from . import UserError
from .artifacts import backup_db, backup_into, list_runs
from .faults import point
from .home import CodexHome
from .journal import Journal, read_records
from .ops import CHANGED, NEW, OLD, TORN, Line1Rewrite, Move, Op, OffsetShift, RolloutRewrite, RowInsert, RowDelete, RowUpdate, \
    check_columns, check_op_columns, op_from_record
from .paths import safe_str
from .statedb import open_readonly, transaction
from .lockbatch import run_batches, split_batches
from .progress import Progress
from .writerlock import LOCK_DIR, locks_per_batch, remove_stale_locks, remove_unused_lock_dir

RUN_RECORDS = ("begin", "locks", "backup", "manifest", "skip", "batch", "commit", "end", "undone")


@dataclass
class Run:
    """A run folder read back: its begin record, its ops in journal order, how it ended."""
    path: Path
    begin: Dict[str, Any]
    ops: List[Op]
    complete: bool
    undone: Optional[str]  # None, "failure" or "rollback"
    manifest: Optional[str]
    locks: Dict[str, Any] = field(default_factory=dict)
    backups: Dict[str, str] = field(default_factory=dict)  # DB path -> its pre-run backup

    @property
    def began(self) -> bool:
        """False for a run stopped before its begin record was on disk: it changed nothing."""
        return bool(self.begin)

    @property
    def status(self) -> str:
        if not self.began:
            return "stopped before any change"
        if self.undone == "failure":
            return "failed, undone"
        if self.undone:
            return "rolled back"
        return "complete" if self.complete else "incomplete (killed?)"

    @property
    def applied(self) -> bool:
        """Holds changes a rollback could still undo."""
        return self.undone is None and self.began

    def touches(self) -> Set[str]:
        return {o.thread_id or (o.paths() or [""])[0] for o in self.ops}


def read_run(run_dir: Path) -> Run:
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
    batches: List[int] = []  # [n, of] of the last batch record
    for rec in recs[1:]:
        op = rec["op"]
        if op == "begin":
            raise UserError(f"{journal}: a second begin record")
        if op == "end":
            complete = True
        elif op == "undone":
            undone = "failure" if rec.get("by") == "failure" else "rollback"
        elif op == "manifest":
            manifest = str(rec.get("path"))
        elif op == "backup":
            from .ops import strict
            b = strict(rec, {"db": "str", "backup": "str"}, {})
            backups[b["db"]] = b["backup"]
        elif op == "locks":
            from .ops import strict
            locks = strict(rec, {"created": "list", "dir_existed": "bool", "coordination_existed": "bool"}, {})
            if not all(isinstance(t, str) for t in locks["created"]):
                raise UserError(f"{journal}: a locks record is malformed")
        elif op == "batch":
            from .ops import strict
            b = strict(rec, {"n": "int", "of": "int", "threads": "int"}, {})
            if [b["n"] - 1, b["of"]] != (batches or [0, b["of"]]) or not 1 <= b["n"] <= b["of"] or b["threads"] < 1:
                raise UserError(f"{journal}: a batch record is malformed or out of order")
            batches = [b["n"], b["of"]]
        elif op not in RUN_RECORDS:
            ops.append(op_from_record(rec))
    return Run(run_dir, recs[0], ops, complete, undone, manifest, locks, backups)


@dataclass
class UndoPlan:
    run_dir: Path
    kind: str
    complete: bool
    steps: List[Tuple[Op, str]] = field(default_factory=list)  # (op, state) to undo, newest first
    cleanups: List[Op] = field(default_factory=list)  # temporary files left by a kill
    already: int = 0
    conflicts: List[str] = field(default_factory=list)
    locks: Dict[str, Any] = field(default_factory=dict)  # the run's "locks" record

    stale_locks: int = 0  # lock files (and .coordination.lock) a killed run left behind
    began: bool = True  # False: the run stopped before its begin record; nothing to undo or record

    @property
    def actions(self) -> int:
        return len(self.steps) + len(self.cleanups) + self.stale_locks

    def count(self, *kinds: type) -> int:
        return sum(1 for o, _ in self.steps if type(o) in kinds)


def find_run(home: CodexHome, manifest: Optional[str]) -> Path:
    """The run a manifest (CSV, run folder or journal) names; else the newest run that is applied and
    not undone, so --latest walks back through several runs. A bare CSV of the original design
    (`provider_migration_<ts>.csv`, no journal beside it) stands for itself."""
    if manifest:
        p = Path(manifest).expanduser()
        if not p.exists():
            raise UserError(f"no such manifest or run folder: {p}")
        if p.is_dir():
            return p
        return p.parent if (p.parent / "journal.jsonl").is_file() else p
    runs = list_runs(home.artifacts_dir)
    if not runs:
        raise UserError(f"no runs recorded under {home.artifacts_dir}")
    for run in reversed(runs):
        try:
            if read_run(run).applied:
                return run
        except UserError:
            return run  # a damaged journal is shown, not passed over silently
    return runs[-1]


def later_dependents(home: CodexHome, run_dir: Path) -> List[Tuple[Path, int]]:
    """Newer applied runs that changed threads this run changed: undo those first."""
    if run_dir.is_file():
        return []
    runs = list_runs(home.artifacts_dir)
    real = os.path.realpath(str(run_dir))
    idx = next((i for i, r in enumerate(runs) if os.path.realpath(str(r)) == real), None)
    if idx is None:
        return []
    mine = read_run(run_dir).touches()
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
    from .writerun import allowed_roots
    return allowed_roots(home)


def check_ops(home: CodexHome, ops: List[Op], where: Path) -> None:
    """Every path and DB of a (hostile) journal inside this home and its state-DB folder."""
    from .writerun import home_dbs, op_problem
    roots, dbs = _roots(home), home_dbs(home)
    for op in ops:
        why = op_problem(op, roots, dbs)
        if why:
            raise UserError(f"refusing: {where} names a path outside the Codex home: {why}")


def check_against_backups(run: Run, journal: Path, ops: List[Op]) -> None:
    """The values a rollback would write back must be the ones the run's own backup holds: an
    edited record (other columns, other values) is refused, not written."""
    conns: Dict[str, sqlite3.Connection] = {}
    seen: Set[Any] = set()
    try:
        for op in ops:
            if not isinstance(op, (RowUpdate, RowDelete)):
                continue
            backup = run.backups.get(op.db_path)
            if backup is None or os.path.dirname(os.path.realpath(backup)) != os.path.realpath(str(run.path)):
                raise UserError(f"refusing: {journal} changes rows of {op.db_path} without a backup of it in the run folder")
            if backup not in conns:
                conns[backup] = open_readonly(Path(backup))
            conn = conns[backup]
            want = op.old if isinstance(op, RowUpdate) else op.row
            try:
                sig = (backup, op.table, tuple(op.key), tuple(want))
                if sig not in seen:
                    check_columns(conn, op.table, list(op.key) + list(want), None)
                    seen.add(sig)
                w = " AND ".join(f'"{c}" IS ?' for c in op.key)
                cols = ", ".join(f'"{c}"' for c in want)
                rows = conn.execute(f'SELECT {cols} FROM "{op.table}" WHERE {w}', list(op.key.values())).fetchall()
            except (sqlite3.DatabaseError, UserError):
                rows = []
            if [dict(zip(want, r)) for r in rows][:1] != [want]:
                raise UserError(f"refusing: {journal}: the {op.KIND} of {op.key} does not match the run's own "
                                f"backup (edited journal?); nothing was changed")
    finally:
        for c in conns.values():
            c.close()


def plan_undo(home: CodexHome, run_dir: Path) -> UndoPlan:
    if run_dir.is_file():
        return _plan_from_csv(home, run_dir)
    run = read_run(run_dir)
    journal = run_dir / "journal.jsonl"
    if not run.began:
        return UndoPlan(run_dir, run_kind(run_dir), False, began=False)
    if os.path.realpath(str(run.begin.get("codex_dir", ""))) != os.path.realpath(str(home.root)):
        raise UserError(f"{journal} belongs to the Codex home {run.begin.get('codex_dir')!r}, not {home.root}")
    check_ops(home, run.ops, journal)
    plan = UndoPlan(run_dir, str(run.begin.get("kind")), run.complete, locks=run.locks)
    _plan_ops(plan, run.ops)
    check_against_backups(run, journal, [o for o, _ in plan.steps])  # only what would be written back
    if run.locks:
        d = home.root / LOCK_DIR
        plan.stale_locks = sum(1 for t in run.locks["created"] if os.path.lexists(str(d / f"{t}.lock"))) + \
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
    conns: Dict[str, sqlite3.Connection] = {}
    checked: Set[Any] = set()
    out = []
    try:
        for op in ops:
            if op.DB_OP:
                db = op.db()
                assert db is not None
                if db not in conns:
                    if not os.path.isfile(db):
                        out.append(CHANGED)
                        continue
                    conns[db] = open_readonly(Path(db))
                try:
                    if (db, type(op), op.columns()[0]) not in checked:
                        check_op_columns(conns[db], [op])
                        checked.add((db, type(op), op.columns()[0]))
                    out.append(op.state_db(conns[db]))
                except (sqlite3.DatabaseError, UserError):
                    out.append(CHANGED)
            else:
                out.append(op.state())
    finally:
        for c in conns.values():
            c.close()
    return out


def _describe(op: Op) -> str:
    return op.thread_id or safe_str((op.paths() or [op.db()])[0])


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
    states = _states(ops)
    split = {op.thread_id for op, st in zip(ops, states) if st == CHANGED and op.thread_id}
    partner = {}  # a thread left alone with a thread it goes with (Op.together: a fork and its parent)
    while True:
        more = _partners(ops, split)
        if not more:
            break
        split.update(more)
        partner.update(more)
    plan.conflicts += [f"{t}: left alone with {safe_str(n)} (a fork and its parent change together)"
                       for t, n in sorted(partner.items())]
    for op, st in zip(ops, states):
        if op.leftover():
            plan.cleanups.append(op)
        if op.thread_id in split:
            if st == CHANGED:
                plan.conflicts.append(f"{_describe(op)}: {op.changed_reason()}; this thread is "
                                      f"left alone whole (its file and row stay together)")
            continue
        if st == OLD:
            plan.already += 1
        elif st in (NEW, TORN):
            plan.steps.append((op, st))
        else:
            plan.conflicts.append(f"{_describe(op)}: {op.changed_reason()}; left alone")
    plan.steps.reverse()


def _plan_from_csv(home: CodexHome, manifest: Path) -> UndoPlan:
    """A bare manifest CSV (`id,old_provider,new_provider,ts`, as the original design wrote):
    the DB rows only, each back to old_provider where it still holds new_provider."""
    check_ops(home, [RowUpdate(str(home.state_db.path), "threads", {"id": "x"}, {"model_provider": ""},
                               {"model_provider": ""})], manifest)
    from .writerun import path_allowed
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


def apply_undo(home: CodexHome, plan: UndoPlan, by: str = "rollback",
               progress: Optional[Progress] = None) -> Dict[str, Any]:
    """DB ops first (a backup of each DB, then one transaction per DB), then file ops newest first,
    each thread under its writer lock; a thread Codex holds open is left alone whole. More threads
    than the open-file limit holds locks for go in batches, ops of no thread (folders) in the last."""
    per_batch = locks_per_batch(len({o.thread_id for o, _ in plan.steps if o.thread_id}))
    from .writerun import _group_of
    group = _group_of([o for o, _ in plan.steps])  # a fork and its parent in one batch
    batches = split_batches(plan.steps, lambda step: group(step[0]), per_batch, loose_last=True)
    undo = _UndoBatches(plan, by, batches)
    run_batches(home.root, batches, _step_thread, undo.batch, progress)
    if plan.locks:  # lock files a killed run left: removed when no one holds them
        remove_stale_locks(home.root, plan.locks["created"])
        if not plan.locks["coordination_existed"]:
            remove_unused_lock_dir(home.root, coordination_too=True, folder_too=not plan.locks["dir_existed"])
    journal = plan.run_dir / "journal.jsonl"
    if journal.is_file() and not plan.run_dir.is_file() and plan.began:
        try:
            j = Journal(journal)
            try:
                j.write({"op": "undone", "by": by, **{k: v for k, v in undo.counts.items()},
                         "conflicts": len(plan.conflicts)})
            finally:
                j.close()
        except OSError:
            pass  # the undo is done; the next rollback finds every op already original
    return {"db_backups": undo.backups, **undo.counts}


def _step_thread(step: Tuple[Op, str]) -> Optional[str]:
    return step[0].thread_id


class _UndoBatches:
    """The undo of one batch of threads, under their writer locks: (first batch: back up every DB
    any batch changes) its DB ops in one transaction per DB, its temporary files, its file ops."""

    def __init__(self, plan: UndoPlan, by: str, batches: List[List[Tuple[Op, str]]]) -> None:
        self.plan, self.by, self.batches = plan, by, batches
        self.stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
        self.counts = {"rows_reverted": 0, "line1_restored": 0, "files_moved_back": 0, "undone": 0}
        self.backups: List[str] = []
        self.dbs: List[str] = []
        self.cleanups = list(plan.cleanups)

    def batch(self, n: int, steps: List[Tuple[Op, str]], refused: Dict[str, str]) -> None:
        own = {o.thread_id for o, _ in steps}
        refused = dict(refused)
        while True:  # a fork and its parent: both undone or both left alone
            more = _partners([o for o, _ in steps], refused)
            if not more:
                break
            refused.update({t: f"left alone with {safe_str(n)}, {refused[n]}" for t, n in more.items()})
        self.plan.conflicts += [f"{tid}: {why}; left alone" for tid, why in refused.items()]
        steps = [(o, s) for o, s in steps if o.thread_id not in refused]
        if n == 1:
            self._backups([o for o, _ in steps] + [o for b in self.batches[1:] for o, _ in b])
        for db in self.dbs:
            mine = [o for o, _ in steps if o.DB_OP and o.db() == db]
            if mine:
                self._rows(db, mine)
        self._clean(n == len(self.batches), own)
        for o, _st in steps:
            if not o.DB_OP and o.state() in (NEW, TORN):
                self._file(o)

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
            self.backups.append(str(backup_into(self.plan.run_dir, db, f"pre_rollback_{self.stamp}")))

    def _rows(self, db: str, mine: List[Op]) -> None:
        with transaction(Path(db)) as conn:
            check_op_columns(conn, mine)
            for o in mine:
                if o.state_db(conn) != NEW:
                    continue
                n = o.undo_db(conn)
                if isinstance(o, (RowUpdate, RowInsert)) and not isinstance(o, OffsetShift):
                    self.counts["rows_reverted"] += n
                self.counts["undone"] += 1
            point("undo-commit")

    def _file(self, o: Op) -> None:
        o.undo()
        self.counts["undone"] += 1
        if isinstance(o, (Line1Rewrite, RolloutRewrite)):
            self.counts["line1_restored"] += 1
        elif isinstance(o, Move):
            self.counts["files_moved_back"] += 1
        point("undo-file")


def restore_db(home: CodexHome, backup: Path) -> Dict[str, Any]:
    """Put a whole DB backup back, after backing up the current DB beside it."""
    if not backup.is_file():
        raise UserError(f"no such backup: {backup}")
    try:
        src = open_readonly(backup)
        ok = src.execute("PRAGMA integrity_check").fetchone()[0]
        has = src.execute("SELECT count(*) FROM sqlite_master WHERE name='threads'").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{backup} is not a SQLite backup ({exc})") from None
    if ok != "ok" or not has:
        src.close()
        raise UserError(f"{backup} is not a usable state DB backup (integrity: {ok}, threads table: {bool(has)})")
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    home.artifacts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved = backup_db(home.state_db.path, home.artifacts_dir / f"{home.state_db.path.name}.pre_restore_{stamp}.bak")
    dst = sqlite3.connect(str(home.state_db.path), timeout=5.0)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return {"restored_from": str(backup), "previous_db_saved_to": str(saved)}


def summary(plan: UndoPlan, sample: int) -> Dict[str, Any]:
    rows = [o.thread_id for o, _ in plan.steps if type(o) is RowUpdate]
    return {"run_dir": safe_str(plan.run_dir), "kind": plan.kind, "run_complete": plan.complete,
            "rows_to_revert": len(rows), "rows_to_delete": plan.count(RowInsert),
            "rows_to_restore": plan.count(RowDelete), "offsets_to_revert": plan.count(OffsetShift),
            "line1_to_restore": plan.count(Line1Rewrite, RolloutRewrite), "files_to_move_back": plan.count(Move),
            "other_to_undo": len(plan.steps) - plan.count(RowUpdate, RowInsert, RowDelete, OffsetShift,
                                                           Line1Rewrite, RolloutRewrite, Move),
            "temporary_files_to_remove": len(plan.cleanups), "lock_files_to_remove": plan.stale_locks,
            "already_original": plan.already, "conflicts": len(plan.conflicts),
            "conflict_sample": plan.conflicts[:sample], "rows_sample": rows[:sample],
            "moves_sample": [f"{o.dst} -> {o.src}" for o, _ in plan.steps if isinstance(o, Move)][:sample]}
