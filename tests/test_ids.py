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
