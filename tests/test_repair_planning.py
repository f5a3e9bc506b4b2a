"""The repair's planning (issues 19, 20, 22): every state DB of a home planned from one picture of
the home after the run, one skip-one-thread path for every row change, two fixes of one thread in
one run, archived stays archived, exits that tell the truth, and read-only that is read-only."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import snapshot
from homebuilder import HomeBuilder
from test_migrate_rollback import run


def repair(home, *args, env=None, codes=(0, 1)):
    proc = run("session_repair.py", home, "--json", *args, env=env)
    assert proc.returncode in codes, proc.stderr + proc.stdout[-2000:]
    return json.loads(proc.stdout)


# ---- issue 19: a stale -shm is read without being rewritten ---------------------------------

def _killed_after_commit(db: Path, *statements: str) -> None:
    """A writer that committed into the WAL and was killed: its -wal and its (now stale) -shm stay."""
    code = ("import sqlite3, os, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('PRAGMA journal_mode=WAL')\n"
            "c.execute('PRAGMA wal_autocheckpoint=0')\n"
            "for s in sys.argv[2:]:\n"
            "    c.execute(s)\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(db), *statements], check=True)
    assert Path(str(db) + "-wal").stat().st_size > 0 and Path(str(db) + "-shm").is_file()


def test_a_stale_shm_is_read_and_no_byte_or_mtime_of_the_db_its_wal_or_shm_changes(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"], wal=True)
    hb.add(provider="oldco")
    hb.add(provider="oldco", archived=True)
    other = hb.root / "sqlite"
    other.mkdir()
    shutil.copy(hb.db_path, other / "state_5.sqlite")
    _killed_after_commit(other / "state_5.sqlite", "DELETE FROM threads")
    _killed_after_commit(hb.root / "thread_history_1.sqlite",
                         "CREATE TABLE thread_turns (thread_id TEXT, turn_id TEXT, rollout_ordinal INTEGER, "
                         "rollout_byte_offset INTEGER, rollout_end_byte_offset INTEGER)",
                         "CREATE TABLE thread_history_projection_state (thread_id TEXT, "
                         "next_rollout_byte_offset INTEGER)")
    _killed_after_commit(hb.db_path, "UPDATE threads SET model_provider='inwal'")
    time.sleep(0.02)  # an mtime written by a read would differ from the writer's
    before = snapshot(hb.root)
    for db in ("state_5.sqlite", "thread_history_1.sqlite", "sqlite/state_5.sqlite"):
        assert {db, db + "-wal", db + "-shm"} <= set(before)
    audit = json.loads(run("session_audit.py", hb.root, "--json").stdout)
    assert audit["distribution"]["model_provider"] == {"inwal": 2}  # the rows the WAL holds
    repair(hb.root)
    assert snapshot(hb.root) == before
