"""Per-surface visibility, the moved user folder, other state DBs, the managed daemon and encrypted
reasoning, on hand-built homes (the real client checks the same in test_e2e_surfaces.py)."""
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import faultrun  # script runs forked (tests/faultrun.py)

from harness import SCRIPTS
from homebuilder import HomeBuilder, compact
from sessionkit.codexfiles import locks
from sessionkit.diagnose import snapshot
from sessionkit.diagnose import surfaces
from sessionkit.diagnose.audit import build_report
from sessionkit.codexfiles.home import open_home
from sessionkit.codexfiles.reasoning import _CHUNK as REASONING_CHUNK, MARKER, carries_encrypted_reasoning
from sessionkit.diagnose.snapshot import gather, read_head
from sessionkit.codexfiles.paths import inside_test, is_inside
from hypothesis import given, settings, strategies as st


def run(script: str, home: Path, *args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CODEX_")}
    e.update(env or {})
    return faultrun.script_run([sys.executable, str(SCRIPTS / script), "--codex-dir", str(home), *args],
                               capture_output=True, text=True, env=e, cwd=str(cwd) if cwd else None, check=False)


def audit_json(home: Path, *args: str, cwd=None) -> dict:
    proc = run("session_audit.py", home, "--json", *args, cwd=cwd)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def edit_line1(path: Path, **fields) -> None:
    """Set payload fields of line 1 as Codex 0.171 writes them (compact JSON), keeping the rest."""
    data = path.read_bytes()
    cut = data.index(b"\n")
    obj = json.loads(data[:cut])
    old = obj["payload"]
    payload = {"account_scoped": fields.pop("account_scoped")} if "account_scoped" in fields else {}
    for key, value in old.items():  # 0.171's order: account_scoped first, workspace roots after cwd
        payload[key] = fields.pop(key, value)
        if key == "cwd" and "runtime_workspace_roots" in fields:
            payload["runtime_workspace_roots"] = fields.pop("runtime_workspace_roots")
    payload.update(fields)
    obj["payload"] = payload
    path.write_bytes(compact(obj).encode() + data[cut:])


def listed(home: Path, surface: str, cwd=None) -> list:
    """The ids a surface lists, by the library the audit counts with (the report gives counts)."""
    inputs = gather(open_home(str(home)))
    return sorted(surfaces.listed(inputs, surface, inputs.home.config.model_provider,
                                  str(cwd) if cwd is not None else None))


def only_line1(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\n") + 1])


# --- sessions Codex lists nowhere ---------------------------------------------------------------

def test_only_session_meta_and_bom_as_each_surface_lists_them(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    proj = tmp_path / "proj"
    proj.mkdir()
    healthy = [hb.add(cwd=str(proj)) for _ in range(3)]
    started_and_quit = hb.add(cwd=str(proj))
    only_line1(started_and_quit.path)
    orphan_quit = hb.add(cwd=str(proj), write_row=False)
    only_line1(orphan_quit.path)
    bom = hb.add(cwd=str(proj))
    bom.path.write_bytes(snapshot.BOM + bom.path.read_bytes())
    r = audit_json(hb.root, "--cwd", str(proj))
    assert listed(hb.root, "editors", proj) == listed(hb.root, "editors") == sorted(t.id for t in healthy)
    for name in ("editors", "editors_cwd"):  # thread/list reads line 1 of every rollout
        s = r["surfaces"][name]
        assert s["visible"] == 3, name
        assert s["hidden"]["only_session_meta"] == 2 and s["hidden"]["line1_unreadable"] == 1, name
        assert sorted(s["hidden_sample"]["only_session_meta"]) == sorted([started_and_quit.id, orphan_quit.id])
        assert s["hidden_sample"]["line1_unreadable"] == [bom.id]
    assert listed(hb.root, "tui", proj) == sorted([t.id for t in healthy] + [started_and_quit.id])
    for name in ("tui", "tui_all"):  # the picker lists rows: the line-1-only row is there, no orphan
        s = r["surfaces"][name]
        assert s["visible"] == 4, name
        assert s["hidden_sample"] == {"rollout_not_indexed": [orphan_quit.id], "line1_unreadable": [bom.id]}
    v = r["visibility"]
    assert v["visible"] == 3
    # a listing from the DB alone reads no rollout: it shows the two rows Codex's default list hides
    assert v["visible_db_only"] == 5
    assert sorted(v["db_only_extra_sample"]) == sorted([started_and_quit.id, bom.id])
    assert r["integrity"]["line1_unreadable_count"] == 1
    assert "UTF-8 BOM" in r["integrity"]["line1_unreadable_sample"][0]


class _Counting:
    """A file object that counts the bytes read through it."""

    total = 0

    def __init__(self, fh):
        self.fh = fh

    def read(self, n=-1):
        data = self.fh.read(n)
        _Counting.total += len(data)
        return data

    def fileno(self):
        return self.fh.fileno()

    def seek(self, *a):
        return self.fh.seek(*a)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_read_head_never_reads_a_whole_rollout(tmp_path, monkeypatch):
    real_open, real_read = snapshot.open_regular, snapshot.read_regular

    def counted_read(path, n):
        data, size = real_read(path, n)
        _Counting.total += len(data)
        return data, size
    monkeypatch.setattr(snapshot, "open_regular", lambda *a, **k: _Counting(real_open(*a, **k)))
    monkeypatch.setattr(snapshot, "read_regular", counted_read)
    line1 = b'{"type":"session_meta","payload":{"id":"x","base_instructions":"' + b"a" * 21000 + b'"}}'
    big = tmp_path / "big.jsonl"
    big.write_bytes(line1 + b"\n" + (b'{"type":"event_msg"}\n' * 300000))  # ~6 MB after line 1
    _Counting.total = 0
    assert read_head(str(big)) == (line1, None, False, big.stat().st_size)
    assert _Counting.total == snapshot.HEAD_CHUNK  # one read of one chunk
    only = tmp_path / "only.jsonl"
    only.write_bytes(line1 + b"\n")
    assert read_head(str(only)) == (line1, None, True, len(line1) + 1)
    blanks = tmp_path / "blanks.jsonl"  # only blanks after line 1 (past the first chunk too)
    blanks.write_bytes(line1 + b"\n" + b" \n\t\r\n" * 30000)
    assert read_head(str(blanks))[2:] == (True, blanks.stat().st_size)
    long_line = b'{"payload":"' + b"b" * 200000 + b'"}'
    (tmp_path / "long-only.jsonl").write_bytes(long_line + b"\n")
    (tmp_path / "long-more.jsonl").write_bytes(long_line + b"\n" + b'{"x":1}\n' * 500000)
    _Counting.total = 0
    assert read_head(str(tmp_path / "long-only.jsonl"))[:3] == (long_line, None, True)
    assert read_head(str(tmp_path / "long-more.jsonl"))[:3] == (long_line, None, False)
    assert 0 < _Counting.total <= 2 * (len(long_line) + 2 * snapshot._CHUNK)  # the line, never the 4 MB tail
    # a full chunk that ends right after line 1 and the file goes on: not "only line 1"
    exact = tmp_path / "exact.jsonl"
    head = b'{"p":"' + b"c" * (snapshot.HEAD_CHUNK - 9) + b'"}'
    exact.write_bytes(head + b"\n" + b'{"more":1}\n')
    assert read_head(str(exact))[:3] == (head, None, False)
    exact.write_bytes(head + b"\n" + b"  \n")  # ... and only blanks follow
    assert read_head(str(exact))[:3] == (head, None, True)
    mid = b'{"payload":"' + b"m" * 40000 + b'"}'  # longer than one read: the rest of line 1 is read
    (tmp_path / "mid-blank.jsonl").write_bytes(mid + b"\n\n \n")
    (tmp_path / "mid-more.jsonl").write_bytes(mid + b"\n\n" + b" " * 70000 + b'{"x":1}\n')
    assert read_head(str(tmp_path / "mid-blank.jsonl"))[:3] == (mid, None, True)
    assert read_head(str(tmp_path / "mid-more.jsonl"))[:3] == (mid, None, False)
    assert read_head(str(tmp_path / "gone.jsonl"))[1:] == ("No such file or directory", False, -1)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert read_head(str(tmp_path / "empty.jsonl")) == (None, "empty file", False, 0)


# --- the TUI picker in a folder, `--all`, the editors ---------------------------------------------

def test_each_surface_lists_what_its_filters_let_through(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    hb = HomeBuilder(tmp_path / ".codex", providers=["corp"])
    mine = [hb.add(cwd=str(a)), hb.add(cwd=str(a), source="vscode")]
    corp = hb.add(cwd=str(a), provider="corp")
    there = hb.add(cwd=str(b))
    hb.add(cwd=str(a), source="exec")
    gone = hb.add(cwd=str(tmp_path / "deleted-project"))
    r = audit_json(hb.root, "--cwd", str(a))
    s = r["surfaces"]
    assert r["surfaces"]["tui_cwd_source"] == "--cwd"
    # TUI in a/: every provider, that folder only
    assert s["tui"]["visible"] == 3
    assert listed(hb.root, "tui", a) == sorted([t.id for t in mine] + [corp.id])
    assert s["tui"]["hidden"]["cwd"] == 1 and s["tui"]["hidden_sample"]["cwd"] == [there.id]
    assert s["tui"]["hidden"]["cwd_folder_gone"] == 1 and s["tui"]["hidden_sample"]["cwd_folder_gone"] == [gone.id]
    assert s["tui"]["hidden"]["non_interactive_source"] == 1 and s["tui"]["provider"] is None
    assert s["tui"]["hidden_total"] == 3 and "empty_preview" not in s["tui"]["hidden"]  # zero: left out
    # --all: every folder and provider
    assert s["tui_all"]["visible"] == 5 and s["tui_all"]["hidden_total"] == 1
    # editors: the current provider only, every folder; with the folder: both filters
    assert s["editors"]["visible"] == 4
    assert listed(hb.root, "editors") == sorted([t.id for t in mine] + [there.id, gone.id])
    assert s["editors"]["hidden_sample"]["other_provider"] == [corp.id]
    assert s["editors_cwd"]["visible"] == 2 and listed(hb.root, "editors", a) == sorted(t.id for t in mine)
    assert r["cwd_folders"]["missing_folders"] == 1 and r["cwd_folders"]["missing_folder_threads"] == 1
    # without --cwd, the current folder is the TUI's when sessions were recorded there
    here = audit_json(hb.root, cwd=a)["surfaces"]
    assert here["tui_cwd_source"] == "the current folder" and here["tui"]["visible"] == 3
    nowhere = audit_json(hb.root, cwd=tmp_path)["surfaces"]
    assert nowhere["tui"] is None and nowhere["tui_cwd_source"] is None and "editors_cwd" not in nowhere


def test_cwd_is_line1s_for_the_editors_and_the_rows_for_the_picker(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    hb = HomeBuilder(tmp_path / ".codex")
    t = hb.add(cwd=str(old))
    hb.sql("UPDATE threads SET cwd=? WHERE id=?", (str(new), t.id))  # the DB only, as after a resume
    r = audit_json(hb.root, "--cwd", str(new))["surfaces"]
    assert r["editors_cwd"]["visible"] == 0 and r["editors_cwd"]["hidden"] == {"cwd": 1}
    assert r["tui"]["visible"] == 1
    r = audit_json(hb.root, "--cwd", str(old))["surfaces"]
    assert r["editors_cwd"]["visible"] == 1
    assert r["tui"]["visible"] == 0 and r["tui"]["hidden_sample"] == {"cwd": [t.id]}


# --- the moved user folder -------------------------------------------------------------------------

def _daemon_package(home: Path) -> Path:
    release = home / "packages" / "app-server-daemon" / "releases" / "0.171.0-x86_64-unknown-linux-musl"
    (release / "bin").mkdir(parents=True)
    (release / "bin" / "codex").write_bytes(b"#!/bin/sh\n")
    os.symlink(str(release), str(home / "packages" / "app-server-daemon" / "current"))  # absolute, as Codex
    return release


def test_moved_user_folder_names_one_remap_for_paths_and_folders(tmp_path):
    old_user, new_user = tmp_path / "home" / "olduser", tmp_path / "home" / "newuser"
    proj = old_user / "src" / "proj"
    proj.mkdir(parents=True)
    hb = HomeBuilder(old_user / ".codex")
    threads = [hb.add(cwd=str(proj)) for _ in range(3)]
    for t in threads[:2]:
        edit_line1(t.path, runtime_workspace_roots=[str(proj)], account_scoped=True)  # as 0.171 writes
    edit_line1(threads[2].path, runtime_workspace_roots=[str(proj), str(old_user / "lib")], account_scoped=True)
    _daemon_package(hb.root)
    shutil.move(str(old_user), str(new_user))  # mv /home/olduser /home/newuser
    home = new_user / ".codex"
    r = audit_json(home, cwd=new_user / "src" / "proj")
    m = r["integrity"]["moved_home"]
    assert m["old_prefix"] == str(old_user / ".codex") and m["rows"] == 3
    assert m["remap_arg"] == f"--remap-prefix {old_user}={new_user}"
    assert (m["old_user_prefix"], m["new_user_prefix"]) == (str(old_user), str(new_user))
    assert (m["cwd_rows"], m["cwd_rows_found_at_new_prefix"]) == (3, 3)
    assert m["runtime_workspace_roots_rows"] == 4  # roots under the old folder: 3 of proj, 1 of lib
    assert m["cwd_folders_under_old_prefix"] == [str(proj)]
    # the TUI in the moved project folder shows nothing, and the audit says why
    tui = r["surfaces"]["tui"]
    assert r["surfaces"]["tui_cwd_source"].startswith("the current folder (its sessions are recorded under")
    assert tui["cwd"] == str(new_user / "src" / "proj") and tui["visible"] == 0
    assert tui["hidden"]["cwd_folder_gone"] == 3
    pkg = r["daemon_package"]
    release = home / "packages" / "app-server-daemon" / "releases" / "0.171.0-x86_64-unknown-linux-musl"
    assert pkg["target"].startswith(str(old_user)) and pkg["target_exists"] is False
    assert pkg["inside_home"] is False and pkg["repoint_to"] == str(release)
    assert "0.171.0's TUI (`codex`, `codex resume`) stops with 'daemon executable not found'" in pkg["problem"]
    f = r["findings"]
    assert f"home moved: 3 row(s) under {old_user / '.codex'} and 3 session(s) recorded in folders under {old_user}" in f
    assert any("packages/app-server-daemon/current" in x and str(release) in x for x in f)
    assert any(x.startswith("the TUI picker in ") and "3 were recorded in folders that no longer exist" in x
               for x in f)
    assert r["line1_fields"]["account_scoped_true"] == 3 and r["line1_fields"]["hide_sessions"] is False


def test_moved_codex_home_alone_keeps_the_narrow_remap(tmp_path):
    """Only ~/.codex moved (projects stayed): the .codex prefix is the remap; cwd is left alone."""
    proj = tmp_path / "proj"
    proj.mkdir()
    hb = HomeBuilder(tmp_path / "a" / ".codex")
    hb.add(cwd=str(proj))
    target = tmp_path / "b" / "codex-home"
    target.parent.mkdir()
    shutil.move(str(hb.root), str(target))
    m = audit_json(target)["integrity"]["moved_home"]
    assert m["remap_arg"] == f"--remap-prefix {tmp_path / 'a' / '.codex'}={target}"
    assert m["cwd_rows"] == 0 and m["old_user_prefix"] is None


# --- every state DB of a home ---------------------------------------------------------------------

def test_the_desktop_apps_db_says_what_its_surfaces_would_miss(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    hb = HomeBuilder(tmp_path / ".codex", providers=["corp"])
    ts = [hb.add(cwd=str(proj)) for _ in range(4)]
    (hb.root / "sqlite").mkdir()
    desktop = hb.root / "sqlite" / "state_5.sqlite"
    shutil.copyfile(str(hb.db_path), str(desktop))
    conn = sqlite3.connect(str(desktop))
    with conn:
        conn.execute("UPDATE threads SET rollout_path='/home/olduser/.codex/sessions/x/' || id || '.jsonl' "
                     "WHERE id=?", (ts[0].id,))
        conn.execute("UPDATE threads SET archived=1, archived_at=1 WHERE id=?", (ts[1].id,))
    conn.close()
    r = audit_json(hb.root)
    assert r["surfaces"]["editors"]["visible"] == 4
    other = r["other_state_dbs"][0]
    assert other["path"] == str(desktop)
    assert other["integrity"]["stale_rows_count"] == 1 and other["integrity"]["stale_rows_sample"] == [ts[0].id]
    assert other["integrity"]["archive_mismatches_count"] == 1
    assert other["moved_home"]["old_prefix"] == "/home/olduser/.codex"
    # an app started on that DB lists all four (its file is in sessions/, measured on 0.169); a
    # DB-only listing misses the stale row and the row flagged archived
    assert other["surfaces"]["editors"]["visible"] == 4
    assert other["visibility"]["visible_db_only"] == 2
    assert other["visibility"]["db_only_hidden_sample"] == {"stale_rollout_path": [ts[0].id],
                                                            "db_archived": [ts[1].id]}
    # no thread_history_1.sqlite beside it: its 4 paginated threads would read 0 turns there
    assert other["history"] == {"path": str(hb.root / "sqlite" / "thread_history_1.sqlite"), "exists": False,
                                "paginated_without_history": 4,
                                "paginated_without_history_sample": sorted(t.id for t in ts)}


# --- the managed daemon ---------------------------------------------------------------------------

FAKE = """import fcntl, os, sys, time
lock = os.environ.get("HOLD_LOCK")
if lock:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
open(os.environ["READY"], "w").close()
time.sleep(120)
"""


def _fake_codex(tmp_path: Path, home: Path, *args: str, lock: Path = None) -> subprocess.Popen:
    """A process whose command line is `<dir>/codex <args>` and whose CODEX_HOME is `home`, as the
    daemon the TUI leaves behind: `codex` is a link to Python, `app-server` the script it runs."""
    bindir = tmp_path / "bin"
    if not bindir.exists():
        bindir.mkdir()
        os.symlink(sys.executable, str(bindir / "codex"))
        (bindir / "app-server").write_text(FAKE)
    ready = tmp_path / f"ready-{len(list(tmp_path.glob('ready-*')))}"
    env = {"PATH": os.environ.get("PATH", ""), "CODEX_HOME": str(home), "READY": str(ready)}
    if lock:
        env["HOLD_LOCK"] = str(lock)
    proc = subprocess.Popen([str(bindir / "codex"), *args], cwd=str(bindir), env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")
def test_the_daemon_the_tui_leaves_is_found_named_and_refused_for(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="corp", providers=["corp"])
    ts = [hb.add(provider="openai") for _ in range(3)]
    (hb.root / "thread-writer-locks").mkdir()
    daemon = _fake_codex(tmp_path, hb.root, "app-server", "--listen", "unix://", "--managed-daemon",
                         lock=hb.root / "thread-writer-locks" / f"{ts[0].id}.lock")
    loop = _fake_codex(tmp_path, hb.root, "app-server", "daemon", "pid-update-loop")
    try:
        stop = f"CODEX_HOME={hb.root} {tmp_path / 'bin' / 'codex'} app-server daemon stop"
        act = locks.scan_activity(hb.root, environ={})
        assert act.running and act.daemon_stop == stop
        assert [h.pid for h in act.others if h.kind.startswith("codex process")] == [daemon.pid]
        assert [h.pid for h in act.bystanders] == [loop.pid]
        writer = [h for h in act.holders if h.kind == "thread writer"]
        assert [(w.thread_id, w.pid, w.held_by) for w in writer] == [
            (ts[0].id, daemon.pid, "codex app-server --managed-daemon")]
        r = audit_json(hb.root)
        assert r["codex_running"]["daemon_stop"] == stop
        assert any("pid-update-loop" in x and "never writes sessions" in x for x in r["codex_running"]["not_writing"])
        plan = json.loads(run("provider_migrate.py", hb.root, "--json").stdout)
        assert plan["candidates"] == 2
        assert plan["skipped_sample"] == [{"thread_id": ts[0].id, "reason":
                                           "live thread (its writer lock is held): never touched; held by pid "
                                           f"{daemon.pid}, codex app-server --managed-daemon; stop it with: {stop}"}]
        refused = run("provider_migrate.py", hb.root, "--apply")
        assert refused.returncode == 2 and "app-server daemon stop" in refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert refused.stderr.count("app-server daemon stop") == 1 and f"  stop it: {stop}" in lines
        assert len(lines) <= 8 and all(len(x) <= 100 for x in lines if "stop it:" not in x), lines
        _stop(daemon)
        # the updater loop alone never writes sessions: no reason to refuse
        act = locks.scan_activity(hb.root, environ={})
        assert not act.running and [h.pid for h in act.bystanders] == [loop.pid]
        done = run("provider_migrate.py", hb.root, "--apply", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"]["updated_rows"] == 3
    finally:
        _stop(daemon)
        _stop(loop)


def test_the_control_socket_finds_the_daemon_where_processes_cannot(monkeypatch):
    monkeypatch.setattr(locks, "_proc_processes", lambda: None)  # as on macOS: no /proc
    monkeypatch.setattr(locks, "_ps_processes", lambda: [])
    home = Path(tempfile.mkdtemp(prefix="cx", dir="/tmp"))  # short: unix socket paths are limited
    try:
        sock_path = home / "app-server-control" / "app-server-control.sock"
        sock_path.parent.mkdir()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(sock_path))
        server.listen(1)
        try:
            act = locks.scan_activity(home, environ={})
            assert act.running
            assert [h.kind for h in act.others] == ["app-server daemon (its control socket answers)"]
            assert act.daemon_stop == f"CODEX_HOME={home} codex app-server daemon stop"
        finally:
            server.close()
        act = locks.scan_activity(home, environ={})  # the file is left, nobody answers: a stale socket
        assert sock_path.exists() and not act.running
        # 0.171: the home's socket is a link to $TMPDIR/codex-daemon-<uid>/<sha256 of its path>;
        # with the link gone, the socket there still names this home's daemon
        sock_path.unlink()
        monkeypatch.setenv("TMPDIR", str(home))
        real = locks.daemon_lock_dir() / hashlib.sha256(str(sock_path).encode()).hexdigest()
        real.parent.mkdir()
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(real))
        server.listen(1)
        try:
            assert locks.scan_activity(home, environ={}).daemon_stop == \
                f"CODEX_HOME={home} codex app-server daemon stop"
        finally:
            server.close()
        assert not locks.scan_activity(home, environ={}).running
    finally:
        shutil.rmtree(str(home))


# --- encrypted reasoning ----------------------------------------------------------------------------

def _add_reasoning(path: Path, at_end_of_mb: int = 0) -> None:
    item = compact({"timestamp": "2025-03-01T09:30:00.000Z", "type": "response_item", "payload": {
        "type": "reasoning", "summary": [], "encrypted_content": "gAAAA" + "x" * 400}})
    filler = (compact({"type": "event_msg", "payload": {"type": "token_count"}}) + "\n") * (at_end_of_mb * 30000)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(filler + item + "\n")


def test_migration_plan_counts_threads_with_encrypted_reasoning(tmp_path, monkeypatch):
    hb = HomeBuilder(tmp_path / ".codex", provider="corp", providers=["corp"])
    ts = [hb.add(provider="openai") for _ in range(4)]
    hb.add(provider="corp")  # not a candidate: never read for this
    _add_reasoning(ts[0].path)
    _add_reasoning(ts[2].path, at_end_of_mb=2)
    nulls = compact({"type": "response_item", "payload": {"type": "reasoning", "encrypted_content": None}})
    with open(ts[3].path, "a", encoding="utf-8") as fh:
        fh.write(nulls + "\n")
    _add_reasoning(hb.threads[-1].path)
    plan = json.loads(run("provider_migrate.py", hb.root, "--json").stdout)
    assert plan["candidates"] == 4
    assert plan["encrypted_reasoning"] == {"threads": 2, "sample": sorted([ts[0].id, ts[2].id]), "unreadable": 0}
    assert any("2 of the 4 thread(s) carry encrypted reasoning" in w and "invalid_encrypted_content" in w
               for w in plan["warnings"])


def test_encrypted_reasoning_stops_at_the_first_hit_and_sees_across_chunks(tmp_path, monkeypatch):
    from sessionkit.codexfiles import reasoning
    real = reasoning.open_regular
    monkeypatch.setattr(reasoning, "open_regular", lambda *a, **k: _Counting(real(*a, **k)))
    early = tmp_path / "early.jsonl"
    early.write_bytes(b'{"x":1}\n' + MARKER + b'abc"}\n' + b'{"y":2}\n' * 1000000)
    _Counting.total = 0
    assert carries_encrypted_reasoning(early) is True
    assert _Counting.total == REASONING_CHUNK
    straddle = tmp_path / "straddle.jsonl"
    straddle.write_bytes(b"a" * (REASONING_CHUNK - 7) + MARKER + b'abc"}\n')
    assert carries_encrypted_reasoning(straddle) is True
    none = tmp_path / "none.jsonl"
    none.write_bytes(b"a" * (REASONING_CHUNK - 7) + b'"encrypted_content":null}\n')
    assert carries_encrypted_reasoning(none) is False
    assert carries_encrypted_reasoning(tmp_path / "gone.jsonl") is None


def test_build_report_in_process_matches_the_script(tmp_path):
    """The library call the other scripts use gives the same surfaces as the CLI."""
    proj = tmp_path / "p"
    proj.mkdir()
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add(cwd=str(proj))
    only_line1(hb.add(cwd=str(proj)).path)
    inputs = gather(open_home(str(hb.root)))
    rep = build_report(inputs, here=str(proj))
    assert rep["surfaces"]["editors_cwd"]["visible"] == 1
    assert rep["surfaces"]["editors_cwd"]["hidden"]["only_session_meta"] == 1
    assert rep["surfaces"]["tui"]["visible"] == 2  # the picker lists the row
    assert audit_json(hb.root, cwd=proj)["surfaces"]["tui"] == json.loads(json.dumps(rep["surfaces"]["tui"]))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["a", ".", "..", "", ".codex", "sessions", "x.jsonl", "\x00", "é", " "]),
                max_size=6), st.booleans(), st.sampled_from(["/h/u/.codex", "/h/u/.codex/", "/h/./u/.codex", "/"]))
def test_the_fast_inside_test_agrees_with_is_inside(parts, under_root, root):
    """inside_test (one startswith for the plain case) answers exactly as is_inside for any path."""
    path = (root.rstrip("/") if under_root else "/h/other") + "/" + "/".join(parts)
    for p in (path, path.replace("/", "//", 1), "rel/" + "/".join(parts)):
        assert inside_test(root)(p) == is_inside(p, root), (p, root)
