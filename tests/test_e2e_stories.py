"""Issue 12's stories, told with the real Codex CLI (0.171.0; the `compat` ones on 0.169.0 too) and
judged on every surface a user looks at: the TUI picker in the project folder and with --all, the
editors' thread/list (current provider, and with cwd), thread/read with its turns, and a resumed
session with one new turn read back."""
import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.tui
EVERY = ("editors", "editors_cwd", "read", "picker", "picker_all")
NONE_MISSING = {k: [] for k in EVERY}


def _ok(proc, codes=(0,)):
    assert proc.returncode in codes, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _rows(world, db=None):
    """id -> (cwd, archived, rollout_path, model_provider) of a state DB (the CLI's by default)."""
    import sqlite3
    conn = sqlite3.connect(str(db or world.home / "state_5.sqlite"))
    try:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            "SELECT id, cwd, archived, rollout_path, model_provider FROM threads")}
    finally:
        conn.close()


def _rollout_cwds(path):
    """(line 1 cwd, cwd of the last turn_context line, turn_context lines)."""
    lines = [json.loads(x) for x in Path(path).read_bytes().splitlines()]
    ctx = [x["payload"]["cwd"] for x in lines if x.get("type") == "turn_context"]
    return lines[0]["payload"]["cwd"], ctx[-1] if ctx else None, len(ctx)


def _cwd_fields(path, prefix):
    """Line numbers whose JSON holds a `"cwd"` field (any depth) under `prefix`."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    from sessionkit.codexfiles.rollout_cwd import line_cwds
    return [n for n, line in enumerate(Path(path).read_bytes().splitlines(), 1)
            if any(c == prefix or c.startswith(prefix + "/") for c in line_cwds(line))]


def _folder_matches_flag(world):
    """Every row's file exists, and it is archived exactly when its file is in archived_sessions/."""
    bad = {}
    for tid, (_cwd, archived, path, _p) in _rows(world).items():
        inside = Path(path).parent == world.home / "archived_sessions" or \
            str(path).startswith(str(world.home / "archived_sessions") + os.sep)
        if not Path(path).is_file() or bool(archived) != inside:
            bad[tid] = (archived, path)
    return bad


# ---------------------------------------------------------------- (a) provider switch


@pytest.mark.compat
def test_story_provider_switch_migrated_and_rolled_back(world):
    """Sessions of the old provider are missing from the editors' list only (the TUI lists every
    provider); the migration brings them back there, a migrated session continues under the new
    provider and stays listed; the rollback is the round trip back."""
    proj = world.project()
    a = world.make_threads(2, "mockA", cwd=proj, prompt="under A")
    b = world.make_threads(1, "mockB", cwd=proj, prompt="under B")
    before = world.surfaces(proj)
    assert (before.editors, before.editors_cwd) == (sorted(b), sorted(b))
    assert before.picker_ids == before.picker_all_ids == sorted(a + b)

    plan = json.loads(_ok(world.script("provider_migrate.py", "--json")).stdout)
    assert (plan["target_provider"], plan["candidates"]) == ("mockB", 2)
    _ok(world.script("provider_migrate.py", "--apply"))
    after = world.surfaces(proj)
    assert after.shown_everywhere(a + b) == NONE_MISSING
    assert after.turns == {t: 1 for t in a + b}
    resumed = world.resume_and_turn(a[0])
    assert resumed.ok, resumed
    assert world.listed_ids() == sorted(a + b)
    assert {t: r[3] for t, r in _rows(world).items()} == {t: "mockB" for t in a + b}

    _ok(world.script("rollback.py", "--latest", "--apply"), (0, 1))
    assert world.listed_ids() == sorted(b)  # the editors' list as before the migration
    assert {t: r[3] for t, r in _rows(world).items() if t in a} == {t: "mockA" for t in a}
    assert world.read_turns(*a) == {a[0]: 2, a[1]: 1}  # the turn added since is kept
    world.set_provider("mockA")  # the round trip: back on the old provider, its sessions listed
    assert world.listed_ids() == sorted(a)


# ---------------------------------------------------------------- (b) moved user folder


@pytest.mark.compat
def test_story_moved_user_folder_with_the_daemon_package(world, codex_version):
    """`mv ~olduser ~newuser` (home and projects): the audit prints the one remap; the repair with
    it makes codex start again and every surface show every session in its new folder; a session
    the user continues stays there; the rollback puts every stored value back."""
    ids = world.make_threads(3, cwd=world.user_project("proj"), prompt="work")
    assert world.picker(world.user_project("proj")).ids == sorted(ids)  # installs the daemon package
    current_rel = "packages/app-server-daemon/current"
    assert (world.home / current_rel).is_symlink()
    moved = world.move_user_folder("newuser")
    home, proj = moved["new_home"], world.user_project("proj")
    old_proj = moved["old_user"] / "projects" / "proj"
    stored_before = _rows(world)
    link_before = os.readlink(home / current_rel)
    if codex_version == "0.171.0":  # references/real-codex.md (c): it does not even start
        with world.tui(proj) as tui:
            tui.wait_for(lambda s: not tui.alive(), 60, "codex to exit")
            assert "daemon executable not found" in " ".join(tui.screen(joined=True).split())

        text = _ok(world.script("session_audit.py"), (1,)).stdout  # said on the audit's first lines
        assert "Codex will not start here: its daemon link points into the old home; the repair fixes it." \
            in text.splitlines()[:text.splitlines().index("")]

    remap = world.audit()["integrity"]["moved_home"]["remap_arg"]  # the one remap the audit prints
    assert remap == f"--remap-prefix {moved['old_user']}={moved['new_user']}"  # the user folder
    arg = remap.split(" ", 1)[1]
    plan = json.loads(_ok(world.script("session_repair.py", "--remap-prefix", arg, "--json")).stdout)
    # each rollout: line 1, and the cwd of its turn_context, world_state and thread_settings_applied
    assert (plan["remap_rows"], plan["planned_rollout_rewrites"]) == (3, 3)
    assert plan["planned_cwd_line_rewrites"] >= 3
    res = json.loads(_ok(world.script("session_repair.py", "--remap-prefix", arg, "--apply", "--json"))
                     .stdout)["result"]
    assert (res["updated_rows"], res["line1_rewritten"], res["symlinks_repointed"]) == (3, 3, 1)
    assert os.readlink(home / current_rel).startswith(str(home) + "/")
    for tid, (cwd, _a, path, _p) in _rows(world).items():
        assert cwd == str(proj) and path.startswith(str(home) + "/")
        assert _rollout_cwds(path) == (str(proj), str(proj), 1)
        assert _cwd_fields(path, str(moved["old_user"])) == []  # world_state, thread_settings_applied too

    s = world.surfaces(proj)  # codex starts again (the TUI), and every surface has them here
    assert s.shown_everywhere(ids) == NONE_MISSING
    assert s.turns == {t: 1 for t in ids}
    assert {r.directory for r in s.picker.rows} == {str(proj)}

    resumed = world.resume_and_turn(ids[0], cwd=world.project("elsewhere"))
    assert resumed.ok, resumed
    path = _rows(world)[ids[0]][2]
    assert _rollout_cwds(path) == (str(proj), str(proj), 2)  # the new turn took the new folder
    again = world.surfaces(proj)
    assert again.shown_everywhere(ids) == NONE_MISSING  # the continued session STAYS listed here
    assert again.turns == {ids[0]: 2, ids[1]: 1, ids[2]: 1}
    assert _rows(world)[ids[0]][0] == str(proj)

    rb = _ok(world.script("rollback.py", "--latest", "--apply"), (0, 1))
    after = _rows(world)
    assert {t: (r[0], r[2]) for t, r in after.items()} == \
        {t: (r[0], r[2]) for t, r in stored_before.items()}, rb.stdout
    assert os.readlink(home / current_rel) == link_before
    for tid in ids:  # line 1 and every turn_context line say the old folder again ...
        now = home / os.path.relpath(after[tid][2], moved["old_home"])
        first, last, n = _rollout_cwds(now)
        assert first == str(old_proj)
        # ... except the turn the user added after the repair, kept as it was written
        assert (last, n) == ((str(proj), 2) if tid == ids[0] else (str(old_proj), 1))


# ---------------------------------------------------------------- (c) archive, repair, continue, roll back


def test_story_archive_repair_continue_rollback_never_splits_a_thread(world):
    proj = world.project()
    ids = world.make_threads(3, cwd=proj, prompt="arc")
    world.archive(ids[0], ids[1])
    assert world.listed_ids() == [ids[2]]
    res = json.loads(_ok(world.script("session_repair.py", "--unarchive", "--apply", "--json")).stdout)["result"]
    assert (res["unarchived_rows"], res["moved"], res["archived_after"]) == (2, 2, 0)
    s = world.surfaces(proj)
    assert s.shown_everywhere(ids) == NONE_MISSING
    assert world.resume_and_turn(ids[0]).ok  # the user continues one of them

    rb = _ok(world.script("rollback.py", "--latest", "--apply"), (0, 1))
    assert _folder_matches_flag(world) == {}, rb.stdout
    rows = _rows(world)
    # the continued thread changed since the repair: left alone whole (active, in sessions/);
    # the other goes back to the archive, file and row together
    assert (rows[ids[0]][1], rows[ids[1]][1], rows[ids[2]][1]) == (0, 1, 0)
    assert world.read_turns(*ids) == {ids[0]: 2, ids[1]: 1, ids[2]: 1}  # every thread readable
    after = world.surfaces(proj)
    assert after.editors == after.picker_ids == sorted([ids[0], ids[2]])
    assert world.picker(proj, archived=True).ids == [ids[1]]
    # real Codex resumes no archived thread ("... is archived. Run `codex unarchive <id>` ...");
    # unarchived the way it says, it continues
    refused = world.resume_and_turn(ids[1])
    assert "is archived" in refused.error and f"codex unarchive {ids[1]}" in refused.error
    world.unarchive(ids[1])
    assert world.resume_and_turn(ids[1]).ok


# ---------------------------------------------------------------- (d) daemon left running


def _daemon_left_running(world):
    """Two mockA threads, the provider switched to mockB, and a TUI that resumed the first and quit:
    its managed daemon (holding that thread's writer lock) and pid-update-loop keep running."""
    ids = world.make_threads(2, "mockA", prompt="daemon")
    world.set_provider("mockB")
    with world.tui(world.project(), "resume", ids[0], keep_daemon=True) as tui:
        tui.wait_for(lambda s: "daemon 0" in s, 60, "the resumed session")
    assert sorted(p.kind for p in world.home_processes()) == ["managed-daemon", "pid-update-loop"]
    return ids


def test_story_daemon_left_running_is_named_and_stopping_it_is_enough(world):
    """The TUI's daemon holds the resumed thread's writer lock: the dry-run skips that thread and
    says why; --apply refuses and names the daemon with its stop command; after
    `codex app-server daemon stop` the run proceeds although the pid-update-loop still runs."""
    ids = _daemon_left_running(world)
    dry = json.loads(_ok(world.script("provider_migrate.py", "--json"), (1,)).stdout)
    skipped = {s["thread_id"]: s["reason"] for s in dry["skipped_sample"]}
    assert list(skipped) == [ids[0]] and "live thread" in skipped[ids[0]]
    assert "codex app-server daemon stop" in skipped[ids[0]]
    assert dry["candidates"] == 1
    refused = world.script("provider_migrate.py", "--apply")
    assert refused.returncode == 2 and "daemon" in refused.stderr
    assert "codex app-server daemon stop" in refused.stderr
    assert {r[3] for r in _rows(world).values()} == {"mockA"}  # nothing changed
    assert json.loads(_ok(world.stop_daemon()).stdout)["status"] == "stopped"
    assert [p.kind for p in world.home_processes()] == ["pid-update-loop"]
    _ok(world.script("provider_migrate.py", "--apply", "--json"))  # the loop writes no sessions
    assert {r[3] for r in _rows(world).values()} == {"mockB"}
    world.stop_home_processes()
    s = world.surfaces(world.project())
    assert s.shown_everywhere(ids) == NONE_MISSING


def test_story_daemon_left_running_is_said_whole_on_the_audit_first_screen(world):
    """Real 0.171: the audit's first lines name the daemon the TUI left running, what it holds and
    the one command that stops it, whole (no line cut with '...'), and count the session it holds
    open as not checked (before: `history_skipped_live` only in --json)."""
    ids = _daemon_left_running(world)
    report = json.loads(_ok(world.script("session_audit.py", "--json"), (1,)).stdout)
    assert report["integrity"]["history_skipped_live"] == 1
    assert report["codex_running"]["running"] and ids[0] in report["codex_running"]["live_threads"]
    text = _ok(world.script("session_audit.py"), (1,)).stdout
    lines = text.splitlines()
    top = lines[:lines.index("")]
    i = top.index("Codex is running on this home; close it before any --apply:")
    said = " ".join(x.strip() for x in top[i + 1:] if x.startswith("  "))
    assert "daemon" in said and "codex app-server daemon stop" in said
    stops = set()
    for holder in report["codex_running"]["holders"]:  # each said whole, in the words locks.py gives
        words, _sep, stop = holder.partition("; stop it with: ")
        assert " ".join(words.split()) in said
        if stop:
            stops.add(stop)
    assert stops and all(f"    {stop}" in top for stop in stops)  # each stop command on a line of its own
    assert text.count("codex app-server daemon stop") == 1
    assert "1 session open in Codex was not checked (audit again once Codex is closed)." in top
    assert not [x for x in lines if x.rstrip().endswith("...")]
    assert len(lines) <= 40
    _ok(world.stop_daemon())
    world.stop_home_processes()


# ---------------------------------------------------------------- (e) two state DBs


def _desktop_app(world, cwd=None):
    """An app-server on the desktop app's DB (CODEX_SQLITE_HOME=<home>/sqlite)."""
    (world.home / "sqlite").mkdir(exist_ok=True)
    return world.app(cwd or world.project(), sqlite_home=world.home / "sqlite")


def test_story_two_state_dbs_both_show_the_sessions_after_migration_and_repair(world):
    proj = world.project()
    ids = world.make_threads(3, "mockA", cwd=proj, prompt="two dbs")
    with _desktop_app(world) as app:  # the desktop app indexes the same rollouts in its own DB
        assert sorted(t["id"] for t in app.list_threads()) == sorted(ids)
        # real Codex: its paginated history (<sqlite_home>/thread_history_1.sqlite) is built only
        # by the process that writes or resumes a thread, so a read there shows no turns yet
        assert {t: len(app.read_thread(t)["turns"]) for t in ids} == {t: 0 for t in ids}
    desktop = world.home / "sqlite" / "state_5.sqlite"
    assert set(_rows(world, desktop)) == set(ids)
    world.set_provider("mockB")
    with _desktop_app(world) as app:
        assert app.list_threads() == []
    assert world.listed_ids() == []

    res = json.loads(_ok(world.script("provider_migrate.py", "--apply", "--json")).stdout)["result"]
    assert res["rows_per_db"] == {str(world.home / "state_5.sqlite"): 3, str(desktop): 3}
    assert world.listed_ids() == sorted(ids)
    with _desktop_app(world, proj) as app:
        assert sorted(t["id"] for t in app.list_threads()) == sorted(ids)
        assert sorted(t["id"] for t in app.list_threads(cwd=str(proj))) == sorted(ids)
        assert {t: len(app.read_thread(t)["turns"]) for t in ids} == {t: 0 for t in ids}  # as before

    world.archive(ids[0])  # archived through the CLI's DB only: the desktop row is stale now
    res = json.loads(_ok(world.script("session_repair.py", "--unarchive", "--apply", "--json")).stdout)["result"]
    assert res["rows_per_db"][str(desktop)] >= 1 and res["moved"] == 1
    assert {t: r[1:3] for t, r in _rows(world, desktop).items()} == {t: r[1:3] for t, r in _rows(world).items()}
    s = world.surfaces(proj)
    assert s.shown_everywhere(ids) == NONE_MISSING
    with _desktop_app(world, proj) as app:
        assert sorted(t["id"] for t in app.list_threads()) == sorted(ids)
        app.request("thread/resume", {"threadId": ids[0]})  # builds its history there, from byte 0
        assert app.turn(ids[0], "from the desktop app")["turn"]["status"] == "completed"
        assert len(app.read_thread(ids[0])["turns"]) == 2


# ---------------------------------------------------------------- the fact behind the remap


def _rewrite_kinds(path, kinds, old, new):
    """Replace `old` by `new` (same length) in the lines of these kinds only (an event_msg by its
    payload type)."""
    out = []
    for raw in Path(path).read_bytes().splitlines(keepends=True):
        obj = json.loads(raw)
        kind = obj["payload"].get("type") if obj.get("type") == "event_msg" else obj.get("type")
        out.append(raw.replace(old.encode(), new.encode()) if kind in kinds else raw)
    Path(path).write_bytes(b"".join(out))


def test_real_codex_resume_takes_the_cwd_of_the_last_thread_settings_applied(world):
    """Row and line 1 remapped by hand after a same-length move, then the cwd of one kind of later
    line each: a resumed turn's folder is the `thread_settings_applied` event's
    (`payload.thread_settings.cwd`), not turn_context's nor world_state's. The repair rewrites all
    three, so no line of a remapped rollout names the old folder."""
    from test_e2e_tui import remap_by_hand
    ids = world.make_threads(4, cwd=world.user_project("proj"), prompt="work")
    moved = world.move_user_folder("resu")
    old, new = str(moved["old_user"]), str(moved["new_user"])
    remap_by_hand(world, old, new)
    paths = dict(world.db("SELECT id, rollout_path FROM threads"))
    kinds = [("turn_context",), ("world_state",), ("thread_settings_applied",), ("turn_context", "world_state")]
    for tid, k in zip(ids, kinds):
        _rewrite_kinds(paths[tid], k, old, new)
    for tid in ids:
        assert world.resume_and_turn(tid, cwd=world.project("elsewhere")).ok
    took_new = {"+".join(k): _rollout_cwds(paths[t])[1].startswith(new + "/") for t, k in zip(ids, kinds)}
    assert took_new == {"turn_context": False, "world_state": False, "thread_settings_applied": True,
                        "turn_context+world_state": False}
