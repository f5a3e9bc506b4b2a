"""Writer locks taken in one hold share one locked file (new names are hard links to it): each name
is held against every other opener while held, all names are gone after the release, and a lock
file that was there before (Codex's, unheld) is locked on its own and left in place."""
import fcntl
import os

import pytest

from sessionkit.codexfiles.writerlock import LOCK_DIR, WriterLocks

IDS = [f"0190aaaa-0000-7000-8000-00000000000{i}" for i in range(5)]


def _free(path) -> bool:
    """A non-blocking exclusive flock on a new open file description: True when no one holds it."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_new_locks_are_names_of_one_locked_file_each_held_and_all_removed(tmp_path):
    (tmp_path / LOCK_DIR).mkdir()
    stale = tmp_path / LOCK_DIR / f"{IDS[4]}.lock"
    stale.write_bytes(b"")  # left by a Codex that was killed: not ours to remove
    locks = WriterLocks(tmp_path)
    assert locks.take_many(IDS) == {}
    names = [tmp_path / LOCK_DIR / f"{t}.lock" for t in IDS]
    inodes = {os.stat(p).st_ino for p in names[:4]}
    assert len(inodes) == 1 and os.stat(names[0]).st_nlink == 4  # one file, four names
    assert os.stat(stale).st_ino not in inodes
    assert [_free(p) for p in names] == [False] * 5  # every thread held against any other opener
    assert len(set(locks.held.values())) == 2  # two descriptors for five locks
    locks.release_all()
    assert sorted(os.listdir(tmp_path / LOCK_DIR)) == [stale.name]  # the coordination file this run made goes too
    assert _free(stale)


def test_without_hard_links_each_lock_is_its_own_file(tmp_path, monkeypatch):
    def refuse(*_a, **_k):
        raise PermissionError(1, "Operation not permitted")  # a filesystem without hard links
    monkeypatch.setattr(os, "link", refuse)
    locks = WriterLocks(tmp_path)
    assert locks.take_many(IDS[:3]) == {}
    names = [tmp_path / LOCK_DIR / f"{t}.lock" for t in IDS[:3]]
    assert len({os.stat(p).st_ino for p in names}) == 3
    assert [_free(p) for p in names] == [False] * 3
    locks.release_all()
    assert not (tmp_path / LOCK_DIR).exists()  # the folder this run made goes again


def test_a_lock_held_by_codex_is_refused_and_the_others_still_taken(tmp_path):
    d = tmp_path / LOCK_DIR
    d.mkdir()
    held = os.open(str(d / f"{IDS[1]}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(held, fcntl.LOCK_EX)  # a running Codex has this thread open
    try:
        locks = WriterLocks(tmp_path)
        refused = locks.take_many(IDS[:3])
        assert list(refused) == [IDS[1]] and refused[IDS[1]].startswith("live thread")
        assert sorted(locks.held) == sorted([IDS[0], IDS[2]])
        locks.release_all()
        assert sorted(os.listdir(d)) == [f"{IDS[1]}.lock"]
    finally:
        os.close(held)


@pytest.mark.parametrize("n", [1, 2])
def test_release_then_take_again(tmp_path, n):
    locks = WriterLocks(tmp_path)
    for _ in range(n):
        assert locks.take_many(IDS) == {}
        locks.release_all()
    assert not (tmp_path / LOCK_DIR).exists()


def test_a_file_has_at_most_names_per_file_names(tmp_path, monkeypatch):
    from sessionkit.codexfiles import writerlock
    monkeypatch.setattr(writerlock, "NAMES_PER_FILE", 2)
    locks = WriterLocks(tmp_path)
    assert locks.take_many(IDS) == {}
    links = [os.stat(tmp_path / LOCK_DIR / f"{t}.lock").st_nlink for t in IDS]
    assert links == [2, 2, 2, 2, 1]
    locks.release_all()


def test_names_a_killed_run_left_are_taken_again_as_one_file(tmp_path):
    """A run killed while holding linked names leaves them unheld: the next run (its rollback) takes
    every one of them, not refusing the second name because the first one's lock is its own."""
    killed = WriterLocks(tmp_path)
    assert killed.take_many(IDS) == {}
    for fd in set(killed.held.values()):
        os.close(fd)  # the kill: locks gone, names left
    again = WriterLocks(tmp_path)
    assert again.take_many(IDS) == {}
    assert [_free(tmp_path / LOCK_DIR / f"{t}.lock") for t in IDS] == [False] * 5
    again.release_all()  # not its files: left for remove_stale_locks
    from sessionkit.codexfiles.writerlock import remove_stale_locks
    remove_stale_locks(tmp_path, IDS)
    assert sorted(os.listdir(tmp_path / LOCK_DIR)) == [".coordination.lock"]
