"""Small homes start fast: a dry-run loads only what it uses (no executor, undo, run list or
safety checks: those are for --apply), and a run writes no __pycache__ (the skill may live inside
the Codex home)."""
import json
import os
import subprocess
import sys

import pytest

from harness import SCRIPTS
from homebuilder import HomeBuilder, build_broken_home, connect

# modules a dry-run has no use for: the executor and what it brings, the run list, the archive formats
APPLY_ONLY = ("sessionkit.runlog.writerun", "sessionkit.runlog.undo", "sessionkit.runlog.safety",
              "sessionkit.runlog.runs", "sessionkit.runlog.lockbatch", "sessionkit.runlog.restore")

RUN_SCRIPT = """
import json, runpy, sys
script, out, args = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [script, *args]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
"""  # then what the probe writes to `out`

PROBE = RUN_SCRIPT + """
with open(out, "w") as fh:
    json.dump(sorted(sys.modules), fh)
"""


def loaded(tmp_path, script, *args):
    out = tmp_path / f"{script}.modules.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(SCRIPTS / script), str(out), *args],
                          capture_output=True, text=True, check=False)
    assert out.exists(), proc.stderr
    return set(json.loads(out.read_text()))


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """A home with findings: the audit's advice plans a repair and a migration (dry-runs)."""
    return build_broken_home(tmp_path_factory.mktemp("startup") / "home" / ".codex")


@pytest.mark.parametrize("script,args", [
    ("session_audit.py", ()),
    ("session_repair.py", ("--import-orphans",)),
    ("provider_migrate.py", ()),
    ("session_recover.py", ()),
])
def test_a_dry_run_loads_no_apply_module(tmp_path, broken, script, args):
    mods = loaded(tmp_path, script, "--codex-dir", str(broken.root), *args)
    assert "sessionkit.diagnose.snapshot" in mods  # it did read the home
    assert sorted(m for m in APPLY_ONLY + ("sessionkit.fixes.codex_rebuild",) if m in mods) == []


def test_an_import_dry_run_loads_no_apply_module(tmp_path, broken):
    dest = HomeBuilder(tmp_path / "new" / ".codex")  # a home with its DB: the dry-run plans (no exit 2)
    mods = loaded(tmp_path, "session_import.py", "--from", str(broken.root), "--codex-dir", str(dest.root))
    assert "sessionkit.fixes.importer" in mods
    plan = subprocess.run([sys.executable, str(SCRIPTS / "session_import.py"), "--from", str(broken.root),
                           "--codex-dir", str(dest.root), "--json"], capture_output=True, text=True, check=False)
    assert json.loads(plan.stdout)["to_import"] > 0, plan.stderr  # the same run planned an import
    assert sorted(m for m in APPLY_ONLY + ("sessionkit.fixes.import_apply", "sessionkit.runlog.ops") if m in mods) == []


def test_the_audit_without_site_loads_no_process_socket_or_archive_module(tmp_path):
    """With -S (no site-packages hooks) every module loaded is the script's own choice; a home
    without compressed rollouts needs no program run (zstd) and no socket (no daemon there)."""
    home = HomeBuilder(tmp_path / "home" / ".codex")
    home.add(provider="oldco")  # a finding: the advice plans a migration
    home.add(cwd="/gone")
    out = tmp_path / "mods.json"
    subprocess.run([sys.executable, "-S", "-c", PROBE, str(SCRIPTS / "session_audit.py"), str(out),
                    "--codex-dir", str(home.root)], capture_output=True, text=True, check=False)
    mods = set(json.loads(out.read_text()))
    assert "sessionkit.diagnose.audit" in mods
    assert sorted(mods & {"subprocess", "socket", "tarfile", "zipfile", "tempfile", "csv"}) == []


def test_a_run_writes_no_bytecode(tmp_path, broken):
    before = sorted(p for p in SCRIPTS.rglob("__pycache__"))
    subprocess.run([sys.executable, str(SCRIPTS / "session_audit.py"), "--codex-dir", str(broken.root)],
                   capture_output=True, text=True, check=False)
    assert sorted(p for p in SCRIPTS.rglob("__pycache__")) == before



def test_an_import_dry_run_from_a_folder_loads_no_archive_digest_or_strptime_module(tmp_path):
    """Issue 24: a folder's dry-run reads no archive (tarfile, zipfile, the export check), makes no
    digest (hashlib: only for a thread DEST already has), parses no date with strptime, defines no
    dataclass (the plan, its inputs and skips are plain classes) and, with --json, loads no text
    renderer (-S: every module loaded is the script's own choice)."""
    src = HomeBuilder(tmp_path / "old" / ".codex")
    src.add(provider="oldco", archived=True)
    src.add(write_row=False)  # no row: its date comes from the file name
    dest = HomeBuilder(tmp_path / "new" / ".codex")  # its DB, no thread (the ids would be the same)
    out = tmp_path / "mods.json"
    proc = subprocess.run([sys.executable, "-S", "-c", PROBE, str(SCRIPTS / "session_import.py"), str(out),
                           "--from", str(src.root), "--codex-dir", str(dest.root), "--json"],
                          capture_output=True, text=True, check=False)
    assert json.loads(proc.stdout)["to_import"] == 2, proc.stderr  # it did plan the import
    mods = set(json.loads(out.read_text()))
    assert sorted(mods & {"tarfile", "zipfile", "sessionkit.fixes.export", "hashlib", "_strptime", "heapq",
                          "sessionkit.ui.results", "dataclasses"}) == []  # results: the text report's only


DATACLASS_PROBE = RUN_SCRIPT + """
found = sorted(name for name, mod in list(sys.modules.items()) if name.startswith("sessionkit")
               and any(hasattr(v, "__dataclass_fields__") and getattr(v, "__module__", None) == name
                       for v in vars(mod).values() if isinstance(v, type)))
with open(out, "w") as fh:
    json.dump([sorted(sys.modules), found], fh)
"""


def dataclass_modules(tmp_path, script, *args):
    """(modules loaded, sessionkit modules that define a dataclass) after one run of `script`."""
    out = tmp_path / f"{script}.dc.json"
    proc = subprocess.run([sys.executable, "-S", "-c", DATACLASS_PROBE, str(SCRIPTS / script), str(out), *args],
                          capture_output=True, text=True, check=False)
    assert out.exists(), proc.stderr
    mods, found = json.loads(out.read_text())
    return set(mods), set(found)


@pytest.mark.parametrize("script,args", [
    ("session_audit.py", ("--json",)),
    ("provider_migrate.py", ("--json",)),
    ("session_recover.py", ("--json",)),
])
def test_a_read_only_run_defines_no_dataclass(tmp_path, broken, script, args):
    """Issue 24: the home, its locks, the host, the index, the audit's inputs and checks, the
    results, the planned operations and rollout edits are plain classes with an explicit __init__:
    no dataclass code is exec'd at import, and `dataclasses` (inspect, ast, dis, tokenize) is never
    loaded on these paths."""
    mods, found = dataclass_modules(tmp_path, script, "--codex-dir", str(broken.root), *args)
    assert "sessionkit.diagnose.snapshot" in mods  # it did read the home
    assert "sessionkit.runlog.ops" in mods  # the plan's operations were loaded (the migration's, the recovery's)
    assert sorted(found) == [] and "dataclasses" not in mods


def test_an_apply_and_its_rollback_define_no_dataclass(tmp_path, broken):
    """Issue 24: the run's result, its folder, the journal's runs, undo plans and states, the index
    append are plain classes too: an --apply and the rollback after it never load `dataclasses`."""
    home = ("--codex-dir", str(broken.root))
    mods, found = dataclass_modules(tmp_path, "session_recover.py", *home, "--apply", "--json")
    assert "sessionkit.runlog.writerun" in mods and sorted(found) == [] and "dataclasses" not in mods
    mods, found = dataclass_modules(tmp_path, "rollback.py", *home, "--latest", "--apply", "--json")
    assert "sessionkit.runlog.undo" in mods and sorted(found) == [] and "dataclasses" not in mods
    runs = json.loads(subprocess.run([sys.executable, str(SCRIPTS / "rollback.py"), *home, "--list", "--json"],
                                     capture_output=True, text=True, check=True).stdout)["runs"]
    assert [r["status"] for r in runs] == ["rolled back"]  # both runs did their work


@pytest.mark.parametrize("apply", [False, True])
def test_an_export_loads_no_dataclass_and_only_the_archive_format_it_writes(tmp_path, broken, apply):
    """Issue 24: an export's run (-S: every module loaded is the script's own choice) defines no
    dataclass, and loads no archive module nor digest when it only shows the selection; an
    --apply to a .tar.gz loads tarfile, never zipfile."""
    target = tmp_path / "out.tar.gz"
    mods, found = dataclass_modules(tmp_path, "session_export.py", "--codex-dir", str(broken.root), "--all",
                                    "--to", str(target), "--json", *(["--apply"] if apply else []))
    assert target.exists() is apply  # the run did what it was asked
    assert sorted(found) == [] and "dataclasses" not in mods
    assert sorted(mods & {"tarfile", "zipfile", "hashlib", "tempfile", "textwrap"}) == \
        (["hashlib", "tarfile", "tempfile"] if apply else [])


def test_the_lock_scan_reads_no_lock_table_when_no_lock_is_held(tmp_path, monkeypatch):
    """Issue 24: /proc/locks (slow to read on a busy host: every lock of the machine) names the
    holder of a held lock; with none held it is never read. A held lock's holder is still named."""
    from sessionkit.codexfiles import locks
    reads = []
    real = locks._lock_pids
    monkeypatch.setattr(locks, "_lock_pids", lambda: reads.append(1) or real())
    home = HomeBuilder(tmp_path / "home" / ".codex")
    (home.root / "tmp" / "arg0" / "codex-arg0a").mkdir(parents=True)
    lock = home.root / "tmp" / "arg0" / "codex-arg0a" / ".lock"
    lock.write_text("")
    assert not locks.scan_activity(home.root, environ={}).holders and reads == []
    import fcntl
    with open(lock) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        (held,) = [h for h in locks.scan_activity(home.root, environ={}).holders if h.path == lock]
    assert reads == [1] and held.pid == os.getpid()


def test_operations_keep_a_dataclass_equality_repr_and_copy():
    """Issue 24: the ops lost @dataclass, not its behaviour: equal by class and compared fields (the
    plan's growth, a fork's parent and the read caches left out), shown without them, unhashable;
    at() copies every field __init__ takes and none of the caches."""
    from sessionkit.runlog.ops import Counts, Line1Rewrite, RowDelete, RowInsert, RowRef
    a = Line1Rewrite("t1", "/h/a.jsonl", {"model_provider": "new"}, spans=[(5, b"o", b"n")], expect_growth=0)
    b = Line1Rewrite("t1", "/h/a.jsonl", {"model_provider": "new"}, spans=[(5, b"o", b"n")], expect_growth=3)
    b._seen = ("sig", "old")
    assert a == b and a != Line1Rewrite("t1", "/h/a.jsonl", {"model_provider": "other"})
    assert repr(a).startswith("Line1Rewrite(thread_id='t1', path='/h/a.jsonl', set={'model_provider': 'new'}, ")
    assert "expect_growth" not in repr(a) and "_seen" not in repr(a) and repr(a).endswith("new_cut_sha=None)")
    with pytest.raises(TypeError):
        hash(a)
    moved = b.at("/h/a.jsonl", "/h/b.jsonl")
    assert (moved.path, moved.spans, moved.expect_growth, moved._seen, b.path) == \
        ("/h/b.jsonl", [(5, b"o", b"n")], 3, None, "/h/a.jsonl")
    assert b.at("/h/other.jsonl", "/h/b.jsonl") is b
    row = dict(id="t1", rollout_path="/h/a.jsonl")
    ins, dele = RowInsert("s.sqlite", "threads", row, {"id": "t1"}), RowDelete("s.sqlite", "threads", row, {"id": "t1"})
    assert ins != dele and dele == RowDelete("s.sqlite", "threads", dict(row), {"id": "t1"})
    assert {Counts("moves"), Counts("moves")} == {Counts("moves")} and RowRef("d", "threads", {"id": 1}).columns is None


def test_a_recovery_plan_makes_no_digest_where_a_daemon_left_its_sockets(tmp_path, monkeypatch):
    """Issue 24: a recovery's dry-run on a moved home (its rollouts' folder records planned by the
    one editor) makes no digest of them (the write plans each file again under its lock), and the
    name of 0.171's daemon socket is hashed without loading OpenSSL: no `hashlib` at all, even where
    `$TMPDIR/codex-daemon-<uid>/` exists."""
    daemons = tmp_path / "tmp"
    (daemons / f"codex-daemon-{os.getuid()}").mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(daemons))
    home = HomeBuilder(tmp_path / "new" / ".codex")
    made = [home.add(cwd="/Users/olduser/proj") for _ in range(3)]  # copied from /Users/olduser
    conn = connect(home.db_path)
    for t in made:  # rows and folder records name the old home
        conn.execute("UPDATE threads SET rollout_path=? WHERE id=?",
                     ("/Users/olduser/.codex/" + str(t.path.relative_to(home.root)), t.id))
    conn.commit()
    conn.close()
    mods = loaded(tmp_path, "session_recover.py", "--codex-dir", str(home.root), "--json")
    assert "sessionkit.fixes.recover" in mods
    assert "hashlib" not in mods and "_hashlib" not in mods
    plan = json.loads(subprocess.run([sys.executable, str(SCRIPTS / "session_recover.py"), "--codex-dir",
                                      str(home.root), "--json"], capture_output=True, text=True).stdout)
    assert plan["planned_rollout_rewrites"] == 3  # the files' folder records were planned


def test_a_plan_without_digests_is_the_same_plan(tmp_path):
    """plan_file(digests=False), the planners' look, plans the same spans, growth and folder
    lines as the write's own plan_file; only its digests are left empty."""
    from sessionkit.codexfiles.rollout_edit import plan_file
    p = tmp_path / "rollout.jsonl"
    p.write_text('{"type":"session_meta","payload":{"id":"x","cwd":"/old/a","model_provider":"o"}}\n'
                 '{"type":"turn_context","payload":{"cwd":"/old/a/b"}}\n{"type":"event_msg","payload":{}}\n')
    full, plain = plan_file(str(p), [("/old", "/newer")]), plan_file(str(p), [("/old", "/newer")], digests=False)
    assert (plain.spans, plain.growth, plain.folder_lines, plain.shifts, plain.size, plain.problem) == \
        (full.spans, full.growth, full.folder_lines, full.shifts, full.size, full.problem)
    assert full.spans and full.old_file_sha and plain.old_file_sha in ("", None) and plain.old_sha in ("", None)
