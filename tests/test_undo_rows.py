"""A row update is undone under the transaction by one statement that itself checks the row still
holds what the run wrote: the same answer as judging it first (state_db) and then reverting."""
import sqlite3

import pytest

from sessionkit.runlog.ops import NEW, Op, RowUpdate


def _db(rows):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE threads (id TEXT, model_provider TEXT, updated_at INTEGER)")
    conn.executemany("INSERT INTO threads VALUES (?,?,?)", rows)
    return conn


def _op():
    return RowUpdate("db", "threads", {"id": "t1"}, {"model_provider": "oldco", "updated_at": 5},
                     {"model_provider": "newco", "updated_at": 6}, "t1")


@pytest.mark.parametrize("rows, undone", [
    ([("t1", "newco", 6), ("t2", "newco", 6)], True),  # as the run left it
    ([("t1", "newco", 7)], False),  # continued since (updated_at bumped)
    ([("t1", "other", 6)], False),  # migrated again since
    ([("t1", "newco", 6), ("t1", "newco", 6)], False),  # the key finds two rows: not ours to judge
    ([("t2", "newco", 6)], False),  # deleted since
])
def test_one_statement_gives_the_judged_answer(rows, undone):
    conn = _db(rows)
    before = conn.execute("SELECT * FROM threads ORDER BY rowid").fetchall()
    judged = _op().state_db(conn) == NEW
    assert judged == undone
    generic = Op.revert_if_new(_op(), conn)  # judge, then revert: what the rollback did before
    conn.execute("DELETE FROM threads")
    conn.executemany("INSERT INTO threads VALUES (?,?,?)", before)
    got = _op().revert_if_new(conn)
    assert got == generic == (1 if undone else None)
    after = conn.execute("SELECT * FROM threads ORDER BY rowid").fetchall()
    if undone:
        assert after[0] == ("t1", "oldco", 5) and after[1:] == before[1:]
    else:
        assert after == before
