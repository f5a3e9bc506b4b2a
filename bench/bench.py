#!/usr/bin/env python3
"""`make bench`: time every script on generated homes of 1,000 / 10,000 / 100,000 threads.

Standard library only. Each home has the real 0.169 schema and layout (line 1 ~20 KB, files of
tens of KB) and a mix of problems. Every time is the median of several runs, printed beside the
shared floor (one scandir walk, line 1 of every rollout, one SELECT) and beside the step's own
floor: a plain function that reads and writes only what that step must, measured on the same home
in the same run (interleaved), with peak memory per script. The scripts run as `make install`
leaves them (copied and byte-compiled). TARGETS are checked at the end: each miss is one line on
stderr and the exit code is 1. BENCH_MAX caps the largest home (default 100000: 3.3 GB of
rollouts, generated in about a minute, in BENCH_DIR, default bench/homes); homes are removed after.
BENCH_RUNS (default 3) runs per step, BENCH_RUNS_LARGE (default 1) at 100,000 threads; BENCH_STEPS
(comma-separated step names, e.g. "audit,import dry-run") times only those. A new step is
one Step in STEPS (with its floor function; an apply with its undo), its targets in TARGETS.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
SCHEMA = REPO / "tests" / "data" / "state_5_schema.sql"
SIZES = [1000, 10000, 100000]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
# the 100,000-thread home: its runs take minutes each, so fewer of them (each still interleaved with
# its floor, so a ratio compares two runs made under the same load)
RUNS_LARGE = int(os.environ.get("BENCH_RUNS_LARGE", "1"))
LARGE = 100000


def runs_for(n: int) -> int:
    return RUNS_LARGE if n >= LARGE else RUNS
BASE_INSTRUCTIONS = ("You are a coding agent running in the Codex CLI. " * 410)[:20500]
ASSISTANT = "Here is what I changed and why. " * 400  # ~13 KB of turn content


def compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def generate(root: Path, n: int) -> Dict[str, int]:
    """A home of n threads: 30% other provider, 10% moved-home rows, 5% archived, 2% orphans, 1% missing."""
    root.mkdir(parents=True)
    (root / "config.toml").write_text('model_provider = "newco"\n[model_providers.newco]\nname = "N"\n'
                                      '[model_providers.oldco]\nname = "O"\n')
    conn = sqlite3.connect(str(root / "state_5.sqlite"))
    conn.executescript(SCHEMA.read_text())
    conn.execute("INSERT INTO backfill_state VALUES (1,'complete',NULL,0,0)")
    conn.execute("PRAGMA journal_mode=WAL")
    start = datetime(2024, 1, 1, 8, 0, 0)
    rows = []
    mix = {"other_provider": 0, "moved": 0, "archived": 0, "orphan": 0, "missing": 0}
    made_dirs = set()
    history: List[Tuple[str, int, int, int, int]] = []
    for i in range(n):
        tid = f"0190{i // 65536:04x}-{i % 65536:04x}-7000-8000-{i:012x}"
        created = start + timedelta(minutes=13 * i)
        provider = "oldco" if i % 10 < 3 else "newco"
        archived = i % 20 == 7
        name = f"rollout-{created.strftime('%Y-%m-%dT%H-%M-%S')}-{tid}.jsonl"
        folder = root / "archived_sessions" if archived else root / "sessions" / created.strftime("%Y/%m/%d")
        if folder not in made_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            made_dirs.add(folder)
        path = folder / name
        ts = created.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        meta = {"timestamp": ts, "ordinal": 0, "type": "session_meta", "payload": {
            "session_id": tid, "id": tid, "timestamp": ts, "cwd": f"/home/me/proj{i % 37}",
            "originator": "codex_cli_rs", "cli_version": "0.169.0", "source": "cli",
            "model_provider": provider, "base_instructions": {"text": BASE_INSTRUCTIONS},
            "history_mode": "paginated"}}
        lines = [compact(meta),
                 compact({"timestamp": ts, "ordinal": 1, "type": "event_msg", "payload": {"type": "task_started"}}),
                 compact({"timestamp": ts, "ordinal": 2, "type": "turn_context", "payload": {
                     "cwd": f"/home/me/proj{i % 37}", "approval_policy": "on-request", "model": "gpt-5"}}),
                 compact({"timestamp": ts, "ordinal": 3, "type": "event_msg", "payload": {
                     "type": "user_message", "message": f"task {i}"}}),
                 compact({"timestamp": ts, "ordinal": 4, "type": "response_item", "payload": {
                     "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": ASSISTANT}]}})]
        missing = i % 100 == 51
        orphan = i % 50 == 23
        if not missing:
            path.write_text("\n".join(lines) + "\n")
            history.append((tid, len(lines[0]) + 1, path.stat().st_size, len(lines), i))
            stamp = created.timestamp() + 60
            os.utime(path, (stamp, stamp))
        if orphan:
            mix["orphan"] += 1
            continue
        row_path = str(path)
        if i % 10 == 5:
            row_path = "/Users/olduser/.codex/" + str(path.relative_to(root))
            mix["moved"] += 1
        mix["missing"] += missing
        mix["archived"] += archived
        mix["other_provider"] += provider == "oldco"
        secs = int(created.timestamp())
        rows.append((tid, row_path, secs, secs + 60, "cli", provider, f"/home/me/proj{i % 37}", f"task {i}",
                     '{"type":"read-only"}', "on-request", int(archived), secs + 120 if archived else None,
                     "0.169.0", f"task {i}", f"task {i}", "gpt-5", "paginated"))
    conn.executemany("INSERT INTO threads (id, rollout_path, created_at, updated_at, source, model_provider, cwd, "
                     "title, sandbox_policy, approval_mode, archived, archived_at, cli_version, first_user_message, "
                     "preview, model, history_mode) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()
    mix.update(add_history(root, history))
    return mix


HISTORY_SCHEMA = REPO / "tests" / "data" / "thread_history_1_schema.sql"


def add_history(root: Path, threads: List[Tuple[str, int, int, int, int]]) -> Dict[str, int]:
    """thread_history_1.sqlite as Codex keeps it for paginated threads (one turn, two items, a
    cursor at end of file), with 1% whose turn rows are gone and 1% whose cursor is past the end."""
    conn = sqlite3.connect(str(root / "thread_history_1.sqlite"))
    conn.executescript(HISTORY_SCHEMA.read_text())
    turns, items, cursors = [], [], []
    mix = {"history_rows_missing": 0, "history_cursor_past_eof": 0}
    for tid, start, size, nlines, i in threads:
        cursors.append((tid, size + 10 if i % 100 == 71 else size, nlines))
        mix["history_cursor_past_eof"] += i % 100 == 71
        if i % 100 == 61:
            mix["history_rows_missing"] += 1
            continue
        turns.append((tid, f"turn-{i}", 1, "completed", f"user-{i}", "msg", start, nlines - 1, size, f"turn-{i}"))
        items += [(tid, f"turn-{i}", f"user-{i}", 3, 0, '{"type":"userMessage"}', "userMessage"),
                  (tid, f"turn-{i}", "msg", 4, 0, '{"type":"agentMessage"}', "agentMessage")]
    conn.executemany("INSERT INTO thread_turns (thread_id, turn_id, rollout_ordinal, status, first_user_item_id, "
                     "final_agent_item_id, rollout_byte_offset, rollout_end_ordinal, rollout_end_byte_offset, "
                     "root_turn_id) VALUES (?,?,?,?,?,?,?,?,?,?)", turns)
    conn.executemany("INSERT INTO thread_items (thread_id, turn_id, item_id, rollout_ordinal, created_at_ms, "
                     "item_json, item_type) VALUES (?,?,?,?,?,?,?)", items)
    conn.executemany("INSERT INTO thread_history_projection_state VALUES (?,?,?)", cursors)
    conn.commit()
    conn.close()
    return mix


# ---- floors: plain code that reads and writes only what a step must -----------------------------

def walk(root: Path) -> List[str]:
    """Every rollout under sessions/ and archived_sessions/, as path strings (one scandir walk)."""
    stack = [str(root / "sessions"), str(root / "archived_sessions")]
    files: List[str] = []
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
            elif e.name.endswith(".jsonl"):
                files.append(e.path)
    return files


def heads(files: List[str]) -> Dict[str, Tuple[bytes, os.stat_result]]:
    """Line 1 of each rollout and its stat: one open + fstat + read each, as the audit reads them."""
    out = {}
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            data = os.read(fd, 65536)
            while b"\n" not in data and len(data) < st.st_size:
                more = os.read(fd, 65536)
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
        out[f] = (data.split(b"\n", 1)[0], st)
    return out


THREAD_COLUMNS = ("id, rollout_path, archived, model_provider, cwd, source, created_at, updated_at, archived_at, "
                  "title, preview, first_user_message, history_mode, updated_at_ms")


def select_threads(root: Path) -> list:
    conn = sqlite3.connect(f"file:{root / 'state_5.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT {THREAD_COLUMNS} FROM threads").fetchall()
    finally:
        conn.close()


def select_cursors(root: Path) -> list:
    path = root / "thread_history_1.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT thread_id, next_rollout_byte_offset, next_rollout_ordinal "
                            "FROM thread_history_projection_state").fetchall()
    finally:
        conn.close()


def shared_floor(b: "Bench") -> None:
    """The least any audit must do: walk both folders, read line 1 of every rollout, one SELECT."""
    files = []
    stack = [b.root / "sessions", b.root / "archived_sessions"]
    while stack:
        for e in os.scandir(stack.pop()):
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif e.name.endswith(".jsonl"):
                files.append(e.path)
    for f in files:
        with open(f, "rb") as fh:
            fh.readline()
    select_threads(b.root)


def read_home(root: Path) -> Tuple[Dict[str, Tuple[bytes, os.stat_result]], list, list]:
    """The audit's floor: walk + line-1 heads + SELECT of the threads + the history cursors."""
    return heads(walk(root)), select_threads(root), select_cursors(root)


def audit_floor(b: "Bench") -> None:
    read_home(b.root)


def _read_whole(files: List[str]) -> int:
    """Each file read whole once (one open and read), as a scan of its content must."""
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            n += b"encrypted_content" in fh.read()
    return n


def migration_plan_floor(b: "Bench") -> None:
    """The migration's dry-run: the audit's reads, and every rollout still on another provider read
    whole once: the plan says which of them carry encrypted reasoning (another provider cannot read
    it back), as the migration must before it is applied."""
    got, _rows, _cursors = read_home(b.root)
    _read_whole([f for f, (head, _st) in got.items() if OLD in head])


def recovery_plan_floor(b: "Bench") -> None:
    """The recovery's dry-run: the migration's reads, and every rollout whose row names it under
    another home read whole once (its folder records are what the recovery remaps)."""
    got, rows, _cursors = read_home(b.root)
    root = str(b.root) + os.sep
    moved = {os.path.basename(r[1]) for r in rows if not str(r[1]).startswith(root)}
    _read_whole([f for f, (head, _st) in got.items() if OLD in head or os.path.basename(f) in moved])


def import_floor(b: "Bench") -> None:
    """The import dry-run: the source read as the audit reads it, and the destination's ids."""
    read_home(b.root)
    conn = sqlite3.connect(f"file:{b.dest / 'state_5.sqlite'}?mode=ro", uri=True)
    try:
        conn.execute("SELECT id, rollout_path FROM threads").fetchall()
    finally:
        conn.close()


def _backup(db: Path, out: Path) -> None:
    src, dst = sqlite3.connect(str(db)), sqlite3.connect(str(out))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _journal(path: Path, records: List[dict]) -> None:
    """Records appended and made durable (one fsync) before the changes they describe."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records))
        fh.flush()
        os.fsync(fh.fileno())


def _floor_dir(b: "Bench", kind: str) -> Path:
    """Each floor's own run folder (a recovery's floor runs the repair's and the migration's)."""
    d = b.root.parent / f"floor-run-{kind}"
    d.mkdir(exist_ok=True)
    return d


OLD, NEW = b'"model_provider":"oldco"', b'"model_provider":"newco"'


def migration_apply_floor(b: "Bench") -> None:
    """Read as the audit does; back up the DB; journal; pwrite the provider in line 1 and put the
    mtime back, for every thread on the other provider; one UPDATE."""
    got, _rows, _cursors = read_home(b.root)
    run = _floor_dir(b, "migration")
    _backup(b.root / "state_5.sqlite", run / "state_5.sqlite.bak")
    todo = [(f, head.find(OLD), st) for f, (head, st) in got.items() if OLD in head]
    ids = [os.path.basename(f)[-42:-6] for f, _at, _st in todo]
    _journal(run / "journal.jsonl", [{"op": "line1", "path": f, "at": at, "mtime_ns": st.st_mtime_ns}
                                     for f, at, st in todo])
    for f, at, st in todo:
        fd = os.open(f, os.O_WRONLY)
        try:
            os.pwrite(fd, NEW, at)
        finally:
            os.close(fd)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    conn = sqlite3.connect(str(b.root / "state_5.sqlite"))
    with conn:
        conn.executemany("UPDATE threads SET model_provider='newco' WHERE id=?", [(i,) for i in ids])
    conn.close()
    _journal(run / "journal.jsonl", [{"op": "end"}])


def migration_rollback_floor(b: "Bench") -> None:
    """One parse of the journal; pwrite the old provider back, the mtime back; the DB backed up
    (every write is, a rollback's too: the project's rule); one UPDATE."""
    run = _floor_dir(b, "migration")
    path = run / "journal.jsonl"
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    ids = []
    for r in recs:
        if r["op"] != "line1":
            continue
        fd = os.open(r["path"], os.O_RDWR)
        try:
            os.fstat(fd)  # the file is as the run left it: line 1 read back and checked before the write
            if os.pread(fd, 65536, 0)[r["at"]:r["at"] + len(NEW)] != NEW:
                raise SystemExit(f"bench: {r['path']} changed under the floor")
            os.pwrite(fd, OLD, r["at"])
            ids.append(os.path.basename(r["path"])[-42:-6])
        finally:
            os.close(fd)
        os.utime(r["path"], ns=(r["mtime_ns"], r["mtime_ns"]))
    _backup(b.root / "state_5.sqlite", run / "state_5.sqlite.pre_rollback.bak")
    conn = sqlite3.connect(str(b.root / "state_5.sqlite"))
    with conn:
        conn.executemany("UPDATE threads SET model_provider='oldco' WHERE id=?", [(i,) for i in ids])
    conn.close()
    shutil.rmtree(run)


def repair_apply_floor(b: "Bench") -> None:
    """Read as the audit does; back up both DBs; journal; repoint the moved rows (archived sessions
    stay archived: the repair unarchives only when asked), insert the orphans' rows (their line 1 parsed), delete the
    stored history of the threads whose cursor is past the end; one transaction each DB."""
    got, rows, cursors = read_home(b.root)
    run = _floor_dir(b, "repair")
    _backup(b.root / "state_5.sqlite", run / "state_5.sqlite.bak")
    _backup(b.root / "thread_history_1.sqlite", run / "thread_history_1.sqlite.bak")
    known = {r[0]: r for r in rows}
    by_name = {os.path.basename(f): f for f in got}
    moves, repoint, inserts = [], [], []
    for f, (head, _st) in got.items():
        tid = os.path.basename(f)[-42:-6]
        row = known.get(tid)
        if row is None:
            meta = json.loads(head)["payload"]
            inserts.append((tid, f, meta["cwd"], meta["model_provider"], meta["source"]))
        elif row[1] != f and by_name.get(os.path.basename(row[1])) == f:
            repoint.append((tid, row[1], f))
    sizes = {f: st.st_size for f, (_h, st) in got.items()}
    past_eof = [t for t, offset, _o in cursors if offset > sizes.get(known.get(t, (0, ""))[1], 1 << 62)]
    _journal(run / "journal.jsonl", [{"op": "move", "id": t, "from": a, "to": z} for t, a, z in moves] +
             [{"op": "row_update", "id": t, "old": a} for t, a, _z in repoint] +
             [{"op": "row_insert", "id": r[0]} for r in inserts] + [{"op": "history_reset", "id": t} for t in past_eof])
    for _t, a, z in moves:
        os.makedirs(os.path.dirname(z), exist_ok=True)
        os.rename(a, z)
    conn = sqlite3.connect(str(b.root / "state_5.sqlite"))
    with conn:
        conn.executemany("UPDATE threads SET archived=0, archived_at=NULL, rollout_path=? WHERE id=?",
                         [(z, t) for t, _a, z in moves])
        conn.executemany("UPDATE threads SET rollout_path=? WHERE id=?", [(z, t) for t, _a, z in repoint])
        conn.executemany("INSERT INTO threads (id, rollout_path, created_at, updated_at, source, model_provider, cwd, "
                         "title, sandbox_policy, approval_mode, cli_version, first_user_message) "
                         "VALUES (?,?,0,0,?,?,?,'','','','','')", [(t, f, src, prov, cwd) for t, f, cwd, prov, src in inserts])
    conn.close()
    hist = sqlite3.connect(str(b.root / "thread_history_1.sqlite"))
    with hist:
        for table in ("thread_turns", "thread_items", "thread_history_projection_state", "thread_realtime_items"):
            hist.executemany(f"DELETE FROM {table} WHERE thread_id=?", [(t,) for t in past_eof])
    hist.close()
    _journal(run / "journal.jsonl", [{"op": "end"}])


def repair_rollback_floor(b: "Bench") -> None:
    """One parse of the journal; the moves undone; both DBs backed up as they are (every write is,
    a rollback's too: the project's rule), then put back from their backups."""
    run = _floor_dir(b, "repair")
    recs = [json.loads(line) for line in (run / "journal.jsonl").read_text(encoding="utf-8").splitlines()]
    for r in reversed(recs):
        if r["op"] == "move":
            os.rename(r["to"], r["from"])
    for name in ("state_5.sqlite", "thread_history_1.sqlite"):
        _backup(b.root / name, run / f"{name}.pre_rollback.bak")
        _backup(run / f"{name}.bak", b.root / name)
    shutil.rmtree(run)


def python_start(b: "Bench") -> None:
    """`python3 -c pass`: what every run pays before its first line."""
    subprocess.run([sys.executable, "-c", "pass"], check=True)


# ---- steps, their floors and targets --------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One timed run: its arguments (given the bench), its own floor, and for an apply the step that
    undoes it (run after each of its runs, timed as a step of its own)."""
    name: str
    argv: Callable[["Bench"], List[str]]
    floor: Callable[["Bench"], None]
    read_only: bool = True
    undo: Optional["Step"] = None


@dataclass(frozen=True)
class Target:
    """At `at` threads: the step's time within `ratio` x its own floor run as a script (the floor
    function's time plus `python3 -c pass`: a script, ours or the floor's, starts an interpreter
    first; the floor's own imports are not counted), its peak memory within `mb`."""
    step: str
    at: int
    ratio: Optional[float] = None
    mb: Optional[float] = None


def _script(name: str, *args: str) -> Callable[["Bench"], List[str]]:
    return lambda b: [str(b.scripts / name), "--codex-dir", str(b.root), *args]


_EXPORTS = itertools.count()


def _export_until(b: "Bench", pct: int) -> Optional[str]:
    """The `--until` that selects the first `pct`% of the threads (generate(): one every 13 minutes
    from 2024-01-01 08:00); None for all."""
    if pct >= 100:
        return None
    n = len(select_threads(b.root))
    return (datetime(2024, 1, 1, 8, 0, 0) + timedelta(minutes=13 * n * pct // 100)).strftime("%Y-%m-%dT%H:%M")


def _export(pct: int) -> Callable[["Bench"], List[str]]:
    """session_export.py of `pct`% of the threads (archived included) to a new archive beside the home."""
    def argv(b: "Bench") -> List[str]:
        until = _export_until(b, pct)
        target = b.root.parent / f"export-{pct}-{next(_EXPORTS)}.tar.gz"
        return [str(b.scripts / "session_export.py"), "--codex-dir", str(b.root), "--all",
                *(["--until", until] if until else []), "--archived", "include", "--to", str(target),
                "--apply", "--json"]
    return argv


def _export_floor(pct: int) -> Callable[["Bench"], None]:
    """What an export must do: find the threads (one SELECT), read their rollouts, write them into a
    gzip'd tar beside the home."""
    def floor(b: "Bench") -> None:
        import tarfile
        rows = sorted(select_threads(b.root), key=lambda r: r[6])
        chosen = rows[:max(1, len(rows) * pct // 100)]
        target = _floor_dir(b, "export") / f"floor-export-{next(_EXPORTS)}.tar.gz"
        with tarfile.open(str(target), "w:gz") as tar:
            for r in chosen:
                if os.path.isfile(r[1]):
                    tar.add(r[1], arcname=os.path.basename(r[1]))
        target.unlink()
    return floor


def recovery_apply_floor(b: "Bench") -> None:
    repair_apply_floor(b)
    migration_apply_floor(b)


def recovery_rollback_floor(b: "Bench") -> None:
    """The migration's floor undone (its files), then the repair's (its DB backups: the home as before)."""
    migration_rollback_floor(b)
    repair_rollback_floor(b)


STEPS: List[Step] = [
    Step("audit", _script("session_audit.py", "--json"), audit_floor),
    Step("repair dry-run", _script("session_repair.py", "--import-orphans", "--json"), audit_floor),
    Step("migration dry-run", _script("provider_migrate.py", "--json"), migration_plan_floor),
    Step("import dry-run", lambda b: [str(b.scripts / "session_import.py"), "--from", str(b.root),
                                      "--codex-dir", str(b.dest), "--json"], import_floor),
    Step("repair apply", _script("session_repair.py", "--import-orphans", "--apply", "--json"), repair_apply_floor,
         read_only=False, undo=Step("repair rollback", _script("rollback.py", "--latest", "--apply", "--json"),
                                    repair_rollback_floor, read_only=False)),
    Step("migration apply", _script("provider_migrate.py", "--apply", "--json"), migration_apply_floor,
         read_only=False, undo=Step("migration rollback", _script("rollback.py", "--latest", "--apply", "--json"),
                                    migration_rollback_floor, read_only=False)),
    Step("export 1%", _export(1), _export_floor(1)),
    Step("export 10%", _export(10), _export_floor(10)),
    Step("export 100%", _export(100), _export_floor(100)),
    Step("recovery dry-run", _script("session_recover.py", "--json"), recovery_plan_floor),
    Step("recovery apply", _script("session_recover.py", "--apply", "--json"), recovery_apply_floor,
         read_only=False, undo=Step("recovery rollback", _script("rollback.py", "--latest", "--apply", "--json"),
                                    recovery_rollback_floor, read_only=False)),
]

TARGETS: List[Target] = [
    Target("audit", 100000, ratio=1.5),
    Target("import dry-run", 10000, ratio=3.0),
    Target("import dry-run", 100000, ratio=3.0, mb=250),
    Target("repair apply", 10000, ratio=3.0),
    Target("repair rollback", 10000, ratio=3.0),
    Target("migration apply", 10000, ratio=3.0),
    Target("migration rollback", 10000, ratio=3.0),
    Target("recovery apply", 10000, ratio=3.0),
    Target("recovery rollback", 10000, ratio=3.0),
]
def chosen_steps() -> List[Step]:
    """STEPS, or those BENCH_STEPS names (an unknown name is an error, not a silent skip)."""
    names = [n.strip() for n in os.environ.get("BENCH_STEPS", "").split(",") if n.strip()]
    unknown = sorted(set(names) - {s.name for s in STEPS})
    if unknown:
        raise SystemExit(f"bench: BENCH_STEPS names no step {unknown[0]!r} (steps: {', '.join(s.name for s in STEPS)})")
    return [s for s in STEPS if not names or s.name in names]


SMALL_HOME = 1000  # every read-only step here: within 2x (python3 -c pass + its own floor)


@dataclass
class Result:
    seconds: float
    peak_mb: float
    floor: float  # its own floor, seconds


@dataclass
class Bench:
    root: Path
    dest: Path
    scripts: Path  # the scripts as `make install` leaves them (compiled), else this checkout's
    results: Dict[str, Result] = field(default_factory=dict)


def install(base: Path) -> Path:
    """The skill installed as a user has it (`make install`: copied and byte-compiled)."""
    dest = base / "skill"
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "install", f"INSTALL_DIR={dest}", f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"bench: `make install` failed ({proc.stderr.strip()}); timing this checkout's scripts",
              file=sys.stderr)
        return SCRIPTS
    return dest / "scripts"


# Runs each script and reports (seconds, peak KB, exit code, stderr's end). A child's ru_maxrss counts
# what its parent held when it forked: the scripts are started by this small process, started
# before any home is generated or read, never by the bench itself (which holds homes and floors).
LAUNCHER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    t0 = time.perf_counter()
    proc = subprocess.Popen(json.loads(line), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    kb = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    print(json.dumps([time.perf_counter() - t0, kb, os.waitstatus_to_exitcode(status),
                      err[-2000:].decode(errors="replace")]), flush=True)
"""


class Launcher:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, args: List[str]) -> Tuple[float, float]:
        """Wall seconds and peak RSS (MB) of one script run."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps([sys.executable, *args]) + "\n")
        self.proc.stdin.flush()
        elapsed, kb, code, err = json.loads(self.proc.stdout.readline())
        if code not in (0, 1):
            raise SystemExit(f"bench: {args[0]} exited {code}: {err}")
        return elapsed, kb / 1024

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def seconds(fn: Callable[[Bench], None], b: Bench) -> float:
    t0 = time.perf_counter()
    fn(b)
    return time.perf_counter() - t0


def bench_home(root: Path, scripts: Path, launcher: Launcher, n: int) -> Dict[str, Result]:
    dest = root.parent / "new-machine" / ".codex"  # importing the whole home into an empty one
    dest.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(str(dest / "state_5.sqlite")).executescript(SCHEMA.read_text()).close()
    b = Bench(root, dest, scripts)
    med = statistics.median
    runs_n = runs_for(n)
    b.results["python3 -c pass"] = Result(med(seconds(python_start, b) for _ in range(max(RUNS, runs_n))), 0.0, 0.0)
    shared = med(seconds(shared_floor, b) for _ in range(runs_n))
    b.results["floor"] = Result(shared, 0.0, shared)
    for step in chosen_steps():
        print(f"  {step.name} ...", file=sys.stderr, flush=True)
        runs: Dict[str, List[Tuple[float, float]]] = {}
        floors: Dict[str, List[float]] = {}
        chain = [step] + ([step.undo] if step.undo else [])
        for _ in range(runs_n):  # interleaved: the script, its floor (an apply and its undo, in turn)
            for s in chain:
                runs.setdefault(s.name, []).append(launcher.run(s.argv(b)))
            for s in chain:
                floors.setdefault(s.name, []).append(seconds(s.floor, b))
        for s in chain:
            b.results[s.name] = Result(med(r[0] for r in runs[s.name]), max(r[1] for r in runs[s.name]),
                                       med(floors[s.name]))
    return b.results


def misses(results: Dict[int, Dict[str, Result]]) -> List[str]:
    """One line per target missed at a size that was measured."""
    out = []
    for t in TARGETS:
        r = results.get(t.at, {}).get(t.step)
        if r is None:
            continue
        start = results[t.at]["python3 -c pass"].seconds if "python3 -c pass" in results[t.at] else 0.0
        if t.ratio is not None and r.seconds > t.ratio * (r.floor + start):
            out.append(f"bench: {t.step} at {t.at:,} threads: {r.seconds:.2f} s is {r.seconds / (r.floor + start):.1f}x "
                       f"its floor as a script ({r.floor:.2f} s + python3 -c pass {start:.2f} s), over the "
                       f"{t.ratio:g}x target")
        if t.mb is not None and r.peak_mb > t.mb:
            out.append(f"bench: {t.step} at {t.at:,} threads: peak {r.peak_mb:.0f} MB, over the {t.mb:g} MB target")
    small = results.get(SMALL_HOME, {})
    start = small.get("python3 -c pass")
    for s in STEPS:
        r = small.get(s.name)
        if start and r and s.read_only and r.seconds > 2 * (start.seconds + r.floor):
            out.append(f"bench: {s.name} at {SMALL_HOME:,} threads: {r.seconds:.2f} s, over 2x (python3 -c pass "
                       f"{start.seconds:.2f} s + its floor {r.floor:.2f} s)")
    return out


def main() -> int:
    chosen_steps()  # a wrong BENCH_STEPS fails before any home is made
    cap = int(os.environ.get("BENCH_MAX", "100000"))
    sizes = [n for n in SIZES if n <= cap] or [cap]
    base = Path(os.environ.get("BENCH_DIR") or (REPO / "bench" / "homes"))
    results: Dict[int, Dict[str, Result]] = {}
    mixes: Dict[int, Dict[str, int]] = {}
    sizes_mb: Dict[int, float] = {}
    launcher = Launcher()
    scripts = install(base)
    for n in sizes:
        root = base / f"home-{n}" / ".codex"
        shutil.rmtree(root.parent, ignore_errors=True)
        t0 = time.perf_counter()
        print(f"generating {n} threads ...", file=sys.stderr, flush=True)
        mixes[n] = generate(root, n)
        sizes_mb[n] = sum(f.stat().st_size for f in root.rglob("*.jsonl")) / 1e6
        print(f"  {sizes_mb[n]:.0f} MB in {time.perf_counter() - t0:.0f} s; timing ...", file=sys.stderr, flush=True)
        try:
            results[n] = bench_home(root, scripts, launcher, n)
        finally:
            shutil.rmtree(root.parent, ignore_errors=True)
    launcher.close()
    if scripts != SCRIPTS:
        shutil.rmtree(scripts.parent, ignore_errors=True)
    missed = misses(results)
    table = render(results, mixes, sizes_mb, missed)
    print(table)
    out = REPO / "bench" / "results.md"
    out.write_text(table + "\n")
    print(f"\n(written to {out})", file=sys.stderr)
    for line in missed:
        print(line, file=sys.stderr)
    return 1 if missed else 0


def render(results: Dict[int, Dict[str, Result]], mixes: Dict[int, Dict[str, int]], sizes_mb: Dict[int, float],
           missed: List[str]) -> str:
    sizes = sorted(results)
    lines = [f"# make bench ({datetime.now().strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, "
             f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, median of {RUNS} runs"
             + (f", {RUNS_LARGE} at {LARGE:,} threads" if LARGE in sizes and RUNS_LARGE != RUNS else "") + ")", ""]
    for n in sizes:
        lines.append(f"- {n:,} threads, {sizes_mb[n]:,.0f} MB of rollouts; problems: "
                     + ", ".join(f"{k} {v:,}" for k, v in mixes[n].items()))
    lines += ["", "Each cell: the step's time, its own floor and the ratio to it (then to the floor as a script: "
              "plus python3 -c pass, which TARGETS use), the ratio to the shared floor, peak memory.", "",
              "| step | " + " | ".join(f"{n:,} threads" for n in sizes) + " | growth per 10x |",
              "|---|" + "---|" * len(sizes) + "---|"]
    for step in results[sizes[0]]:
        cells = []
        for n in sizes:
            r, shared = results[n][step], results[n]["floor"].seconds
            start = results[n]["python3 -c pass"].seconds
            if step in ("floor", "python3 -c pass"):
                cells.append(f"{r.seconds:.2f} s")
            else:
                cells.append(f"{r.seconds:.2f} s; own floor {r.floor:.2f} s ({r.seconds / r.floor:.1f}x, "
                             f"{r.seconds / (r.floor + start):.1f}x as a script); {r.seconds / shared:.1f}x shared; "
                             f"{r.peak_mb:.0f} MB")
        growth = [results[b][step].seconds / results[a][step].seconds for a, b in zip(sizes, sizes[1:])]
        lines.append(f"| {step} | " + " | ".join(cells) + " | " + (", ".join(f"{g:.1f}x" for g in growth) or "-") + " |")
    lines += ["", "Targets: " + ("every target measured here is met." if not missed else f"{len(missed)} missed:")]
    lines += [f"- {m[len('bench: '):]}" for m in missed]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
