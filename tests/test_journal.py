"""Issue 11's attacks on the journal, one test each (each failed on the code before the typed
operations): short writes, live threads, hard links, a symlinked .tmp, a state DB outside the
home, hostile columns, --latest, later runs, leftover folders, mtimes, and split threads."""
import errno
import fcntl
import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from harness import snapshot
from homebuilder import HomeBuilder
from test_faults import frun
from test_migrate_rollback import home_state

RUNS = ".tmp/session-migration"


def _journal_lines(root: Path, n: int = -1):
    journals = sorted((root / RUNS).glob("*_*/journal.jsonl"), key=lambda p: p.parent.name)
    path = journals[n]
    return path, [json.loads(x) for x in path.read_text().splitlines()]


def _append_turn(path: Path, text: str = "later turn") -> None:
    with open(path, "ab") as fh:
        fh.write(json.dumps({"type": "event_msg", "payload": {"type": "user_message", "message": text}}).encode() + b"\n")


@pytest.fixture
def home(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco", "a-much-longer-id"])
    threads = [hb.add(provider="oldco", preview=f"old {i}") for i in range(3)]
    return hb, threads


# item 1 -------------------------------------------------------------------------------------

def test_short_writes_are_completed_and_a_zero_write_is_an_error(tmp_path, monkeypatch):
    from sessionkit.runlog import journal as jmod
    real = os.write
    monkeypatch.setattr(jmod.os, "write", lambda fd, data: real(fd, bytes(data[:7])))  # 7 bytes a call
    j = jmod.Journal(tmp_path / "journal.jsonl")
    j.write_batch([{"op": "begin", "kind": "x" * 300}, {"op": "end", "status": "complete"}])
    j.close()
    recs = jmod.read_records(tmp_path / "journal.jsonl")
    assert [r["op"] for r in recs] == ["begin", "end"] and recs[0]["kind"] == "x" * 300
    monkeypatch.setattr(jmod.os, "write", lambda fd, data: 0)
    j = jmod.Journal(tmp_path / "j2.jsonl")
    with pytest.raises(OSError) as err:
        j.write({"op": "begin"})
    j.close()
    assert err.value.errno == errno.ENOSPC


def test_private_file_checks_every_byte(tmp_path, monkeypatch):
    from sessionkit.runlog import artifacts
    from sessionkit.runlog import journal as jmod
    real = os.write
    monkeypatch.setattr(jmod.os, "write", lambda fd, data: real(fd, bytes(data[:3])))
    artifacts.private_file(tmp_path / "m.csv", b"id,old,new\n" * 50)
    assert (tmp_path / "m.csv").read_bytes() == b"id,old,new\n" * 50
    assert (tmp_path / "m.csv").stat().st_mode & 0o777 == 0o600


# item 3 -------------------------------------------------------------------------------------

def test_a_thread_opened_after_the_plan_is_skipped_under_its_writer_lock(home):
    """--force, and a Codex that resumed one thread after the plan was made: that thread's lock
    is held, so it is skipped whole with its reason; the others are migrated."""
    from sessionkit.diagnose.snapshot import gather
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.migrate import apply_migration, plan_migration
    hb, (a, b, c) = home
    inputs = gather(open_home(str(hb.root)))
    plan = plan_migration(inputs)
    assert len(plan.changes) == 3
    locks = hb.root / "thread-writer-locks"
    locks.mkdir()
    fd = os.open(str(locks / f"{a.id}.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # Codex opened thread a after the plan
    a_bytes = a.path.read_bytes()
    _append_turn(b.path)  # and thread b got a turn (mtime and size change)
    b_bytes = b.path.read_bytes()
    try:
        res = apply_migration(inputs, plan, force=True)
    finally:
        os.close(fd)
    reasons = {s["thread_id"]: s["reason"] for s in res["skipped_at_apply"]}
    assert set(reasons) == {a.id, b.id}
    assert "writer lock" in reasons[a.id] and "changed since the plan" in reasons[b.id]
    assert a.path.read_bytes() == a_bytes and b.path.read_bytes() == b_bytes
    assert hb.sql("SELECT id, model_provider FROM threads ORDER BY id") == \
        [(a.id, "oldco"), (b.id, "oldco"), (c.id, "newco")]
    assert res["line1_rewritten"] == 1 and res["updated_rows"] == 1
    assert sorted(os.listdir(locks)) == [f"{a.id}.lock"]  # ours are gone again; Codex's stays


def test_writer_lock_is_held_while_the_thread_changes(home):
    """While the run writes, a second writer (as Codex would) cannot take the thread's lock."""
    from sessionkit.codexfiles import faults
    from sessionkit.diagnose.snapshot import gather
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.migrate import apply_migration, plan_migration
    hb, threads = home
    seen = []

    def probe(label):
        if label != "file":
            return
        for t in threads:
            p = hb.root / "thread-writer-locks" / f"{t.id}.lock"
            fd = os.open(str(p), os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append("free")
            except OSError:
                seen.append("held")
            finally:
                os.close(fd)
    inputs = gather(open_home(str(hb.root)))
    faults.install(probe)
    try:
        apply_migration(inputs, plan_migration(inputs))
    finally:
        faults.install(None)
    assert seen == ["held"] * 9
    assert not (hb.root / "thread-writer-locks").exists()  # the home as it was: no lock folder


# item 4 -------------------------------------------------------------------------------------

def test_a_hard_linked_rollout_is_never_written_through(home, tmp_path):
    hb, (a, b, c) = home
    backup = tmp_path / "snapshot-backup.jsonl"
    os.link(a.path, backup)
    before = backup.read_bytes()
    proc = frun("provider_migrate.py", hb.root, "--apply", "--json")
    assert proc.returncode == 1, proc.stderr  # a thread skipped: findings
    out = json.loads(proc.stdout)["result"]
    assert [s["thread_id"] for s in out["skipped_at_apply"]] == [a.id]
    assert "2 hard links" in out["skipped_at_apply"][0]["reason"]
    assert backup.read_bytes() == before and a.path.read_bytes() == before
    assert hb.sql("SELECT model_provider FROM threads WHERE id=?", (a.id,)) == [("oldco",)]
    assert out["line1_rewritten"] == 2


# item 5 -------------------------------------------------------------------------------------

def test_a_symlinked_tmp_folder_is_refused_before_anything_is_written(home, tmp_path):
    hb, _ = home
    hb.add(archived=True)  # work for the repair too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (hb.root / ".tmp").symlink_to(elsewhere)
    before = home_state(hb.root)
    for script, args in (("provider_migrate.py", ["--apply"]), ("session_repair.py", ["--unarchive", "--apply"])):
        proc = frun(script, hb.root, *args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "leads outside the Codex home" in proc.stderr
    assert list(elsewhere.iterdir()) == []
    assert home_state(hb.root) == before


# item 6 -------------------------------------------------------------------------------------

def _db_outside(hb, tmp_path):
    dbdir = tmp_path / "dbs"
    dbdir.mkdir()
    shutil.move(str(hb.db_path), str(dbdir / "state_5.sqlite"))
    hb.db_path = dbdir / "state_5.sqlite"
    hb.write_config("newco", ["newco", "oldco"], extra=f'sqlite_home = "{dbdir}"')
    return dbdir


def _state(hb):
    conn = sqlite3.connect(f"file:{hb.db_path}?mode=ro", uri=True)
    rows = conn.execute("SELECT * FROM threads ORDER BY id").fetchall()
    conn.close()
    return {k: v for k, v in snapshot(hb.root).items() if not k.startswith(RUNS)}, rows


def test_state_db_outside_the_home_is_rolled_back_and_a_failed_run_undone(home, tmp_path):
    hb, threads = home
    _db_outside(hb, tmp_path)
    before = _state(hb)
    proc = frun("provider_migrate.py", hb.root, "--apply")
    assert proc.returncode == 0, proc.stderr
    assert hb.sql("SELECT DISTINCT model_provider FROM threads") == [("newco",)]
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert _state(hb) == before
    failed = frun("provider_migrate.py", hb.root, "--apply", fault="enospc:commit:1")
    assert failed.returncode == 2 and "the home is as before" in failed.stderr, failed.stderr
    assert _state(hb) == before


# item 8 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit", ["extra-column", "unknown-op", "bad-line", "old-format", "table", "batch-gap"])
def test_rollback_refuses_an_edited_journal(home, edit):
    hb, (a, _, _) = home
    assert frun("provider_migrate.py", hb.root, "--apply").returncode == 0
    path, recs = _journal_lines(hb.root)
    for r in recs:
        if r["op"] == "row_update" and r["thread_id"] == a.id:
            if edit == "extra-column":  # columns the run never touched
                r["old"].update({"cwd": "/evil", "archived": 1})
                r["new"].update({"cwd": "/work/proj", "archived": 0})
            elif edit == "table":
                r["table"] = "sqlite_master"
    lines = [json.dumps(r) for r in recs]
    if edit == "unknown-op":
        lines.insert(3, json.dumps({"v": 2, "op": "exec_sql", "sql": "DROP TABLE threads"}))
    elif edit == "bad-line":
        lines.insert(3, "{not json")
    elif edit == "batch-gap":  # batch 2 of 3 with no batch 1 before it
        lines.insert(4, json.dumps({"v": 2, "op": "batch", "n": 2, "of": 3, "threads": 1}))
    elif edit == "old-format":
        lines = [json.dumps({k: v for k, v in json.loads(x).items() if k != "v"}) for x in lines]
    path.write_text("\n".join(lines) + "\n")
    before = home_state(hb.root)
    proc = frun("rollback.py", hb.root, "--manifest", str(path.parent), "--apply")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert home_state(hb.root) == before
    assert hb.sql("SELECT cwd, archived FROM threads WHERE id=?", (a.id,)) == [("/work/proj", 0)]


# item 11 ------------------------------------------------------------------------------------

def test_latest_walks_back_through_runs_and_skips_undone_ones(home):
    hb, (a, b, c) = home
    start = home_state(hb.root)
    assert frun("provider_migrate.py", hb.root, "--apply", "--thread-id", a.id).returncode == 0
    one = home_state(hb.root)
    assert frun("provider_migrate.py", hb.root, "--apply", "--thread-id", b.id).returncode == 0
    failed = frun("provider_migrate.py", hb.root, "--apply", "--thread-id", c.id, fault="eio:commit:1")
    assert failed.returncode == 2 and "were undone" in failed.stderr
    runs = json.loads(frun("rollback.py", hb.root, "--list", "--json").stdout)["runs"]
    assert [r["status"] for r in runs] == ["applied", "applied", "failed, undone"]
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert home_state(hb.root) == one
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert home_state(hb.root) == start
    runs = json.loads(frun("rollback.py", hb.root, "--list", "--json").stdout)["runs"]
    assert [r["status"] for r in runs] == ["rolled back", "rolled back", "failed, undone"]


def test_an_older_run_a_later_run_depends_on_is_not_rolled_back_silently(home):
    hb, (a, b, c) = home
    hb.write_config("newco", ["newco", "oldco", "third"])
    first = json.loads(frun("provider_migrate.py", hb.root, "--apply", "--json").stdout)["result"]
    assert frun("provider_migrate.py", hb.root, "--apply", "--target-provider", "third",
                "--thread-id", a.id).returncode == 0
    after = home_state(hb.root)
    proc = frun("rollback.py", hb.root, "--manifest", first["run_dir"], "--apply")
    assert proc.returncode == 2 and "later run(s) changed threads this run changed" in proc.stderr
    assert home_state(hb.root) == after
    dry = json.loads(frun("rollback.py", hb.root, "--manifest", first["run_dir"], "--json").stdout)
    assert len(dry["later_runs_on_same_threads"]) == 1 and "(1 thread(s))" in dry["later_runs_on_same_threads"][0]
    forced = frun("rollback.py", hb.root, "--manifest", first["run_dir"], "--apply", "--force")
    assert forced.returncode == 1  # thread a left alone whole: its values are the later run's
    assert hb.sql("SELECT id, model_provider FROM threads ORDER BY id") == \
        [(a.id, "third"), (b.id, "oldco"), (c.id, "oldco")]


# item 13 ------------------------------------------------------------------------------------

def test_a_kill_between_mkdir_and_move_leaves_no_folder(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add(archived=True)
    dated = hb.root / "sessions" / t.created.strftime("%Y/%m/%d")
    assert not (hb.root / "sessions").exists()
    proc = frun("session_repair.py", hb.root, "--unarchive", "--apply", fault="kill:file:4")  # sessions/Y/m/d made, no move
    assert proc.returncode == -signal.SIGKILL
    assert dated.is_dir() and t.path.exists()
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert not (hb.root / "sessions").exists() and t.path.exists()


# item 14 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["newco", "a-much-longer-id"])
def test_rollback_never_turns_back_the_mtime_of_a_continued_thread(home, target):
    hb, (a, b, _) = home
    old_b = (b.path.read_bytes(), b.path.stat().st_mtime_ns)
    assert frun("provider_migrate.py", hb.root, "--apply", "--target-provider", target).returncode == 0
    _append_turn(a.path)  # the user continued thread a after the migration
    continued = a.path.stat().st_mtime_ns
    migrated = a.path.read_bytes()
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    now = a.path.read_bytes()
    first, rest = now.split(b"\n", 1)
    assert json.loads(first)["payload"]["model_provider"] == "oldco"
    assert rest == migrated.split(b"\n", 1)[1] and rest.endswith(b'"later turn"}}\n')
    assert a.path.stat().st_mtime_ns == continued  # not the old mtime: Codex would lower updated_at
    assert (b.path.read_bytes(), b.path.stat().st_mtime_ns) == old_b  # untouched since: all back


# issue 12: rollback never splits a thread ---------------------------------------------------

def test_rollback_never_splits_a_continued_thread(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    x, y = hb.add(archived=True, preview="x"), hb.add(archived=True, preview="y")
    before = home_state(hb.root)
    assert frun("session_repair.py", hb.root, "--unarchive", "--apply").returncode == 0
    (xp,) = hb.sql("SELECT rollout_path FROM threads WHERE id=?", (x.id,))[0]
    _append_turn(Path(xp))  # continue x: Codex appends and bumps the row
    hb.sql("UPDATE threads SET updated_at=updated_at+500 WHERE id=?", (x.id,))
    proc = frun("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["conflicts"] == 1 and x.id in out["conflict_sample"][0] and "left alone whole" in out["conflict_sample"][0]
    for tid, path, archived in hb.sql("SELECT id, rollout_path, archived FROM threads"):
        assert Path(path).is_file(), tid  # readable
        assert bool(archived) == ("/archived_sessions/" in path), tid  # flag matches folder
    assert hb.sql("SELECT archived FROM threads WHERE id=?", (x.id,)) == [(0,)]
    assert hb.sql("SELECT archived, rollout_path FROM threads WHERE id=?", (y.id,)) == [(1, str(y.path))]
    assert {k: v for k, v in home_state(hb.root)["files"].items() if y.id in k} == \
        {k: v for k, v in before["files"].items() if y.id in k}
