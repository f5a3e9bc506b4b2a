"""Faults at every point of a run and of its rollback: the step lists come from the run itself
(a counting run), a kill after the last step leaves the finished run, and every other fault leaves
the home exactly as before after at most the one undo command the tool printed."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness import SCRIPTS, snapshot
from homebuilder import HomeBuilder
from test_migrate_rollback import home_state

LAUNCHER = Path(__file__).resolve().parent / "faultrun.py"


def frun(script, home, *args, fault=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "SESSION_MIGRATION", "FAULTRUN"))}
    if fault:
        env["FAULTRUN"] = fault
    return subprocess.run([sys.executable, str(LAUNCHER), str(SCRIPTS / script), "--codex-dir", str(home), *args],
                          capture_output=True, text=True, env=env, check=False)


class Pristine:
    """The home as built, put back before every faulted attempt (mtimes and modes kept)."""

    def __init__(self, root: Path):
        self.root, self.copy = root, root.parent / (root.name + ".pristine")
        shutil.copytree(root, self.copy, symlinks=True)

    def restore(self) -> None:
        shutil.rmtree(self.root)
        shutil.copytree(self.copy, self.root, symlinks=True)


def points(tmp_path, script, home, *args):
    """Every fault point of one clean run, in order, and the home it leaves."""
    out = tmp_path / f"points-{script}-{len(list(tmp_path.iterdir()))}.txt"
    proc = frun(script, home, *args, fault=f"count:{out}")
    assert proc.returncode in (0, 1), proc.stderr
    return out.read_text().split(), home_state(home)


def same_run(a, b, timed):
    """Equal homes; a repair stamps unarchived threads with the time of the run, so there only the
    bytes of every file and the rows' ids and paths are compared."""
    if timed:
        return a == b
    return {k: v[0] for k, v in a["files"].items()} == {k: v[0] for k, v in b["files"].items()} and \
        [r[:2] for r in a["rows"]] == [r[:2] for r in b["rows"]]


@pytest.fixture
def mixed(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco", "a-much-longer-id"])
    old = [hb.add(provider="oldco", preview=f"old {i}") for i in range(3)]
    hb.add(provider="newco")
    return hb, old


def _walk(tmp_path, hb, script, args, action, expect_rc, timed=True):
    before = home_state(hb.root)
    pristine = Pristine(hb.root)
    labels, finished = points(tmp_path, script, hb.root, *args)
    assert len(labels) >= 6 and labels.count("journal") >= 4, labels
    listing = sorted(p.name for p in tmp_path.iterdir())
    for n in range(1, len(labels) + 1):
        pristine.restore()
        proc = frun(script, hb.root, *args, fault=f"{action}:{n}")
        if action == "kill":
            assert proc.returncode == -signal.SIGKILL, (n, proc.stderr)
            if n == len(labels):  # after the last step: the finished run, nothing to undo
                assert same_run(home_state(hb.root), finished, timed)
                runs = json.loads(frun("rollback.py", hb.root, "--list", "--json").stdout)["runs"]
                assert runs[-1]["status"] == "complete"
            rb = frun("rollback.py", hb.root, "--latest", "--apply")
            assert rb.returncode == 0, (n, rb.stdout, rb.stderr)
        else:
            assert proc.returncode == expect_rc, (n, labels[n - 1], proc.stdout, proc.stderr)
            if n < len(labels):
                err = proc.stderr.strip().splitlines()
                assert len(err) == 1 and "were undone, the home is as before" in err[0], (n, proc.stderr)
            else:  # a fault after the end record: the run is finished
                assert same_run(home_state(hb.root), finished, timed)
                assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
        assert home_state(hb.root) == before, (action, n, labels[n - 1])
        again = json.loads(frun("rollback.py", hb.root, "--latest", "--json").stdout)
        assert again.get("rows_to_revert", 0) == 0 and again.get("line1_to_restore", 0) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == listing
    return labels


@pytest.mark.parametrize("action,rc", [("kill", None), ("sigint", 2), ("eio", 2), ("enospc", 2)])
def test_migration_fault_at_every_point(tmp_path, mixed, action, rc):
    hb, _ = mixed
    labels = _walk(tmp_path, hb, "provider_migrate.py", ["--apply"], action, rc)
    assert labels.count("file") == 3  # one per line-1 rewrite: the run's own count


@pytest.mark.parametrize("action,rc", [("kill", None), ("sigint", 2), ("enospc", 2)])
def test_repair_fault_at_every_point(tmp_path, action, rc):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    for _ in range(2):
        hb.add(archived=True)
    moved = hb.add()
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", ("/old/.codex/sessions/x/" + moved.path.name, moved.id))
    hb.add(write_row=False)
    labels = _walk(tmp_path, hb, "session_repair.py", ["--apply", "--import-orphans"], action, rc, timed=False)
    assert "commit" in labels


def _big_thread(hb, mb: int):
    t = hb.add(provider="oldco", preview="a long one")
    with open(t.path, "ab") as fh:
        line = json.dumps({"type": "response_item", "payload": {"text": "x" * 4000}}).encode() + b"\n"
        fh.write(line * (mb * 1024 * 1024 // len(line)))
    stamp = t.created.timestamp() + 60
    os.utime(t.path, (stamp, stamp))
    return t


def test_kill_inside_a_grown_line1_write(tmp_path):
    """A multi-MB rollout whose line 1 grows is written in chunks beside the original and renamed
    over it: a kill at any chunk leaves the original whole, and rollback removes the fragment."""
    hb = HomeBuilder(tmp_path / ".codex", provider="a-much-longer-id", providers=["a-much-longer-id", "oldco"])
    big = _big_thread(hb, 5)
    original = big.path.read_bytes()
    before = home_state(hb.root)
    pristine = Pristine(hb.root)
    labels, finished = points(tmp_path, "provider_migrate.py", hb.root, "--apply")
    chunks = labels.count("chunk")
    assert chunks >= 5, labels  # 1 MB chunks of a 5 MB file
    for n in sorted({1, 2, chunks // 2, chunks - 1, chunks}):
        pristine.restore()
        proc = frun("provider_migrate.py", hb.root, "--apply", fault=f"kill:chunk:{n}")
        assert proc.returncode == -signal.SIGKILL
        assert big.path.read_bytes() == original  # the original is never written through
        tmp = big.path.parent / f".{big.path.name}.session-migration.tmp"
        assert tmp.exists()  # the fragment...
        dry = json.loads(frun("rollback.py", hb.root, "--latest", "--json").stdout)
        assert dry["temporary_files_to_remove"] == 1 and dry["line1_to_restore"] == 0
        assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
        assert not tmp.exists()  # ...is gone after the one rollback
        assert home_state(hb.root) == before
    # and the finished grown file rolls back from the kept copy byte for byte
    pristine.restore()
    assert frun("provider_migrate.py", hb.root, "--apply").returncode == 0
    assert len(big.path.read_bytes()) == len(original) + len("a-much-longer-id") - len("oldco")
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert big.path.read_bytes() == original and home_state(hb.root) == before


@pytest.mark.parametrize("action", ["kill", "sigint", "enospc"])
def test_rollback_fault_at_every_point(tmp_path, mixed, action):
    """A rollback cut short anywhere is finished by running the same rollback again."""
    hb, old = mixed
    hb.write_config("newco", ["newco", "oldco", "a-much-longer-id"])
    before = home_state(hb.root)
    assert frun("provider_migrate.py", hb.root, "--apply", "--target-provider", "a-much-longer-id").returncode == 0
    pristine = Pristine(hb.root)
    labels, _ = points(tmp_path, "rollback.py", hb.root, "--latest", "--apply")
    assert home_state(hb.root) == before
    assert labels.count("undo-file") == 4 and "undo-commit" in labels, labels
    for n in range(1, len(labels) + 1):
        pristine.restore()
        proc = frun("rollback.py", hb.root, "--latest", "--apply", fault=f"{action}:{n}")
        assert proc.returncode != 0 or n == len(labels), (n, proc.stderr)
        rb = frun("rollback.py", hb.root, "--latest", "--apply")
        assert rb.returncode == 0, (n, rb.stdout, rb.stderr)
        assert home_state(hb.root) == before, (action, n, labels[n - 1])


@pytest.mark.parametrize("limit_kb", [16, 200, 2048])
def test_file_size_limit_stops_cleanly(tmp_path, limit_kb):
    """ulimit -f: a backup, a journal record or a grown rollout cut short is an error, never a
    silent half-written artifact; the home is as before."""
    hb = HomeBuilder(tmp_path / ".codex", provider="a-much-longer-id", providers=["a-much-longer-id", "oldco"])
    for i in range(3):
        hb.add(provider="oldco", preview=f"old {i}")
    _big_thread(hb, 3)
    before = home_state(hb.root)
    proc = frun("provider_migrate.py", hb.root, "--apply", fault=f"fsize:{limit_kb * 1024}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "File too large" in proc.stderr or "too large" in proc.stderr.lower(), proc.stderr
    assert home_state(hb.root) == before


def test_a_busy_db_during_rollback_changes_nothing_then_finishes(tmp_path, mixed):
    hb, _ = mixed
    before = home_state(hb.root)
    assert frun("provider_migrate.py", hb.root, "--apply").returncode == 0
    applied = home_state(hb.root)
    hb.sql("PRAGMA journal_mode=WAL")
    holder = sqlite3.connect(str(hb.db_path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        proc = frun("rollback.py", hb.root, "--latest", "--apply")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.returncode == 2 and "database is locked" in proc.stderr, proc.stderr
    assert home_state(hb.root)["rows"] == applied["rows"]
    assert home_state(hb.root)["files"] == applied["files"]
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert home_state(hb.root) == before


@pytest.mark.parametrize("action", ["kill", "sigint"])
def test_in_place_rollback_fault_at_every_point(tmp_path, mixed, action):
    """A same-length rewrite undone in place, cut short anywhere (also between the old bytes and the
    old mtime): running the rollback again brings back bytes and mtimes exactly."""
    hb, _ = mixed
    before = home_state(hb.root)
    assert frun("provider_migrate.py", hb.root, "--apply").returncode == 0  # oldco -> newco: same length
    pristine = Pristine(hb.root)
    labels, _ = points(tmp_path, "rollback.py", hb.root, "--latest", "--apply")
    assert home_state(hb.root) == before
    assert labels.count("undo-written") == 3 and labels.count("undo-file") == 3, labels
    for n in range(1, len(labels) + 1):
        pristine.restore()
        proc = frun("rollback.py", hb.root, "--latest", "--apply", fault=f"{action}:{n}")
        assert proc.returncode != 0 or n == len(labels), (n, proc.stderr)
        rb = frun("rollback.py", hb.root, "--latest", "--apply")
        assert rb.returncode == 0, (n, rb.stdout, rb.stderr)
        assert home_state(hb.root) == before, (action, n, labels[n - 1])
