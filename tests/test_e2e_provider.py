"""provider_migrate.py and rollback.py judged by the real Codex CLI: listing, reading, resuming."""
import json

import pytest

from harness import snapshot


def _turns(world, ids):
    with world.app() as app:
        return {t: json.dumps(app.read_thread(t)["turns"], sort_keys=True) for t in ids}


def _rollouts(world):
    return {k: v for k, v in snapshot(world.home).items() if k.startswith(("sessions/", "archived_sessions/"))}


@pytest.mark.compat
def test_migration_makes_codex_list_read_and_resume_old_threads(world):
    a = world.make_threads(3, "mockA", prompt="under A")
    b = world.make_threads(2, "mockB", prompt="under B")
    assert world.listed_ids() == sorted(b)
    turns_before = _turns(world, a)
    files_before = _rollouts(world)
    rows_before = world.db("SELECT id, model_provider FROM threads ORDER BY id")

    proc = world.script("provider_migrate.py", "--apply", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"]["updated_rows"] == 3

    assert world.listed_ids() == sorted(a + b)
    assert world.listed_ids() == sorted(a + b)  # a second default listing keeps them
    assert world.db("SELECT DISTINCT model_provider FROM threads") == [("mockB",)]
    assert _turns(world, a) == turns_before
    with world.app() as app:
        app.request("thread/resume", {"threadId": a[0]})
        done = app.turn(a[0], "a new turn after the migration")
        assert done["turn"]["status"] == "completed"
        assert len(app.read_thread(a[0])["turns"]) == 2
    audit = world.audit()
    assert audit["visibility"]["hidden"]["other_provider"] == 0
    assert audit["integrity"]["provider_mismatch_count"] == 0

    # rollback restores line 1 and the row of every thread, and keeps the turn added since
    first_before = {t: _line1(world, t) for t in a}
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout
    files_after = _rollouts(world)
    for rel, meta in files_before.items():
        if a[0] not in rel:
            assert files_after[rel] == meta, rel
    assert world.db("SELECT id, model_provider FROM threads ORDER BY id") == rows_before
    assert {t: _line1(world, t) for t in a} != first_before
    assert world.listed_ids() == sorted(b)
    with world.app() as app:
        assert len(app.read_thread(a[0])["turns"]) == 2  # the new turn survived the rollback


def _line1(world, tid):
    path = world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0]
    with open(path, "rb") as fh:
        return fh.readline()


@pytest.mark.compat
def test_rollback_brings_back_listing_rows_and_bytes(world):
    a = world.make_threads(2, "mockA")
    b = world.make_threads(1, "mockB")
    files_before = _rollouts(world)
    rows_before = world.db("SELECT id, model_provider, rollout_path FROM threads ORDER BY id")
    assert world.script("provider_migrate.py", "--apply").returncode == 0
    assert world.listed_ids() == sorted(a + b)
    rb = world.script("rollback.py", "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _rollouts(world) == files_before
    assert world.db("SELECT id, model_provider, rollout_path FROM threads ORDER BY id") == rows_before
    assert world.listed_ids() == sorted(b)
    assert world.db("SELECT id, model_provider, rollout_path FROM threads ORDER BY id") == rows_before
    again = world.script("rollback.py", "--latest", "--apply", "--json")
    assert json.loads(again.stdout)["result"] is None


def test_db_only_is_reverted_by_codex(world):
    """What the original design's UPDATE really gives on Codex 0.169 (recorded, not wished)."""
    a = world.make_threads(2, "mockA")
    b = world.make_threads(1, "mockB")
    assert world.script("provider_migrate.py", "--db-only", "--apply").returncode == 0
    assert world.listed_ids(useStateDbOnly=True) == sorted(a + b)  # DB-only listing: shown
    assert world.listed_ids() == sorted(b)  # the default listing hides them again ...
    assert world.db("SELECT model_provider FROM threads WHERE id IN (?, ?)", tuple(a)) == [("mockA",)] * 2
    assert world.listed_ids(useStateDbOnly=True) == sorted(b)  # ... and wrote the old value back


def test_longer_target_on_paginated_threads_reads_identically(world):
    a = world.make_threads(2, "mockA", prompt="short id")
    with world.app() as app:
        app.request("thread/resume", {"threadId": a[0]})
        app.turn(a[0], "second turn")
    turns_before = _turns(world, a)
    world.set_provider("mockLongerProviderName")
    proc = world.script("provider_migrate.py", "--apply", "--json")
    out = json.loads(proc.stdout)
    assert out["line1_growing"] == 2 and out["result"]["history_backup"]
    assert world.listed_ids() == sorted(a)
    assert _turns(world, a) == turns_before
    with world.app() as app:
        app.request("thread/resume", {"threadId": a[0]})
        assert app.turn(a[0], "third")["turn"]["status"] == "completed"
        assert len(app.read_thread(a[0])["turns"]) == 3
    _assert_offsets_start_lines(world, a)
    # the rollback shrinks line 1 again: every offset, the new turn's included, moves back with it
    rb = world.script("rollback.py", "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    _assert_offsets_start_lines(world, a)
    world.set_provider("mockA")
    assert world.listed_ids() == sorted(a)
    with world.app() as app:
        assert json.dumps(app.read_thread(a[1])["turns"], sort_keys=True) == turns_before[a[1]]
        assert len(app.read_thread(a[0])["turns"]) == 3
        app.request("thread/resume", {"threadId": a[0]})
        assert app.turn(a[0], "fourth")["turn"]["status"] == "completed"
        assert len(app.read_thread(a[0])["turns"]) == 4
    _assert_offsets_start_lines(world, a)


def _assert_offsets_start_lines(world, ids):
    """Every byte offset thread_history_1.sqlite keeps points at the start of a rollout line."""
    import sqlite3
    hist = sqlite3.connect(str(world.home / "thread_history_1.sqlite"))
    try:
        for tid in ids:
            path = world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0]
            data = open(path, "rb").read()
            rows = hist.execute("SELECT rollout_byte_offset, rollout_end_byte_offset FROM thread_turns "
                                "WHERE thread_id=?", (tid,)).fetchall()
            (proj,) = hist.execute("SELECT next_rollout_byte_offset FROM thread_history_projection_state "
                                   "WHERE thread_id=?", (tid,)).fetchone()
            assert rows
            for off, end in rows:
                assert data[off - 1:off] == b"\n" and data[end - 1:end] == b"\n", (tid, off, end)
            assert proj == len(data), (tid, proj, len(data))
    finally:
        hist.close()
