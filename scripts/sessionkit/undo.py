"""Undo a run from its journal: only what still holds the value the run wrote; idempotent."""
from __future__ import annotations

import csv
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import UserError
from .commands import home_command
from .artifacts import Journal, backup_db, check_inside, list_runs, read_journal
from .history_offsets import read_offsets, set_offsets, shifted
from .home import CodexHome
from .line1 import Line1Edit, apply_edit, state_of
from .paths import safe_str
from .statedb import open_readonly, transaction


@dataclass
class UndoPlan:
    run_dir: Path
    kind: str
    complete: bool
    rows: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)  # db -> changes to revert
    deletes: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)  # db -> inserted rows to remove
    offsets: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    line1: List[Dict[str, Any]] = field(default_factory=list)
    moves: List[Dict[str, Any]] = field(default_factory=list)
    already: int = 0
    conflicts: List[str] = field(default_factory=list)

    @property
    def actions(self) -> int:
        return sum(len(v) for v in self.rows.values()) + sum(len(v) for v in self.offsets.values()) \
            + sum(len(v) for v in self.deletes.values()) + len(self.line1) + len(self.moves)


def find_run(home: CodexHome, manifest: Optional[str]) -> Path:
    """The run to undo: the latest recorded, or the one a manifest names; for a manifest CSV with no journal beside it (the original design's
    `provider_migration_<ts>.csv`), that CSV itself."""
    if manifest:
        p = Path(manifest).expanduser()
        if not p.exists():
            raise UserError(f"no such manifest or run folder: {p}")
        if p.is_dir():
            return p
        return p.parent if (p.parent / "journal.jsonl").is_file() else p
    runs = list_runs(home.artifacts_dir)
    if not runs:
        raise UserError(f"no runs recorded under {home.artifacts_dir}")
    return runs[-1]


def describe_runs(home: CodexHome) -> List[Dict[str, Any]]:
    out = []
    for run in list_runs(home.artifacts_dir):
        recs = read_journal(run / "journal.jsonl")
        begin = next((r for r in recs if r.get("op") == "begin"), {})
        out.append({"run_dir": safe_str(run), "kind": begin.get("kind", "?"), "started": begin.get("ts"),
                    "changes": begin.get("changes"),
                    "status": "rolled back" if any(r.get("op") == "rolled_back" for r in recs)
                    else "complete" if any(r.get("op") == "end" for r in recs) else "incomplete (killed?)",
                    "manifest": next((r.get("path") for r in recs if r.get("op") == "manifest"), None)})
    return out


def _row_values(conn: sqlite3.Connection, tid: str, cols: List[str]) -> Optional[Dict[str, Any]]:
    row = conn.execute("SELECT " + ", ".join(f'"{c}"' for c in cols) + " FROM threads WHERE id=?",
                       (tid,)).fetchone()
    return None if row is None else dict(zip(cols, row))


def plan_undo(home: CodexHome, run_dir: Path) -> UndoPlan:
    if run_dir.is_file():
        return _plan_from_csv(home, run_dir)
    journal = run_dir / "journal.jsonl"
    if not journal.is_file():
        raise UserError(f"{run_dir} holds no journal.jsonl: not a run folder of these scripts")
    recs = read_journal(journal)
    begin = next((r for r in recs if r.get("op") == "begin"), None)
    if begin is None:
        raise UserError(f"{journal} has no begin record: not a session-migration journal")
    if os.path.realpath(str(begin.get("codex_dir", ""))) != os.path.realpath(str(home.root)):
        raise UserError(f"{journal} belongs to the Codex home {begin.get('codex_dir')!r}, not {home.root}")
    plan = UndoPlan(run_dir, str(begin.get("kind")), any(r.get("op") == "end" for r in recs))
    for rec in recs:
        op = rec.get("op")
        if op not in ("rows", "insert", "offsets", "line1", "move", "manifest"):
            continue
        nested = rec.get("entries") if op == "line1" else rec.get("moves") if op == "move" else []
        if not isinstance(nested, list):
            raise UserError(f"{journal}: a {op} record is malformed")
        for item in [rec] + nested:
            if not isinstance(item, dict):
                raise UserError(f"{journal}: a {op} record is malformed")
            names = [str(item.get(k)) for k in ("db", "path", "src", "dst", "backup") if item.get(k) is not None]
            names += [str(d) for d in item.get("made_dirs") or []]
            check_inside(home.root, *names)
    for rec in recs:
        op = rec.get("op")
        if op == "rows":
            _plan_rows(plan, Path(rec["db"]), rec["changes"])
        elif op == "insert":
            _plan_deletes(plan, Path(rec["db"]), rec["rows"])
        elif op == "offsets":
            _plan_offsets(plan, Path(rec["db"]), rec["entries"])
        elif op == "line1":
            _plan_line1(plan, rec)
        elif op == "move":
            _plan_move(plan, rec)
    plan.line1.reverse()
    plan.moves.reverse()
    return plan


def _plan_from_csv(home: CodexHome, manifest: Path) -> UndoPlan:
    """A bare manifest CSV (`id,old_provider,new_provider,ts`, as the original design wrote):
    the DB rows only, each back to old_provider where it still holds new_provider."""
    check_inside(home.root, str(manifest))
    plan = UndoPlan(manifest.parent, "provider_migration (manifest only)", True)
    changes = []
    bad = UserError(f"{manifest}: not a provider migration manifest (id,old_provider,new_provider,ts)")
    try:
        with open(manifest, newline="", encoding="utf-8") as fh:
            for rec in csv.DictReader(fh):
                if not rec.get("id") or rec.get("old_provider") is None or rec.get("new_provider") is None:
                    raise bad
                changes.append({"id": rec["id"], "old": {"model_provider": rec["old_provider"]},
                                "new": {"model_provider": rec["new_provider"]}})
    except (UnicodeDecodeError, csv.Error):
        raise bad from None
    _plan_rows(plan, home.state_db.path, changes)
    return plan


def _plan_rows(plan: UndoPlan, db: Path, changes: List[Dict[str, Any]]) -> None:
    conn = open_readonly(db)
    try:
        for ch in changes:
            cols = list(ch["old"])
            cur = _row_values(conn, ch["id"], cols)
            if cur is None:
                plan.conflicts.append(f"{ch['id']}: its row is gone; left alone")
            elif cur == ch["old"]:
                plan.already += 1
            elif cur == ch["new"]:
                plan.rows.setdefault(str(db), []).append(ch)
            else:
                plan.conflicts.append(f"{ch['id']}: row changed since the run ({cur}); left alone")
    finally:
        conn.close()


def _plan_deletes(plan: UndoPlan, db: Path, rows: List[Dict[str, Any]]) -> None:
    conn = open_readonly(db)
    try:
        for ins in rows:
            keys = [k for k in ("rollout_path", "model_provider", "cwd") if k in ins]
            cur = _row_values(conn, ins["id"], keys)
            if cur is None:
                plan.already += 1
            elif cur == {k: ins[k] for k in keys}:
                plan.deletes.setdefault(str(db), []).append(ins)
            else:
                plan.conflicts.append(f"{ins['id']}: the imported row changed since the run; left alone")
    finally:
        conn.close()


def _plan_offsets(plan: UndoPlan, db: Path, entries: List[Dict[str, Any]]) -> None:
    conn = open_readonly(db)
    try:
        for e in entries:
            turns, proj = read_offsets(conn, e["thread_id"])
            cur = [[list(t) for t in turns], proj]
            old = [[list(t) for t in e["old"][0]], e["old"][1]]
            new = [[list(t) for t in e["new"][0]], e["new"][1]]
            if cur == old:
                plan.already += 1
            elif cur[0][:len(new[0])] == new[0]:
                plan.offsets.setdefault(str(db), []).append(e)
            else:
                plan.conflicts.append(f"{e['thread_id']}: history offsets changed since the run; left alone")
    finally:
        conn.close()


def _plan_line1(plan: UndoPlan, rec: Dict[str, Any]) -> None:
    for entry in rec.get("entries", []):
        path = Path(entry["path"])
        edit = Line1Edit.from_record(entry)
        state = state_of(path, edit) if path.is_file() else "changed"
        if state == "old":
            plan.already += 1
        elif state in ("new", "torn"):
            plan.line1.append({"path": path, "edit": edit, "state": state, "mtime_ns": int(entry["mtime_ns"]),
                               "thread_id": entry.get("thread_id")})
        else:
            plan.conflicts.append(f"{path}: line 1 changed since the run (or the file is gone); left alone")


def _plan_move(plan: UndoPlan, rec: Dict[str, Any]) -> None:
    for move in rec.get("moves", []):
        src, dst = Path(move["src"]), Path(move["dst"])
        if src.exists() and not dst.exists():
            plan.already += 1
        elif dst.is_file() and not src.exists():
            plan.moves.append(move)
        else:
            plan.conflicts.append(f"{dst}: cannot move back to {src} (both or neither exist); left alone")


def apply_undo(home: CodexHome, plan: UndoPlan) -> Dict[str, Any]:
    """DB rows first (one transaction per DB, after a backup), then line 1s, then file moves."""
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    backups = []
    journal = Journal(plan.run_dir / "journal.jsonl") if (plan.run_dir / "journal.jsonl").exists() else None
    for db in sorted(set(plan.rows) | set(plan.offsets) | set(plan.deletes)):
        dest = plan.run_dir / f"{Path(db).name}.pre_rollback_{stamp}.bak"
        n = 0
        while dest.exists():
            n += 1
            dest = plan.run_dir / f"{Path(db).name}.pre_rollback_{stamp}_{n}.bak"
        backups.append(str(backup_db(Path(db), dest)))
    reverted = 0
    for db in sorted(set(plan.rows) | set(plan.deletes)):
        reverted += _revert_rows(Path(db), plan.rows.get(db, []), plan.deletes.get(db, []))
    for db, entries in plan.offsets.items():
        with transaction(Path(db)) as conn:
            for e in entries:  # shift back everything past the grown line, turns added since included
                delta, boundary = int(e["delta"]), int(e["boundary"]) + int(e["delta"])
                turns, proj = read_offsets(conn, e["thread_id"])
                set_offsets(conn, e["thread_id"],
                            [(t, shifted(o, boundary, -delta), shifted(x, boundary, -delta)) for t, o, x in turns],
                            shifted(proj, boundary, -delta) if proj >= 0 else proj)
    for item in plan.line1:
        edit: Line1Edit = item["edit"]
        if item["state"] == "torn":  # a write cut short: put the old span back over whatever is there
            edit = Line1Edit(edit.offset, edit.old_span, edit.old_span, edit.old_len, edit.old_sha, edit.old_sha)
            apply_edit(item["path"], edit, item["mtime_ns"])
        else:
            apply_edit(item["path"], edit.inverse(), item["mtime_ns"])
    for rec in plan.moves:
        src, dst = Path(rec["src"]), Path(rec["dst"])
        src.parent.mkdir(parents=True, exist_ok=True)
        os.rename(str(dst), str(src)) if _same_fs(dst, src.parent) else shutil.move(str(dst), str(src))
        mtime = rec.get("mtime_ns")
        if mtime is not None:
            os.utime(str(src), ns=(int(mtime), int(mtime)))
        for made in reversed(rec.get("made_dirs") or []):
            try:
                os.rmdir(made)  # only when empty: a folder the run created
            except OSError:
                break
    if journal is not None:
        journal.write({"op": "rolled_back", "rows_reverted": reverted, "line1_restored": len(plan.line1),
                       "files_moved_back": len(plan.moves), "conflicts": len(plan.conflicts)})
        journal.close()
    return {"db_backups": backups, "rows_reverted": reverted, "line1_restored": len(plan.line1),
            "files_moved_back": len(plan.moves)}


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return os.stat(str(a)).st_dev == os.stat(str(b)).st_dev
    except OSError:
        return False


def _revert_rows(db: Path, changes: List[Dict[str, Any]], deletes: List[Dict[str, Any]]) -> int:
    n = 0
    with transaction(db) as conn:
        for ins in deletes:
            keys = [k for k in ("rollout_path", "model_provider", "cwd") if k in ins]
            if _row_values(conn, ins["id"], keys) == {k: ins[k] for k in keys}:
                n += conn.execute("DELETE FROM threads WHERE id=?", (ins["id"],)).rowcount
        for ch in changes:
            cols = list(ch["old"])
            if _row_values(conn, ch["id"], cols) != ch["new"]:
                continue
            sets = ", ".join(f'"{c}"=?' for c in cols)
            n += conn.execute(f"UPDATE threads SET {sets} WHERE id=?",
                              [ch["old"][c] for c in cols] + [ch["id"]]).rowcount
    return n


def restore_db(home: CodexHome, backup: Path) -> Dict[str, Any]:
    """Put a whole DB backup back, after backing up the current DB beside it."""
    if not backup.is_file():
        raise UserError(f"no such backup: {backup}")
    try:
        src = open_readonly(backup)
        ok = src.execute("PRAGMA integrity_check").fetchone()[0]
        has = src.execute("SELECT count(*) FROM sqlite_master WHERE name='threads'").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{backup} is not a SQLite backup ({exc})") from None
    if ok != "ok" or not has:
        src.close()
        raise UserError(f"{backup} is not a usable state DB backup (integrity: {ok}, threads table: {bool(has)})")
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    home.artifacts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved = backup_db(home.state_db.path, home.artifacts_dir / f"{home.state_db.path.name}.pre_restore_{stamp}.bak")
    dst = sqlite3.connect(str(home.state_db.path), timeout=5.0)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    return {"restored_from": str(backup), "previous_db_saved_to": str(saved)}


def summary(plan: UndoPlan, sample: int) -> Dict[str, Any]:
    rows = [c["id"] for changes in plan.rows.values() for c in changes]
    return {"run_dir": safe_str(plan.run_dir), "kind": plan.kind, "run_complete": plan.complete,
            "rows_to_revert": len(rows),
            "rows_to_delete": sum(len(v) for v in plan.deletes.values()), "offsets_to_revert": sum(len(v) for v in plan.offsets.values()),
            "line1_to_restore": len(plan.line1), "files_to_move_back": len(plan.moves),
            "already_original": plan.already, "conflicts": len(plan.conflicts),
            "conflict_sample": plan.conflicts[:sample], "rows_sample": rows[:sample],
            "moves_sample": [f"{m['dst']} -> {m['src']}" for m in plan.moves[:sample]]}




def undo_after_failure(home: CodexHome, run_dir: Path, exc: BaseException) -> UserError:
    """A run that failed halfway puts back what it did, then says so in one line."""
    try:
        plan = plan_undo(home, run_dir)
        result = apply_undo(home, plan)
    except Exception as again:  # noqa: BLE001 - report both, never a traceback
        return UserError(f"stopped by an error ({exc}); undoing the partial run also failed ({again}). "
                         f"Fix the cause, then run: {home_command(home, 'rollback.py', '--manifest', run_dir, '--apply')}")
    undone = result["rows_reverted"] + result["line1_restored"] + result["files_moved_back"]
    left = f"; {len(plan.conflicts)} item(s) left alone: see {home_command(home, 'rollback.py', '--manifest', run_dir)}" \
        if plan.conflicts else ""
    return UserError(f"stopped by an error ({exc}); the {undone} change(s) already made were undone, "
                     f"the home is as before{left}. Journal: {run_dir / 'journal.jsonl'}")
