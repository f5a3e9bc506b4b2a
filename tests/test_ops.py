"""The typed operations through the executor, for the kinds the planners of this branch do not use
yet (FileCreate, RowDelete, several state DBs in one run) and the torn state of an in-place write."""
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from harness import snapshot
from homebuilder import HomeBuilder
from test_faults import frun
from sessionkit import UserError
from sessionkit.codexfiles.home import open_home
from sessionkit.runlog.ops import FileCreate, Line1Rewrite, RowDelete, RowUpdate
from sessionkit.runlog.registry import op_from_record
from sessionkit.runlog.undo import apply_undo, plan_undo, summary
from sessionkit.runlog.writerun import execute


def _rows(db: Path, table: str = "threads"):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    finally:
        conn.close()


def _undo(home, run_dir):
    plan = plan_undo(home, run_dir)
    return plan, apply_undo(home, plan)


def test_two_state_dbs_in_one_run_each_backed_up_and_rolled_back(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    a, b = hb.add(provider="old"), hb.add(provider="old")
    second = hb.root / "sqlite" / "state_5.sqlite"
    second.parent.mkdir()
    shutil.copy(hb.db_path, second)
    before = (_rows(hb.db_path), _rows(second))
    home = open_home(str(hb.root))
    assert [d.path for d in home.other_dbs] == [second]
    ops = [RowUpdate(str(db), "threads", {"id": t.id}, {"model_provider": "old"}, {"model_provider": "new"}, t.id)
           for db in (hb.db_path, second) for t in (a, b)]
    r = execute(home, "test_two_dbs", ops, b"x\n", force=False)
    assert set(r.backups) == {str(hb.db_path), str(second)} and r.rows == {str(hb.db_path): 2, str(second): 2}
    assert _rows(Path(r.backups[str(second)])) == before[1]
    assert {row[5] for row in _rows(second)} == {"new"}
    plan, res = _undo(home, r.run_dir)
    assert res["rows_reverted"] == 4 and (_rows(hb.db_path), _rows(second)) == before


def test_row_delete_keeps_the_whole_row_and_puts_it_back_exactly(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add()
    home = open_home(str(hb.root))
    conn = sqlite3.connect(str(hb.db_path))
    conn.row_factory = sqlite3.Row
    row = dict(conn.execute("SELECT * FROM threads WHERE id=?", (t.id,)).fetchone())
    conn.close()
    before = _rows(hb.db_path)
    r = execute(home, "test_delete", [RowDelete(str(hb.db_path), "threads", row, {"id": t.id}, t.id)], b"", False)
    assert r.applied["row_delete"] == 1 and _rows(hb.db_path) == []
    rec = [json.loads(x) for x in (r.run_dir / "journal.jsonl").read_text().splitlines() if '"row_delete"' in x][0]
    assert op_from_record(rec).row == row  # every column, exactly
    _undo(home, r.run_dir)
    assert _rows(hb.db_path) == before


def test_file_create_is_removed_only_while_it_is_what_the_run_wrote(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    src = tmp_path / "elsewhere.jsonl"
    src.write_bytes(b'{"a":1}\n' * 1000)
    dst = hb.root / "sessions" / "2025" / "03" / "01" / "imported.jsonl"
    home = open_home(str(hb.root))
    before = snapshot(hb.root)
    r = execute(home, "test_create", [FileCreate(str(dst), source=str(src))], b"", False)
    assert dst.read_bytes() == src.read_bytes() and dst.stat().st_mode & 0o777 == 0o600
    _undo(home, r.run_dir)
    assert not dst.exists()
    r2 = execute(home, "test_create", [FileCreate(str(dst), source=str(src))], b"", False)
    with open(dst, "ab") as fh:
        fh.write(b'{"user":"added"}\n')  # changed since: never deleted
    plan, _ = _undo(home, r2.run_dir)
    assert dst.exists() and len(plan.conflicts) == 1
    os.unlink(dst)
    assert {k: v for k, v in snapshot(hb.root).items() if not k.startswith(".tmp")} == \
        {k: v for k, v in before.items() if not k.startswith(".tmp")}


def test_ops_outside_the_allowed_roots_are_skipped_not_written(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add(provider="old")
    home = open_home(str(hb.root))
    outside = tmp_path / "other.sqlite"
    shutil.copy(hb.db_path, outside)
    victim = tmp_path / "victim.jsonl"
    ops = [RowUpdate(str(outside), "threads", {"id": t.id}, {"model_provider": "old"}, {"model_provider": "x"}, t.id),
           FileCreate(str(victim), data=b"x\n")]
    r = execute(home, "test_outside", ops, b"", False)
    assert not victim.exists() and {row[5] for row in _rows(outside)} == {"old"}
    assert [s[0] for s in r.skipped] == [str(victim), t.id]
    with pytest.raises(Exception):
        RowUpdate(str(hb.db_path), "threads", {"id": t.id}, {"title": "a"}, {"title": "b"})  # not allowed


def test_a_torn_in_place_span_is_recognised_and_mended(tmp_path):
    """A same-length rewrite cut after some bytes: neither old nor new; the rollback calls it torn
    (whole-line digests) and puts the old bytes back."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    t = hb.add(provider="oldco")
    original = t.path.read_bytes()
    home = open_home(str(hb.root))
    r = execute(home, "test_torn", [Line1Rewrite(t.id, str(t.path), {"model_provider": "newco"})], b"", False)
    done = t.path.read_bytes()
    cut = next(i for i in range(len(done)) if done[i] != original[i]) + 2  # two bytes of the new span
    t.path.write_bytes(done[:cut] + original[cut:])
    plan = plan_undo(home, r.run_dir)
    assert [s for _, s in plan.steps] == ["torn"] and summary(plan, 5)["line1_to_restore"] == 1
    apply_undo(home, plan)
    assert t.path.read_bytes() == original


def test_durable_syncs_the_written_files_filesystem_not_the_whole_system(tmp_path, monkeypatch):
    from sessionkit.runlog import artifacts
    assert artifacts._syncfs() is not None  # Linux: the real syncfs is found
    calls = []
    monkeypatch.setattr(artifacts.os, "sync", lambda: calls.append("os.sync"), raising=False)
    f = tmp_path / "a" / "rollout.jsonl"
    f.parent.mkdir()
    f.write_text("x\n")
    synced = []
    monkeypatch.setattr(artifacts, "_syncfs", lambda: (lambda fd: synced.append(os.fstat(fd).st_ino) or 0))
    artifacts.durable([str(f), str(f)])
    assert calls == [] and synced == [os.stat(f.parent).st_ino]  # one syncfs of its filesystem
    monkeypatch.setattr(artifacts, "_syncfs", lambda: None)  # no syncfs: each file and folder fsynced
    fsynced = []
    real = os.fsync
    monkeypatch.setattr(artifacts.os, "fsync", lambda fd: fsynced.append(os.fstat(fd).st_ino) or real(fd))
    artifacts.durable([str(f)])
    assert calls == [] and fsynced == [os.stat(f).st_ino, os.stat(f.parent).st_ino]


def test_an_inserted_row_is_judged_whole_with_the_tables_defaults_and_triggers(tmp_path):
    """The run names some columns; the row is ours only while every other column holds what the
    insert made (defaults, the table's own triggers; WITHOUT ROWID tables and triggers that reach
    other tables too)."""
    from sessionkit.runlog.ops import NEW, CHANGED, RowInsert
    db = tmp_path / "x.sqlite"
    conn = sqlite3.connect(str(db))
    conn.executescript("""
        CREATE TABLE threads (id TEXT PRIMARY KEY, a INTEGER NOT NULL DEFAULT 7, b TEXT, c INTEGER,
                              updated_at_ms INTEGER);
        CREATE TRIGGER fill AFTER INSERT ON threads WHEN NEW.c IS NULL BEGIN
            UPDATE threads SET c = NEW.a * 2 WHERE id = NEW.id; END;
        CREATE TABLE thread_turns (thread_id TEXT, turn_id TEXT, n INTEGER DEFAULT 3,
                                   PRIMARY KEY (thread_id, turn_id)) WITHOUT ROWID;
        CREATE TABLE log (x TEXT);
        CREATE TABLE thread_items (thread_id TEXT, item_id TEXT, v INTEGER DEFAULT 1);
        CREATE TRIGGER elsewhere AFTER INSERT ON thread_items BEGIN INSERT INTO log VALUES (NEW.item_id); END;
    """)
    ops = [RowInsert(str(db), "threads", {"id": "t", "b": "x"}, {"id": "t"}, "t"),
           RowInsert(str(db), "thread_turns", {"thread_id": "t", "turn_id": "u"}, {"thread_id": "t", "turn_id": "u"}, "t"),
           RowInsert(str(db), "thread_items", {"thread_id": "t", "item_id": "i"}, {"thread_id": "t", "item_id": "i"}, "t")]
    with conn:
        for o in ops:
            o.apply_db(conn)
    assert conn.execute("SELECT a, c FROM threads").fetchall() == [(7, 14)]
    assert [o.judge(conn) for o in ops] == [NEW, NEW, NEW]
    with conn:
        conn.execute("UPDATE threads SET updated_at_ms=5")  # Codex's own: still ours
    assert ops[0].judge(conn) == NEW
    for sql in ("UPDATE threads SET c=1", "UPDATE thread_turns SET n=4", "UPDATE thread_items SET v=2"):
        with conn:
            conn.execute(sql)
    assert [o.judge(conn) for o in ops] == [CHANGED, CHANGED, CHANGED]
    with conn:
        conn.execute("ALTER TABLE thread_turns ADD COLUMN later TEXT DEFAULT 'd'")  # a later Codex's column
        conn.execute("UPDATE thread_turns SET n=3")
    assert ops[1].judge(conn) == NEW
    conn.close()
