"""The rollback of an import and what several threads share (runlog/shared_undo.py): an imported
project (its folders and key), section, or legacy names in session_index.jsonl stays, named, while a
thread it serves is left alone or rows outside the run point at it; a thread DEST made rows for since
the run is left alone whole; a section named Pinned is not the built-in; a row of the wrong type costs
only itself. Codex's acts between import and rollback are written here by SQL as 0.171 writes them
(tests/test_e2e_import_shared.py does them through real 0.171)."""
import json
import sqlite3

from harness import run_script
from test_import import plan_json
from test_thread_tables import _all_rows, _with_all_tables, _with_extras, run_rollback, tt


def _rollback_json(root):
    r = run_script("rollback.py", "--codex-dir", str(root), "--latest", "--apply", "--json")
    return r.returncode, json.loads(r.stdout)


def _status(root):
    r = run_script("rollback.py", "--codex-dir", str(root), "--list", "--json")
    return [x["status"] for x in json.loads(r.stdout)["runs"]] if r.stdout.strip().startswith("{") else r.stdout


def _left(out):
    return "\n".join(out.get("conflict_sample") or out.get("result", {}).get("conflict_sample") or [json.dumps(out)])


def _own(dst):
    return [r[0] for r in dst.sql("SELECT id FROM threads") if r[0] not in dst.imported][0]


def _import(src, dst, *args):
    before = {r[0] for r in dst.sql("SELECT id FROM threads")}
    out = plan_json(dst.root, "--from", str(src.root), "--apply", *args)
    assert out["result"]["imported_threads"] >= 1, out
    dst.imported = {r[0] for r in dst.sql("SELECT id FROM threads")} - before
    return out


def test_a_dest_thread_moved_into_the_imported_project_and_section_keeps_them(tmp_path):
    """D1: DEST's own thread joined the imported project and section (thread/metadata/update,
    thread/section/move): the rollback removes the imported threads and keeps the project, its
    folder, its key and the section, each named; the run is partly rolled back, never rolled back."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    _import(src, dst)
    own = _own(dst)
    dst.sql("UPDATE threads SET project_id='p1', thread_section_id='s1' WHERE id=?", (own,))
    rc, out = _rollback_json(dst.root)
    assert rc == 1, out
    rows = _all_rows(dst.db_path)
    assert rows["projects"] == [("p1", "Work", "{}", 0, 1, 1)]
    assert rows["project_roots"] == [("p1", 0, "/work/proj")]
    assert rows["project_idempotency_keys"] == [("k-work", "p1", 5)]
    assert [r[0] for r in rows["thread_sections"]] == ["s1"]  # the Pinned it created served only the child
    assert sorted(r[0] for r in rows["threads"]) == [own]
    left = _left(out)
    assert "projects ['p1']: 1 row(s) of threads outside this run point at it; left alone" in left, left
    assert "thread_sections ['s1']: 1 row(s) of threads outside this run point at it; left alone" in left, left
    assert "project_idempotency_keys ['k-work']: it goes with projects ['p1'], which is left alone" in left, left
    assert _status(dst.root)[-1].startswith("partly rolled back"), _status(dst.root)
    # the thread leaves the project: the next rollback takes the rest back
    dst.sql("UPDATE threads SET project_id=NULL, thread_section_id=NULL WHERE id=?", (own,))
    rb = run_rollback(dst.root)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    rows = _all_rows(dst.db_path)
    assert rows["projects"] == rows["project_roots"] == rows["project_idempotency_keys"] == rows["thread_sections"] == []


def test_a_key_dest_added_for_the_imported_project_keeps_it(tmp_path):
    """D1: another idempotency key DEST gave the imported project (a project/create retried with a
    new key returns it) points at it: project, folder and key stay."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    _import(src, dst)
    dst.sql("INSERT INTO project_idempotency_keys VALUES ('k-new','p1',9)")
    rc, out = _rollback_json(dst.root)
    assert rc == 1
    rows = _all_rows(dst.db_path)
    assert (rows["projects"], rows["project_roots"]) == ([("p1", "Work", "{}", 0, 1, 1)], [("p1", 0, "/work/proj")])
    assert rows["project_idempotency_keys"] == [("k-new", "p1", 9), ("k-work", "p1", 5)]


def _continue(dst, tid):
    """Codex continued the thread in DEST: a turn appended to its rollout."""
    path = dst.sql("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0]
    with open(path, "ab") as fh:
        fh.write(b'{"timestamp":"2026-01-01T00:00:00Z","type":"event_msg","payload":{"type":"user_message",'
                 b'"message":"more work in DEST"}}\n')


def test_a_thread_continued_in_dest_keeps_its_project_section_key_and_name(tmp_path):
    """D2, D3: the thread left alone whole keeps its project (folder, key), its section and the name
    line session_index.jsonl got for it; the other thread is undone."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    (src.root / "session_index.jsonl").write_text(
        json.dumps({"id": parent.id, "thread_name": "Parent name", "updated_at": "2026-01-01T00:00:00Z"}) + "\n")
    _import(src, dst)
    index = (dst.root / "session_index.jsonl").read_bytes()
    assert b"Parent name" in index
    _continue(dst, parent.id)
    rc, out = _rollback_json(dst.root)
    assert rc == 1, out
    rows = _all_rows(dst.db_path)
    assert [r[0] for r in rows["threads"]] == sorted([parent.id, _own(dst)])
    assert rows["projects"] == [("p1", "Work", "{}", 0, 1, 1)] and rows["project_roots"] == [("p1", 0, "/work/proj")]
    assert rows["project_idempotency_keys"] == [("k-work", "p1", 5)]
    assert [r[0] for r in rows["thread_sections"]] == ["s1"]  # the child's Pinned went with the child
    assert (dst.root / "session_index.jsonl").read_bytes() == index
    left = _left(out)
    assert f"projects ['p1']: it also serves thread {parent.id}, which is left alone; left alone" in left, left
    assert f"session_index.jsonl: it also serves thread {parent.id}, which is left alone; left alone" in left, left


def test_queued_input_added_after_the_import_keeps_its_thread(tmp_path):
    """D4: input queued on an imported thread in DEST (thread/queue/add) is a row the run did not
    make: the thread is left alone whole (as a continued one), and said so; nothing is orphaned."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    _import(src, dst)
    conn = sqlite3.connect(str(dst.root / tt.QUEUE_DB))
    conn.execute("INSERT INTO queued_items VALUES ('mine',?,'{}',2,1,1)", (child.id,))
    conn.commit()
    conn.close()
    rc, out = _rollback_json(dst.root)
    assert rc == 1, out
    assert sorted(r[0] for r in dst.sql("SELECT id FROM threads")) == sorted([child.id, _own(dst)])
    queue = _all_rows(dst.root / tt.QUEUE_DB)
    assert sorted(r[0] for r in queue["queued_items"]) == ["mine", "q1", "q2"]
    left = _left(out)
    assert f"{child.id}: Codex added 1 row(s) of queued_items for it since the run (it was used in DEST); " \
           "this thread is left alone whole" in left, left


def test_a_folder_added_to_the_imported_project_keeps_the_project_whole(tmp_path):
    """D5: project/update {roots: [proj, other]}: a root row the run did not make points at the
    project, so the project, both folders and its key stay together."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    _import(src, dst)
    dst.sql("INSERT INTO project_roots VALUES ('p1',1,'/work/other')")
    dst.sql("UPDATE projects SET updated_at_ms=2 WHERE id='p1'")
    rc, out = _rollback_json(dst.root)
    assert rc == 1
    rows = _all_rows(dst.db_path)
    assert rows["projects"] == [("p1", "Work", "{}", 0, 1, 2)]
    assert rows["project_roots"] == [("p1", 0, "/work/proj"), ("p1", 1, "/work/other")]
    assert rows["project_idempotency_keys"] == [("k-work", "p1", 5)]


def test_a_changed_project_row_keeps_its_folders_and_key(tmp_path):
    """D5: only the project row changed (project/update {name}): its folder and key go with it."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    _import(src, dst)
    dst.sql("UPDATE projects SET name='Renamed' WHERE id='p1'")
    rc, out = _rollback_json(dst.root)
    assert rc == 1
    rows = _all_rows(dst.db_path)
    assert rows["project_roots"] == [("p1", 0, "/work/proj")] and rows["project_idempotency_keys"] == [("k-work", "p1", 5)]
    left = _left(out)
    assert "projects ['p1']: row_insert changed since the run; left alone" in left, left
    assert "project_roots ['p1', 0]: it goes with projects ['p1'], which is left alone; left alone" in left, left


def test_a_source_section_named_pinned_is_not_the_built_in(tmp_path):
    """D7: real 0.171 lets a user name a section "Pinned"; the import brings it as a section of its
    own, never into DEST's built-in Pinned; with two DEST sections of one name it guesses neither."""
    src, dst, parent, child = _with_extras(tmp_path)
    src.sql("UPDATE thread_sections SET name='Pinned' WHERE id='s1'")
    src.sql("INSERT INTO thread_sections VALUES ('s2','Later',NULL)")
    src.sql("UPDATE threads SET thread_section_id='s2' WHERE id=?", (child.id,))
    dst.sql("INSERT INTO thread_sections VALUES (?,'Pinned',NULL)", (tt.PINNED,))
    dst.sql("INSERT INTO thread_sections VALUES ('d1','Later',NULL)")
    dst.sql("INSERT INTO thread_sections VALUES ('d2','Later',NULL)")
    out = _import(src, dst)
    by = {t["thread_id"]: t["comes_with"] for t in out["imports_sample"]}
    assert "section 'Pinned' (created in DEST)" in by[parent.id], by
    assert "section 'Later' (created in DEST: DEST has 2 sections of that name)" in by[child.id], by
    assert dst.sql("SELECT thread_section_id FROM threads WHERE id=?", (parent.id,)) == [("s1",)]
    assert dst.sql("SELECT thread_section_id FROM threads WHERE id=?", (child.id,)) == [("s2",)]


def test_a_root_or_position_of_the_wrong_type_costs_only_its_row(tmp_path):
    """D8: a source folder row with a text position and DEST's project at position 'top' no longer
    end the import with a TypeError: the row is skipped with its reason, the rest comes."""
    src, dst, parent, child = _with_extras(tmp_path)
    src.sql("INSERT INTO project_roots VALUES ('p1','x','/work/other')")
    dst.sql("INSERT INTO projects VALUES ('d1','Mine','{}','top',1,1)")
    out = _import(src, dst)
    by = {t["thread_id"]: t for t in out["imports_sample"]}
    assert "project 'Work' (created in DEST)" in by[parent.id]["comes_with"]
    assert by[parent.id]["cannot_bring"] == [
        "its project's folder row 'x' is not a (whole-number position, text path) pair: not brought"]
    assert dst.sql("SELECT * FROM project_roots") == [("p1", 0, "/work/proj")]
    assert dst.sql("SELECT id, position FROM projects ORDER BY id") == [("d1", "top"), ("p1", 0)]


def test_a_thread_codex_holds_open_at_undo_time_keeps_its_project(tmp_path):
    """The undo finds a thread's writer lock held (Codex has it open): the thread is left alone, and
    so are the project (folder, key) and section it serves; the rest is undone."""
    import fcntl
    import os
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    _import(src, dst)
    locks = dst.root / "thread-writer-locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(str(locks / f"{parent.id}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = run_script("rollback.py", "--codex-dir", str(dst.root), "--latest", "--apply", "--json", "--force")
    finally:
        os.close(fd)
    assert r.returncode == 1, r.stdout + r.stderr
    rows = _all_rows(dst.db_path)
    assert sorted(x[0] for x in rows["threads"]) == sorted([parent.id, _own(dst)])
    assert rows["projects"] == [("p1", "Work", "{}", 0, 1, 1)] and rows["project_roots"] == [("p1", 0, "/work/proj")]
    assert rows["project_idempotency_keys"] == [("k-work", "p1", 5)]
    assert [x[0] for x in rows["thread_sections"]] == ["s1"]
    assert _status(dst.root)[-1].startswith("partly rolled back")


def test_row_insert_records_old_and_new_and_a_bad_refs_field():
    """An older row_insert (no serves/refs/with_rows) reads and writes back unchanged; the new fields
    round-trip; refs naming a path, an unknown table or a non-column are refused; an index_append's
    threads come from its own lines (older records name none)."""
    import pytest
    from sessionkit.runlog.ops import RecordError, RowInsert
    from sessionkit.runlog.registry import op_from_record
    from sessionkit.runlog.session_index import IndexAppend, name_lines
    old = {"op": "row_insert", "db": "/h/state_5.sqlite", "table": "projects", "thread_id": None,
           "key": {"id": "p1"}, "row": {"id": "p1", "name": "Work"}}
    op = op_from_record(dict(old, v=2, ts="x"))
    assert op.to_record() == old and op.served() == [] and op.referenced_by() == [] and op.unit() is None
    new = dict(old, serves=["t1"], refs=[["state_5.sqlite", "threads", "project_id"]], with_rows="project p1")
    op = op_from_record(dict(new, v=2, ts="x"))
    assert op.to_record() == new and op.served() == ["t1"] and op.unit() == "project p1"
    assert op.referenced_by() == [("/h/state_5.sqlite", "threads", "project_id", "p1")]
    for bad in (["../x.sqlite", "threads", "project_id"], ["state_5.sqlite", "sqlite_master", "name"],
                ["state_5.sqlite", "threads", "id) OR (1"], ["state_5.sqlite", "threads"]):
        with pytest.raises(RecordError):
            op_from_record(dict(new, refs=[bad], v=2, ts="x"))
    with pytest.raises(RecordError):
        op_from_record(dict(new, serves=[1], v=2, ts="x"))
    assert RowInsert("/h/s", "projects", {"id": "p"}, {"id": "p"}).inserted_value("projects", "id") == (True, "p")
    app = IndexAppend("/h/session_index.jsonl", name_lines([("t1", "A"), ("t2", "B")]))
    assert app.served() == ["t1", "t2"]


def test_rolling_back_an_older_import_keeps_the_project_a_later_import_uses(tmp_path):
    """A second import brought another thread into the project the first one created ("already in
    DEST"): rolling back the first keeps the project, folder and key the second's thread uses."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    src.sql("UPDATE threads SET project_id='p1' WHERE id=?", (child.id,))
    src.sql("DELETE FROM thread_spawn_edges")  # (with it, the child's edge would keep the parent too)
    o1 = plan_json(dst.root, "--from", str(src.root), "--thread-id", parent.id, "--apply")
    o2 = plan_json(dst.root, "--from", str(src.root), "--thread-id", child.id, "--apply")
    assert "project 'Work' (already in DEST)" in o2["imports_sample"][0]["comes_with"]
    args = ("rollback.py", "--codex-dir", str(dst.root), "--manifest", o1["result"]["run_dir"], "--apply")
    assert run_script(*args).returncode == 2  # a later run touched the same DB rows: refused unless --force
    r = run_script(*args, "--force")
    assert r.returncode == 1, r.stdout + r.stderr
    assert dst.sql("SELECT project_id FROM threads WHERE id=?", (child.id,)) == [("p1",)]
    assert dst.sql("SELECT id FROM threads WHERE id=?", (parent.id,)) == []
    rows = _all_rows(dst.db_path)
    assert rows["projects"] == [("p1", "Work", "{}", 0, 1, 1)] and rows["project_roots"] == [("p1", 0, "/work/proj")]
    assert rows["project_idempotency_keys"] == [("k-work", "p1", 5)]


def test_a_fork_attached_to_an_imported_thread_keeps_it(tmp_path):
    """thread/fork {attachToSource} in DEST sets the fork's attached_thread_parent_id (real 0.171):
    a row the run did not make points at the imported parent, which is left alone whole."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    _import(src, dst)
    own = _own(dst)
    dst.sql("UPDATE threads SET attached_thread_parent_id=? WHERE id=?", (child.id, own))
    rc, out = _rollback_json(dst.root)
    assert rc == 1
    assert sorted(r[0] for r in dst.sql("SELECT id FROM threads")) == sorted([child.id, own])
    assert f"{child.id}: Codex added 1 row(s) of threads for it since the run" in _left(out), _left(out)
