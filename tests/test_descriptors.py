"""Every writer lock is an open file held while its thread changes: a run larger than the open-file
limit raises the limit, or goes in batches of threads that fit, and never stops halfway or skips
sessions; only a limit too low for even one lock is refused, before anything is written."""
import json
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import readable_scripts, snapshot
from homebuilder import HomeBuilder
from test_migrate_rollback import home_state
from test_odd_input import _nobody_python

SESSIONS = 300


def _home_owned_by_nobody() -> tuple:
    base = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="descriptors-"))
    os.chmod(base, 0o755)
    hb = HomeBuilder(base / ".codex", provider="newco", providers=["newco", "oldco"])
    ids = [hb.add(provider="oldco", preview=f"old {i}").id for i in range(SESSIONS)]
    for dirpath, _dirs, files in os.walk(base):
        os.chown(dirpath, 65534, 65534)
        for f in files:
            os.chown(os.path.join(dirpath, f), 65534, 65534)
    return base, hb, ids


def _as_nobody(py: str, script: str, home: Path, soft: int, hard: int, *args: str) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py,
                           str(readable_scripts() / script), "--codex-dir", str(home), *args],
                          capture_output=True, text=True, check=False, preexec_fn=limit,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(home.parent)})


def _migrate_as_nobody(py: str, home: Path, soft: int, hard: int) -> subprocess.CompletedProcess:
    return _as_nobody(py, "provider_migrate.py", home, soft, hard, "--apply", "--json")


def _journal(result: dict) -> list:
    return [json.loads(line) for line in Path(result["journal"]).read_text().splitlines()]


@pytest.fixture
def nobody_py():
    py = _nobody_python()
    if py is None:
        pytest.skip("needs root, setpriv and a python3 that user nobody can run")
    return py


def test_a_run_beyond_the_hard_open_file_limit_goes_in_batches_and_rolls_back_exactly(nobody_py):
    """300 sessions, soft = hard = 200 open files: the locks are taken in batches, every session is
    migrated (each batch its own transaction), and the rollback, batched too, restores the home."""
    base, hb, ids = _home_owned_by_nobody()
    try:
        before = home_state(hb.root)
        proc = _migrate_as_nobody(nobody_py, hb.root, soft=200, hard=200)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout)["result"]
        assert result["line1_rewritten"] == SESSIONS and result["updated_rows"] == SESSIONS
        assert result["skipped_at_apply"] == [] and result["rows_per_db"] == {str(hb.db_path): SESSIONS}
        assert hb.sql("SELECT model_provider, count(*) FROM threads GROUP BY 1") == [("newco", SESSIONS)]
        recs = _journal(result)
        batches = [r for r in recs if r["op"] == "batch"]
        assert len(batches) >= 2 and [b["n"] for b in batches] == list(range(1, len(batches) + 1))
        assert {b["of"] for b in batches} == {len(batches)} and sum(b["threads"] for b in batches) == SESSIONS
        assert max(b["threads"] for b in batches) < 200 - 128  # beside the spare descriptors
        commits = [r["rows"] for r in recs if r["op"] == "commit"]
        assert len(commits) == len(batches) and sum(commits) == SESSIONS  # one transaction per batch
        line1 = [r["thread_id"] for r in recs if r["op"] == "line1"]
        assert sorted(line1) == sorted(ids)  # each session once
        assert not (hb.root / "thread-writer-locks").exists()  # every batch's lock files removed
        rb = _as_nobody(nobody_py, "rollback.py", hb.root, 200, 200, "--latest", "--apply", "--json")
        assert rb.returncode == 0, rb.stdout + rb.stderr
        undone = json.loads(rb.stdout)["result"]
        assert undone["rows_reverted"] == SESSIONS and undone["line1_restored"] == SESSIONS
        assert home_state(hb.root) == before
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_limit_too_low_for_even_one_writer_lock_is_refused_before_anything_is_written(nobody_py):
    base, hb, _ids = _home_owned_by_nobody()
    try:
        before = snapshot(hb.root)
        proc = _migrate_as_nobody(nobody_py, hb.root, soft=100, hard=100)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "the open-file limit is 100 (hard 100): too low for even one writer lock" in line, line
        assert "nothing was changed" in line
        assert snapshot(hb.root) == before
        assert hb.sql("SELECT model_provider, count(*) FROM threads GROUP BY 1") == [("oldco", SESSIONS)]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_low_soft_open_file_limit_is_raised_and_every_session_migrated(nobody_py):
    base, hb, ids = _home_owned_by_nobody()
    try:
        proc = _migrate_as_nobody(nobody_py, hb.root, soft=200, hard=4096)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)["result"]
        assert result["line1_rewritten"] == SESSIONS and result["updated_rows"] == SESSIONS
        assert hb.sql("SELECT model_provider, count(*) FROM threads GROUP BY 1") == [("newco", SESSIONS)]
        ops = [r["op"] for r in _journal(result)]
        assert "batch" not in ops and ops.count("commit") == 1  # all locks at once: one batch, as ever
    finally:
        shutil.rmtree(base, ignore_errors=True)
