"""Checks made before any write: Codex not running, everything writable, one run per home."""
from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from sessionkit import UserError
from sessionkit.ui.cli import COMMAND
from sessionkit.ui.commands import rerun_command
from sessionkit.codexfiles.home import CodexHome
from sessionkit.codexfiles import host
from sessionkit.codexfiles.locks import CodexActivity, refusal
from sessionkit.codexfiles.history_offsets import history_db_path
from sessionkit.codexfiles.paths import is_inside, safe_str
from sessionkit.codexfiles.statedb import DB_COMPANIONS, open_readonly, shared_inode
from sessionkit.codexfiles.writerlock import LOCK_DIR
from sessionkit.runlog.ops import Op
from sessionkit.runlog.scope import allowed_roots, path_allowed


def refuse_if_running(activity: CodexActivity, force: bool) -> None:
    why = None if force else refusal(activity)  # what runs, or what this host cannot guarantee
    if why:
        raise UserError(why)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def db_names(home: CodexHome) -> List[Path]:
    """Every DB a writer of this home may write, as the home names them (symlinks not resolved):
    each state DB (the desktop's `sqlite/` one too) and the thread_history, goals and queue DBs beside it."""
    out: List[Path] = []
    for d in [home.state_db, *home.other_dbs]:
        out += [d.path, history_db_path(d.path), d.path.parent / "goals_1.sqlite", d.path.parent / "queue_1.sqlite"]
    return list(dict.fromkeys(out))


def db_write_problem(home: CodexHome, db: Path) -> Optional[str]:
    """Why no script may write this DB, or None: it (or its -wal/-shm/-journal) has a second hard
    link, or it is a symlink leading out of the Codex home and its state-DB folder."""
    roots = allowed_roots(home)
    if not path_allowed(str(db), roots):
        return None  # a DB in a folder no run writes (another home's sqlite_home): op_problem refuses its ops
    for name in (str(db) + s for s in DB_COMPANIONS):
        real = os.path.realpath(name)
        if os.path.islink(name) and not any(is_inside(real, r) for r in roots):
            return (f"refusing: {safe_str(name)} leads outside the Codex home and its state-DB folder (to "
                    f"{safe_str(real)}): writing it would change a file out there. Nothing was changed; "
                    f"make it a plain file in its folder (or pass --sqlite-home with the folder it is in) "
                    f"and run again")
    return shared_inode(db)


def check_dbs(home: CodexHome, extra: Optional[List[Path]] = None) -> None:
    """Before any change: no DB of this home (nor `extra`) may be written through a hard link or a
    symlink out of the home; the whole run is refused, since a thread's file and row go together."""
    for db in dict.fromkeys([*db_names(home), *(extra or [])]):
        why = db_write_problem(home, db) if os.path.lexists(str(db)) else None
        if why:
            raise UserError(why)


ROW_DRIFTED = "its {table} row holds {found} where the plan read {want} (a value Codex does not write, or changed since the plan): left alone"
ROW_GONE = "its {table} row is gone since the plan: left alone"


def rows_not_as_planned(ops: Sequence[Op]) -> List[Tuple[Op, str]]:
    """Before any change: each op whose row must hold what the plan read (Op.written_back) checked
    against the DB now with the same `IS` its compare-and-set uses, so types count (archived=5 is
    not 1, a BLOB is not TEXT); each op that would fail is returned with its reason, to be skipped
    (its thread whole) instead of ending the run."""
    out: List[Tuple[Op, str]] = []
    conns: Dict[str, sqlite3.Connection] = {}
    sqls: Dict[tuple, str] = {}
    try:
        for op in ops:
            back, db = op.written_back(), op.db()
            if back is None or db is None:
                continue
            conn = conns.get(db)
            if conn is None:
                if not os.path.isfile(db):
                    continue  # the apply names a DB that is gone
                conn = conns[db] = open_readonly(Path(db))
            table, key, want = back
            sig = (table, *key, "", *want)
            sql = sqls.get(sig)
            if sql is None:
                sql = sqls[sig] = f'SELECT count(*) FROM "{table}" WHERE {_where({**key, **want})}'
            try:
                if conn.execute(sql, [*key.values(), *want.values()]).fetchone()[0] == 1:
                    continue  # as planned: the common case, one query (its SQL built once)
                cols = list(want)
                rows = conn.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{table}" '
                                    f"WHERE {_where(key)}", list(key.values())).fetchall()
            except sqlite3.DatabaseError:
                continue  # the columns check of the apply names it
            if len(rows) != 1:
                out.append((op, ROW_GONE.format(table=table)))
                continue
            diff = [(c, v) for c, v in zip(cols, rows[0]) if not _same_value(v, want[c])]
            out.append((op, ROW_DRIFTED.format(table=table, found=", ".join(f"{c}={_shown(v)}" for c, v in diff),
                                               want=", ".join(f"{c}={_shown(want[c])}" for c, _ in diff))))
    finally:
        for c in conns.values():
            c.close()
    return out


def _where(values: Dict[str, object]) -> str:
    return " AND ".join(f'"{c}" IS ?' for c in values)


def _same_value(a: object, b: object) -> bool:
    """SQLite's `a IS b`: numbers compare as numbers, TEXT never equals a BLOB."""
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b
    return type(a) is type(b) and a == b


def _shown(v: object) -> str:
    if isinstance(v, bytes):
        return f"a BLOB ({safe_str(v.decode('utf-8', 'replace'))[:40]!r})"
    return safe_str(repr(v))[:60]


def check_writable(home: CodexHome, extra: Optional[List[Path]] = None) -> None:
    """Before any backup: can we write the DB folder, the rollout folders and the artifacts folder,
    and write each DB without changing a file elsewhere (check_dbs)?"""
    check_dbs(home, extra)
    targets = [home.state_db.path.parent, home.state_db.path, home.sessions_dir, home.archived_dir,
               home.artifacts_dir] + list(extra or [])
    blocked = []
    for t in targets:
        probe = _nearest_existing(t)
        if probe.exists() and not os.access(str(probe), os.W_OK):
            blocked.append(str(probe))
    if blocked:
        cmd = rerun_command(home, COMMAND[2:], os.path.basename(COMMAND[1])) if COMMAND else \
            rerun_command(home, sys.argv[1:])
        inside = " (you are inside Codex's sandbox)" if os.environ.get("CODEX_THREAD_ID") else ""
        raise UserError(
            f"cannot write {', '.join(sorted(set(blocked)))}{inside}; nothing was changed. Ask the user "
            f"for escalated permission for this one command, or have them close Codex and run in a "
            f"terminal: {cmd}")


def check_folders_inside(home: CodexHome, *folders: Path) -> None:
    """Every folder a write goes through (`.tmp`, `.tmp/session-migration/`, a run folder) lies in
    the Codex home: the nearest existing part of each resolves inside it; a run folder resolves
    inside the artifacts folder. Refused (nothing written) when a symlink leads out."""
    root = os.path.realpath(str(home.root))
    art = home.artifacts_dir
    for folder in (art.parent, art, *folders):
        probe = folder
        while not os.path.lexists(str(probe)) and probe != home.root and probe != probe.parent:
            probe = probe.parent
        real = os.path.realpath(str(probe))
        within = os.path.realpath(str(art)) if probe == folder and folder not in (art.parent, art) else root
        if not is_inside(real, within):
            raise UserError(f"refusing: {safe_str(probe)} leads outside the Codex home (to {safe_str(real)}), "
                            f"where backups and the journal would land; make it a plain folder. Nothing was changed")


def check_links_out(home: CodexHome) -> None:
    """Before any change: the folders a run creates files in (`.tmp/`, its `session-migration/`,
    `thread-writer-locks/`) must not be links leading outside the Codex home and its state-DB folder."""
    roots = allowed_roots(home)
    for folder in (home.artifacts_dir.parent, home.artifacts_dir, home.root / LOCK_DIR):
        real = os.path.realpath(str(folder))
        if os.path.islink(str(folder)) and not any(is_inside(real, r) for r in roots):
            raise UserError(f"refusing: {safe_str(folder)} is a link leading outside the Codex home (to "
                            f"{safe_str(real)}); nothing was changed; make it a plain folder and run again")


class HomeLock:
    """One writer per home: a flock on `<home>/.tmp/session-migration/.lock`."""

    def __init__(self, home: CodexHome) -> None:
        self.home = home
        self.path = home.artifacts_dir / ".lock"
        self.fd: Optional[int] = None

    def __enter__(self) -> "HomeLock":
        check_links_out(self.home)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError:
            if os.path.islink(str(self.path)):
                raise UserError(f"refusing: the lock file {safe_str(self.path)} is a link; nothing was changed; "
                                f"remove it and run again") from None
            raise
        locker = host.current().locker
        if locker is not None:
            if not locker.try_lock(self.fd, True):
                os.close(self.fd)
                self.fd = None
                raise UserError(f"another session-migration run is applying to this home "
                                f"(lock {self.path} is held); wait for it to finish") from None
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
