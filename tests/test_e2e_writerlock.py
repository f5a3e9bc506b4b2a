"""The writer-lock protocol against the real Codex: while we hold a thread's lock (as every
--apply does for the threads it changes), Codex does not take the thread as a second writer."""
import os

import pytest

from harness import snapshot
from sessionkit.codexfiles import host
from sessionkit.codexfiles import locks
from sessionkit.codexfiles.writerlock import WriterLocks
from test_hosts import _script


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


@pytest.mark.tui
def test_the_daemon_is_named_once_with_its_stop_command_here_and_as_on_macos(world):
    """Real 0.171: the TUI resumed a thread and quit, its daemon holds the thread. The refusal names
    that daemon once, what it holds and the one command that stops it; with macOS's facts (real
    `ps`, no /proc) the daemon is still found, through its control socket."""
    ids = world.make_threads(2, prompt="work")
    world.set_provider("mockB")
    with world.tui(world.project(), "resume", ids[0], keep_daemon=True) as tui:
        tui.wait_for(lambda s: "work 0" in s, 60, "the resumed session")
    try:
        (daemon,) = locks.scan_activity(world.home, environ={}).running_codex()
        assert (daemon.what, daemon.threads, daemon.stop_is_command) == (locks.DAEMON_WHAT, [ids[0]], True)
        assert daemon.command == "codex app-server --managed-daemon" and daemon.pid
        assert daemon.stop.startswith(f"CODEX_HOME={world.home} ") and daemon.stop.endswith(" app-server daemon stop")
        before = snapshot(world.home)
        refused = world.script("provider_migrate.py", "--apply")
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and lines[:4] == [
            "provider_migrate.py: error: Codex is running on this home:",
            f"- {locks.DAEMON_WHAT} (pid {daemon.pid}, codex app-server --managed-daemon)",
            "  holds 1 session open", f"  stop it: {daemon.stop}"]
        assert len(lines) == 6 and refused.stderr.count("app-server daemon stop") == 1
        assert snapshot(world.home) == before
        host.install(host.simulated(host.MACOS, run=host.real().run))
        try:
            act = locks.scan_activity(world.home, environ={})
            code, _out, err = _script("provider_migrate.py", "--codex-dir", str(world.home), "--apply")
        finally:
            host.install(None)
        found = act.running_codex()
        assert [r.what for r in found] == [locks.UNKNOWN_WHAT, locks.DAEMON_WHAT]  # the lock's pid is not seen
        assert found[0].threads == [ids[0]] and found[1].stop.endswith(" app-server daemon stop")
        assert code == 2 and err.count("app-server daemon stop") == 1 and snapshot(world.home) == before
    finally:
        world.stop_home_processes()
