"""An import brings what Codex 0.171 keeps about a thread besides its row and history: its project
(created with remapped folders, or DEST's own reused) and the project's idempotency key, its section
(matched by name) and pin, its goal (goals_1.sqlite), attachments, queued input with a queue revision
of DEST's own numbering, read state, dynamic tools and model-facing ids; real Codex shows each on its
surface afterwards, from a folder and from a .tar.gz, and the rollback leaves every table of every
DB as before."""
import tarfile

import pytest

from test_e2e_compressed import _files, _ok, _tables

PINNED = "01984de2-8f74-7c91-a3b2-5c5e937cf318"


def _source(world):
    """Old home (user `user`): thread A in project Work and section Later, with a goal and an
    attachment; thread B pinned."""
    proj = world.user_project("proj")
    with world.app(proj) as app:
        pid = app.request("project/create", {"idempotencyKey": "k-work", "name": "Work",
                                             "roots": [{"path": str(proj)}]})["project"]["id"]
        a = app.request("thread/start", {"cwd": str(proj), "projectId": pid})["thread"]["id"]
        app.turn(a, "task A")
        b = app.start_thread(proj, "task B")
        later = app.request("threadSection/create", {"name": "Later"})["section"]["id"]
        app.request("thread/section/move", {"threadId": a, "sectionId": later})
        app.request("thread/section/move", {"threadId": b, "sectionId": PINNED})
        app.request("thread/goal/set", {"threadId": a, "objective": "ship it", "status": "active", "tokenBudget": 1000})
        app.request("thread/attachment/add", {"threadId": a, "attachmentType": "note", "identityKey": "n1",
                                              "payload": {"text": "remember"}})
        app.request("thread/name/set", {"threadId": a, "name": "Task A"})
    with world.app(proj) as app:  # b is not loaded in this app-server: its queued input waits in queue_1
        app.request("thread/queue/add", {"threadId": b, "clientUserMessageId": "m1",
                                         "input": [{"type": "text", "text": "do this later"}]})
        queued = app.request("thread/queue/list", {"threadId": b})
    assert len(queued["data"]) == 1, queued
    # No 0.171 request writes these two (0.130 kept dynamic tools in this table, 0.171 keeps them in
    # line 1 and only deletes the rows with the thread; the model-facing ids come from its tool
    # calls): the rows as Codex's own INSERTs shape them
    world.stop_home_processes()
    world.db("INSERT INTO thread_dynamic_tools (thread_id, position, name, description, input_schema) "
             "VALUES (?, 0, 'lookup', 'Look it up', '{}')", (a,))
    world.db("INSERT INTO session_model_ids VALUES (?, 'call', '', 0, '{\"next_ordinal\":2}')", (a,))
    world.db("INSERT INTO session_model_ids VALUES (?, 'call', 'call_1', 1, NULL)", (a,))
    return pid, a, b


def _dest(world):
    """New home (user `newuser`): one thread of its own and its own section named Later."""
    new_home = world.base / "newuser" / ".codex"
    new_home.mkdir(parents=True)
    world.home = new_home
    world.homes.append(new_home)
    world.set_provider("mockA")
    proj = world.base / "newuser" / "projects" / "proj"
    proj.mkdir(parents=True)
    own = world.make_threads(1, cwd=proj, prompt="new machine")
    with world.app(proj) as app:
        later = app.request("threadSection/create", {"name": "Later"})["section"]["id"]
    return proj, own, later


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "export"])
def test_import_brings_project_section_pin_goal_attachment_and_rollback(world, kind):
    old_home = world.home
    pid, a, b = _source(world)
    if kind == "export":  # session_export.py's archive carries what the home would (thread_tables.CARRIED)
        _ok(world.script("session_export.py", "--all", "--to", str(world.base / "old-export.zip"), "--apply",
                         "--json"))
    proj, own, later = _dest(world)
    src = old_home
    if kind == "tar.gz":
        src = world.base / "old.tar.gz"
        with tarfile.open(str(src), "w:gz") as tf:
            tf.add(str(old_home), arcname="home/user/.codex")
    if kind == "export":
        src = world.base / "old-export.zip"
    files, tables = _files(world), _tables(world)
    args = ("session_import.py", "--from", str(src), "--remap-prefix",
            f"{world.base / 'user'}={world.base / 'newuser'}", "--json")
    plan = _ok(world.script(*args))
    by = {t["thread_id"]: t for t in plan["imports_sample"]}
    assert by[a]["comes_with"] == ["project 'Work' (created in DEST)", "section 'Later' (DEST's section of that name)",
                                   "attachment", "read state", "goal", "dynamic tool", "2 model-facing ids"], by[a]
    assert by[b]["comes_with"] == ["pinned", "read state", "queued input"] and by[b]["cannot_bring"] == []
    assert plan["comes_with"] == ["project", "section", "attachment", "2 read states", "goal", "dynamic tool",
                                  "2 model-facing ids", "pinned", "queued input"]
    res = _ok(world.script(*args, "--apply"))["result"]
    assert res["imported_threads"] == 2

    with world.app(proj) as app:
        projects = app.request("project/list", {})["data"]
        assert [(p["id"], [r["path"] for r in p["roots"]]) for p in projects] == [(pid, [str(proj)])]
        assert app.request("project/read", {"projectId": pid})["project"]["name"] == "Work"
        assert [t["id"] for t in app.request("thread/list", {"projectId": pid})["data"]] == [a]
        assert [t["id"] for t in app.request("thread/list", {"sectionId": later})["data"]] == [a]
        assert [t["id"] for t in app.request("thread/list", {"sectionId": PINNED})["data"]] == [b]
        goal = app.request("thread/goal/get", {"threadId": a})["goal"]
        assert (goal["objective"], goal["status"], goal["tokenBudget"]) == ("ship it", "active", 1000)
        att = app.request("thread/attachment/list", {"threadId": a})["data"]
        assert [(x["identityKey"], x["payload"]) for x in att] == [("n1", {"text": "remember"})]
        assert app.request("thread/read", {"threadId": a})["thread"]["name"] == "Task A"
        queued = app.request("thread/queue/list", {"threadId": b})["data"]
        assert len(queued) == 1, queued
        states = app.request("thread/list", {}).get("readStates") or {}
        assert a in states and b in states, states  # the read receipts came along
        sections = {s["name"] for s in app.request("threadSection/list", {})["data"]}
        assert sections == {"Later", "Pinned"}  # matched by name: no second Later
        # the key came with its project: a client's create retried here returns it, not a second Work
        again = app.request("project/create", {"idempotencyKey": "k-work", "name": "Work",
                                               "roots": [{"path": str(proj)}]})["project"]["id"]
        assert again == pid and len(app.request("project/list", {})["data"]) == 1
    carried = _tables(world)
    # b's queue revision is of DEST's numbering (its queue had none: 1, then queue_1's insert trigger
    # moved it to MAX+1 for the item, as Codex's own queue/add does), not the source's
    assert carried[("queue_1.sqlite", "queued_thread_revisions")] == [(2, b)]
    assert carried[("queue_1.sqlite", "sqlite_sequence")] == [("queued_thread_revisions", 2)]
    assert carried[("state_5.sqlite", "thread_dynamic_tools")] == [(a, 0, "lookup", "Look it up", "{}", 0, None)]
    assert [r[:4] for r in carried[("state_5.sqlite", "session_model_ids")]] == [(a, "call", "", 0), (a, "call", "call_1", 1)]

    _ok(world.script("rollback.py", "--latest", "--apply", "--json"))
    after = _tables(world)
    assert after == tables  # every table of every DB, the queue's revisions and sqlite_sequence included
    assert after[("queue_1.sqlite", "queued_items")] == []
    assert _files(world) == files
    with world.app(proj) as app:  # the key left with the project: a create with it makes a new one
        assert app.request("project/list", {})["data"] == []
        made = app.request("project/create", {"idempotencyKey": "k-work", "name": "Work",
                                              "roots": [{"path": str(proj)}]})["project"]["id"]
        assert made != pid


def _make_legacy(world, tid):
    """The thread as a legacy (non-paginated) one, as 0.148's app-server leaves them: no history rows,
    `history_mode` legacy in line 1 and in the row."""
    import json
    import sqlite3
    path = world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0]
    with open(path, "rb") as fh:
        data = fh.read()
    first, rest = data.split(b"\n", 1)
    obj = json.loads(first)
    obj["payload"]["history_mode"] = "legacy"
    with open(path, "wb") as fh:
        fh.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n" + rest)
    world.db("UPDATE threads SET history_mode='legacy' WHERE id=?", (tid,))
    conn = sqlite3.connect(str(world.home / "thread_history_1.sqlite"))
    with conn:
        for t in ("thread_turns", "thread_items", "thread_history_projection_state"):
            conn.execute(f"DELETE FROM {t} WHERE thread_id=?", (tid,))
    conn.close()


def test_import_writes_a_legacy_threads_name_where_codex_reads_it(world):
    old_home = world.home
    proj = world.user_project("proj")
    with world.app(proj) as app:
        tid = app.start_thread(proj, "legacy work")
        app.request("thread/name/set", {"threadId": tid, "name": "Legacy name"})
    world.stop_home_processes()
    _make_legacy(world, tid)
    with world.app(proj) as app:
        assert app.request("thread/read", {"threadId": tid})["thread"]["name"] == "Legacy name"
    new_proj, own, _later = _dest(world)
    files, tables = _files(world), _tables(world)
    index = world.home / "session_index.jsonl"
    index_before = index.read_bytes() if index.exists() else None
    args = ("session_import.py", "--from", str(old_home), "--remap-prefix",
            f"{world.base / 'user'}={world.base / 'newuser'}", "--json")
    res = _ok(world.script(*args, "--apply"))["result"]
    assert res["imported_threads"] == 1
    with world.app(new_proj) as app:
        assert app.request("thread/read", {"threadId": tid})["thread"]["name"] == "Legacy name"
        assert {t["id"]: t.get("name") for t in app.request("thread/list", {})["data"]}[tid] == "Legacy name"
    _ok(world.script("rollback.py", "--latest", "--apply", "--json"))
    assert (index.read_bytes() if index.exists() else None) == index_before
    assert _tables(world) == tables and _files(world) == files


def test_import_brings_a_sub_agents_spawn_edge(world):
    """`thread/list {parentThreadId}` lists children from thread_spawn_edges only. The edge is written
    into the source by SQL (spawning a sub-agent takes a model tool call the mock does not make),
    and the source's own Codex lists it before the import."""
    old_home = world.home
    proj = world.user_project("proj")
    with world.app(proj) as app:
        parent = app.start_thread(proj, "parent")
        child = app.start_thread(proj, "child")
    world.stop_home_processes()
    world.db("INSERT INTO thread_spawn_edges VALUES (?, ?, 'open')", (parent, child))
    assert [t["id"] for t in world.listing(parentThreadId=parent)] == [child]
    new_proj, own, _later = _dest(world)
    tables = _tables(world)
    args = ("session_import.py", "--from", str(old_home), "--remap-prefix",
            f"{world.base / 'user'}={world.base / 'newuser'}", "--json")
    plan = _ok(world.script(*args))
    assert "sub-agent link" in {t["thread_id"]: t for t in plan["imports_sample"]}[child]["comes_with"]
    _ok(world.script(*args, "--apply"))
    assert [t["id"] for t in world.listing(parentThreadId=parent)] == [child]
    _ok(world.script("rollback.py", "--latest", "--apply", "--json"))
    assert _tables(world) == tables


def _compressed_orphan(world):
    """Two threads compressed by Codex's own pass; the first one's row removed (Codex stopped): a
    `.jsonl.zst` with no row."""
    from test_e2e_compressed import compress
    ids = world.make_threads(2, cwd=world.user_project("proj"), prompt="zipped")
    compress(world)
    world.stop_home_processes()
    orphan = sorted(ids)[0]
    row = world.db("SELECT rollout_path FROM threads WHERE id=?", (orphan,))[0][0]
    world.db("DELETE FROM threads WHERE id=?", (orphan,))
    return orphan, row + ".zst"


def test_a_compressed_orphan_imported_by_the_repair_as_codex_indexes_it(world):
    """The repair's orphan import inserts the row Codex 0.171's own re-index inserts for a compressed
    orphan: rollout_path naming the `.jsonl.zst`; the file is left compressed. Codex reads the thread
    through that row; the rollback removes it; Codex's own re-index afterwards names the same file."""
    orphan, zst = _compressed_orphan(world)
    tables, files = _tables(world), _files(world)
    res = _ok(world.script("session_repair.py", "--import-orphans", "--apply", "--json"))
    assert res["planned_row_inserts"] == 1 and res["skipped"] == 0, res
    ours = world.db("SELECT rollout_path, preview, model_provider, cwd FROM threads WHERE id=?", (orphan,))
    assert ours[0][0] == zst and _files(world) == files
    with world.app() as app:
        read = app.request("thread/read", {"threadId": orphan, "includeTurns": True})["thread"]
        assert read["preview"].startswith("zipped") and len(read["turns"]) == 1
    _ok(world.script("rollback.py", "--latest", "--apply", "--json"))
    assert _tables(world) == tables and _files(world) == files
    world.listing()  # Codex's own re-index of the orphan
    assert world.db("SELECT rollout_path, preview, model_provider, cwd FROM threads WHERE id=?", (orphan,)) == ours


def test_an_import_brings_a_compressed_orphan_decompressed(world):
    old_home = world.home
    orphan, zst = _compressed_orphan(world)
    new_proj, own, _later = _dest(world)
    tables, files = _tables(world), _files(world)
    args = ("session_import.py", "--from", str(old_home), "--remap-prefix",
            f"{world.base / 'user'}={world.base / 'newuser'}", "--thread-id", orphan, "--json")
    res = _ok(world.script(*args, "--apply"))
    assert res["imports_sample"][0]["row_from"] == "rollout" and res["result"]["imported_threads"] == 1
    path = world.db("SELECT rollout_path FROM threads WHERE id=?", (orphan,))[0][0]
    assert path.endswith(".jsonl") and not (world.home / (path + ".zst")).exists()
    with world.app(new_proj) as app:
        read = app.request("thread/read", {"threadId": orphan, "includeTurns": True})["thread"]
        assert read["preview"].startswith("zipped") and len(read["turns"]) == 1
        assert read["cwd"] == str(new_proj)
    _ok(world.script("rollback.py", "--latest", "--apply", "--json"))
    assert _tables(world) == tables and _files(world) == files


def test_a_thread_deleted_after_an_import_comes_again_with_its_kept_queue_revision(world):
    """Codex's thread/delete removes a thread's queued input but leaves its queued_thread_revisions
    row (queue_1's delete trigger renumbers it). Importing the thread again renumbers that row
    (journaled) instead of inserting a second one; the rollback puts its number back."""
    old_home = world.home
    proj = world.user_project("proj")
    with world.app(proj) as app:
        b = app.start_thread(proj, "task B")
    with world.app(proj) as app:  # not loaded here: the input waits in queue_1
        app.request("thread/queue/add", {"threadId": b, "clientUserMessageId": "m1",
                                         "input": [{"type": "text", "text": "do this later"}]})
    new_proj, own, _later = _dest(world)
    args = ("session_import.py", "--from", str(old_home), "--remap-prefix",
            f"{world.base / 'user'}={world.base / 'newuser'}", "--json", "--apply")
    _ok(world.script(*args))
    with world.app(new_proj) as app:
        app.request("thread/delete", {"threadId": b})
    world.stop_home_processes()
    tables, files = _tables(world), _files(world)
    kept = tables[("queue_1.sqlite", "queued_thread_revisions")]
    assert [t for _r, t in kept] == [b] and tables[("queue_1.sqlite", "queued_items")] == []
    assert _ok(world.script(*args))["result"]["imported_threads"] == 1
    with world.app(new_proj) as app:
        assert len(app.request("thread/queue/list", {"threadId": b})["data"]) == 1
    again = _tables(world)[("queue_1.sqlite", "queued_thread_revisions")]
    assert [t for _r, t in again] == [b] and again[0][0] > kept[0][0]
    _ok(world.script("rollback.py", "--latest", "--apply", "--json"))
    assert _tables(world) == tables and _files(world) == files
