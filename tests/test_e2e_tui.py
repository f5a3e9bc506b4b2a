"""The real TUI (`codex resume`) read through a pseudo-terminal, and the harness that drives it."""
import os
import re
import time

import pytest

from codex_client import ALL_VERSIONS, CODEX_VERSION, COMPAT_VERSIONS
from harness import REPO

pytestmark = pytest.mark.tui


def test_makefile_installs_the_versions_the_tests_run():
    """One list of versions: the Makefile installs exactly what the fixtures parametrize."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    pinned = re.search(r"^CODEX_VERSION\s*:?=\s*(\S+)", text, re.M).group(1)
    compat = re.search(r"^CODEX_COMPAT_VERSIONS\s*:?=\s*(.*)$", text, re.M).group(1).split()
    assert (pinned, tuple(compat)) == (CODEX_VERSION, COMPAT_VERSIONS)
    assert ALL_VERSIONS[0] == CODEX_VERSION


@pytest.mark.compat
def test_picker_lists_the_folders_sessions_with_their_ids(world):
    here = world.make_threads(2, cwd=world.project("here"), prompt="here")
    there = world.make_threads(1, cwd=world.project("there"), prompt="there")
    with world.tui(world.project("here")) as tui:
        pick = tui.picker()
        assert tui.alive()
        # the picker is served by a managed daemon the TUI started (0.169 and 0.171)
        assert {"managed-daemon", "pid-update-loop"} <= {p.kind for p in world.home_processes()}
    assert pick.total == 2 and pick.filter == "Cwd" and pick.status_tab == "Active"
    assert sorted(pick.titles) == ["here 0", "here 1"]
    assert pick.ids == sorted(here)
    assert {r.directory for r in pick.rows} == {str(world.project("here"))}
    pick_all = world.picker(world.project("here"), all=True)
    assert pick_all.filter == "All"
    assert pick_all.ids == sorted(here + there)
    assert world.home_processes() == []  # the daemon the TUI started is gone


def _line1_cwd(world, tid):
    import json
    path = world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0]
    with open(path, "rb") as fh:
        return json.loads(fh.readline())["payload"]["cwd"]


def _last_turn_context_cwd(world, tid):
    import json
    path = world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0]
    cwd = None
    with open(path, "rb") as fh:
        for line in fh:
            obj = json.loads(line)
            if obj.get("type") == "turn_context":
                cwd = obj["payload"].get("cwd")
    return cwd


def remap_by_hand(world, old: str, new: str):
    """What the repair is to do, done by hand for the probes: every row's paths and line 1
    (same byte length, so no offset moves)."""
    assert len(old.encode()) == len(new.encode())
    for tid, path, cwd in world.db("SELECT id, rollout_path, cwd FROM threads"):
        path = path.replace(old, new, 1)
        world.db("UPDATE threads SET rollout_path=?, cwd=? WHERE id=?",
                 (path, cwd.replace(old, new, 1), tid))
        with open(path, "r+b") as fh:
            first = fh.readline()
            fixed = first.replace(old.encode(), new.encode())
            fh.seek(0)
            fh.write(fixed)
    current = world.home / "packages" / "app-server-daemon" / "current"
    if current.is_symlink():
        target = os.readlink(current).replace(old, new, 1)
        current.unlink()
        current.symlink_to(target)


def test_real_codex_continued_session_takes_the_last_turn_context_cwd(world):
    """references/real-codex.md (a): after a move, a remap of the row and line 1 is not enough
    for a session the user continues: resume takes the cwd of the last turn_context line."""
    ids = world.make_threads(3, cwd=world.user_project("proj"), prompt="work")
    moved = world.move_user_folder("resu")  # same length as "user": no offset moves
    new_proj = world.user_project("proj")
    old, new = str(moved["old_user"]), str(moved["new_user"])
    remap_by_hand(world, old, new)  # row cwd + rollout_path, line 1 (cwd, workspace roots)
    every_line = world.db("SELECT rollout_path FROM threads WHERE id=?", (ids[1],))[0][0]
    data = open(every_line, "rb").read()
    open(every_line, "wb").write(data.replace(old.encode(), new.encode()))  # turn_context too
    before = world.surfaces(new_proj)
    assert before.shown_everywhere(ids) == {k: [] for k in ("editors", "editors_cwd", "read",
                                                             "picker", "picker_all")}
    elsewhere = world.project("elsewhere")
    assert world.resume_and_turn(ids[0], cwd=new_proj).ok  # app-server started in the new folder
    assert world.resume_and_turn(ids[1], cwd=elsewhere).ok  # ... or anywhere: its cwd is unused
    with world.app(elsewhere) as app:
        app.request("thread/resume", {"threadId": ids[2], "cwd": str(new_proj)})  # an override
        app.turn(ids[2], "with a cwd override")
    rows = dict(world.db("SELECT id, cwd FROM threads"))
    assert rows == {ids[0]: str(world.base / "user/projects/proj"), ids[1]: str(new_proj),
                    ids[2]: str(new_proj)}
    assert [_line1_cwd(world, t) for t in ids] == [str(new_proj)] * 3
    assert _last_turn_context_cwd(world, ids[0]) == str(world.base / "user/projects/proj")
    # the TUI picker (and a DB-only listing) filter on the row: the continued session is gone
    # from its new folder; the editors' default cwd listing reads line 1 and still has it
    after = world.surfaces(new_proj)
    assert after.picker_ids == sorted(ids[1:])
    assert after.editors_cwd == sorted(ids)
    assert world.listed_ids(cwd=str(new_proj), useStateDbOnly=True) == sorted(ids[1:])
    assert dict(world.db("SELECT id, cwd FROM threads"))[ids[0]] == str(world.base / "user/projects/proj")


def _held(path) -> bool:
    """A live holder of this lock file (a non-blocking shared flock fails)."""
    import fcntl
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _open_files(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def _held_arg0_locks_reach(home, want: int, timeout: float) -> int:
    """The number of held arg0 locks in the home once it equals `want`, or when time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        n = len([p for p in home.glob("tmp/arg0-linux/*/.lock") if _held(p)])
        if n == want or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def test_real_codex_tui_leaves_a_daemon_that_holds_the_resumed_threads_lock(world):
    """references/real-codex.md (b): what the TUI leaves running, how to recognise it, and what
    `codex app-server daemon stop` stops."""
    import hashlib
    import json
    tid = world.make_threads(1, prompt="work")[0]
    lock = world.home / "thread-writer-locks" / f"{tid}.lock"
    with world.tui(world.project(), "resume", tid, keep_daemon=True) as tui:
        tui.wait_for(lambda s: "work 0" in s and "OpenAI Codex (v0.171.0)" in s, 60, "the session")
        assert _held(lock)
    procs = {p.kind: p for p in world.home_processes()}
    assert sorted(procs) == ["managed-daemon", "pid-update-loop"]
    daemon, loop = procs["managed-daemon"], procs["pid-update-loop"]
    release = world.home / "packages/app-server-daemon/releases/0.171.0-x86_64-unknown-linux-musl"
    assert daemon.exe == loop.exe == str(release / "bin/codex")
    assert daemon.argv[1:] == ["app-server", "--listen", "unix://", "--analytics-default-enabled",
                               "--managed-daemon"]
    assert loop.argv[1:] == ["app-server", "daemon", "pid-update-loop"]
    assert daemon.home == loop.home == str(world.home)  # CODEX_HOME in /proc/<pid>/environ
    assert _held(lock)  # the thread the TUI resumed stays locked by the daemon after the TUI quit
    state = json.loads((world.home / "app-server-daemon/daemon.pid").read_text())
    updater = json.loads((world.home / "app-server-daemon/daemon-updater.pid").read_text())
    assert (state["pid"], updater["pid"]) == (daemon.pid, loop.pid)
    sock = world.home / "app-server-control/app-server-control.sock"
    digest = hashlib.sha256(str(sock).encode()).hexdigest()
    assert os.readlink(sock) == f"/tmp/codex-daemon-{os.getuid()}/{digest}"
    assert f"/tmp/codex-daemon-{os.getuid()}/{digest}.lock" in _open_files(daemon.pid)
    assert str(world.home / "state_5.sqlite") in _open_files(daemon.pid)
    assert not [f for f in _open_files(loop.pid) if ".sqlite" in f or "/sessions/" in f]
    # One each: the daemon and its update loop. The loop takes its lock a moment after its process
    # appears (CI once saw 1 here), so the count is awaited, never assumed.
    assert _held_arg0_locks_reach(world.home, 2, timeout=20) == 2

    out = world.stop_daemon()
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "stopped"
    deadline = time.monotonic() + 20  # "stopped" is printed before the daemon has exited
    while [p.kind for p in world.home_processes()] != ["pid-update-loop"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p.kind for p in world.home_processes()] == ["pid-update-loop"]
    assert not lock.exists() and not os.path.lexists(sock)
    assert _held_arg0_locks_reach(world.home, 1, timeout=20) == 1


def test_real_codex_moved_home_needs_the_daemon_package_repointed(world):
    """references/real-codex.md (c): `packages/app-server-daemon/current` is an absolute symlink;
    after `mv` of the user folder every TUI start fails until it points into the new home."""
    tid = world.make_threads(1, cwd=world.user_project("proj"), prompt="work")[0]
    assert world.picker(world.user_project("proj")).ids == [tid]  # installs the daemon package
    moved = world.move_user_folder("newuser")
    new_home, proj = moved["new_home"], world.user_project("proj")
    current = new_home / "packages/app-server-daemon/current"
    release = "packages/app-server-daemon/releases/0.171.0-x86_64-unknown-linux-musl"
    assert os.readlink(current) == str(moved["old_home"] / release)
    with world.tui(proj) as tui:
        tui.wait_for(lambda s: not tui.alive(), 60, "codex to exit")
        assert tui.exit_status() == 1
        flat = " ".join(tui.screen(joined=True).split())
    assert (f"Error: daemon executable not found at {current}/bin/codex; repair the existing "
            "installation, or run `codex app-server daemon start` to install a missing daemon") in flat
    assert "rerun the same command with --no-daemon" in flat
    start = world.codex("app-server", "daemon", "start", cwd=proj)
    assert start.returncode != 0 and "daemon executable not found" in start.stderr
    assert world.codex("exec", "--skip-git-repo-check", "hi", cwd=proj).returncode == 0
    current.unlink()
    current.symlink_to(new_home / release)
    pick = world.picker(proj)  # starts again; the row's cwd still names the old folder
    assert pick.rows == [] and "No sessions yet" in pick.empty_text
    assert world.picker(proj, all=True).ids == [tid]


@pytest.mark.compat
def test_real_codex_rejects_a_legacy_profile_and_reads_profile_files(world, codex_version):
    """references/real-codex.md (d): `profile = "x"` in config.toml stops every start on 0.169 and
    0.171; `--profile x` reads <home>/x.config.toml over config.toml."""
    from harness import provider_config
    base = provider_config("mockA", world.server.base_url, world.PROVIDERS)
    cfg = world.home / "config.toml"
    cfg.write_text(base.replace('model = "gpt-5"', 'model = "gpt-5"\nprofile = "x"', 1)
                   + '\n[profiles.x]\nmodel_provider = "mockB"\n', encoding="utf-8")
    r = world.codex("exec", "--skip-git-repo-check", "hi")
    assert r.returncode == 1
    assert ('Error: legacy `profile = "x"` config is no longer supported; use `--profile x` with '
            '`x.config.toml` instead') in r.stderr
    r = world.codex("exec", "--skip-git-repo-check", "--profile", "x", "hi")
    assert r.returncode == 1
    assert (f"Error loading config.toml: --profile `x` cannot be used while {cfg} contains legacy `profile = \"x\"` or "
            f"`[profiles.x]` config; move those settings into {world.home / 'x.config.toml'}") in r.stderr
    cfg.write_text(base, encoding="utf-8")
    (world.home / "x.config.toml").write_text('model_provider = "mockB"\n', encoding="utf-8")
    assert world.codex("exec", "--skip-git-repo-check", "--profile", "x", "hi").returncode == 0
    assert world.codex("exec", "--skip-git-repo-check", "hi").returncode == 0
    assert sorted(world.db("SELECT model_provider FROM threads")) == [("mockA",), ("mockB",)]


@pytest.mark.compat
def test_real_codex_stores_encrypted_reasoning_and_fails_a_turn_the_api_rejects(world, mock_server):
    """references/real-codex.md (f): where encrypted_content lives, and what a resumed thread
    shows when the API rejects it (the 400 is emulated: its text is the API's, not Codex's)."""
    import json
    from mock_model import INVALID_ENCRYPTED_CONTENT, encrypted_reasoning_reply
    mock_server.reply = encrypted_reasoning_reply()
    tid = world.make_threads(1, prompt="think")[0]
    assert mock_server.requests[-1]["include"] == ["reasoning.encrypted_content"]
    path = world.db("SELECT rollout_path FROM threads")[0][0]
    lines = [json.loads(l) for l in open(path, encoding="utf-8")]
    hits = [(n, o["type"], o["payload"].get("type")) for n, o in enumerate(lines, 1)
            if "encrypted_content" in json.dumps(o)]
    assert [h[1:] for h in hits] == [("response_item", "reasoning")] and hits[0][0] > 1
    assert lines[hits[0][0] - 1]["payload"]["encrypted_content"] == "gAAAAABmock-encrypted-reasoning=="
    mock_server.reply = encrypted_reasoning_reply(reject_sent_back=True)
    resumed = world.resume_and_turn(tid)
    assert (resumed.status, resumed.turns_after) == ("failed", 2)
    sent = [i for i in mock_server.requests[-1]["input"] if i.get("type") == "reasoning"]
    assert [i["encrypted_content"] for i in sent] == ["gAAAAABmock-encrypted-reasoning=="]
    with world.app() as app:
        error = app.read_thread(tid)["turns"][-1]["error"]
    assert json.loads(error["message"]) == INVALID_ENCRYPTED_CONTENT
    assert error["codexErrorInfo"] == "other"


def test_picker_archived_tab_lists_the_archived_sessions(world):
    ids = world.make_threads(3, prompt="tab")
    world.archive(ids[0])
    with world.tui(world.project()) as tui:
        active = tui.picker()
        archived = tui.choose("Status", "Archived")
    assert (active.status_tab, active.ids) == ("Active", sorted(ids[1:]))
    assert (archived.status_tab, archived.ids, archived.titles) == ("Archived", [ids[0]], ["tab 0"])


def test_real_codex_lists_sessions_of_another_account_and_missing_workspace_roots(world):
    """references/real-codex.md (e): neither the row's creator_account_id/creator_user_id nor
    line 1's account_scoped/runtime_workspace_roots filter any listing (0.171, API-key login)."""
    import json
    ids = world.make_threads(3, cwd=world.project("proj"), prompt="acct")
    line1 = lambda t: json.loads(open(world.db("SELECT rollout_path FROM threads WHERE id=?", (t,))[0][0],
                                      encoding="utf-8").readline())["payload"]
    meta = line1(ids[0])
    assert meta["account_scoped"] is True and meta["runtime_workspace_roots"] == [str(world.project("proj"))]
    assert world.db("SELECT DISTINCT creator_user_id, creator_account_id FROM threads") == [(None, None)]
    world.db("UPDATE threads SET creator_user_id='user-other', creator_account_id='acct-other' WHERE id=?",
             (ids[0],))
    path = world.db("SELECT rollout_path FROM threads WHERE id=?", (ids[1],))[0][0]
    with open(path, "r+b") as fh:  # a workspace root that no longer exists, same byte length
        first = fh.readline()
        old = json.dumps([str(world.project("proj"))]).encode()
        new = json.dumps([str(world.project("proj"))[:-4] + "gone"]).encode()
        assert first.count(old) == 1
        fh.seek(0)
        fh.write(first.replace(old, new))
    s = world.surfaces(world.project("proj"))
    assert s.shown_everywhere(ids) == {k: [] for k in ("editors", "editors_cwd", "read", "picker",
                                                        "picker_all")}
    assert world.listed_ids(useStateDbOnly=True) == sorted(ids)
    assert world.resume_and_turn(ids[0]).ok and world.resume_and_turn(ids[1]).ok
    assert world.db("SELECT creator_account_id FROM threads WHERE id=?", (ids[0],)) == [("acct-other",)]


def test_real_codex_provider_switch_hides_sessions_from_the_editors_not_the_tui(world):
    """After a provider switch the TUI picker still lists every provider's sessions; the editors'
    thread/list (current provider) hides the old provider's; reading and resuming work."""
    a = world.make_threads(2, "mockA", prompt="under A")
    b = world.make_threads(1, "mockB", prompt="under B")
    s = world.surfaces(world.project())
    assert s.picker_ids == s.picker_all_ids == sorted(a + b)
    assert s.editors == s.editors_cwd == sorted(b)
    assert s.turns == {t: 1 for t in a + b}
    assert sorted(s.picker.titles) == ["under A 0", "under A 1", "under B 0"]


def test_real_codex_reverts_a_db_only_cwd_from_the_last_turn_context(world):
    """references/real-codex.md (a): a cwd-filtered listing that finds a row's cwd disagreeing with
    its rollout re-derives the row, and the cwd it writes is the last turn_context's, not line 1's."""
    ids = world.make_threads(2, cwd=world.user_project("proj"), prompt="work")
    moved = world.move_user_folder("resu")
    remap_by_hand(world, str(moved["old_user"]), str(moved["new_user"]))  # row + line 1 only
    new_proj, other = world.user_project("proj"), world.project("dbonly")
    assert world.listed_ids(cwd=str(new_proj)) == sorted(ids)  # line 1 agrees: nothing rewritten
    assert {c for (c,) in world.db("SELECT cwd FROM threads")} == {str(new_proj)}
    world.db("UPDATE threads SET cwd=?", (str(other),))  # a DB-only cwd, as the old repair did
    assert world.listed_ids(cwd=str(other)) == []
    assert {c for (c,) in world.db("SELECT cwd FROM threads")} == {str(moved["old_user"] / "projects/proj")}


def test_real_codex_app_server_on_a_second_state_db(world):
    """The desktop app's layout: CODEX_SQLITE_HOME=<home>/sqlite gives a second state DB (and
    history DB) that indexes the same rollouts (world.app(sqlite_home=...))."""
    import sqlite3
    ids = world.make_threads(2, prompt="cli")
    desk = world.home / "sqlite"
    desk.mkdir()
    with world.app(sqlite_home=desk) as app:
        assert sorted(t["id"] for t in app.list_threads()) == sorted(ids)  # indexed from rollouts
        # paginated history lives in the sqlite home's own thread_history_1.sqlite: empty here,
        # so a read shows no turn until the thread is resumed on this DB
        assert [len(app.read_thread(t)["turns"]) for t in ids] == [0, 0]
        app.request("thread/resume", {"threadId": ids[0]})
        assert len(app.read_thread(ids[0])["turns"]) == 1
        mine = app.start_thread(world.project(), "desktop")
    conn = sqlite3.connect(str(desk / "state_5.sqlite"))
    try:
        assert sorted(r[0] for r in conn.execute("SELECT id FROM threads")) == sorted(ids + [mine])
    finally:
        conn.close()
    assert sorted(r[0] for r in world.db("SELECT id FROM threads")) == sorted(ids)
    assert mine in world.listed_ids()  # the CLI's DB picks the desktop's rollout up on listing
    assert world.read_turns(*ids, mine) == {ids[0]: 1, ids[1]: 1, mine: 0}
