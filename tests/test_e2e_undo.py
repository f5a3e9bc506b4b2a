"""rollback.py judged by the real Codex CLI 0.171: an undo never removes what the user changed since."""
import json
import os


def test_an_imported_orphan_filed_into_a_section_is_kept_by_the_rollback(world):
    """Real 0.171: the user files the imported thread into a section (thread/section/move); the
    rollback leaves the row (and the section assignment) alone, names it, and keeps the run undoable."""
    world.make_threads(1, prompt="kept")
    orphan = world.make_threads(1, prompt="orphaned work")[0]
    world.db("DELETE FROM threads WHERE id=?", (orphan,))
    path = next(world.home.glob(f"sessions/*/*/*/*{orphan}.jsonl"))
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    proc = world.script("session_repair.py", "--import-orphans", "--apply", "--json")
    assert json.loads(proc.stdout)["result"]["inserted_rows"] == 1, proc.stdout + proc.stderr
    with world.app() as app:
        section = app.request("threadSection/create", {"name": "Release work",
                                                       "appearance": {"color": "blue", "icon": "star"}})
        sid = (section.get("section") or section)["id"]
        app.request("thread/section/move", {"threadId": orphan, "sectionId": sid})
        assert [t["id"] for t in app.request("thread/list", {"sectionId": sid})["data"]] == [orphan]
    row_before = world.db("SELECT * FROM threads WHERE id=?", (orphan,))
    assert world.db("SELECT thread_section_id FROM threads WHERE id=?", (orphan,)) == [(sid,)]
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    out = json.loads(rb.stdout)
    assert (out["rows_to_delete"], out["conflicts"]) == (0, 1)
    assert out["conflict_sample"] == [f"{orphan}: row_insert changed since the run; this thread is left alone "
                                      "whole (its file and row stay together)"]
    assert world.db("SELECT * FROM threads WHERE id=?", (orphan,)) == row_before
    with world.app() as app:
        assert [t["id"] for t in app.request("thread/list", {"sectionId": sid})["data"]] == [orphan]
    runs = json.loads(world.script("rollback.py", "--list", "--json").stdout)["runs"]
    assert [r["applied"] for r in runs] == [True]


def test_a_codex_search_between_import_and_rollback_does_not_keep_the_import(world):
    """Real 0.171: `thread/list {searchTerm}` rewrites an imported row's updated_at(_ms) from the
    rollout's mtime and its created_at(_ms) from line 1 (measured: all four); those are Codex's own, so the rollback still removes the import whole
    and calls the run rolled back (before: the row was kept and the run called rolled back)."""
    from test_e2e_import import _import, _old_and_new
    old_home, ids, _turns, _new_proj, own = _old_and_new(world)
    rows_before = world.db("SELECT * FROM threads ORDER BY id")
    for t in ids[:2]:  # the imported files' mtimes differ from their rows' updated_at_ms
        path = next(old_home.glob(f"sessions/*/*/*/*{t}.jsonl"))
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime - 7200))
    result = _import(world, old_home, "--apply")
    assert result["result"]["imported_threads"] == 3, result
    stamps = dict(world.db("SELECT id, updated_at_ms FROM threads"))
    with world.app() as app:
        app.request("thread/list", {"searchTerm": "old machine task", "sourceKinds": ["cli", "vscode", "exec",
                                                                                        "appServer"]})
    moved = {t for t, v in world.db("SELECT id, updated_at_ms FROM threads") if stamps.get(t) != v}
    assert moved and moved <= set(ids), (moved, stamps)
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert json.loads(rb.stdout)["conflicts"] == 0
    assert world.db("SELECT * FROM threads ORDER BY id") == rows_before
    runs = json.loads(world.script("rollback.py", "--list", "--json").stdout)["runs"]
    assert [r["state"] for r in runs] == ["rolled back"]


def test_a_thread_deleted_with_thread_delete_after_a_migration_stays_deleted(world):
    """Real 0.171: `thread/delete` removes a migrated thread's files and row; the rollback puts the
    other threads back, leaves that one deleted, names it, and calls the run rolled back."""
    ids = world.make_threads(2, "mockB", prompt="before the switch")
    world.set_provider("mockA")
    proc = world.script("provider_migrate.py", "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gone, kept = ids
    with world.app() as app:
        app.request("thread/delete", {"threadId": gone})
    assert world.db("SELECT count(*) FROM threads WHERE id=?", (gone,)) == [(0,)]
    assert not list(world.home.rglob(f"*{gone}*.jsonl"))
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    out = json.loads(rb.stdout)
    assert (out["conflicts"], out["left_deleted"]) == (0, 1)
    assert out["deleted_sample"] == [f"{gone}: deleted since the run (thread/delete?); left deleted"]
    assert not list(world.home.rglob(f"*{gone}*.jsonl")) and world.db("SELECT count(*) FROM threads WHERE id=?",
                                                                          (gone,)) == [(0,)]
    assert world.db("SELECT id, model_provider FROM threads") == [(kept, "mockB")]
    runs = json.loads(world.script("rollback.py", "--list", "--json").stdout)["runs"]
    assert [r["state"] for r in runs] == ["rolled back"]
