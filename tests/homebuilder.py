"""Build Codex homes with the real 0.169 schema and rollout layout, for unit tests and the bench.

The schema is the one the real Codex CLI 0.169.0 wrote (tests/data/state_5_schema.sql); line 1
of each rollout is a compact `session_meta` with ~20 KB of base instructions, as Codex writes it.
"""
from __future__ import annotations

import json
import os
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import List, Optional

SCHEMA = Path(__file__).resolve().parent / "data" / "state_5_schema.sql"
OLD_THREADS_SCHEMA = """CREATE TABLE threads (
    id TEXT PRIMARY KEY, rollout_path TEXT NOT NULL, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, source TEXT NOT NULL, model_provider TEXT NOT NULL,
    cwd TEXT NOT NULL, title TEXT NOT NULL, sandbox_policy TEXT NOT NULL,
    approval_mode TEXT NOT NULL, tokens_used INTEGER NOT NULL DEFAULT 0,
    has_user_event INTEGER NOT NULL DEFAULT 0, archived INTEGER NOT NULL DEFAULT 0,
    archived_at INTEGER, git_sha TEXT, git_branch TEXT, git_origin_url TEXT)"""
BASE_INSTRUCTIONS = ("You are a coding agent running in the Codex CLI. " * 410)[:20500]
EPOCH = datetime(2025, 3, 1, 9, 30, 0)


def connect(db: Path) -> sqlite3.Connection:
    """A connection of the builder: no fsync at each commit (a test's home need not survive a power
    cut; the file's bytes are the same), which made building a home mostly waiting for the disk."""
    conn = sqlite3.connect(str(db))
    conn.execute("PRAGMA synchronous=OFF")
    return conn


def compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Thread:
    id: str
    path: Path  # where the rollout file is (or would be)
    provider: str
    cwd: str
    source: str
    archived: bool
    created: datetime


class HomeBuilder:
    def __init__(self, root: Path, provider: str = "openai", old_schema: bool = False,
                 providers: Optional[List[str]] = None, wal: bool = False) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.threads: List[Thread] = []
        self.write_config(provider, providers if providers is not None else [])
        self.db_path = root / "state_5.sqlite"
        conn = connect(self.db_path)
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        if old_schema:
            conn.execute(OLD_THREADS_SCHEMA)
        else:
            conn.executescript(SCHEMA.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO backfill_state VALUES (1,'complete',NULL,0,0)")
        conn.commit()
        conn.close()
        self.old_schema = old_schema

    def write_config(self, provider: str, providers: List[str], extra: str = "") -> None:
        lines = [f'model_provider = "{provider}"', extra]
        for p in providers:
            lines += [f"[model_providers.{p}]", f'name = "{p}"', 'base_url = "http://127.0.0.1:9/v1"',
                      'wire_api = "responses"', ""]
        (self.root / "config.toml").write_text("\n".join(lines), encoding="utf-8")

    def new_id(self) -> str:
        self.n += 1
        return str(uuid.UUID(int=(0x0195_0000_0000_7000_8000_0000_0000_0000 + self.n)))

    def rollout_lines(self, tid: str, created: datetime, provider: Optional[str], cwd: str,
                      source: str, prompt: str, turns: int = 1) -> List[str]:
        ts = created.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        payload = {"session_id": tid, "id": tid, "timestamp": ts, "cwd": cwd,
                   "originator": "codex_cli_rs", "cli_version": "0.169.0",
                   "source": json.loads(source) if source.startswith("{") else source}
        if provider is not None:
            payload["model_provider"] = provider
        payload["base_instructions"] = {"text": BASE_INSTRUCTIONS}
        payload["history_mode"] = "paginated"
        lines = [compact({"timestamp": ts, "ordinal": 0, "type": "session_meta", "payload": payload})]
        o = 1
        for t in range(turns):
            turn = f"turn-{tid[-6:]}-{t}"
            lines.append(compact({"timestamp": ts, "ordinal": o, "type": "turn_context", "payload": {
                "turn_id": turn, "cwd": cwd, "approval_policy": "on-request", "model": "gpt-5"}}))
            lines.append(compact({"timestamp": ts, "ordinal": o + 1, "type": "event_msg", "payload": {
                "type": "thread_settings_applied", "thread_id": tid,
                "thread_settings": {"model": "gpt-5", "model_provider_id": provider or "openai"}}}))
            lines.append(compact({"timestamp": ts, "ordinal": o + 2, "type": "response_item", "payload": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"{prompt} (turn {t})"}]}}))
            lines.append(compact({"timestamp": ts, "ordinal": o + 3, "type": "response_item", "payload": {
                "type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "Done. " * 200}]}}))
            o += 4
        return lines

    def add(self, provider: str = "openai", cwd: str = "/work/proj", source: str = "cli",
            archived: bool = False, preview: str = "fix the tests", write_file: bool = True,
            write_row: bool = True, row_path: Optional[str] = None, meta_provider: object = "same",
            mtime_age_s: int = 86400, turns: int = 1) -> Thread:
        """One thread: its rollout file (sessions/ or archived_sessions/) and its DB row."""
        tid = self.new_id()
        created = EPOCH + timedelta(minutes=7 * self.n)
        name = f"rollout-{created.strftime('%Y-%m-%dT%H-%M-%S')}-{tid}.jsonl"
        path = (self.root / "archived_sessions" / name) if archived else \
            (self.root / "sessions" / created.strftime("%Y/%m/%d") / name)
        line1_provider = provider if meta_provider == "same" else meta_provider
        if write_file:
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = self.rollout_lines(tid, created, line1_provider, cwd, source, preview, turns)  # type: ignore[arg-type]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            stamp = created.timestamp() + 60
            os.utime(path, (stamp, stamp))
        if write_row:
            self.insert_row(tid, row_path or str(path), created, provider, cwd, source, archived, preview)
        th = Thread(tid, path, provider, cwd, source, archived, created)
        self.threads.append(th)
        return th

    def insert_row(self, tid: str, rollout_path: str, created: datetime, provider: str, cwd: str,
                   source: str, archived: bool, preview: str) -> None:
        secs = int(created.timestamp())
        conn = connect(self.db_path)
        cols = {"id": tid, "rollout_path": rollout_path, "created_at": secs, "updated_at": secs + 60,
                "source": source, "model_provider": provider, "cwd": cwd, "title": preview,
                "sandbox_policy": '{"type":"read-only"}', "approval_mode": "on-request",
                "tokens_used": 15, "has_user_event": 0, "archived": int(archived),
                "archived_at": secs + 120 if archived else None}
        if not self.old_schema:
            cols.update({"cli_version": "0.169.0", "first_user_message": preview, "preview": preview,
                         "model": "gpt-5", "history_mode": "paginated", "thread_source": "user"})
        conn.execute(f"INSERT INTO threads ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     list(cols.values()))
        conn.commit()
        conn.close()

    def sql(self, statement: str, params: tuple = ()) -> list:
        conn = connect(self.db_path)
        try:
            with conn:
                return conn.execute(statement, params).fetchall()
        finally:
            conn.close()


def build_broken_home(root: Path) -> HomeBuilder:
    """A home with one or more of every problem the audit reports (the demo and the unit tests)."""
    hb = HomeBuilder(root, provider="openai", providers=["openai-proxy"])
    for i in range(4):
        hb.add(preview=f"healthy session {i}")
    for i in range(3):
        hb.add(provider="oldprov", cwd="/work/other", preview=f"before the key switch {i}")
    hb.add(source="exec", preview="codex exec run")
    hb.add(archived=True, preview="archived one")
    hb.add(archived=True, preview="archived two")
    missing = hb.add(preview="file deleted")
    missing.path.unlink()
    hb.add(write_row=False, preview="orphan, old")  # importable orphan
    hb.add(write_row=False, preview="orphan, in use", mtime_age_s=0)
    recent = hb.threads[-1].path
    os.utime(recent, None)  # modified just now: ACTIVE_ORPHAN
    hb.add(preview="")  # empty preview: hidden
    hb.add(meta_provider="oldprov", preview="db says openai, line 1 says oldprov")
    moved = hb.add(preview="row from the old machine")
    old = "/home/olduser/.codex/" + str(moved.path.relative_to(root))
    hb.sql("UPDATE threads SET rollout_path=? WHERE id=?", (old, moved.id))
    bad = hb.add(preview="corrupt line 1")
    data = bad.path.read_bytes()
    bad.path.write_bytes(data[:500] + data[data.index(b"\n"):])
    (root / "sessions" / "2025" / "03" / "01" / "notes-from-user.jsonl").write_text("{}\n")
    zst = root / "sessions" / "2025" / "03" / "01" / \
        "rollout-2025-03-01T08-00-00-0195aaaa-0000-7000-8000-000000000001.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd")
    hb.sql("UPDATE threads SET source='vscode' WHERE preview LIKE 'healthy session 3'")
    return hb
