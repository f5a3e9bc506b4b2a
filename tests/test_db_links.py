"""No script writes a DB of the home through a second hard link (a home copied with `cp -al`) or a
symlink leading out of the home: every writer refuses before any change, one line, exit 2, and
the other copy keeps its bytes."""
import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from homebuilder import HomeBuilder, build_broken_home
from test_migrate_rollback import home_state, run

DATA = Path(__file__).parent / "data"
LINKED = "refusing: {} has 2 hard links (a copy made with cp -al or rsnapshot?)"


def digests(folder):
    return {os.path.relpath(os.path.join(d, f), folder): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, fs in os.walk(folder) for f in fs}


def first_run(root):
    return sorted(p for p in (root / ".tmp" / "session-migration").iterdir() if p.is_dir())[0]


def _forward(script, *args):
    def go(hb, tmp_path):
        extra = [a.replace("SRC", str(tmp_path / "src" / ".codex")) for a in args]
        if "--from" in args:
            src = HomeBuilder(tmp_path / "src" / ".codex")
            src.n = 1000  # ids the home does not have
            src.add(preview="from the old machine")
        return script, extra
    return go


def _after_recover(*args):
    def go(hb, tmp_path):
        assert run("session_recover.py", hb.root, "--apply").returncode in (0, 1)
        r = first_run(hb.root)
        bak = next(r.glob("state_5.sqlite.pre_*.bak"))
        return "rollback.py", [a.replace("RUN", str(r)).replace("BAK", str(bak)) for a in args]
    return go


WRITERS = {
    "repair": _forward("session_repair.py", "--apply"),
    "migration": _forward("provider_migrate.py", "--apply"),
    "import": _forward("session_import.py", "--from", "SRC", "--apply"),
    "recover": _forward("session_recover.py", "--apply"),
    "rollback --latest": _after_recover("--latest", "--apply"),
    "rollback --until": _after_recover("--until", "RUN", "--apply"),
    "rollback --manifest": _after_recover("--manifest", "RUN", "--force", "--apply"),
    "rollback --restore-db": _after_recover("--restore-db", "BAK", "--force", "--apply"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_writer_refuses_a_hard_linked_state_db_and_the_copy_keeps_its_bytes(tmp_path, writer):
    hb = build_broken_home(tmp_path / ".codex")
    script, args = WRITERS[writer](hb, tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    os.link(str(hb.root / "state_5.sqlite"), str(copy / "state_5.sqlite"))  # what `cp -al` leaves
    before, outside = home_state(hb.root), digests(copy)
    arts = digests(hb.root / ".tmp") if (hb.root / ".tmp").is_dir() else {}
    proc = run(script, hb.root, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and LINKED.format(hb.root / "state_5.sqlite") in proc.stderr, proc.stderr
    assert digests(copy) == outside
    assert home_state(hb.root) == before
    assert {k: v for k, v in (digests(hb.root / ".tmp") if (hb.root / ".tmp").is_dir() else {}).items()
            if not k.endswith(".lock")} == {k: v for k, v in arts.items() if not k.endswith(".lock")}


def test_prune_writes_no_db_and_removes_only_its_own_link_of_a_shared_run_folder(tmp_path):
    hb = build_broken_home(tmp_path / ".codex")
    assert run("session_recover.py", hb.root, "--apply").returncode in (0, 1)
    shutil.copytree(str(hb.root), str(tmp_path / "copy"), copy_function=os.link)  # cp -al
    outside = digests(tmp_path / "copy")
    proc = run("rollback.py", hb.root, "--prune", "--force", "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert digests(tmp_path / "copy") == outside


@pytest.mark.parametrize("which", ["state_5.sqlite-wal", "thread_history_1.sqlite", "goals_1.sqlite",
                                   "sqlite/state_5.sqlite"])
def test_a_hard_link_on_any_db_of_the_home_or_its_wal_refuses_the_run(tmp_path, which):
    hb = build_broken_home(tmp_path / ".codex")
    target = hb.root / which
    if not target.exists():
        target.parent.mkdir(exist_ok=True)
        if which.endswith("-wal"):
            target.write_bytes(b"")
        else:  # an empty DB of Codex's own schema (goals_1: any table)
            schema = DATA / ("thread_history_1_schema.sql" if "history" in which else "state_5_schema.sql")
            conn = sqlite3.connect(str(target))
            conn.executescript(schema.read_text() if "goals" not in which else "CREATE TABLE goals(x);")
            conn.close()
    os.link(str(target), str(tmp_path / "other"))
    before, outside = home_state(hb.root), (tmp_path / "other").read_bytes()
    proc = run("session_recover.py", hb.root, "--apply")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert LINKED.format(target) in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert home_state(hb.root) == before and (tmp_path / "other").read_bytes() == outside


def test_a_state_db_that_is_a_symlink_out_of_the_home_is_never_written(tmp_path):
    hb = build_broken_home(tmp_path / ".codex")
    out = tmp_path / "elsewhere"
    out.mkdir()
    shutil.move(str(hb.root / "state_5.sqlite"), str(out / "state_5.sqlite"))
    (hb.root / "state_5.sqlite").symlink_to(out / "state_5.sqlite")
    outside = digests(out)
    proc = run("session_recover.py", hb.root, "--apply")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "leads outside the Codex home" in proc.stderr, proc.stderr
    assert digests(out) == outside
    assert not (hb.root / ".tmp" / "session-migration").exists() or \
        not any(p.is_dir() for p in (hb.root / ".tmp" / "session-migration").iterdir())


def test_the_last_guard_refuses_a_writer_connection_through_a_hard_link(tmp_path):
    from sessionkit import UserError
    from sessionkit.codexfiles.statedb import open_readwrite
    db = tmp_path / "a.sqlite"
    sqlite3.connect(str(db)).close()
    os.link(str(db), str(tmp_path / "b.sqlite"))
    with pytest.raises(UserError, match="has 2 hard links"):
        open_readwrite(db)
    os.unlink(str(tmp_path / "b.sqlite"))
    open_readwrite(db).close()
