"""session_export.py judged by the real Codex CLI: one project folder's sessions (named, archived,
forked, one with a real sub-agent and a goal) exported from one home as a .tar.gz and imported into
another home that has sessions of its own."""
import json
import tarfile
import time

import pytest

from harness import settled, snapshot
from mock_model import text_reply


def _texts(request):
    out = []
    for item in request.get("input", []):
        content = item.get("content")
        for c in content if isinstance(content, list) else []:
            if isinstance(c, dict) and isinstance(c.get("text"), str):
                out.append(c["text"])
    return " ".join(out)


def _spawning_model(request):
    """Asks for a sub-agent (multi_agent_v1.spawn_agent) when the prompt says SPAWN; else replies."""
    if any(i.get("type") == "function_call" for i in request.get("input", [])) or "CHILD-TASK" in _texts(request) \
            or "SPAWN" not in _texts(request):
        return text_reply("done")(request)
    return [{"type": "function_call", "name": "spawn_agent", "namespace": "multi_agent_v1", "call_id": "call_spawn_1",
             "arguments": json.dumps({"message": "CHILD-TASK look around"})}]


def _source_home(world):
    """In projects/proj: a named thread with two turns, an archived one, a fork of the named one, a
    parent whose real sub-agent runs there too, with a goal and in a project; one in projects/other."""
    proj, other = world.project("proj"), world.project("other")
    world.server.reply = _spawning_model
    with world.app(proj) as app:
        named = app.start_thread(proj, "parser work")
        app.turn(named, "and a second turn")
        app.request("thread/name/set", {"threadId": named, "name": "Parser rewrite"})
        archived = app.start_thread(proj, "old work")
        app.request("thread/archive", {"threadId": archived})
        fork = app.request("thread/fork", {"threadId": named})["thread"]["id"]
        app.turn(fork, "the fork goes on")
        parent = app.start_thread(proj, "please SPAWN a helper")
        for _ in range(100):
            children = [t["id"] for t in app.list_threads(parentThreadId=parent)]
            if children:
                break
            time.sleep(0.1)
        assert len(children) == 1, children
        child = children[0]
        app.request("thread/goal/set", {"threadId": parent, "objective": "ship the parser"})
        project = app.request("project/create", {"idempotencyKey": "k-proj", "name": "Proj",
                                                  "roots": [{"path": str(proj)}]})["project"]["id"]
        app.request("thread/metadata/update", {"threadId": named, "projectId": project})
        elsewhere = app.start_thread(other, "not this project")
    world.server.reply = text_reply()
    world.stop_home_processes()
    (world.home / "auth.json").write_text('{"OPENAI_API_KEY": "sk-not-for-export"}', encoding="utf-8")
    return dict(proj=proj, named=named, archived=archived, fork=fork, parent=parent, child=child,
                elsewhere=elsewhere, project=project)


def _surfaces(world, t, ids):
    """What Codex shows of these threads: the editors' lists (all, archived, by folder), names,
    turn counts on read."""
    listed = {x["id"]: x for x in world.listing()}
    return {"listed": sorted(i for i in listed if i in ids),
            "names": {i: listed[i]["name"] for i in ids if i in listed},
            "archived": sorted(i for i in world.listed_ids(archived=True) if i in ids),
            "in_folder": sorted(i for i in world.listed_ids(cwd=str(t["proj"])) if i in ids),
            "turns": world.read_turns(*ids)}


def _export_and_import(world):
    t = _source_home(world)
    old_home = world.home
    ids = sorted([t["named"], t["archived"], t["fork"], t["parent"], t["child"]])
    before_surfaces = _surfaces(world, t, ids)
    world.stop_home_processes()
    before = snapshot(old_home)
    archive = world.base / "proj-sessions.tar.gz"
    dry = world.script("session_export.py", "--folder", str(t["proj"]), "--archived", "include", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert sorted(json.loads(dry.stdout)["thread_ids"]) == ids
    assert not archive.exists()
    proc = world.script("session_export.py", "--folder", str(t["proj"]), "--archived", "include",
                        "--to", str(archive), "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert snapshot(old_home) == before  # every byte, mtime, -wal and -shm as it was
    again = world.script("session_export.py", "--all", "--to", str(archive), "--apply")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    with tarfile.open(str(archive)) as tf:
        names = tf.getnames()
    assert not any(n.endswith("auth.json") or "log" in n for n in names), names
    # another home with sessions of its own, on the same machine (same project folder)
    new_home = world.base / "newuser" / ".codex"
    new_home.mkdir(parents=True)
    world.home = new_home
    world.homes.append(new_home)
    world.set_provider("mockA")
    own = world.make_threads(2, cwd=t["proj"], prompt="new home task")
    world.stop_home_processes()
    imp = world.script("session_import.py", "--from", str(archive), "--apply", "--json")
    assert imp.returncode == 0, imp.stdout + imp.stderr
    assert json.loads(imp.stdout)["result"]["imported_threads"] == 5
    assert snapshot(old_home) == before
    return t, ids, own, before_surfaces


def test_export_a_project_folder_and_import_it_elsewhere(world):
    t, ids, own, before = _export_and_import(world)
    after = _surfaces(world, t, ids)
    assert after == before, (before, after)
    assert before["names"][t["named"]] == "Parser rewrite" and before["archived"] == [t["archived"]]
    assert before["turns"][t["named"]] == 2 and before["turns"][t["fork"]] >= 3
    assert sorted(set(world.listed_ids()) - set(ids)) == sorted(own)
    resumed = world.resume_and_turn(t["fork"], "continued in the other home", cwd=t["proj"])
    assert resumed.error == "" and resumed.turns_after == resumed.turns_before + 1


def test_export_brings_goals_sub_agent_edges_and_projects(world):
    t, ids, _own, _before = _export_and_import(world)
    with world.app(t["proj"]) as app:
        goal = app.request("thread/goal/get", {"threadId": t["parent"]})["goal"]
        assert goal["objective"] == "ship the parser"
        assert [x["id"] for x in app.list_threads(parentThreadId=t["parent"])] == [t["child"]]
        projects = app.request("project/list", {})["data"]
        assert [p["name"] for p in projects] == ["Proj"]
        project = app.request("project/read", {"projectId": projects[0]["id"]})["project"]
        assert [r["path"] for r in project["roots"]] == [str(t["proj"])]
        assert [x["id"] for x in app.list_threads(projectId=projects[0]["id"])] == [t["named"]]


def test_export_while_codex_has_the_home_open(world):
    """An editor's app-server holds the DBs open (WAL and -shm): the export changes not a byte or
    mtime of the DBs, their -wal/-shm or the rollouts, and the archive holds what Codex committed
    (the -shm case that does change under an in-place reader: test_export.py's live-WAL test)."""
    proj = world.project("proj")
    with world.app(proj) as app:
        ids = [app.start_thread(proj, f"live {i}") for i in range(2)]
        assert (world.home / "state_5.sqlite-shm").exists()
        # the -shm is shared memory the running app-server writes itself (its read marks), so here
        # only its mtime and mode are compared; its bytes are checked where no Codex holds the DB
        # (test_export.py::test_source_unchanged_byte_for_byte_with_live_wal)
        watched = lambda: {k: (v[1:] if k.endswith("-shm") else v)  # noqa: E731
                           for k, v in snapshot(world.home).items()
                           if k.startswith(("state_5.sqlite", "thread_history_1.sqlite", "goals_1.sqlite",
                                            "queue_1.sqlite", "sessions/", "session_index"))}
        before = settled(watched)  # the app-server's own writes after its turns are over first
        archive = world.base / "live.zip"
        proc = world.script("session_export.py", "--folder", str(proj), "--to", str(archive), "--apply", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert watched() == before
        assert sorted(json.loads(proc.stdout)["thread_ids"]) == sorted(ids)
        read = app.read_thread(ids[0])
    from sessionkit.fixes.export import verify_archive
    manifest = verify_archive(archive)
    assert sorted(t["id"] for t in manifest["threads"]) == sorted(ids) and len(read["turns"]) == 1
