"""Hold a thread's Codex writer lock (`<home>/thread-writer-locks/<id>.lock`, Codex 0.146+) while
its rollout or row changes, so a Codex that opens the thread meanwhile is refused, not raced.

The folder's `.coordination.lock` is held (exclusive) around creating, locking and removing a
thread's lock file, so a lock file is never deleted between another writer's open and lock. The
locks are the ones Codex takes (flock on POSIX, LockFileEx on Windows: host.py); where the host has
neither, none is taken and an --apply refuses without --force (host.missing).
Codex before 0.146 takes no writer locks: there nothing protects a thread open in a running Codex.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

from sessionkit import UserError
from sessionkit.codexfiles import host

# New lock files are names of one file each NAMES_PER_FILE threads (take_many): a run killed while
# holding them leaves unheld names behind (removed by its rollback); a Codex that opens one of those
# meanwhile holds the lock of at most this many threads, not of all of them.
NAMES_PER_FILE = 128
SPARE_DESCRIPTORS = 128  # DBs, journal, rollouts being rewritten, Python itself

LOCK_DIR = "thread-writer-locks"
COORDINATION = ".coordination.lock"
_THREAD_ID = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z_-]{0,127}\Z")


def locks_per_batch(threads: int) -> int:
    """How many writer locks (one open file each) a run may hold at once: all of them when the
    open-file limit allows, after raising it where the host lets us (host.open_file_room); else as
    many as fit beside the spare descriptors, so the run goes in batches. Refuses, before anything
    is written, only when not even one lock fits."""
    if host.current().locker is None or threads <= 0:
        return max(threads, 1)
    in_use = host.descriptors_in_use()
    room = host.open_file_room(threads + in_use + SPARE_DESCRIPTORS)
    if room is None:
        return threads
    fit = room["room"] - in_use - SPARE_DESCRIPTORS
    if fit < 1:
        raise UserError(f"the open-file limit is {room['soft']} (hard {room['hard']}): too low for even one writer lock "
                        f"beside the {in_use + SPARE_DESCRIPTORS} files a run keeps open; raise it (e.g. `ulimit -n "
                        f"{in_use + SPARE_DESCRIPTORS + 64}`); nothing was changed")
    return fit


class WriterLocks:
    """Writer locks of many threads, taken one by one and released together (a batch of them:
    sized by `locks_per_batch`)."""

    def __init__(self, home_root: Path) -> None:
        self.dir = home_root / LOCK_DIR
        self.held: Dict[str, int] = {}  # thread id -> its descriptor (shared by the names linked to one file)
        self.created: Dict[str, bool] = {}  # thread id -> its lock file was made by us (removed on release)
        self.files: Dict[Tuple[int, int], int] = {}  # (device, inode) of each file we hold -> its descriptor
        self.created_dir = False
        self.created_coordination = False

    def _coordination(self) -> int:
        if not self.dir.is_dir():
            self.dir.mkdir(mode=0o755)
            self.created_dir = True
        if not (self.dir / COORDINATION).exists():
            self.created_coordination = True
        fd = os.open(str(self.dir / COORDINATION), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        _locker().wait_lock(fd)
        return fd

    def take(self, thread_id: str) -> Optional[str]:
        """None when held by us now, else why not (held by a running Codex, odd id, ...)."""
        return self.take_many([thread_id]).get(thread_id)

    def take_many(self, thread_ids: List[str]) -> Dict[str, str]:
        """Take every lock under one hold of the coordination lock; {thread id: why not} for the rest.
        A lock file that is not there yet is made as a hard link to one made (and locked) earlier in
        this hold, NAMES_PER_FILE names a file: a Codex opening any of those names finds it locked,
        as with a file each, where creating a file costs thirty times a link on some filesystems
        (0.9 ms against 0.03 ms on the bench machine). Where links fail (Windows, no hard links, the
        link limit), each lock gets its own file."""
        locker = host.current().locker
        if locker is None or not thread_ids:
            return {}  # no lock call here: the --apply refused unless --force (host.missing)
        refused: Dict[str, str] = {}
        coord = self._coordination()
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        linkable = host.current().rename_replaces_open  # POSIX: a name may go while its file is open
        first: Optional[str] = None  # a lock file made in this hold, locked by us: new names link to it
        first_path = ""
        names = 0  # names `first`'s file has
        where = str(self.dir) + os.sep  # a lock's path: this and its name (thousands a run)
        held, match, link = self.held, _THREAD_ID.match, os.link
        try:
            for tid in thread_ids:
                if tid in held:
                    continue
                if not match(tid):
                    refused[tid] = "the thread id cannot name a writer lock file"
                    continue
                path = where + tid + ".lock"
                if first is not None and names < NAMES_PER_FILE:
                    try:  # a new name of `first`'s locked file (exists already, or no link here: opened as its own)
                        link(first_path, path)
                    except OSError:
                        pass
                    else:
                        held[tid] = held[first]
                        self.created[tid] = True
                        names += 1
                        continue
                existed = os.path.lexists(path)
                try:
                    fd = os.open(path, flags, 0o644)
                except OSError as exc:
                    refused[tid] = f"cannot open its writer lock ({exc.strerror})"
                    continue
                mine = self._same_file(fd)
                if mine is not None:  # a name of a file we hold already (the links a killed run left)
                    os.close(fd)
                    self.held[tid], self.created[tid] = mine, False
                    continue
                try:
                    taken = locker.try_lock(fd, True)
                except OSError as exc:
                    os.close(fd)
                    refused[tid] = f"cannot lock its writer lock ({exc.strerror})"
                    continue
                if not taken:
                    os.close(fd)
                    refused[tid] = "live thread: Codex holds its writer lock (close it in Codex and run again)"
                    continue
                self.held[tid], self.created[tid] = fd, not existed
                st = os.fstat(fd)
                self.files[(st.st_dev, st.st_ino)] = fd
                if not existed and linkable:
                    first, first_path, names = tid, path, 1
        finally:
            locker.unlock(coord)
            os.close(coord)
        return refused

    def _same_file(self, fd: int) -> Optional[int]:
        """Our descriptor of the file `fd` is open on, if we hold that file's lock already: linked
        names share one file, and a second lock on it from this process would be refused."""
        st = os.fstat(fd)
        return self.files.get((st.st_dev, st.st_ino))

    def release_all(self) -> None:
        if not self.held:
            self._tidy()
            return
        coord = self._coordination()
        try:
            posix = host.current().rename_replaces_open
            closed: set = set()

            def close(fd: int) -> None:
                if fd not in closed:
                    closed.add(fd)
                    os.close(fd)
            where, created, unlink = str(self.dir) + os.sep, self.created, os.unlink
            for tid, fd in self.held.items():
                if created.get(tid):  # a file (or a name) we made: removed as Codex removes its own
                    if not posix:  # Windows deletes no file open here: closed first, under the coordination lock
                        close(fd)
                    try:
                        unlink(where + tid + ".lock")
                    except OSError:
                        pass
            for fd in self.held.values():  # every name gone first: a file is unlocked only once nameless
                close(fd)
            self.held.clear()
            self.created.clear()
            self.files.clear()
        finally:
            _locker().unlock(coord)
            os.close(coord)
        self._tidy()

    def _tidy(self) -> None:
        """Leave the home as found: a lock folder this run created goes again when nothing is held."""
        if self.created_coordination or self.created_dir:
            remove_unused_lock_dir(self.dir.parent, coordination_too=True, folder_too=self.created_dir)


def remove_unused_lock_dir(home_root: Path, coordination_too: bool, folder_too: bool) -> None:
    """Remove `.coordination.lock` (and the folder) when no one holds it and no thread lock is there."""
    locker = host.current().locker
    if locker is None:
        return
    d = home_root / LOCK_DIR
    coord = d / COORDINATION
    try:
        names = os.listdir(str(d))
    except OSError:
        return
    if (COORDINATION in names and not coordination_too) or os.path.islink(str(coord)):
        return
    if COORDINATION in names and not host.current().rename_replaces_open:
        return  # Windows cannot delete it while locked, nor safely unlocked: left, as Codex leaves it
    if COORDINATION in names:
        fd = os.open(str(coord), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            taken = locker.try_lock(fd, True)
        except OSError:
            taken = False
        if not taken:
            os.close(fd)
            return
        try:
            os.unlink(str(coord))
        finally:
            os.close(fd)
    if folder_too and names in ([COORDINATION], []):
        try:
            os.rmdir(str(d))
        except OSError:
            pass


def remove_stale_locks(home_root: Path, thread_ids: list) -> None:
    """Lock files a killed run created: each removed under the coordination lock if unheld and empty."""
    locker = host.current().locker
    if locker is None:
        return
    d = home_root / LOCK_DIR
    present = lock_names(home_root)  # one listing, not a stat per thread
    todo = [t for t in thread_ids if isinstance(t, str) and _THREAD_ID.match(t) and f"{t}.lock" in present
            and (d / f"{t}.lock").exists()]
    if not todo:
        return
    coord = os.open(str(d / COORDINATION), os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    locker.wait_lock(coord)
    try:
        for t in todo:
            path = d / f"{t}.lock"
            try:
                fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except OSError:
                continue
            try:
                if locker.try_lock(fd, True) and os.fstat(fd).st_size == 0:
                    os.unlink(str(path))  # unheld (held: a Codex has the thread open now)
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        os.close(coord)


def lock_names(home_root: Path) -> Set[str]:
    """The names in the lock folder now (empty when there is none): one listing answers "is there a
    lock file for this thread" for every thread of a run."""
    try:
        return set(os.listdir(str(home_root / LOCK_DIR)))
    except OSError:
        return set()


def _locker() -> host.Locker:
    locker = host.current().locker
    assert locker is not None, "writer locks are only taken where the host can lock"
    return locker
