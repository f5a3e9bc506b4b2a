"""rollback.py --restore-db: a backup goes back only into the DB its run's journal says it belongs
to, after a check of what changed since (rows and files); anything that would be lost or split is
named and refused without --force; a restore is recorded in the run's state; a kill anywhere in a
restore leaves the DB whole."""
import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from homebuilder import HomeBuilder
from test_faults import Pristine, frun, points
from test_migrate_rollback import home_state, run


def rows(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT * FROM threads ORDER BY id").fetchall()
    finally:
        conn.close()


def backups(run_dir):
    recs = [json.loads(line) for line in (Path(run_dir) / "journal.jsonl").read_text().splitlines()]
    return {r["db"]: r["backup"] for r in recs if r["op"] == "backup"}


@pytest.fixture
def unarchived(tmp_path):
    """A repair unarchived a thread; then the user made a new session and named it."""
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="kept")
    arch = hb.add(archived=True, preview="archived")
    out = json.loads(run("session_repair.py", hb.root, "--unarchive", "--apply", "--json").stdout)
    assert out["result"]["unarchived_rows"] == 1
    new = hb.add(preview="made after the repair")
    hb.sql("UPDATE threads SET name='Release plan' WHERE id=?", (new.id,))
    return hb, arch, new, out["result"]["run_dir"]


def test_a_restore_that_would_drop_a_new_session_and_split_an_unarchived_thread_is_refused(unarchived):
    hb, arch, new, run_dir = unarchived
    backup = backups(run_dir)[str(hb.db_path)]
    before = home_state(hb.root)
    dry = run("rollback.py", hb.root, "--restore-db", backup, "--json")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    out = json.loads(dry.stdout)
    assert out["lost_sample"] == [f"threads id={new.id}: added since the backup"]
    assert len(out["split_sample"]) == 1 and out["split_sample"][0].startswith(f"{arch.id}: the run's move of ")
    assert (out["db"], out["rows_restored_as_the_run_had_them"]) == (str(hb.db_path), 1)
    proc = run("rollback.py", hb.root, "--restore-db", backup, "--apply")
    assert proc.returncode == 2 and "refusing to restore" in proc.stderr and "Nothing was changed" in proc.stderr
    assert home_state(hb.root) == before
    assert hb.sql("SELECT name FROM threads WHERE id=?", (new.id,)) == [("Release plan",)]
    text = run("rollback.py", hb.root, "--restore-db", backup).stdout
    assert f"  threads id={new.id}: added since the backup" in text and "refused without --force" in text


def test_a_restore_with_nothing_else_changed_goes_through_and_is_recorded(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="kept")
    hb.add(write_row=False, preview="orphan")
    before = rows(hb.db_path)
    out = json.loads(run("session_repair.py", hb.root, "--import-orphans", "--apply", "--json").stdout)["result"]
    backup = backups(out["run_dir"])[str(hb.db_path)]
    dry = json.loads(run("rollback.py", hb.root, "--restore-db", backup, "--json").stdout)
    assert (dry["lost"], dry["split"], dry["rows_restored_as_the_run_had_them"]) == (0, 0, 1)
    proc = run("rollback.py", hb.root, "--restore-db", backup, "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(hb.db_path) == before
    [r] = json.loads(run("rollback.py", hb.root, "--list", "--json").stdout)["runs"]
    assert r["state"] == "applied (newest, its DB restored from a backup 1 time(s))"
    assert [(x["db"], x["backup"]) for x in r["restores"]] == [(str(hb.db_path), backup)]


def test_a_backup_goes_back_only_into_its_own_db(tmp_path):
    """The desktop app's DB beside the CLI's: its backup is restored into it, never over the CLI DB."""
    hb = HomeBuilder(tmp_path / ".codex")
    a = hb.add(provider="old")
    desktop = hb.root / "sqlite" / "state_5.sqlite"
    desktop.parent.mkdir()
    shutil.copy(hb.db_path, desktop)
    from sessionkit.codexfiles.home import open_home
    from sessionkit.runlog.ops import RowUpdate
    from sessionkit.runlog.writerun import execute
    home = open_home(str(hb.root))
    ops = [RowUpdate(str(db), "threads", {"id": a.id}, {"model_provider": "old"}, {"model_provider": "new"}, a.id)
           for db in (hb.db_path, desktop)]
    r = execute(home, "test_two_dbs", ops, b"x\n", force=False)
    hb.sql("UPDATE threads SET name='cli only' WHERE id=?", (a.id,))  # the CLI DB moves on; the desktop one not
    cli_rows = rows(hb.db_path)
    proc = run("rollback.py", hb.root, "--restore-db", str(r.backups[str(desktop)]), "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["db"] == str(desktop)
    assert rows(hb.db_path) == cli_rows  # untouched
    assert [row[5] for row in rows(desktop)] == ["old"]
    stray = hb.root / ".tmp" / "session-migration" / "stray.bak"
    shutil.copy(r.backups[str(desktop)], stray)
    bad = run("rollback.py", hb.root, "--restore-db", str(stray), "--apply")
    assert bad.returncode == 2 and "no run's journal records" in bad.stderr


@pytest.mark.parametrize("action", ["kill", "enospc"])
def test_a_restore_faulted_at_every_point_leaves_the_db_whole(tmp_path, action):
    """Kill (or a full disk) at every point a restore counts: the DB is as before or restored, never
    half; the journal stays readable; the restore run again finishes it."""
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(preview="kept")
    hb.add(write_row=False, preview="orphan")
    before = rows(hb.db_path)
    out = json.loads(run("session_repair.py", hb.root, "--import-orphans", "--apply", "--json").stdout)["result"]
    backup = backups(out["run_dir"])[str(hb.db_path)]
    imported = rows(hb.db_path)
    pristine = Pristine(hb.root)
    labels, _ = points(tmp_path, "rollback.py", hb.root, "--restore-db", backup, "--apply")
    assert "restore-saved" in labels and "restore-written" in labels and "journal" in labels, labels
    assert rows(hb.db_path) == before
    for n in range(1, len(labels) + 1):
        pristine.restore()
        proc = frun("rollback.py", hb.root, "--restore-db", backup, "--apply", fault=f"{action}:{n}")
        if action == "kill":
            assert proc.returncode == -signal.SIGKILL, (n, proc.stderr)
        now = rows(hb.db_path)
        assert now in (before, imported), (n, labels[n - 1])
        conn = sqlite3.connect(str(hb.db_path))
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        assert frun("rollback.py", hb.root, "--list", "--json").returncode == 0
        again = frun("rollback.py", hb.root, "--restore-db", backup, "--apply")
        assert again.returncode == 0, (n, again.stdout, again.stderr)
        assert rows(hb.db_path) == before, (n, labels[n - 1])
