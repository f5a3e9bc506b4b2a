"""An import from an export brings every table an import from the home brings (one list,
thread_tables.CARRIED, read by both): model-facing ids (keyed by session_id), dynamic tools, keys,
goals and their deferrals, queued input, spawn edges, attachments, read state, projects, sections;
and its rollback is exact for each of them."""
import sqlite3

import pytest

from harness import run_script
from test_import import plan_json
from test_thread_tables import GOALS_SQL, _every_db, _with_all_tables, run_rollback

from sessionkit.codexfiles import thread_tables as tt
from sessionkit.runlog.ops import ROW_TABLES

DEFERRALS_SQL = """CREATE TABLE thread_goal_continuation_deferrals (
    thread_id TEXT PRIMARY KEY NOT NULL REFERENCES thread_goals(thread_id) ON DELETE CASCADE);"""


def _goals(path, tids):
    conn = sqlite3.connect(str(path))
    conn.executescript(GOALS_SQL + DEFERRALS_SQL)
    for tid in tids:
        conn.execute("INSERT INTO thread_goals VALUES (?,'g','ship','active',9,0,0,1,1)", (tid,))
        conn.execute("INSERT INTO thread_goal_continuation_deferrals VALUES (?)", (tid,))
    conn.commit()
    conn.close()


def _carried_rows(root):
    """Every carried table's rows, by (DB, table), without the ones DEST had of its own."""
    out = {}
    for db, table, _col, _ids in tt.CARRIED:
        path = root / db
        if not path.is_file():
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            out[(db, table)] = sorted(conn.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
        except sqlite3.OperationalError:
            pass
        finally:
            conn.close()
    return out


def test_the_carried_list_covers_every_table_an_import_writes():
    """A table the import learns to bring (PER_THREAD, a row table) is exported by the same list."""
    from sessionkit.fixes.importer import HISTORY_TABLES
    carried = {t for _d, t, _c, _i in tt.CARRIED}
    assert {t for _d, t, _c, _k, _w in tt.PER_THREAD} <= carried
    assert set(HISTORY_TABLES) <= carried and set(tt.EXTRA_TABLES) <= carried
    assert set(ROW_TABLES) - carried == {"sqlite_sequence"}  # the queue's counter: DEST's own, set by the plan


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_import_from_an_export_brings_every_table_the_home_would_then_rollback(tmp_path, suffix):
    """Old code: the export copied only tables with a thread_id column, so session_model_ids (keyed by
    session_id) never reached DEST from an archive. Now DEST after the import from the export holds
    exactly the rows an import from the home gives, table by table; the rollback is exact."""
    src, dst, parent, child = _with_all_tables(tmp_path, 2)
    _goals(src.root / tt.GOALS_DB, [parent.id])
    _goals(dst.root / tt.GOALS_DB, [])
    target = tmp_path / f"all{suffix}"
    proc = run_script("session_export.py", "--codex-dir", str(src.root), "--all", "--to", str(target), "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = _every_db(dst.root)

    out = plan_json(dst.root, "--from", str(src.root), "--apply")  # the import from the home: the reference
    assert out["result"]["imported_threads"] == 2
    from_home = _carried_rows(dst.root)
    assert run_rollback(dst.root).returncode == 0 and _every_db(dst.root) == before

    plan = plan_json(dst.root, "--from", str(target))
    by = {t["thread_id"]: t for t in plan["imports_sample"]}
    assert by[parent.id]["comes_with"][2:] == ["attachment", "goal", "goal deferral", "dynamic tool", "2 model-facing ids"]
    out = plan_json(dst.root, "--from", str(target), "--apply")
    assert out["result"]["imported_threads"] == 2
    from_export = _carried_rows(dst.root)
    assert from_export[(tt.STATE_DB, "session_model_ids")] == [(parent.id, "call", "", 0, '{"seed":1}'),
                                                               (parent.id, "call", "call_a", 1, None)]
    assert from_export[(tt.GOALS_DB, "thread_goal_continuation_deferrals")] == [(parent.id,)]
    assert sorted(from_export) == sorted(from_home)
    for key in from_home:
        assert from_export[key] == from_home[key], key
    rb = run_rollback(dst.root)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _every_db(dst.root) == before


def test_a_sub_agent_exported_alone_keeps_its_spawn_edge(tmp_path):
    """Old code copied an edge only when both ends were exported, while an import from the home
    brings a child's edge by the child alone (thread_tables.PER_THREAD): exported alone, the child
    still says whose sub-agent it is in DEST (thread/list {parentThreadId} once the parent is there)."""
    src, dst, parent, child = _with_all_tables(tmp_path, 0)
    target = tmp_path / "child.tar.gz"
    proc = run_script("session_export.py", "--codex-dir", str(src.root), "--thread", child.id, "--to", str(target),
                      "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = _every_db(dst.root)
    plan = plan_json(dst.root, "--from", str(target))
    assert [t["thread_id"] for t in plan["imports_sample"]] == [child.id]
    assert plan["imports_sample"][0]["comes_with"] == ["pinned", "sub-agent link", "read state", "2 queued inputs"]
    plan_json(dst.root, "--from", str(target), "--apply")
    assert _carried_rows(dst.root)[(tt.STATE_DB, "thread_spawn_edges")] == [(parent.id, child.id, "open")]
    rb = run_rollback(dst.root)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _every_db(dst.root) == before


def test_text_that_is_not_utf8_stays_text_in_the_export(tmp_path):
    """Old code wrote a TEXT value that is not UTF-8 into the archive as a BLOB: the import then
    copied it into DEST as a BLOB, silently, where an import from the home lists it under
    cannot_bring. Now it stays TEXT byte for byte, and both imports say the same."""
    import tarfile
    src, dst, parent, _child = _with_all_tables(tmp_path, 0)
    src.sql("INSERT INTO thread_attachments VALUES ('a2',?,'note','k2',CAST(X'ff41' AS TEXT),2)", (parent.id,))
    target = tmp_path / "all.tar.gz"
    proc = run_script("session_export.py", "--codex-dir", str(src.root), "--all", "--to", str(target), "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with tarfile.open(str(target)) as tf:
        (tmp_path / "st.sqlite").write_bytes(tf.extractfile("state_5.sqlite").read())
    conn = sqlite3.connect(str(tmp_path / "st.sqlite"))
    assert conn.execute("SELECT id, typeof(payload), hex(payload) FROM thread_attachments ORDER BY id").fetchall() == [
        ("a1", "text", "7B7D"), ("a2", "text", "FF41")]
    conn.close()
    said = {}
    for where in (src.root, target):
        plan = plan_json(dst.root, "--from", str(where))
        said[where] = {t["thread_id"]: t["cannot_bring"] for t in plan["imports_sample"]}
    assert said[target] == said[src.root]
    assert said[target][parent.id] == [tt.NOT_UTF8.format(what="attachment", column="payload")]
