"""session_import.py judged by the real Codex CLI: an old machine's home brought into a new one
that has sessions of its own, from the folder and from a .tar.gz of it."""
import json
import os
import tarfile

import pytest

from harness import snapshot


def _old_and_new(world):
    """Old home (user `user`): three sessions in ~/proj, one named, one archived, one with two turns.
    New home (user `newuser`): two sessions of its own in ~/proj. The world now points at the new one."""
    old_proj = world.base / "user" / "proj"
    old_proj.mkdir(parents=True)
    old_home = world.home
    with world.app(old_proj) as app:
        ids = [app.start_thread(old_proj, f"old machine task {i}") for i in range(3)]
        app.turn(ids[0], "and a second turn")
        app.request("thread/name/set", {"threadId": ids[0], "name": "Parser rewrite"})
        app.request("thread/archive", {"threadId": ids[2]})
        turns = {t: len(app.read_thread(t)["turns"]) for t in ids}
    assert turns == {ids[0]: 2, ids[1]: 1, ids[2]: 1}
    new_home = world.base / "newuser" / ".codex"
    new_home.mkdir(parents=True)
    world.home = new_home
    world.homes.append(new_home)
    world.set_provider("mockA")
    new_proj = world.base / "newuser" / "proj"
    new_proj.mkdir()
    own = world.make_threads(2, cwd=new_proj, prompt="new machine task")
    return old_home, ids, turns, new_proj, own


def _own_state(world, own):
    """The new home's own threads: their files (bytes, mtime) and their rows in both DBs."""
    files = {k: v for k, v in snapshot(world.home).items()
             if k.startswith(("sessions/", "archived_sessions/")) and any(t in k for t in own)}
    marks = ",".join("?" * len(own))
    rows = world.db(f"SELECT * FROM threads WHERE id IN ({marks}) ORDER BY id", tuple(own))
    import sqlite3
    conn = sqlite3.connect(str(world.home / "thread_history_1.sqlite"))
    try:
        hist = [conn.execute(f"SELECT * FROM {t} WHERE thread_id IN ({marks}) ORDER BY 1, 2", tuple(own)).fetchall()
                for t in ("thread_turns", "thread_items", "thread_history_projection_state")]
    finally:
        conn.close()
    return files, rows, hist


def _check_imported(world, ids, turns, new_proj, own):
    active = sorted(own + ids[:2])
    listed = {t["id"]: t for t in world.listing()}
    assert sorted(listed) == active
    assert listed[ids[0]]["name"] == "Parser rewrite"
    assert all(listed[t]["cwd"] == str(new_proj) for t in ids[:2])
    assert world.listed_ids(archived=True) == [ids[2]]
    assert world.listed_ids(cwd=str(new_proj)) == active
    with world.app(new_proj) as app:
        assert {t: len(app.read_thread(t)["turns"]) for t in ids} == turns
        assert app.read_thread(ids[2])["name"] is None


def _import(world, src, *extra):
    old_user, new_user = world.base / "user", world.base / "newuser"
    proc = world.script("session_import.py", "--from", str(src), "--remap-prefix", f"{old_user}={new_user}",
                        "--json", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _scenario(world, src_of):
    old_home, ids, turns, new_proj, own = _old_and_new(world)
    src = src_of(old_home)
    src_before = snapshot(old_home)
    archive_before = snapshot(src.parent)[src.name] if src.is_file() else None
    own_before = _own_state(world, own)
    plan = _import(world, src)
    assert plan["suggested_remap"] is None and plan["remapped_threads"] == 3
    assert (plan["to_import"], plan["to_import_archived"], plan["conflicts"]) == (3, 1, 0)
    assert plan["result"] is None
    home_before = snapshot(world.home)
    result = _import(world, src, "--apply")
    assert result["result"]["imported_threads"] == 3, result
    assert snapshot(old_home) == src_before  # the source: every byte, mtime and -wal/-shm as it was
    _check_imported(world, ids, turns, new_proj, own)
    assert _own_state(world, own) == own_before
    again = _import(world, src, "--apply")
    assert (again["to_import"], again["already_present"], again["conflicts"], again["result"]) == (0, 3, 0, None)
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    after = snapshot(world.home)
    added = {k for k in after if k not in home_before and not k.startswith(".tmp/")}
    rollouts = lambda snap: {k: v for k, v in snap.items() if k.startswith(("sessions/", "archived_sessions/"))}  # noqa: E731
    assert rollouts(after) == rollouts(home_before)
    assert not any(k.startswith(("sessions/", "archived_sessions/")) for k in added)
    assert _own_state(world, own) == own_before
    assert world.db("SELECT count(*) FROM threads") == [(2,)]
    import sqlite3
    conn = sqlite3.connect(str(world.home / "thread_history_1.sqlite"))
    marks = ",".join("?" * len(ids))
    assert [conn.execute(f"SELECT count(*) FROM {t} WHERE thread_id IN ({marks})", ids).fetchone()[0]
            for t in ("thread_turns", "thread_items", "thread_history_projection_state")] == [0, 0, 0]
    conn.close()
    if archive_before is not None:
        assert snapshot(src.parent)[src.name] == archive_before
    assert world.listed_ids() == sorted(own) and world.listed_ids(archived=True) == []
    assert snapshot(old_home) == src_before
    # imported once more, an imported thread resumes and takes a new turn
    _import(world, src, "--apply")
    resumed = world.resume_and_turn(ids[0], "continued on the new machine", cwd=new_proj)
    assert (resumed.error, resumed.turns_before, resumed.turns_after) == ("", turns[ids[0]], turns[ids[0]] + 1)
    assert snapshot(old_home) == src_before
    # resumed in its last turn_context's folder, remapped too: the row keeps the new folder
    assert world.db("SELECT cwd FROM threads WHERE id=?", (ids[0],)) == [(str(new_proj),)]
    assert ids[0] in world.listed_ids(cwd=str(new_proj), useStateDbOnly=True)
    after_resume = _import(world, src)  # the continued thread is still the same thread, not a conflict
    assert (after_resume["to_import"], after_resume["already_present"], after_resume["conflicts"]) == (0, 3, 0)


def test_import_from_the_old_home_folder(world):
    _scenario(world, lambda old_home: old_home)


def test_import_from_a_tar_gz_of_the_old_home(world):
    def pack(old_home):
        archive = world.base / "old-laptop.tar.gz"
        with tarfile.open(str(archive), "w:gz") as tf:
            tf.add(str(old_home), arcname="home/user/.codex")
        return archive
    _scenario(world, pack)


def test_a_fork_of_a_reverted_thread_brings_its_parent_and_every_segment(world):
    """thread/revert leaves the thread two files (the second keyed by its rollout uuid in
    thread_history_1); a fork's history_base points into that second file by byte offset."""
    old_proj = world.base / "user" / "proj"
    old_proj.mkdir(parents=True)
    old_home = world.home
    with world.app(old_proj) as app:
        parent = app.start_thread(old_proj, "first")
        app.turn(parent, "second")
        app.turn(parent, "third")
        turns = app.read_thread(parent)["turns"]
        app.request("thread/revert", {"threadId": parent, "beforeTurnId": turns[1]["id"]})
        app.turn(parent, "after the revert")
        fork = app.request("thread/fork", {"threadId": parent})["thread"]["id"]
        app.turn(fork, "in the fork")
        src_turns = {t: len(app.read_thread(t)["turns"]) for t in (parent, fork)}
    assert src_turns == {parent: 2, fork: 3}
    files = sorted(p.name for p in old_home.glob("sessions/*/*/*/*.jsonl"))
    assert len(files) == 3 and sum("_" in f for f in files) == 1  # the parent's two files and the fork's
    new_home = world.base / "newuser" / ".codex"
    new_home.mkdir(parents=True)
    world.home = new_home
    world.homes.append(new_home)
    world.set_provider("mockA")
    new_proj = world.base / "newuser" / "proj"
    new_proj.mkdir()
    world.make_threads(1, cwd=new_proj, prompt="mine")
    src_before = snapshot(old_home)
    out = _import(world, old_home, "--thread-id", fork, "--apply")
    assert sorted((t["thread_id"], t["why"], len(t["files"])) for t in out["imports_sample"]) == sorted(
        [(fork, "chosen", 1), (parent, f"parent of fork {fork}", 2)])
    assert snapshot(old_home) == src_before
    assert world.read_turns(parent, fork) == src_turns
    # the fork's history_base still points at the same bytes of its parent's second file
    meta = lambda p: json.loads(p.read_bytes().split(b"\n", 1)[0])["payload"]  # noqa: E731
    seg_old = next(old_home.glob("sessions/*/*/*/*_*.jsonl"))
    seg_new = new_home / seg_old.relative_to(old_home)
    fork_old = next(old_home.glob(f"sessions/*/*/*/*{fork}.jsonl"))
    fork_new = new_home / fork_old.relative_to(old_home)
    end_old, end_new = meta(fork_old)["history_base"]["end_byte_offset"], meta(fork_new)["history_base"]["end_byte_offset"]
    old_bytes, new_bytes = seg_old.read_bytes(), seg_new.read_bytes()
    assert end_new > end_old and new_bytes[end_new - 1:end_new] == b"\n"  # still a line boundary
    assert new_bytes[:end_new].count(b"\n") == old_bytes[:end_old].count(b"\n")  # after as many lines
    assert new_bytes[end_new:] == old_bytes[end_old:]
    for tid in (parent, fork):
        resumed = world.resume_and_turn(tid, "continued here", cwd=new_proj)
        assert (resumed.error, resumed.turns_after) == ("", src_turns[tid] + 1)


@pytest.mark.tui
def test_the_tui_picker_in_the_new_project_folder_lists_old_and_new(world):
    """`codex resume` filters by the current folder: the remapped cwd puts the old sessions there."""
    old_home, ids, turns, new_proj, own = _old_and_new(world)
    _import(world, old_home, "--apply")
    pick = world.picker(new_proj)
    # (the harness reads no id from a named row: the titles and the folder tell them apart here)
    assert pick.total == 4 and sorted(pick.titles) == [
        "Parser rewrite", "new machine task 0", "new machine task 1", "old machine task 1"]
    assert {r.directory for r in pick.rows} == {str(new_proj)}
    archived = world.picker(new_proj, archived=True)
    assert (archived.total, archived.titles, archived.ids) == (1, ["old machine task 2"], [ids[2]])
    assert world.home_processes() == []


def test_threads_of_another_provider_list_after_the_suggested_provider_migration(world):
    old_proj = world.base / "user" / "proj"
    old_proj.mkdir(parents=True)
    old_home = world.home
    ids = world.make_threads(2, "mockB", cwd=old_proj, prompt="on mockB")
    world.archive(ids[1])
    new_home = world.base / "newuser" / ".codex"
    new_home.mkdir(parents=True)
    world.home = new_home
    world.homes.append(new_home)
    own = world.make_threads(1, "mockA", cwd=world.base / "newuser", prompt="on mockA")
    out = _import(world, old_home, "--apply")
    assert out["result"]["imported_threads"] == 2
    assert out["suggested_provider_migration"] == \
        "provider_migrate.py --target-provider mockA --from-provider mockB --include-archived"
    assert world.listed_ids() == own  # the editors list the current provider only
    args = out["suggested_provider_migration"].split()[1:]
    proc = world.script("provider_migrate.py", *args, "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert world.listed_ids() == sorted(own + ids[:1])
    assert world.listed_ids(archived=True) == [ids[1]]
    assert world.read_turns(*ids) == {ids[0]: 1, ids[1]: 1}
