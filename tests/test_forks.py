"""The thread graph (sessionkit/codexfiles/thread_graph.py): a fork and the parent it records byte offsets into
are changed together or not at all; a fork Codex makes after a growing run keeps the rollback from
cutting its history (the parent is left alone and named); and history offsets are read again under
the thread's writer lock, so a turn Codex adds between batches moves with its file."""
import json
import os
import time
import uuid
from datetime import datetime

import pytest

from test_faults import frun
from test_migrate_rollback import home_state
from test_remap_turn_context import OLD, _home, _index_turns, _offsets, _turn_starts, state

from homebuilder import HomeBuilder

LONGER = "a-much-longer-provider"


def _fork_of(hb, parent, end, fork_id=None, when=None):
    """A fork as Codex writes one: line 1 names the parent and the byte offset of its end at the
    fork (history_base), then the fork's own turn. `when`: now (a fork made after a run, its id a
    UUIDv7 of now and its file in today's folder), else a HomeBuilder thread."""
    if when is None:
        child = hb.add(provider="oldco", preview="the fork")
        path, tid = child.path, child.id
    else:
        ms = int(when * 1000)
        h = f"{ms:012x}" + uuid.uuid4().hex[12:]
        tid = str(uuid.UUID(h[:12] + "7" + h[13:16] + "8" + h[17:]))
        stamp = datetime.fromtimestamp(when)
        path = hb.root / "sessions" / stamp.strftime("%Y/%m/%d") / \
            f"rollout-{stamp.strftime('%Y-%m-%dT%H-%M-%S')}-{tid}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(parent.path.read_bytes().split(b"\n", 1)[0] + b"\n" +
                         b'{"type":"turn_context","payload":{"cwd":"/work/proj"}}\n')
    first, rest = path.read_bytes().split(b"\n", 1)
    meta = json.loads(first)
    p = meta["payload"]
    p.pop("id")
    meta["payload"] = {"id": tid, "forked_from_id": parent.id, **p,
                       "history_base": {"thread_id": parent.id, "end_byte_offset": end}}
    path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + rest)
    return tid, path


def _base(path):
    return json.loads(path.read_bytes().split(b"\n", 1)[0])["payload"]["history_base"]["end_byte_offset"]


@pytest.fixture
def split(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco", LONGER])
    old = [hb.add(provider="oldco", preview=f"old {i}") for i in range(2)]
    return hb, old


def test_a_growing_migration_moves_a_fork_and_its_fork_and_rolls_all_back(split):
    hb, old = split
    end = old[0].path.stat().st_size
    child, child_path = _fork_of(hb, old[0], end)
    grandchild_end = child_path.stat().st_size
    from homebuilder import Thread
    grand, grand_path = _fork_of(hb, Thread(child, child_path, "oldco", "/work/proj", "cli", False,
                                             datetime(2025, 3, 1)), grandchild_end)
    before = home_state(hb.root)
    out = json.loads(frun("provider_migrate.py", hb.root, "--target-provider", LONGER, "--json").stdout)
    assert out["forks_moved"] == 2 and out["skipped"] == 0
    done = frun("provider_migrate.py", hb.root, "--target-provider", LONGER, "--apply", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    grown = len(LONGER) - len("oldco")
    assert old[0].path.stat().st_size == end + grown and _base(child_path) == end + grown
    assert child_path.stat().st_size == grandchild_end + grown and _base(grand_path) == grandchild_end + grown
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert home_state(hb.root) == before


def test_a_fork_that_cannot_be_written_keeps_its_parent_as_it_was(split):
    """The fork's rollout has a second hard link (never written through): its parent, whose growth
    would leave the fork pointing at the wrong bytes, is skipped with it, named."""
    hb, old = split
    child, child_path = _fork_of(hb, old[0], old[0].path.stat().st_size)
    os.link(child_path, hb.root / "backup-copy.jsonl")
    parent_bytes = old[0].path.read_bytes()
    out = json.loads(frun("provider_migrate.py", hb.root, "--target-provider", LONGER, "--apply", "--json").stdout)
    reasons = {s["thread_id"]: s["reason"] for s in out["result"]["skipped_at_apply"]}
    assert "hard links" in reasons[child] and reasons[old[0].id].startswith(f"skipped with {child}: ")
    assert old[0].path.read_bytes() == parent_bytes
    assert hb.sql("SELECT model_provider FROM threads WHERE id=?", (old[0].id,)) == [("oldco",)]
    assert hb.sql("SELECT model_provider FROM threads WHERE id=?", (old[1].id,)) == [(LONGER,)]


def test_a_fork_made_after_a_growing_run_keeps_the_rollback_from_cutting_it(split):
    """Codex forks the grown parent after the migration (its history_base names the grown end):
    the rollback leaves the parent alone, names the fork and the reason, and exits 1; the other
    thread is rolled back."""
    hb, old = split
    done = frun("provider_migrate.py", hb.root, "--target-provider", LONGER, "--apply", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    time.sleep(0.01)
    grown = old[0].path.read_bytes()
    fork, fork_path = _fork_of(hb, old[0], len(grown), when=time.time())
    fork_bytes = fork_path.read_bytes()
    rb = frun("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    text = rb.stdout
    assert fork in text and "forked since the run" in text and old[0].id in text
    assert old[0].path.read_bytes() == grown and fork_path.read_bytes() == fork_bytes
    assert hb.sql("SELECT id, model_provider FROM threads ORDER BY id") == [(old[0].id, LONGER), (old[1].id, "oldco")]


def test_offsets_are_read_under_the_writer_lock_when_codex_adds_a_turn_between_batches(tmp_path, monkeypatch):
    """One thread per batch; between the batches Codex continues the second thread (a turn and its
    history rows). Its new turn's offsets move with the rewrite, and back with the rollback."""
    from sessionkit.codexfiles import faults
    from sessionkit.runlog import writerun
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.repair import apply_repair, plan_repair
    from sessionkit.diagnose.snapshot import gather
    import sqlite3
    hb, threads = _home(tmp_path, n=2)
    second = threads[1]

    def codex_continues(label):
        if label != "batch":
            return
        with open(second.path, "ab") as fh:
            fh.write(b'{"timestamp":"2026-01-01T00:00:00Z","type":"turn_context","payload":{"turn_id":"late",'
                     b'"cwd":"/home/newuser2/proj"}}\n{"type":"response_item","payload":{"type":"message"}}\n')
        conn = sqlite3.connect(str(hb.root / "thread_history_1.sqlite"))
        _index_turns(conn, second.id, second.path.read_bytes())
        conn.commit()
        conn.close()

    monkeypatch.setattr(writerun, "locks_beside_home_lock", lambda n: 1)
    home = open_home(str(hb.root))
    inputs = gather(home)
    plan = plan_repair(inputs, unarchive=False, remaps=[(OLD, "/home/newuser2")])
    faults.install(codex_continues)
    try:
        result = apply_repair(inputs, plan)
    finally:
        faults.install(None)
    journal = [json.loads(x) for x in open(result["journal"])]
    assert [r["n"] for r in journal if r["op"] == "batch"] == [1, 2]

    def offsets_match(t):
        data = t.path.read_bytes()
        starts = _turn_starts(data)
        turns, proj = _offsets(hb.root, t.id)
        return [o for o, _ in turns] == starts and [e for _, e in turns] == starts[1:] + [len(data)] \
            and proj == len(data)
    assert len(_turn_starts(second.path.read_bytes())) == 4
    assert offsets_match(threads[0]) and offsets_match(second)
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert b'"cwd":"/home/olduser/proj"' in second.path.read_bytes()
    assert offsets_match(threads[0]) and offsets_match(second)


def test_a_fork_goes_in_its_parents_batch(split, monkeypatch):
    """One thread per batch where the open-file limit is low: a fork still goes with its parent
    (their locks held together), so neither is changed without the other."""
    from sessionkit.runlog import writerun
    from sessionkit.codexfiles.home import open_home
    from sessionkit.fixes.migrate import apply_migration, plan_migration
    from sessionkit.diagnose.snapshot import gather
    hb, old = split
    child, child_path = _fork_of(hb, old[0], old[0].path.stat().st_size)
    monkeypatch.setattr(writerun, "locks_beside_home_lock", lambda n: 1)
    inputs = gather(open_home(str(hb.root)))
    result = apply_migration(inputs, plan_migration(inputs, target=LONGER))
    batches = [json.loads(x) for x in open(result["journal"]) if '"op": "batch"' in x or '"op":"batch"' in x]
    assert [(b["n"], b["threads"]) for b in batches] == [(1, 2), (2, 1)]
    assert _base(child_path) == old[0].path.stat().st_size


def test_a_rollback_that_cannot_lock_the_fork_leaves_its_parent_alone_too(split):
    """The fork's writer lock is held while the rollback runs: undoing the parent alone would leave
    the fork pointing into bytes that are gone, so both stay as the run left them, both named."""
    from sessionkit.codexfiles.writerlock import WriterLocks
    hb, old = split
    child, child_path = _fork_of(hb, old[0], old[0].path.stat().st_size)
    done = frun("provider_migrate.py", hb.root, "--target-provider", LONGER, "--apply", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    journal = json.loads(done.stdout)["result"]["journal"]
    recs = [json.loads(x) for x in open(journal)]
    assert [r.get("with") for r in recs if r["op"] == "rollout_rewrite"] == [[old[0].id]]
    after = {p: p.read_bytes() for p in (old[0].path, child_path)}
    locks = WriterLocks(hb.root)
    assert locks.take(child) is None
    try:
        rb = frun("rollback.py", hb.root, "--latest", "--apply", "--force", "--json")
    finally:
        locks.release_all()
    assert rb.returncode in (0, 1), rb.stdout + rb.stderr  # the printed state: rollback.py's (another fix)
    undone = [json.loads(x) for x in open(journal)][-1]
    assert (undone["op"], undone["conflicts"], undone["undone"]) == ("undone", 2, 2)  # the fork and its parent
    assert {p: p.read_bytes() for p in after} == after
    assert hb.sql("SELECT id, model_provider FROM threads ORDER BY id") == \
        [(old[0].id, LONGER), (old[1].id, "oldco"), (child, LONGER)]
