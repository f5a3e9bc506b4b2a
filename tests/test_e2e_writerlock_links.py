"""Real Codex 0.171 against writer locks taken in one hold (new lock files as hard links to one
locked file): Codex refuses every one of those threads, the linked names included, and takes them
again once they are released."""
import os

from sessionkit.codexfiles.writerlock import LOCK_DIR, WriterLocks


def test_codex_refuses_each_thread_of_one_hold_and_takes_them_after(world):
    ids = world.make_threads(3)
    locks = WriterLocks(world.home)
    assert locks.take_many(ids) == {}
    names = [world.home / LOCK_DIR / f"{t}.lock" for t in ids]
    assert len({os.stat(p).st_ino for p in names}) == 1  # one file, three names
    refused = []
    try:
        with world.app() as app:
            for tid in ids[1:]:  # the linked names, not the file made first
                try:
                    app.request("thread/resume", {"threadId": tid}, timeout=30)
                    app.turn(tid, "are you there", timeout=30)
                except Exception as exc:  # noqa: BLE001 - the error Codex returns is the finding
                    refused.append(str(exc))
    finally:
        locks.release_all()
    assert len(refused) == 2 and all("already has an active writer" in r for r in refused), refused
    assert not any(p.exists() for p in names)
    with world.app() as app:
        app.request("thread/resume", {"threadId": ids[2]})
        app.turn(ids[2], "now again")
