"""Sub-agents judged by the real Codex CLI 0.171 (a real `spawn_agent` through the app-server): a
provider migration of a parent named on the command line moves its sub-agent with it, and
`thread/list {parentThreadId}` and `thread/read` show both on the new provider, then on the old one
after the rollback; a rollback that finds the sub-agent changed since leaves the parent alone too."""
import json
import time

from mock_model import text_reply
from test_e2e_export import _spawning_model


def _parent_with_child(world):
    """On mockA: a parent whose real sub-agent ran (its spawn edge and its own rollout), and one
    unrelated thread."""
    world.set_provider("mockA")
    proj = world.project("proj")
    world.server.reply = _spawning_model
    with world.app(proj) as app:
        parent = app.start_thread(proj, "please SPAWN a helper")
        for _ in range(100):
            children = [t["id"] for t in app.list_threads(parentThreadId=parent)]
            if children:
                break
            time.sleep(0.1)
        assert len(children) == 1, children
        other = app.start_thread(proj, "nothing to do with it")
    world.server.reply = text_reply()
    world.stop_home_processes()
    return parent, children[0], other


def _seen(world, parent, child, other):
    """What Codex shows: the parent's sub-agents, each thread's provider and parent on read, and
    the default (current provider) list."""
    with world.app() as app:
        kids = sorted(t["id"] for t in app.list_threads(parentThreadId=parent))
        read = {t: app.read_thread(t) for t in (parent, child, other)}
        listed = sorted(t["id"] for t in app.list_threads())
    return {"children": kids, "providers": {t: r["modelProvider"] for t, r in read.items()},
            "child_parent": read[child]["parentThreadId"], "listed": listed,
            "turns": {t: len(r["turns"]) for t, r in read.items()}}


def test_a_named_parent_migrates_with_its_sub_agent_and_both_roll_back(world):
    parent, child, other = _parent_with_child(world)
    world.set_provider("mockB")
    before = _seen(world, parent, child, other)
    assert before["children"] == [child] and before["providers"] == dict.fromkeys([parent, child, other], "mockA")
    assert before["listed"] == []  # the editors hide every mockA thread
    world.stop_home_processes()
    dry = json.loads(world.script("provider_migrate.py", "--thread-id", parent, "--json").stdout)
    assert (dry["candidates"], dry["skipped"]) == (2, 0), dry
    out = world.script("provider_migrate.py", "--thread-id", parent, "--apply", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["result"]["line1_rewritten"] == 2
    after = _seen(world, parent, child, other)
    assert after["children"] == [child] and after["child_parent"] == parent
    assert after["providers"] == {parent: "mockB", child: "mockB", other: "mockA"}
    assert parent in after["listed"] and other not in after["listed"]
    assert after["turns"] == before["turns"]
    world.stop_home_processes()
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    undone = _seen(world, parent, child, other)
    assert undone == before, (before, undone)


def test_a_rollback_that_finds_the_sub_agent_changed_leaves_the_parent_alone(world):
    parent, child, other = _parent_with_child(world)
    world.set_provider("mockB")
    out = world.script("provider_migrate.py", "--apply", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    world.db("UPDATE threads SET model_provider='mockC' WHERE id=?", (child,))  # changed since the run
    rb = world.script("rollback.py", "--latest", "--apply", "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    conflicts = json.loads(rb.stdout)["conflict_sample"]
    assert any(c.startswith(f"{parent}: left alone with {child}") for c in conflicts), conflicts
    assert any(c.startswith(f"{child}: ") for c in conflicts), conflicts
    seen = _seen(world, parent, child, other)
    assert seen["children"] == [child] and seen["child_parent"] == parent
    assert seen["providers"][parent] == "mockB" and seen["providers"][other] == "mockA"
    assert parent in seen["listed"]
