"""Paginated history (thread_history_1.sqlite) and thread names: the audit's cheap check, the
repair plan, and the reset's journal and rollback, on hand-built homes laid out as real Codex writes them."""
import fcntl
import json
import os
import sqlite3
from pathlib import Path
from typing import Dict, List

import pytest

from harness import fake_codex_exe
from homebuilder import HomeBuilder, compact, connect
from test_migrate_rollback import run
from sessionkit.diagnose import history_check
from sessionkit.diagnose.audit import build_report, gather
from sessionkit.diagnose.history_check import KeyState, check_history, classify, names_from_session_index
from sessionkit.fixes.history_reset import plan_history
from sessionkit.codexfiles.home import open_home

HISTORY_SCHEMA = Path(__file__).resolve().parent / "data" / "thread_history_1_schema.sql"
TABLES = ("thread_turns", "thread_items", "thread_realtime_items", "thread_history_projection_state")


class PaginatedHome:
    """A HomeBuilder home whose threads have real-shaped turns (task_started .. task_complete, an
    ordinal per line) and the history rows Codex would have written for them."""

    def __init__(self, root: Path) -> None:
        self.hb = HomeBuilder(root)
        self.root = root
        self.hist = root / "thread_history_1.sqlite"
        conn = connect(self.hist)
        conn.executescript(HISTORY_SCHEMA.read_text(encoding="utf-8"))
        conn.close()

    def add(self, turns: int = 3, big: int = 0, key: str = "", rows: bool = True, **kw) -> "object":
        th = self.hb.add(write_file=False, **kw)
        key = key or th.id
        head = self.hb.rollout_lines(th.id, th.created, th.provider, th.cwd, th.source, "x", turns=0)[0]
        lines: List[bytes] = [head.encode() + b"\n"]
        turn_rows, items = [], []
        for t in range(turns):
            tid = f"turn-{th.id[-4:]}-{t}"
            start_ord, start = len(lines), sum(map(len, lines))
            body = [{"type": "event_msg", "payload": {"type": "task_started", "turn_id": tid}},
                    {"type": "turn_context", "payload": {"turn_id": tid, "cwd": th.cwd, "model": "gpt-5"}},
                    {"type": "response_item", "payload": {"type": "message", "role": "user",
                                                          "content": [{"type": "input_text", "text": f"ask {t}"}]}},
                    {"type": "response_item", "payload": {"type": "message", "role": "assistant",
                                                          "content": [{"type": "output_text", "text": "x" * big or "ok"}]}},
                    {"type": "event_msg", "payload": {"type": "task_complete", "turn_id": tid}}]
            for rec in body:
                lines.append(compact({"timestamp": "2025-03-01T09:30:00.000Z", "ordinal": len(lines), **rec}).encode() + b"\n")
            end = sum(map(len, lines))
            turn_rows.append((key, tid, start_ord, "completed", None, 1, 2, 3, f"u-{t}", "msg", start,
                              len(lines) - 1, end, tid))
            items += [(key, tid, f"u-{t}", start_ord + 2, 1, '{"type":"userMessage"}', "userMessage", start_ord + 2, None, None),
                      (key, tid, "msg", start_ord + 3, 2, '{"type":"agentMessage"}', "agentMessage", start_ord + 3, None, None)]
        th.path.parent.mkdir(parents=True, exist_ok=True)
        th.path.write_bytes(b"".join(lines))
        os.utime(th.path, (th.created.timestamp() + 60,) * 2)
        if rows:
            with self.conn() as conn:
                conn.executemany("INSERT INTO thread_turns VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", turn_rows)
                conn.executemany("INSERT INTO thread_items VALUES (?,?,?,?,?,?,?,?,?,?)", items)
                conn.execute("INSERT INTO thread_realtime_items VALUES (?,?,?,?,?,?)",
                             (key, f"rt-{th.id[-4:]}", 999, 1, "realtime_session_started", "{}"))
                conn.execute("INSERT INTO thread_history_projection_state VALUES (?,?,?)",
                             (key, sum(map(len, lines)), len(lines)))
        th.turn_ends = [r[12] for r in turn_rows]  # type: ignore[attr-defined]
        th.key = key  # type: ignore[attr-defined]
        return th

    def conn(self) -> sqlite3.Connection:
        return connect(self.hist)

    def sql(self, statement: str, params: tuple = ()) -> list:
        conn = self.conn()
        try:
            with conn:
                return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def rows_of(self, key: str) -> Dict[str, list]:
        col = {"thread_turns": "turn_id", "thread_items": "item_id, turn_id", "thread_realtime_items": "item_id",
               "thread_history_projection_state": "thread_id"}
        return {t: self.sql(f"SELECT * FROM {t} WHERE thread_id=? ORDER BY {col[t]}", (key,)) for t in TABLES}

    # --- the damage users report (made the way it was measured with real Codex) ----------------
    def keep_first_turn_only(self, th) -> None:
        first = self.sql("SELECT turn_id FROM thread_turns WHERE thread_id=? ORDER BY rollout_ordinal LIMIT 1", (th.key,))[0][0]
        self.sql("DELETE FROM thread_items WHERE thread_id=? AND turn_id<>?", (th.key, first))
        self.sql("DELETE FROM thread_turns WHERE thread_id=? AND turn_id<>?", (th.key, first))

    def delete_turns_keep_cursor(self, th) -> None:
        self.sql("DELETE FROM thread_items WHERE thread_id=?", (th.key,))
        self.sql("DELETE FROM thread_turns WHERE thread_id=?", (th.key,))


def inputs_of(root: Path):
    return gather(open_home(str(root), None))


def findings_of(root: Path) -> Dict[str, str]:
    return {f.thread_id: f.kind for f in check_history(inputs_of(root)).findings}


@pytest.fixture
def ph(tmp_path):
    return PaginatedHome(tmp_path / ".codex")


def test_healthy_threads_are_checked_without_opening_a_file(ph, monkeypatch):
    threads = [ph.add() for _ in range(3)] + [ph.add(turns=0)]
    opened = []
    real = history_check.open_regular
    monkeypatch.setattr(history_check, "open_regular", lambda *a, **k: opened.append((str(a[0]), "rb")) or real(*a, **k))
    check = check_history(inputs_of(ph.root))
    rollouts = [a for a in opened if "sessions" in str(a[0])]
    assert check.findings == [] and check.checked == 4 and rollouts == [(str(threads[3].path), "rb")]


@pytest.mark.parametrize("damage,kind", [
    ("keep_first_turn_only", "turns_missing_before_cursor"),
    ("delete_turns_keep_cursor", "rows_missing_cursor_kept"),
    ("delete_items", "rows_missing_cursor_kept"),
    ("truncate_to_turn_2", "projection_ahead"),
    ("cursor_plus_100", "cursor_past_eof"),
    ("older_copy_then_grown", "cursor_off_line"),
    ("delete_cursor", "cursor_missing"),
    ("delete_all_rows", "not_built"),
])
def test_each_damage_is_found_with_its_kind_and_the_rest_stay_clean(ph, damage, kind):
    good = [ph.add(), ph.add(turns=1)]
    th = ph.add()
    size = th.path.stat().st_size
    if damage in ("keep_first_turn_only", "delete_turns_keep_cursor"):
        getattr(ph, damage)(th)
    elif damage == "delete_items":
        ph.sql("DELETE FROM thread_items WHERE thread_id=?", (th.id,))
    elif damage == "truncate_to_turn_2":
        os.truncate(th.path, th.turn_ends[1])
    elif damage == "cursor_plus_100":
        ph.sql("UPDATE thread_history_projection_state SET next_rollout_byte_offset=? WHERE thread_id=?", (size + 100, th.id))
    elif damage == "older_copy_then_grown":  # restored to turn 1, then Codex appended past the old cursor
        data = th.path.read_bytes()
        th.path.write_bytes(data[:th.turn_ends[0]] + data[th.turn_ends[0] + 7:] + data[-200:])
        assert th.path.read_bytes()[size - 1:size] != b"\n" and th.path.stat().st_size > size
    elif damage == "delete_cursor":
        ph.sql("DELETE FROM thread_history_projection_state WHERE thread_id=?", (th.id,))
    else:
        for t in TABLES:
            ph.sql(f"DELETE FROM {t} WHERE thread_id=?", (th.id,))
    assert findings_of(ph.root) == {th.id: kind}
    assert all(g.id not in findings_of(ph.root) for g in good)


def test_a_session_with_no_turn_and_no_rows_is_not_a_finding(ph):
    th = ph.add(turns=0, rows=False)
    assert findings_of(ph.root) == {}
    assert check_history(inputs_of(ph.root)).checked == 1 and th


def test_shows_only_its_start_reads_only_the_gap_not_the_rest_of_a_big_rollout(ph, monkeypatch):
    th = ph.add(turns=4, big=2_000_000)  # an 8 MB rollout
    ph.keep_first_turn_only(th)
    read = []

    class Counting:
        def __init__(self, path, mode):
            self.fh = open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def seek(self, n):
            return self.fh.seek(n)

        def read(self, n=-1):
            data = self.fh.read(n)
            read.append(len(data))
            return data

        def readline(self):
            data = self.fh.readline()
            read.append(len(data))
            return data

    monkeypatch.setattr(history_check, "open_regular", lambda path, *a, **k: Counting(path, "rb"))
    assert {f.kind for f in check_history(inputs_of(ph.root)).findings} == {"turns_missing_before_cursor"}
    assert 0 < sum(read) < 200  # one line (task_started of turn 2), not the 6 MB after it
    assert th.path.stat().st_size > 8_000_000


def test_legacy_threads_and_homes_without_a_history_db_are_not_checked(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex")
    hb.add()
    check = check_history(inputs_of(hb.root))  # paginated, no DB, no turn in its file: checked, nothing to say
    assert (check.checked, check.findings, check.history_db_exists) == (1, [], False)  # (test_history_no_db.py)
    ph = PaginatedHome(tmp_path / "other")
    th = ph.add()
    ph.delete_turns_keep_cursor(th)
    ph.hb.sql("UPDATE threads SET history_mode='legacy' WHERE id=?", (th.id,))
    assert findings_of(ph.root) == {}


def test_a_live_thread_is_left_out_and_never_planned(ph):
    th = ph.add()
    ph.delete_turns_keep_cursor(th)
    locks = ph.root / "thread-writer-locks"
    locks.mkdir()
    fd = os.open(str(locks / f"{th.id}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        inputs = inputs_of(ph.root)
        check = check_history(inputs)
        assert check.findings == [] and check.skipped_live == [th.id]
        plan = plan_history(inputs, check)
        assert plan.resets == [] and plan.rebuild == [] and [t for t, _ in plan.skipped] == [th.id]
    finally:
        os.close(fd)


def test_reverted_thread_rows_are_keyed_by_the_newer_files_rollout_uuid(ph):
    rollout_uuid = "0195aaaa-bbbb-7ccc-8ddd-000000000042"
    th = ph.add(key=rollout_uuid)
    newer = th.path.with_name(th.path.name[:-len(".jsonl")] + f"_{rollout_uuid}.jsonl")
    th.path.rename(newer)
    ph.hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (str(newer), th.id))
    assert findings_of(ph.root) == {}
    ph.sql("DELETE FROM thread_turns WHERE thread_id=?", (rollout_uuid,))
    ph.sql("DELETE FROM thread_items WHERE thread_id=?", (rollout_uuid,))
    check = check_history(inputs_of(ph.root))
    assert [(f.thread_id, f.key, f.kind) for f in check.findings] == [(th.id, rollout_uuid, "rows_missing_cursor_kept")]


def test_an_older_segment_is_checked_and_reported_not_reset(ph):
    old = ph.add()  # the plain file: rows keyed by the thread id
    newer_uuid = "0195aaaa-bbbb-7ccc-8ddd-000000000043"
    newer = old.path.with_name(old.path.name[:-len(".jsonl")] + f"_{newer_uuid}.jsonl")
    newer.write_bytes(old.path.read_bytes())
    size = newer.stat().st_size
    ph.sql("INSERT INTO thread_history_projection_state VALUES (?,?,?)", (newer_uuid, size, 16))
    for t, o, e in ph.sql("SELECT turn_id, rollout_byte_offset, rollout_end_byte_offset FROM thread_turns WHERE thread_id=?", (old.id,)):
        ph.sql("INSERT INTO thread_turns (thread_id, turn_id, rollout_ordinal, status, rollout_byte_offset, "
               "rollout_end_byte_offset, first_user_item_id) VALUES (?,?,?,?,?,?,NULL)", (newer_uuid, t, o, "completed", o, e))
    ph.hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (str(newer), old.id))
    assert findings_of(ph.root) == {}
    ph.delete_turns_keep_cursor(old)  # the older segment's rows
    inputs = inputs_of(ph.root)
    check = check_history(inputs)
    assert [(f.key, f.kind, f.segment) for f in check.findings] == [(old.id, "rows_missing_cursor_kept", True)]
    plan = plan_history(inputs, check)
    assert plan.resets == [] and plan.rebuild == []
    assert [t for t, _ in plan.skipped] == [old.id] and "older segment" in plan.skipped[0][1]


def test_forks_come_back_with_their_parent(ph):
    parent = ph.add()
    fork = ph.add()
    data = fork.path.read_bytes()
    line1, rest = data.split(b"\n", 1)
    meta = json.loads(line1)
    p = meta["payload"]  # Codex writes forked_from_id right after id, before the instructions
    meta["payload"] = {"session_id": p["session_id"], "id": p["id"], "forked_from_id": parent.id,
                       **{k: v for k, v in p.items() if k not in ("session_id", "id")}}
    fork.path.write_bytes(compact(meta).encode() + b"\n" + rest)
    ph.sql("UPDATE thread_history_projection_state SET next_rollout_byte_offset=? WHERE thread_id=?",
           (fork.path.stat().st_size, fork.id))
    shift = fork.path.stat().st_size - len(data)
    ph.sql("UPDATE thread_turns SET rollout_byte_offset=rollout_byte_offset+?, "
           "rollout_end_byte_offset=rollout_end_byte_offset+? WHERE thread_id=?", (shift, shift, fork.id))
    ph.keep_first_turn_only(parent)
    inputs = inputs_of(ph.root)
    plan = plan_history(inputs, check_history(inputs))
    assert [f.thread_id for f in plan.resets] == [parent.id] and plan.forks == {parent.id: [fork.id]}


def test_classify_on_odd_inputs_never_raises(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_bytes(b'not json\n{"type":"event_msg","payload":{"type":"task_started"}}\n')
    size = f.stat().st_size
    assert classify(str(f), 1, KeyState(cursor=5)) == "cursor_past_eof"
    assert classify(str(f), size, KeyState(cursor=size)) == "rows_missing_cursor_kept"
    assert classify(str(f), size, KeyState()) == "not_built"
    assert classify(str(tmp_path / "gone"), 10, KeyState()) is None
    assert classify(str(f), size, KeyState(cursor=0)) is None
    assert classify(str(f), size, KeyState(cursor=size, last_ordinal=1, last_start=0, last_end=size + 1)) == "projection_ahead"
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    assert history_check._size(str(fifo)) is None and history_check._size(str(f)) == size  # never opened
    (tmp_path / "session_index.jsonl").symlink_to(f)
    assert names_from_session_index(tmp_path) == {}


def test_an_unreadable_history_db_is_reported_not_fatal(ph):
    ph.add()
    ph.hist.write_bytes(b"this is not a database" * 100)
    check = check_history(inputs_of(ph.root))
    assert check.findings == [] and check.checked == 0 and "thread_history_1.sqlite" in check.error
    report = build_report(inputs_of(ph.root))
    assert any("history DB could not be read" in f for f in report["findings"])


# --- names ------------------------------------------------------------------------------------
def write_index(root: Path, entries: List[object]) -> None:
    (root / "session_index.jsonl").write_bytes(b"".join(
        (e if isinstance(e, bytes) else compact(e).encode()) + b"\n" for e in entries))


def test_names_from_session_index_takes_the_latest_and_skips_bad_lines(tmp_path):
    write_index(tmp_path, [{"id": "AAA", "thread_name": "first", "updated_at": 1}, b"{torn",
                           {"id": "aaa", "thread_name": "renamed", "updated_at": 2},
                           {"id": "bbb", "thread_name": "gone", "updated_at": 1},
                           {"id": "bbb", "thread_name": "", "updated_at": 2}, [1, 2], {"id": 5},
                           {"id": "ccc", "thread_name": "caf\u00e9 \u2603", "updated_at": 3}])
    assert names_from_session_index(tmp_path) == {"aaa": "renamed", "ccc": "caf\u00e9 \u2603"}
    assert names_from_session_index(tmp_path / "nowhere") == {}


def test_names_lost_are_rows_without_a_name_that_the_index_names(ph):
    a, b, c = ph.add(), ph.add(), ph.add()
    ph.hb.sql("UPDATE threads SET name='kept' WHERE id=?", (b.id,))
    write_index(ph.root, [{"id": a.id, "thread_name": "lost one", "updated_at": 1},
                          {"id": b.id, "thread_name": "kept", "updated_at": 1}])
    report = build_report(inputs_of(ph.root))
    integ = report["integrity"]
    assert integ["names_lost_count"] == 1 and integ["names_lost_detail"] == [{"thread_id": a.id, "name": "lost one"}]
    assert any("lost their name" in f for f in report["findings"]) and c


def test_audit_json_reports_history_incomplete_by_kind_and_exits_1(ph):
    threads = [ph.add() for _ in range(4)]
    ph.keep_first_turn_only(threads[0])
    ph.delete_turns_keep_cursor(threads[1])
    proc = run("session_audit.py", ph.root, "--json")
    assert proc.returncode == 1, proc.stderr
    integ = json.loads(proc.stdout)["integrity"]
    assert integ["history_incomplete_count"] == 2 and integ["history_checked"] == 4
    assert integ["history_incomplete_by_kind"]["turns_missing_before_cursor"] == 1
    assert integ["history_incomplete_by_kind"]["rows_missing_cursor_kept"] == 1
    assert sorted((s["thread_id"], s["kind"]) for s in integ["history_incomplete_detail"]) == sorted(
        [(threads[0].id, "turns_missing_before_cursor"), (threads[1].id, "rows_missing_cursor_kept")])
    assert f"{threads[0].id} (turns_missing_before_cursor)" in integ["history_incomplete_sample"]
    text = run("session_audit.py", ph.root).stdout
    assert "history_incomplete: 2" in text and f"{threads[0].id} (turns_missing_before_cursor)" in text
    assert "session_recover.py" in text and "--rebuild-history" in text  # what to run next


# --- the rebuild client and the refusals ------------------------------------------------------
FAKE_CODEX = r'''#!/usr/bin/env python3
import json, os, sys
log = open(os.environ["FAKE_LOG"], "a")
log.write(json.dumps({"argv": sys.argv[1:], "home": os.environ.get("CODEX_HOME"),
                      "agent": os.environ.get("CODEX_THREAD_ID")}) + "\n")
for line in sys.stdin:
    msg = json.loads(line)
    log.write(json.dumps(msg) + "\n"); log.flush()
    if "id" not in msg:
        continue
    params = msg.get("params") or {}
    if msg["method"] == "thread/resume" and params.get("threadId") == "refused":
        out = {"id": msg["id"], "error": {"code": 1, "message": "no rollout found for thread id refused"}}
    elif msg["method"] == "thread/resume" and params.get("threadId") == "dies":
        sys.exit(3)
    else:
        out = {"id": msg["id"], "result": {}}
    print(json.dumps(out), flush=True)
'''


@pytest.fixture
def fake_codex(tmp_path, monkeypatch):
    exe = fake_codex_exe(tmp_path / "bin", FAKE_CODEX)
    log = tmp_path / "fake.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return exe, log


def logged(log: Path) -> List[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()]


def test_rebuild_resumes_each_thread_once_with_exclude_turns_then_unsubscribes(tmp_path, fake_codex, monkeypatch):
    from sessionkit.fixes.codex_rebuild import rebuild_histories
    exe, log = fake_codex
    home = tmp_path / ".codex"
    home.mkdir()
    monkeypatch.setenv("CODEX_THREAD_ID", "the-agents-own-thread")
    done, failed = rebuild_histories(home, ["t1", "refused", "t2"], str(exe))
    assert done == ["t1", "t2"]
    assert failed == [("refused", "thread/resume failed: no rollout found for thread id refused; "
                                  "its history comes back the first time it is opened")]
    msgs = logged(log)
    assert msgs[0] == {"argv": ["app-server"], "home": str(home), "agent": None}
    calls = [(m["method"], m.get("params")) for m in msgs[1:] if m.get("method") != "initialize"]
    assert calls == [("initialized", None),
                     ("thread/resume", {"threadId": "t1", "excludeTurns": True}), ("thread/unsubscribe", {"threadId": "t1"}),
                     ("thread/resume", {"threadId": "refused", "excludeTurns": True}),
                     ("thread/resume", {"threadId": "t2", "excludeTurns": True}), ("thread/unsubscribe", {"threadId": "t2"})]


def test_rebuild_reports_every_thread_left_when_codex_dies(tmp_path, fake_codex):
    from sessionkit.fixes.codex_rebuild import rebuild_histories
    exe, _ = fake_codex
    home = tmp_path / ".codex"
    home.mkdir()
    done, failed = rebuild_histories(home, ["t1", "dies", "t3"], str(exe))
    assert done == ["t1"] and [t for t, _ in failed] == ["dies", "t3"]
    assert all("comes back the first time it is opened" in why for _, why in failed)


def test_rebuild_never_resumes_a_thread_another_codex_holds(tmp_path, fake_codex):
    from sessionkit.fixes.codex_rebuild import rebuild_histories
    exe, log = fake_codex
    home = tmp_path / ".codex"
    (home / "thread-writer-locks").mkdir(parents=True)
    held = "0195aaaa-0000-7000-8000-00000000000a"
    fd = os.open(str(home / "thread-writer-locks" / f"{held}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done, failed = rebuild_histories(home, [held], str(exe))
    finally:
        os.close(fd)
    assert done == [] and failed[0][0] == held and "another Codex holds this thread" in failed[0][1]
    assert not log.exists()  # no Codex was even started


def test_rebuild_refuses_clearly_when_codex_is_missing_and_changes_nothing(ph, tmp_path):
    from harness import snapshot
    th = ph.add()
    ph.delete_turns_keep_cursor(th)
    before = snapshot(ph.root)
    for args, env in ((["--codex-bin", str(tmp_path / "nope")], {}), ([], {"PATH": str(tmp_path)})):
        proc = run("session_repair.py", ph.root, "--apply", "--rebuild-history", *args, env=env)
        assert proc.returncode == 2 and proc.stdout == "", proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert ("not an executable file" if args else "`codex` is not on PATH") in proc.stderr
    assert snapshot(ph.root) == before


def test_repair_dry_run_plans_resets_rebuilds_and_names_and_writes_nothing(ph):
    from harness import snapshot
    a, b, c, d = ph.add(), ph.add(), ph.add(), ph.add()
    ph.keep_first_turn_only(a)
    ph.delete_turns_keep_cursor(b)
    for t in TABLES:
        ph.sql(f"DELETE FROM {t} WHERE thread_id=?", (c.id,))
    write_index(ph.root, [{"id": d.id, "thread_name": "named", "updated_at": 1}])
    before = snapshot(ph.root)
    proc = run("session_repair.py", ph.root, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["planned_history_resets"] == 2 and out["planned_name_restores"] == 1
    assert sorted((s["thread_id"], s["kind"]) for s in out["history_resets_sample"]) == sorted(
        [(a.id, "turns_missing_before_cursor"), (b.id, "rows_missing_cursor_kept")])
    assert "first time each thread is opened" in out["history_comes_back"]
    assert out["planned_history_rebuilds"] == 0
    out = json.loads(run("session_repair.py", ph.root, "--json", "--rebuild-history").stdout)
    assert out["planned_history_rebuilds"] == 3 and out["history_comes_back"].startswith("rebuilt now")
    out = json.loads(run("session_repair.py", ph.root, "--json", "--no-fix-history").stdout)
    assert out["planned_history_resets"] == 0 and out["history_fix_enabled"] is False
    text = run("session_repair.py", ph.root).stdout
    from sessionkit.ui.labels import session_names
    labels = session_names(inputs_of(ph.root), [a.id, d.id])
    assert a.id not in labels[a.id] and labels[a.id].startswith('"')  # the session as the picker shows it
    assert f"reset history of {labels[a.id]} (turns_missing_before_cursor)" in text  # named, not by id
    assert f"restore name of {labels[d.id]}: 'named'" in text
    assert snapshot(ph.root) == before


# --- the reset: journaled whole, undone exactly -----------------------------------------------
def whole_history(ph) -> Dict[str, list]:
    """Every row's values (rowids aside: a row put back gets a new one)."""
    return {t: sorted(ph.sql(f"SELECT * FROM {t}"), key=repr) for t in TABLES}


def damaged_home(ph):
    a, b, c, d = ph.add(), ph.add(), ph.add(turns=2), ph.add()
    ph.keep_first_turn_only(a)
    ph.delete_turns_keep_cursor(b)
    os.truncate(c.path, c.turn_ends[0])
    write_index(ph.root, [{"id": d.id, "thread_name": "named \u2603", "updated_at": 1}])
    return a, b, c, d


def test_apply_deletes_exactly_the_damaged_keys_rows_and_rollback_puts_every_row_back(ph):
    a, b, c, d = damaged_home(ph)
    before = whole_history(ph)
    untouched = ph.rows_of(d.id)
    proc = run("session_repair.py", ph.root, "--json", "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    # a: 1 turn + 2 items + 1 realtime + cursor; b: realtime + cursor; c: 2 turns + 4 items + realtime + cursor
    assert out["result"]["history_rows_deleted"] == 5 + 2 + 8
    assert out["result"]["updated_rows"] == 1  # the name
    for th in (a, b, c):
        assert all(v == [] for v in ph.rows_of(th.id).values()), th.id
    assert ph.rows_of(d.id) == untouched
    assert ph.hb.sql("SELECT name FROM threads WHERE id=?", (d.id,)) == [("named \u2603",)]
    assert findings_of(ph.root) == {a.id: "not_built", b.id: "not_built", c.id: "not_built"}
    assert "history comes back" not in proc.stderr
    rb = run("rollback.py", ph.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert whole_history(ph) == before
    assert ph.hb.sql("SELECT name FROM threads WHERE id=?", (d.id,)) == [(None,)]
    again = run("rollback.py", ph.root, "--latest", "--apply", "--json")
    assert whole_history(ph) == before and again.returncode in (0, 1)


def test_no_fix_history_leaves_every_history_row_alone(ph):
    damaged_home(ph)
    before = whole_history(ph)
    proc = run("session_repair.py", ph.root, "--json", "--apply", "--no-fix-history")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert whole_history(ph) == before


def test_a_row_that_changed_after_the_plan_stops_the_run_and_nothing_stays_changed(ph, monkeypatch):
    from sessionkit import UserError
    from sessionkit.fixes import history_reset
    import session_repair
    a, b, c, d = damaged_home(ph)
    real = history_reset.history_ops
    raced = {}

    def racing(db, plan):
        ops = real(db, plan)
        ph.sql("UPDATE thread_history_projection_state SET next_rollout_ordinal=next_rollout_ordinal+1 "
               "WHERE thread_id=?", (c.id,))  # Codex wrote between the plan and the apply
        raced.update(whole_history(ph))
        return ops
    monkeypatch.setattr(session_repair, "history_ops", racing)
    with pytest.raises(UserError, match="changed since the plan was made.*undone"):
        session_repair.main(["--codex-dir", str(ph.root), "--apply", "--json"])
    assert whole_history(ph) == raced  # no history row deleted
    assert ph.hb.sql("SELECT name FROM threads WHERE id=?", (d.id,)) == [(None,)]  # the name put back too


def test_orphan_import_carries_the_name(ph):
    th = ph.add(rows=True)
    ph.hb.sql("DELETE FROM threads WHERE id=?", (th.id,))
    os.utime(th.path, (th.created.timestamp(),) * 2)
    write_index(ph.root, [{"id": th.id, "thread_name": "kept across import", "updated_at": 1}])
    out = json.loads(run("session_repair.py", ph.root, "--json", "--apply", "--import-orphans").stdout)
    assert out["result"]["inserted_rows"] == 1
    assert ph.hb.sql("SELECT name FROM threads WHERE id=?", (th.id,)) == [("kept across import",)]


@pytest.mark.parametrize("action", ["kill", "enospc"])  # Ctrl-C: the same in-run undo (tests/test_faults.py)
def test_history_reset_fault_at_every_point_leaves_every_row_as_before(tmp_path, action):
    """A reset cut anywhere (SIGKILL, Ctrl-C, a full disk) is undone by itself or by the one
    rollback: every history row and name as before, byte for byte."""
    import signal
    from test_faults import Pristine, frun, points
    from test_migrate_rollback import home_state
    ph = PaginatedHome(tmp_path / ".codex")
    damaged_home(ph)

    def state():
        st = home_state(ph.root)
        files = {k: v for k, v in st["files"].items() if not k.startswith("thread_history_1.sqlite")}
        return files, st["rows"], whole_history(ph)
    before = state()
    pristine = Pristine(ph.root)
    labels, _ = points(tmp_path, "session_repair.py", ph.root, "--apply")
    assert labels.count("commit") == 2 and len(labels) >= 6, labels  # the state DB (a name), then the history DB
    for n in range(1, len(labels) + 1):
        pristine.restore()
        proc = frun("session_repair.py", ph.root, "--apply", fault=f"{action}:{n}")
        if action == "kill":
            assert proc.returncode == -signal.SIGKILL, (n, proc.stderr)
        elif n < len(labels):
            assert proc.returncode == 2 and "the home is as before" in proc.stderr, (n, labels[n - 1], proc.stderr)
        rb = frun("rollback.py", ph.root, "--latest", "--apply")
        assert rb.returncode in (0, 1), (n, rb.stdout, rb.stderr)
        assert state() == before, (action, n, labels[n - 1])


def test_symlinks_and_odd_values_are_never_followed_and_never_fatal(ph, tmp_path):
    outside = tmp_path / "outside.jsonl"
    a = ph.add()
    outside.write_bytes(a.path.read_bytes())
    a.path.unlink()
    a.path.symlink_to(outside)
    ph.delete_turns_keep_cursor(a)
    b = ph.add()
    ph.sql("UPDATE thread_history_projection_state SET next_rollout_byte_offset='x', next_rollout_ordinal='y' "
           "WHERE thread_id=?", (b.id,))
    ph.sql("UPDATE thread_turns SET rollout_end_byte_offset=-5, rollout_byte_offset=NULL WHERE thread_id=?", (b.id,))
    (ph.root / "session_index.jsonl").symlink_to("/dev/zero")
    check = check_history(inputs_of(ph.root))
    assert [(f.thread_id, f.kind) for f in check.findings] == [(b.id, "cursor_missing")]
    assert check.names_lost == {}
