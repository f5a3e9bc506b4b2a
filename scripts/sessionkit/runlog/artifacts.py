"""Run folders under `<home>/.tmp/session-migration/`: DB backups, manifests, journals (all 0600)."""
from __future__ import annotations

import errno
import json
import os
import sqlite3
from sessionkit.codexfiles.record import Record
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from sessionkit import UserError
from sessionkit.codexfiles import host
from sessionkit.codexfiles.paths import file_sig, write_all
from sessionkit.codexfiles.statedb import open_readonly

PRIVATE = 0o600


def private_file(path: Path, data: bytes = b"") -> None:
    """A new 0600 file holding exactly `data`, on disk (short writes looped, fsynced, size checked)."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | host.BINARY,
                 PRIVATE)
    try:
        write_all(fd, data)
        os.fsync(fd)
        if os.fstat(fd).st_size != len(data):
            raise OSError(errno.EIO, f"{path}: written size differs")
    finally:
        os.close(fd)


def backup_db(db: Path, dest: Path) -> Path:
    """Copy a live DB (WAL included) through the SQLite backup API; check the copy; make it 0600.
    The check is `quick_check` (every page, record and b-tree of the copy well formed): the backup
    API copies pages as they are, so what `integrity_check` adds (indexes against their tables)
    could only find what the DB itself holds, at several times the cost."""
    private_file(dest)
    src = open_readonly(db)
    dst = sqlite3.connect(str(dest))
    try:
        src.backup(dst)
        ok = dst.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    os.chmod(str(dest), PRIVATE)
    if ok != "ok":
        raise UserError(f"the backup {dest} failed its integrity check ({ok}); nothing was changed")
    return dest


def backup_into(folder: Path, db: str, tag: str) -> Path:
    """A DB backed up (backup_db) as `<db name>.<tag>.bak` in a run folder; a name already there (two
    DBs of one name, a second rollback in the same second) gets `<db name>.<n>.<tag>.bak`."""
    return backup_db(Path(db), _free_name(folder, db, tag))


def _free_name(folder: Path, db: str, tag: str) -> Path:
    """A backup's name no file has, whole or partial (a `.partial` a killed rollback left)."""
    name = Path(db).name
    dest = folder / f"{name}.{tag}.bak"
    n = 1
    while os.path.lexists(str(dest)) or os.path.lexists(str(dest) + PARTIAL):
        n += 1
        dest = folder / f"{name}.{n}.{tag}.bak"
    return dest


class BackupsAhead:
    """backup_into of each DB a rollback may change, made in a thread while the rollback plans (the
    SQLite backup API and its check run outside the GIL), once the journal's paths are checked
    (start). Each is written as `<backup>.partial` and named a backup only when the undo takes it,
    before its first change, and only if the DB (and its WAL) is as it was when the copy began;
    else it is made again then, as backup_into makes it (a failed backup is raised there). What is
    not taken (no change to that DB after all, a refusal) is removed on exit; a kill leaves at most
    a `.partial`, which no restore takes for a backup."""

    def __init__(self, folder: Path, dbs: List[str], tag: str) -> None:
        import threading
        self.folder, self.tag = folder, tag
        self.made: Dict[str, Tuple[Path, Any, Optional[BaseException]]] = {}  # db -> (partial, signature, error)
        self.thread = threading.Thread(target=self._work, args=(list(dict.fromkeys(dbs)),), daemon=True)
        self.dbs = dbs

    def start(self) -> None:
        """Begin the copies (the journal's paths and DBs are this home's: checked by the caller)."""
        if self.dbs and self.thread.ident is None:
            self.thread.start()

    def _work(self, dbs: List[str]) -> None:
        for db in dbs:
            part = Path(str(_free_name(self.folder, db, self.tag)) + PARTIAL)
            sig = db_signature(db)
            try:
                self.made[db] = (backup_db(Path(db), part), sig, None)
            except BaseException as exc:  # given to the undo that asks for it, where it stops the undo
                self.made[db] = (part, sig, exc)

    def wait(self) -> None:
        if self.thread.ident is not None:
            self.thread.join()

    def take(self, db: str) -> Path:
        """This DB's backup, as backup_into would make it now."""
        self.wait()
        got = self.made.get(db)
        if got is None:
            return backup_into(self.folder, db, self.tag)
        part, sig, err = got
        if err is not None:
            raise err  # what is left of it is removed on exit
        if db_signature(db) != sig:  # written since the copy began (a Codex): copied again, now
            return backup_into(self.folder, db, self.tag)
        dest = Path(str(part)[:-len(PARTIAL)])  # the name chosen for it, free then
        if os.path.lexists(str(dest)):
            dest = _free_name(self.folder, db, self.tag)
        os.rename(str(part), str(dest))
        del self.made[db]
        return dest

    def __enter__(self) -> "BackupsAhead":
        return self

    def __exit__(self, *exc: object) -> None:
        self.wait()
        for part, _sig, _err in self.made.values():  # not taken (or made again): removed, a partial one too
            for p in (part, Path(str(part) + "-journal")):
                try:
                    os.unlink(str(p))
                except OSError:
                    pass
        self.made.clear()


PARTIAL = ".partial"  # a backup being made ahead, not yet taken (BackupsAhead)


def db_signature(db: str) -> Any:
    """What moves when a DB is written: the signature (file_sig) of its file and of its WAL."""
    out = []
    for p in (db, db + "-wal"):
        try:
            out.append(file_sig(os.stat(p)))
        except OSError:
            out.append(None)
    return tuple(out)


def durable(paths: Iterable[str]) -> None:
    """Flush the files a batch wrote, renamed or moved (and their folders) to disk once, before the
    DB commit that records them: one syncfs() of each filesystem they are on where the system has
    it (Linux), else an fsync of each file and folder; never the whole system's os.sync()."""
    files = sorted(set(paths))
    folders = sorted({os.path.dirname(p) for p in files})
    sync_fs = _syncfs()
    if sync_fs is not None:
        devices = set()
        for d in folders:
            try:
                dev = os.stat(d).st_dev
            except OSError:
                continue
            if dev not in devices and _fsync_path(d, sync_fs):
                devices.add(dev)
        return
    for p in files + folders:
        _fsync_path(p, None)


def _syncfs() -> Optional[Callable[[int], int]]:
    try:
        import ctypes
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    return fn  # type: ignore[no-any-return]


def _fsync_path(path: str, sync_fs: Optional[Callable[[int], int]]) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        if sync_fs is not None:
            return sync_fs(fd) == 0
        os.fsync(fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class RunDir(Record):
    __slots__ = ("path", "kind", "stamp")

    def __init__(self, path: Path, kind: str, stamp: str) -> None:
        self.path = path
        self.kind = kind
        self.stamp = stamp

    @property
    def journal_path(self) -> Path:
        return self.path / "journal.jsonl"


def new_run_dir(artifacts_root: Path, kind: str) -> RunDir:
    artifacts_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    for n in range(1000):
        name = f"{kind}_{stamp}" + (f"_{n}" if n else "")
        path = artifacts_root / name
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return RunDir(path=path, kind=kind, stamp=stamp)
    raise UserError(f"cannot create a run folder under {artifacts_root}")


def _started_ns(run: Path) -> int:
    """When a run began, from its journal's first record (a rollback appends later: not its mtime);
    a run killed before that record was whole has only its journal's mtime (written once, at its start)."""
    journal = run / "journal.jsonl"
    try:
        with open(journal, "rb") as fh:
            line = fh.readline()
        if not line.endswith(b"\n"):
            return os.stat(journal).st_mtime_ns
        return int(json.loads(line).get("started_ns") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


def list_runs(artifacts_root: Path) -> List[Path]:
    """Recorded runs, oldest first."""
    if not artifacts_root.is_dir():
        return []
    runs = [p for p in artifacts_root.iterdir() if p.is_dir() and (p / "journal.jsonl").is_file()]
    return sorted(runs, key=lambda p: (_started_ns(p), p.name))
