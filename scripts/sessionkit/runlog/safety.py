"""Checks made before any write: Codex not running, everything writable, one run per home."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

from sessionkit import UserError
from sessionkit.ui.cli import COMMAND
from sessionkit.ui.commands import rerun_command
from sessionkit.codexfiles.home import CodexHome
from sessionkit.codexfiles import host
from sessionkit.codexfiles.locks import CodexActivity, refusal
from sessionkit.codexfiles.history_offsets import history_db_path
from sessionkit.codexfiles.paths import is_inside, safe_str
from sessionkit.codexfiles.statedb import DB_COMPANIONS, shared_inode
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


class HomeLock:
    """One writer per home: a flock on `<home>/.tmp/session-migration/.lock`."""

    def __init__(self, home: CodexHome) -> None:
        self.path = home.artifacts_dir / ".lock"
        self.fd: Optional[int] = None

    def __enter__(self) -> "HomeLock":
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o600)
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
