"""Hostile and broken input: a clear message, exit 2 or a counted finding, nothing outside touched."""
import json
import os
import random
import sqlite3
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from harness import SCRIPTS, run_on_home, snapshot
from homebuilder import HomeBuilder
from test_migrate_rollback import home_state, run


def _no_traceback(proc):
    assert "Traceback" not in proc.stderr, proc.stderr


@pytest.fixture
def hostile(tmp_path):
    """A home with one of every kind of hostile row and file, and a folder outside it to guard."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    hb = HomeBuilder(tmp_path / "home" / ".codex", provider="newco", providers=["newco"])
    good = [hb.add(provider="oldco") for _ in range(2)]
    bad_rows = {
        "dotdot": "../../outside/passwd",
        "absolute": str(outside / "passwd"),
        "nul": str(hb.root / "sessions" / "a\x00b.jsonl"),
        "newline": str(hb.root / "sessions" / "a\nb.jsonl"),
    }
    for path in bad_rows.values():
        t = hb.add(provider="oldco", write_file=False)
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (path, t.id))
    day = hb.root / "sessions" / "2025" / "03" / "01"
    (day / "escape").symlink_to(outside)
    (day / "loop").symlink_to(day / "loop")
    (hb.root / "sessions" / "2025" / "03" / "ab").symlink_to(hb.root / "sessions" / "2025")
    os.symlink(outside / "passwd", day / "rollout-2025-03-01T00-00-00-0195ffff-0000-7000-8000-000000000001.jsonl")
    (day / b"rollout-\xff\xfe.jsonl".decode("utf-8", "surrogateescape")).write_bytes(b"{}\n")
    dup = hb.add(provider="oldco")
    (hb.root / "archived_sessions").mkdir(exist_ok=True)
    (hb.root / "archived_sessions" / dup.path.name).write_bytes(dup.path.read_bytes())
    huge = hb.add(provider="oldco")
    with open(huge.path, "wb") as fh:
        fh.write(b'{"type":"session_meta","payload":{"id":"' + b"x" * (100 * 1024 * 1024) + b'"')
    trunc = hb.add(provider="oldco")
    trunc.path.write_bytes(trunc.path.read_bytes()[:300])
    notjson = hb.add(provider="oldco")
    notjson.path.write_bytes(b"this is not json\n" + notjson.path.read_bytes())
    shape = hb.add(provider="oldco")
    shape.path.write_bytes(b'["session_meta", 1]\n' + shape.path.read_bytes().split(b"\n", 1)[1])
    hb.sql("ALTER TABLE threads ADD COLUMN surprise_from_the_future TEXT DEFAULT 'x'")
    return hb, outside, good


def test_audit_counts_hostile_input_and_exits_1(hostile):
    hb, outside, _ = hostile
    before = snapshot(hb.root)
    proc = run("session_audit.py", hb.root, "--json")
    _no_traceback(proc)
    assert proc.returncode == 1
    r = json.loads(proc.stdout)
    i = r["integrity"]
    assert i["duplicate_rollout_id_count"] == 1
    # huge, truncated, not JSON, wrong shape, and the symlink out (never followed)
    assert i["line1_unreadable_count"] == 5
    assert sum("symlink to outside" in s for s in i["line1_unreadable_sample"]) == 1
    assert sum("longer than" in s for s in i["line1_unreadable_sample"]) == 1
    assert i["malformed_file_names_count"] == 1  # the non-UTF-8 name
    # ../.., the absolute one, and the NUL path (no valid path is inside anything); none names an old home
    assert i["rollout_path_outside_home_count"] == 3
    assert i["moved_home"] is None
    # ../.., NUL and newline rows; the absolute foreign path exists (it is counted as outside the home)
    assert i["missing_rollout_path_count"] == 3
    assert snapshot(hb.root) == before
    # the text report prints the non-UTF-8 name without failing
    text = run("session_audit.py", hb.root)
    _no_traceback(text)
    assert text.returncode == 1 and "\\xff" in text.stdout


def test_writers_never_touch_anything_outside(hostile):
    hb, outside, good = hostile
    guard = snapshot(outside)
    state = home_state(hb.root)
    for script, args in (("session_repair.py", ["--import-orphans", "--apply"]),
                         ("provider_migrate.py", ["--apply"]),
                         ("session_repair.py", ["--remap-prefix", f"{outside}={hb.root}", "--apply"])):
        proc = run(script, hb.root, "--json", *args)
        _no_traceback(proc)
        assert proc.returncode in (0, 1), (script, proc.stderr)
        assert snapshot(outside) == guard
    assert all(json.loads(t.path.read_bytes().split(b"\n", 1)[0])["payload"]["model_provider"] == "newco"
               for t in good)
    runs = json.loads(run("rollback.py", hb.root, "--list", "--json").stdout)["runs"]
    assert [r["kind"] for r in runs] == ["provider_migration"]  # the repairs found nothing safe to do
    for r in reversed(runs):  # newest first
        proc = run("rollback.py", hb.root, "--manifest", r["run_dir"], "--apply")
        _no_traceback(proc)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert snapshot(outside) == guard
    assert home_state(hb.root) == state


@pytest.mark.parametrize("edit", ["path", "db", "dst", "codex_dir"])
def test_rollback_refuses_a_journal_edited_to_point_outside(tmp_path, edit):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    hb.add(provider="oldco")
    hb.add(archived=True, provider="newco")
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    assert run("session_repair.py", hb.root, "--unarchive", "--apply").returncode == 0
    runs = sorted((hb.root / ".tmp" / "session-migration").glob("*_*/journal.jsonl"))
    journal = runs[0] if edit in ("path", "db", "codex_dir") else runs[1]
    victim = tmp_path / "victim.jsonl"
    victim.write_text("do not touch\n")
    lines = [json.loads(l) for l in journal.read_text().splitlines()]
    for rec in lines:
        if edit == "path" and rec["op"] == "line1":
            rec["path"] = str(victim)
        if edit == "db" and rec["op"] == "row_update":
            rec["db"] = str(tmp_path / "other.sqlite")
        if edit == "dst" and rec["op"] == "move":
            rec["src"] = str(victim)
        if edit == "codex_dir" and rec["op"] == "begin":
            rec["codex_dir"] = str(tmp_path)
    journal.write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = snapshot(hb.root)
    proc = run("rollback.py", hb.root, "--manifest", str(journal.parent), "--apply")
    _no_traceback(proc)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert victim.read_text() == "do not touch\n"
    assert snapshot(hb.root) == before


@pytest.mark.parametrize("case", ["locked", "extra-columns", "restore-not-sqlite"])
def test_db_problems(tmp_path, case):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(provider="x")
    if case == "locked":
        import sqlite3
        hb.sql("PRAGMA journal_mode=DELETE")
        holder = sqlite3.connect(str(hb.db_path), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            proc = run("session_audit.py", hb.root)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # immutable read-only open never waits on a lock: the audit still runs
        assert proc.returncode == 1, proc.stderr
    elif case == "extra-columns":
        hb.sql("ALTER TABLE threads ADD COLUMN future TEXT")
        assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
        assert hb.sql("SELECT model_provider, future FROM threads") == [("openai", None)]
    else:
        junk = tmp_path / "junk.bak"
        junk.write_bytes(b"not a db" * 512)
        proc = run("rollback.py", hb.root, "--restore-db", str(junk), "--apply")
        _no_traceback(proc)
        assert proc.returncode == 2 and "not" in proc.stderr


def test_random_time_kills_always_roll_back(tmp_path):
    """SIGKILL at random moments of the write phase over many runs; every time rollback brings
    the home back exactly."""
    rng = random.Random(7)
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    for i in range(40):
        hb.add(provider="oldco" if i % 2 else "newco", archived=i % 5 == 0)
    before = home_state(hb.root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    runs_dir = hb.root / ".tmp" / "session-migration"
    killed = 0
    for n in range(12):
        script = ("provider_migrate.py", "session_repair.py")[n % 2]
        known = set(runs_dir.glob("*_*")) if runs_dir.exists() else set()
        proc = subprocess.Popen([sys.executable, str(SCRIPTS / script), "--codex-dir", str(hb.root), "--apply"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:  # planning is done: writing starts
            if runs_dir.exists() and set(runs_dir.glob("*_*")) - known:
                break
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.015))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        rb = run("rollback.py", hb.root, "--latest", "--apply")
        assert rb.returncode == 0, rb.stdout + rb.stderr
        assert home_state(hb.root) == before, n
    assert killed >= 6, killed


def _run60(script, home, *args):
    return run_on_home(script, home, *args, timeout=60)


def test_a_fifo_named_like_a_rollout_never_blocks_any_script(tmp_path):
    """A FIFO (or socket) where a rollout should be would block a plain open() forever: every
    script finishes, reports it once as unreadable and changes nothing."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    t = hb.add(provider="oldco", preview="kept")
    fifo = t.path.parent / "rollout-2025-01-02T03-04-05-11111111-2222-4333-8444-555555555555.jsonl"
    os.mkfifo(str(fifo))
    link = hb.root / "sessions" / "rollout-2025-01-02T03-04-06-11111111-2222-4333-8444-666666666666.jsonl"
    os.symlink(str(fifo), str(link))
    before = snapshot(hb.root)
    audit = _run60("session_audit.py", hb.root, "--json")
    assert audit.returncode == 1, audit.stderr
    unreadable = json.loads(audit.stdout)["integrity"]["unreadable_paths_sample"]
    assert sorted(unreadable) == sorted([f"{fifo}: not a regular file (never opened)",
                                         f"{link}: not a regular file (never opened)"])
    for script, args in (("session_repair.py", ("--import-orphans",)), ("provider_migrate.py", ())):
        proc = _run60(script, hb.root, "--json", *args)
        assert proc.returncode in (0, 1), proc.stderr
    assert snapshot(hb.root) == before
    migrated = _run60("provider_migrate.py", hb.root, "--apply", "--json")
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["result"]["line1_rewritten"] == 1
    assert stat.S_ISFIFO(os.lstat(str(fifo)).st_mode)


def test_open_regular_refuses_a_fifo_without_blocking(tmp_path):
    from sessionkit.codexfiles.paths import open_regular
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(str(fifo))
    with pytest.raises(OSError, match="not a regular file"):
        open_regular(fifo)
    plain = tmp_path / "p.jsonl"
    plain.write_bytes(b'{"a":1}\n{"b":2}\n')
    with open_regular(plain) as fh:
        assert [line for line in fh] == [b'{"a":1}\n', b'{"b":2}\n']


_KILLED_WRITER = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")  # every changed page spills into the DB file before COMMIT
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE threads SET model_provider = 'half-written'")
conn.execute("CREATE TABLE spill (x)")  # more dirty pages than the cache holds: the first ones spill
conn.executemany("INSERT INTO spill VALUES (randomblob(4000))", [()] * 200)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _kill_a_writer_mid_transaction(db):
    proc = faultrun.script_run([sys.executable, "-c", _KILLED_WRITER, str(db)], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert os.path.getsize(str(db) + "-journal") > 0  # a hot journal: the DB file holds torn pages


def test_a_hot_journal_is_never_read_past(tmp_path):
    """A writer killed mid-transaction leaves a rollback journal and half-written pages. A read-only
    open must not read those pages as if committed (immutable=1 would): the audit stops with one
    line and changes nothing; rollback --apply lets SQLite put the DB back first, then undoes its run."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    for i in range(40):
        hb.add(provider="oldco" if i % 2 else "newco", preview=f"t{i}")
    before = home_state(hb.root)
    assert run("provider_migrate.py", hb.root, "--apply").returncode == 0
    migrated = home_state(hb.root)
    _kill_a_writer_mid_transaction(hb.db_path)
    torn = snapshot(hb.root)
    immutable = sqlite3.connect(f"file:{hb.db_path}?mode=ro&immutable=1", uri=True)
    try:  # what a read past the journal would see: half-written rows, or a malformed schema
        seen = immutable.execute("SELECT count(*) FROM threads WHERE model_provider = 'half-written'").fetchone()[0]
    except sqlite3.DatabaseError:
        seen = -1
    immutable.close()
    assert seen != 0
    audit = run("session_audit.py", hb.root)
    assert audit.returncode == 2 and "Traceback" not in audit.stderr
    (line,) = audit.stderr.strip().splitlines()
    assert "state_5.sqlite-journal" in line and "nothing was changed" in line
    assert snapshot(hb.root) == torn
    rb = run("rollback.py", hb.root, "--latest", "--apply", "--json")
    assert rb.returncode == 0, rb.stderr
    assert json.loads(rb.stdout)["rows_to_revert"] == 20
    assert not os.path.exists(str(hb.db_path) + "-journal") or os.path.getsize(str(hb.db_path) + "-journal") == 0
    assert home_state(hb.root) == before and migrated != before


@pytest.mark.parametrize("journal", ["stale-beside-wal", "symlink", "folder"])
def test_a_journal_name_that_is_no_hot_journal_changes_nothing(tmp_path, journal):
    """A `-journal` that SQLite would never roll back (a leftover beside a WAL, a symlink, a folder)
    neither stops the audit nor makes it open the DB so that a `-shm` is created."""
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"], wal=True)
    for i in range(4):
        hb.add(provider="newco", preview=f"t{i}")
    db = str(hb.db_path)
    if journal == "stale-beside-wal":
        writer = sqlite3.connect(db)  # a WAL with frames and no -shm: what a killed Codex leaves
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE threads SET title = 'in the wal'")
        writer.commit()
        shutil.copy(db + "-wal", tmp_path / "wal")
        writer.close()  # checkpoints and removes the WAL and -shm: the WAL is put back alone
        shutil.copy(tmp_path / "wal", db + "-wal")
        if os.path.exists(db + "-shm"):
            os.unlink(db + "-shm")
        with open(db + "-journal", "wb") as fh:
            fh.write(b"\0" * 512)
    elif journal == "symlink":
        os.symlink(str(tmp_path / "elsewhere"), db + "-journal")
        (tmp_path / "elsewhere").write_bytes(b"x" * 512)
    else:
        os.mkdir(db + "-journal")
    before = snapshot(hb.root)
    assert (os.path.exists(db + "-wal"), os.path.exists(db + "-shm")) == (journal == "stale-beside-wal", False)
    audit = run("session_audit.py", hb.root, "--json")
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["counts"]["threads_total"] == 4
    assert snapshot(hb.root) == before


OSC52 = "\x1b]52;c;aGFja2Vk\x07"  # a clipboard write
CURSOR = "\x1b[2J\x1b[H"  # clear the screen, cursor home
RAW = ("\x1b", "\x07", "\x9b", "\x9d", "\u202e", "\u200f", "\u200b", "\ufeff", "\u2028")


def _hostile_strings_home(root):
    """Titles, a name, folders and a provider holding terminal control sequences."""
    hb = HomeBuilder(root, provider="newco", providers=["newco"])
    a = hb.add(provider="oldco", preview=f"title {CURSOR}{OSC52} end", cwd=f"/work/red{CURSOR}dir")
    b = hb.add(provider=f"old{OSC52}co", preview="second\u202eevil", cwd="/work/line\nINJECTED")
    hb.add(provider="newco", preview=f"archived {OSC52}", archived=True)
    hb.add(provider="old\u200f\u200b\ufeff\u2028co", preview="hidden\u200fmarks\u200bzero\ufeffwidth\u2028sep", cwd="/work/rtl\u200fdir")
    named = hb.add(provider="oldco", preview="named one")
    with open(root / "session_index.jsonl", "w") as fh:
        fh.write(json.dumps({"id": named.id, "thread_name": f"name {OSC52}\nnext line",
                             "updated_at": "2025-03-01T00:00:00Z"}) + "\n")
    moved = hb.add(provider="newco", preview=f"moved {CURSOR}")
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (str(root / "sessions" / "gone.jsonl"), moved.id))
    return hb, [a, b, named]


def test_strings_from_a_home_reach_no_terminal_raw(tmp_path):
    """Every human output of every script escapes control characters from titles, names, folders
    and providers: no cursor move, no OSC 52 clipboard write reaches the terminal raw."""
    root = tmp_path / "home" / ".codex"
    hb, threads = _hostile_strings_home(root)
    other = HomeBuilder(tmp_path / "other" / ".codex", provider="newco", providers=["newco"])
    other.n = 100  # ids of its own
    other.add(provider="newco", preview="mine")

    def script(name, *args, home=root):
        proc = faultrun.script_run([sys.executable, str(SCRIPTS / name), "--codex-dir", str(home), *args],
                                   capture_output=True, text=True, check=False)
        _no_traceback(proc)
        return proc

    outputs = []
    for name, args in (("session_audit.py", ()), ("session_audit.py", ("--verbose",)),
                       ("session_repair.py", ()), ("provider_migrate.py", ()),
                       ("provider_migrate.py", ("--include-archived", "--apply", "--verbose")),
                       ("session_repair.py", ("--apply", "--verbose")),
                       ("rollback.py", ("--list",)), ("rollback.py", ("--latest",)),
                       ("rollback.py", ("--latest", "--apply", "--verbose")),
                       ("rollback.py", ("--latest", "--apply"))):
        proc = script(name, *args)
        assert proc.returncode in (0, 1), (name, args, proc.stderr)
        outputs.append((name, args, proc.stdout + proc.stderr))
    imp = script("session_import.py", "--from", str(root), home=other.root)
    outputs.append(("session_import.py", (), imp.stdout + imp.stderr))
    runs = sorted(p for p in (root / ".tmp" / "session-migration").iterdir() if p.is_dir())
    backup = next(runs[-1].glob("state_5.sqlite.*bak"))
    for name, args in (("session_recover.py", ()), ("session_recover.py", ("--apply", "--verbose")),
                       ("session_export.py", ("--all", "--archived", "include")),
                       ("session_export.py", ("--all", "--to", str(tmp_path / "out.zip"), "--apply")),
                       ("rollback.py", ("--until", str(runs[0]))), ("rollback.py", ("--restore-db", str(backup)))):
        proc = script(name, *args)
        assert proc.returncode in (0, 1), (name, args, proc.stderr)
        outputs.append((name, args, proc.stdout + proc.stderr))
    assert any("hidden\\u200fmarks\\u200bzero\\ufeffwidth" in text for _n, _a, text in outputs)
    for name, args, text in outputs:
        for raw in RAW:
            assert raw not in text, (name, args, repr(raw), text)
    audit_text = outputs[0][2]
    assert "\\e]52;c;aGFja2Vk\\x07" in outputs[3][2]  # shown escaped, not dropped
    assert "/work/red\\e[2J\\e[Hdir" in outputs[1][2]
    assert '"name \\e]52;c;aGFja2Vk\\x07 next line"' in outputs[3][2]  # the name, on one line
    assert "next line" not in [line.strip() for line in outputs[3][2].splitlines()]
    for name, args, text in outputs:  # a newline in a folder never starts a line of ours
        assert not [line for line in text.splitlines() if line.startswith("INJECTED")], (name, args, text)
    assert "/work/line\\nINJECTED" in audit_text


def test_an_imported_provider_cannot_add_flags_to_the_printed_migration(tmp_path):
    """The import's suggested migration is built from arguments: a source thread whose provider is
    `q --from-provider openai --target-provider zz --apply` yields a command that, pasted, moves
    nothing of the user's (before: it migrated every openai session of the user to `zz`)."""
    evil = "q --from-provider openai --target-provider zz --apply"
    src = HomeBuilder(tmp_path / "old" / ".codex", provider="openai")
    src.n = 200
    src.add(provider=evil, cwd="/p", preview="from the old machine")
    dst = HomeBuilder(tmp_path / "new" / ".codex", provider="openai")
    mine = [dst.add(provider="openai", preview=f"mine {i}") for i in range(3)]
    proc = faultrun.script_run([sys.executable, str(SCRIPTS / "session_import.py"), "--codex-dir", str(dst.root),
                                "--from", str(src.root)], capture_output=True, text=True, check=False)
    _no_traceback(proc)
    cmds = [line.strip() for line in proc.stdout.splitlines() if "provider_migrate.py" in line
            and line.startswith("  ")]
    assert len(cmds) == 1, proc.stdout
    import shlex
    words = shlex.split(cmds[0])
    assert words[words.index("--from-provider") + 1] == evil and words.count("--target-provider") == 1
    assert "--apply" not in words
    before = dst.sql("SELECT id, model_provider FROM threads ORDER BY id")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pasted = subprocess.run(["bash", "-c", cmds[0]], cwd=str(elsewhere), capture_output=True, text=True,
                            check=False)
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert pasted.stdout.startswith("Nothing to do: ")
    assert dst.sql("SELECT id, model_provider FROM threads ORDER BY id") == before
    assert [p for _i, p in before] == ["openai"] * len(mine)
    assert not (dst.root / ".tmp" / "session-migration").exists()
