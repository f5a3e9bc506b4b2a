"""Sub-agents in the thread graph (codexfiles/thread_graph.py, fixes/forks.py): a thread, its
sub-agents and theirs are planned, locked, changed and rolled back together. A thread named on the
command line brings its sub-agents; one a filter keeps out is named; one Codex holds open keeps the
whole group out; a rollback that finds one member changed since leaves the whole group alone, named."""
import json
import os
import sys
from pathlib import Path

import pytest

from test_faults import frun
from test_migrate_rollback import home_state
from homebuilder import HomeBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from sessionkit.codexfiles.thread_graph import SubAgents, spawn_edges, spawn_parent, sub_agents  # noqa: E402
from sessionkit.fixes.forks import join_groups, left_behind, live_groups, with_sub_agents  # noqa: E402
from sessionkit.runlog.ops import Line1Rewrite, RowUpdate, group_of  # noqa: E402
from sessionkit.runlog.registry import op_from_record  # noqa: E402
from sessionkit.ui.cli import thread_id_arg  # noqa: E402


def _source(parent):
    return json.dumps({"subagent": {"thread_spawn": {"parent_thread_id": parent, "depth": 1, "agent_path": None,
                                                     "agent_nickname": "Gauss", "agent_role": None}}},
                      separators=(",", ":"))


@pytest.fixture
def family(tmp_path):
    """oldco: a parent P, its sub-agent C (edge and source), C's own sub-agent G (edge only), and an
    unrelated thread O; the home's provider is newco."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    p = hb.add(provider="oldco", preview="parent")
    c = hb.add(provider="oldco", preview="child", source=_source(p.id))
    g = hb.add(provider="oldco", preview="grandchild")
    o = hb.add(provider="oldco", preview="other")
    hb.sql("INSERT INTO thread_spawn_edges VALUES (?,?,'open'),(?,?,'closed')", (p.id, c.id, c.id, g.id))
    return hb, p, c, g, o


def _rows(hb):
    return dict(hb.sql("SELECT id, model_provider FROM threads"))


def _journal(out):
    return [json.loads(x) for x in open(json.loads(out)["result"]["journal"])]


def test_spawn_links_come_from_the_edges_and_from_a_rows_source(family):
    hb, p, c, g, o = family
    assert spawn_edges(hb.db_path) == [(p.id, c.id), (c.id, g.id)]
    assert spawn_parent(_source(p.id)) == p.id and spawn_parent("vscode") is None and spawn_parent('{"x"') is None

    class Row:
        def __init__(self, id, source):
            self.id, self.source, self.key = id, source, id.lower()  # as ThreadRow: normalised where read
    only_source = sub_agents([Row("B", _source("A"))], [])
    assert only_source.parent_of == {"b": "a"} and only_source.descendants(["a"]) == ["b"]
    subs = sub_agents([Row(c.id, _source(p.id))], spawn_edges(hb.db_path))
    assert subs.descendants([p.id]) == [c.id, g.id] and subs.descendants([g.id]) == []
    assert subs.top_in(g.id, {p.id, c.id, g.id}) == p.id and subs.top_in(g.id, {c.id, g.id}) == c.id
    assert subs.top_in(p.id, {p.id, c.id}) is None
    cycle = sub_agents([], [("x", "y"), ("y", "x")])  # a hostile DB: every walk ends
    assert cycle.descendants(["x"]) == ["y"] and cycle.top_in("x", {"x", "y"}) == "y"
    assert with_sub_agents([thread_id_arg(p.id.upper())], subs) == {p.id, c.id, g.id}  # normalised as it enters
    assert live_groups([p.id, o.id], [g.id], subs) == {p.id: g.id}
    assert left_behind([p.id], subs, {g.id: "it is archived"}) == \
        [f"sub-agent {g.id} of {c.id} is left as it is: it is archived"]


def test_ops_record_the_group_and_one_batch_holds_it_in_any_order():
    subs = sub_agents([], [("p", "c"), ("c", "g")])
    ops = [RowUpdate("/h/state_5.sqlite", "threads", {"id": t}, {"model_provider": "a"}, {"model_provider": "b"}, t)
           for t in ("g", "c", "x", "p")]
    ops.append(Line1Rewrite("g", "/h/sessions/r.jsonl", {"model_provider": "b"}))
    assert join_groups(ops, subs) == [("c", "p"), ("g", "p")]
    assert [o.together() for o in ops] == [["p"], ["p"], [], [], ["p"]]
    key = group_of(ops)
    assert {key(o) for o in ops if o.thread_id != "x"} == {key(ops[3])} and key(ops[2]) == "x"
    back = [op_from_record(json.loads(json.dumps(o.to_record()))) for o in ops]
    assert [o.together() for o in back] == [["p"], ["p"], [], [], ["p"]]
    assert "with" not in ops[2].to_record()  # a thread of no group: its record as before


def test_a_named_parent_migrates_with_its_sub_agents_and_rolls_back_with_them(family):
    hb, p, c, g, o = family
    before = home_state(hb.root)
    dry = json.loads(frun("provider_migrate.py", hb.root, "--thread-id", p.id, "--json").stdout)
    assert (dry["candidates"], dry["skipped"]) == (3, 0)
    done = frun("provider_migrate.py", hb.root, "--thread-id", p.id, "--apply", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rows(hb) == {p.id: "newco", c.id: "newco", g.id: "newco", o.id: "oldco"}
    assert all(b'"model_provider":"newco"' in t.path.read_bytes().split(b"\n")[0] for t in (p, c, g))
    recs = _journal(done.stdout)
    withs = {(r["op"], r["thread_id"]): r.get("with") for r in recs if r["op"] in ("line1", "row_update")}
    assert withs == {("line1", p.id): None, ("row_update", p.id): None, ("line1", c.id): [p.id],
                     ("row_update", c.id): [p.id], ("line1", g.id): [p.id], ("row_update", g.id): [p.id]}
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before


def test_a_sub_agent_a_filter_keeps_out_is_named(family):
    hb, p, c, g, o = family
    hb.sql("UPDATE threads SET archived=1 WHERE id=?", (g.id,))
    dry = json.loads(frun("provider_migrate.py", hb.root, "--thread-id", p.id, "--json").stdout)
    assert dry["candidates"] == 2
    assert f"sub-agent {g.id} of {c.id} is left as it is: it is archived (add --include-archived to move it too)" \
        in dry["warnings"]
    hb.sql("UPDATE threads SET archived=0, model_provider='third' WHERE id=?", (g.id,))
    dry = json.loads(frun("provider_migrate.py", hb.root, "--from-provider", "oldco", "--json").stdout)
    assert dry["candidates"] == 3
    assert [w for w in dry["warnings"] if w.startswith("sub-agent")] == \
        [f"sub-agent {g.id} of {c.id} is left as it is: its provider 'third' is not a --from-provider"]


def test_a_sub_agent_codex_holds_open_keeps_its_whole_group_out(family):
    from sessionkit.codexfiles.writerlock import WriterLocks
    hb, p, c, g, o = family
    locks = WriterLocks(hb.root)
    assert locks.take(g.id) is None
    try:
        done = frun("provider_migrate.py", hb.root, "--apply", "--force", "--json")
    finally:
        locks.release_all()
    assert done.returncode in (0, 1), done.stdout + done.stderr
    out = json.loads(done.stdout)
    skipped = {s["thread_id"]: s["reason"] for s in out["skipped_sample"]}
    assert sorted(skipped) == sorted([p.id, c.id, g.id])
    assert skipped[p.id].startswith(f"skipped with {g.id}: live thread") and "live thread" in skipped[g.id]
    assert _rows(hb) == {p.id: "oldco", c.id: "oldco", g.id: "oldco", o.id: "newco"}


def test_a_member_that_fails_its_check_at_apply_keeps_the_group_out(family):
    """Planned together, then the sub-agent's rollout changes before the run: the parent is skipped
    with it (changed together or not at all), named."""
    from sessionkit.diagnose.snapshot import gather
    from sessionkit.fixes.migrate import apply_migration, plan_migration
    hb, p, c, g, o = family
    inputs = gather(_home(hb.root))
    plan = plan_migration(inputs, target="newco")
    with open(c.path, "ab") as fh:
        fh.write(b'{"type":"event_msg","payload":{"type":"note"}}\n')  # Codex appended a line since the plan
    result = apply_migration(inputs, plan)
    why = {s["thread_id"]: s["reason"] for s in result["skipped_at_apply"]}
    assert sorted(why) == sorted([p.id, c.id, g.id]), why
    assert why[p.id].startswith(f"skipped with {c.id}: ") and why[g.id].startswith("skipped with ")
    assert _rows(hb) == {p.id: "oldco", c.id: "oldco", g.id: "oldco", o.id: "newco"}


def test_a_rollback_that_finds_a_sub_agent_changed_leaves_its_group_alone_named(family):
    hb, p, c, g, o = family
    before = home_state(hb.root)
    done = frun("provider_migrate.py", hb.root, "--apply", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    hb.sql("UPDATE threads SET model_provider='third' WHERE id=?", (g.id,))  # changed since the run
    rb = frun("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    conflicts = json.loads(rb.stdout)["conflict_sample"]
    assert len(conflicts) == 3 and f"{p.id}: left alone with {g.id}" in conflicts[0], conflicts
    assert conflicts[1].startswith(f"{c.id}: left alone with ") and conflicts[2].startswith(f"{g.id}: row_update changed")
    assert _rows(hb) == {p.id: "newco", c.id: "newco", g.id: "third", o.id: "oldco"}
    assert all(b'"model_provider":"newco"' in t.path.read_bytes().split(b"\n")[0] for t in (p, c, g))
    hb.sql("UPDATE threads SET model_provider='newco' WHERE id=?", (g.id,))  # put back: now it all undoes
    again = frun("rollback.py", hb.root, "--latest", "--apply")
    assert again.returncode == 0, again.stdout + again.stderr
    assert home_state(hb.root) == before


def _home(root):
    from sessionkit.codexfiles.home import open_home
    return open_home(str(root))


def test_a_moved_home_remap_of_a_named_parent_brings_its_sub_agents(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    p = hb.add(provider="newco", cwd="/home/olduser/proj", preview="parent")
    c = hb.add(provider="newco", cwd="/home/olduser/proj", preview="child", source=_source(p.id))
    o = hb.add(provider="newco", cwd="/home/olduser/proj", preview="other")
    before = home_state(hb.root)
    done = frun("session_repair.py", hb.root, "--remap-prefix", "/home/olduser=/home/newuser", "--thread-id", p.id,
                "--apply", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert dict(hb.sql("SELECT id, cwd FROM threads")) == \
        {p.id: "/home/newuser/proj", c.id: "/home/newuser/proj", o.id: "/home/olduser/proj"}
    recs = _journal(done.stdout)
    assert {r["thread_id"]: r.get("with") for r in recs if r["op"] == "rollout_rewrite"} == {p.id: None, c.id: [p.id]}
    assert [r.get("with") for r in recs if r["op"] == "row_update" and r["thread_id"] == c.id] == [[p.id]]
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before


def test_a_sub_agent_goes_in_its_parents_batch_and_rolls_back_with_it(family, monkeypatch):
    """One thread per batch where the open-file limit is low: the group's writer locks are still
    held together (one batch), and the rollback undoes it in one batch too."""
    from sessionkit.runlog import writerun
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.migrate import apply_migration, plan_migration
    from sessionkit.diagnose.snapshot import gather
    hb, p, c, g, o = family
    before = home_state(hb.root)
    monkeypatch.setattr(writerun, "locks_beside_home_lock", lambda n: 1)
    inputs = gather(open_home(str(hb.root)))
    result = apply_migration(inputs, plan_migration(inputs, target="newco"))
    recs = [json.loads(x) for x in open(result["journal"])]
    batches = [(r["n"], r["threads"]) for r in recs if r["op"] == "batch"]
    assert batches == [(1, 3), (2, 1)]
    first = recs.index(next(r for r in recs if r["op"] == "batch" and r["n"] == 2))
    assert {r["thread_id"] for r in recs[:first] if r["op"] == "line1"} == {p.id, c.id, g.id}
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before


def test_a_kill_at_every_point_of_a_grouped_run_in_batches_is_undone(tmp_path, family):
    """At the lowest open-file limit (one writer lock per batch) the group of three still goes in
    one batch; a kill anywhere is undone by the one rollback."""
    from sessionkit.codexfiles.writerlock import SPARE_DESCRIPTORS
    from test_faults import _walk
    hb, p, c, g, o = family
    one_lock = f"nofile:{SPARE_DESCRIPTORS + 5 + 1}"
    labels = _walk(tmp_path, hb, "provider_migrate.py", ["--apply"], "kill", None, limit=one_lock)
    assert labels.count("file") == 4 and labels.count("batch") == 1, labels


def test_a_rollback_that_cannot_lock_the_parent_leaves_its_sub_agents_alone_too(family):
    from sessionkit.codexfiles.writerlock import WriterLocks
    hb, p, c, g, o = family
    done = frun("provider_migrate.py", hb.root, "--apply", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    journal = json.loads(done.stdout)["result"]["journal"]
    after = {t.path: t.path.read_bytes() for t in (p, c, g)}
    locks = WriterLocks(hb.root)
    assert locks.take(p.id) is None
    try:
        rb = frun("rollback.py", hb.root, "--latest", "--apply", "--force", "--json")
    finally:
        locks.release_all()
    assert rb.returncode == 1, rb.stdout + rb.stderr
    undone = [json.loads(x) for x in open(journal)][-1]
    assert (undone["op"], undone["conflicts"]) == ("undone", 3)
    assert sorted(x.split(":")[0] for x in undone["left"]) == sorted([p.id, c.id, g.id])
    assert {t: t.read_bytes() for t in after} == after
    assert _rows(hb) == {p.id: "newco", c.id: "newco", g.id: "newco", o.id: "oldco"}
