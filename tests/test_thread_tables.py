"""thread_tables (what an import brings besides the row) and session_index's IndexAppend, at unit level:
a sub-agent's spawn edge, projects matched by id or by name and remapped roots, sections by name, the
Pinned section by id, DEST without goals_1/queue_1, and the append's undo."""
import json
import os
import sqlite3

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from sessionkit.codexfiles import thread_tables as tt
from sessionkit.runlog.ops import NEW, OLD, CHANGED, RecordError
from sessionkit.runlog.registry import op_from_record
from sessionkit.runlog.session_index import IndexAppend, name_lines

STATE_SQL = """
CREATE TABLE threads (id TEXT PRIMARY KEY, project_id TEXT, thread_section_id TEXT, section_position INTEGER,
                      section_entered_at_ms INTEGER);
CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',
                       position INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
CREATE TABLE project_roots (project_id TEXT NOT NULL, position INTEGER NOT NULL, path TEXT NOT NULL,
                            PRIMARY KEY (project_id, position));
CREATE TABLE thread_sections (id TEXT PRIMARY KEY, name TEXT NOT NULL, appearance TEXT);
CREATE TABLE thread_spawn_edges (parent_thread_id TEXT NOT NULL, child_thread_id TEXT NOT NULL PRIMARY KEY,
                                 status TEXT NOT NULL);
CREATE TABLE thread_attachments (id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, attachment_type TEXT NOT NULL,
                                 identity_key TEXT NOT NULL, payload TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE thread_read_receipts (thread_id TEXT PRIMARY KEY NOT NULL, first_unread_turn TEXT,
                                   revision TEXT NOT NULL, last_published_turn TEXT);
"""
GOALS_SQL = """CREATE TABLE thread_goals (thread_id TEXT PRIMARY KEY NOT NULL, goal_id TEXT NOT NULL,
    objective TEXT NOT NULL, status TEXT NOT NULL, token_budget INTEGER, tokens_used INTEGER NOT NULL DEFAULT 0,
    time_used_seconds INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);"""


def _db(path, sql, rows=()):
    conn = sqlite3.connect(str(path))
    conn.executescript(sql)
    for stmt, args in rows:
        conn.execute(stmt, args)
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def homes(tmp_path):
    s, d = tmp_path / "src", tmp_path / "dst"
    s.mkdir(), d.mkdir()
    _db(s / tt.STATE_DB, STATE_SQL, [
        ("INSERT INTO projects VALUES ('p1','Work','{}',0,1,1)", ()),
        ("INSERT INTO projects VALUES ('p2','Same','{}',1,1,1)", ()),
        ("INSERT INTO project_roots VALUES ('p1',0,'/home/old/proj')", ()),
        ("INSERT INTO project_roots VALUES ('p2',0,'/home/old/same')", ()),
        ("INSERT INTO thread_sections VALUES (?, 'Pinned', NULL)", (tt.PINNED,)),
        ("INSERT INTO thread_sections VALUES ('s1', 'Later', NULL)", ()),
        ("INSERT INTO threads VALUES ('parent','p1','s1',5,7)", ()),
        ("INSERT INTO threads VALUES ('child','p2',?,1,2)", (tt.PINNED,)),
        ("INSERT INTO thread_spawn_edges VALUES ('parent','child','open')", ()),
        ("INSERT INTO thread_read_receipts VALUES ('child','t1','r1','t1')", ()),
    ])
    _db(s / tt.GOALS_DB, GOALS_SQL, [("INSERT INTO thread_goals VALUES ('parent','g','ship','active',9,0,0,1,1)", ())])
    _db(d / tt.STATE_DB, STATE_SQL, [
        ("INSERT INTO projects VALUES ('px','Same','{}',3,1,1)", ()),
        ("INSERT INTO project_roots VALUES ('px',0,'/home/new/same')", ()),
        ("INSERT INTO thread_sections VALUES ('s9', 'Later', NULL)", ()),
    ])
    src = tt.read_home({n: s / n for n in (tt.STATE_DB, tt.GOALS_DB, tt.QUEUE_DB)})
    dst = tt.read_home({n: d / n for n in (tt.STATE_DB, tt.GOALS_DB, tt.QUEUE_DB)})
    return src, dst


def test_projects_sections_edges_and_a_dest_without_goals(homes):
    src, dst = homes
    p = tt.Planner(src, dst, lambda v: v.replace("/home/old", "/home/new"))
    child = p.thread("child")
    assert child.columns == {"project_id": "px", "thread_section_id": tt.PINNED, "section_position": 1,
                             "section_entered_at_ms": 2}
    assert [(i.table, i.row) for i in child.inserts] == [
        ("thread_spawn_edges", {"parent_thread_id": "parent", "child_thread_id": "child", "status": "open"}),
        ("thread_read_receipts", {"thread_id": "child", "first_unread_turn": "t1", "revision": "r1",
                                  "last_published_turn": "t1"})]
    assert child.brings[:2] == ["project 'Same' (DEST's project of the same name and folders)", "pinned"]
    parent = p.thread("parent")
    assert parent.columns["project_id"] == "p1" and parent.columns["thread_section_id"] == "s9"
    assert parent.cannot == [tt.NO_DB.format(db=tt.GOALS_DB, what="goals")]  # DEST has no goals_1.sqlite
    assert [(i.table, i.row.get("path"), i.row.get("position")) for i in p.shared] == [
        ("thread_sections", None, None),  # Pinned: DEST had none
        ("projects", None, 4), ("project_roots", "/home/new/proj", 0)]


def test_a_row_dest_already_has_is_not_brought_twice(homes):
    src, dst = homes
    dst.taken["thread_spawn_edges"] = {("child",)}
    out = tt.Planner(src, dst, lambda v: v).thread("child")
    assert out.cannot == ["sub-agent link: DEST already has a thread_spawn_edges row ['child']"]


def test_index_append_apply_undo_and_lines_codex_appended_since(tmp_path):
    path = tmp_path / "session_index.jsonl"
    path.write_bytes(b'{"id":"a","thread_name":"A","updated_at":"x"}')  # no newline at the end
    os.utime(path, ns=(5_000_000_000, 5_000_000_000))
    before = path.read_bytes()
    op = IndexAppend(str(path), name_lines([("t1", "Name \u00e9")]))
    assert op.prepare(tmp_path) is None and op.lead == b"\n"
    assert op_from_record(json.loads(json.dumps(op.to_record()))) == op
    op.apply()
    lines = path.read_bytes().split(b"\n")
    assert json.loads(lines[1])["thread_name"] == "Name \u00e9" and op.state() == NEW
    op.undo()
    assert path.read_bytes() == before and path.stat().st_mtime_ns == 5_000_000_000 and op.state() == OLD
    op.apply()
    with open(path, "ab") as fh:
        fh.write(b'{"id":"b","thread_name":"B","updated_at":"y"}\n')  # Codex renamed a thread since
    op.undo()
    assert path.read_bytes() == before + b'{"id":"b","thread_name":"B","updated_at":"y"}\n'
    with pytest.raises(RecordError):
        op_from_record(dict(op.to_record(), path=str(tmp_path / "other.jsonl")))


def test_index_append_creates_and_removes_a_missing_index(tmp_path):
    path = tmp_path / "session_index.jsonl"
    op = IndexAppend(str(path), name_lines([("t1", "N")]))
    assert op.prepare(tmp_path) is None and op.old_size == -1
    op.apply()
    assert op.state() == NEW and (path.stat().st_mode & 0o777) == 0o600
    op.undo()
    assert not path.exists() and op.state() == OLD
    path.write_bytes(b"x\n")
    assert op.state() == CHANGED


def test_audit_reports_no_lost_name_for_a_legacy_thread(tmp_path):
    """0.171 shows a legacy thread's name from session_index.jsonl (tests/test_e2e_import_tables.py::
    test_import_writes_a_legacy_threads_name_where_codex_reads_it): only a paginated row has lost it."""
    import sys
    from harness import SCRIPTS
    from homebuilder import HomeBuilder
    hb = HomeBuilder(tmp_path / ".codex")
    legacy, paginated = hb.add(preview="legacy"), hb.add(preview="paginated")
    hb.sql("UPDATE threads SET history_mode='legacy' WHERE id=?", (legacy.id,))
    (hb.root / "session_index.jsonl").write_bytes(name_lines([(legacy.id, "L"), (paginated.id, "P")]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    out = faultrun.script_run([sys.executable, str(SCRIPTS / "session_audit.py"), "--codex-dir", str(hb.root), "--json"],
                              capture_output=True, text=True, env=env, check=False)
    integ = json.loads(out.stdout)["integrity"]
    assert (integ["names_lost_count"], integ["names_lost_detail"]) == (1, [{"thread_id": paginated.id, "name": "P"}])


def _all_rows(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()
                for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")}
    finally:
        conn.close()


def _with_extras(tmp_path):
    """A source with a project, a section, a pinned thread, a spawn edge, an attachment and read
    receipts (the 0.171 tables in tests/data's schema), and an empty DEST."""
    from homebuilder import HomeBuilder
    src = HomeBuilder(tmp_path / "src" / ".codex")
    parent, child = src.add(preview="parent"), src.add(preview="child")
    for stmt, args in [
            ("INSERT INTO projects VALUES ('p1','Work','{}',0,1,1)", ()),
            ("INSERT INTO project_roots VALUES ('p1',0,'/work/proj')", ()),
            ("INSERT INTO thread_sections VALUES ('s1','Later',NULL)", ()),
            ("INSERT INTO thread_sections VALUES (?,'Pinned',NULL)", (tt.PINNED,)),
            ("UPDATE threads SET project_id='p1', thread_section_id='s1', section_position=1 WHERE id=?", (parent.id,)),
            ("UPDATE threads SET thread_section_id=?, section_position=1 WHERE id=?", (tt.PINNED, child.id)),
            ("INSERT INTO thread_spawn_edges VALUES (?,?,'open')", (parent.id, child.id)),
            ("INSERT INTO thread_attachments VALUES ('a1',?,'note','k','{}',1)", (parent.id,)),
            ("INSERT INTO thread_read_receipts VALUES (?,'t','r','t')", (child.id,))]:
        src.sql(stmt, args)
    dst = HomeBuilder(tmp_path / "dst" / ".codex")
    dst.n = 100
    dst.add(preview="its own")
    return src, dst, parent, child


def test_import_with_extras_then_rollback_every_table(tmp_path):
    from test_import import plan_json
    src, dst, parent, child = _with_extras(tmp_path)
    before = _all_rows(dst.db_path)
    out = plan_json(dst.root, "--from", str(src.root), "--apply")
    assert out["comes_with"] == ["project", "section", "attachment", "pinned", "sub-agent link", "read state"]
    rows = _all_rows(dst.db_path)
    assert rows["thread_spawn_edges"] == [(parent.id, child.id, "open")]
    assert dst.sql("SELECT project_id, thread_section_id FROM threads WHERE id=?", (parent.id,)) == [("p1", "s1")]
    assert dst.sql("SELECT thread_section_id FROM threads WHERE id=?", (child.id,)) == [(tt.PINNED,)]
    rb = run_rollback(dst.root)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _all_rows(dst.db_path) == before


def run_rollback(root):
    from harness import run_script
    return run_script("rollback.py", "--codex-dir", str(root), "--latest", "--apply")


# The real 0.171 DDL (read from a home Codex 0.171.0 made): queue_1's queue, its revision counter and
# the triggers that renumber a thread's revision on every change of its queue; state_5's model-facing
# ids (0.169 has no such table)
QUEUE_SQL = """
CREATE TABLE queued_items (id TEXT PRIMARY KEY NOT NULL, thread_id TEXT NOT NULL, payload_json TEXT NOT NULL,
    queue_order INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
CREATE TABLE queued_thread_revisions (revision INTEGER PRIMARY KEY AUTOINCREMENT, thread_id TEXT NOT NULL UNIQUE);
CREATE TRIGGER queued_items_revision_after_insert AFTER INSERT ON queued_items BEGIN
    INSERT INTO queued_thread_revisions (thread_id) VALUES (NEW.thread_id)
    ON CONFLICT(thread_id) DO UPDATE SET revision = (SELECT COALESCE(MAX(revision), 0) + 1 FROM queued_thread_revisions);
END;
CREATE TRIGGER queued_items_revision_after_update AFTER UPDATE ON queued_items BEGIN
    INSERT INTO queued_thread_revisions (thread_id) VALUES (NEW.thread_id)
    ON CONFLICT(thread_id) DO UPDATE SET revision = (SELECT COALESCE(MAX(revision), 0) + 1 FROM queued_thread_revisions);
END;
CREATE TRIGGER queued_items_revision_after_delete AFTER DELETE ON queued_items BEGIN
    INSERT INTO queued_thread_revisions (thread_id) VALUES (OLD.thread_id)
    ON CONFLICT(thread_id) DO UPDATE SET revision = (SELECT COALESCE(MAX(revision), 0) + 1 FROM queued_thread_revisions);
END;
"""
MODEL_IDS_SQL = """
CREATE TABLE session_model_ids (session_id TEXT NOT NULL, kind TEXT NOT NULL, external_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL CHECK (ordinal >= 0), initial_state TEXT, PRIMARY KEY (session_id, kind, external_key),
    UNIQUE (session_id, kind, ordinal), CHECK ((ordinal = 0) = (initial_state IS NOT NULL)));
"""


def _queue_db(path, rows, revisions):
    conn = sqlite3.connect(str(path))
    conn.executescript(QUEUE_SQL)
    for tid in revisions:
        conn.execute("INSERT INTO queued_thread_revisions (thread_id) VALUES (?)", (tid,))
    for r in rows:
        conn.execute("INSERT INTO queued_items VALUES (?,?,?,?,1,1)", r)
    conn.commit()
    conn.close()


def _with_all_tables(tmp_path, dest_revisions, kept=False):
    """_with_extras plus what issue 21 left: the project's idempotency key, the parent's dynamic tool
    and model-facing ids, the child's queued input (revision 1..3 in the source); DEST's queue DB has
    `dest_revisions` threads numbered already (0: sqlite_sequence has no row for the table)."""
    src, dst, parent, child = _with_extras(tmp_path)
    for hb in (src, dst):
        hb.sql("INSERT INTO project_idempotency_keys VALUES ('k-work','p1',5)" if hb is src else "SELECT 1")
        conn = sqlite3.connect(str(hb.db_path))
        conn.executescript(MODEL_IDS_SQL)
        conn.close()
    src.sql("INSERT INTO thread_dynamic_tools (thread_id, position, name, description, input_schema) "
            "VALUES (?,0,'lookup','Look it up','{}')", (parent.id,))
    src.sql("INSERT INTO session_model_ids VALUES (?,'call','',0,'{\"seed\":1}')", (parent.id,))
    src.sql("INSERT INTO session_model_ids VALUES (?,'call','call_a',1,NULL)", (parent.id,))
    _queue_db(src.root / tt.QUEUE_DB, [("q1", child.id, '{"UserInput":{}}', 0), ("q2", child.id, '{}', 1)],
              ["x", "y", child.id])
    _queue_db(dst.root / tt.QUEUE_DB, [], [f"own{i}" for i in range(dest_revisions)] + ([child.id] if kept else []))
    return src, dst, parent, child


def _every_db(root):
    return {db.name: _all_rows(db) for db in sorted(root.glob("*.sqlite"))}


@pytest.mark.parametrize("dest_revisions", [0, 2])
def test_import_carries_keys_tools_model_ids_and_a_fresh_queue_revision_then_rollback(tmp_path, dest_revisions):
    from test_import import plan_json
    src, dst, parent, child = _with_all_tables(tmp_path, dest_revisions)
    before = _every_db(dst.root)
    plan = plan_json(dst.root, "--from", str(src.root))
    by = {t["thread_id"]: t for t in plan["imports_sample"]}
    assert by[parent.id]["comes_with"][-2:] == ["dynamic tool", "2 model-facing ids"]
    assert "2 queued inputs" in by[child.id]["comes_with"]
    out = plan_json(dst.root, "--from", str(src.root), "--apply")
    assert out["result"]["imported_threads"] == 2
    after = _every_db(dst.root)
    state, queue = after[tt.STATE_DB], after[tt.QUEUE_DB]
    assert state["project_idempotency_keys"] == [("k-work", "p1", 5)]
    assert state["thread_dynamic_tools"] == [(parent.id, 0, "lookup", "Look it up", "{}", 0, None)]
    assert state["session_model_ids"] == [(parent.id, "call", "", 0, '{"seed":1}'),
                                          (parent.id, "call", "call_a", 1, None)]
    # the source's revision 5 means nothing in DEST: DEST's next number, moved by the triggers once
    # per item (2), as Codex's own queue/add moves it
    assert queue["queued_thread_revisions"] == [(i + 1, f"own{i}") for i in range(dest_revisions)] + [
        (dest_revisions + 3, child.id)]
    assert queue["sqlite_sequence"] == [("queued_thread_revisions", dest_revisions + 3)]  # the upserts move it
    conn = sqlite3.connect(str(dst.root / tt.QUEUE_DB))  # Codex's next queue change numbers after it
    conn.execute("INSERT INTO queued_thread_revisions (thread_id) VALUES ('later')")
    assert conn.execute("SELECT revision FROM queued_thread_revisions WHERE thread_id='later'").fetchone() == (
        dest_revisions + 4,)
    conn.rollback()
    conn.close()
    rb = run_rollback(dst.root)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _every_db(dst.root) == before


def test_a_key_dest_gives_another_project_stays_and_is_listed(homes):
    src, dst = homes
    src.columns[tt.KEYS] = dst.columns[tt.KEYS] = ["key", "project_id", "created_at_ms"]
    src.keys = {"p1": [{"key": "k1", "project_id": "p1", "created_at_ms": 1}],
                "p2": [{"key": "k2", "project_id": "p2", "created_at_ms": 1}]}
    dst.key_owner = {"k1": "px"}  # DEST's own project answers k1
    p = tt.Planner(src, dst, lambda v: v.replace("/home/old", "/home/new"))
    parent, child = p.thread("parent"), p.thread("child")
    assert parent.cannot[0] == tt.KEY_TAKEN.format(name="'Work'", key="'k1'")
    # child's project p2 is DEST's px (same name and folders): its key points at px
    assert [(i.table, i.row) for i in p.shared if i.table == tt.KEYS] == [
        (tt.KEYS, {"key": "k2", "project_id": "px", "created_at_ms": 1})]
    assert child.cannot == []


@pytest.mark.parametrize("kept", [False, True])
@pytest.mark.parametrize("action", ["kill", "eio"])
def test_import_with_every_table_fault_at_every_point(tmp_path, action, kept):
    """Keys, dynamic tools, model-facing ids and the queue (whose triggers renumber its revision and
    move sqlite_sequence), with _with_extras' projects, sections, pins, spawn edges, attachments and
    read receipts: a kill or an I/O error at every fault point, then the rollback, leaves every table
    of every DB of DEST as before, and no rollout of the import behind."""
    from test_faults import Pristine, frun, points
    src, dst, _p, _c = _with_all_tables(tmp_path, 2, kept)
    before = _every_db(dst.root)
    pristine = Pristine(dst.root)
    labels, _ = points(tmp_path, "session_import.py", dst.root, "--from", str(src.root), "--apply")
    for n in range(1, len(labels) + 1):
        pristine.restore()
        frun("session_import.py", dst.root, "--from", str(src.root), "--apply", fault=f"{action}:{n}")
        rb = frun("rollback.py", dst.root, "--latest", "--apply")
        assert rb.returncode in (0, 1), (n, rb.stdout, rb.stderr)
        assert _every_db(dst.root) == before, (action, n, labels[n - 1])
        assert not [p for p in (dst.root / "sessions").rglob("*") if p.is_file() and "0195" in p.name
                    and p.name not in {t.path.name for t in dst.threads}], (action, n, labels[n - 1])


def _text(dst, src, *args):
    from harness import run_script
    proc = run_script("session_import.py", "--codex-dir", str(dst.root), "--from", str(src.root), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_text_plan_says_per_session_what_comes_and_what_cannot_with_the_reason(tmp_path):
    """A few sessions: under each, what comes with it and each thing it cannot bring with its reason,
    strings from the home escaped (a project name with an escape sequence)."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    src.sql("UPDATE projects SET name=? WHERE id='p1'", ("Work\x1b[31m",))
    _db(src.root / tt.GOALS_DB, GOALS_SQL, [("INSERT INTO thread_goals VALUES (?,'g','ship','active',9,0,0,1,1)",
                                            (parent.id,))])
    out = _text(dst, src)
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith('  import "parent"'))
    assert lines[at + 1:at + 3] == [
        "    comes with: project 'Work\\x1b[31m' (created in DEST), section 'Later' (created in DEST),",
        "        attachment, dynamic tool, 2 model-facing ids"]
    assert lines[at + 3] == "    cannot bring: " + tt.NO_DB.format(db=tt.GOALS_DB, what="goals")
    at = next(i for i, line in enumerate(lines) if line.startswith('  import "child"'))
    assert lines[at + 1] == "    comes with: pinned, sub-agent link, read state, 2 queued inputs"
    extras = [line for line in lines if line.startswith(("    comes with:", "    cannot bring:", "        "))]
    assert "\x1b" not in out and len(extras) == 4 and max(len(line) for line in extras) <= 100


def test_the_text_plan_summarises_what_comes_with_many_sessions(tmp_path):
    """More sessions than PER_THREAD: one line for what comes with them all, each reason something
    cannot come counted, and the text still fits the first screen."""
    import session_import
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    more = [src.add(preview=f"more {i}") for i in range(session_import.PER_THREAD)]
    _db(src.root / tt.GOALS_DB, GOALS_SQL, [("INSERT INTO thread_goals VALUES (?,'g','ship','active',9,0,0,1,1)",
                                            (t.id,)) for t in [parent] + more[:2]])
    lines = _text(dst, src).splitlines()
    assert not [line for line in lines if line.startswith("    comes with:")]
    at = lines.index("  cannot bring (3; left in the source):")
    assert lines[at - 2:at] == [
        "  with them: project, section, attachment, dynamic tool, 2 model-facing ids, pinned, sub-agent link,",
        "      read state, 2 queued inputs"]
    assert lines[at + 1] == "    " + tt.NO_DB.format(db=tt.GOALS_DB, what="goals") + " (3 sessions)"
    assert len(lines) < 40


def test_a_queue_revision_dest_kept_for_the_thread_is_renumbered_and_put_back(tmp_path):
    """A thread deleted in DEST keeps its queued_thread_revisions row (queue_1's delete trigger
    upserts it): importing the thread renumbers that row (journaled) instead of inserting one, and
    the rollback puts its number back, with sqlite_sequence."""
    from test_import import plan_json
    src, dst, parent, child = _with_all_tables(tmp_path, 2, kept=True)
    before = _every_db(dst.root)
    assert before[tt.QUEUE_DB]["queued_thread_revisions"][-1] == (3, child.id)
    out = plan_json(dst.root, "--from", str(src.root), "--apply")
    assert out["result"]["imported_threads"] == 2
    queue = _every_db(dst.root)[tt.QUEUE_DB]
    assert queue["queued_thread_revisions"] == [(1, "own0"), (2, "own1"), (6, child.id)]  # 4, then 2 items
    rb = run_rollback(dst.root)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _every_db(dst.root) == before


def test_a_row_with_text_that_is_not_utf8_costs_only_itself(tmp_path):
    """Old code: one attachment whose payload is not UTF-8 stopped the whole state_5 read, so no
    thread brought its attachments, read state, sub-agent link, dynamic tools or model-facing ids,
    and the plan said nothing. Now that row (and a project whose name is not UTF-8) is listed under
    cannot_bring with its reason; everything else comes, and the rollback is exact."""
    from test_import import plan_json
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    src.sql("INSERT INTO thread_attachments VALUES ('a2',?,'note','k2',CAST(X'ff41' AS TEXT),2)", (parent.id,))
    src.sql("INSERT INTO projects VALUES ('p9',CAST(X'c328' AS TEXT),'{}',5,1,1)")
    src.sql("UPDATE threads SET project_id='p9' WHERE id=?", (child.id,))
    before = _every_db(dst.root)
    plan = plan_json(dst.root, "--from", str(src.root))
    by = {t["thread_id"]: t for t in plan["imports_sample"]}
    assert by[parent.id]["comes_with"][2:] == ["attachment", "dynamic tool", "2 model-facing ids"]
    assert by[parent.id]["cannot_bring"] == [tt.NOT_UTF8.format(what="attachment", column="payload")]
    assert by[child.id]["cannot_bring"] == [tt.NOT_UTF8.format(what="its project", column="name")]
    assert by[child.id]["comes_with"] == ["pinned", "sub-agent link", "read state", "2 queued inputs"]
    plan_json(dst.root, "--from", str(src.root), "--apply")
    rows = _every_db(dst.root)[tt.STATE_DB]
    assert [r[0] for r in rows["thread_attachments"]] == ["a1"] and [r[0] for r in rows["projects"]] == ["p1"]
    rb = run_rollback(dst.root)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _every_db(dst.root) == before
