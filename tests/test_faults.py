"""Faults at every point of a run and of its rollback: the step lists come from the run itself
(a counting run), a kill after the last step leaves the finished run, and every other fault leaves
the home exactly as before after at most the one undo command the tool printed."""
import json
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

import faultrun
from harness import SCRIPTS, snapshot
from homebuilder import HomeBuilder
from sessionkit.codexfiles.writerlock import SPARE_DESCRIPTORS
from test_migrate_rollback import home_state

LAUNCHER = Path(__file__).resolve().parent / "faultrun.py"
# A run and its rollback size their batches alike, with stdin, stdout, stderr, the listing of
# /proc/self/fd and the home lock open: under this limit (soft = hard) each holds 2 writer locks at a time.
IN_BATCHES = f"nofile:{SPARE_DESCRIPTORS + 5 + 2}"


def frun(script, home, *args, fault=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX_", "SESSION_MIGRATION", "FAULTRUN"))}
    if fault:
        env["FAULTRUN"] = fault
    return faultrun.run([str(SCRIPTS / script), "--codex-dir", str(home), *args], env)


def look(home, *args):
    """`rollback.py --codex-dir HOME ARGS --json` read-only (a dry run, --list), in this process: a look
    at the home between the faulted runs (those, and every rollback that writes, stay processes of
    their own); a process each would cost a walk about a third of its time."""
    import io
    from contextlib import redirect_stderr, redirect_stdout
    import rollback
    from sessionkit.ui import cli
    assert "--apply" not in args
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.run(rollback.main, ["--codex-dir", str(home), *args, "--json"])
    assert code in (0, 1) and err.getvalue() == "", (code, err.getvalue())
    return json.loads(out.getvalue())


class Pristine:
    """The home as built, put back before every faulted attempt (mtimes and modes kept)."""

    def __init__(self, root: Path):
        self.root, self.copy = root, root.parent / (root.name + ".pristine")
        shutil.copytree(root, self.copy, symlinks=True)

    def restore(self) -> None:
        shutil.rmtree(self.root)
        shutil.copytree(self.copy, self.root, symlinks=True)


def spec(*parts):
    """FAULTRUN specs joined (a fault and an open-file limit), or None."""
    return "+".join(p for p in parts if p) or None


def points(tmp_path, script, home, *args, limit=""):
    """Every fault point of one clean run, in order, and the home it leaves."""
    out = tmp_path / f"points-{script}-{len(list(tmp_path.iterdir()))}.txt"
    proc = frun(script, home, *args, fault=spec(f"count:{out}", limit))
    assert proc.returncode in (0, 1), proc.stderr
    return out.read_text().split(), home_state(home)


def same_run(a, b, timed):
    """Equal homes; a repair stamps unarchived threads with the time of the run, so there only the
    bytes of every file and the rows' ids and paths are compared."""
    if timed:
        return a == b
    return {k: v[0] for k, v in a["files"].items()} == {k: v[0] for k, v in b["files"].items()} and \
        [r[:2] for r in a["rows"]] == [r[:2] for r in b["rows"]]


def _to_migrate(tmp_path, n):
    """n sessions on oldco to migrate to newco, and one already there."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco", "a-much-longer-id"])
    old = [hb.add(provider="oldco", preview=f"old {i}") for i in range(n)]
    hb.add(provider="newco")
    return hb, old


@pytest.fixture
def mixed(tmp_path):
    return _to_migrate(tmp_path, 3)


def around_batches(labels):
    """The points at and right after each batch and commit: where an error's undo must put back the
    batches already committed (a walk of every point is the kill's)."""
    keep = {n + d for n, label in enumerate(labels, 1) if label in ("batch", "commit") for d in (0, 1)}
    return sorted(n for n in keep if n <= len(labels))


def _walk(tmp_path, hb, script, args, action, expect_rc, timed=True, limit="", at=None):
    """Fault the run at every point it counted (or at the points `at(labels)` picks; under `limit`,
    an open-file limit, every run and rollback of the walk): the home ends as before."""
    before, folders = home_state(hb.root), _folders(hb.root)
    pristine = Pristine(hb.root)
    labels, finished = points(tmp_path, script, hb.root, *args, limit=limit)
    assert len(labels) >= 6 and labels.count("journal") >= 4, labels
    listing = sorted(p.name for p in tmp_path.iterdir())
    for n in (at(labels) if at else range(1, len(labels) + 1)):
        pristine.restore()
        proc = frun(script, hb.root, *args, fault=spec(f"{action}:{n}", limit))
        if action == "kill":
            assert proc.returncode == -signal.SIGKILL, (n, proc.stderr)
            if n == len(labels):  # after the last step: the finished run, nothing to undo
                assert same_run(home_state(hb.root), finished, timed)
                runs = look(hb.root, "--list")["runs"]
                assert runs[-1]["status"] == "applied"
            rb = frun("rollback.py", hb.root, "--latest", "--apply", fault=spec(limit))
            assert rb.returncode == 0, (n, rb.stdout, rb.stderr)
        else:  # after the end record too: a run not yet reported undoes itself (issue 20: no exit 2 with it applied)
            assert proc.returncode == expect_rc, (n, labels[n - 1], proc.stdout, proc.stderr)
            err = proc.stderr.strip().splitlines()
            assert len(err) == 1 and "were undone, the home is as before" in err[0], (n, proc.stderr)
        assert home_state(hb.root) == before, (action, n, labels[n - 1])
        assert _folders(hb.root) == folders, (action, n, labels[n - 1])  # none made and left empty
        again = look(hb.root, "--latest")
        assert again.get("rows_to_revert", 0) == 0 and again.get("line1_to_restore", 0) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == listing
    return labels


def _folders(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir() and ".tmp" not in p.parts)


def _journal(root):
    """The records of the one run journal under the home (the walk's last attempt)."""
    (path,) = (root / ".tmp" / "session-migration").glob("*/journal.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


# A Ctrl-C and an I/O error at a fault point take the same path (both raised there, both caught by
# execute()'s `except BaseException` and undone by _undo_after_failure; only its first word differs):
# the migration walks the error, the repair walks the Ctrl-C (and the kill, each). A full disk raises
# where EIO does (one undo for every error, no errno is looked at): walked in the batch walks.
@pytest.mark.parametrize("action,rc", [("kill", None), ("eio", 2)])
def test_migration_fault_at_every_point(tmp_path, mixed, action, rc):
    hb, _ = mixed
    labels = _walk(tmp_path, hb, "provider_migrate.py", ["--apply"], action, rc)
    assert labels.count("file") == 3  # one per line-1 rewrite: the run's own count


@pytest.mark.parametrize("action,rc", [("kill", None), ("sigint", 2)])  # an error: the migration's walk
def test_repair_fault_at_every_point(tmp_path, action, rc):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    for _ in range(2):
        hb.add(archived=True)
    moved = hb.add()
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", ("/old/.codex/sessions/x/" + moved.path.name, moved.id))
    hb.add(write_row=False)
    labels = _walk(tmp_path, hb, "session_repair.py", ["--apply", "--import-orphans", "--unarchive"], action, rc, timed=False)
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
        dry = look(hb.root, "--latest")
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


# a Ctrl-C in a rollback is raised where the full disk is (both end the rollback, which runs again):
# walked at every point of the in-place rollback below
@pytest.mark.parametrize("action", ["kill", "enospc"])
def test_rollback_fault_at_every_point(tmp_path, mixed, action):
    """A rollback cut short anywhere is finished by running the same rollback again."""
    hb, _old = mixed
    labels = _walk_rollback(tmp_path, hb, action)
    assert labels.count("undo-file") == 4 and "undo-commit" in labels, labels


def _walk_rollback(tmp_path, hb, action, limit="", target="a-much-longer-id", at=None):
    """Migrate (to the longer id: line 1 grows), then fault the rollback at every point it counted:
    running the same rollback again finishes it, the home as before the migration."""
    hb.write_config("newco", ["newco", "oldco", "a-much-longer-id"])
    before = home_state(hb.root)
    migrated = frun("provider_migrate.py", hb.root, "--apply", "--target-provider", target, fault=spec(limit))
    assert migrated.returncode == 0, migrated.stderr
    pristine = Pristine(hb.root)
    labels, _ = points(tmp_path, "rollback.py", hb.root, "--latest", "--apply", limit=limit)
    assert home_state(hb.root) == before
    for n in (at(labels) if at else range(1, len(labels) + 1)):
        pristine.restore()
        proc = frun("rollback.py", hb.root, "--latest", "--apply", fault=spec(f"{action}:{n}", limit))
        assert proc.returncode != 0 or n == len(labels), (n, proc.stderr)
        rb = frun("rollback.py", hb.root, "--latest", "--apply", fault=spec(limit))
        assert rb.returncode == 0, (n, rb.stdout, rb.stderr)
        assert home_state(hb.root) == before, (action, n, labels[n - 1])
    return labels


# Past the open-file limit: writer locks in batches, each committed on its own -----------------

@pytest.fixture
def many(tmp_path):
    """Six sessions to migrate: three batches of two writer locks under IN_BATCHES."""
    return _to_migrate(tmp_path, 6)


def _batches(recs):
    return [[r["n"], r["of"], r["threads"]] for r in recs if r["op"] == "batch"]


@pytest.mark.parametrize("action,rc", [("kill", None), ("enospc", 2)])  # Ctrl-C and EIO: the same undo
def test_migration_in_batches_fault_at_every_point(tmp_path, many, action, rc):
    """A fault at any point, between batches too, puts back every batch, the committed ones too (a
    kill at every point; a full disk at every batch boundary: its in-run undo elsewhere is the
    unbatched walk's)."""
    hb, old = many
    labels = _walk(tmp_path, hb, "provider_migrate.py", ["--apply"], action, rc, limit=IN_BATCHES,
                   at=around_batches if action != "kill" else None)
    assert labels.count("batch") == 2 and labels.count("commit") == 3 and labels.count("file") == 6, labels
    recs = _journal(hb.root)
    assert _batches(recs) == [[1, 3, 2], [2, 3, 2], [3, 3, 2]]
    assert [r["rows"] for r in recs if r["op"] == "commit"] == [2, 2, 2]  # one transaction a batch
    assert sorted(r["thread_id"] for r in recs if r["op"] == "line1") == sorted(t.id for t in old)


@pytest.mark.parametrize("action,rc", [("kill", None), ("enospc", 2)])
def test_repair_in_batches_fault_at_every_point(tmp_path, action, rc):
    """Three archived sessions of a day with no folder yet: the folder is made in the first batch,
    before the move of the third in the second batch, and an undo removes it after that move."""
    hb = HomeBuilder(tmp_path / ".codex")
    orphan = hb.add(write_row=False)
    hb.n += 250  # the next day
    archived = [hb.add(archived=True) for _ in range(3)]
    day = hb.root / "sessions" / archived[0].created.strftime("%Y/%m/%d")
    assert not day.exists()
    labels = _walk(tmp_path, hb, "session_repair.py", ["--apply", "--import-orphans", "--unarchive"], action, rc, timed=False,
                   limit=IN_BATCHES, at=around_batches if action != "kill" else None)  # as the migration's
    assert labels.count("batch") == 1 and labels.count("commit") == 2, labels
    recs = _journal(hb.root)
    assert _batches(recs) == [[1, 2, 2], [2, 2, 2]]
    steps = [(r["op"], r.get("n") or r.get("thread_id") or r.get("path")) for r in recs
             if r["op"] in ("batch", "mkdir", "move", "row_update", "row_insert")]
    assert steps == [("batch", 1), ("mkdir", str(day)), ("move", archived[0].id), ("move", archived[1].id),
                     ("row_update", archived[0].id), ("row_update", archived[1].id),
                     ("batch", 2), ("move", archived[2].id), ("row_update", archived[2].id), ("row_insert", orphan.id)]


@pytest.mark.parametrize("action", ["kill", "enospc"])
def test_rollback_in_batches_fault_at_every_point(tmp_path, many, action):
    """A rollback in batches (two writer locks at a time here, as the run had: three batches) cut
    short anywhere, between batches too, is finished by running it again."""
    hb, _old = many
    labels = _walk_rollback(tmp_path, hb, action, limit=IN_BATCHES, target="newco",
                            at=around_batches if action != "kill" else None)  # as the migration's
    assert labels.count("batch") == 2 and labels.count("undo-commit") == 3 and labels.count("undo-file") == 6, labels


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
