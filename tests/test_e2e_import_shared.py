"""Real Codex 0.171 acts between an import and its rollback: DEST's threads join the imported project
and section, an imported thread is continued or gets queued input, the project gets a second folder.
The rollback keeps what they use (the project with its folders and key, the section, the name a
legacy thread got, the thread with its queue), names each with its reason, and the run stays partly
rolled back; Codex still finds every one. A section a user named "Pinned" stays a section of its own."""
import json

import pytest

from test_e2e_compressed import _ok, _tables
from test_e2e_import_tables import PINNED, _dest, _make_legacy, _source

pytestmark = pytest.mark.e2e


def _args(world, old_home):
    return ("session_import.py", "--from", str(old_home), "--remap-prefix",
            f"{world.base / 'user'}={world.base / 'newuser'}", "--json")


def _rollback(world):
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr  # partly rolled back: something was left alone
    return "\n".join(json.loads(rb.stdout)["conflict_sample"])


def _status(world):
    out = world.script("rollback.py", "--list", "--json")
    return json.loads(out.stdout)["runs"][-1]["status"]


def test_dest_threads_that_joined_the_imported_project_and_section_keep_them(world):
    """D1: thread/metadata/update {projectId}, thread/start {projectId} and thread/section/move put
    DEST's own threads in the imported project and section; after the rollback Codex still lists
    them there and a project/create retried with the imported key still returns the project."""
    old_home = world.home
    pid, a, b = _source(world)
    proj, own, _later = _dest(world)
    _ok(world.script(*_args(world, old_home), "--apply"))
    with world.app(proj) as app:
        app.request("thread/metadata/update", {"threadId": own[0], "projectId": pid})
        mine = app.request("thread/start", {"cwd": str(proj), "projectId": pid})["thread"]["id"]
        app.turn(mine, "new work in Work")
        app.request("thread/section/move", {"threadId": own[0], "sectionId": PINNED})
    world.stop_home_processes()
    left = _rollback(world)
    assert "projects ['" + pid + "']: 2 row(s) of threads outside this run point at it; left alone" in left, left
    assert _status(world).startswith("partly rolled back"), _status(world)
    assert {r[0] for r in world.db("SELECT id FROM threads")} == {own[0], mine}  # a and b undone
    with world.app(proj) as app:
        assert [p["id"] for p in app.request("project/list", {})["data"]] == [pid]
        assert sorted(t["id"] for t in app.request("thread/list", {"projectId": pid})["data"]) == sorted([own[0], mine])
        assert [t["id"] for t in app.request("thread/list", {"sectionId": PINNED})["data"]] == [own[0]]
        again = app.request("project/create", {"idempotencyKey": "k-work", "name": "Work",
                                               "roots": [{"path": str(proj)}]})["project"]["id"]
        assert again == pid and len(app.request("project/list", {})["data"]) == 1


def test_a_continued_thread_keeps_its_project_section_and_key(world):
    """D2: thread A continued in DEST is left alone whole, and with it its project (folder, key) and
    its section; b, untouched, is undone."""
    old_home = world.home
    pid, a, b = _source(world)
    proj, own, later = _dest(world)
    _ok(world.script(*_args(world, old_home), "--apply"))
    with world.app(proj) as app:
        app.request("thread/resume", {"threadId": a})
        app.turn(a, "continued in DEST")
    world.stop_home_processes()
    left = _rollback(world)
    assert f"projects ['{pid}']: it also serves thread {a}, which is left alone; left alone" in left, left
    assert {r[0] for r in world.db("SELECT id FROM threads")} == {own[0], a}
    with world.app(proj) as app:
        assert [t["id"] for t in app.request("thread/list", {"projectId": pid})["data"]] == [a]
        assert [t["id"] for t in app.request("thread/list", {"sectionId": later})["data"]] == [a]
        again = app.request("project/create", {"idempotencyKey": "k-work", "name": "Work",
                                               "roots": [{"path": str(proj)}]})["project"]["id"]
        assert again == pid
    world.stop_home_processes()
    assert world.db("SELECT key, project_id FROM project_idempotency_keys") == [("k-work", pid)]


def test_a_continued_legacy_thread_keeps_its_name(world):
    """D3: the name line session_index.jsonl got for a legacy thread stays while that thread is left
    alone (continued in DEST): Codex still shows its name after the rollback."""
    old_home = world.home
    proj = world.user_project("proj")
    with world.app(proj) as app:
        tid = app.start_thread(proj, "legacy work")
        app.request("thread/name/set", {"threadId": tid, "name": "Legacy name"})
    world.stop_home_processes()
    _make_legacy(world, tid)
    new_proj, own, _later = _dest(world)
    _ok(world.script(*_args(world, old_home), "--apply"))
    with world.app(new_proj) as app:
        app.request("thread/resume", {"threadId": tid})
        app.turn(tid, "more work in DEST")
    world.stop_home_processes()
    left = _rollback(world)
    assert f"session_index.jsonl: it also serves thread {tid}, which is left alone; left alone" in left, left
    with world.app(new_proj) as app:
        assert app.request("thread/read", {"threadId": tid})["thread"]["name"] == "Legacy name"


def test_input_queued_on_an_imported_thread_keeps_the_thread(world):
    """D4: thread/queue/add on imported b after the import: b is left alone whole (its queue, old
    item and new, stays listed); a is undone."""
    old_home = world.home
    pid, a, b = _source(world)
    proj, own, _later = _dest(world)
    _ok(world.script(*_args(world, old_home), "--apply"))
    with world.app(proj) as app:
        app.request("thread/queue/add", {"threadId": b, "clientUserMessageId": "m2",
                                         "input": [{"type": "text", "text": "added after the import"}]})
    world.stop_home_processes()
    left = _rollback(world)
    assert f"{b}: Codex added 1 row(s) of queued_items for it since the run (it was used in DEST)" in left, left
    assert {r[0] for r in world.db("SELECT id FROM threads")} == {own[0], b}
    queued = _tables(world)[("queue_1.sqlite", "queued_items")]
    assert len(queued) == 2 and {r[1] for r in queued} == {b}
    with world.app(proj) as app:
        assert len(app.request("thread/queue/list", {"threadId": b})["data"]) == 2
        assert [t["id"] for t in app.request("thread/list", {"sectionId": PINNED})["data"]] == [b]


def test_a_folder_added_to_the_imported_project_keeps_the_project_whole(world):
    """D5: project/update {roots: [proj, other]}: the project and both its folders stay together."""
    old_home = world.home
    pid, a, b = _source(world)
    proj, own, _later = _dest(world)
    _ok(world.script(*_args(world, old_home), "--apply"))
    other = world.base / "newuser" / "projects" / "other"
    other.mkdir(parents=True)
    with world.app(proj) as app:
        app.request("project/update", {"projectId": pid, "roots": [{"path": str(proj)}, {"path": str(other)}]})
    world.stop_home_processes()
    left = _rollback(world)
    assert f"projects ['{pid}']" in left, left
    with world.app(proj) as app:
        got = app.request("project/read", {"projectId": pid})["project"]
        assert [r["path"] for r in got["roots"]] == [str(proj), str(other)]
        assert app.request("project/create", {"idempotencyKey": "k-work", "name": "Work",
                                              "roots": [{"path": str(proj)}]})["project"]["id"] == pid


def test_a_section_a_user_named_pinned_is_not_merged_into_the_built_in(world):
    """D7: real 0.171 makes a section named "Pinned" with an id of its own; the import brings it as
    that section, and DEST's built-in Pinned keeps only its own threads."""
    old_home = world.home
    proj = world.user_project("proj")
    with world.app(proj) as app:
        sec = app.request("threadSection/create", {"name": "Pinned"})["section"]["id"]
        assert sec != PINNED
        tid = app.start_thread(proj, "in my own Pinned")
        app.request("thread/section/move", {"threadId": tid, "sectionId": sec})
    world.stop_home_processes()
    new_proj, own, _later = _dest(world)
    with world.app(new_proj) as app:
        app.request("thread/section/move", {"threadId": own[0], "sectionId": PINNED})
    world.stop_home_processes()
    plan = _ok(world.script(*_args(world, old_home), "--apply"))
    assert "section 'Pinned' (created in DEST)" in plan["imports_sample"][0]["comes_with"]
    with world.app(new_proj) as app:
        assert [t["id"] for t in app.request("thread/list", {"sectionId": sec})["data"]] == [tid]
        assert [t["id"] for t in app.request("thread/list", {"sectionId": PINNED})["data"]] == [own[0]]


def test_a_fork_made_in_dest_keeps_its_imported_parent(world):
    """A plain thread/fork of imported thread A in DEST reads its first turns from A's rollout (real
    0.171: without it `thread/read` fails, "invalid paginated history lineage ... missing source
    rollout"): the rollback leaves A alone whole and the fork stays readable."""
    old_home = world.home
    pid, a, b = _source(world)
    proj, own, _later = _dest(world)
    _ok(world.script(*_args(world, old_home), "--apply"))
    with world.app(proj) as app:
        fork = app.request("thread/fork", {"threadId": a})["thread"]["id"]
        app.turn(fork, "in the fork")
        turns = len(app.read_thread(fork)["turns"])
    world.stop_home_processes()
    left = _rollback(world)
    assert f"{a}: forked in DEST since the run as {fork}" in left, left
    assert {r[0] for r in world.db("SELECT id FROM threads")} == {own[0], a, fork}
    with world.app(proj) as app:
        assert len(app.read_thread(fork)["turns"]) == turns
