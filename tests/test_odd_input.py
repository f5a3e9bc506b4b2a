"""Odd values in rollouts and rows, unsafe moves, a WAL without -shm, and bad flags (issue 11:
items 9, 10, 12, 15): one bad thread is a finding or a skipped item, never the end of the run;
the dry-run predicts the apply; a read-only open creates nothing; bad input is one line, exit 2."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from harness import SCRIPTS, clean_env, readable_scripts, snapshot
from homebuilder import HomeBuilder
from test_migrate_rollback import home_state, run


def call(script, *args, env=None):
    """A script with exactly these arguments (no --codex-dir added) and a clean environment."""
    e = clean_env()
    e.update(env or {})
    return faultrun.script_run([sys.executable, str(SCRIPTS / script), *args], capture_output=True,
                               text=True, env=e, check=False)


def one_line_exit_2(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


def line1(path):
    return json.loads(path.read_bytes().split(b"\n", 1)[0])


def set_line1(path, old: bytes, new: bytes, age_s=86400 * 30):
    data = path.read_bytes()
    assert data.count(old) >= 1, old
    path.write_bytes(data.replace(old, new, 1))
    os.utime(path, (1.7e9 - age_s, 1.7e9 - age_s))


# ---- item 9: one odd value blocks nothing ---------------------------------------------------

@pytest.mark.parametrize("field,old,new", [
    ("model_provider", b'"model_provider":"oldco"', b'"model_provider":"old\\ud800co"'),
    ("cwd", b'"cwd":"/work/proj"', b'"cwd":"/work/\\udfffproj"'),
    ("id", b'"session_id":"', b'"session_id":"\\ud800'),  # a field we do not read: not a problem
])
def test_a_lone_surrogate_in_one_line1_is_one_skipped_thread(tmp_path, field, old, new):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    good = [hb.add(provider="oldco") for _ in range(2)]
    odd = hb.add(provider="oldco")
    set_line1(odd.path, old, new)
    odd_bytes = odd.path.read_bytes()
    harmless = field == "id"
    audit = run("session_audit.py", hb.root, "--json")
    assert audit.returncode == 1, audit.stderr
    integ = json.loads(audit.stdout)["integrity"]
    assert integ["line1_unreadable_count"] == (0 if harmless else 1)
    if not harmless:
        assert f"session_meta.{field} holds a lone surrogate" in integ["line1_unreadable_sample"][0]
    assert run("session_audit.py", hb.root).returncode == 1  # the text report too

    repair = run("session_repair.py", hb.root, "--json")
    assert repair.returncode == 0, repair.stderr  # nothing to do: the skipped thread is listed
    plan = json.loads(repair.stdout)
    assert plan["skipped_sample"] == ([] if harmless else [
        {"thread_id": odd.id, "reason": f"line 1 is unusable (session_meta.{field} holds a lone surrogate "
                                        "escape (not valid Unicode))"}])

    dry = run("provider_migrate.py", hb.root, "--json")
    assert dry.returncode == (0 if harmless else 1), dry.stderr
    dplan = json.loads(dry.stdout)
    assert dplan["candidates"] == (3 if harmless else 2) and dplan["skipped"] == (0 if harmless else 1)
    proc = run("provider_migrate.py", hb.root, "--json", "--apply")
    assert proc.returncode == (0 if harmless else 1), proc.stderr
    result = json.loads(proc.stdout)["result"]
    assert result["line1_rewritten"] == dplan["line1_rewrites"] == (3 if harmless else 2)
    assert result["updated_rows"] == dplan["row_updates"]
    assert [line1(t.path)["payload"]["model_provider"] for t in good] == ["newco", "newco"]
    if not harmless:
        assert odd.path.read_bytes() == odd_bytes
        assert hb.sql("SELECT model_provider FROM threads WHERE id=?", (odd.id,)) == [("oldco",)]


def _orphan(hb, first_message_line: bytes = None, meta_edit=None, turns=2):
    """An old orphan (no row) whose first user message line or line 1 is replaced."""
    t = hb.add(provider="newco", write_row=False, preview="hello", turns=turns)
    data = t.path.read_bytes()
    if first_message_line is not None:
        lines = data.split(b"\n")
        at = next(i for i, l in enumerate(lines) if b'"role":"user"' in l)
        lines[at] = first_message_line
        data = b"\n".join(lines)
    if meta_edit is not None:
        data = data.replace(*meta_edit, 1)
    t.path.write_bytes(data)
    os.utime(t.path, (1.6e9, 1.6e9))
    return t


def _user_line(text_json: bytes) -> bytes:
    return (b'{"timestamp":"2025-03-01T09:30:00.000Z","type":"response_item","payload":{"type":"message",'
            b'"role":"user","content":[{"type":"input_text","text":' + text_json + b'}]}}')


def test_orphans_with_odd_values_import_or_skip_exactly_as_the_dry_run_says(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    hb.add(provider="newco")
    surrogate = _orphan(hb, _user_line(b'"broken \\ud800 text"'))  # Codex's parser skips that line
    nul = _orphan(hb, _user_line(b'"a\\u0000b"'))
    types = _orphan(hb, meta_edit=(b'"cli_version":"0.169.0"', b'"cli_version":["0.169.0"]'))
    types.path.write_bytes(types.path.read_bytes()
                           .replace(b'"approval_policy":"on-request"', b'"approval_policy":{"granular":1}', 1)
                           + b'{"type":"event_msg","payload":{"type":"token_count","info":[1,2]}}\n'
                           + b'{"type":"event_msg","payload":{"type":"item_completed","item":"just text"}}\n')
    os.utime(types.path, (1.6e9, 1.6e9))
    huge = _orphan(hb, meta_edit=(b'"cli_version":"0.169.0"', b'"cli_version":"0.169.0"'))
    huge.path.write_bytes(huge.path.read_bytes() + b'{"type":"event_msg","payload":{"type":"token_count",'
                          b'"info":{"total_token_usage":{"total_tokens":' + str(2 ** 70).encode() + b'}}}}\n')
    os.utime(huge.path, (1.6e9, 1.6e9))
    wrong_cwd = _orphan(hb, meta_edit=(b'"cwd":"/work/proj"', b'"cwd":["/work/proj"]'))
    meta_surrogate = _orphan(hb, meta_edit=(b'"originator":"codex_cli_rs"', b'"originator":"codex\\udc00"'))
    before = home_state(hb.root)

    dry = run("session_repair.py", hb.root, "--import-orphans", "--json", "--sample", "50")
    assert dry.returncode == 1, dry.stderr
    plan = json.loads(dry.stdout)
    assert home_state(hb.root) == before
    assert plan["planned_row_inserts"] == 3
    assert sorted(plan["skipped_sample"], key=lambda s: s["thread_id"]) == sorted([
        {"thread_id": huge.id, "reason": "orphan not imported: column tokens_used would hold a number too "
                                         "large for SQLite"},
        {"thread_id": wrong_cwd.id, "reason": "orphan not imported: line 1 is unusable "
                                              "(session_meta.cwd is a list, not a string)"},
        {"thread_id": meta_surrogate.id, "reason": "orphan not imported: no session_meta line Codex can parse"},
    ], key=lambda s: s["thread_id"])

    proc = run("session_repair.py", hb.root, "--import-orphans", "--json", "--apply")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["result"]["inserted_rows"] == 3
    rows = {r[0]: r[1:] for r in hb.sql(
        "SELECT id, preview, first_user_message, cli_version, approval_mode, tokens_used FROM threads")}
    assert rows[surrogate.id] == ("hello (turn 1)", "hello (turn 1)", "0.169.0", "on-request", 0)
    assert rows[nul.id] == ("a\x00b", "a\x00b", "0.169.0", "on-request", 0)
    assert rows[types.id] == ("hello (turn 0)", "hello (turn 0)", "", "", 0)
    assert huge.id not in rows and wrong_cwd.id not in rows and meta_surrogate.id not in rows


def test_rows_whose_text_is_not_utf8_are_read_and_left_alone(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    stale = [hb.add(provider="newco") for _ in range(2)]
    odd = hb.add(provider="oldco")
    for t in stale + [odd]:
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", ("/gone/.codex/sessions/" + t.path.name, t.id))
    hb.sql("UPDATE threads SET model_provider=CAST(x'6f6c64ff636f' AS TEXT), cwd=CAST(x'2fff' AS TEXT), "
           "rollout_path=CAST(x'2f676f6e65ff' AS TEXT) WHERE id=?", (odd.id,))
    audit = run("session_audit.py", hb.root, "--json")
    assert audit.returncode == 1, audit.stderr
    r = json.loads(audit.stdout)
    assert r["counts"]["threads_total"] == 3
    assert r["distribution"]["model_provider"] == {"newco": 2, "old\\xffco": 1}
    assert r["integrity"]["missing_rollout_path_count"] == 3
    assert run("session_audit.py", hb.root).returncode == 1

    dry = json.loads(run("session_repair.py", hb.root, "--json").stdout)
    assert dry["repoint_rows"] == 2 and dry["skipped"] == 1
    assert dry["skipped_sample"][0]["thread_id"] == odd.id
    assert dry["skipped_sample"][0]["reason"].startswith("row left alone: it holds text that is not valid UTF-8")
    proc = run("session_repair.py", hb.root, "--json", "--apply")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout)["result"]["updated_rows"] == 2
    assert hb.sql("SELECT hex(rollout_path), hex(cwd) FROM threads WHERE id=?", (odd.id,)) == [("2F676F6E65FF", "2FFF")]

    mig = run("provider_migrate.py", hb.root, "--json", "--apply")
    assert mig.returncode == 1, mig.stderr
    out = json.loads(mig.stdout)
    assert out["candidates"] == 0 and out["skipped"] == 1
    assert out["skipped_sample"][0]["reason"].startswith("row left alone: it holds text that is not valid UTF-8")
    assert hb.sql("SELECT hex(model_provider) FROM threads WHERE id=?", (odd.id,)) == [("6F6C64FF636F",)]


# ---- item 10: one unsafe move is one skipped thread -------------------------------------------

def test_an_unarchive_into_a_symlinked_date_folder_is_skipped_and_the_rest_repaired(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine\n")
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco"])
    stale = [hb.add(provider="newco") for _ in range(3)]
    for t in stale:
        hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", ("/old/.codex/sessions/2025/03/01/" + t.path.name, t.id))
    arch = hb.add(provider="newco", archived=True)
    name = arch.path.name.replace("rollout-2025-03-01", "rollout-2024-12-31")
    new_path = arch.path.with_name(name)
    arch.path.rename(new_path)
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (str(new_path), arch.id))
    (hb.root / "sessions" / "2024" / "12").mkdir(parents=True)
    (hb.root / "sessions" / "2024" / "12" / "31").symlink_to(outside)
    # a row whose stored path lies in the symlinked folder: repointed, never moved through it
    via_link = hb.add(provider="newco")
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?",
           (str(hb.root / "sessions" / "2024" / "12" / "31" / via_link.path.name), via_link.id))
    guard = snapshot(outside)

    dry = run("session_repair.py", hb.root, "--json", "--unarchive")
    assert dry.returncode == 1, dry.stderr
    plan = json.loads(dry.stdout)
    assert (plan["planned_unarchive_moves"], plan["planned_path_moves"], plan["repoint_rows"]) == (0, 0, 4)
    assert plan["skipped"] == 1 and plan["skipped_sample"][0]["thread_id"] == arch.id
    assert plan["skipped_sample"][0]["reason"].startswith(
        f"unarchive: cannot move to {hb.root}/sessions/2024/12/31/{name}: not a safe place")

    proc = run("session_repair.py", hb.root, "--json", "--unarchive", "--apply")
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)["result"]
    assert (result["updated_rows"], result["moved"], result["archived_after"]) == (4, 0, 1)
    paths = dict(hb.sql("SELECT id, rollout_path FROM threads"))
    assert [paths[t.id] for t in stale + [via_link]] == [str(t.path) for t in stale + [via_link]]
    assert paths[arch.id] == str(new_path) and new_path.is_file()
    assert snapshot(outside) == guard


# ---- item 12: a WAL without -shm is read without creating anything --------------------------

def _killed_writer(db: Path, *statements: str) -> None:
    """A writer that committed into the WAL and died before any checkpoint; its -shm is gone."""
    code = ("import sqlite3, os, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('PRAGMA journal_mode=WAL')\n"
            "c.execute('PRAGMA wal_autocheckpoint=0')\n"
            "for s in sys.argv[2:]:\n"
            "    c.execute(s)\n"
            "os._exit(0)\n")
    faultrun.script_run([sys.executable, "-c", code, str(db), *statements], check=True)
    Path(str(db) + "-shm").unlink()
    assert Path(str(db) + "-wal").stat().st_size > 0


def _wal_home(root: Path) -> HomeBuilder:
    """State DB, history DB and a second state DB, each with rows only in a WAL and no -shm."""
    hb = HomeBuilder(root, provider="newco", providers=["newco"], wal=True)
    hb.add(provider="oldco")
    hb.add(provider="oldco", archived=True)
    other = root / "sqlite"
    other.mkdir()
    shutil.copy(hb.db_path, other / "state_5.sqlite")
    _killed_writer(other / "state_5.sqlite", "DELETE FROM threads")
    _killed_writer(root / "thread_history_1.sqlite",
                   "CREATE TABLE thread_turns (thread_id TEXT, turn_id TEXT, rollout_ordinal INTEGER, "
                   "rollout_byte_offset INTEGER, rollout_end_byte_offset INTEGER)",
                   "CREATE TABLE thread_history_projection_state (thread_id TEXT, next_rollout_byte_offset INTEGER)")
    _killed_writer(hb.db_path, "UPDATE threads SET model_provider='inwal'",
                   "UPDATE threads SET archived=0, archived_at=NULL")
    return hb


def test_a_wal_without_shm_is_read_whole_and_nothing_is_created(tmp_path):
    hb = _wal_home(tmp_path / ".codex")
    before = snapshot(hb.root)
    assert "state_5.sqlite-shm" not in before and "state_5.sqlite-wal" in before
    r = json.loads(run("session_audit.py", hb.root, "--json").stdout)
    assert r["distribution"]["model_provider"] == {"inwal": 2}  # rows that live only in the WAL
    assert r["counts"]["threads_archived"] == 0
    assert [o["counts"]["threads_total"] for o in r["other_state_dbs"]] == [0]  # its WAL deleted both
    for script, args in (("session_repair.py", ()), ("provider_migrate.py", ()),
                         ("provider_migrate.py", ("--target-provider", "inwal")), ("rollback.py", ("--list",))):
        proc = run(script, hb.root, "--json", *args)
        assert proc.returncode in (0, 1), (script, proc.stderr)
    mig = json.loads(run("provider_migrate.py", hb.root, "--json").stdout)
    assert mig["provider_distribution_before"] == {"inwal": 2}  # both active, as the WAL says
    assert snapshot(hb.root) == before


def _nobody_python():
    """An interpreter an unprivileged user can run, when this test runs as root with setpriv."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return None
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(cand) and subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", cand, "-c", "import sqlite3"],
                capture_output=True, check=False).returncode == 0:
            return cand
    return None


def test_a_wal_without_shm_is_read_by_a_user_who_cannot_write_the_home():
    py = _nobody_python()
    if py is None:
        pytest.skip("needs root, setpriv and a python3 that user nobody can run")
    base = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="odd-input-ro-"))
    try:
        os.chmod(base, 0o755)
        hb = _wal_home(base / ".codex")
        for dirpath, dirs, files in os.walk(base):
            os.chmod(dirpath, 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)
        before = snapshot(hb.root)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", py,
                               str(readable_scripts() / "session_audit.py"), "--codex-dir", str(hb.root), "--json"],
                              capture_output=True, text=True, check=False,
                              env={"PATH": os.environ.get("PATH", ""), "HOME": str(base)})
        assert proc.returncode == 1, proc.stderr
        assert json.loads(proc.stdout)["distribution"]["model_provider"] == {"inwal": 2}
        assert snapshot(hb.root) == before
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---- item 15: every flag refuses what it cannot mean ---------------------------------------

@pytest.fixture
def two_homes(tmp_path):
    """A home to point flags at, and a second one in $CODEX_HOME that an ignored flag would fall back to."""
    hb = HomeBuilder(tmp_path / "a" / ".codex", provider="newco", providers=["newco"])
    hb.add(provider="oldco", cwd="/home/u/proj")
    hb.add(provider="newco", archived=True)
    moved = hb.add(provider="newco")
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", ("/home/u/.codex/sessions/" + moved.path.name, moved.id))
    fallback = HomeBuilder(tmp_path / "b" / ".codex", provider="newco", providers=["newco"])
    fallback.add(provider="oldco")
    fallback.add(provider="newco", archived=True)
    assert run("provider_migrate.py", hb.root, "--target-provider", "oldco", "--thread-id", hb.threads[1].id,
               "--include-archived", "--apply").returncode == 0  # one run for rollback to name
    return hb, fallback


UNKNOWN = "0195ffff-0000-7000-8000-00000000abcd"
BAD_FLAGS = [
    # (script, args after --codex-dir HOME (None: give none), stderr fragment)
    ("session_audit.py", ["--codex-dir", ""], "empty path"),
    ("session_repair.py", ["--codex-dir", "", "--apply"], "empty path"),
    ("provider_migrate.py", ["--codex-dir", "", "--apply"], "empty path"),
    ("rollback.py", ["--codex-dir", "", "--latest", "--apply"], "empty path"),
    ("session_audit.py", ["--codex-dir", "/nonexistent/codex/home"], "no Codex home"),
    ("session_audit.py", ["--codex-dir", "/"], "/ has no sessions/, config.toml nor auth.json: is it a Codex home?"),
    ("session_audit.py", ["--sqlite-home", ""], "empty path"),
    ("session_repair.py", ["--sqlite-home", "", "--apply"], "empty path"),
    ("provider_migrate.py", ["--sqlite-home", "", "--apply"], "empty path"),
    ("rollback.py", ["--sqlite-home", "", "--latest", "--apply"], "empty path"),
    ("session_audit.py", ["--sqlite-home", "/nonexistent/db/dir"], "no state DB"),
    # a ~user that names nobody stays as typed (pathlib's expanduser raised: an internal error)
    ("session_audit.py", ["--codex-dir", "~nobody-here-7f3a"], "no Codex home at"),
    ("session_audit.py", ["--sqlite-home", "~nobody-here-7f3a/db"], "no state DB at"),
    ("session_import.py", ["--from", "~nobody-here-7f3a/home.tgz"], "~nobody-here-7f3a/home.tgz"),
    ("session_audit.py", ["--provider", ""], "provider id is empty"),
    ("session_audit.py", ["--provider", "new\nco"], "control character"),
    ("session_audit.py", ["--cwd", ""], "empty path"),
    ("session_audit.py", ["--cwd", "proj"], "not an absolute path"),
    ("session_audit.py", ["--cwd", "~/proj"], "~ is not expanded"),
    ("session_audit.py", ["--max-samples", "0"], "at least 1"),
    ("provider_migrate.py", ["--target-provider", "", "--apply"], "provider id is empty"),
    ("provider_migrate.py", ["--target-provider", " ", "--apply"], "provider id is empty"),
    ("provider_migrate.py", ["--target-provider", " newco", "--apply"], "leading or trailing spaces"),
    ("provider_migrate.py", ["--target-provider", "new\x01co", "--apply"], "control character"),
    ("provider_migrate.py", ["--from-provider", "", "--apply"], "provider id is empty"),
    ("provider_migrate.py", ["--thread-id", "", "--apply"], "is not a thread id"),
    ("provider_migrate.py", ["--thread-id", "01950000", "--apply"], "is not a thread id"),
    ("provider_migrate.py", ["--thread-id", UNKNOWN, "--apply"], f"no thread {UNKNOWN}"),
    ("provider_migrate.py", ["--sample", "x"], "whole number"),
    ("provider_migrate.py", ["--apply=yes"], "ignored explicit argument"),
    ("session_repair.py", ["--thread-id", "not-a-thread", "--apply"], "is not a thread id"),
    ("session_repair.py", ["--thread-id", UNKNOWN, "--apply"], f"no thread {UNKNOWN}"),
    ("session_repair.py", ["--remap-prefix", "/home/u/.codex", "--apply"], "OLD=NEW"),
    ("session_repair.py", ["--remap-prefix", "=/x", "--apply"], "both sides"),
    ("session_repair.py", ["--remap-prefix", "/home/u/.codex=.codex", "--apply"], "not an absolute path"),
    ("session_repair.py", ["--remap-prefix", "home/u/.codex=/x", "--apply"], "not an absolute path"),
    ("session_repair.py", ["--remap-prefix", "/home/u/proj=~/proj", "--apply"], "starts with ~"),
    ("session_repair.py", ["--remap-prefix", "~/proj=/x", "--apply"], "starts with ~"),
    ("session_repair.py", ["--remap-prefix", "/home/u/proj=/x\n/y", "--apply"], "control character"),
    ("session_repair.py", ["--sample", "-1"], "at least 1"),
    ("rollback.py", ["--manifest", "", "--apply"], "empty path"),
    ("rollback.py", ["--manifest", "/nonexistent/manifest.csv", "--apply"], "no such file or folder"),
    ("rollback.py", ["--restore-db", ""], "empty path"),
    ("rollback.py", ["--restore-db", "", "--apply"], "empty path"),
    ("rollback.py", ["--restore-db", "/nonexistent/state.bak"], "no such file or folder"),
]


@pytest.mark.parametrize("script,args,fragment", BAD_FLAGS, ids=[f"{s}:{' '.join(a)!r}" for s, a, _ in BAD_FLAGS])
def test_a_bad_flag_is_one_line_and_exit_2_and_changes_nothing(two_homes, script, args, fragment):
    hb, fallback = two_homes
    before, before_fallback = snapshot(hb.root), snapshot(fallback.root)
    rows = hb.sql("SELECT * FROM threads ORDER BY id")
    full = args if "--codex-dir" in args else ["--codex-dir", str(hb.root), *args]
    proc = call(script, *full, env={"CODEX_HOME": str(fallback.root)})
    one_line_exit_2(proc)
    assert fragment in proc.stderr, proc.stderr
    assert snapshot(hb.root) == before and snapshot(fallback.root) == before_fallback
    assert hb.sql("SELECT * FROM threads ORDER BY id") == rows


def test_good_flags_still_work(two_homes):
    """The checks refuse only what is wrong: a Windows-style old prefix, an upper-case id, a relative
    --codex-dir and --sqlite-home (from the current folder) are fine."""
    hb, _ = two_homes
    moved = hb.threads[2]
    proc = call("session_repair.py", "--codex-dir", str(hb.root), "--json", "--thread-id", moved.id.upper(),
                "--remap-prefix", f"/home/u/.codex={hb.root}", "--remap-prefix", r"C:\Users\u=/home/u")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["remap_rows"] == 1
    proc = faultrun.script_run([sys.executable, str(SCRIPTS / "session_audit.py"), "--codex-dir", ".codex",
                                "--sqlite-home", ".codex", "--cwd", "/home/u/proj", "--json"], cwd=hb.root.parent,
                               capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr
    r = json.loads(proc.stdout)
    assert r["state_db"]["path"] == str(hb.db_path) and r["visibility"]["cwd"] == "/home/u/proj"


# ---- what real Codex does with the same odd bytes ------------------------------------------

def test_real_codex_cannot_read_a_line1_with_a_lone_surrogate_and_skips_such_a_message_line(world):
    """Codex's parser (serde_json) rejects a lone surrogate: a line 1 holding one is unreadable to
    Codex (so the audit's finding and the plans' skip agree with it), and a message line holding one
    is skipped (so the row an import builds has the preview Codex itself shows)."""
    bad_meta, orphan, _ok = world.make_threads(3)
    pa = next(world.home.glob(f"sessions/**/*{bad_meta}.jsonl"))
    first, rest = pa.read_bytes().split(b"\n", 1)
    cwd = json.dumps(json.loads(first)["payload"]["cwd"]).encode()
    pa.write_bytes(first.replace(cwd, cwd[:-1] + b'\\ud800"', 1) + b"\n" + rest)
    pb = next(world.home.glob(f"sessions/**/*{orphan}.jsonl"))
    pb.write_bytes(pb.read_bytes().replace(b"hello 1", b"hel\\ud800lo 1"))
    os.utime(pb, (1.6e9, 1.6e9))
    world.db("DELETE FROM threads WHERE id=?", (orphan,))
    audit = world.audit()
    assert audit["integrity"]["line1_unreadable_count"] == 1
    assert "session_meta.cwd holds a lone surrogate" in audit["integrity"]["line1_unreadable_sample"][0]
    plan = json.loads(world.script("session_repair.py", "--import-orphans", "--json").stdout)
    assert [i["thread_id"] for i in plan["inserts_sample"]] == [orphan]
    assert plan["inserts_sample"][0]["preview"] == ""
    assert "invalid session metadata" in world.doctor()["rollout DB scan error sample"]
    with world.app() as app:
        with pytest.raises(Exception, match="does not start with session metadata"):
            app.read_thread(bad_meta)
        assert app.read_thread(orphan)["preview"] == ""
