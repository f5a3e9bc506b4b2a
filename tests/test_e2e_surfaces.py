"""The audit's per-surface numbers equal what the real Codex lists: the editors' `thread/list`
(current provider; and with `cwd`), the TUI picker's filters (`cwd`, every provider) and `--all`,
a DB-only listing, and an app-server started on the desktop app's second state DB."""
import json
import os
import shlex
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from codex_client import CODEX_VERSION, AppServer
from sessionkit.diagnose import surfaces
from sessionkit.codexfiles.home import open_home
from sessionkit.diagnose.snapshot import gather
from homebuilder import compact


def _only_line1(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\n") + 1])


def _started_and_quit(world, like: str) -> str:
    """A rollout holding only a session_meta line and no row, as the TUI leaves when quit at once."""
    src = Path(world.db("SELECT rollout_path FROM threads WHERE id=?", (like,))[0][0])
    tid = str(uuid.uuid4())
    obj = json.loads(src.read_bytes().split(b"\n", 1)[0])
    obj["payload"]["id"] = obj["payload"]["session_id"] = tid
    (src.parent / src.name.replace(like, tid)).write_text(compact(obj) + "\n", encoding="utf-8")
    return tid


def _path(world, tid: str) -> Path:
    return Path(world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0])


def assert_surfaces_match_codex(world, audit: dict, cwd: str, tui: bool = True) -> None:
    """Every surface the audit reports equals what real Codex shows: a DB-only listing, the TUI
    picker in `cwd` and with --all (read through a terminal), the editors' thread/list (and with
    cwd). The listings that index rollouts come last: they add rows the others would then show."""
    s = audit["surfaces"]
    vis_cwd = {"cwd": audit["visibility"]["cwd"]} if audit["visibility"]["cwd"] else {}
    db_only = world.listed_ids(useStateDbOnly=True, **vis_cwd)
    assert audit["visibility"]["visible_db_only"] == len(db_only), (audit["visibility"], db_only)
    codex = {}
    if tui and world.version == CODEX_VERSION:  # the picker's rules were measured on the pinned release
        codex["tui"] = world.picker(Path(cwd)).ids
        codex["tui_all"] = world.picker(Path(cwd), all=True).ids
    codex["editors"] = world.listed_ids()
    codex["editors_cwd"] = world.listed_ids(cwd=cwd)
    for name, shown in codex.items():
        assert s[name]["visible"] == len(shown), (name, s[name], shown)
        hidden = {t.lower() for ids in s[name]["hidden_sample"].values() for t in ids}
        assert not hidden & {t.lower() for t in shown}, (name, s[name], shown)  # none it says is missing


def listed(world, surface: str, cwd=None) -> list:
    """The ids the audit's library says a surface lists (the report itself gives counts)."""
    inputs = gather(open_home(str(world.home)))
    return sorted(t.lower() for t in surfaces.listed(inputs, surface, inputs.home.config.model_provider,
                                                     str(cwd) if cwd is not None else None))


@pytest.mark.compat
@pytest.mark.tui
def test_every_surface_equals_codex_with_unlisted_sessions(world):
    here = world.project("here")
    mine = world.make_threads(3, cwd=here)
    world.make_threads(1, cwd=world.project("there"))
    other = world.make_threads(1, "mockB", cwd=here)
    world.set_provider("mockA")
    world.make_exec()
    _only_line1(_path(world, mine[0]))  # a row whose rollout holds only line 1
    bom = _path(world, mine[1])
    bom.write_bytes(b"\xef\xbb\xbf" + bom.read_bytes())
    quit_at_once = _started_and_quit(world, mine[2])
    audit = world.audit("--cwd", str(here))
    s = audit["surfaces"]
    # the editors: mine[2] only (line 1 read; mockB is another provider)
    assert listed(world, "editors", here) == [mine[2]]
    assert s["editors_cwd"]["hidden"]["only_session_meta"] == 2 and s["editors_cwd"]["hidden"]["line1_unreadable"] == 1
    assert quit_at_once.lower() in [t.lower() for t in s["editors_cwd"]["hidden_sample"]["only_session_meta"]]
    assert s["editors"]["hidden"]["other_provider"] == 1 and s["editors"]["visible"] == 2
    # the TUI picker lists rows of any provider: the line-1-only row too, never the row-less rollout
    assert listed(world, "tui", here) == sorted([mine[0], mine[2], other[0]])
    assert s["tui"]["hidden_sample"]["line1_unreadable"] == [mine[1]]
    assert [t.lower() for t in s["tui"]["hidden_sample"]["rollout_not_indexed"]] == [quit_at_once.lower()]
    assert_surfaces_match_codex(world, audit, str(here))


@pytest.mark.tui
def test_rows_the_picker_drops_and_the_editors_keep(world):
    """Empty preview, a rollout_path that names no sessions/ folder, a row-only cwd change."""
    here, there = world.project("here"), world.project("there")
    ids = world.make_threads(4, cwd=here)
    world.db("UPDATE threads SET preview='' WHERE id=?", (ids[0],))
    world.db("UPDATE threads SET rollout_path=? WHERE id=?", ("/nonexistent/" + _path(world, ids[1]).name, ids[1]))
    world.db("UPDATE threads SET cwd=? WHERE id=?", (str(there), ids[2]))
    audit = world.audit("--cwd", str(here))
    s = audit["surfaces"]
    assert listed(world, "tui", here) == [ids[3]]
    assert s["tui"]["hidden_sample"] == {"empty_preview": [ids[0]], "stale_rollout_path": [ids[1]], "cwd": [ids[2]]}
    assert listed(world, "editors", here) == sorted(ids)
    assert_surfaces_match_codex(world, audit, str(here))


@pytest.mark.compat
@pytest.mark.tui
def test_moved_user_folder_surfaces_equal_codex_before_and_after_the_printed_repair(world):
    ids = world.make_threads(3, cwd=world.user_project("proj"))
    moved = world.move_user_folder("newuser")  # mv ~ /home/newuser: the home and the projects
    user, new_user = moved["old_user"], moved["new_user"]
    new_proj = world.user_project("proj")
    audit = world.audit("--cwd", str(new_proj))
    m = audit["integrity"]["moved_home"]
    assert m["remap_arg"] == f"--remap-prefix {user}={new_user}"
    assert (m["rows"], m["cwd_rows"], m["cwd_rows_found_at_new_prefix"]) == (3, 3, 3)
    assert audit["surfaces"]["tui"]["visible"] == 0
    assert audit["surfaces"]["tui"]["hidden"]["cwd_folder_gone"] == 3
    assert listed(world, "tui_all") == sorted(ids)
    assert_surfaces_match_codex(world, audit, str(new_proj))
    fix = world.script("session_repair.py", *m["remap_arg"].split(), "--apply")
    assert fix.returncode in (0, 1), fix.stderr
    after = world.audit("--cwd", str(new_proj))
    assert after["integrity"]["rollout_path_outside_home_count"] == 0
    assert_surfaces_match_codex(world, after, str(new_proj))


def test_the_desktop_apps_db_is_judged_as_an_app_server_on_it_lists(world):
    ids = world.make_threads(4)
    desktop_dir = world.home / "sqlite"
    desktop_dir.mkdir()
    src = sqlite3.connect(str(world.home / "state_5.sqlite"))
    dst = sqlite3.connect(str(desktop_dir / "state_5.sqlite"))
    with dst:
        src.backup(dst)
    src.close()
    with dst:
        dst.execute("UPDATE threads SET archived=1, archived_at=1 WHERE id=?", (ids[0],))
        dst.execute("UPDATE threads SET preview='' WHERE id=?", (ids[1],))
    dst.close()
    audit = world.audit()
    other = audit["other_state_dbs"][0]
    assert other["path"] == str(desktop_dir / "state_5.sqlite")
    args = ["-c", f'sqlite_home="{desktop_dir}"']
    with AppServer(world.home, cwd=world.project(), extra_args=args) as app:
        db_only = sorted(t["id"] for t in app.list_threads(useStateDbOnly=True))
        listed = sorted(t["id"] for t in app.list_threads())
        turns = {t: len(app.read_thread(t)["turns"]) for t in listed}
    # its history DB is its own: every listed paginated thread reads 0 turns there, as the audit says
    assert sorted(t for t, n in turns.items() if n == 0) == sorted(ids)
    assert other["history"]["paginated_without_history"] == 4
    assert other["visibility"]["visible_db_only"] == len(db_only), (other["visibility"], db_only)
    assert other["surfaces"]["editors"]["visible"] == len(listed), (other["surfaces"]["editors"], listed)
    # flagged archived in that DB but its file is in sessions/: the app lists it, a DB-only list does not
    assert ids[0] in listed and ids[0] not in db_only
    assert other["visibility"]["db_only_hidden_sample"]["db_archived"] == [ids[0]]
    # the CLI's own DB still lists all four
    assert audit["surfaces"]["editors"]["visible"] == len(world.listed_ids()) == 4


def _daemon_start(world) -> None:
    proc = world.codex("app-server", "daemon", "start")
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.compat
def test_the_real_managed_daemon_is_found_named_refused_for_and_stopped(world):
    world.make_threads(2)
    world.set_provider("mockB")
    _daemon_start(world)
    try:
        audit = world.audit()
        run = audit["codex_running"]
        assert run["running"] is True
        stop = run["daemon_stop"]
        assert stop.startswith(f"CODEX_HOME={world.home} ") and stop.endswith(" app-server daemon stop")
        assert any("--managed-daemon" in h for h in run["holders"])
        assert any("pid-update-loop" in h and "never writes sessions" in h for h in run["not_writing"])
        refused = world.script("provider_migrate.py", "--apply")
        assert refused.returncode == 2 and "app-server daemon stop" in refused.stderr
        # the command the audit gives stops the daemon; the updater loop stays and blocks nothing
        env_word, *cmd = shlex.split(stop)
        done = subprocess.run(cmd, env={**os.environ, "CODEX_HOME": env_word.split("=", 1)[1]},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        after = world.audit()["codex_running"]
        assert after["running"] is False and after["daemon_stop"] is None
        assert len(after["not_writing"]) == 1 and "pid-update-loop" in after["not_writing"][0]
        applied = world.script("provider_migrate.py", "--apply", "--json")
        assert applied.returncode == 0, applied.stderr
        assert json.loads(applied.stdout)["result"]["updated_rows"] == 2
    finally:
        world.stop_home_processes()


@pytest.mark.tui
def test_a_thread_the_daemon_holds_is_skipped_with_the_daemon_named(world):
    """The TUI resumed a thread and quit: the daemon it left holds the thread's writer lock."""
    ids = world.make_threads(2, prompt="work")
    world.set_provider("mockB")
    with world.tui(world.project(), "resume", ids[0], keep_daemon=True) as tui:
        tui.wait_for(lambda s: "work 0" in s, 60, "the resumed session")
    audit = world.audit()
    run = audit["codex_running"]
    assert ids[0] in run["live_threads"] and run["running"] is True
    stop = run["daemon_stop"]
    assert stop and stop.endswith("app-server daemon stop")
    plan = json.loads(world.script("provider_migrate.py", "--json").stdout)
    assert plan["candidates"] == 1
    (skip,) = plan["skipped_sample"]
    assert skip["thread_id"] == ids[0]
    assert skip["reason"].startswith("live thread (its writer lock is held): never touched; held by pid ")
    assert skip["reason"].endswith(f", codex app-server --managed-daemon; stop it with: {stop}")
    env_word, *cmd = shlex.split(stop)
    done = subprocess.run(cmd, env={**os.environ, "CODEX_HOME": env_word.split("=", 1)[1]},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(world.script("provider_migrate.py", "--json").stdout)
    assert (plan["candidates"], plan["skipped"]) == (2, 0)


@pytest.mark.tui
def test_moved_home_daemon_package_is_repointed_as_the_audit_says(world):
    ids = world.make_threads(1, cwd=world.user_project("proj"), prompt="work")
    assert world.picker(world.user_project("proj")).ids == ids  # the TUI installs its daemon package
    moved = world.move_user_folder("newuser")
    proj = world.user_project("proj")
    pkg = world.audit()["daemon_package"]
    current = moved["new_home"] / "packages/app-server-daemon/current"
    assert pkg["path"] == str(current) and pkg["target"].startswith(str(moved["old_home"]))
    assert pkg["target_exists"] is False and pkg["repoint_to"].startswith(str(moved["new_home"]))
    with world.tui(proj) as tui:
        tui.wait_for(lambda s: not tui.alive(), 60, "codex to exit")
        assert "daemon executable not found" in " ".join(tui.screen(joined=True).split())
    current.unlink()
    current.symlink_to(pkg["repoint_to"])  # what the audit says, done by hand (the repair's job)
    assert world.audit()["daemon_package"]["problem"] is None
    assert world.picker(proj, all=True).ids == ids  # the TUI starts again


@pytest.mark.tui
def test_a_compressed_home_every_surface_equals_codex(world):
    """Codex 0.171's `rollout/compress` leaves `rollout-*.jsonl.zst` (rows keep the `.jsonl` path): every
    surface still lists them, and so does the audit (it once said the editors show 0)."""
    from test_e2e_compressed import compress
    here = world.project("here")
    mine = world.make_threads(3, cwd=here)
    other = world.make_threads(1, "mockB", cwd=here)
    world.set_provider("mockA")
    compress(world)
    audit = world.audit("--cwd", str(here))
    s = audit["surfaces"]
    assert s["editors"]["visible"] == 3 and s["editors"]["hidden"]["other_provider"] == 1
    assert listed(world, "tui", here) == sorted(mine + other)
    assert audit["integrity"]["compressed_rollouts_count"] == 4 and audit["integrity"]["stale_rows_count"] == 0
    assert_surfaces_match_codex(world, audit, str(here))
