"""A run's recorded state is the truth: a rollback undoes only what is still wholly the run's,
names what it leaves and why, keeps such a run undoable (never "rolled back", never pruned
without --force), and says "nothing left to undo" when that is so."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from harness import SCRIPTS
from homebuilder import HomeBuilder, build_broken_home


def run(script, home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "SESSION_MIGRATION"))}
    return subprocess.run([sys.executable, str(SCRIPTS / script), "--codex-dir", str(home), *args],
                          capture_output=True, text=True, env=env, check=False)


def sql(db, q, args=()):
    conn = sqlite3.connect(str(db))
    try:
        with conn:
            return conn.execute(q, args).fetchall()
    finally:
        conn.close()


def rows(root):
    return sql(root / "state_5.sqlite", "SELECT * FROM threads ORDER BY id")


def list_runs(root):
    return json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"]


@pytest.fixture
def orphan(tmp_path):
    """A home with one importable orphan, imported by session_repair.py --import-orphans."""
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="kept")
    t = hb.add(write_row=False, preview="orphan, old")
    proc = run("session_repair.py", hb.root, "--import-orphans", "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["result"]["inserted_rows"] == 1
    return hb, t.id


@pytest.mark.parametrize("column,value", [("thread_section_id", "sec-1"), ("is_pinned", 1), ("project_id", "p-1"),
                                          ("section_position", 3)])
def test_an_inserted_row_changed_in_a_column_the_run_did_not_write_is_left_and_named(orphan, column, value):
    hb, tid = orphan
    sql(hb.root / "state_5.sqlite", f"UPDATE threads SET {column}=? WHERE id=?", (value, tid))
    before = rows(hb.root)
    dry = json.loads(run("rollback.py", hb.root, "--latest", "--json").stdout)
    assert (dry["rows_to_delete"], dry["conflicts"]) == (0, 1)
    rb = run("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    assert rows(hb.root) == before  # the row, its section/pin/project with it, is kept
    assert f"left alone: {tid}: row_insert changed since the run" in rb.stdout
    [r] = list_runs(hb.root)
    assert r["applied"] is True and r["state"] == "applied (newest)"  # nothing of it was undone
    # once the user undoes their own change, the run is undone whole
    sql(hb.root / "state_5.sqlite", f"UPDATE threads SET {column}=NULL WHERE id=?", (tid,)) if column != "is_pinned" \
        else sql(hb.root / "state_5.sqlite", "UPDATE threads SET is_pinned=0 WHERE id=?", (tid,))
    rb = run("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert sql(hb.root / "state_5.sqlite", "SELECT count(*) FROM threads WHERE id=?", (tid,)) == [(0,)]
    assert list_runs(hb.root)[0]["state"] == "rolled back"


def test_an_inserted_row_whose_updated_at_ms_codex_rewrote_is_still_ours(orphan):
    hb, tid = orphan
    sql(hb.root / "state_5.sqlite", "UPDATE threads SET updated_at_ms=updated_at_ms+12345 WHERE id=?", (tid,))
    rb = run("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert "conflicts: 0" in rb.stdout
    assert sql(hb.root / "state_5.sqlite", "SELECT count(*) FROM threads WHERE id=?", (tid,)) == [(0,)]
    assert list_runs(hb.root)[0]["state"] == "rolled back"
