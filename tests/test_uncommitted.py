"""A run's undo never undoes what never reached a DB (issue 20): a transaction that did not commit
(an op found its row already changed, a fault between the journal's record and COMMIT, a kill)
leaves its ops' rows to whoever owns them now, in every DB a run writes; the run's recorded state
says what happened."""
import json
import signal
import sqlite3
from pathlib import Path

import pytest

from homebuilder import HomeBuilder
from test_faults import Pristine, frun, look, points
from test_repair_planning import _desktop_copy

from sessionkit import UserError
from sessionkit.codexfiles.home import open_home
from sessionkit.runlog.ops import RowDelete, RowInsert, RowUpdate
from sessionkit.runlog.writerun import execute


def all_rows(root: Path):
    """Every row of every table of every DB of the home (run folders aside)."""
    out = {}
    for db in sorted(root.rglob("*.sqlite")):
        if ".tmp" in db.relative_to(root).parts:
            continue
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
                out[(str(db.relative_to(root)), t)] = conn.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2').fetchall()
        finally:
            conn.close()
    return out


def files(root: Path):
    """Every file's bytes and mtime but the DBs' and the run folders'."""
    from harness import snapshot
    return {k: v for k, v in snapshot(root).items() if not k.startswith(".tmp") and ".sqlite" not in k}


def row(db: Path, tid: str):
    conn = sqlite3.connect(str(db))
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM threads WHERE id=?", (tid,)).fetchone())
    finally:
        conn.close()


def journal(root: Path):
    (path,) = (root / ".tmp" / "session-migration").glob("*/journal.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def list_runs(root):
    return look(root, "--list")["runs"]


@pytest.mark.parametrize("case", ["insert-found-there", "delete-found-gone", "update-found-done"])
def test_a_self_undo_never_undoes_a_db_change_whose_transaction_did_not_commit(tmp_path, case, monkeypatch):
    """The CLI DB's change commits; the desktop DB's transaction fails (its row is already what the
    run would make: the desktop app's own row, a row Codex deleted meanwhile, a name it set): the
    self-undo puts back the CLI row and leaves the desktop row exactly as it is. The check before
    any change (rows_not_as_planned) would skip such a thread; here Codex changes the row after it
    (the check sees the row as planned), so the transaction itself finds it."""
    import sessionkit.runlog.writerun as writerun
    monkeypatch.setattr(writerun, "rows_not_as_planned", lambda ops: [])
    hb = HomeBuilder(tmp_path / ".codex")
    a, b = hb.add(preview="a"), hb.add(preview="b")
    desk = _desktop_copy(hb)
    theirs = row(desk, b.id)
    if case == "delete-found-gone":
        hb.sql("DELETE FROM threads WHERE id=?", (b.id,))
        sqlite3.connect(str(desk)).execute("DELETE FROM threads WHERE id=?", (b.id,)).connection.commit()
    if case == "update-found-done":
        c = sqlite3.connect(str(desk))
        c.execute("UPDATE threads SET name='their name' WHERE id=?", (b.id,))
        c.commit()
        c.close()
    before, before_files = all_rows(hb.root), files(hb.root)
    op = {"insert-found-there": RowInsert(str(desk), "threads", theirs, {"id": b.id}, b.id),
          "delete-found-gone": RowDelete(str(desk), "threads", theirs, {"id": b.id}, b.id),
          "update-found-done": RowUpdate(str(desk), "threads", {"id": b.id}, {"name": None}, {"name": "their name"},
                                         b.id)}[case]
    ops = [RowUpdate(str(hb.db_path), "threads", {"id": a.id}, {"name": None}, {"name": "renamed"}, a.id), op]
    home = open_home(str(hb.root))
    assert str(desk) in {str(d.path) for d in home.other_dbs}
    with pytest.raises(UserError) as err:
        execute(home, "session_repair", ops, b"id\n", force=False)
    assert "the 1 change(s) already made were undone, the home is as before" in str(err.value), err.value
    assert all_rows(hb.root) == before and files(hb.root) == before_files
    recs = journal(hb.root)
    assert [(r["op"], r.get("db")) for r in recs if r["op"] in ("commit", "abort")] == \
        [("commit", str(hb.db_path)), ("abort", str(desk))]
    assert recs[-1]["op"] == "undone" and recs[-1]["by"] == "failure" and recs[-1]["undone"] == 1
    [r] = list_runs(hb.root)
    assert (r["status"], r["state"], r["applied"], r["row_updates"]) == ("failed, undone", "failed, undone (by itself)",
                                                                         False, 1)
    again = json.loads(frun("rollback.py", hb.root, "--latest", "--json").stdout)
    assert again["nothing_left"] is True


# ---- fault walks: a kill or an error between a DB's journal records and its COMMIT, every DB ------

GOALS = ("CREATE TABLE thread_goals (thread_id TEXT PRIMARY KEY NOT NULL, goal_id TEXT NOT NULL, objective TEXT NOT NULL, "
         "status TEXT NOT NULL, token_budget INTEGER, tokens_used INTEGER NOT NULL DEFAULT 0, time_used_seconds "
         "INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL)")
QUEUE = "CREATE TABLE queued_items (id INTEGER PRIMARY KEY, thread_id TEXT NOT NULL, body TEXT NOT NULL)"


def _db(path: Path, *stmts):
    conn = sqlite3.connect(str(path))
    for s in stmts:
        conn.execute(*s) if isinstance(s, tuple) else conn.execute(s)
    conn.commit()
    conn.close()


def repair_run(tmp_path):
    """A repair that writes the CLI's state_5, the desktop app's sqlite/state_5 and thread_history_1:
    a history reset, an unarchive and an orphan imported into both state DBs."""
    from test_history import PaginatedHome
    ph = PaginatedHome(tmp_path / ".codex")
    damaged = ph.add()
    ph.keep_first_turn_only(damaged)
    ph.hb.add(archived=True, preview="archived")
    _desktop_copy(ph.hb)
    ph.hb.add(write_row=False, preview="in no DB")
    return ph.root, "session_repair.py", ("--import-orphans", "--unarchive", "--apply")


def import_run(tmp_path):
    """An import that writes DEST's state_5, goals_1 and queue_1 (a goal and a queued input come along)."""
    from test_thread_tables import _with_extras
    src, dst, parent, child = _with_extras(tmp_path)
    for hb in (src, dst):
        _db(hb.root / "goals_1.sqlite", GOALS)
        _db(hb.root / "queue_1.sqlite", QUEUE)
    _db(src.root / "goals_1.sqlite", ("INSERT INTO thread_goals VALUES (?, 'g1', 'ship it', 'active', 9, 1, 2, 3, 4)",
                                      (parent.id,)))
    _db(src.root / "queue_1.sqlite", ("INSERT INTO queued_items (thread_id, body) VALUES (?, 'next question')",
                                      (child.id,)))
    return dst.root, "session_import.py", ("--from", str(src.root), "--apply")


def _transactions(labels, recs):
    """Per DB transaction of a clean run, in order: its DB, its rows, and the fault points between its
    op records and its COMMIT (the records' write, the last op applied, the commit record's write)."""
    commits = [r for r in recs if r["op"] == "commit"]
    at = [n for n, label in enumerate(labels, 1) if label == "commit"]
    assert len(at) == len(commits)
    out = []
    for (db, rows), n in zip([(r["db"], r["rows"]) for r in commits], at):
        before = max(m for m in range(1, n) if labels[m - 1] == "journal")
        assert labels[n] == "journal"  # the commit record, written inside the transaction
        out.append((db, rows, (before, n, n + 1)))
    return out


@pytest.mark.parametrize("make", [repair_run, import_run], ids=["state+desktop+history", "state+goals+queue"])
# a Ctrl-C at these points is raised where the I/O error is (before the COMMIT's CtrlCHeld), caught by
# the same `except BaseException` of _commit (an abort record) and undone alike: the error walks it
@pytest.mark.parametrize("action", ["kill", "eio"])
def test_a_fault_between_a_dbs_records_and_its_commit_leaves_every_db_and_file_as_before(tmp_path, make, action):
    root, script, args = make(tmp_path)
    before, before_files = all_rows(root), files(root)
    pristine = Pristine(root)
    labels, _ = points(tmp_path, script, root, *args)
    recs = journal(root)
    txs = _transactions(labels, recs)
    names = {str(Path(db).relative_to(root)) for db, _r, _p in txs}
    assert names == ({"state_5.sqlite", "sqlite/state_5.sqlite", "thread_history_1.sqlite"} if make is repair_run
                     else {"state_5.sqlite", "goals_1.sqlite", "queue_1.sqlite"}), names
    assert all_rows(root) != before
    for k, (db, _rows, at) in enumerate(txs):
        committed_before = sum(r for _d, r, _p in txs[:k])
        for n in at:
            pristine.restore()
            proc = frun(script, root, *args, fault=f"{action}:{n}")
            where = (action, db, n, labels[n - 1])
            if action == "kill":
                assert proc.returncode == -signal.SIGKILL, where
                [r] = list_runs(root)
                assert r["state"] == "incomplete (killed?), rollback.py finishes it", where
                rb = frun("rollback.py", root, "--latest", "--apply", "--json")
                assert rb.returncode == 0, (where, rb.stdout, rb.stderr)
                by = "rollback"
            else:
                assert proc.returncode == 2 and "were undone, the home is as before" in proc.stderr, (where, proc.stderr)
                by = "failure"
            assert all_rows(root) == before, where
            assert files(root) == before_files, where
            out = journal(root)
            assert not [r for r in out if r["op"] == "commit" and r["db"] == db][1:], where
            if action != "kill":  # the run itself says that this DB's transaction did not commit
                assert [r["op"] for r in out if r.get("db") == db and r["op"] in ("commit", "abort")][-1:] == \
                    (["abort"] if n != at[0] else []), where
            undone = out[-1]
            assert (undone["op"], undone["by"], undone["conflicts"]) == ("undone", by, 0), where
            assert undone["rows_reverted"] == committed_before, where  # exactly what reached the DBs
            [r] = list_runs(root)
            assert r["state"] == ("rolled back" if action == "kill" else "failed, undone (by itself)"), where
            assert r["applied"] is False, where


def _apply_as_another_writer(db: str, recs):
    """What the desktop app does on its own after the kill: the same rows for the same rollouts (the
    cut transaction's own ops, applied outside the run)."""
    from sessionkit.runlog.registry import op_from_record
    last = max((i for i, r in enumerate(recs) if r["op"] in ("commit", "abort") and r.get("db") != db), default=0)
    ops = [op_from_record(r) for r in recs[last + 1:] if r.get("db") == db and r["op"] not in ("commit", "abort")]
    assert ops and any(o.KIND == "row_insert" for o in ops)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    for o in ops:
        o.apply_db(conn)
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.parametrize("where", ["records", "applied"])
def test_after_a_kill_before_the_desktop_dbs_commit_its_own_rows_made_since_are_never_undone(tmp_path, where):
    """Killed after the desktop DB's op records (before its transaction, or with every op applied
    but not committed); the desktop app then indexes the same rollouts itself (the same rows the run
    would have written). The rollback undoes the run's committed changes and leaves the desktop
    app's rows: they were never the run's."""
    root, script, args = repair_run(tmp_path)
    desk = str(root / "sqlite" / "state_5.sqlite")
    pristine = Pristine(root)
    labels, _ = points(tmp_path, script, root, *args)
    [(_db_, _rows, at)] = [t for t in _transactions(labels, journal(root)) if t[0] == desk]
    pristine.restore()
    proc = frun(script, root, *args, fault=f"kill:{at[0] if where == 'records' else at[1]}")
    assert proc.returncode == -signal.SIGKILL
    recs = journal(root)
    assert not [r for r in recs if r["op"] == "commit" and r["db"] == desk]
    _apply_as_another_writer(desk, recs)
    theirs = all_rows(root)[("sqlite/state_5.sqlite", "threads")]
    rb = frun("rollback.py", root, "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert all_rows(root)[("sqlite/state_5.sqlite", "threads")] == theirs  # the desktop app's rows, kept
    after = all_rows(root)
    assert {k: v for k, v in after.items() if k[0] != "sqlite/state_5.sqlite"} == \
        {k: v for k, v in all_rows(pristine.copy).items() if k[0] != "sqlite/state_5.sqlite"}
    [r] = list_runs(root)
    assert r["state"] == "rolled back"


def test_an_older_journal_killed_between_commit_and_its_record_is_still_undone_by_state(tmp_path):
    """A journal written before issue 20 (no `commit_first`: `commit` came after COMMIT) whose run
    was killed between COMMIT and that record: its row changes did reach the DB, and the rollback
    judges them by state and undoes them, as it always did."""
    from test_migrate_rollback import home_state
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    for i in range(2):
        hb.add(provider="oldco", preview=f"old {i}")
    before = home_state(hb.root)
    assert frun("provider_migrate.py", hb.root, "--apply").returncode == 0
    (path,) = (hb.root / ".tmp" / "session-migration").glob("*/journal.jsonl")
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert recs[0].pop("commit_first") is True
    old = [r for r in recs if r["op"] not in ("commit", "end")]
    path.write_text("".join(json.dumps(r) + "\n" for r in old))
    [r] = list_runs(hb.root)
    assert (r["status"], r["row_updates"]) == ("incomplete (killed?)", 2)
    rb = frun("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert json.loads(rb.stdout)["result"]["rows_reverted"] == 2
    assert home_state(hb.root) == before


def test_which_db_ops_reached_their_db_is_read_from_commit_and_abort_records():
    """An abort after the commit record (COMMIT failed, or a fault after the record) drops that
    transaction's ops as one before it does; a commit_first journal without end drops the ops no
    commit follows; an older journal keeps them (judged by state); an end record keeps all."""
    from types import SimpleNamespace as NS
    from sessionkit.runlog.commits import reached
    from sessionkit.runlog.undo import RUN_RECORDS

    def op(db):
        return NS(DB_OP=db is not None, db=lambda: db, name=f"{db}")

    def run(first, *kinds):
        recs, ops = [{"op": "begin", **({"commit_first": True} if first else {})}], []
        for k in kinds:
            if k.startswith(("commit:", "abort:")):
                recs.append({"op": k.split(":")[0], "db": k.split(":")[1]})
            elif k == "end":
                recs.append({"op": "end", "status": "complete"})
            else:
                recs.append({"op": "row_update"})
                ops.append(op(None if k == "file" else k))
        return [o.name for o in reached(recs, ops, RUN_RECORDS)]
    assert run(True, "file", "a", "commit:a", "b", "commit:b", "abort:b") == ["None", "a"]
    assert run(True, "file", "a", "commit:a", "b", "abort:b") == ["None", "a"]
    assert run(True, "file", "a", "commit:a", "b", "b") == ["None", "a"]
    assert run(False, "file", "a", "commit:a", "b", "b") == ["None", "a", "b", "b"]
    assert run(True, "a", "commit:a", "a", "commit:a", "abort:a") == ["a"]  # batch 2's transaction only
    assert run(True, "a", "b", "commit:a", "end") == ["a", "b"]


def test_a_full_disk_that_tears_the_commit_record_leaves_a_readable_journal_and_the_home_as_before(tmp_path,
                                                                                                   monkeypatch):
    """The commit record cut short by a full disk: it is cut back off the journal (the abort and
    undone records that follow start on lines of their own), the transaction rolls back, and the
    run reads back as failed and undone."""
    import errno
    import os
    from sessionkit.runlog import journal as jmod
    hb = HomeBuilder(tmp_path / ".codex")
    a = hb.add(preview="a")
    before, before_files = all_rows(hb.root), files(hb.root)
    real = jmod.write_all

    def torn(fd, data):
        if b'"op":"commit"' in data:
            os.write(fd, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)
    monkeypatch.setattr(jmod, "write_all", torn)
    ops = [RowUpdate(str(hb.db_path), "threads", {"id": a.id}, {"name": None}, {"name": "renamed"}, a.id)]
    with pytest.raises(UserError) as err:
        execute(open_home(str(hb.root)), "session_repair", ops, b"id\n", force=False)
    assert "No space left" in str(err.value) and "the home is as before" in str(err.value), err.value
    assert all_rows(hb.root) == before and files(hb.root) == before_files
    recs = journal(hb.root)  # every line a whole record
    assert [r["op"] for r in recs if r["op"] in ("row_update", "commit", "abort", "undone")] == \
        ["row_update", "abort", "undone"]
    [r] = list_runs(hb.root)
    assert r["state"] == "failed, undone (by itself)" and r["row_updates"] == 0
