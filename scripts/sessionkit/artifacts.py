"""Run folders under `<home>/.tmp/session-migration/`: DB backups, manifests, journals (all 0600)."""
from __future__ import annotations

import base64
import errno
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List

from . import UserError
from .paths import resolves_inside
from .statedb import open_readonly

PRIVATE = 0o600


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def private_file(path: Path, data: bytes = b"") -> None:
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    try:
        if data:
            os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_db(db: Path, dest: Path) -> Path:
    """Copy a live DB (WAL included) through the SQLite backup API; check the copy; make it 0600."""
    private_file(dest)
    src = open_readonly(db)
    dst = sqlite3.connect(str(dest))
    try:
        src.backup(dst)
        ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    os.chmod(str(dest), PRIVATE)
    if ok != "ok":
        raise UserError(f"the backup {dest} failed its integrity check ({ok}); nothing was changed")
    return dest


class Journal:
    """Append-only JSON lines, fsynced after each record: written before every change it names."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)

    def write(self, record: Dict[str, Any]) -> None:
        record = {"ts": datetime.now().isoformat(timespec="seconds"), **record}
        if record.get("op") == "begin":
            record["started_ns"] = time.time_ns()
        os.write(self.fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape"))
        os.fsync(self.fd)
        fault_point(record.get("op", ""))

    def close(self) -> None:
        os.close(self.fd)


def read_journal(path: Path) -> List[Dict[str, Any]]:
    """Every complete record; a torn last line (killed mid-write) is ignored."""
    out: List[Dict[str, Any]] = []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read journal {path}: {exc.strerror}") from None
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8", "surrogateescape"))
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def durable() -> None:
    """Flush rewritten rollouts to disk once, before the DB commit that records them."""
    if hasattr(os, "sync"):
        os.sync()


_FAULT_COUNT = [0]


def fault_point(label: str) -> None:
    """Test hooks, counted over journal records: SESSION_MIGRATION_KILL_AT=N kills the process
    (SIGKILL) right after the Nth record; SESSION_MIGRATION_FAIL_AT=N fails there as a full disk."""
    kill = os.environ.get("SESSION_MIGRATION_KILL_AT")
    fail = os.environ.get("SESSION_MIGRATION_FAIL_AT")
    if not (kill or fail):
        return
    _FAULT_COUNT[0] += 1
    if str(_FAULT_COUNT[0]) == kill:
        os.kill(os.getpid(), 9)
    if str(_FAULT_COUNT[0]) == fail:
        raise OSError(errno.ENOSPC, f"No space left on device (test fault after {label!r})")


@dataclass
class RunDir:
    path: Path
    kind: str
    stamp: str

    @property
    def journal_path(self) -> Path:
        return self.path / "journal.jsonl"


def new_run_dir(artifacts_root: Path, kind: str) -> RunDir:
    artifacts_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    for n in range(1000):
        name = f"{kind}_{stamp}" + (f"_{n}" if n else "")
        path = artifacts_root / name
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return RunDir(path=path, kind=kind, stamp=stamp)
    raise UserError(f"cannot create a run folder under {artifacts_root}")


def _started_ns(run: Path) -> int:
    """When a run began, from its journal's first record (a rollback appends later: not its mtime)."""
    try:
        with open(run / "journal.jsonl", "rb") as fh:
            first = json.loads(fh.readline() or b"{}")
        return int(first.get("started_ns") or 0)
    except (OSError, ValueError, TypeError):
        return 0


def list_runs(artifacts_root: Path) -> List[Path]:
    """Recorded runs, oldest first."""
    if not artifacts_root.is_dir():
        return []
    runs = [p for p in artifacts_root.iterdir() if p.is_dir() and (p / "journal.jsonl").is_file()]
    return sorted(runs, key=lambda p: (_started_ns(p), p.name))


def check_inside(home_root: Path, *paths: str) -> None:
    """Refuse a journal or manifest that names anything outside the home."""
    for p in paths:
        if not p or "\x00" in p or not resolves_inside(Path(p), home_root):
            raise UserError(f"refusing: the run record names a path outside the Codex home: {p!r}")
