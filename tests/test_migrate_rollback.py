"""provider_migrate.py and rollback.py on hand-built homes: exact bytes, mtimes, rows, refusals."""
import csv
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from harness import run_on_home as run, snapshot
from homebuilder import HomeBuilder

ARTIFACTS = ".tmp/session-migration"


def home_state(root: Path) -> dict:
    """Files (bytes digest, mtime, mode) outside our artifacts folder, plus every threads row."""
    files = {k: v for k, v in snapshot(root).items() if not k.startswith(ARTIFACTS)
             and not k.startswith("state_5.sqlite")}
    conn = sqlite3.connect(f"file:{root / 'state_5.sqlite'}?mode=ro", uri=True)
    rows = conn.execute("SELECT * FROM threads ORDER BY id").fetchall()
    ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return {"files": files, "rows": rows, "integrity": ok}


@pytest.fixture
def split(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    old = [hb.add(provider="oldco", preview=f"old {i}") for i in range(3)]
    new = [hb.add(provider="newco", preview=f"new {i}") for i in range(2)]
    hb.add(provider="oldco", archived=True, preview="archived old")
    return hb, old, new


def test_dry_run_changes_nothing(split):
    hb, old, _ = split
    before = snapshot(hb.root)
    proc = run("provider_migrate.py", hb.root, "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["target_provider"] == "newco" and plan["target_source"] == "config.toml"
    assert plan["candidates"] == 3 and plan["line1_rewrites"] == 3 and plan["row_updates"] == 3
    assert plan["provider_distribution_before"] == {"oldco": 3, "newco": 2}
    assert sorted(s["thread_id"] for s in plan["sample"]) == sorted(t.id for t in old)
    assert plan["result"] is None
    assert snapshot(hb.root) == before


def test_apply_rewrites_line1_same_length_and_keeps_mtime(split):
    hb, old, new = split
    before = {t.id: (t.path.read_bytes(), t.path.stat().st_mtime_ns, t.path.stat().st_ino) for t in old + new}
    proc = run("provider_migrate.py", hb.root, "--apply", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["result"]
    assert res["line1_rewritten"] == 3 and res["updated_rows"] == 3
    assert res["provider_distribution_after"] == {"newco": 5, "oldco": 1}  # the archived one stays
    for t in old:
        data, mtime, ino = before[t.id]
        now = t.path.read_bytes()
        assert len(now) == len(data) and t.path.stat().st_mtime_ns == mtime and t.path.stat().st_ino == ino
        first, rest = now.split(b"\n", 1)
        assert rest == data.split(b"\n", 1)[1]  # nothing past line 1 changed
        assert json.loads(first)["payload"]["model_provider"] == "newco"
        assert first.replace(b'"model_provider":"newco"', b'"model_provider":"oldco"') == data.split(b"\n", 1)[0]
    for t in new:
        assert t.path.read_bytes() == before[t.id][0]
    assert hb.sql("SELECT model_provider, count(*) FROM threads GROUP BY 1 ORDER BY 1") == [("newco", 5), ("oldco", 1)]
    audit = json.loads(run("session_audit.py", hb.root, "--json").stdout)
    assert audit["visibility"]["visible"] == 5 and audit["visibility"]["hidden"]["other_provider"] == 0
    # artifacts: private, manifest as the design document names its columns
    run_dir = Path(res["run_dir"])
    for f in run_dir.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
    with open(res["manifest_csv"], newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "old_provider", "new_provider", "ts"]
    assert sorted(r[0] for r in rows[1:]) == sorted(t.id for t in old)
    assert {(r[1], r[2]) for r in rows[1:]} == {("oldco", "newco")}
    bak = sqlite3.connect(res["db_backup"])
    assert bak.execute("SELECT count(*) FROM threads WHERE model_provider='oldco'").fetchone() == (4,)
    bak.close()


def test_rollback_restores_everything_exactly_and_is_idempotent(split):
    hb, _, _ = split
    before = home_state(hb.root)
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    assert home_state(hb.root) != before
    dry = run("rollback.py", hb.root, "--latest", "--json")
    assert json.loads(dry.stdout)["rows_to_revert"] == 3 and json.loads(dry.stdout)["line1_to_restore"] == 3
    assert home_state(hb.root) != before
    proc = run("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"]["rows_reverted"] == 3
    assert home_state(hb.root) == before
    again = json.loads(run("rollback.py", hb.root, "--latest", "--apply", "--json").stdout)
    assert again["result"] is None and again["nothing_left"] is True  # --latest passes over what is undone
    run_dir = json.loads(proc.stdout)["run_dir"]
    again = json.loads(run("rollback.py", hb.root, "--manifest", run_dir, "--apply", "--json").stdout)
    assert again["result"] is None and again["already_original"] == 6
    assert home_state(hb.root) == before
    listing = json.loads(run("rollback.py", hb.root, "--list", "--json").stdout)
    assert [r["status"] for r in listing["runs"]] == ["rolled back"]


def test_rollback_leaves_values_changed_since_alone(split):
    hb, old, _ = split
    res = json.loads(run("provider_migrate.py", hb.root, "--apply", "--json").stdout)["result"]
    hb.sql("UPDATE threads SET model_provider='userpick' WHERE id=?", (old[0].id,))
    proc = run("rollback.py", hb.root, "--manifest", res["manifest_csv"], "--apply", "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["conflicts"] == 1 and old[0].id in out["conflict_sample"][0]
    assert hb.sql("SELECT model_provider FROM threads WHERE id=?", (old[0].id,)) == [("userpick",)]
    assert hb.sql("SELECT model_provider FROM threads WHERE id=?", (old[1].id,)) == [("oldco",)]


def test_db_only_keeps_the_documents_behaviour(split):
    hb, old, _ = split
    lines = {t.id: t.path.read_bytes() for t in old}
    proc = run("provider_migrate.py", hb.root, "--db-only", "--apply", "--json")
    out = json.loads(proc.stdout)
    assert any("reverts" in w or "writes the old provider back" in w for w in out["warnings"])
    assert out["result"]["updated_rows"] == 3 and out["result"]["line1_rewritten"] == 0
    assert all(t.path.read_bytes() == lines[t.id] for t in old)
    # the audit sees what Codex will do: line 1 still says oldco
    audit = json.loads(run("session_audit.py", hb.root, "--json").stdout)
    assert audit["integrity"]["provider_mismatch_count"] == 3
    assert audit["visibility"]["hidden"]["other_provider"] == 3


def test_filters_and_longer_target(split):
    hb, old, _ = split
    hb.write_config("newco", ["newco", "oldco", "a-much-longer-provider"])
    out = json.loads(run("provider_migrate.py", hb.root, "--target-provider", "a-much-longer-provider",
                         "--from-provider", "oldco", "--thread-id", old[0].id, "--json").stdout)
    assert out["candidates"] == 1 and out["line1_growing"] == 1
    assert out["target_source"] == "--target-provider"
    data = old[0].path.read_bytes()
    mtime = old[0].path.stat().st_mtime_ns
    res = json.loads(run("provider_migrate.py", hb.root, "--target-provider", "a-much-longer-provider",
                         "--thread-id", old[0].id, "--apply", "--json").stdout)["result"]
    now = old[0].path.read_bytes()
    assert len(now) == len(data) + len("a-much-longer-provider") - len("oldco")
    assert now.split(b"\n", 1)[1] == data.split(b"\n", 1)[1]
    assert old[0].path.stat().st_mtime_ns == mtime
    assert run("rollback.py", hb.root, "--manifest", res["run_dir"], "--apply").returncode == 0
    assert old[0].path.read_bytes() == data and old[0].path.stat().st_mtime_ns == mtime


def test_unknown_target_warns(split):
    hb, _, _ = split
    out = json.loads(run("provider_migrate.py", hb.root, "--target-provider", "nope", "--json").stdout)
    assert out["target_configured"] is False
    assert any("no [model_providers.nope]" in w for w in out["warnings"])


def test_live_thread_is_skipped(split):
    import fcntl
    hb, old, _ = split
    locks = hb.root / "thread-writer-locks"
    locks.mkdir()
    fd = os.open(str(locks / f"{old[0].id}.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        out = json.loads(run("provider_migrate.py", hb.root, "--json",
                             env={"CODEX_THREAD_ID": old[0].id}).stdout)
    finally:
        os.close(fd)
    assert out["candidates"] == 2
    assert out["skipped_sample"] == [{"thread_id": old[0].id,
                                      "reason": "live thread (its writer lock is held): never touched"}]


def test_refuses_while_codex_holds_a_lock(split):
    import fcntl
    hb, _, _ = split
    lockdir = hb.root / "tmp" / "arg0-linux" / "codex-arg0abc"
    lockdir.mkdir(parents=True)
    fd = os.open(str(lockdir / ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    before = snapshot(hb.root)
    try:
        proc = run("provider_migrate.py", hb.root, "--apply")
        assert proc.returncode == 2
        assert "Codex is running" in proc.stderr and "codex process" in proc.stderr
        assert snapshot(hb.root) == before
        forced = run("provider_migrate.py", hb.root, "--apply", "--force")
        assert forced.returncode == 0, forced.stderr
    finally:
        os.close(fd)


def test_read_only_home_stops_before_any_backup(split, monkeypatch, capsys):
    """A home the process may not write (root ignores modes, so access() says so here): one line
    that tells an agent what to do, before any backup; the real sandbox case is in test_e2e_agent."""
    import provider_migrate
    from sessionkit.runlog import safety
    from sessionkit.ui.cli import run as run_main
    hb, _, _ = split
    before = snapshot(hb.root)
    real_access = os.access
    monkeypatch.setattr(safety.os, "access", lambda p, mode: False if str(p).startswith(str(hb.root))
                        else real_access(p, mode))
    monkeypatch.setenv("CODEX_THREAD_ID", "not-a-live-thread")
    rc = run_main(provider_migrate.main, ["--codex-dir", str(hb.root), "--apply"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot write" in err and "(you are inside Codex's sandbox)" in err
    assert "escalated permission for this one command" in err and "provider_migrate.py" in err
    assert snapshot(hb.root) == before
    assert not (hb.root / ARTIFACTS).exists()


# Faults at every step (kill, Ctrl-C, write errors, full disk, ulimit -f, busy DB), with step
# counts taken from the run itself: tests/test_faults.py.


def test_a_second_run_while_one_applies_is_refused(split):
    import fcntl
    hb, _, _ = split
    lock = hb.root / ARTIFACTS / ".lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    hb.add(write_row=False)  # an orphan, so the repair has work to do
    backup = lock.parent / "state_5.sqlite.copy.bak"  # named for the DB it belongs to
    shutil.copy(hb.db_path, backup)
    before = home_state(hb.root)
    runs = {"provider_migrate.py": [], "session_repair.py": ["--import-orphans"],
            "rollback.py": ["--restore-db", str(backup)]}
    try:
        for script, extra in runs.items():
            proc = run(script, hb.root, "--apply", *extra)
            assert proc.returncode == 2 and "another session-migration run is applying" in proc.stderr, proc.stderr
    finally:
        os.close(fd)
    assert home_state(hb.root) == before


def test_a_busy_db_stops_cleanly_after_the_timeout(split):
    hb, old, _ = split
    before = home_state(hb.root)
    hb.sql("PRAGMA journal_mode=WAL")
    holder = sqlite3.connect(str(hb.db_path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE threads SET title=title WHERE 0")
    try:
        import time
        t0 = time.monotonic()
        proc = run("provider_migrate.py", hb.root, "--apply")
        waited = time.monotonic() - t0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "database is locked" in proc.stderr and "the home is as before" in proc.stderr
    assert 4 < waited < 30
    assert home_state(hb.root)["files"] == before["files"]
    assert home_state(hb.root)["rows"] == before["rows"]


def test_rollback_of_the_original_designs_csv(split):
    """A run of the original tool (DB rows only, a bare CSV in .tmp/) is undone from its CSV."""
    hb, old, _ = split
    before = home_state(hb.root)
    hb.sql("UPDATE threads SET model_provider='newco' WHERE archived=0 AND model_provider<>'newco'")
    legacy = hb.root / ".tmp" / "provider_migration_20260421_101010.csv"
    legacy.parent.mkdir()
    legacy.write_text("id,old_provider,new_provider,ts\n" +
                      "".join(f"{t.id},oldco,newco,2026-04-21T10:10:10\n" for t in old))
    dry = json.loads(run("rollback.py", hb.root, "--manifest", str(legacy), "--json").stdout)
    assert dry["kind"] == "provider_migration (manifest only)" and dry["rows_to_revert"] == 3
    proc = run("rollback.py", hb.root, "--manifest", str(legacy), "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert home_state(hb.root)["rows"] == before["rows"]
    junk = hb.root / ".tmp" / "notes.csv"
    junk.write_text("a,b\n1,2\n")
    bad = run("rollback.py", hb.root, "--manifest", str(junk))
    assert bad.returncode == 2 and "not a provider migration manifest" in bad.stderr


def test_restore_db_puts_a_whole_backup_back_after_saving_the_current_one(split):
    hb, old, _ = split
    rows_before = home_state(hb.root)["rows"]
    res = json.loads(run("provider_migrate.py", hb.root, "--apply", "--json").stdout)["result"]
    rows_migrated = home_state(hb.root)["rows"]
    dry = run("rollback.py", hb.root, "--restore-db", res["db_backup"])
    assert dry.returncode == 1 and "would restore" in dry.stdout  # the rewritten line 1s stay: split
    assert "3 row(s) and file(s) would be split:" in dry.stdout and "rows that differ only as the run changed them: 3" \
        in dry.stdout
    assert home_state(hb.root)["rows"] == rows_migrated
    refused = run("rollback.py", hb.root, "--restore-db", res["db_backup"], "--apply")
    assert refused.returncode == 2 and "refusing to restore" in refused.stderr
    assert home_state(hb.root)["rows"] == rows_migrated
    proc = run("rollback.py", hb.root, "--restore-db", res["db_backup"], "--apply", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["result"]
    [listed] = json.loads(run("rollback.py", hb.root, "--list", "--json").stdout)["runs"]
    assert listed["state"] == "applied (newest, its DB restored from a backup 1 time(s))"
    assert [r["saved"] for r in listed["restores"]] == [out["previous_db_saved_to"]]
    assert home_state(hb.root)["rows"] == rows_before
    saved = Path(out["previous_db_saved_to"])
    assert saved.stat().st_mode & 0o777 == 0o600
    conn = sqlite3.connect(str(saved))
    assert conn.execute("SELECT * FROM threads ORDER BY id").fetchall() == rows_migrated
    conn.close()


def test_longer_id_moves_the_history_base_of_a_fork_that_points_into_it(split):
    """A fork records byte offsets into its parent's rollout: when the parent's line 1 grows, the
    fork's history_base moves with it (tests/test_forks.py has the rollback)."""
    hb, old, _ = split
    hb.write_config("newco", ["newco", "oldco", "a-much-longer-provider"])
    child = hb.add(provider="oldco", preview="the fork")
    first, rest = child.path.read_bytes().split(b"\n", 1)
    meta = json.loads(first)
    payload = {}
    for key, value in meta["payload"].items():  # where real Codex 0.169 puts them (seen in its forks)
        payload[key] = value
        if key == "id":
            payload["forked_from_id"] = old[0].id
    end = old[0].path.stat().st_size  # the parent's end of file when it was forked
    payload["history_base"] = {"thread_id": old[0].id, "end_byte_offset": end}
    meta["payload"] = payload
    child.path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + rest)
    out = json.loads(run("provider_migrate.py", hb.root, "--target-provider", "a-much-longer-provider",
                         "--json").stdout)
    assert out["skipped_sample"] == [] and out["forks_moved"] == 1
    assert out["candidates"] == 6  # the three oldco threads, both newco threads and the fork itself
    grown = len("a-much-longer-provider") - len("oldco")
    done = run("provider_migrate.py", hb.root, "--target-provider", "a-much-longer-provider", "--apply", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    base = json.loads(child.path.read_bytes().split(b"\n", 1)[0])["payload"]["history_base"]
    assert base == {"thread_id": old[0].id, "end_byte_offset": end + grown}
    assert old[0].path.stat().st_size == end + grown
    shorter = json.loads(run("provider_migrate.py", hb.root, "--json").stdout)  # newco: same length
    assert shorter["skipped"] == 0 and shorter["candidates"] == 6
