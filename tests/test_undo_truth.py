"""A run's recorded state is the truth: a rollback undoes only what is still wholly the run's,
names what it leaves and why, keeps such a run undoable (never "rolled back", never pruned
without --force), and says "nothing left to undo" when that is so."""
import json
import os
import sqlite3
import sys

import pytest

from faultrun import script_run  # script runs forked (tests/faultrun.py)

from harness import SCRIPTS
from harness import run_on_home as run
from homebuilder import HomeBuilder, build_broken_home


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
    rb = run("rollback.py", hb.root, "--latest", "--apply", "--verbose")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert "conflicts: 0" in rb.stdout
    assert sql(hb.root / "state_5.sqlite", "SELECT count(*) FROM threads WHERE id=?", (tid,)) == [(0,)]
    assert list_runs(hb.root)[0]["state"] == "rolled back"


@pytest.fixture
def migrated(tmp_path):
    """Three sessions of another provider migrated to the current one (one run)."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    old = [hb.add(provider="oldco", preview=f"old {i}") for i in range(3)]
    hb.add(provider="newco", preview="new")
    before = (snap_home(hb.root), rows(hb.root))
    proc = run("provider_migrate.py", hb.root, "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return hb, old, before


def snap_home(root):
    from harness import snapshot
    return {k: v for k, v in snapshot(root).items() if not k.startswith((".tmp", "state_5.sqlite", "thread-writer-locks"))}


def test_a_thread_codex_holds_during_a_forced_rollback_is_named_and_the_run_stays_undoable(migrated):
    import fcntl
    hb, old, before = migrated
    locks = hb.root / "thread-writer-locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(str(locks / f"{old[1].id}.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        rb = run("rollback.py", hb.root, "--latest", "--apply", "--force", "--verbose")
        assert rb.returncode == 1, rb.stdout + rb.stderr
        assert "conflicts: 1" in rb.stdout
        assert f"  left alone: {old[1].id}: " in rb.stdout
        [r] = list_runs(hb.root)
        assert r["applied"] is True and r["state"].startswith("partly rolled back: 1 left alone")
        assert len(r["left_alone"]) == 1 and r["left_alone"][0].startswith(f"{old[1].id}: ")
        pr = run("rollback.py", hb.root, "--prune", "--apply")
        assert pr.returncode == 0 and f"kept " in pr.stdout
        assert os.path.isdir(r["run_dir"])  # never pruned without --force
        assert sql(hb.root / "state_5.sqlite", "SELECT model_provider FROM threads WHERE id=?",
                   (old[1].id,)) == [("newco",)]
    finally:
        os.close(fd)
    rb = run("rollback.py", hb.root, "--latest", "--apply")  # Codex let go: the rest is undone
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert list_runs(hb.root)[0]["state"] == "rolled back"
    assert (snap_home(hb.root), rows(hb.root)) == before


def test_latest_after_everything_was_rolled_back_says_nothing_left_to_undo(migrated):
    hb, old, before = migrated
    assert run("provider_migrate.py", hb.root, "--target-provider", "oldco", "--apply").returncode == 0
    for _ in range(2):
        rb = run("rollback.py", hb.root, "--latest", "--apply")
        assert rb.returncode == 0, rb.stdout + rb.stderr
    assert (snap_home(hb.root), rows(hb.root)) == before
    for args in (["--latest", "--apply"], ["--latest"]):
        again = run("rollback.py", hb.root, *args)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.startswith("nothing left to undo: every run recorded under ")
    assert json.loads(run("rollback.py", hb.root, "--latest", "--apply", "--json").stdout)["nothing_left"] is True
    assert (snap_home(hb.root), rows(hb.root)) == before


def test_a_thread_deleted_since_the_run_is_left_deleted_and_said_so(migrated):
    """thread/delete removes a thread's files, name entries and row: the rollback does not bring
    it back, says so, and calls the run rolled back (the rest is undone)."""
    hb, old, before = migrated
    gone = old[2]
    os.unlink(gone.path)
    sql(hb.root / "state_5.sqlite", "DELETE FROM threads WHERE id=?", (gone.id,))
    rb = run("rollback.py", hb.root, "--latest", "--apply", "--verbose")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert f"  left deleted: {gone.id}: deleted since the run (thread/delete?); left deleted" in rb.stdout
    assert "conflicts: 0" in rb.stdout and "left_deleted: 1" in rb.stdout
    assert not os.path.lexists(gone.path)
    want_files = {k: v for k, v in before[0].items() if gone.id not in k}
    assert snap_home(hb.root) == want_files
    assert rows(hb.root) == [r for r in before[1] if r[0] != gone.id]
    [r] = list_runs(hb.root)
    assert r["state"] == "rolled back" and r["left_deleted"] == [f"{gone.id}: deleted since the run (thread/delete?); left deleted"]


@pytest.mark.parametrize("grow", [False, True])
def test_a_repair_that_remaps_and_unarchives_one_session_rolls_back_whole(tmp_path, grow):
    """The audit's own moved-home advice when archived sessions exist: the rollout is rewritten
    where it lies (archived_sessions/), then moved to sessions/; the rollback judges the rewrite
    where the move put it and undoes both."""
    from test_migrate_rollback import home_state
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(cwd="/home/olduser/proj", preview="active")
    arch = hb.add(cwd="/home/olduser/proj", archived=True, preview="archived")
    before = home_state(hb.root)
    new = "/home/newuser/a-much-longer-folder-name/proj" if grow else "/home/newer/proj"
    args = ("--remap-prefix", f"/home/olduser/proj={new}", "--unarchive", "--apply", "--json")
    proc = run("session_repair.py", hb.root, *args)  # the rewrite where it lies; the move waits
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert arch.path.exists()
    proc = run("session_repair.py", hb.root, *args)  # the next run moves it
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not arch.path.exists()
    dry = json.loads(run("rollback.py", hb.root, "--latest", "--json").stdout)
    assert (dry["conflicts"], dry["files_to_move_back"]) == (0, 1), dry
    for _run in range(2):  # each run rolls back whole, newest first
        rb = run("rollback.py", hb.root, "--latest", "--apply")
        assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before
    assert [r["state"] for r in list_runs(hb.root)] == ["rolled back", "rolled back"]


def faultrun(spec, script, home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "SESSION_MIGRATION", "FAULTRUN"))}
    env["FAULTRUN"] = spec
    launcher = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faultrun.py")
    return script_run([sys.executable, launcher, str(SCRIPTS / script), "--codex-dir", str(home), *args],
                      capture_output=True, text=True, env=env, check=False)


def test_a_run_applied_at_the_lowest_open_file_limit_it_accepts_is_undone_at_that_limit(tmp_path):
    """Batched at the lowest limit it takes: an error between batches undoes itself, and a finished
    run is undone by rollback.py under the same limit (its undo's descriptors are kept free)."""
    from test_migrate_rollback import home_state

    def home(name):
        hb = HomeBuilder(tmp_path / name / ".codex", provider="newco", providers=["newco", "oldco"])
        for i in range(30):
            hb.add(provider="oldco", preview=f"old {i}")
        return hb, home_state(hb.root)

    hb, before = home("probe")
    for limit in range(130, 180):
        proc = faultrun(f"nofile:{limit}", "provider_migrate.py", hb.root, "--apply")
        if proc.returncode == 0:
            break
        assert proc.returncode == 2 and "too low for" in proc.stderr and home_state(hb.root) == before
    else:
        pytest.fail("no open-file limit up to 180 was accepted")
    rb = faultrun(f"nofile:{limit}", "rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before
    hb, before = home("fault")
    proc = faultrun(f"eio:batch:1+nofile:{limit}", "provider_migrate.py", hb.root, "--apply")
    assert proc.returncode == 2 and "were undone, the home is as before" in proc.stderr, proc.stderr
    assert home_state(hb.root) == before


@pytest.fixture
def three_runs(tmp_path):
    """A migration, an unarchive, a migration back: three applied runs."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    old = [hb.add(provider="oldco", preview=f"old {i}") for i in range(2)]
    arch = hb.add(provider="newco", archived=True, preview="archived")
    before = (snap_home(hb.root), rows(hb.root))
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    assert run("session_repair.py", hb.root, "--unarchive", "--apply").returncode == 0
    assert run("provider_migrate.py", hb.root, "--target-provider", "oldco", "--apply").returncode == 0
    runs = [r["run_dir"] for r in list_runs(hb.root)]
    assert len(runs) == 3
    return hb, old, arch, before, runs


def test_until_undoes_every_newer_run_newest_first(three_runs):
    hb, _old, _arch, before, runs = three_runs
    dry = run("rollback.py", hb.root, "--until", runs[0])
    assert dry.returncode == 0 and [ln.split()[-1] for ln in dry.stdout.splitlines() if "would undo" in ln] == \
        runs[::-1]
    proc = run("rollback.py", hb.root, "--until", runs[0], "--apply", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert [d["run_dir"] for d in out["undone"]] == runs[::-1] and out["stopped_at"] is None
    assert (snap_home(hb.root), rows(hb.root)) == before
    assert [r["state"] for r in list_runs(hb.root)] == ["rolled back"] * 3


def test_until_stops_at_the_first_run_that_cannot_be_undone_whole(three_runs):
    hb, _old, arch, before, runs = three_runs
    (moved,) = hb.sql("SELECT rollout_path FROM threads WHERE id=?", (arch.id,))[0]
    with open(moved, "a") as fh:  # the unarchived thread continued since: the repair cannot be undone whole
        fh.write('{"type":"event_msg","payload":{"type":"user_message","message":"more"}}\n')
    hb.sql("UPDATE threads SET updated_at=updated_at+100 WHERE id=?", (arch.id,))
    proc = run("rollback.py", hb.root, "--until", runs[0], "--apply")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"  undone: provider_migration  {runs[2]}" in proc.stdout
    assert f"stopped at session_repair  {runs[1]}: 1 item(s) cannot be undone whole" in proc.stdout
    assert f"  left alone: {arch.id}: " in proc.stdout and f"  not reached: {runs[0]}" in proc.stdout
    assert [r["state"] for r in list_runs(hb.root)] == ["applied", "applied (newest)", "rolled back"]
