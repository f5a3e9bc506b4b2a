"""The writer-lock protocol against the real Codex: while we hold a thread's lock (as every
--apply does for the threads it changes), Codex does not take the thread as a second writer."""
import os

from sessionkit.writerlock import WriterLocks


def test_codex_refuses_a_thread_whose_writer_lock_we_hold(world):
    (tid,) = world.make_threads(1)
    locks = WriterLocks(world.home)
    assert locks.take(tid) is None  # Codex closed it: the lock is free
    rollout = next(p for p in (world.home / "sessions").rglob(f"*{tid}.jsonl"))
    before = rollout.read_bytes()
    refused = None
    try:
        with world.app() as app:
            try:
                app.request("thread/resume", {"threadId": tid}, timeout=30)
                app.turn(tid, "are you there", timeout=30)
            except Exception as exc:  # noqa: BLE001 - the error Codex returns is the finding
                refused = str(exc)
        after_locked = rollout.read_bytes()
    finally:
        locks.release_all()
    assert refused is not None and "already has an active writer" in refused, refused
    assert after_locked == before
    assert not os.path.exists(world.home / "thread-writer-locks" / f"{tid}.lock")  # ours removed
    with world.app() as app:  # released: Codex takes the thread again
        app.request("thread/resume", {"threadId": tid})
        app.turn(tid, "now again")
    assert len(rollout.read_bytes()) > len(before)
