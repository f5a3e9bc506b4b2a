"""--remap-prefix rewrites `cwd` in every turn_context line as well as in line 1 (a resumed thread
takes the LAST turn_context's cwd: references/real-codex.md (a)), as one RolloutRewrite; history
offsets move by the cumulative growth; every state DB of the home is repaired; one rollback puts
all of it back, turns appended since included."""
import json
import os
import shutil
import sqlite3

import pytest

from harness import snapshot
from homebuilder import HomeBuilder
from test_faults import Pristine, frun, points

OLD = "/home/olduser"
ART = ".tmp/session-migration"


def _history(root, threads):
    """thread_history_1.sqlite as Codex keeps it: per turn, the byte offsets of its first line (the
    turn_context) and of the line after its last; the cursor at the end of the file."""
    conn = sqlite3.connect(str(root / "thread_history_1.sqlite"))
    conn.execute("CREATE TABLE thread_turns (thread_id TEXT, turn_id TEXT, rollout_ordinal INTEGER, "
                  "rollout_byte_offset INTEGER, rollout_end_byte_offset INTEGER)")
    conn.execute("CREATE TABLE thread_history_projection_state (thread_id TEXT PRIMARY KEY, "
                  "next_rollout_byte_offset INTEGER)")
    for t in threads:
        _index_turns(conn, t.id, t.path.read_bytes())
    conn.commit()
    conn.close()


def _index_turns(conn, tid, data):
    starts = _turn_starts(data)
    conn.execute("DELETE FROM thread_turns WHERE thread_id=?", (tid,))
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(data)
        conn.execute("INSERT INTO thread_turns VALUES (?,?,?,?,?)", (tid, f"turn-{n}", n, start, end))
    conn.execute("INSERT OR REPLACE INTO thread_history_projection_state VALUES (?,?)", (tid, len(data)))


def _turn_starts(data):
    out, pos = [], 0
    for raw in data.splitlines(keepends=True):
        if b'"type":"turn_context"' in raw:
            out.append(pos)
        pos += len(raw)
    return out


def _offsets(root, tid):
    conn = sqlite3.connect(str(root / "thread_history_1.sqlite"))
    try:
        turns = conn.execute("SELECT rollout_byte_offset, rollout_end_byte_offset FROM thread_turns "
                             "WHERE thread_id=? ORDER BY rollout_ordinal", (tid,)).fetchall()
        proj = conn.execute("SELECT next_rollout_byte_offset FROM thread_history_projection_state "
                            "WHERE thread_id=?", (tid,)).fetchone()[0]
    finally:
        conn.close()
    return turns, proj


def _cwds(path):
    """(line 1 cwd, workspace roots, [cwd of each turn_context line])."""
    lines = [json.loads(x) for x in path.read_bytes().splitlines()]
    meta = lines[0]["payload"]
    return meta["cwd"], meta.get("runtime_workspace_roots"), \
        [x["payload"]["cwd"] for x in lines if x.get("type") == "turn_context"]


def _other_cwds(path):
    """cwd of the world_state lines and thread_settings_applied events."""
    lines = [json.loads(x) for x in path.read_bytes().splitlines()]
    return [x["payload"]["cwd"] for x in lines if x.get("type") == "world_state"] + \
        [x["payload"]["thread_settings"]["cwd"] for x in lines
         if x["payload"].get("type") == "thread_settings_applied" and "cwd" in x["payload"].get("thread_settings", {})]


def _home(tmp_path, n=2, turns=3, history=True, other_db=False):
    hb = HomeBuilder(tmp_path / ".codex")
    threads = []
    for i in range(n):
        t = hb.add(cwd=f"{OLD}/proj", preview=f"moved {i}", turns=turns)
        first, rest = t.path.read_bytes().split(b"\n", 1)
        meta = json.loads(first)
        meta["payload"]["runtime_workspace_roots"] = [f"{OLD}/proj"]
        # 0.171 writes the cwd into world_state lines and thread_settings_applied events too
        extra = [{"timestamp": "2026-01-01T00:00:00Z", "type": "world_state",
                  "payload": {"cwd": f"{OLD}/proj", "filesystem": "<root>kept as is</root>"}},
                 {"timestamp": "2026-01-01T00:00:00Z", "type": "event_msg", "payload": {
                     "type": "thread_settings_applied", "thread_settings": {"cwd": f"{OLD}/proj",
                                                                           "model": "gpt-5"}}}]
        tail = b"".join(json.dumps(x, separators=(",", ":")).encode() + b"\n" for x in extra)
        t.path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + rest + tail)
        os.utime(t.path, (t.created.timestamp() + 60,) * 2)
        threads.append(t)
    if history:
        _history(hb.root, threads)
    if other_db:  # the desktop app's DB beside the CLI's, indexing the same rollouts
        (hb.root / "sqlite").mkdir()
        shutil.copy(hb.db_path, hb.root / "sqlite" / "state_5.sqlite")
        shutil.copy(hb.root / "thread_history_1.sqlite", hb.root / "sqlite" / "thread_history_1.sqlite")
    return hb, threads


def state(root):
    """Every file's bytes, mtime and mode (SQLite files by content: their rows), our artifacts aside."""
    files = {k: v for k, v in snapshot(root).items() if not k.startswith(ART) and ".sqlite" not in k}
    dbs = {}
    for rel in sorted(k for k in snapshot(root) if k.endswith(".sqlite") and not k.startswith(ART)):
        conn = sqlite3.connect(f"file:{root / rel}?mode=ro", uri=True)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY 1")]
        dbs[rel] = {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
        conn.close()
    return {"files": files, "dbs": dbs}


def repair(root, *remaps, extra=()):
    args = [a for r in remaps for a in ("--remap-prefix", r)]
    return frun("session_repair.py", root, *args, "--no-unarchive", *extra)


def test_growing_remap_rewrites_every_turn_context_and_shifts_offsets_cumulatively(tmp_path):
    hb, threads = _home(tmp_path)
    before = state(hb.root)
    old_bytes = {t.id: t.path.read_bytes() for t in threads}
    old_offsets = {t.id: _offsets(hb.root, t.id) for t in threads}
    dry = repair(hb.root, f"{OLD}=/home/newuser2", extra=["--json"])
    plan = json.loads(dry.stdout)
    assert (plan["planned_rollout_rewrites"], plan["planned_cwd_line_rewrites"]) == (2, 10)
    assert state(hb.root) == before  # the dry-run wrote nothing
    res = json.loads(repair(hb.root, f"{OLD}=/home/newuser2", extra=["--apply", "--json"]).stdout)["result"]
    assert (res["updated_rows"], res["line1_rewritten"]) == (2, 2)
    for t in threads:
        assert _cwds(t.path) == ("/home/newuser2/proj", ["/home/newuser2/proj"], ["/home/newuser2/proj"] * 3)
        new = t.path.read_bytes()
        assert _other_cwds(t.path) == ["/home/newuser2/proj"] * 2
        # one byte more per rewritten value: line 1 (cwd + one root), each turn_context, and the
        # world_state and thread_settings_applied lines
        assert len(new) == len(old_bytes[t.id]) + 2 + 3 + 2
        assert new.replace(b"/home/newuser2", OLD.encode()) == old_bytes[t.id]  # nothing else changed
        assert t.path.stat().st_mtime_ns == int((t.created.timestamp() + 60) * 1e9)
        # every offset still points at the start of the same turn_context line / the end of file
        starts = _turn_starts(new)
        turns, proj = _offsets(hb.root, t.id)
        assert [o for o, _ in turns] == starts and [e for _, e in turns] == starts[1:] + [len(new)]
        assert proj == len(new)
        shifted = [o - s for (o, _), (s, _) in zip(turns, old_offsets[t.id][0])]
        assert shifted == [2, 3, 4]  # cumulative: line 1's 2 bytes, then +1 per turn_context before
    assert hb.sql("SELECT DISTINCT cwd FROM threads") == [("/home/newuser2/proj",)]
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert state(hb.root) == before


def test_rollback_keeps_a_turn_appended_since_and_moves_its_offsets_back(tmp_path):
    hb, threads = _home(tmp_path, n=1)
    t = threads[0]
    old = t.path.read_bytes()
    assert repair(hb.root, f"{OLD}=/home/newuser2", extra=["--apply"]).returncode == 0
    turn = json.dumps({"timestamp": "2026-01-01T00:00:00Z", "type": "turn_context",
                       "payload": {"turn_id": "late", "cwd": "/home/newuser2/proj"}},
                      separators=(",", ":")).encode() + b"\n"
    with open(t.path, "ab") as fh:  # the user continued the session after the repair
        fh.write(turn)
    conn = sqlite3.connect(str(hb.root / "thread_history_1.sqlite"))
    _index_turns(conn, t.id, t.path.read_bytes())
    conn.commit()
    conn.close()
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert t.path.read_bytes() == old + turn  # old lines back, the new turn kept as written
    turns, proj = _offsets(hb.root, t.id)
    starts = _turn_starts(old + turn)
    assert [o for o, _ in turns] == starts and proj == len(old + turn)
    assert _cwds(t.path)[2][-1] == "/home/newuser2/proj" and _cwds(t.path)[0] == f"{OLD}/proj"


def test_same_length_remap_writes_in_place_and_rolls_back(tmp_path):
    hb, threads = _home(tmp_path, n=1)
    t = threads[0]
    before, ino, offsets = state(hb.root), t.path.stat().st_ino, _offsets(hb.root, t.id)
    assert repair(hb.root, f"{OLD}=/home/newuser", extra=["--apply"]).returncode == 0
    assert t.path.stat().st_ino == ino  # same length: same inode, nothing renamed
    assert _cwds(t.path) == ("/home/newuser/proj", ["/home/newuser/proj"], ["/home/newuser/proj"] * 3)
    assert _offsets(hb.root, t.id) == offsets
    assert not list((hb.root / ART).glob("*/*.rollout.bak"))  # no kept copy needed
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert state(hb.root) == before


@pytest.mark.parametrize("new", ["/home/newuser2", "/home/newuser"], ids=["growing", "same-length"])
def test_remap_survives_a_kill_at_every_step(tmp_path, new):
    hb, _ = _home(tmp_path, n=2, other_db=True)
    before = state(hb.root)
    args = ["--remap-prefix", f"{OLD}={new}", "--no-unarchive", "--apply"]
    pristine = Pristine(hb.root)
    labels, _ = points(tmp_path, "session_repair.py", hb.root, *args)
    assert labels.count("file") == 2
    if new.endswith("user"):
        assert labels.count("chunk") >= 2 * 3  # between the spans written in place (torn states)
    for n in range(1, len(labels) + 1):
        pristine.restore()
        assert frun("session_repair.py", hb.root, *args, fault=f"kill:{n}").returncode == -9
        rb = frun("rollback.py", hb.root, "--latest", "--apply")
        assert rb.returncode == 0, (n, rb.stdout, rb.stderr)
        assert state(hb.root) == before, (n, labels[n - 1])


def test_every_state_db_is_repaired_and_rolled_back(tmp_path):
    hb, threads = _home(tmp_path, n=2, other_db=True)
    arch = hb.add(cwd="/work/proj", archived=True, preview="archived")
    desktop = hb.root / "sqlite" / "state_5.sqlite"
    conn = sqlite3.connect(str(desktop))
    conn.execute("INSERT INTO threads SELECT * FROM main.threads WHERE 0")  # schema check only
    conn.close()
    shutil.copy(hb.db_path, desktop)  # both DBs index all three, the archived one too
    before = state(hb.root)
    out = json.loads(frun("session_repair.py", hb.root, "--remap-prefix", f"{OLD}=/home/newuser2",
                          "--unarchive", "--json").stdout)
    assert out["other_dbs"] == [{"db": str(desktop), "planned_row_updates": 3, "planned_row_inserts": 0}]
    res = json.loads(frun("session_repair.py", hb.root, "--remap-prefix", f"{OLD}=/home/newuser2",
                          "--unarchive", "--apply", "--json").stdout)["result"]
    assert res["rows_per_db"][str(hb.db_path)] == 3 and res["rows_per_db"][str(desktop)] == 3
    assert str(desktop) in res["other_db_backups"]
    for db in (hb.db_path, desktop):
        c = sqlite3.connect(str(db))
        rows = dict(c.execute("SELECT id, cwd || '|' || archived || '|' || rollout_path FROM threads"))
        c.close()
        unarchived = hb.root / "sessions" / arch.created.strftime("%Y/%m/%d") / arch.path.name
        assert rows == {**{t.id: f"/home/newuser2/proj|0|{t.path}" for t in threads},
                        arch.id: f"/work/proj|0|{unarchived}"}, db
    for hist in (hb.root / "thread_history_1.sqlite", hb.root / "sqlite" / "thread_history_1.sqlite"):
        c = sqlite3.connect(str(hist))
        proj = dict(c.execute("SELECT thread_id, next_rollout_byte_offset FROM thread_history_projection_state"))
        c.close()
        assert proj == {t.id: t.path.stat().st_size for t in threads}, hist
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert state(hb.root) == before


def test_a_row_only_the_desktop_db_has_wrong_is_fixed_there(tmp_path):
    hb, threads = _home(tmp_path, n=2, history=False, other_db=False)
    (hb.root / "sqlite").mkdir()
    desktop = hb.root / "sqlite" / "state_5.sqlite"
    shutil.copy(hb.db_path, desktop)
    c = sqlite3.connect(str(desktop))
    c.execute("UPDATE threads SET archived=1, archived_at=5 WHERE id=?", (threads[0].id,))
    c.commit()
    c.close()
    proc = frun("session_repair.py", hb.root, "--apply", "--json")
    assert proc.returncode == 0, proc.stderr
    c = sqlite3.connect(str(desktop))
    assert c.execute("SELECT archived, archived_at FROM threads WHERE id=?", (threads[0].id,)).fetchone() == (0, None)
    c.close()
    assert hb.sql("SELECT count(*) FROM threads WHERE archived=1") == [(0,)]


def test_migration_changes_the_provider_in_every_state_db(tmp_path):
    hb = HomeBuilder(tmp_path / ".codex", provider="newco", providers=["newco", "oldco"])
    old = [hb.add(provider="oldco", preview=f"old {i}") for i in range(2)]
    (hb.root / "sqlite").mkdir()
    desktop = hb.root / "sqlite" / "state_5.sqlite"
    shutil.copy(hb.db_path, desktop)
    before = state(hb.root)
    res = json.loads(frun("provider_migrate.py", hb.root, "--apply", "--json").stdout)["result"]
    assert res["rows_per_db"] == {str(hb.db_path): 2, str(desktop): 2}
    for db in (hb.db_path, desktop):
        c = sqlite3.connect(str(db))
        assert c.execute("SELECT DISTINCT model_provider FROM threads").fetchall() == [("newco",)], db
        c.close()
    assert all(json.loads(t.path.read_bytes().split(b"\n", 1)[0])["payload"]["model_provider"] == "newco"
               for t in old)
    assert frun("rollback.py", hb.root, "--latest", "--apply").returncode == 0
    assert state(hb.root) == before


def test_a_growing_parent_moves_its_forks_history_base_and_both_roll_back(tmp_path):
    """The fork records the parent's end of file (as Codex does at thread/fork): after the growing
    remap it points at the grown end; one rollback puts both files back byte for byte."""
    hb, threads = _home(tmp_path, n=2, history=False)
    child = hb.add(cwd="/work/other", preview="fork")
    first, rest = child.path.read_bytes().split(b"\n", 1)
    meta = json.loads(first)
    p = meta["payload"]  # Codex writes forked_from_id right after id
    end = len(threads[0].path.read_bytes())
    meta["payload"] = {"id": p.pop("id"), "forked_from_id": threads[0].id, **p,
                       "history_base": {"thread_id": threads[0].id, "end_byte_offset": end}}
    child.path.write_bytes(json.dumps(meta, separators=(",", ":")).encode() + b"\n" + rest)
    before = state(hb.root)
    plan = json.loads(repair(hb.root, f"{OLD}=/home/newuser2", extra=["--json"]).stdout)
    assert plan["forks_moved"] == 1
    out = json.loads(repair(hb.root, f"{OLD}=/home/newuser2", extra=["--apply", "--json"]).stdout)
    assert out["skipped_sample"] == []
    grown = len(threads[0].path.read_bytes())
    assert grown > end and _cwds(threads[0].path)[2] == ["/home/newuser2/proj"] * 3
    base = json.loads(child.path.read_bytes().split(b"\n", 1)[0])["payload"]["history_base"]
    assert base == {"thread_id": threads[0].id, "end_byte_offset": grown}
    assert hb.sql("SELECT cwd FROM threads WHERE id=?", (threads[0].id,)) == [("/home/newuser2/proj",)]
    rb = frun("rollback.py", hb.root, "--latest", "--apply")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert state(hb.root) == before


def _journal(root):
    run = sorted((root / ART).glob("session_repair_*"))[-1]
    return run, run / "journal.jsonl"


@pytest.mark.parametrize("edit", ["span", "shift", "offsets-shifts", "version"])
def test_a_tampered_record_refuses_the_whole_rollback(tmp_path, edit):
    hb, _ = _home(tmp_path, n=1)
    assert repair(hb.root, f"{OLD}=/home/newuser2", extra=["--apply"]).returncode == 0
    after = state(hb.root)
    run, journal = _journal(hb.root)
    recs = [json.loads(x) for x in journal.read_text().splitlines()]
    for r in recs:
        if r["op"] == "rollout_rewrite" and edit == "span":
            r["spans"][0][0] = r["prefix_len"] + 5
        if r["op"] == "rollout_rewrite" and edit == "shift":
            r["shifts"][0][1] += 1
        if r["op"] == "offsets" and edit == "offsets-shifts":
            assert len(r["shifts"]) == 6  # line 1, three turn_context lines and two more grew
            r["shifts"][1][0] = 0
        if r["op"] == "rollout_rewrite" and edit == "version":
            r["v"] = 3
    journal.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rb = frun("rollback.py", hb.root, "--manifest", str(run), "--apply")
    assert rb.returncode == 2 and len(rb.stderr.strip().splitlines()) == 1, rb.stderr
    assert state(hb.root) == after
