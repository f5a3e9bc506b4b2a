"""Thread ids normalised once where they enter (codexfiles/ids.py): the rollout walk, the DB row
reader, the lock scan and command-line arguments; the stored id is kept for the SQL that finds
the row. A hand-edited upper-case id is the same thread everywhere."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from sessionkit.codexfiles.ids import norm_id, norm_ids  # noqa: E402
from sessionkit.codexfiles.rollout_index import build_index  # noqa: E402
from sessionkit.codexfiles.statedb import ThreadRow, load_threads  # noqa: E402
from sessionkit.ui.cli import thread_id_arg  # noqa: E402
from homebuilder import HomeBuilder  # noqa: E402

UP = "0195AAAA-0000-7000-8000-0000000000AB"


def test_norm_id_is_the_one_form_and_keeps_a_lower_case_id_as_it_is():
    low = UP.lower()
    assert norm_id(UP) == low and norm_id(low) is low and norm_ids([UP, low]) == {low}
    assert thread_id_arg(UP) == low


def test_rows_keep_their_stored_id_and_compare_by_key(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add()
    hb.sql("UPDATE threads SET id=? WHERE id=?", (UP, t.id))
    (row,) = load_threads(hb.db_path)
    assert (row.id, row.key) == (UP, UP.lower())  # the SQL finds UP; every comparison uses the key
    assert ThreadRow(UP, "/x", False, "p", "/w", "cli").key == UP.lower()


def test_the_walk_names_a_thread_in_one_form(tmp_path):
    folder = tmp_path / "sessions" / "2026" / "01" / "02"
    folder.mkdir(parents=True)
    (folder / f"rollout-2026-01-02T03-04-05-{UP}.jsonl").write_text("{}\n", encoding="utf-8")
    index = build_index(tmp_path)
    assert list(index.by_thread) == [UP.lower()] and index.files[0].thread_id == UP.lower()


def test_a_held_writer_lock_names_its_thread_in_one_form(tmp_path):
    from sessionkit.codexfiles.locks import scan_activity
    from sessionkit.codexfiles.writerlock import WriterLocks
    HomeBuilder(tmp_path / ".codex")
    locks = WriterLocks(tmp_path / ".codex")
    assert locks.take(UP) is None
    try:
        activity = scan_activity(tmp_path / ".codex", environ={"CODEX_THREAD_ID": UP})
    finally:
        locks.release_all()
    assert activity.live_threads == {UP.lower()} and activity.agent_thread_id == UP.lower()
    assert activity.why_live(UP) is None  # the agent's own lock, matched whatever the case


def _upper_home(tmp_path, **kw):
    """A home whose one thread's row was hand-edited to an upper-case id (its file keeps the lower one)."""
    from sessionkit.codexfiles.home import open_home
    from sessionkit.diagnose.snapshot import gather
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add(**kw)
    hb.sql("UPDATE threads SET id=? WHERE id=?", (t.id.upper(), t.id))
    return hb, t, gather(open_home(str(hb.root), None))


def test_a_plan_carries_the_key_once_and_writes_the_row_by_its_stored_id(tmp_path):
    from sessionkit.fixes.repair import apply_repair, plan_repair, resolve_threads
    hb, t, inputs = _upper_home(tmp_path, archived=True)
    up = t.id.upper()
    assert resolve_threads(inputs, [up]) == [t.id]  # an argument: normalised as it enters
    plan = plan_repair(inputs, unarchive=[t.id], thread_ids=[t.id])
    assert [(m.thread_id, m.key, m.why) for m in plan.moves] == [(up, t.id, "unarchive")]
    assert [(r.thread_id, r.key) for r in plan.rows] == [(up, t.id)] and plan.skipped == []
    apply_repair(inputs, plan)
    assert hb.sql("SELECT id, archived FROM threads") == [(up, 0)]


def test_a_live_upper_case_row_is_left_out_whole_by_its_key(tmp_path):
    from sessionkit.codexfiles.home import open_home
    from sessionkit.codexfiles.reasons import LIVE_MOVE
    from sessionkit.codexfiles.writerlock import WriterLocks
    from sessionkit.diagnose.snapshot import gather
    from sessionkit.fixes.repair import plan_repair
    hb, t, _inputs = _upper_home(tmp_path, archived=True)
    locks = WriterLocks(hb.root)
    assert locks.take(t.id.upper()) is None  # a Codex holds it, named in another case
    try:
        inputs = gather(open_home(str(hb.root), None))
    finally:
        locks.release_all()
    plan = plan_repair(inputs, unarchive=[t.id])
    assert (plan.moves, plan.rows, plan.left) == ([], [], {t.id})
    assert [(tid, why.startswith(LIVE_MOVE[:20])) for tid, why in plan.skipped] == [(t.id.upper(), True)]


def test_a_lost_name_of_an_upper_case_row_is_restored_on_that_row(tmp_path):
    from sessionkit.diagnose.history_check import HistoryCheck
    from sessionkit.fixes.history_reset import plan_history
    from sessionkit.fixes.repair import apply_repair, plan_repair
    hb, t, inputs = _upper_home(tmp_path)
    up = t.id.upper()
    hplan = plan_history(inputs, HistoryCheck(names_lost={up: "my name"}), thread_ids=[t.id])
    assert hplan.names == [(up, "my name")]  # asked by its key, named by the row's stored id
    plan = plan_repair(inputs, names=hplan.names, thread_ids=[t.id])
    assert [(r.thread_id, r.key, r.new) for r in plan.rows] == [(up, t.id, {"name": "my name"})]
    apply_repair(inputs, plan)
    assert hb.sql("SELECT id, name FROM threads") == [(up, "my name")]


def test_spawn_links_read_in_any_case_are_one_family():
    from sessionkit.codexfiles.thread_graph import spawn_parent, sub_agents
    child = UP.replace("AB", "CD")
    source = '{"subagent":{"thread_spawn":{"parent_thread_id":"%s","depth":1}}}' % UP
    assert spawn_parent(source) == UP.lower()
    subs = sub_agents([ThreadRow(child, "/x", False, "p", "/w", source)], [])
    assert subs.parent_of == {child.lower(): UP.lower()} and subs.descendants([UP.lower()]) == [child.lower()]
