"""Every state DB of a home planned as one (issue 20), judged by the real Codex 0.171: the desktop
app's `<home>/sqlite/state_5.sqlite` beside the CLI's, read by an app-server started as the desktop
app starts it (CODEX_SQLITE_HOME=<home>/sqlite), as tests/test_e2e_stories.py's "two state DBs" story."""
import json
import os
import sqlite3
import time

from codex_client import CodexError


def _desktop_app(world, cwd=None):
    (world.home / "sqlite").mkdir(exist_ok=True)
    return world.app(cwd or world.project(), sqlite_home=world.home / "sqlite")


def _desktop_rows(world):
    conn = sqlite3.connect(str(world.home / "sqlite" / "state_5.sqlite"))
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT id, archived, rollout_path, thread_section_id FROM threads")}
    finally:
        conn.close()


def _reads(app, ids):
    """thread/read of each thread in this app-server: "ok", or Codex's error."""
    out = {}
    for t in ids:
        try:
            app.read_thread(t)
            out[t] = "ok"
        except CodexError as exc:
            out[t] = str(exc)
    return out


def _an_hour_later(world):
    """Every rollout last written an hour ago: none is an orphan a Codex may be writing right now."""
    hour_ago = time.time() - 3600
    for folder in ("sessions", "archived_sessions"):
        for dirpath, _dirs, files in os.walk(str(world.home / folder)):
            for f in files:
                os.utime(os.path.join(dirpath, f), (hour_ago, hour_ago))


def _repair(world, *args):
    proc = world.script("session_repair.py", *args, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_desktop_db_rows_follow_the_files_archived_through_the_cli(world):
    """Archived through the CLI after the desktop app indexed it, and one made and archived after:
    the import leaves both archived (none moved) and gives the desktop app rows it can read; with
    --unarchive both come back in both DBs, still readable by the desktop app."""
    ids = world.make_threads(2, prompt="both apps")
    with _desktop_app(world) as app:
        assert sorted(t["id"] for t in app.list_threads()) == sorted(ids)
    later = world.make_threads(1, prompt="cli only")[0]
    world.archive(ids[0], later)  # through the CLI's DB only: the desktop row of ids[0] is stale
    assert set(_desktop_rows(world)) == set(ids)
    _an_hour_later(world)

    res = _repair(world, "--import-orphans", "--apply")["result"]
    assert (res["moved"], res["archived_after"]) == (0, 2)
    rows = _desktop_rows(world)
    assert {t: r[0] for t, r in rows.items()} == {ids[0]: 1, ids[1]: 0, later: 1}
    assert all("/archived_sessions/" in rows[t][1] for t in (ids[0], later))
    with _desktop_app(world) as app:
        assert _reads(app, ids + [later]) == {t: "ok" for t in ids + [later]}
        assert [t["id"] for t in app.list_threads()] == [ids[1]]
        assert sorted(t["id"] for t in app.list_threads(archived=True)) == sorted([ids[0], later])

    res = _repair(world, "--unarchive", "--apply")["result"]
    assert (res["moved"], res["unarchived_rows"], res["archived_after"]) == (2, 2, 0)
    rows = _desktop_rows(world)
    assert {t: r[0] for t, r in rows.items()} == {t: 0 for t in ids + [later]}
    assert all("/sessions/" in r[1] for r in rows.values())
    with _desktop_app(world) as app:
        assert _reads(app, ids + [later]) == {t: "ok" for t in ids + [later]}
        assert sorted(t["id"] for t in app.list_threads()) == sorted(ids + [later])


def test_a_desktop_apps_section_survives_a_moved_home_repair_with_import_orphans(world):
    """The desktop app files a thread into a section; the home moves; the repair with the remap and
    --import-orphans updates the desktop app's rows (it used to take them for orphans, fail, and its
    self-undo deleted the desktop row with its section). The section still lists the thread."""
    ids = world.make_threads(2, prompt="sectioned")
    with _desktop_app(world) as app:
        assert sorted(t["id"] for t in app.list_threads()) == sorted(ids)
        section = app.request("threadSection/create", {"name": "Work"})["section"]["id"]
        app.request("thread/section/move", {"threadId": ids[0], "sectionId": section})
        assert [t["id"] for t in app.list_threads(sectionId=section)] == [ids[0]]
    old = world.home
    new = world.move_home("newuser")
    res = _repair(world, "--remap-prefix", f"{old}={new}", "--import-orphans", "--apply")["result"]
    desk = str(new / "sqlite" / "state_5.sqlite")
    assert res["rows_per_db"] == {str(new / "state_5.sqlite"): 2, desk: 2} and res["inserted_rows"] == 0
    rows = _desktop_rows(world)
    assert {t: (r[0], r[1].startswith(str(new) + "/sessions/"), r[2]) for t, r in rows.items()} == \
        {ids[0]: (0, True, section), ids[1]: (0, True, None)}
    with _desktop_app(world) as app:
        assert [t["id"] for t in app.list_threads(sectionId=section)] == [ids[0]]
        assert _reads(app, ids) == {t: "ok" for t in ids}


def test_the_audit_and_a_dry_run_change_no_byte_or_mtime_of_the_dbs_a_killed_codex_left(world):
    """A 0.171 app-server killed after its commits leaves `-wal` and `-shm` beside its DBs: the
    audit and the repair's dry-run read them as they are, changing no byte or mtime of any DB,
    WAL or shared-memory file."""
    import signal
    from harness import snapshot
    with world.app() as app:
        app.start_thread(world.project(), "killed after this")
        os.killpg(app.proc.pid, signal.SIGKILL)
        app.proc.wait(timeout=10)
    before = snapshot(world.home)
    left = sorted(k for k in before if k.endswith(("-wal", "-shm")))
    assert {"state_5.sqlite-wal", "state_5.sqlite-shm"} <= set(left), left
    time.sleep(0.05)
    world.audit()
    assert world.script("session_repair.py", "--json").returncode in (0, 1)
    after = snapshot(world.home)
    assert {k: v for k, v in after.items() if ".sqlite" in k} == {k: v for k, v in before.items() if ".sqlite" in k}
