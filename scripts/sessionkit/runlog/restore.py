"""`rollback.py --restore-db`: a whole DB backup put back only into the DB its run's journal says it
belongs to, after a check of what changed since the backup (rows and files); refused without
--force when anything not the run's own would be lost, or a row and its file would be split."""
from __future__ import annotations

import os
import sqlite3
from sessionkit.codexfiles.record import Record
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from sessionkit import UserError
from sessionkit.runlog.artifacts import backup_db
from sessionkit.codexfiles.faults import point
from sessionkit.codexfiles.home import CodexHome
from sessionkit.runlog.journal import Journal
from sessionkit.runlog.ops import NEW, VOLATILE, Op, RowRef
from sessionkit.codexfiles.paths import safe_str
from sessionkit.codexfiles.statedb import open_readonly, open_readwrite
from sessionkit.runlog.undo import Run, read_run

RESTORE_TAG = "pre_restore"


class RestoreCheck(Record):
    """What putting `backup` back over `db` would do, besides undoing the run's own row changes."""
    __slots__ = ("backup", "db", "run", "lost", "split", "own")

    def __init__(self, backup: Path, db: str, run: Optional[Run], lost: Optional[List[str]] = None,
                 split: Optional[List[str]] = None, own: int = 0) -> None:
        self.backup = backup
        self.db = db
        self.run = run
        self.lost = [] if lost is None else lost  # changes since the backup, not the run's, it would undo
        self.split = [] if split is None else split  # rows and files it would leave disagreeing
        self.own = own  # rows that differ only as the run changed them

    @property
    def clean(self) -> bool:
        return not self.lost and not self.split

    @property
    def same(self) -> bool:
        """Every row of the DB is already as in the backup: a restore would change nothing."""
        return self.clean and not self.own


def owner(home: CodexHome, backup: Path) -> Tuple[str, Optional[Run]]:
    """The DB a backup belongs to, from the journal of the run folder it lies in; a backup no
    journal records (a rollback's or a restore's own) by its name `<db name>.<tag>.bak` when exactly
    one DB of this home has that name."""
    from sessionkit.runlog.scope import home_dbs
    real = os.path.realpath(str(backup))
    dbs = sorted(home_dbs(home))
    folder = backup.parent
    run = None
    if (folder / "journal.jsonl").is_file():
        run = read_run(folder)
        for db, b in run.backups.items():
            if os.path.realpath(b) == real:
                if os.path.realpath(db) not in dbs:
                    raise UserError(f"refusing: {safe_str(backup)} is the backup of {safe_str(db)}, which is not a "
                                    f"DB of this home; nothing was changed")
                return db, run
    named = [d for d in dbs if backup.name.startswith(os.path.basename(d) + ".") and os.path.isfile(d)]
    if len(named) == 1:
        return named[0], run
    raise UserError(f"refusing: no run's journal records {safe_str(backup)} as the backup of a DB of this home, "
                    f"and its name does not tell one DB; nothing was changed")


def _key_columns(conn: sqlite3.Connection, table: str) -> List[str]:
    pk = sorted((r[5], r[1]) for r in conn.execute(f'PRAGMA table_info("{table}")') if r[5])
    return [name for _, name in pk]


def _rows(conn: sqlite3.Connection, table: str, key: List[str]) -> Tuple[List[str], Dict[tuple, tuple]]:
    cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    sel = ", ".join(f'"{c}"' for c in cols)
    if key:
        idx = [cols.index(k) for k in key]
        return cols, {tuple(r[i] for i in idx): r for r in conn.execute(f'SELECT {sel} FROM "{table}"')}
    return cols, {(r[0],): tuple(r[1:]) for r in conn.execute(f'SELECT rowid, {sel} FROM "{table}"')}


def _tables(conn: sqlite3.Connection) -> Set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}


def _describe(table: str, key: List[str], k: tuple) -> str:
    return f"{table} " + ", ".join(f"{c}={safe_str(str(v))}" for c, v in zip(key or ["rowid"], k))


def check_restore(home: CodexHome, backup: Path) -> RestoreCheck:
    """Compare the backup with the DB now, table by table, row by row; a difference the run's own
    operation made (and that still holds the run's values) is expected, anything else is named."""
    db, run = owner(home, backup)
    check = RestoreCheck(backup, db, run)
    ops = [o for o in (run.ops if run else []) if o.DB_OP and os.path.realpath(str(o.db())) == os.path.realpath(db)]
    try:
        cur, bak = open_readonly(Path(db)), open_readonly(backup)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{safe_str(backup)} or {safe_str(db)} cannot be read ({exc}); nothing was changed") from None
    try:
        ok = bak.execute("PRAGMA integrity_check").fetchone()[0]
        if ok != "ok":
            raise UserError(f"{safe_str(backup)} failed its integrity check ({ok}); nothing was changed")
        ours = _still_ours(ops, cur)
        for table in sorted(_tables(cur) | _tables(bak)):
            _compare(check, table, cur, bak, ours)
        if run is not None:
            _files(check, run, bak, cur)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"cannot compare {safe_str(backup)} with {safe_str(db)} ({exc}); nothing was changed") from None
    finally:
        cur.close()
        bak.close()
    return check


def _still_ours(ops: List[Op], conn: sqlite3.Connection) -> Dict[str, List[RowRef]]:
    """Per table, the rows the run changed that still hold its values (judged by each op)."""
    out: Dict[str, List[RowRef]] = {}
    for o in ops:
        try:
            if o.judge(conn) != NEW:
                continue
        except (sqlite3.DatabaseError, UserError):
            continue
        for ref in o.rows():
            out.setdefault(ref.table, []).append(ref)
    return out


def _compare(check: RestoreCheck, table: str, cur: sqlite3.Connection, bak: sqlite3.Connection,
             ours: Dict[str, List[RowRef]]) -> None:
    if table not in _tables(bak) or table not in _tables(cur):
        where = "the DB now" if table in _tables(cur) else "the backup"
        check.lost.append(f"table {table} is only in {where}")
        return
    key = _key_columns(cur, table)
    cols, now = _rows(cur, table, key)
    bcols, then = _rows(bak, table, key)
    if cols != bcols:
        check.lost.append(f"table {table}: its columns differ between the backup and the DB now")
        return
    refs = ours.get(table, [])
    skip = set(VOLATILE.get(table, ()))
    for k in sorted(set(now) | set(then), key=repr):
        a, b = now.get(k), then.get(k)
        if a == b:
            continue
        row = dict(zip(cols, a if a is not None else b))  # type: ignore[arg-type]
        mine = [r for r in refs if all(row.get(c) == v for c, v in r.key.items())]
        if a is not None and b is not None:
            changed = {c for c, x, y in zip(cols, a, b) if x != y} - skip
            if not changed or any(r.columns is None or changed <= set(r.columns) for r in mine):
                check.own += 1
            else:
                check.lost.append(f"{_describe(table, key, k)}: {', '.join(sorted(changed))} changed since the backup")
        elif a is not None:  # only now
            if any(r.columns is None for r in mine):
                check.own += 1
            else:
                check.lost.append(f"{_describe(table, key, k)}: added since the backup")
        elif any(r.columns is None for r in mine):  # only in the backup: a row the run deleted
            check.own += 1
        else:
            check.lost.append(f"{_describe(table, key, k)}: deleted since the backup (it would come back)")


def _files(check: RestoreCheck, run: Run, bak: sqlite3.Connection, cur: sqlite3.Connection) -> None:
    """The run's file changes stay: a row put back beside a file the run moved or rewrote is split.
    A row the DB already holds as the backup does (a run rolled back) is no split the restore makes."""
    for o in run.ops:
        if o.DB_OP or not o.files():
            continue
        try:
            st = o.judge()
        except OSError:
            continue
        if st == NEW:
            check.split.append(f"{safe_str(o.subject())}: the run's {o.KIND} of {safe_str(o.files()[0])} stays "
                               f"(rollback.py --manifest undoes files and rows together)")
    if "threads" in _tables(bak):
        cols = [r[1] for r in bak.execute('PRAGMA table_info("threads")')]
        if "rollout_path" in cols and "id" in cols:
            ids = {s.split(":")[0] for s in check.split}
            mine = {o.thread_id for o in run.ops if o.thread_id}
            now = dict(cur.execute("SELECT id, rollout_path FROM threads")) if "threads" in _tables(cur) else {}
            for tid, path in bak.execute("SELECT id, rollout_path FROM threads"):
                if isinstance(path, str) and path and not os.path.lexists(path) and str(tid) not in ids \
                        and tid in mine and now.get(tid) != path:
                    check.split.append(f"{safe_str(str(tid))}: its row would point at {safe_str(path)}, "
                                       "which is not there")


def restore_db(home: CodexHome, check: RestoreCheck, force: bool) -> Dict[str, Any]:
    """Put the backup back over its own DB, after backing up the DB as it is; the restore is
    recorded in the run's journal first (a kill leaves the DB whole: either as it was or restored)."""
    if not check.clean and not force:
        raise UserError(f"refusing to restore {safe_str(check.db)}: {len(check.lost)} change(s) since the backup "
                        f"would be lost and {len(check.split)} row(s)/file(s) split (see the dry-run: "
                        f"rollback.py --restore-db BACKUP); --force restores anyway. Nothing was changed")
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    folder = check.run.path if check.run is not None else home.artifacts_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = os.path.basename(check.db)
    dest = folder / f"{name}.{RESTORE_TAG}_{stamp}.bak"
    n = 1
    while os.path.lexists(str(dest)):
        n += 1
        dest = folder / f"{name}.{n}.{RESTORE_TAG}_{stamp}.bak"
    saved = backup_db(Path(check.db), dest)
    point("restore-saved")
    if check.run is not None:
        j = Journal(check.run.path / "journal.jsonl")
        try:
            j.write({"op": "restore", "db": check.db, "backup": str(check.backup), "saved": str(saved),
                     "forced": (check.lost + check.split)[:100] if force else []})
        finally:
            j.close()
    src = open_readonly(check.backup)
    dst = open_readwrite(Path(check.db))  # never through a hard link (checked before, guarded here)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    point("restore-written")
    return {"db": check.db, "restored_from": str(check.backup), "previous_db_saved_to": str(saved),
            "own_rows": check.own, "lost": check.lost, "split": check.split}
