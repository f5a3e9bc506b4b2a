"""The repair's planning (issues 19, 20, 22): every state DB of a home planned from one picture of
the home after the run, one skip-one-thread path for every row change, two fixes of one thread in
one run, archived stays archived, exits that tell the truth, and read-only that is read-only."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from harness import clean_env, fake_codex_exe, snapshot
from homebuilder import HomeBuilder
from test_migrate_rollback import run


def repair(home, *args, env=None, codes=(0, 1)):
    proc = run("session_repair.py", home, "--json", *args, env=env)
    assert proc.returncode in codes, proc.stderr + proc.stdout[-2000:]
    return json.loads(proc.stdout)


# ---- issue 19: a stale -shm is read without being rewritten ---------------------------------

def _killed_after_commit(db: Path, *statements: str) -> None:
    """A writer that committed into the WAL and was killed: its -wal and its (now stale) -shm stay."""
    code = ("import sqlite3, os, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('PRAGMA journal_mode=WAL')\n"
            "c.execute('PRAGMA wal_autocheckpoint=0')\n"
            "for s in sys.argv[2:]:\n"
            "    c.execute(s)\n"
            "os._exit(0)\n")
    faultrun.script_run([sys.executable, "-c", code, str(db), *statements], check=True)
    assert Path(str(db) + "-wal").stat().st_size > 0 and Path(str(db) + "-shm").is_file()


def test_a_stale_shm_is_read_and_no_byte_or_mtime_of_the_db_its_wal_or_shm_changes(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"], wal=True)
    hb.add(provider="oldco")
    hb.add(provider="oldco", archived=True)
    other = hb.root / "sqlite"
    other.mkdir()
    shutil.copy(hb.db_path, other / "state_5.sqlite")
    _killed_after_commit(other / "state_5.sqlite", "DELETE FROM threads")
    _killed_after_commit(hb.root / "thread_history_1.sqlite",
                         "CREATE TABLE thread_turns (thread_id TEXT, turn_id TEXT, rollout_ordinal INTEGER, "
                         "rollout_byte_offset INTEGER, rollout_end_byte_offset INTEGER)",
                         "CREATE TABLE thread_history_projection_state (thread_id TEXT, "
                         "next_rollout_byte_offset INTEGER)")
    _killed_after_commit(hb.db_path, "UPDATE threads SET model_provider='inwal'")
    time.sleep(0.02)  # an mtime written by a read would differ from the writer's
    before = snapshot(hb.root)
    for db in ("state_5.sqlite", "thread_history_1.sqlite", "sqlite/state_5.sqlite"):
        assert {db, db + "-wal", db + "-shm"} <= set(before)
    audit = json.loads(run("session_audit.py", hb.root, "--json").stdout)
    assert audit["distribution"]["model_provider"] == {"inwal": 2}  # the rows the WAL holds
    repair(hb.root)
    assert snapshot(hb.root) == before


# ---- issue 20: every state DB of a home planned from the home after the run -----------------

def _desktop_copy(hb):
    """The desktop app's <home>/sqlite/state_5.sqlite, indexing the same rollouts as the CLI's DB."""
    (hb.root / "sqlite").mkdir(exist_ok=True)
    desk = hb.root / "sqlite" / "state_5.sqlite"
    src = sqlite3.connect(str(hb.db_path))
    dst = sqlite3.connect(str(desk))
    src.backup(dst)
    src.close()
    dst.close()
    return desk


def _rows(db):
    conn = sqlite3.connect(str(db))
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT id, rollout_path, archived, cwd, thread_section_id, title FROM threads")}
    finally:
        conn.close()


def _each_row_matches_its_file(root, db):
    """Every row names an existing file, archived exactly when that file is in archived_sessions/."""
    bad = {}
    for tid, (path, archived, *_rest) in _rows(db).items():
        in_archive = str(path).startswith(str(root / "archived_sessions") + os.sep)
        if not os.path.isfile(path) or bool(archived) != in_archive:
            bad[tid] = (path, archived)
    return bad


def test_a_thread_archived_in_the_cli_db_only_gets_a_row_in_the_desktop_db_where_its_file_is(tmp_path):
    """Archived through the CLI (row and file) after the desktop app indexed it, plus one the desktop
    app never saw, archived too: the import adds the desktop app's missing row where the file is, the
    stale desktop row follows the file; nothing is unarchived; every row of both DBs reads."""
    hb = HomeBuilder(tmp_path / ".codex")
    seen = hb.add(preview="seen by both")
    kept = hb.add(preview="stays active")
    desk = _desktop_copy(hb)
    later = hb.add(preview="made after", archived=True)
    dst = hb.root / "archived_sessions" / seen.path.name
    dst.parent.mkdir(exist_ok=True)
    os.rename(seen.path, dst)  # what `codex archive` does in the CLI's DB only
    hb.sql("UPDATE threads SET archived=1, archived_at=1, rollout_path=? WHERE id=?", (str(dst), seen.id))
    out = repair(hb.root, "--import-orphans", "--apply", codes=(0,))
    assert out["result"]["moved"] == 0 and out["result"]["archived_after"] == 2
    assert _each_row_matches_its_file(hb.root, hb.db_path) == {}
    assert _each_row_matches_its_file(hb.root, desk) == {}
    rows = _rows(desk)
    assert set(rows) == {seen.id, kept.id, later.id}
    assert rows[seen.id][:2] == (str(dst), 1) and rows[later.id][:2] == (str(later.path), 1)


def test_unarchiving_in_the_cli_db_points_the_desktop_rows_at_where_the_file_goes(tmp_path):
    """--unarchive moves the files out of the archive: the desktop app's row of one and the row it
    lacks of the other are planned from the moved paths, never the archive paths."""
    hb = HomeBuilder(tmp_path / ".codex")
    a = hb.add(archived=True, preview="archived, both DBs")
    desk = _desktop_copy(hb)
    b = hb.add(archived=True, preview="archived, CLI DB only")
    out = repair(hb.root, "--import-orphans", "--unarchive", "--apply", codes=(0,))
    assert out["result"]["moved"] == 2 and out["result"]["archived_after"] == 0
    for db in (hb.db_path, desk):
        assert _each_row_matches_its_file(hb.root, db) == {}
        assert {t: r[1] for t, r in _rows(db).items()} == {a.id: 0, b.id: 0}
    assert run("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert _rows(desk) == {a.id: (str(a.path), 1, "/work/proj", None, "archived, both DBs")}


def test_threads_the_used_db_changes_are_updated_in_the_desktop_db_not_inserted_again(tmp_path):
    """A moved home with the desktop app's DB, one thread filed into a section there: the import
    with the remap updates the desktop rows (section kept) instead of taking them for orphans."""
    hb = HomeBuilder(tmp_path / ".codex")
    threads = [hb.add(cwd="/home/olduser/proj", preview=f"t{i}") for i in range(3)]
    for t in threads:
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
               ("/home/olduser/.codex/" + str(t.path.relative_to(hb.root)), t.id))
    desk = _desktop_copy(hb)
    conn = sqlite3.connect(str(desk))
    conn.execute("UPDATE threads SET thread_section_id='sec-1' WHERE id=?", (threads[0].id,))
    conn.commit()
    conn.close()
    out = repair(hb.root, "--import-orphans", "--remap-prefix", f"/home/olduser/.codex={hb.root}",
                 "--remap-prefix", "/home/olduser/proj=/home/new/proj", "--apply", codes=(0,))
    assert out["result"]["rows_per_db"] == {str(hb.db_path): 3, str(desk): 3}
    assert out["result"]["inserted_rows"] == 0
    rows = _rows(desk)
    assert rows == {t.id: (str(t.path), 0, "/home/new/proj", "sec-1" if t is threads[0] else None, t.id and
                           f"t{threads.index(t)}") for t in threads}


# ---- issue 20: every row change goes through one skip-one-thread path -----------------------

def test_a_name_restore_holding_a_lone_surrogate_skips_that_thread_not_the_repair(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    odd, fine = hb.add(preview="odd name"), hb.add(preview="fine name")
    moved = hb.add(preview="moved")
    hb.sql("UPDATE threads SET rollout_path='/gone/x.jsonl' WHERE id=?", (moved.id,))
    (hb.root / "session_index.jsonl").write_text(
        '{"id":"%s","thread_name":"bad \\ud800 name","updated_at":1}\n'
        '{"id":"%s","thread_name":"kept","updated_at":1}\n' % (odd.id, fine.id), encoding="utf-8")
    plan = repair(hb.root)
    reasons = {s["thread_id"]: s["reason"] for s in plan["skipped_sample"]}
    assert "not valid UTF-8" in reasons[odd.id] and list(reasons) == [odd.id]
    out = repair(hb.root, "--apply", codes=(1,))
    assert out["result"]["updated_rows"] == 2
    assert dict(hb.sql("SELECT id, name FROM threads")) == {odd.id: None, fine.id: "kept", moved.id: None}
    assert hb.sql("SELECT rollout_path FROM threads WHERE id=?", (moved.id,)) == [(str(moved.path),)]



# ---- issue 20: two fixes of one thread in one run ---------------------------------------------

def test_a_growing_remap_and_a_history_reset_of_one_thread_apply_together_and_roll_back(tmp_path):
    """The reset deletes the thread's history rows as they are (not after the remap's shift); the
    other thread's offsets are shifted; the dry-run says so; the rollback puts back every byte and row."""
    from test_history import TABLES, PaginatedHome
    from test_migrate_rollback import home_state
    ph = PaginatedHome(tmp_path / ".codex")
    damaged = ph.add(cwd="/work/p")
    healthy = ph.add(cwd="/work/p")
    ph.keep_first_turn_only(damaged)
    hist_before = {t.key: ph.rows_of(t.key) for t in (damaged, healthy)}
    state = lambda: {k: v for k, v in home_state(ph.root)["files"].items()  # noqa: E731 - rows compared below
                     if not k.startswith("thread_history_1")}
    before = state()
    args = ("--remap-prefix", "/work/p=/work/a-much-longer-project-folder")
    plan = repair(ph.root, *args, codes=(0,))
    assert plan["planned_history_resets"] == 1 and plan["planned_rollout_rewrites"] == 2
    assert plan["history_reset_instead_of_shift"] == [damaged.id]
    out = repair(ph.root, *args, "--apply", codes=(0,))
    assert out["result"]["line1_rewritten"] == 2 and out["result"]["history_rows_deleted"] > 0
    assert all(rows == [] for rows in ph.rows_of(damaged.key).values())
    grown = healthy.path.stat().st_size
    assert ph.sql("SELECT next_rollout_byte_offset FROM thread_history_projection_state WHERE thread_id=?",
                  (healthy.key,)) == [(grown,)]
    assert b"/work/p\"" not in damaged.path.read_bytes()
    rb = run("rollback.py", ph.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert state() == before
    assert {t.key: ph.rows_of(t.key) for t in (damaged, healthy)} == hist_before
    assert set(TABLES) == set(hist_before[damaged.key])


# ---- issue 20: exit codes that tell the truth -------------------------------------------------

HANGING_CODEX = r'''#!/usr/bin/env python3
import json, os, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "thread/resume":
        open(os.environ["FAKE_WAITING"], "w").close()
        time.sleep(600)  # Codex rebuilding a long history
    if "id" in msg:
        print(json.dumps({"id": msg["id"], "result": {}}), flush=True)
'''


@pytest.mark.parametrize("group", [False, True], ids=["our-process", "terminal-group"])
def test_ctrl_c_while_codex_rebuilds_reports_the_applied_repair_and_its_undo(tmp_path, group):
    """Ctrl-C after the reset committed, while Codex rebuilds (reading no input): exit 1 in seconds with
    the result, what was not rebuilt and the undo command, which puts the history rows back."""
    import signal
    from test_history import PaginatedHome
    ph = PaginatedHome(tmp_path / ".codex")
    th = ph.add()
    ph.delete_turns_keep_cursor(th)
    rows_before = ph.rows_of(th.key)
    exe = fake_codex_exe(tmp_path / "bin", HANGING_CODEX)
    waiting = tmp_path / "waiting"
    from harness import SCRIPTS
    env = clean_env(FAKE_WAITING=str(waiting))
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "session_repair.py"), "--codex-dir", str(ph.root),
                             "--apply", "--rebuild-history", "--codex-bin", str(exe), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 60
    while not waiting.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert waiting.exists(), proc.communicate()
    sent = time.monotonic()
    if group:  # a terminal's Ctrl-C: every process of the foreground group, Codex too
        os.killpg(proc.pid, signal.SIGINT)
    else:  # ours alone (kill -INT, a supervisor): Codex, busy rebuilding, gets one from us
        os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=90)
    # the user asked to stop: the run ends in seconds, not after the app-server's 30 s closing grace
    assert time.monotonic() - sent < 15, stderr
    assert proc.returncode == 1, stderr
    out = json.loads(stdout)
    assert out["result"]["history_rows_deleted"] > 0 and "rollback.py" in out["result"]["rollback"]
    assert out["history_rebuild"]["rebuilt"] == 0
    assert [f["thread_id"] for f in out["history_rebuild"]["failed"]] == [th.id]
    assert all(rows == [] for rows in ph.rows_of(th.key).values())
    rb = subprocess.run(out["result"]["rollback"], shell=True, capture_output=True, text=True, env=env)
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert ph.rows_of(th.key) == rows_before


# ---- issue 22: archived stays archived; nothing to do says so; the daemon link is named -----

def test_archived_sessions_stay_archived_and_a_dry_run_with_nothing_to_do_says_so_in_one_line(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    arch = hb.add(archived=True, preview="archived on purpose")
    before = snapshot(hb.root)
    out = repair(hb.root, codes=(0,))
    assert (out["planned_unarchive_moves"], out["planned_row_updates"], out["nothing_to_do"]) == (0, 0, True)
    text = run("session_repair.py", hb.root)
    assert text.returncode == 0 and text.stderr == ""
    assert text.stdout.splitlines() == ["Nothing to repair: every session's index entry already matches its file."]
    applied = run("session_repair.py", hb.root, "--apply")
    assert applied.returncode == 0 and len(applied.stdout.splitlines()) == 1
    assert snapshot(hb.root) == before and arch.path.is_file()


def test_unarchive_by_name_or_id_brings_back_only_those(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    a, b, c = (hb.add(archived=True, preview=f"a{i}") for i in range(3))
    hb.sql("UPDATE threads SET name='the one' WHERE id=?", (b.id,))
    out = repair(hb.root, "--unarchive", "the one", "--unarchive", c.id.upper(), "--apply", codes=(0,))
    assert out["result"]["unarchived_rows"] == 2 and out["result"]["archived_after"] == 1
    assert dict(hb.sql("SELECT id, archived FROM threads")) == {a.id: 1, b.id: 0, c.id: 0}
    assert a.path.is_file() and not b.path.exists() and not c.path.exists()
    for bad in ("no such name", "a0"):
        proc = run("session_repair.py", hb.root, "--unarchive", bad)
        assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1
        assert "no thread with the id or name" in proc.stderr


def test_a_hard_linked_archived_rollout_is_not_unarchived_and_the_output_says_why(tmp_path):
    """Unarchiving sets the file's mtime: through a hard link it would change the user's copy
    outside the home too. That thread is skipped by name and reason; the other is unarchived."""
    hb = HomeBuilder(tmp_path / ".codex")
    linked, plain = hb.add(archived=True, preview="linked"), hb.add(archived=True, preview="plain")
    outside = tmp_path / "backup"
    outside.mkdir()
    os.link(linked.path, outside / linked.path.name)
    guard = snapshot(outside)
    out = repair(hb.root, "--unarchive", "--apply", codes=(1,))
    assert out["result"]["unarchived_rows"] == 1 and out["result"]["moved"] == 1
    reasons = {s["thread_id"]: s["reason"] for s in out["skipped_sample"]}
    assert list(reasons) == [linked.id] and "hard-linked (2 names for one file" in reasons[linked.id]
    assert snapshot(outside) == guard and linked.path.is_file() and not plain.path.exists()
    lines = run("session_repair.py", hb.root, "--unarchive").stdout.splitlines()
    assert lines[:2] == ["Nothing to repair: every session's index entry already matches its file.",
                         "1 session(s) this repair cannot fix:"]
    assert lines[2].startswith('  "linked", 2025-03-01') and "not unarchived: its rollout is hard-linked" in lines[2]


def test_a_row_whose_archive_flag_disagrees_with_its_file_follows_the_file(tmp_path):
    """Archived (or unarchived) in the desktop app only, so this DB's row is stale: the row follows
    the file's folder, as Codex repairs a row; no file is moved either way."""
    hb = HomeBuilder(tmp_path / ".codex")
    archived_elsewhere = hb.add(preview="archived in the desktop app")
    restored_elsewhere = hb.add(archived=True, preview="unarchived in the desktop app")
    dst = hb.root / "archived_sessions" / archived_elsewhere.path.name
    os.rename(archived_elsewhere.path, dst)
    back = hb.root / "sessions" / "2025" / "03" / "01" / restored_elsewhere.path.name
    os.rename(restored_elsewhere.path, back)
    files = {p: p.stat().st_mtime_ns for p in (dst, back)}
    out = repair(hb.root, "--apply", codes=(0,))
    assert out["result"]["moved"] == 0 and out["result"]["updated_rows"] == 2
    rows = {r[0]: r[1:] for r in hb.sql("SELECT id, archived, rollout_path, archived_at IS NULL FROM threads")}
    assert rows == {archived_elsewhere.id: (1, str(dst), 0), restored_elsewhere.id: (0, str(back), 1)}
    assert {p: p.stat().st_mtime_ns for p in (dst, back)} == files


def test_the_plan_and_result_name_the_daemon_link_they_re_point(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add(cwd="/home/olduser/proj")
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
           ("/home/olduser/.codex/" + str(t.path.relative_to(hb.root)), t.id))
    release = hb.root / "packages" / "app-server-daemon" / "releases" / "0.171.0-x86_64"
    release.mkdir(parents=True)
    link = hb.root / "packages" / "app-server-daemon" / "current"
    link.symlink_to("/home/olduser/.codex/packages/app-server-daemon/releases/0.171.0-x86_64")
    args = ("--remap-prefix", f"/home/olduser/.codex={hb.root}")
    plan = repair(hb.root, *args, codes=(0,))
    assert plan["planned_link_repoints"] == [{"link": str(link), "from": os.readlink(link), "to": str(release)}]
    text = run("session_repair.py", hb.root, *args).stdout
    assert "  re-point packages/app-server-daemon/current (Codex does not start without it)" in text
    text = run("session_repair.py", hb.root, *args, "--apply")
    assert text.returncode == 0 and "re-pointed packages/app-server-daemon/current" in text.stdout
    assert os.readlink(link) == str(release)
    assert run("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    out = repair(hb.root, *args, "--apply", codes=(0,))
    assert out["result"]["links_repointed"] == [str(link)] and os.readlink(link) == str(release)
    text = run("session_repair.py", hb.root, *args, "--apply")
    assert text.returncode == 0 and text.stdout.startswith("Nothing to repair")


# ---- issue 20: the fault walk covers a run with two state DBs ----------------------------------

def _two_db_state(root):
    """Every file's bytes and mtime but the DBs', and every row of both state DBs."""
    files = {k: v for k, v in snapshot(root).items() if not k.startswith(".tmp") and ".sqlite" not in k}
    rows = {}
    for db in ("state_5.sqlite", "sqlite/state_5.sqlite"):
        conn = sqlite3.connect(f"file:{root / db}?mode=ro", uri=True)
        rows[db] = conn.execute("SELECT * FROM threads ORDER BY id").fetchall()
        conn.close()
    return files, rows


@pytest.mark.parametrize("action", ["kill", "sigint"])
def test_a_two_db_repair_faulted_at_every_point_ends_as_before(tmp_path, action):
    """Unarchive, a stale path and orphans in both DBs: a kill (then the undo) or a Ctrl-C (the run
    undoes itself) at every point leaves the files and both DBs' rows exactly as before."""
    import signal
    from test_faults import Pristine, frun, points
    hb = HomeBuilder(tmp_path / ".codex")
    arch = hb.add(archived=True)
    moved = hb.add()
    _desktop_copy(hb)
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", ("/old/.codex/sessions/x/" + moved.path.name, moved.id))
    hb.add(archived=True, preview="CLI only")
    hb.add(write_row=False, preview="in no DB")
    args = ("--import-orphans", "--unarchive", "--apply")
    before = _two_db_state(hb.root)
    pristine = Pristine(hb.root)
    labels, _ = points(tmp_path, "session_repair.py", hb.root, *args)
    assert labels.count("commit") == 2 and labels.count("file") >= 2, labels
    after = _two_db_state(hb.root)
    assert after != before and {r[0] for r in after[1]["sqlite/state_5.sqlite"]} == \
        {r[0] for r in after[1]["state_5.sqlite"]}
    for n in range(1, len(labels) + 1):
        pristine.restore()
        proc = frun("session_repair.py", hb.root, *args, fault=f"{action}:{n}")
        if action == "kill":
            assert proc.returncode == -signal.SIGKILL, (n, proc.stderr)
            rb = frun("rollback.py", hb.root, "--latest", "--apply")
            assert rb.returncode == 0, (n, rb.stdout, rb.stderr)
        elif n < len(labels):
            assert proc.returncode == 2 and "the home is as before" in proc.stderr, (n, proc.stderr)
        else:
            assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
        assert _two_db_state(hb.root) == before, (action, n, labels[n - 1])


def test_a_remap_and_an_unarchive_of_one_thread_are_planned_one_after_the_other(tmp_path):
    """Its rollout is rewritten where it lies in the first run (the unarchive named as the next run's),
    moved out of the archive in the second: each run is undone whole by its own rollback."""
    from test_migrate_rollback import home_state
    hb = HomeBuilder(tmp_path / ".codex")
    arch = hb.add(archived=True, cwd="/home/olduser/proj", preview="archived, moved home")
    plain = hb.add(archived=True, cwd="/work/elsewhere", preview="archived only")
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
           ("/home/olduser/.codex/" + str(arch.path.relative_to(hb.root)), arch.id))
    args = ("--remap-prefix", f"/home/olduser/.codex={hb.root}", "--remap-prefix", "/home/olduser/proj=/home/me/p",
            "--unarchive", "--apply")
    before = home_state(hb.root)
    first = repair(hb.root, *args, codes=(1,))
    reasons = {s["thread_id"]: s["reason"] for s in first["skipped_sample"]}
    assert list(reasons) == [arch.id] and reasons[arch.id].startswith("not unarchived in this run")
    assert first["result"]["unarchived_rows"] == 1 and first["result"]["line1_rewritten"] == 1
    assert hb.sql("SELECT archived, cwd, rollout_path FROM threads WHERE id=?", (arch.id,)) == \
        [(1, "/home/me/p", str(arch.path))]
    rb = run("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert rb.returncode == 0 and json.loads(rb.stdout)["conflicts"] == 0, rb.stdout
    assert home_state(hb.root) == before
    repair(hb.root, *args, codes=(1,))
    second = repair(hb.root, *args, codes=(0,))
    assert second["result"]["unarchived_rows"] == 1 and second["skipped"] == 0
    assert hb.sql("SELECT archived FROM threads") == [(0,), (0,)] and not arch.path.exists()
    for _ in range(2):
        rb = run("rollback.py", hb.root, "--latest", "--apply", "--json")
        assert rb.returncode == 0 and json.loads(rb.stdout)["conflicts"] == 0, rb.stdout
    assert home_state(hb.root) == before and plain.path.is_file()
