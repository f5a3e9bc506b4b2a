"""A row value Codex never writes (archived=5, a provider stored as a BLOB) or a row changed between
the plan and the apply skips that thread with its reason before any change; it never ends the run
nor leaves a run 'partly rolled back' over a home that is as it was."""
import json
import os
import sqlite3

import pytest

from homebuilder import build_broken_home
from test_migrate_rollback import home_state, run


def listed(root):
    return json.loads(run("rollback.py", root, "--list", "--json").stdout)["runs"]


def tid_of(hb, preview):
    return hb.sql("SELECT id FROM threads WHERE preview=?", (preview,))[0][0]


ODD = {
    "archived=5": ("UPDATE threads SET archived=5 WHERE preview='healthy session 3'", "healthy session 3",
                   "its threads row holds archived=5 where the plan read archived=1"),
    "provider BLOB": ("UPDATE threads SET model_provider=CAST('oldprov' AS BLOB) WHERE preview='before the key switch 1'",
                      "before the key switch 1",
                      "its threads row holds model_provider=a BLOB ('oldprov') where the plan read "
                      "model_provider='oldprov'"),
}


@pytest.mark.parametrize("odd", sorted(ODD))
def test_one_odd_row_value_skips_its_thread_with_the_reason_and_the_run_goes_on(tmp_path, odd):
    hb = build_broken_home(tmp_path / ".codex")
    statement, preview, reason = ODD[odd]
    hb.sql(statement)
    tid = tid_of(hb, preview)
    row = hb.sql("SELECT * FROM threads WHERE id=?", (tid,))
    before = home_state(hb.root)
    proc = run("session_recover.py", hb.root, "--apply", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # findings: the skipped thread
    report = json.loads(proc.stdout)
    skips = report["result"]["skipped_at_apply"] + report["skipped_sample"]  # archived=5: known at planning
    assert [{"thread_id": tid, "reason": s["reason"]} for s in skips if s["thread_id"] == tid] == [
        {"thread_id": tid, "reason": reason + " (a value Codex does not write, or changed since the plan): left alone"}]
    assert hb.sql("SELECT * FROM threads WHERE id=?", (tid,)) == row  # left exactly as it was
    assert [(r["kind"], r["state"]) for r in listed(hb.root)] == [("session_recover", "applied (newest)")]
    assert home_state(hb.root) != before  # the others were recovered
    rb = run("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before
    assert [r["state"] for r in listed(hb.root)] == ["rolled back"]


def test_the_check_before_any_change_compares_as_the_compare_and_set_does(tmp_path):
    """SQLite's IS: 5 is not 1, 1.0 is 1, a missing row is gone; each named with its reason."""
    from sessionkit.runlog.ops import RowUpdate
    from sessionkit.runlog.safety import rows_not_as_planned
    db = tmp_path / "s.sqlite"
    conn = sqlite3.connect(str(db))
    conn.execute("CREATE TABLE threads(id TEXT PRIMARY KEY, archived INTEGER, model_provider TEXT)")
    conn.executemany("INSERT INTO threads VALUES (?,?,?)", [("a", 1, "p"), ("b", 5, "p"), ("c", 1, "p")])
    conn.commit()
    conn.close()
    ops = [RowUpdate(str(db), "threads", {"id": t}, {"archived": 1}, {"archived": 0}, t) for t in "abcd"]
    ops.append(RowUpdate(str(db), "threads", {"id": "c"}, {"archived": 1.0}, {"archived": 0}, "c"))
    got = [(o.thread_id, why) for o, why in rows_not_as_planned(ops)]
    assert got == [("b", "its threads row holds archived=5 where the plan read archived=1 (a value Codex does "
                         "not write, or changed since the plan): left alone"),
                   ("d", "its threads row is gone since the plan: left alone")]  # 1.0 IS 1 in SQLite


def test_a_run_stopped_in_its_db_transaction_that_undid_everything_is_failed_not_partial(tmp_path, monkeypatch):
    """Codex changes a planned row after the check and before the commit (simulated at the first
    file point): the compare-and-set fails, the transaction rolls back and is journaled
    `uncommitted`, the run undoes its files and is 'failed, undone (by itself)': --latest passes over it."""
    import provider_migrate
    from sessionkit import UserError
    from sessionkit.codexfiles import faults
    hb = build_broken_home(tmp_path / ".codex")
    assert run("session_repair.py", hb.root, "--remap-prefix", f"/home/olduser/.codex={hb.root}",
               "--apply").returncode == 1  # an older run for --latest to reach
    before = home_state(hb.root)
    tid = tid_of(hb, "before the key switch 1")
    hits = []

    def codex_writes(label):
        if label == "file" and not hits:
            hits.append(label)
            conn = sqlite3.connect(str(hb.root / "state_5.sqlite"))
            conn.execute("UPDATE threads SET model_provider='elsewhere' WHERE id=?", (tid,))
            conn.commit()
            conn.close()
    for k in [k for k in os.environ if k.startswith(("CODEX_", "SESSION_MIGRATION"))]:
        monkeypatch.delenv(k)
    faults.install(codex_writes)
    try:
        with pytest.raises(UserError, match="the home is as before"):
            provider_migrate.main(["--codex-dir", str(hb.root), "--apply"])
    finally:
        faults.install(None)
    assert hits == ["file"]
    hb.sql("UPDATE threads SET model_provider='oldprov' WHERE id=?", (tid,))  # Codex's own change, put back
    assert home_state(hb.root) == before
    runs = listed(hb.root)
    assert [(r["kind"], r["state"]) for r in runs] == [("session_repair", "applied (newest)"),
                                                       ("provider_migration", "failed, undone (by itself)")]
    latest = json.loads(run("rollback.py", hb.root, "--latest", "--json").stdout)
    assert latest["run_dir"] == runs[0]["run_dir"]
