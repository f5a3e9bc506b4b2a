"""Paginated history and names against the real Codex CLI: the damage users report, made with
Codex stopped, found by the audit, and repaired so that a fresh `thread/read` shows every turn."""
import json
import os
import sqlite3
import time
from typing import Dict, List

import pytest

import codex_client
from codex_client import BLACKHOLE_PROXY

TABLES = ("thread_turns", "thread_items", "thread_realtime_items", "thread_history_projection_state")
ORDER = {"thread_turns": "turn_id", "thread_items": "turn_id, item_id", "thread_realtime_items": "item_id",
         "thread_history_projection_state": "thread_id"}


def hist(world, sql: str, params: tuple = ()) -> list:
    conn = sqlite3.connect(str(world.home / "thread_history_1.sqlite"))
    try:
        with conn:
            return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def history_rows(world, key: str) -> Dict[str, list]:
    """Every row of one key in the four tables, whole."""
    return {t: hist(world, f"SELECT * FROM {t} WHERE thread_id=? ORDER BY {ORDER[t]}", (key,)) for t in TABLES}


def all_history_rows(world) -> Dict[str, list]:
    return {t: hist(world, f"SELECT * FROM {t} ORDER BY thread_id, {ORDER[t]}") for t in TABLES}


def rollout_of(world, tid: str) -> str:
    return world.db("SELECT rollout_path FROM threads WHERE id=?", (tid,))[0][0]


def rollout_turns(path: str) -> List[str]:
    """The turn ids the rollout itself starts, in order: what a whole history must show."""
    out = []
    with open(path, "rb") as fh:
        for raw in fh:
            obj = json.loads(raw)
            p = obj.get("payload") or {}
            if obj.get("type") == "event_msg" and p.get("type") in ("task_started", "turn_started"):
                out.append(p.get("turn_id") or (p.get("turn_attribution") or {}).get("turn_id"))
    return out


def read_turn_ids(world, *tids: str) -> Dict[str, List[str]]:
    with world.app() as app:
        return {t: [turn["id"] for turn in app.read_thread(t)["turns"]] for t in tids}


def script_env() -> Dict[str, str]:
    """What the scripts' Codex child inherits: the mock key, and no way out but loopback."""
    return {"MOCK_API_KEY": "mock-key", "HTTP_PROXY": BLACKHOLE_PROXY, "HTTPS_PROXY": BLACKHOLE_PROXY,
            "ALL_PROXY": BLACKHOLE_PROXY, "NO_PROXY": "127.0.0.1,localhost"}


def make_threads(world, n: int, turns: int = 3) -> List[str]:
    with world.app() as app:
        ids = [app.start_thread(world.project(), f"thread {i} turn 1") for i in range(n)]
        for tid in ids:
            for k in range(2, turns + 1):
                app.turn(tid, f"turn {k}")
    return ids


def damage(world, first_only: str, no_rows: str, shorter: str) -> None:
    """Made with Codex stopped, as measured on 0.169 and 0.171: rows for turn 1 only with the
    cursor at end of file; turns and items deleted with the cursor kept; a rollout shorter than
    its projection (an older copy put back: cut at the end of turn 2, mtime kept)."""
    first = hist(world, "SELECT turn_id FROM thread_turns WHERE thread_id=? ORDER BY rollout_ordinal LIMIT 1",
                 (first_only,))[0][0]
    hist(world, "DELETE FROM thread_items WHERE thread_id=? AND turn_id<>?", (first_only, first))
    hist(world, "DELETE FROM thread_turns WHERE thread_id=? AND turn_id<>?", (first_only, first))
    hist(world, "DELETE FROM thread_items WHERE thread_id=?", (no_rows,))
    hist(world, "DELETE FROM thread_turns WHERE thread_id=?", (no_rows,))
    end2 = hist(world, "SELECT rollout_end_byte_offset FROM thread_turns WHERE thread_id=? "
                       "ORDER BY rollout_ordinal LIMIT 1 OFFSET 1", (shorter,))[0][0]
    path = rollout_of(world, shorter)
    st = os.stat(path)
    os.truncate(path, end2)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.compat
def test_incomplete_histories_found_reset_and_rebuilt_by_codex(world):
    a, b, c, d = make_threads(world, 4)
    untouched = history_rows(world, d)
    damage(world, a, b, c)
    reads = {t: len(v) for t, v in read_turn_ids(world, a, b, c, d).items()}
    assert reads == {a: 1, b: 0, c: 3, d: 3}  # what the user sees: only the start, nothing, ghosts
    audit = world.audit()
    integ = audit["integrity"]
    assert integ["history_incomplete_count"] == 3 and integ["history_checked"] == 4
    kinds = {s["thread_id"]: s["kind"] for s in integ["history_incomplete_detail"]}
    assert kinds == {a: "turns_missing_before_cursor", b: "rows_missing_cursor_kept", c: "projection_ahead"}

    proc = world.script("session_repair.py", "--json", "--apply", "--rebuild-history",
                        "--codex-bin", str(codex_client.codex_bin(world.version)), env=script_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["planned_history_resets"] == 3 and out["history_rebuild"]["rebuilt"] == 3
    assert out["history_rebuild"]["failed"] == []
    ids = read_turn_ids(world, a, b, c, d)
    for tid in (a, b, c, d):
        assert ids[tid] == rollout_turns(rollout_of(world, tid)), tid
    assert [len(ids[t]) for t in (a, b, c, d)] == [3, 3, 2, 3]
    assert history_rows(world, d) == untouched  # exact rows
    after = world.audit()["integrity"]
    assert after["history_incomplete_count"] == 0
    resumed = world.resume_and_turn(a)
    assert resumed.ok and resumed.turns_after == 4, resumed
    resumed = world.resume_and_turn(c)
    assert resumed.ok and resumed.turns_after == 3, resumed


@pytest.mark.compat
def test_without_rebuild_the_history_comes_back_on_first_open_and_rollback_restores_rows_exactly(world):
    a, b, c, d = make_threads(world, 4)
    damage(world, a, b, c)
    damaged = all_history_rows(world)
    dry = json.loads(world.script("session_repair.py", "--json").stdout)
    assert dry["planned_history_resets"] == 3 and "first time each thread is opened" in dry["history_comes_back"]
    assert all_history_rows(world) == damaged
    proc = world.script("session_repair.py", "--json", "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {t: history_rows(world, t)["thread_turns"] for t in (a, b, c)} == {a: [], b: [], c: []}
    audit = world.audit()["integrity"]
    assert audit["history_incomplete_by_kind"]["not_built"] == 3 and audit["history_incomplete_count"] == 3
    rb = world.script("rollback.py", "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert all_history_rows(world) == damaged  # every row back, byte for byte
    # and once more, then opening each thread (a resume) brings its history back by itself
    assert world.script("session_repair.py", "--apply").returncode == 0
    with world.app() as app:
        for t in (a, b, c):
            app.request("thread/resume", {"threadId": t, "excludeTurns": True})
    assert {t: len(v) for t, v in read_turn_ids(world, a, b, c).items()} == {a: 3, b: 3, c: 2}


@pytest.mark.compat
def test_a_fork_comes_back_when_its_parent_is_rebuilt(world):
    (parent,) = make_threads(world, 1, turns=2)
    with world.app() as app:
        fork = app.request("thread/fork", {"threadId": parent})["thread"]["id"]
        app.turn(fork, "fork turn")
    assert {t: len(v) for t, v in read_turn_ids(world, parent, fork).items()} == {parent: 2, fork: 3}
    for t in TABLES[:2]:
        hist(world, f"DELETE FROM {t} WHERE thread_id=?", (parent,))
    assert {t: len(v) for t, v in read_turn_ids(world, parent, fork).items()} == {parent: 0, fork: 1}
    proc = world.script("session_repair.py", "--json", "--apply", "--rebuild-history",
                        "--codex-bin", str(codex_client.codex_bin(world.version)), env=script_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["history_forks_come_back_with_parent"] == {parent: [fork]}
    assert {t: len(v) for t, v in read_turn_ids(world, parent, fork).items()} == {parent: 2, fork: 3}


@pytest.mark.compat
def test_a_renamed_thread_whose_row_was_re_created_gets_its_name_back(world):
    relisted, imported, plain = make_threads(world, 3, turns=1)
    with world.app() as app:
        app.request("thread/name/set", {"threadId": relisted, "name": "Release notes, take 2"})
        app.request("thread/name/set", {"threadId": imported, "name": "Caf\u00e9 \u2603 migration"})
    world.db("DELETE FROM threads WHERE id IN (?, ?)", (relisted, imported))
    world.listing()  # Codex re-creates the row of a rollout it lists: without its name
    assert world.db("SELECT name FROM threads WHERE id=?", (relisted,)) == [(None,)]
    world.db("DELETE FROM threads WHERE id=?", (imported,))  # no row at all: our import re-creates it
    path = next(p for p in (world.home / "sessions").rglob(f"*{imported}.jsonl"))
    old = time.time() - 3600
    os.utime(path, (old, old))
    audit = world.audit()
    assert audit["integrity"]["names_lost_count"] == 1
    assert audit["integrity"]["names_lost_detail"] == [{"thread_id": relisted, "name": "Release notes, take 2"}]
    proc = world.script("session_repair.py", "--json", "--apply", "--import-orphans")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = dict(world.db("SELECT id, name FROM threads"))
    assert names == {relisted: "Release notes, take 2", imported: "Caf\u00e9 \u2603 migration", plain: None}
    with world.app() as app:
        assert app.read_thread(relisted)["name"] == "Release notes, take 2"
        assert app.read_thread(imported)["name"] == "Caf\u00e9 \u2603 migration"
    assert world.audit()["integrity"]["names_lost_count"] == 0


def test_a_thread_another_codex_holds_is_never_reset_and_the_rest_are_rebuilt(world):
    held, free = make_threads(world, 2)
    for t in (held, free):
        hist(world, "DELETE FROM thread_items WHERE thread_id=?", (t,))
        hist(world, "DELETE FROM thread_turns WHERE thread_id=?", (t,))
    with world.app() as app:  # the user's editor has `held` open (its writer lock is held)
        app.request("thread/resume", {"threadId": held, "excludeTurns": True})
        before = history_rows(world, held)
        proc = world.script("session_repair.py", "--json", "--apply", "--force", "--rebuild-history",
                            "--codex-bin", str(codex_client.codex_bin(world.version)), env=script_env())
        assert proc.returncode == 1, proc.stdout + proc.stderr
        out = json.loads(proc.stdout)
        assert [s["thread_id"] for s in out["history_skipped"]] == [held]
        assert "live thread" in out["history_skipped"][0]["reason"]
        assert history_rows(world, held) == before
        assert out["history_rebuild"]["rebuilt"] == 1 and out["history_rebuild"]["failed"] == []
    assert len(read_turn_ids(world, free)[free]) == 3


def test_an_archived_thread_is_rebuilt_once_unarchived_or_reported(world):
    kept, back = make_threads(world, 2, turns=2)
    world.archive(kept, back)
    for t in (kept, back):
        hist(world, "DELETE FROM thread_items WHERE thread_id=?", (t,))
        hist(world, "DELETE FROM thread_turns WHERE thread_id=?", (t,))
    bin_ = str(codex_client.codex_bin(world.version))
    proc = world.script("session_repair.py", "--json", "--apply", "--no-unarchive", "--thread-id", kept,
                        "--rebuild-history", "--codex-bin", bin_, env=script_env())
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["history_rebuild"]["rebuilt"] == 0
    assert [f["thread_id"] for f in out["history_rebuild"]["failed"]] == [kept]
    assert "archived" in out["history_rebuild"]["failed"][0]["reason"]
    proc = world.script("session_repair.py", "--json", "--apply", "--unarchive", back, "--thread-id", back,
                        "--rebuild-history", "--codex-bin", bin_, env=script_env())
    out = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["unarchive_rows"] == 1 and out["history_rebuild"]["rebuilt"] == 1
    assert len(read_turn_ids(world, back)[back]) == 2


def test_a_never_built_history_is_rebuilt_alone_and_refused_while_codex_runs(world):
    (tid,) = make_threads(world, 1)
    for t in TABLES:
        hist(world, f"DELETE FROM {t} WHERE thread_id=?", (tid,))
    assert world.audit()["integrity"]["history_incomplete_by_kind"]["not_built"] == 1
    args = ("--json", "--apply", "--rebuild-history", "--codex-bin", str(codex_client.codex_bin(world.version)))
    with world.app():  # another Codex runs (without this thread open): refused, nothing written
        proc = world.script("session_repair.py", *args, env=script_env())
        assert proc.returncode == 2 and "Codex is running" in proc.stderr and proc.stdout == ""
    assert history_rows(world, tid)["thread_turns"] == []
    proc = world.script("session_repair.py", *args, env=script_env())
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["result"] is None and out["history_rebuild"]["rebuilt"] == 1
    assert len(read_turn_ids(world, tid)[tid]) == 3


def test_an_older_segment_of_a_reverted_thread_is_reported_not_reset(world):
    """Measured on 0.171: a resume rebuilds only the newer file's rows, never an older segment's
    (even with all four tables' rows of it gone), so the repair reports it and leaves it."""
    (tid,) = make_threads(world, 1)
    with world.app() as app:
        turns = app.read_thread(tid)["turns"]
        app.request("thread/resume", {"threadId": tid})
        app.request("thread/revert", {"threadId": tid, "beforeTurnId": turns[2]["id"]})
        app.turn(tid, "after the revert")
    assert len(read_turn_ids(world, tid)[tid]) == 3
    hist(world, "DELETE FROM thread_items WHERE thread_id=?", (tid,))  # the older (plain) file's key
    hist(world, "DELETE FROM thread_turns WHERE thread_id=?", (tid,))
    assert len(read_turn_ids(world, tid)[tid]) == 1
    before = all_history_rows(world)
    proc = world.script("session_repair.py", "--json", "--apply", "--rebuild-history",
                        "--codex-bin", str(codex_client.codex_bin(world.version)), env=script_env())
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["planned_history_resets"] == 0 and out["nothing_to_do"] is True
    assert [s["thread_id"] for s in out["history_skipped"]] == [tid]
    assert "older segment" in out["history_skipped"][0]["reason"]
    assert all_history_rows(world) == before
    sample = world.audit()["integrity"]["history_incomplete_detail"]
    assert [(s["thread_id"], s["kind"], s.get("older_segment")) for s in sample] == \
        [(tid, "rows_missing_cursor_kept", True)]
