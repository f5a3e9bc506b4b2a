#!/usr/bin/env python3
"""`make bench`: time every script on generated homes of 1,000 / 10,000 / 100,000 threads.

Standard library only. Each home has the real 0.169 schema and layout (line 1 ~20 KB, files of
tens of KB) and a mix of problems. Every time is the median of several runs, printed beside the
floor measured on the same home in the same run (one scandir walk, line 1 of every rollout, one
SELECT), with peak memory per script. BENCH_MAX caps the largest home; homes are removed after.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
SCHEMA = REPO / "tests" / "data" / "state_5_schema.sql"
SIZES = [1000, 10000, 100000]
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
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


def floor(root: Path) -> float:
    """The least any audit must do: walk both folders, read line 1 of each rollout, one SELECT."""
    t0 = time.perf_counter()
    stack = [root / "sessions", root / "archived_sessions"]
    files = []
    while stack:
        for e in os.scandir(stack.pop()):
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
            elif e.name.endswith(".jsonl"):
                files.append(e.path)
    for f in files:
        with open(f, "rb") as fh:
            fh.readline()
    conn = sqlite3.connect(f"file:{root / 'state_5.sqlite'}?mode=ro", uri=True)
    conn.execute("SELECT id, rollout_path, archived, model_provider, cwd, source, created_at, updated_at, "
                 "archived_at, title, preview, first_user_message, history_mode, updated_at_ms FROM threads").fetchall()
    conn.close()
    return time.perf_counter() - t0


def timed(args: List[str]) -> Tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one script run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"bench: {args[0]} exited {code}: {err}")
    peak = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 1024 / 1024
    return elapsed, peak


def median_run(args: List[str], runs: int = RUNS) -> Tuple[float, float]:
    results = [timed(args) for _ in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results)


def bench_home(root: Path, n: int) -> Dict[str, Tuple[float, float]]:
    home = ["--codex-dir", str(root)]
    s = lambda name: str(SCRIPTS / name)  # noqa: E731
    out: Dict[str, Tuple[float, float]] = {}
    out["floor"] = (statistics.median(floor(root) for _ in range(RUNS)), 0.0)
    out["audit"] = median_run([s("session_audit.py"), *home, "--json"])
    out["repair dry-run"] = median_run([s("session_repair.py"), *home, "--import-orphans", "--json"])
    out["migration dry-run"] = median_run([s("provider_migrate.py"), *home, "--json"])
    dest = root.parent / "new-machine" / ".codex"  # importing the whole home into an empty one
    dest.mkdir(parents=True, exist_ok=True)
    sqlite3.connect(str(dest / "state_5.sqlite")).executescript(SCHEMA.read_text()).close()
    out["import dry-run"] = median_run([s("session_import.py"), "--from", str(root), "--codex-dir", str(dest), "--json"])
    pairs: Dict[str, List[Tuple[float, float]]] = {"repair apply": [], "migration apply": [], "rollback": []}
    for _ in range(RUNS):
        pairs["repair apply"].append(timed([s("session_repair.py"), *home, "--import-orphans", "--apply", "--json"]))
        pairs["rollback"].append(timed([s("rollback.py"), *home, "--latest", "--apply", "--json"]))
        pairs["migration apply"].append(timed([s("provider_migrate.py"), *home, "--apply", "--json"]))
        pairs["rollback"].append(timed([s("rollback.py"), *home, "--latest", "--apply", "--json"]))
    for k, v in pairs.items():
        out[k] = (statistics.median(x[0] for x in v), max(x[1] for x in v))
    out.update(bench_export_and_recover(root, n))
    return out


def bench_export_and_recover(root: Path, n: int) -> Dict[str, Tuple[float, float]]:
    """session_export.py of 1%, 10% and 100% of the threads (by start time, archived included) to
    an archive beside the home; session_recover.py's dry-run, and its apply (each undone)."""
    home = ["--codex-dir", str(root)]
    s = lambda name: str(SCRIPTS / name)  # noqa: E731
    out: Dict[str, Tuple[float, float]] = {}
    start = datetime(2024, 1, 1, 8, 0, 0)  # generate()'s first thread; one every 13 minutes
    for pct in (1, 10, 100):
        until = (start + timedelta(minutes=13 * n * pct // 100)).strftime("%Y-%m-%dT%H:%M")
        pick = ["--all"] if pct == 100 else ["--all", "--until", until]
        runs = []
        for k in range(RUNS):
            target = root.parent / f"export-{pct}-{k}.tar.gz"
            runs.append(timed([s("session_export.py"), *home, *pick, "--archived", "include", "--to", str(target),
                               "--apply", "--json"]))
            target.unlink()
        out[f"export {pct}%"] = (statistics.median(x[0] for x in runs), max(x[1] for x in runs))
    out["recovery dry-run"] = median_run([s("session_recover.py"), *home, "--json"])
    applied: List[Tuple[float, float]] = []
    for _ in range(RUNS):
        applied.append(timed([s("session_recover.py"), *home, "--apply", "--json"]))
        timed([s("rollback.py"), *home, "--latest", "--apply", "--json"])
    out["recovery apply"] = (statistics.median(x[0] for x in applied), max(x[1] for x in applied))
    return out


def main() -> int:
    cap = int(os.environ.get("BENCH_MAX", "100000"))
    sizes = [n for n in SIZES if n <= cap] or [cap]
    base = Path(os.environ.get("BENCH_DIR") or (REPO / "bench" / "homes"))
    results: Dict[int, Dict[str, Tuple[float, float]]] = {}
    mixes: Dict[int, Dict[str, int]] = {}
    sizes_mb: Dict[int, float] = {}
    for n in sizes:
        root = base / f"home-{n}" / ".codex"
        shutil.rmtree(root.parent, ignore_errors=True)
        t0 = time.perf_counter()
        print(f"generating {n} threads ...", file=sys.stderr, flush=True)
        mixes[n] = generate(root, n)
        sizes_mb[n] = sum(f.stat().st_size for f in root.rglob("*.jsonl")) / 1e6
        print(f"  {sizes_mb[n]:.0f} MB in {time.perf_counter() - t0:.0f} s; timing ...", file=sys.stderr, flush=True)
        try:
            results[n] = bench_home(root, n)
        finally:
            shutil.rmtree(root.parent, ignore_errors=True)
    table = render(results, mixes, sizes_mb)
    print(table)
    out = REPO / "bench" / "results.md"
    out.write_text(table + "\n")
    print(f"\n(written to {out})", file=sys.stderr)
    return 0


def render(results, mixes, sizes_mb) -> str:
    sizes = sorted(results)
    lines = [f"# make bench ({datetime.now().strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}, "
             f"{os.cpu_count()} cores, median of {RUNS} runs)", ""]
    for n in sizes:
        lines.append(f"- {n:,} threads, {sizes_mb[n]:,.0f} MB of rollouts; problems: "
                     + ", ".join(f"{k} {v:,}" for k, v in mixes[n].items()))
    lines += ["", "| step | " + " | ".join(f"{n:,} threads: s (x floor), peak MB" for n in sizes) + " | growth per 10x |",
              "|---|" + "---|" * len(sizes) + "---|"]
    for step in results[sizes[0]]:
        cells = []
        for n in sizes:
            t, mem = results[n][step]
            fl = results[n]["floor"][0]
            cells.append(f"{t:.2f} s" if step == "floor" else f"{t:.2f} s ({t / fl:.1f}x), {mem:.0f} MB")
        growth = [results[b][step][0] / results[a][step][0] for a, b in zip(sizes, sizes[1:])]
        lines.append(f"| {step} | " + " | ".join(cells) + " | " + (", ".join(f"{g:.1f}x" for g in growth) or "-") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
