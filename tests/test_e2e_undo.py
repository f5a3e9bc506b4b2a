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
