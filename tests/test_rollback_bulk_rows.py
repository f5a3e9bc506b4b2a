"""Issue 24: a rollback reads the rows it will judge in bulk (one query per 500 rows of one shape,
RowUpdate.judge_all) and undoes a run of row updates with one executemany (RowUpdate.revert_all),
keeping each row's own check: a row changed (or removed, or doubled) since the run is left alone."""
import sqlite3

import pytest

from sessionkit.runlog import undo
from sessionkit.runlog.ops import CHANGED, GONE, NEW, OLD, RowUpdate


def _db(path, n):
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE threads (id TEXT PRIMARY KEY, model_provider TEXT, cwd TEXT)")
    conn.executemany("INSERT INTO threads VALUES (?, 'newco', '/p')", [(f"t{i}",) for i in range(n)])
    conn.commit()
    return conn


def _ops(db, n):
    return [RowUpdate(str(db), "threads", {"id": f"t{i}"}, {"model_provider": "oldco"}, {"model_provider": "newco"},
                      f"t{i}") for i in range(n)]


@pytest.fixture
def statements(monkeypatch):
    seen = []
    real = undo.open_readonly

    def traced(path):
        conn = real(path)
        conn.set_trace_callback(seen.append)
        return conn
    monkeypatch.setattr(undo, "open_readonly", traced)
    return seen


def test_states_read_rows_in_bulk_and_judge_each_row(tmp_path, statements):
    db = tmp_path / "state_5.sqlite"
    conn = _db(db, 1200)
    conn.execute("UPDATE threads SET model_provider='other' WHERE id='t5'")  # changed since the run
    conn.execute("UPDATE threads SET model_provider='oldco' WHERE id='t6'")  # already original
    conn.execute("DELETE FROM threads WHERE id='t7'")  # deleted since (thread/delete)
    conn.commit()
    conn.close()
    ops = _ops(db, 1200) + [RowUpdate(str(db), "threads", {"id": "gone"}, {"model_provider": "a"},
                                      {"model_provider": "b"}, "gone")]
    states = undo._states(ops)
    assert states[5] == CHANGED and states[6] == OLD and states[7] == GONE and states[-1] == GONE
    assert states.count(NEW) == 1197
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) < 20  # 3 chunks of 500 and the few rows not found; was one SELECT a row


def test_row_updates_are_judged_in_bulk_as_one_by_one(tmp_path):
    """RowUpdate.judge_all gives each op the state judge() gives it alone (new, old, changed, gone),
    with one SELECT per 500 rows found by their key and two for the row deleted since."""
    conn = _db(tmp_path / "state_5.sqlite", 1203)
    conn.execute("UPDATE threads SET model_provider='oldco' WHERE id='t1'")
    conn.execute("UPDATE threads SET model_provider='other' WHERE id='t2'")
    conn.execute("DELETE FROM threads WHERE id='t3'")
    ops = _ops(tmp_path / "state_5.sqlite", 1203)
    alone = [o.judge(conn) for o in ops]
    queries = []
    conn.set_trace_callback(queries.append)
    assert RowUpdate.judge_all(conn, ops) == alone
    assert alone[:5] == [NEW, OLD, CHANGED, GONE, NEW] and alone.count(NEW) == 1200
    assert len([q for q in queries if q.startswith("SELECT")]) == 3 + 2


def test_a_key_that_is_not_the_primary_key_is_judged_row_by_row(tmp_path, statements):
    db = tmp_path / "state_5.sqlite"
    conn = sqlite3.connect(str(db))
    conn.execute("CREATE TABLE threads (id TEXT, model_provider TEXT, cwd TEXT)")  # no key: ids may repeat
    conn.executemany("INSERT INTO threads VALUES (?, 'newco', '/p')", [("t0",), ("t1",), ("t1",)])
    conn.commit()
    conn.close()
    assert undo._states(_ops(db, 2)) == [NEW, CHANGED]  # two rows with one id: not the run's row


def test_revert_all_undoes_only_rows_still_as_the_run_left_them(tmp_path):
    db = tmp_path / "state_5.sqlite"
    conn = _db(db, 5)
    conn.execute("UPDATE threads SET model_provider='other' WHERE id='t2'")  # Codex wrote it meanwhile
    ops = _ops(db, 5) + [RowUpdate(str(db), "threads", {"id": "t4"}, {"cwd": "/old"}, {"cwd": "/p"}, "t4")]
    assert RowUpdate.revert_all(conn, ops) == (5, 5)  # four providers and one cwd
    rows = dict(conn.execute("SELECT id, model_provider FROM threads"))
    assert rows == {"t0": "oldco", "t1": "oldco", "t2": "other", "t3": "oldco", "t4": "oldco"}
    assert conn.execute("SELECT cwd FROM threads WHERE id='t4'").fetchone() == ("/old",)
    assert RowUpdate.revert_all(conn, ops) == (0, 0)  # again: nothing left that the run wrote


class _Run:
    def __init__(self, path, backups):
        self.path, self.backups = path, backups


def test_values_written_back_are_checked_against_the_backup_in_bulk(tmp_path, statements):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    backup = run_dir / "state_5.sqlite.pre_provider_migration.bak"
    conn = _db(backup, 1200)
    conn.execute("UPDATE threads SET model_provider='oldco'")
    conn.commit()
    conn.close()
    db = str(tmp_path / "state_5.sqlite")
    ops = _ops(db, 1200)
    run = _Run(run_dir, {db: str(backup)})
    undo.check_against_backups(run, run_dir / "journal.jsonl", ops)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) < 10
    ops[700].old["model_provider"] = "evil"  # an edited journal: a value the backup never held
    with pytest.raises(undo.UserError, match="does not match the run's own backup"):
        undo.check_against_backups(run, run_dir / "journal.jsonl", ops)
    missing = _ops(db, 1200) + [RowUpdate(db, "threads", {"id": "nope"}, {"model_provider": "oldco"},
                                          {"model_provider": "newco"}, "nope")]
    with pytest.raises(undo.UserError, match="does not match the run's own backup"):
        undo.check_against_backups(run, run_dir / "journal.jsonl", missing)
