"""An import's dry-run reads SRC's DBs where they lie, read-only (issue 24: no private copy for a
plan), and that read changes nothing: a stale -shm is neither rewritten nor created; a DB that
open_readonly refuses (a writer's unfinished journal) is still read, through the private copy."""
import shutil
import sqlite3
import time
from pathlib import Path

from harness import snapshot
from homebuilder import HomeBuilder
from test_import import plan_json
from test_repair_planning import _killed_after_commit


def _homes(tmp_path):
    src = HomeBuilder(tmp_path / "old" / ".codex", provider="newco", providers=["newco"], wal=True)
    made = [src.add(provider="newco", preview="first"), src.add(provider="newco", preview="second")]
    dest = HomeBuilder(tmp_path / "new" / ".codex", provider="newco", providers=["newco"])
    return src, dest, made


def test_a_dry_run_reads_a_stale_shm_in_place_and_changes_no_byte_or_mtime(tmp_path):
    src, dest, made = _homes(tmp_path)
    _killed_after_commit(src.db_path, "UPDATE threads SET model_provider='inwal', title='from the wal'")
    time.sleep(0.02)  # an mtime written by a read would differ from the writer's
    before = snapshot(src.root)
    assert {"state_5.sqlite", "state_5.sqlite-wal", "state_5.sqlite-shm"} <= set(before)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    plan = plan_json(dest.root, "--from", str(src.root), env={"TMPDIR": str(scratch)})
    assert plan["to_import"] == 2
    assert sorted(t["title"] for t in plan["imports_sample"]) == ["from the wal", "from the wal"]  # the WAL's rows
    assert snapshot(src.root) == before
    assert list(scratch.iterdir()) == []


def test_a_dry_run_reads_a_wal_without_shm_and_creates_none(tmp_path):
    src, dest, _made = _homes(tmp_path)
    _killed_after_commit(src.db_path, "UPDATE threads SET title='only in the wal'")
    Path(str(src.db_path) + "-shm").unlink()
    before = snapshot(src.root)
    plan = plan_json(dest.root, "--from", str(src.root))
    assert sorted(t["title"] for t in plan["imports_sample"]) == ["only in the wal", "only in the wal"]
    assert snapshot(src.root) == before
    assert not Path(str(src.db_path) + "-shm").exists()


def test_a_hot_journal_is_read_through_the_private_copy(tmp_path):
    """open_readonly refuses a DB a writer left mid-transaction; the plan still reads its rows (as
    the copy always did) and SRC keeps every byte, the journal included."""
    src, dest, _made = _homes(tmp_path)
    conn = sqlite3.connect(str(src.db_path))
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    for extra in ("-wal", "-shm"):
        Path(str(src.db_path) + extra).unlink(missing_ok=True)
    Path(str(src.db_path) + "-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\x00" * 504)
    before = snapshot(src.root)
    plan = plan_json(dest.root, "--from", str(src.root))
    assert plan["to_import"] == 2
    assert sorted(t["title"] for t in plan["imports_sample"]) == ["first", "second"]
    assert snapshot(src.root) == before
